#!/usr/bin/env bash
# Removes what one e2e node run left on the machine, from what that run
# recorded in its directory. Idempotent, best effort: every step runs even if
# an earlier one failed, and what it removes is printed.
#
#   e2e/tools/node/teardown.sh RUN_DIR
#
# The harness runs it when a node stops, a watchdog runs it when the test
# process died without stopping its node, and the next node start runs it on
# a run whose owner is gone. RUN_DIR holds:
#   pids/<name>         processes the harness started (containerd, kubelet, ...)
#   bin                 the node binaries' directory (for kube-proxy and
#                       kube-router's own clean-up modes)
#   containerd.sock     containerd's socket: its shims name it on their command line
#   sysctl.before       name=value of the sysctls the node's parts change
#   absent.before       paths that did not exist before the run
#   had-kube-chains     present when iptables had KUBE-* chains before the run
#                       (then none are removed: they are someone else's)
#   bridge              the bridge's name
set -uo pipefail
dir=${1:?usage: $0 RUN_DIR}
[[ -d $dir ]] || exit 0
say() { printf '[e2e node teardown] %s\n' "$*" >&2; }

# A process we started, still alive, and still the one we started: its command
# line names this run's directory.
ours() {
	local pid=$1
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir"
}
stop_pid() {
	local pid=$1 name=$2
	ours "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 50); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
	[[ -e /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
	say "stopped $name (pid $pid)"
}

# 1. The control loops first, so nothing restarts what is stopped next.
for name in kube-controller-manager kube-scheduler kube-router coredns kube-proxy kubelet; do
	[[ -f $dir/pids/$name ]] && stop_pid "$(cat "$dir/pids/$name")" "$name"
done

# 2. Containers: every process in the pod cgroups kubelet made (cgroupfs
# driver, cgroup v1), then the shims of this run's containerd.
for round in 1 2 3; do
	pids=$(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
	[[ -z $pids ]] && break
	say "killing container processes (round $round): $(echo $pids | wc -w)"
	kill -KILL $pids 2>/dev/null
	sleep 0.5
done
if [[ -f $dir/containerd.sock.path ]]; then
	socket=$(cat "$dir/containerd.sock.path")
	for proc in /proc/[0-9]*; do
		cmd=$({ tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null) || continue
		if [[ $cmd == *containerd-shim* && $cmd == *"-address $socket"* ]]; then
			kill -KILL "${proc#/proc/}" 2>/dev/null && say "killed shim ${proc#/proc/}"
		fi
	done
fi
[[ -f $dir/pids/containerd ]] && stop_pid "$(cat "$dir/pids/containerd")" containerd

# 3. Rules: kube-proxy's and kube-router's own clean-up modes, then whatever
# KUBE-* chains are left (kubelet's canaries), unless they predate the run.
bin=$(cat "$dir/bin" 2>/dev/null)
if [[ -n $bin && -x $bin/kube-proxy ]]; then
	"$bin/kube-proxy" --cleanup >"$dir/cleanup-kube-proxy.log" 2>&1 || say "kube-proxy --cleanup failed (see $dir/cleanup-kube-proxy.log)"
fi
if [[ -n $bin && -x $bin/kube-router ]]; then
	# Its policy clean-up runs first; v2.1.0's service-proxy clean-up then
	# crashes on a node that never ran the proxy, so its exit status says
	# nothing: the generic clean-up below removes whatever is left.
	"$bin/kube-router" --cleanup-config >"$dir/cleanup-kube-router.log" 2>&1
fi
for family in ip ip6; do
	nft list table "$family" kube-proxy >/dev/null 2>&1 && nft delete table "$family" kube-proxy && say "deleted nft table $family kube-proxy"
done
if [[ ! -f $dir/had-kube-chains ]]; then
	for tool in iptables ip6tables; do
		command -v "$tool" >/dev/null || continue
		for table in filter nat mangle raw; do
			# Jumps from the built-in chains into KUBE-* chains, then the chains.
			"$tool" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -Ev '^-A KUBE-' |
				while read -r rule; do
					# The rule as iptables -S prints it, quotes included (comments).
					eval "\"\$tool\" -t \"\$table\" ${rule/-A/-D}" 2>/dev/null
				done
			chains=$("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }')
			for chain in $chains; do "$tool" -t "$table" -F "$chain" 2>/dev/null; done
			for chain in $chains; do "$tool" -t "$table" -X "$chain" 2>/dev/null; done
			[[ -n $chains ]] && say "removed $tool $table chains: $(echo $chains | wc -w)"
		done
	done
fi
if command -v ipset >/dev/null; then
	for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)'); do
		grep -qxF "$set" "$dir/ipsets.before" 2>/dev/null || ipset destroy "$set" 2>/dev/null
	done
fi
command -v conntrack >/dev/null && conntrack -D -s 10.244.0.0/16 >/dev/null 2>&1
# Tables that iptables-nft made for the run (none existed before) and that
# hold no rule any more.
if [[ -f $dir/nft-tables.before ]]; then
	nft list tables 2>/dev/null | while read -r _ family name; do
		grep -qxF "table $family $name" "$dir/nft-tables.before" && continue
		rules=$(nft -a list table "$family" "$name" 2>/dev/null | grep '# handle' | grep -Evc '^\s*(table|chain) ')
		((rules == 0)) && nft delete table "$family" "$name" && say "deleted empty nft table $family $name"
	done
fi

# 4. Mounts under the run directory (rootfs overlays, shm, network
# namespaces, volumes, kubelet's bind mount of its root), deepest first.
for round in 1 2 3; do
	mounts=$(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	[[ -z $mounts ]] && break
	for m in $mounts; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	say "unmounted $(echo $mounts | wc -w) mounts (round $round)"
done

# 5. Network: veths left on the bridge (their namespaces are gone by now),
# the bridge itself.
bridge=$(cat "$dir/bridge" 2>/dev/null)
if [[ -n $bridge ]] && ip link show "$bridge" >/dev/null 2>&1; then
	for veth in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
		ip link del "$veth" 2>/dev/null
	done
	ip link del "$bridge" && say "deleted bridge $bridge"
fi

# 6. cgroups kubelet made (empty now), leaves first.
for hierarchy in /sys/fs/cgroup/*/; do
	[[ -d $hierarchy/kubepods ]] || continue
	find "$hierarchy/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 7. Sysctls back to their values before the run.
if [[ -f $dir/sysctl.before ]]; then
	while IFS='=' read -r name value; do
		[[ -n $name ]] || continue
		current=$(sysctl -n "$name" 2>/dev/null) || continue
		[[ $current == "$value" ]] || { sysctl -qw "$name=$value" && say "restored $name=$value (was $current)"; }
	done <"$dir/sysctl.before"
fi

# 8. Paths the node's parts create outside the run directory even when told
# to keep their state in it (kubelet's device-plugin socket and log links,
# libcni's result cache, the shims' sockets): removed if they did not exist
# before the run (the node lock was held all along) and nothing is mounted
# under them.
if [[ -f $dir/absent.before ]]; then
	while read -r path; do
		[[ -n $path && -e $path ]] || continue
		if awk -v p="$path" '$5 == p || index($5, p "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
			say "left $path: something is mounted under it"
			continue
		fi
		rm -rf "$path" && say "removed $path"
	done <"$dir/absent.before"
fi
exit 0
