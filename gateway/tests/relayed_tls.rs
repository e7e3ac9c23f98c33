//! Relayed tunnels judged by the TLS they carry, without decrypting: the
//! ClientHello's server name is the destination. Real clients (curl,
//! openssl s_client, Python's ssl) through the gateway to a real TLS origin
//! whose certificate covers every name used, so only the gateway can refuse.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{curl, python_command};
use common::process::{Gateway, connect_with_timeout};
use common::upstream::Upstream;
use common::{BYPASS_HOST, DENIED_HOST, HOST, Pki, TempDir, seed_without_proxy, write};
use egress_gateway::tls::client_hello;
use serde_json::Value;

/// The seed policy (PreDNS denies `.example.org`) with a proxy that
/// relays `BYPASS_HOST` (or everything, `intercept` off) and expects TLS on
/// `tls_port`; `relayed` adds to its `relayedTunnels`.
fn policy(dir: &Path, intercept: bool, tls_port: u16, relayed: &str) -> std::path::PathBuf {
    let yaml = format!(
        "{}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata:\n  name: test-proxy\nspec:\n  configurationRef:\n    name: seed\n  tlsInterception:\n    enabled: {intercept}\n    bypassDomains: [\"{BYPASS_HOST}\"]\n  relayedTunnels:\n    tlsPorts: [{tls_port}]\n{relayed}  destinations:\n    allowPrivateCIDRs: [\"127.0.0.1/32\"]\n",
        seed_without_proxy()
    );
    write(dir, "policy.yaml", &yaml)
}

#[test]
fn on_any_port_a_client_hello_is_judged_and_other_protocols_go_on() {
    // tlsPorts is the default (443): the origins below are on other ports.
    let pki = Pki::new();
    let (cert, key) = pki.server_cert(&[HOST, DENIED_HOST]);
    let origin = Upstream::https(&cert, &key);
    let plain = Upstream::http(common::upstream::Behavior::Normal);
    // A server that speaks first, as SSH does.
    let banner = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let banner_port = banner.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in banner.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"SSH-2.0-test\r\n");
        }
    });
    let dir = TempDir::new("sni-any-port");
    let yaml = format!(
        "{}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata:\n  name: test-proxy\nspec:\n  configurationRef:\n    name: seed\n  destinations:\n    allowPrivateCIDRs: [\"127.0.0.1/32\"]\n",
        seed_without_proxy()
    );
    let gateway = Gateway::start(&pki, &write(dir.path(), "policy.yaml", &yaml), &[]);
    let root = pki.upstream_root.display().to_string();
    let gateway_https = gateway.https_proxy();

    // Through the HTTPS listener this time (the copied path).
    let intercept_root = pki.intercept_root.display().to_string();
    let via_https = |extra: &[&str]| {
        let mut args = vec![
            "--proxy",
            gateway_https.as_str(),
            "--proxy-cacert",
            intercept_root.as_str(),
            "--cacert",
            root.as_str(),
        ];
        args.extend_from_slice(extra);
        curl(&args)
    };
    // A fronted ClientHello on a port that is not 443.
    let port = origin.addr.port();
    let fronted = via_https(&[
        "--connect-to",
        &format!("{DENIED_HOST}:{port}:{HOST}:{port}"),
        &format!("https://{DENIED_HOST}:{port}/"),
    ]);
    assert_ne!(fronted.exit, 0, "{fronted:?}");
    let line = gateway.decision(|d| d["tls_sni"] == DENIED_HOST);
    assert_eq!(line["final_rule_name"], "tls-sni-mismatch", "{line}");
    assert_eq!(line["src_vpce"], "test-proxy-https", "{line}");
    let honest = via_https(&[&format!("https://{HOST}:{port}/")]);
    assert_eq!(honest.status, 200, "{honest:?}");

    // Plain HTTP through a tunnel to another port: relayed as it is.
    let mut tunnel = raw_tunnel(gateway.http, &format!("{HOST}:{}", plain.addr.port()));
    tunnel
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let answer = until_closed(&mut tunnel);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A server that speaks first: the client reads it without a word.
    let mut ssh = raw_tunnel(gateway.http, &format!("{HOST}:{banner_port}"));
    let mut got = [0u8; 14];
    ssh.read_exact(&mut got).expect("the banner");
    assert_eq!(&got, b"SSH-2.0-test\r\n");
}

/// A TLS origin for every test name, and a gateway in front of it.
struct Setup {
    pki: Pki,
    origin: Upstream,
    gateway: Gateway,
    _dir: TempDir,
}

fn setup(tag: &str, intercept: bool, relayed: &str, extra: &[&str]) -> Setup {
    let pki = Pki::new();
    let (cert, key) = pki.server_cert(&[HOST, BYPASS_HOST, DENIED_HOST]);
    let origin = Upstream::https(&cert, &key);
    let dir = TempDir::new(tag);
    let policy = policy(dir.path(), intercept, origin.addr.port(), relayed);
    let gateway = Gateway::start(&pki, &policy, extra);
    Setup {
        pki,
        origin,
        gateway,
        _dir: dir,
    }
}

impl Setup {
    fn port(&self) -> u16 {
        self.origin.addr.port()
    }

    /// `host` with the origin's port: what a CONNECT to the origin names.
    fn authority(&self, host: &str) -> String {
        format!("{host}:{}", self.port())
    }

    fn root(&self) -> String {
        self.pki.upstream_root.display().to_string()
    }

    /// The line of the tunnel to `authority`.
    fn line(&self, authority: &str) -> Value {
        self.gateway
            .decision(|d| d["http_method"] == "CONNECT" && d["url"] == authority)
    }

    /// Python's ssl through a tunnel to `target` with server name `sni`.
    fn python(&self, target: &str, sni: &str, split: &str) -> String {
        let output = python_command(
            "tunnel_tls_client.py",
            &[
                &self.gateway.http.to_string(),
                target,
                sni,
                &self.root(),
                split,
            ],
            &[],
        )
        .output()
        .expect("python runs");
        let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if said.is_empty() {
            return format!(
                "ERROR nothing said: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        said
    }

    /// Python's ssl through a tunnel to `target` with server name `sni` is
    /// refused; the decision line of the refusal.
    fn python_refused(&self, target: &str, sni: &str) -> Value {
        let said = self.python(target, sni, "whole");
        assert!(said.starts_with("ERROR"), "{sni}: {said}");
        self.gateway.decision(|d| d["tls_sni"] == sni)
    }
}

/// curl through the gateway to `url`, its TCP connection (and so the
/// CONNECT) going to `connect_to` instead (`HOST:PORT:HOST:PORT`).
fn curl_fronted(s: &Setup, url: &str, connect_to: &str) -> common::clients::Curl {
    curl(&[
        "-p",
        "--proxy",
        &s.gateway.http_proxy(),
        "--cacert",
        &s.root(),
        "--connect-to",
        connect_to,
        url,
    ])
}

#[test]
fn a_bypassed_name_carrying_a_denied_name_is_closed_and_says_why() {
    let s = setup("sni-bypass", true, "", &[]);
    let port = s.port();
    // As it should be: the bypassed name, itself in the ClientHello.
    let url = format!("https://{BYPASS_HOST}:{port}/");
    let ok = curl(&[
        "--proxy",
        &s.gateway.http_proxy(),
        "--cacert",
        &s.root(),
        &url,
    ]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let line = s.line(&s.authority(BYPASS_HOST));
    assert_eq!(line["final_action"], "Allow", "{line}");
    assert_eq!(line["tls_sni"], BYPASS_HOST, "{line}");
    assert_eq!(
        line["tls_alpn"],
        serde_json::json!(["h2", "http/1.1"]),
        "{line}"
    );

    // Domain fronting: CONNECT to the bypassed name, SNI a denied one.
    let fronted = curl_fronted(
        &s,
        &format!("https://{DENIED_HOST}:{port}/"),
        &format!("{DENIED_HOST}:{port}:{BYPASS_HOST}:{port}"),
    );
    assert_ne!(fronted.exit, 0, "{fronted:?}");
    assert!(
        fronted.stderr.contains("access denied"),
        "the client's TLS says why: {fronted:?}"
    );
    let line = s.gateway.decision(|d| d["tls_sni"] == DENIED_HOST);
    assert_eq!(line["final_action"], "Deny", "{line}");
    assert_eq!(line["final_rule_name"], "tls-sni-mismatch", "{line}");
    assert_eq!(line["dest_domain"], BYPASS_HOST, "{line}");
    assert_eq!(line["decision_phase"], "PreDNS", "{line}");
}

#[test]
fn with_interception_off_every_client_is_held_to_its_connect_name() {
    let s = setup("sni-off", false, "", &[]);
    let target = s.authority(HOST);
    // Python: the right name passes, a denied one and another allowed one
    // do not (a tunnel's name is the CONNECT's, whatever the policy says
    // of the other).
    assert_eq!(s.python(&target, HOST, "whole"), "HTTP/1.1 200 OK");
    for sni in [DENIED_HOST, BYPASS_HOST] {
        let line = s.python_refused(&target, sni);
        assert_eq!(line["final_rule_name"], "tls-sni-mismatch", "{line}");
    }
    // Another spelling of the same name is the same name (the client's
    // own certificate check is its business).
    let spelled = format!("{}.", HOST.to_uppercase());
    s.python(&target, &spelled, "whole");
    let line = s.gateway.decision(|d| d["tls_sni"] == spelled.as_str());
    assert_eq!(line["final_action"], "Allow", "{line}");

    // openssl s_client, the name given apart from the CONNECT.
    let mut s_client = Command::new("openssl");
    s_client
        .args(["s_client", "-brief", "-proxy"])
        .arg(s.gateway.http.to_string())
        .args(["-connect", &target, "-servername", "www.example.org.evil"])
        .args(["-CAfile", &s.root()])
        .stdin(Stdio::null());
    let output = s_client.output().expect("openssl runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("access denied"), "{said}");
    let line = s
        .gateway
        .decision(|d| d["tls_sni"] == "www.example.org.evil");
    assert_eq!(line["final_rule_name"], "tls-sni-mismatch", "{line}");
}

#[test]
fn a_connect_to_an_address_is_judged_by_the_name_it_carries() {
    let s = setup("sni-ip", false, "", &[]);
    let port = s.port();
    let target = format!("127.0.0.1:{port}");
    // A denied name: PreDNS's own rule refuses it, the address kept.
    let line = s.python_refused(&target, DENIED_HOST);
    assert_eq!(line["final_rule_name"], "deny-example-org", "{line}");
    assert_eq!(line["dest_domain"], DENIED_HOST, "{line}");
    assert_eq!(line["dest_ip"], "127.0.0.1", "{line}");
    assert_eq!(line["url"], target, "{line}");
    // An allowed one passes, logged under its name.
    assert_eq!(s.python(&target, HOST, "whole"), "HTTP/1.1 200 OK");
    let line = s.gateway.decision(|d| d["tls_sni"] == HOST);
    assert_eq!(line["final_action"], "Allow", "{line}");
    assert_eq!(line["dest_domain"], HOST, "{line}");
    // curl to the address: no server name at all (none for an address), the
    // CONNECT's address is what was judged. (The origin's certificate has
    // no address in it: curl's own check is left out.)
    let bare = curl(&[
        "-p",
        "--proxy",
        &s.gateway.http_proxy(),
        "--insecure",
        &format!("https://127.0.0.1:{port}/"),
    ]);
    assert_eq!(bare.status, 200, "{bare:?}");
    let line = s.gateway.decision(|d| d["tls_sni"] == "");
    assert_eq!(line["dest_domain"], "127.0.0.1", "{line}");
}

#[test]
fn a_client_hello_split_across_segments_or_records_is_read_whole() {
    let s = setup("sni-split", false, "", &[]);
    let target = s.authority(HOST);
    for split in ["segments", "records"] {
        assert_eq!(s.python(&target, HOST, split), "HTTP/1.1 200 OK", "{split}");
        let said = s.python(&target, DENIED_HOST, split);
        assert!(said.starts_with("ERROR"), "{split}: {said}");
    }
    let refused = || {
        s.gateway
            .decisions()
            .into_iter()
            .filter(|d| d["final_rule_name"] == "tls-sni-mismatch")
            .count()
    };
    common::eventually(Duration::from_secs(5), || (refused() == 2).then_some(()))
        .expect("both refused");
}

/// A tunnel to the origin through the gateway, raw: the stream after the
/// CONNECT's 200.
fn raw_tunnel(gateway: SocketAddr, target: &str) -> TcpStream {
    let mut stream = connect_with_timeout(gateway, Duration::from_secs(20));
    write!(
        stream,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .expect("CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Everything the gateway sends until it closes.
fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

#[test]
fn what_is_not_a_usable_client_hello_is_closed_with_a_line() {
    let s = setup("sni-bad", false, "", &["--handshake-timeout", "1s"]);
    let target = s.authority(HOST);
    let errors = |gateway: &Gateway| -> Vec<Value> {
        gateway
            .decisions()
            .into_iter()
            .filter(|d| {
                d["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("client_hello"))
            })
            .collect()
    };

    // Not TLS on a TLS port: refused by default.
    let mut plain = raw_tunnel(s.gateway.http, &target);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    assert_eq!(
        until_closed(&mut plain),
        b"",
        "nothing reaches or comes back"
    );
    let line = s.gateway.decision(|d| d["final_rule_name"] == "not-tls");
    assert_eq!(line["final_action"], "Deny", "{line}");

    // A ClientHello announcing 1 MiB: refused at its header.
    let mut huge = raw_tunnel(s.gateway.http, &target);
    huge.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x10, 0x00, 0x00])
        .expect("send");
    let alert = until_closed(&mut huge);
    assert_eq!(
        alert,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49],
        "a TLS alert"
    );
    // Garbage in a handshake record.
    let mut garbage = raw_tunnel(s.gateway.http, &target);
    garbage
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff,
        ])
        .expect("send");
    until_closed(&mut garbage);
    // A client that never sends: closed at the handshake timeout.
    let mut silent = raw_tunnel(s.gateway.http, &target);
    let started = Instant::now();
    until_closed(&mut silent);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A ClientHello cut short, then nothing.
    let mut cut = raw_tunnel(s.gateway.http, &target);
    cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send");
    until_closed(&mut cut);

    assert!(
        common::eventually(Duration::from_secs(5), || (errors(&s.gateway).len() >= 4)
            .then_some(()))
        .is_some(),
        "{:?}",
        s.gateway.decisions()
    );
    for line in errors(&s.gateway) {
        assert_eq!(line["dest_domain"], HOST, "{line}");
    }
    // The origin saw a connection, never a byte: nothing to check there but
    // that it still serves.
    assert_eq!(s.python(&target, HOST, "whole"), "HTTP/1.1 200 OK");
}

#[test]
fn the_answers_to_plain_bytes_and_hidden_names_are_settings() {
    let s = setup("sni-settings", false, "    nonTLS: Allow\n", &[]);
    let target = s.authority(HOST);
    // Not TLS, allowed: relayed as it is (the TLS origin answers with its
    // own alert).
    let mut plain = raw_tunnel(s.gateway.http, &target);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    plain
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    until_closed(&mut plain);
    let line = s.gateway.decision(|d| d["http_method"] == "CONNECT");
    assert_eq!(line["final_action"], "Allow", "{line}");
    assert!(line.get("tls_sni").is_none(), "{line}");

    // Encrypted Client Hello (a real client's would carry the extension the
    // same way): refused by default, the outer name a front's.
    let ech = client_hello::forged(&[
        (0, client_hello::server_names(&[HOST])),
        (client_hello::ENCRYPTED_CLIENT_HELLO, vec![0; 64]),
    ]);
    let mut hidden = raw_tunnel(s.gateway.http, &target);
    hidden.write_all(&ech).expect("send");
    until_closed(&mut hidden);
    let line = s
        .gateway
        .decision(|d| d["final_rule_name"] == "encrypted-client-hello");
    assert_eq!(line["tls_sni"], HOST, "{line}");
}

#[test]
fn a_second_client_hello_after_a_retry_must_ask_for_the_same_name() {
    let pki = Pki::new();
    let (cert, key) = pki.server_cert(&[HOST, DENIED_HOST]);
    let origin = Upstream::https_retrying(&cert, &key);
    let dir = TempDir::new("sni-retry");
    let policy = policy(dir.path(), false, origin.addr.port(), "");
    let gateway = Gateway::start(&pki, &policy, &[]);
    let target = format!("{HOST}:{}", origin.addr.port());

    // Python (OpenSSL) offers an X25519 key share first; the origin asks for
    // P-384: the handshake goes on through the retry.
    let output = python_command(
        "tunnel_tls_client.py",
        &[
            &gateway.http.to_string(),
            &target,
            HOST,
            &pki.upstream_root.display().to_string(),
        ],
        &[],
    )
    .output()
    .expect("python runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "HTTP/1.1 200 OK",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A ClientHello for the allowed name with no key share, then, after the
    // retry request, one for a denied name.
    let tls13 = |name: &str| {
        client_hello::forged(&[
            (0, client_hello::server_names(&[name])),
            (43, vec![0x02, 0x03, 0x04]),
            (10, vec![0x00, 0x02, 0x00, 0x18]),
            (51, vec![0x00, 0x00]),
            (
                13,
                vec![
                    0x00, 0x0a, 0x04, 0x03, 0x05, 0x03, 0x08, 0x04, 0x08, 0x05, 0x08, 0x07,
                ],
            ),
        ])
    };
    let mut tunnel = raw_tunnel(gateway.http, &target);
    tunnel.write_all(&tls13(HOST)).expect("first hello");
    let mut header = [0u8; 5];
    tunnel.read_exact(&mut header).expect("the retry request");
    assert_eq!(header[0], 0x16, "a handshake record: {header:?}");
    let mut retry = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
    tunnel.read_exact(&mut retry).expect("its body");
    assert_eq!(retry[0], 2, "a ServerHello");
    tunnel.write_all(&tls13(DENIED_HOST)).expect("second hello");
    // The rest of the origin's answer (a ChangeCipherSpec may follow the
    // retry request), then the refusal.
    let rest = until_closed(&mut tunnel);
    assert!(
        rest.ends_with(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49]),
        "refused: {rest:?}"
    );
    let line = gateway.decision(|d| d["tls_sni"] == DENIED_HOST);
    assert_eq!(line["final_rule_name"], "tls-sni-mismatch", "{line}");
    assert_eq!(line["dest_domain"], HOST, "{line}");
    // Its sizes count the first ClientHello and the retry request, which
    // were passed on before the relay began.
    let (sent, answered) = (tls13(HOST).len(), header.len() + retry.len());
    assert!(line["request_size"].as_u64() >= Some(sent as u64), "{line}");
    assert!(
        line["response_size"].as_u64() >= Some(answered as u64),
        "{line}"
    );
}
