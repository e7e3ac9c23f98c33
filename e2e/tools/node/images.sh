#!/usr/bin/env bash
# Builds the e2e node's container images as OCI image tarballs, without a
# container engine: each image is one uncompressed layer made with tar, an OCI
# config and manifest written here, and an index naming the image the way
# `ctr images import` reads it (io.containerd.image.name).
#
#   e2e/tools/node/images.sh GATEWAY_BINARY OPERATOR_BINARY   # prints the images dir
#
#   pause.tar     docker.io/egress-e2e/pause:1       busybox sleep: the sandbox's process
#   client.tar    docker.io/egress-e2e/client:1      busybox (sh, nslookup, httpd, nc) + curl + CA certs
#   gateway.tar   docker.io/library/egress-gateway:e2e   the gateway binary given
#   operator.tar  docker.io/library/egress-operator:e2e  the operator binary given
#
# Binaries are copied with the shared libraries ldd lists for them, so release
# builds of this workspace run as they are. Files come from the Debian packages
# that install-packages.sh installs. The folder is keyed by a hash of every
# input file (and this script), under $EGRESS_CACHE_DIR (default
# ~/.cache/egress-proxy), so unchanged binaries reuse their tarballs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${EGRESS_CACHE_DIR:-$HOME/.cache/egress-proxy}
gateway=${1:?usage: $0 GATEWAY_BINARY OPERATOR_BINARY}
operator=${2:?usage: $0 GATEWAY_BINARY OPERATOR_BINARY}

log() { printf '[e2e images] %s\n' "$*" >&2; }

busybox=/bin/busybox
curl_bin=$(command -v curl)
ca_bundle=/etc/ssl/certs/ca-certificates.crt
for f in "$busybox" "$curl_bin" "$ca_bundle" "$gateway" "$operator"; do
	[[ -f $f ]] || { log "missing $f (run e2e/tools/node/install-packages.sh, build the binaries)"; exit 1; }
done
# busybox-static is the static busybox; Debian's dynamic one would need its libraries.
ldd "$busybox" >/dev/null 2>&1 && { log "$busybox is not static (install busybox-static)"; exit 1; }

key=$( (cat "$here/images.sh"; sha256sum "$busybox" "$curl_bin" "$ca_bundle" "$gateway" "$operator" | cut -d' ' -f1;
	for lib in $(ldd "$curl_bin" "$gateway" "$operator" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u); do
		sha256sum "$lib" | cut -d' ' -f1
	done) | sha256sum | cut -c1-12)
out=$cache_root/node-images-$key
if [[ -f $out/done ]]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Copies an executable (without its debug sections: release builds keep line
# tables, which only make the image bigger) and the shared libraries it loads
# (with the dynamic loader) into a root file system, at the paths it asks for.
copy_with_libraries() {
	local exe=$1 root=$2 dest=$3
	mkdir -p "$(dirname "$root$dest")"
	strip --strip-debug -o "$root$dest" "$exe"
	chmod 0755 "$root$dest"
	ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
		install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	done
}

# Common files: users (65532 is the gateway's runAsUser), a writable /tmp.
base_root() {
	local root=$1
	mkdir -p "$root"/{etc,tmp,bin,proc,sys,dev,var/run}
	chmod 1777 "$root/tmp"
	printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
	printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}

# Writes one image as an OCI layout tarball: name, root dir, entrypoint (JSON
# array), user.
oci_image() {
	local name=$1 ref=$2 root=$3 entrypoint=$4 user=$5
	local layout=$work/$name-oci
	mkdir -p "$layout/blobs/sha256"
	# Reproducible layer: sorted, no timestamps, numeric root ownership.
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
		--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
		-C "$root" -cf "$work/$name-layer.tar" .
	local layer_digest layer_size
	layer_digest=$(sha256sum "$work/$name-layer.tar" | cut -d' ' -f1)
	layer_size=$(stat -c %s "$work/$name-layer.tar")
	mv "$work/$name-layer.tar" "$layout/blobs/sha256/$layer_digest"
	printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"User":"%s","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$entrypoint" "$user" "$layer_digest" >"$work/config.json"
	local config_digest config_size
	config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
	config_size=$(stat -c %s "$work/config.json")
	mv "$work/config.json" "$layout/blobs/sha256/$config_digest"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
	local manifest_digest manifest_size
	manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
	manifest_size=$(stat -c %s "$work/manifest.json")
	mv "$work/manifest.json" "$layout/blobs/sha256/$manifest_digest"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$manifest_digest" "$manifest_size" "$ref" "${ref##*:}" >"$layout/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out/$name.tar" .
	log "$name: $ref ($((layer_size / 1024 / 1024)) MiB)"
}

# pause: holds the pod's namespaces. containerd stops sandboxes with SIGKILL,
# so a plain sleep is all a pause process has to do.
root=$work/pause
base_root "$root"
install -m 0755 "$busybox" "$root/bin/busybox"
oci_image pause docker.io/egress-e2e/pause:1 "$root" '["/bin/busybox","sleep","2147483647"]' 0

# client: busybox applets as links, curl with its libraries, CA certificates.
root=$work/client
base_root "$root"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
	[[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
copy_with_libraries "$curl_bin" "$root" /usr/bin/curl
install -D -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
oci_image client docker.io/egress-e2e/client:1 "$root" '["/bin/sh"]' 0

# gateway and operator: the binary, its libraries, CA certificates; non-root.
for pair in "gateway:$gateway" "operator:$operator"; do
	name=${pair%%:*}
	exe=${pair#*:}
	root=$work/$name
	base_root "$root"
	copy_with_libraries "$exe" "$root" "/usr/local/bin/egress-$name"
	install -D -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
	oci_image "$name" "docker.io/library/egress-$name:e2e" "$root" "[\"/usr/local/bin/egress-$name\"]" 65532:65532
done

touch "$out/done"
echo "$out"
