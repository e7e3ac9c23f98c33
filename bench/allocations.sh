#!/usr/bin/env bash
# Heap allocations per request of one or more builds of the gateway, counted
# exactly (calls to libc's malloc, realloc and calloc, through perf uprobes)
# under bench/peer-proxies.sh's plain HTTP load, interleaved. CPU time on a
# shared 2-core machine moves by a tenth between runs; a count does not, so a
# change that removes work per request shows here first.
#
#   sudo bench/allocations.sh [ROUNDS] NAME=BINARY [NAME=BINARY...]
#
# Prints, per run: the requests served (the decision lines the gateway wrote,
# one per request, warm-ups included) and the calls per request. The probes
# slow every allocation down, so the run's req/s mean nothing: time a change
# with bench/compare.sh. Tunables of peer-proxies.sh pass through (the
# defaults here: hey only, 20,000 keep-alive and 2,000 new-connection
# requests). Needs perf.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=1
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
	rounds=$1
	shift
fi
(($# > 0)) || {
	echo "usage: $0 [ROUNDS] NAME=BINARY [NAME=BINARY...]" >&2
	exit 2
}
command -v perf >/dev/null || {
	echo "perf is needed (linux-perf)" >&2
	exit 2
}
first=${1#*=}
libc=$(ldd "$first" | awk '/libc\.so\.6/ {print $3; exit}')
[[ -f $libc ]] || {
	echo "cannot find the libc $first uses" >&2
	exit 2
}
events=()
for fn in malloc realloc calloc; do
	perf probe -q -x "$libc" "$fn" 2>/dev/null || true # already there
	events+=("probe_libc:$fn")
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The candidate: the gateway under perf stat, its decision lines kept. The
# peer script stops it with TERM; perf passes nothing on, so the wrapper
# stops the gateway itself and perf then writes its counts.
cat >"$out/counted.sh" <<-EOF
	#!/usr/bin/env bash
	run=\$1; shift
	perf stat -x, -e $(
		IFS=,
		echo "${events[*]}"
	) -o "\$run.perf" -- "\$@" >"\$run.lines" 2>"\$run.err" &
	pid=\$!
	trap 'pkill -TERM -P \$pid' TERM INT
	wait \$pid || true
	wait \$pid || true
EOF
chmod +x "$out/counted.sh"

for round in $(seq 1 "$rounds"); do
	for pair in "$@"; do
		name=${pair%%=*}
		binary=${pair#*=}
		run=$out/$round-$name
		CANDIDATE_CMD="exec $out/counted.sh $run $binary run --policy $here/policy.yaml --http-listen 127.0.0.1:\$CANDIDATE_PORT --admin-listen 127.0.0.1:0 --upstream-ca \$PB_ROOT_CA --intercept-ca-cert \$PB_ICPT_CA_CERT --intercept-ca-key \$PB_ICPT_CA_KEY --proxy relay" \
			PEERS=candidate CANDIDATE_NAME=egress-gateway CANDIDATE_MODES=http SIZES=small \
			WRK=${WRK:-0} N_KA=${N_KA:-20000} N_NOKA=${N_NOKA:-2000} \
			bash "$here/peer-proxies.sh" "$run.md" >"$run.log" 2>&1 || {
			echo "round $round $name: the load run failed, see below" >&2
			tail -20 "$run.log" >&2
			exit 1
		}
		python3 - "$run" "round $round $name" <<-'PY'
			import sys
			run, label = sys.argv[1], sys.argv[2]
			requests = sum(1 for _ in open(run + ".lines", errors="replace"))
			calls = {}
			for row in open(run + ".perf"):
			    fields = row.strip().split(",")
			    if len(fields) > 2 and fields[0].isdigit():
			        calls[fields[2].split(":")[-1]] = int(fields[0])
			if not requests or not calls:
			    sys.exit(f"{label}: nothing counted (requests {requests}, calls {calls})")
			each = {k: v / requests for k, v in calls.items()}
			print(f"{label}: {requests} requests, {sum(each.values()):.1f} allocations per request "
			      + " ".join(f"({k} {v:.1f})" for k, v in sorted(each.items())))
		PY
	done
done
