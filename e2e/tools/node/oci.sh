# Functions shared by the image scripts (sourced): a cached output folder, a
# root file system from executables and their libraries, written as an OCI
# image tarball that `ctr images import` reads. The scripts define `log`.

# Uses the folder $1 when it is complete (prints it and ends the script), or
# starts it afresh: sets $out to it and $work to a scratch folder removed on
# exit.
reuse_or_start() {
	out=$1
	if [[ -f $out/done ]]; then
		log "cached: $out"
		echo "$out"
		exit 0
	fi
	rm -rf "$out"
	mkdir -p "$out"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
}

# The client image's files: static busybox with its applets as links, curl
# with its libraries, the CA bundle ($busybox, $curl_bin, $ca_bundle).
client_root() {
	local root=$1 applet
	base_root "$root"
	install -m 0755 "$busybox" "$root/bin/busybox"
	for applet in $("$busybox" --list); do
		[[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
	done
	copy_with_libraries "$curl_bin" "$root" /usr/bin/curl
	install -D -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
}

# Copies an executable (without its debug sections: release builds keep line
# tables, which only make the image bigger) and the shared libraries it loads
# (with the dynamic loader) into a root file system, at the paths it asks for.
copy_with_libraries() {
	local exe=$1 root=$2 dest=$3
	mkdir -p "$(dirname "$root$dest")"
	strip --strip-debug -o "$root$dest" "$exe"
	chmod 0755 "$root$dest"
	copy_libraries "$exe" "$root"
}

# Copies the shared libraries an ELF file loads (and the dynamic loader) into
# a root file system, at the paths they are loaded from; what is there
# already (or comes from inside the root, through $ORIGIN) stays.
copy_libraries() {
	local file=$1 root=$2
	ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
		[[ $lib == "$root"/* || -e $root$lib ]] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
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

# Moves file $2 into OCI layout $1's blobs under its digest; prints
# "digest size".
store_blob() {
	local digest size
	digest=$(sha256sum "$2" | cut -d' ' -f1)
	size=$(stat -c %s "$2")
	mv "$2" "$1/blobs/sha256/$digest"
	echo "$digest $size"
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
	local layer_digest layer_size config_digest config_size manifest_digest manifest_size
	read -r layer_digest layer_size < <(store_blob "$layout" "$work/$name-layer.tar")
	printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"User":"%s","Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$entrypoint" "$user" "$layer_digest" >"$work/config.json"
	read -r config_digest config_size < <(store_blob "$layout" "$work/config.json")
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
	read -r manifest_digest manifest_size < <(store_blob "$layout" "$work/manifest.json")
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$manifest_digest" "$manifest_size" "$ref" "${ref##*:}" >"$layout/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out/$name.tar" .
	log "$name: $ref ($((layer_size / 1024 / 1024)) MiB)"
}

