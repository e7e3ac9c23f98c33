#!/usr/bin/env bash
# Installs the Debian packages the e2e node needs (container runtime, CNI
# plugins, netfilter tools, the files the images are made of). Idempotent:
# prints nothing and runs no apt command when everything is installed.
#
#   e2e/tools/node/install-packages.sh
#
# Needs root (the node runs as root anyway) and Debian's package archive.
set -euo pipefail

packages=(
	containerd                  # 1.6: the CRI runtime kubelet talks to
	runc                        # what containerd starts containers with
	containernetworking-plugins # bridge, host-local, loopback, portmap in /usr/lib/cni
	iptables                    # kubelet's canary chains, kube-router's policy chains
	nftables                    # kube-proxy's nftables mode
	ipset                       # kube-router's address sets
	conntrack                   # kube-proxy flushes stale UDP entries with it
	busybox-static              # the shell and tools of the pause and client images
	curl                        # the client image's HTTP client (with its libraries)
	ca-certificates             # the client image's CA bundle
	util-linux                  # setpriv, mount, umount, nsenter
	iproute2                    # the bridge the harness makes
)

missing=()
for package in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
	[[ $status == "install ok installed" ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

if ((EUID != 0)); then
	echo "[e2e node] root is needed to install: ${missing[*]}" >&2
	exit 1
fi
echo "[e2e node] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# containerd's package would start a service; there is no init system to start
# it with here, and the harness starts its own containerd anyway.
apt-get -qq update >&2
apt-get -qq install -y --no-install-recommends "${missing[@]}" >&2
