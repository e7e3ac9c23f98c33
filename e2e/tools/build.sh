#!/usr/bin/env bash
# Builds the e2e control plane (etcd, kube-apiserver, kubectl) and helm from the
# Go module proxy, into a cache folder outside the clone, and prints that folder.
#
#   e2e/tools/build.sh            # prints the bin dir (builds it first if needed)
#
# The cache key is a hash of the pinned module files and this script, so the
# binaries are rebuilt only when a pinned version changes. Cache root:
# $EGRESS_CACHE_DIR, default ~/.cache/egress-proxy. Progress goes to stderr;
# stdout is only the bin dir, so callers can do bin=$(e2e/tools/build.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${EGRESS_CACHE_DIR:-$HOME/.cache/egress-proxy}

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/k8s/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$here/k8s/go.mod")
helm_version=$(awk '$1 == "helm.sh/helm/v4" { print $2 }' "$here/helm/go.mod")
key=$(cat "$here/build.sh" "$here/k8s-ldflags.sh" "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/helm/go.mod" "$here/helm/go.sum" |
	sha256sum | cut -c1-12)
bin=$cache_root/control-plane-$k8s_version-etcd-$etcd_version-helm-$helm_version-$key/bin

log() { printf '[e2e tools] %s\n' "$*" >&2; }

if [[ -x $bin/kube-apiserver && -x $bin/etcd && -x $bin/kubectl && -x $bin/helm ]]; then
	log "cached: $bin"
	echo "$bin"
	exit 0
fi

command -v go >/dev/null || { log "go is required to build the control plane"; exit 1; }
tmp=$bin.partial
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=mod"

# shellcheck source=k8s-ldflags.sh
source "$here/k8s-ldflags.sh"
k8s_ldflags=$(kubernetes_version_ldflags "$k8s_version")

log "building kube-apiserver $k8s_version, kubectl, etcd $etcd_version (cold builds take a while on 2 cores)"
(cd "$here/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
log "kube-apiserver built after $((SECONDS - start))s"
(cd "$here/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
log "kubectl built after $((SECONDS - start))s"
(cd "$here/k8s" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
log "etcd built after $((SECONDS - start))s"
(cd "$here/helm" && go build -trimpath \
	-ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" \
	-o "$tmp/helm" helm.sh/helm/v4/cmd/helm)
log "helm $helm_version built after $((SECONDS - start))s"

rm -rf "$bin"
mv "$tmp" "$bin"
log "control plane built in $((SECONDS - start))s: $bin"
echo "$bin"
