#!/usr/bin/env bash
# Builds the e2e node's binaries from the Go module proxy, into a cache folder
# outside the clone, and prints that folder:
#
#   kubelet, kube-proxy, kube-controller-manager, kube-scheduler
#       from ../k8s/go.mod: the module graph kube-apiserver is built from
#   coredns      from ../coredns (CoreDNS's main with the plugins the node uses)
#   kube-router  from ../kube-router (its NetworkPolicy controller is the enforcer)
#
#   e2e/tools/node/build.sh       # prints the bin dir (builds it first if needed)
#
# The cache key is a hash of the pinned module files, CoreDNS's main and this
# script, so the binaries are rebuilt only when a pin changes. Cache root:
# $EGRESS_CACHE_DIR, default ~/.cache/egress-proxy. Progress goes to stderr;
# stdout is only the bin dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=$(dirname "$here")
cache_root=${EGRESS_CACHE_DIR:-$HOME/.cache/egress-proxy}

# The version a go.mod requires a module at (in a block or on a require line).
required() { awk -v m="$1" '$1 == m { print $2 } $1 == "require" && $2 == m { print $3 }' "$2"; }
k8s_version=$(required k8s.io/kubernetes "$tools/k8s/go.mod")
coredns_version=$(required github.com/coredns/coredns "$tools/coredns/go.mod")
router_version=$(required github.com/cloudnativelabs/kube-router/v2 "$tools/kube-router/go.mod")
key=$(cat "$here/build.sh" "$tools/k8s-ldflags.sh" "$tools/k8s/go.mod" "$tools/k8s/go.sum" \
	"$tools/coredns/go.mod" "$tools/coredns/go.sum" "$tools/coredns/main.go" \
	"$tools/kube-router/go.mod" "$tools/kube-router/go.sum" | sha256sum | cut -c1-12)
bin=$cache_root/node-$k8s_version-coredns-$coredns_version-kube-router-$router_version-$key/bin
binaries=(kubelet kube-proxy kube-controller-manager kube-scheduler coredns kube-router)

log() { printf '[e2e node tools] %s\n' "$*" >&2; }

complete=1
for name in "${binaries[@]}"; do [[ -x $bin/$name ]] || complete=0; done
if ((complete)); then
	log "cached: $bin"
	echo "$bin"
	exit 0
fi

command -v go >/dev/null || { log "go is required to build the node"; exit 1; }
tmp=$bin.partial
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"

# shellcheck source=../k8s-ldflags.sh
source "$tools/k8s-ldflags.sh"
k8s_ldflags=$(kubernetes_version_ldflags "$k8s_version")
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

log "building the node: kubelet $k8s_version, kube-proxy, kube-controller-manager, kube-scheduler, coredns $coredns_version, kube-router $router_version"
for cmd in kubelet kube-proxy kube-controller-manager kube-scheduler; do
	(cd "$tools/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
	log "$cmd built after $((SECONDS - start))s"
done
(cd "$tools/coredns" && go build -trimpath \
	-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version" \
	-o "$tmp/coredns" .)
log "coredns built after $((SECONDS - start))s"
router_pkg=github.com/cloudnativelabs/kube-router/v2/pkg/version
(cd "$tools/kube-router" && go build -trimpath \
	-ldflags "-s -w -X $router_pkg.Version=$router_version -X $router_pkg.BuildDate=$build_date" \
	-o "$tmp/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
log "kube-router built after $((SECONDS - start))s"

rm -rf "$bin"
mv "$tmp" "$bin"
log "node built in $((SECONDS - start))s: $bin"
echo "$bin"
