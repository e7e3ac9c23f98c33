#!/usr/bin/env bash
# What a credential costs: intercepted HTTPS (bench/peer-proxies.sh, bump
# mode, the gateway alone) through the proxy `intercept` and through
# `intercept-credential` (the same, plus a credential every request gets
# from a Secret in --secrets-dir), interleaved (without, with, without, ...)
# so a noisy machine drifts on both alike.
#
#   sudo bench/credential-cost.sh [ROUNDS] [OUT_DIR]   (root; about 2 minutes a run)
#
# Prints the gateway's rows of every run and how many decision lines of the
# `with` runs name the credential (every request should). Tunables of
# peer-proxies.sh pass through (SIZES defaults to small here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
rounds=${1:-3}
out=${2:-$here/results/credential}
mkdir -p "$out"
if [[ -n ${GATEWAY_BINARY:-} ]]; then
	bin=$GATEWAY_BINARY
else
	(cd "$repo" && cargo build --release -p egress-gateway)
	bin=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/egress-gateway
fi
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
mkdir -p "$secrets/bench-api-key"
printf 'sk-bench-%s\n' "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$secrets/bench-api-key/token"

gateway="exec $bin run --policy $here/policy.yaml --http-listen 127.0.0.1:\$CANDIDATE_PORT --admin-listen 127.0.0.1:0"
gateway+=" --upstream-ca \$PB_ROOT_CA --intercept-ca-cert \$PB_ICPT_CA_CERT --intercept-ca-key \$PB_ICPT_CA_KEY"
gateway+=" --secrets-dir $secrets"
for round in $(seq 1 "$rounds"); do
	for side in without with; do
		proxy=intercept
		[[ $side == with ]] && proxy=intercept-credential
		lines=$out/$round-$side.jsonl
		PEERS=candidate CANDIDATE_NAME=egress-gateway CANDIDATE_MODES=bump SIZES=${SIZES:-small} \
			CANDIDATE_CMD="$gateway --proxy $proxy >$lines" \
			bash "$here/peer-proxies.sh" "$out/$round-$side.md" >"$out/$round-$side.log" 2>&1
		echo "round $round $side: $(grep -c '"credential":"bench-key"' "$lines" || true) of $(wc -l <"$lines") lines name the credential"
		rm -f "$lines"
	done
done
echo
for round in $(seq 1 "$rounds"); do
	for side in without with; do
		grep -E '^\| .*egress-gateway' "$out/$round-$side.md" | sed "s/^/| $round $side /"
	done
done
