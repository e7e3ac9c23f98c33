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
rounds=${1:-3}
out=${2:-$here/results/credential}
mkdir -p "$out"
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
mkdir -p "$secrets/bench-api-key"
printf 'sk-bench-%s\n' "$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$secrets/bench-api-key/token"

gateway="$("$here/gateway-command.sh") --secrets-dir $secrets"
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
