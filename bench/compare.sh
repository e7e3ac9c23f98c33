#!/usr/bin/env bash
# Two builds of the gateway under the same load, interleaved (before, after,
# before, after, ...), so that a noisy machine drifts on both alike: a
# before/after comparison of a change. Each run is bench/peer-bench.sh with
# the gateway alone (no Squid: its figures are in the peer benchmark).
#
#   sudo bench/compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [OUT_DIR]
#
# Writes OUT_DIR/<round>-<before|after>/{relay,bump}.md (default
# bench/results/compare) and prints a table of requests per second and CPU
# per request, per case, for each run. Tunables of peer-proxies.sh (C, N_KA,
# N_NOKA, N_LARGE, SIZES, WRK...) and peer-bench.sh's MODES pass through.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
before=${1:?usage: $0 BEFORE_BINARY AFTER_BINARY [ROUNDS] [OUT_DIR]}
after=${2:?usage: $0 BEFORE_BINARY AFTER_BINARY [ROUNDS] [OUT_DIR]}
rounds=${3:-3}
out=${4:-$here/results/compare}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
	for side in before after; do
		binary=$before
		[[ $side == after ]] && binary=$after
		GATEWAY_BINARY=$binary RELAY_PEERS=candidate BUMP_PEERS=candidate \
			bash "$here/peer-bench.sh" "$out/$round-$side" >"$out/$round-$side.log" 2>&1
		echo "round $round $side: $out/$round-$side"
	done
done
# The candidate's rows of every run, side by side.
for file in relay bump; do
	echo
	echo "## $file"
	for round in $(seq 1 "$rounds"); do
		for side in before after; do
			[[ -f $out/$round-$side/$file.md ]] || continue
			grep -E '^\| .*egress-gateway' "$out/$round-$side/$file.md" | sed "s/^/| $round $side /"
		done
	done
done
