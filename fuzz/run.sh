#!/usr/bin/env bash
# Fuzzes one target for a budget, then keeps in its checked-in corpus the
# fewest inputs that cover what the run reached (fuzz/README.md):
#
#   fuzz/run.sh TARGET [SECONDS] [RUNS]     (defaults: 3600, 10000000)
#
# It stops at whichever comes first. The working corpus, the binaries and the
# crashes live under $EGRESS_CACHE_DIR (default ~/.cache/egress-proxy), outside
# the clone. Needs the nightly toolchain and cargo-fuzz.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: $0 TARGET [SECONDS] [RUNS]}
seconds=${2:-3600}
runs=${3:-10000000}
cache=${EGRESS_CACHE_DIR:-$HOME/.cache/egress-proxy}
work=$cache/fuzz-corpus/$target
artifacts=$cache/fuzz-artifacts/$target
mkdir -p "$work" "$artifacts"
cargo +nightly fuzz build --fuzz-dir "$here/libfuzzer" --sanitizer none --debug-assertions \
	--target-dir "$cache/fuzz-target" "$target" >&2
binary=$cache/fuzz-target/x86_64-unknown-linux-gnu/release/$target
# Inputs as large as the boundary takes, and no larger.
case $target in
host) max_len=512 ;;
path) max_len=2048 ;;
request_head) max_len=8192 ;;
client_hello) max_len=24576 ;;
*) max_len=65536 ;;
esac
"$binary" -max_total_time="$seconds" -runs="$runs" -timeout=1 -rss_limit_mb=2048 \
	-max_len="$max_len" -artifact_prefix="$artifacts/" -print_final_stats=1 \
	"$work" "$here/corpus/$target"
# The checked-in corpus: its seeds and findings, then the fewest inputs of
# the working corpus that cover what they add.
kept=$(mktemp -d)
trap 'rm -rf "$kept"' EXIT
cp "$here/corpus/$target"/seed-* "$kept"/
cp "$here/corpus/$target"/finding-* "$kept"/ 2>/dev/null || true
"$binary" -merge=1 -use_counters=0 -max_len="$max_len" "$kept" "$work" 2>&1 | grep MERGE-OUTER | tail -1
find "$here/corpus/$target" -type f ! -name 'seed-*' ! -name 'finding-*' -delete
find "$kept" -type f ! -name 'seed-*' ! -name 'finding-*' -exec cp {} "$here/corpus/$target"/ \;
