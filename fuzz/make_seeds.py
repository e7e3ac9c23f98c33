#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*)
from the suite's own cases: the spellings the unit tests check, the
repository's examples, request heads of the hardening tests, real
ClientHellos from this machine's OpenSSL, and CAs made with the openssl CLI.

    python3 fuzz/make_seeds.py          # needs openssl on PATH

Files a fuzzing run adds beside the seeds (without the seed- prefix) are
left alone.
"""
import hashlib
import json
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, seeds):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for seed in seeds:
        data = seed.encode() if isinstance(seed, str) else seed
        name = "seed-" + hashlib.sha256(data).hexdigest()[:16]
        (folder / name).write_bytes(data)
    print(f"{target}: {len(seeds)} seeds")


def request_heads():
    heads = [
        "GET http://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n",
        "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
        "CONNECT 93.184.215.14:443 HTTP/1.1\r\n\r\n",
        "GET http://www.example.com/files/report.pdf HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "GET http://www.example.com/%66iles/../files/./report.pdf?q=1 HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "GET http://WWW.EXAMPLE.COM./ HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
        "GET http://0x7f.1/ HTTP/1.1\r\nHost: 0x7f.1\r\n\r\n",
        "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        "POST http://www.example.com/upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 5\r\n\r\nhello",
        "GET http://www.example.com/ws HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
        "GET /relative HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    ]
    # The framing tests' pipeline: bodies that look like heads, chunk
    # extensions, trailers, and the smuggling shape (both framings).
    heads.append(
        "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 26\r\n\r\n\r\nContent-Length: 1\r\n\r\nxyz"
        "GET http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n\r\n\r\nX\r\n0\r\nT: 1\r\n\r\n"
        "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    heads.append(
        "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\nGET http://a/next HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    return heads


HOSTS = [
    "www.example.com", "WWW.Example.COM", "www.example.com.", "example.com..",
    "a", "a..b", ".", "", "-a.example", "_service.example.com", "a/b", "a@b",
    "exa mple.com", "exa\\mple.com", "exa\tmple.com", "exa\u00admple.com",
    "ex%61mple.com", "example.com%00", "bücher.example", "BÜCHER.example.",
    "xn--bcher-kva.example", "xn--zz.example", "ＷＷＷ．ｅｘａｍｐｌｅ．ｃｏｍ",
    "127.0.0.1", "127.0.0.1.", "127.1", "127.0.1", "0x7f.1", "0x7F.0.0.1",
    "0x7f000001", "2130706433", "0177.0.0.1", "0177.0.0.01", "017700000001",
    "4294967296", "256.1.1.1", "1.2.3.256", "1.2.3.4.5", "1.2.3.example",
    "example.123", "0x", "169.254.169.254", "0.0.0.0", "2001:db8::1",
    "[2001:db8::1]", "[2001:DB8:0:0::1]", "[2001:db8::0001]", "[::1",
    "[::ffff:127.0.0.1]", "[::FFFF:7f00:1]", "[fe80::1%25eth0]", "[not-ip]",
    "a" * 63 + ".example", "a" * 64 + ".example",
]

PATHS = [
    "/", "//", "/.", "/..", "/./", "/../", "/a/", "/a/.", "/a/..", "/a/b/",
    "/a/b/..", "/files/report.pdf", "/%66iles/report.pdf",
    "/%66%69%6C%65%73/report.pdf", "/./files/./report.pdf",
    "//files///report.pdf", "/a/../files/report.pdf",
    "/a/%2e%2e/files/report.pdf", "/../../files/report.pdf", "/a/%2F../b",
    "/a//../b", "/a/../s?q", "/files%2Freport.pdf", "/files%2freport.pdf",
    "/files%5Creport.pdf", "/files\\report.pdf", "/files/%", "/files/%4",
    "/files/%zz", "/files/%00", "/files/%0a", "/files/%7F", "/bad%FFbyte",
    "/caf%C3%A9", "/café", "/api/v4/projects/group%2Fproject", "/s?q",
    "/s?q=%00", "/s?q=%2Ffiles%2F&x=1", "/s?a=1//2&b=../c", "/a%25b",
    "/a%3Fb?c", "/a%23b", "*",
]


def client_hellos():
    """What this machine's OpenSSL sends first, with and without a name
    and ALPN, and the same split into records; a server's first flight."""
    hellos = []
    for name, alpn in [("www.example.com", ["h2", "http/1.1"]), ("www.example.org", None), (None, None)]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if alpn:
            context.set_alpn_protocols(alpn)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hellos.append(outgoing.read())
    record = hellos[0]
    body = record[5:]
    split = b"".join(
        record[:3] + len(body[i:i + 64]).to_bytes(2, "big") + body[i:i + 64]
        for i in range(0, len(body), 64)
    )
    hellos.append(split)
    hellos.append(b"\x14\x03\x03\x00\x01\x01" + hellos[1])  # CCS, then the second hello
    hellos.append(b"SSH-2.0-OpenSSH_9.6\r\n")
    hellos.append(b"GET / HTTP/1.1\r\n\r\n")
    # A ServerHello that is a HelloRetryRequest (its fixed random).
    retry_random = bytes.fromhex(
        "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
    server_hello = b"\x03\x03" + retry_random + b"\x00" + b"\x13\x01" + b"\x00" + b"\x00\x06\x00\x2b\x00\x02\x03\x04"
    message = b"\x02" + len(server_hello).to_bytes(3, "big") + server_hello
    hellos.append(b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message)
    return hellos


def admission_reviews():
    def review(pod, namespace="team"):
        return json.dumps({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": pod,
            },
        })
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
             "spec": {"containers": [{"name": "app", "image": "app"}]}}
    own = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
           "spec": {
               "initContainers": [{"name": "init", "image": "busybox", "env": [{"name": "NO_PROXY", "value": "mine"}]}],
               "containers": [
                   {"name": "app", "image": "app", "env": [
                       {"name": "HTTPS_PROXY", "value": "http://mine:3128"},
                       {"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx256m"},
                       {"name": "SSL_CERT_FILE", "value": "/my/roots.pem"},
                       {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "futureField": {"kept": True}},
                   {"name": "sidecar", "image": "side", "envFrom": [{"configMapRef": {"name": "c"}}]}],
               "volumes": [{"name": "data", "emptyDir": {}}],
               "futureSpecField": [1, 2, 3]}}
    opted_out = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "x", "annotations": {"egress.dev/inject": "false"}},
                 "spec": {"containers": [{"name": "app", "image": "app"}]}}
    return [review(plain), review(own), review(opted_out), review(plain, "kube-system")]


def parent_cas():
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ext = d / "ext.cnf"
        ext.write_text("[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                       "[int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                       "nameConstraints=critical,permitted;DNS:example.com\n"
                       "[leaf]\nbasicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:www.example.com\n")

        def openssl(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "root.key", "-out", "root.pem", "-days", "3650", "-subj", "/CN=Fuzz Root",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl("genrsa", "-traditional", "-out", "rsa.key", "2048")
        openssl("req", "-new", "-key", "rsa.key", "-subj", "/CN=Fuzz RSA Intermediate", "-out", "rsa.csr")
        openssl("x509", "-req", "-in", "rsa.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "2",
                "-days", "3650", "-extfile", "ext.cnf", "-extensions", "ca", "-out", "rsa.pem")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "int.key")
        openssl("req", "-new", "-key", "int.key", "-subj", "/CN=Fuzz Constrained", "-out", "int.csr")
        openssl("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "3",
                "-days", "3650", "-extfile", "ext.cnf", "-extensions", "int", "-out", "int.pem")
        openssl("genpkey", "-algorithm", "ed25519", "-out", "ed.key")
        openssl("req", "-x509", "-key", "ed.key", "-out", "ed.pem", "-days", "3650", "-subj", "/CN=Fuzz Ed25519",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
        openssl("req", "-new", "-key", "int.key", "-subj", "/CN=www.example.com", "-out", "leaf.csr")
        openssl("x509", "-req", "-in", "leaf.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "4",
                "-days", "3650", "-extfile", "ext.cnf", "-extensions", "leaf", "-out", "leaf.pem")
        openssl("x509", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa.der")
        r = lambda name: (d / name).read_bytes()
        seeds += [
            r("root.pem") + b"\0" + r("root.key"),
            r("rsa.pem") + b"\0" + r("rsa.key") + b"\0" + r("root.pem"),
            r("int.pem") + r("root.pem") + b"\0" + r("int.key"),
            r("ed.pem") + b"\0" + r("ed.key"),
            r("leaf.pem") + b"\0" + r("int.key") + b"\0" + r("root.pem"),
            r("rsa.pem") + b"\0" + r("int.key"),
            r("rsa.der") + b"\0" + r("rsa.key"),
        ]
    return seeds


def compiled_policies():
    gateway = sys.argv[1] if len(sys.argv) > 1 else None
    if not gateway:
        print("compiled_policy: pass the egress-gateway binary to compile the examples", file=sys.stderr)
        return None
    seeds = []
    for example in ["seed-policy.yaml", "allowlist.yaml", "office-hours.yaml", "allowlist-monitor.yaml",
                    "cluster/llm-credential.yaml", "lists.yaml"]:
        out = subprocess.run([gateway, "policy", "compile", str(REPO / "examples" / example)],
                             check=True, capture_output=True)
        seeds.append(out.stdout)
    return seeds


def policy_parts():
    """A manifest, a zero byte, and the gzip stream it names cut into as many
    equal pieces as it has parts: whole, and with one byte of a part changed."""
    import gzip, hashlib, json
    digest = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
    seeds = []
    for text, count in [(b'{"formatVersion":1}', 1),
                        ((REPO / "examples" / "seed-policy.yaml").read_bytes(), 2),
                        ((REPO / "examples" / "lists.yaml").read_bytes(), 3)]:
        stream = gzip.compress(text, mtime=0)
        size = -(-len(stream) // count)
        pieces = [stream[i:i + size] for i in range(0, len(stream), size)]
        manifest = {"encoding": "gzip", "sha256": digest(stream), "size": len(text),
                    "parts": [{"name": f"egress-policy-part-{i + 1}", "sha256": digest(p)}
                              for i, p in enumerate(pieces)]}
        head = json.dumps(manifest, separators=(",", ":")).encode() + b"\0"
        seeds.append(head + stream)
        changed = bytearray(stream)
        changed[len(changed) // 2] ^= 1
        seeds.append(head + bytes(changed))
    return seeds


def main():
    write("request_head", request_heads())
    write("host", HOSTS)
    write("path", PATHS)
    write("client_hello", client_hellos())
    write("policy_yaml", [(REPO / "examples" / name).read_bytes()
                          for name in ["seed-policy.yaml", "allowlist.yaml", "office-hours.yaml",
                                       "allowlist-monitor.yaml", "cluster/llm-credential.yaml",
                                       "lists.yaml"]])
    compiled = compiled_policies()
    if compiled is not None:
        write("compiled_policy", compiled)
    aws = [b"\0" + (REPO / "examples/aws" / name).read_bytes()
           for name in ["seed-configuration.json", "seed-rule-group.json"]]
    # The console's CSV export, as the import's unit test reads it.
    aws.append(b"\x01rulePriority,ruleHookType,ruleName,ruleAction,conditionKey,conditionOperator,conditionValue\n"
               b"0,PreDNS,test-pre-dns,ALLOW,,,\n"
               b",PreDNS,test-pre-dns,ALLOW,request:DestinationDomain,StringEquals,\".amazonaws.com,httpbin.org\"\n"
               b"0,PreREQUEST,test-pre-req,DENY,,,\n"
               b",PreREQUEST,test-pre-req,DENY,request:Http:Method,StringEquals,POST\n"
               b"0,PostRESPONSE,test-post-res,ALERT,,,\n"
               b",PostRESPONSE,test-post-res,ALERT,response:Http:StatusCode,NumericEquals,500\n")
    # A Network Firewall domain list rule group.
    aws.append(b'\0{"RuleGroup": {"RulesSource": {"RulesSourceList": {"Targets": [".pypi.org", "github.com"], '
               b'"TargetTypes": ["TLS_SNI", "HTTP_HOST"], "GeneratedRulesType": "ALLOWLIST"}}}, '
               b'"RuleGroupResponse": {"RuleGroupName": "Allowed"}}')
    write("aws_import", aws)
    write("admission_review", admission_reviews())
    write("parent_ca", parent_cas())
    write("policy_parts", policy_parts())


if __name__ == "__main__":
    main()
