#!/usr/bin/env bash
# Prints the command the benchmarks run the gateway with (as peer-proxies.sh's
# CANDIDATE_CMD, with bench/policy.yaml; add --proxy NAME): the build at
# $GATEWAY_BINARY when set, else this tree's release build, built first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
if [[ -n ${GATEWAY_BINARY:-} ]]; then
	bin=$GATEWAY_BINARY
else
	(cd "$repo" && cargo build --release -p egress-gateway >&2)
	bin=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/egress-gateway
fi
# The peer script sets CANDIDATE_PORT and the PB_* paths when it starts the candidate.
echo "exec $bin run --policy $here/policy.yaml --http-listen 127.0.0.1:\$CANDIDATE_PORT --admin-listen 127.0.0.1:0" \
	"--upstream-ca \$PB_ROOT_CA --intercept-ca-cert \$PB_ICPT_CA_CERT --intercept-ca-key \$PB_ICPT_CA_KEY"
