#!/usr/bin/env bash
# The interception CA, made with openssl as you would for a cluster: a root
# (clients trust it), and below it an intermediate that may sign one more CA
# (pathlen:1), from which the operator derives each proxy's sub-CA. The
# intermediate goes into a Secret laid out as cert-manager lays out a CA.
#
#   examples/cluster/ca.sh DIR NAMESPACE [SECRET]     (SECRET defaults to egress-ca)
#
# PATHLEN=0 makes an intermediate that cannot sign a CA: the operator refuses
# it and says so in the EgressProxy's status (ParentPathLenZero).
set -euo pipefail
dir=$1 namespace=$2 secret=${3:-egress-ca} pathlen=${PATHLEN:-1}
mkdir -p "$dir"
cd "$dir"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout root.key -out root.pem -days 3650 -subj "/CN=egress root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout egress-ca.key -out egress-ca.csr -subj "/CN=egress interception"
openssl x509 -req -in egress-ca.csr -CA root.pem -CAkey root.key -CAcreateserial \
  -days 365 -out egress-ca.pem \
  -extfile <(printf 'basicConstraints=critical,CA:TRUE,pathlen:%s\nkeyUsage=critical,keyCertSign,cRLSign\n' "$pathlen")

kubectl -n "$namespace" create secret generic "$secret" \
  --from-file=tls.crt=egress-ca.pem --from-file=tls.key=egress-ca.key --from-file=ca.crt=root.pem
