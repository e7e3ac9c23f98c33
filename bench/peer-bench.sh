#!/usr/bin/env bash
# The gateway beside Squid and direct access, under the same load, in the same
# runs: bench/peer-proxies.sh (which installs Squid, tinyproxy, nginx, hey and wrk
# with apt-get when missing) with the gateway as its candidate.
#
#   bench/peer-bench.sh [OUT_DIR]        (root; about 8 minutes; default OUT_DIR bench/results)
#
# Two runs, because one gateway either relays or intercepts a given name:
#   relay.md   direct, squid, gateway (--proxy relay):     plain HTTP and CONNECT
#   bump.md    direct, squid-bump1, gateway (--proxy intercept): intercepted HTTPS
# Each run has its own baselines; compare only within a run. Any tunable of the
# peer script (C, N_KA, N_NOKA, SIZES, WRK, KEY_ALG...) passes through.
# MODES="http connect bump" (default) runs fewer of the gateway's modes;
# RELAY_PEERS and BUMP_PEERS change who runs beside it (e.g. add nginx-proxy).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/results}
peer=${PEER_SCRIPT:-$here/peer-proxies.sh}
[[ -x $peer || -f $peer ]] || { echo "peer script not found: $peer (set PEER_SCRIPT)" >&2; exit 1; }
# MODES: which of the gateway's modes to run (default all three).
modes=" ${MODES:-http connect bump} "
for m in $modes; do
	[[ $m == http || $m == connect || $m == bump ]] || { echo "MODES: unknown mode '$m' (http, connect, bump)" >&2; exit 2; }
done
mkdir -p "$out"

# GATEWAY_BINARY: measure that build instead of building this tree (bench/compare.sh).
gateway=$("$here/gateway-command.sh")

relay_modes=""
for m in http connect; do
	if [[ $modes == *" $m "* ]]; then relay_modes+="$m "; fi
done
if [[ -n $relay_modes ]]; then
	PEERS=${RELAY_PEERS:-"direct squid candidate"} CANDIDATE_NAME=egress-gateway CANDIDATE_MODES="$relay_modes" \
		CANDIDATE_CMD="$gateway --proxy relay" bash "$peer" "$out/relay.md"
	echo "results: $out/relay.md"
fi
if [[ $modes == *" bump "* ]]; then
	PEERS=${BUMP_PEERS:-"direct squid-bump1 candidate"} CANDIDATE_NAME=egress-gateway CANDIDATE_MODES="bump" \
		CANDIDATE_CMD="$gateway --proxy intercept" bash "$peer" "$out/bump.md"
	echo "results: $out/bump.md"
fi
