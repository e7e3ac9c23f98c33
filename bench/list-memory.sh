#!/usr/bin/env bash
# What a Domains list costs the gateway once: for lists of 10 to 1,000,000
# entries, the standalone gateway is started with a policy whose one rule
# takes its domains from the list; printed are the time from start until
# /readyz answers (reading and compiling the file) and the resident memory
# then (VmRSS), beside the same with a 10-entry list.
#
#   bench/list-memory.sh [SIZES...]     (default: 100000 1000000; 10 always runs first)
#
# The gateway is this tree's release build (built first), or $GATEWAY_BINARY.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(100000 1000000)
if [[ -n ${GATEWAY_BINARY:-} ]]; then
	bin=$GATEWAY_BINARY
else
	(cd "$repo" && cargo build --release -p egress-gateway >&2)
	bin=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/egress-gateway
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "| entries | policy file | start to ready | resident memory | per entry over 10 |"
echo "|---:|---:|---:|---:|---:|"
base_kb=
for size in 10 "${sizes[@]}"; do
	policy=$work/policy-$size.yaml
	python3 - "$size" >"$policy" <<'PY'
import sys
n = int(sys.argv[1])
print("""apiVersion: egress.dev/v1alpha1
kind: ProxyList
metadata: {name: big}
spec:
  type: Domains
  entries:""")
for i in range(n):
    print(f"    - host{i}.example.com" if i % 2 == 0 else f"    - .zone{i}.example.net")
print("""---
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {name: g}
spec:
  rules:
    preDNS:
      - name: listed
        action: Deny
        conditions: [{key: "request:DestinationDomain", operator: StringEquals, valuesFrom: [{list: big}]}]
---
apiVersion: egress.dev/v1alpha1
kind: ProxyConfiguration
metadata: {name: c}
spec:
  ruleGroups: [{name: g}]
  defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}""")
PY
	admin=$(free_port)
	started=$(date +%s.%N)
	"$bin" run --policy "$policy" --http-listen 127.0.0.1:0 --admin-listen "127.0.0.1:$admin" >/dev/null 2>"$work/stderr" &
	pid=$!
	until curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
		sleep 0.02
	done
	ready=$(date +%s.%N)
	rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	[[ -n $base_kb ]] || base_kb=$rss_kb
	size_mb=$(echo "$(stat -c %s "$policy") / 1000000" | bc -l)
	per_entry=$(( (rss_kb - base_kb) * 1024 / size ))
	printf '| %s | %.1f MB | %.2f s | %.1f MiB | %s B |\n' "$size" "$size_mb" \
		"$(echo "$ready - $started" | bc)" "$(echo "$rss_kb / 1024" | bc -l)" "$per_entry"
done
