#!/usr/bin/env bash
# Builds the e2e node's container images as OCI image tarballs, without a
# container engine: each image is one uncompressed layer made with tar, an OCI
# config and manifest written here, and an index naming the image the way
# `ctr images import` reads it (io.containerd.image.name).
#
#   e2e/tools/node/images.sh GATEWAY_BINARY OPERATOR_BINARY TAG   # prints the images dir
#
#   pause.tar     docker.io/egress-e2e/pause:1       busybox sleep: the sandbox's process
#   client.tar    docker.io/egress-e2e/client:1      busybox (sh, nslookup, httpd, nc) + curl + CA certs
#   gateway.tar   docker.io/library/egress-gateway:TAG   the gateway binary given
#   operator.tar  docker.io/library/egress-operator:TAG  the operator binary given
#
# With TAG the chart's appVersion, the chart's default images are these.
#
# Binaries are copied with the shared libraries ldd lists for them, so release
# builds of this workspace run as they are. Files come from the Debian packages
# that install-packages.sh installs. The folder is keyed by a hash of every
# input file (and this script), under $EGRESS_CACHE_DIR (default
# ~/.cache/egress-proxy), so unchanged binaries reuse their tarballs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${EGRESS_CACHE_DIR:-$HOME/.cache/egress-proxy}
usage="usage: $0 GATEWAY_BINARY OPERATOR_BINARY TAG"
gateway=${1:?$usage}
operator=${2:?$usage}
tag=${3:?$usage}

log() { printf '[e2e images] %s\n' "$*" >&2; }
# shellcheck source=oci.sh
source "$here/oci.sh"

busybox=/bin/busybox
curl_bin=$(command -v curl)
ca_bundle=/etc/ssl/certs/ca-certificates.crt
for f in "$busybox" "$curl_bin" "$ca_bundle" "$gateway" "$operator"; do
	[[ -f $f ]] || { log "missing $f (run e2e/tools/node/install-packages.sh, build the binaries)"; exit 1; }
done
# busybox-static is the static busybox; Debian's dynamic one would need its libraries.
ldd "$busybox" >/dev/null 2>&1 && { log "$busybox is not static (install busybox-static)"; exit 1; }

key=$( (cat "$here/images.sh" "$here/oci.sh"; echo "$tag"; sha256sum "$busybox" "$curl_bin" "$ca_bundle" "$gateway" "$operator" | cut -d' ' -f1;
	for lib in $(ldd "$curl_bin" "$gateway" "$operator" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u); do
		sha256sum "$lib" | cut -d' ' -f1
	done) | sha256sum | cut -c1-12)
reuse_or_start "$cache_root/node-images-$key"

# pause: holds the pod's namespaces. containerd stops sandboxes with SIGKILL,
# so a plain sleep is all a pause process has to do.
root=$work/pause
base_root "$root"
install -m 0755 "$busybox" "$root/bin/busybox"
oci_image pause docker.io/egress-e2e/pause:1 "$root" '["/bin/busybox","sleep","2147483647"]' 0

# client: busybox applets as links, curl with its libraries, CA certificates.
root=$work/client
client_root "$root"
oci_image client docker.io/egress-e2e/client:1 "$root" '["/bin/sh"]' 0

# gateway and operator: the binary, its libraries, CA certificates; non-root.
for pair in "gateway:$gateway" "operator:$operator"; do
	name=${pair%%:*}
	exe=${pair#*:}
	root=$work/$name
	base_root "$root"
	copy_with_libraries "$exe" "$root" "/usr/local/bin/egress-$name"
	install -D -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
	oci_image "$name" "docker.io/library/egress-$name:$tag" "$root" "[\"/usr/local/bin/egress-$name\"]" 65532:65532
done

touch "$out/done"
echo "$out"
