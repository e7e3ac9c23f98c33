#!/usr/bin/env bash
# Builds the e2e node's client image: the clients users run (e2e/clients/)
# with their runtimes, so that client pods use the proxy exactly as injected
# pods do. Written as an OCI image tarball, without a container engine (see
# images.sh).
#
#   e2e/tools/node/clients-image.sh PYTHON_VENV GOCLIENT NODE JAVA   # prints the images dir
#
#   clients.tar   docker.io/egress-e2e/clients:1
#     /bin/busybox (+ applets), /usr/bin/curl     the shell and curl
#     /opt/venv/bin/python  /opt/clients/env_client.py       Python requests (the venv given,
#                           /opt/clients/load_client.py      a steady keep-alive client,
#                           /opt/clients/fetch_each.py       env_client.py's loop; the venv's
#                                                            base interpreter at its own path)
#     /opt/clients/goclient                                  Go net/http
#     /opt/node/bin/node    /opt/clients/fetch_client.mjs    Node.js fetch
#     /opt/java/bin/java -cp /opt/clients HttpClientCheck    Java HttpClient (a jlink runtime
#                                                            of the JDK given)
#
# The folder is keyed by a hash of this script, the client sources and the
# runtimes' versions, under $EGRESS_CACHE_DIR (default ~/.cache/egress-proxy).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
clients=$(cd "$here/../../clients" && pwd)
cache_root=${EGRESS_CACHE_DIR:-$HOME/.cache/egress-proxy}
usage="usage: $0 PYTHON_VENV GOCLIENT NODE JAVA"
venv=${1:?$usage}
goclient=${2:?$usage}
node=${3:?$usage}
java=${4:?$usage}

log() { printf '[e2e client image] %s\n' "$*" >&2; }
# shellcheck source=oci.sh
source "$here/oci.sh"

busybox=/bin/busybox
curl_bin=$(command -v curl)
ca_bundle=/etc/ssl/certs/ca-certificates.crt
java_home=$(dirname "$(dirname "$(readlink -f "$(command -v "$java")")")")
base_python=$(readlink -f "$venv/bin/python")
base_prefix=$(dirname "$(dirname "$base_python")")
for f in "$busybox" "$curl_bin" "$ca_bundle" "$goclient" "$node" "$base_python" "$java_home/bin/jlink"; do
	[[ -f $f ]] || { log "missing $f"; exit 1; }
done

key=$( (cat "$here/clients-image.sh" "$here/oci.sh" "$clients"/*.py "$clients"/*.mjs "$clients"/*.java "$clients/requirements.txt";
	sha256sum "$busybox" "$curl_bin" "$goclient" "$node" "$base_python" | cut -d' ' -f1
	"$java_home/bin/java" -version 2>&1) | sha256sum | cut -c1-12)
reuse_or_start "$cache_root/node-clients-$key"

root=$work/clients
client_root "$root"
mkdir -p "$root/opt/clients"
cp "$clients/env_client.py" "$clients/fetch_each.py" "$clients/load_client.py" "$clients/fetch_client.mjs" "$root/opt/clients/"

# Python: the base interpreter where the venv expects it (its standard
# library, not its own site-packages), and the venv at /opt/venv.
mkdir -p "$root$base_prefix/bin" "$root$base_prefix/lib"
cp -a "$base_python" "$root$base_prefix/bin/"
cp -a "$base_prefix"/lib/libpython3* "$root$base_prefix/lib/" 2>/dev/null || true
stdlib=$(basename "$(dirname "$(find "$base_prefix/lib" -maxdepth 2 -name os.py | head -1)")")
tar -C "$base_prefix/lib" \
	--exclude="$stdlib/site-packages" --exclude="$stdlib/test" --exclude="$stdlib/idlelib" \
	--exclude="$stdlib/tkinter" --exclude="$stdlib/turtledemo" --exclude="$stdlib/ensurepip" \
	--exclude='__pycache__' -cf - "$stdlib" | tar -C "$root$base_prefix/lib" -xf -
mkdir -p "$root$base_prefix/lib/$stdlib/site-packages"
copy_libraries "$base_python" "$root"
for so in "$root$base_prefix/lib/$stdlib/lib-dynload"/*.so; do
	copy_libraries "$so" "$root"
done
cp -a "$venv" "$root/opt/venv"
ln -sfn "$base_python" "$root/opt/venv/bin/python"
find "$root/opt/venv" -name __pycache__ -prune -exec rm -rf {} +

# Go: one static-enough binary.
copy_with_libraries "$goclient" "$root" /opt/clients/goclient

# Node.js.
copy_with_libraries "$node" "$root" /opt/node/bin/node

# Java: a runtime of the modules HttpClient needs (TLS with EC keys
# included), and the client compiled.
"$java_home/bin/jlink" --add-modules java.base,java.net.http,jdk.crypto.ec \
	--strip-debug --no-header-files --no-man-pages --output "$root/opt/java"
for elf in "$root/opt/java/bin/java" "$root/opt/java/lib"/*.so "$root/opt/java/lib/server"/*.so; do
	copy_libraries "$elf" "$root"
done
"$java_home/bin/javac" -d "$root/opt/clients" "$clients/HttpClientCheck.java"

oci_image clients docker.io/egress-e2e/clients:1 "$root" '["/bin/sh"]' 0
touch "$out/done"
echo "$out"
