//! The gateway as an attacker tries it: other spellings of a name, an
//! address or a path; framing tricks; stalled peers; credentials in URLs;
//! connections that outlive their request.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::clients::curl;
use common::process::{Gateway, raw_exchange};
use common::upstream::{Behavior, Upstream};
use common::{
    HOST, Pki, TempDir, add_logging, allowing_by_default, eventually, policy_with_proxy,
    read_until_closed,
};

/// Names, addresses and paths denied whatever their spelling. The rule values
/// are written the way a user would (Unicode, one spelling of an address).
const SPELLINGS: &str = r#"apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {name: spellings}
spec:
  rules:
    preDNS:
      - name: deny-books
        action: Deny
        conditions: [{key: "request:DestinationDomain", operator: StringEquals, values: [".bücher.example"]}]
      - name: deny-loopback-literal
        action: Deny
        conditions: [{key: "request:DestinationDomain", operator: StringEquals, values: ["127.0.0.1"]}]
    preRequest:
      - name: deny-files
        action: Deny
        conditions: [{key: "request:Http:Uri", operator: StringLike, values: ["*/files/*"]}]
"#;

/// [`SPELLINGS`] in force, everything else allowed.
fn spellings() -> String {
    allowing_by_default(SPELLINGS, "spellings")
}

struct Setup {
    pki: Pki,
    _dir: TempDir,
    plain: Upstream,
    tls: Upstream,
    gateway: Gateway,
}

fn setup(documents: &str, extra: &[&str]) -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new("hardening");
    let plain = Upstream::http(Behavior::Normal);
    let (cert, key) = pki.server_cert(&[HOST]);
    let tls = Upstream::https(&cert, &key);
    let policy = policy_with_proxy(dir.path(), documents, true, &["127.0.0.1/32"]);
    let gateway = Gateway::start(&pki, &policy, extra);
    Setup {
        pki,
        _dir: dir,
        plain,
        tls,
        gateway,
    }
}

/// The status line's code of a raw exchange.
fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_spelling_of_a_denied_name_or_address_is_denied() {
    let s = setup(&spellings(), &[]);
    let port = s.plain.addr.port();
    let get = |host: &str| {
        raw_exchange(
            s.gateway.http,
            format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    let connect = |host: &str| {
        raw_exchange(
            s.gateway.http,
            format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
        )
    };
    let cases = [
        ("www.xn--bcher-kva.example", "deny-books"),
        ("WWW.XN--BCHER-KVA.EXAMPLE.", "deny-books"),
        ("xn--bcher-kva.example", "deny-books"),
        ("127.0.0.1", "deny-loopback-literal"),
        ("2130706433", "deny-loopback-literal"),
        ("0x7f000001", "deny-loopback-literal"),
        ("0x7F.0.0.1", "deny-loopback-literal"),
        ("0177.0.0.1", "deny-loopback-literal"),
        ("127.1", "deny-loopback-literal"),
        ("127.0.0.1.", "deny-loopback-literal"),
        ("[::ffff:127.0.0.1]", "deny-loopback-literal"),
    ];
    for (host, rule) in cases {
        for (how, response) in [("GET", get(host)), ("CONNECT", connect(host))] {
            assert_eq!(status_of(&response), 403, "{how} {host}: {response}");
            let before = s.gateway.decisions().len().saturating_sub(1);
            let line = s
                .gateway
                .decision_after(before, |d| d["final_rule_name"] == rule);
            let canonical = if rule == "deny-books" {
                line["dest_domain"]
                    .as_str()
                    .expect("domain")
                    .ends_with("xn--bcher-kva.example")
            } else {
                line["dest_domain"] == "127.0.0.1"
            };
            assert!(
                canonical,
                "{how} {host}: the log shows the canonical name: {line}"
            );
        }
    }
    // A percent-encoded host is refused, not decoded: in a request target
    // (hyper refuses it already) and in a Host header inside a tunnel.
    let encoded = get("www.ex%61mple.com");
    assert_eq!(status_of(&encoded), 400, "{encoded}");
    let root = s.pki.intercept_root.display().to_string();
    let tls = format!("https://{HOST}:{}/", s.tls.addr.port());
    let proxy = s.gateway.http_proxy();
    let inside = curl(&[
        "--http1.1",
        "--proxy",
        &proxy,
        "--cacert",
        &root,
        "-H",
        "Host: www.ex%61mple.com",
        &tls,
    ]);
    assert_eq!(inside.status, 400, "{inside:?}");
    assert_eq!(
        s.gateway
            .metric("egress_errors_total{side=\"downstream\",reason=\"invalid_host\"}"),
        1.0
    );
    // Another spelling of the tunnel's own name is the same host.
    let same = curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        &root,
        "-H",
        "Host: WWW.Example.COM.",
        &tls,
    ]);
    assert_eq!(same.status, 200, "{same:?}");
    // The one allowed spelling still works.
    assert_eq!(status_of(&get(HOST)), 200);
}

#[test]
fn every_spelling_of_a_denied_path_is_denied_and_unsafe_paths_are_refused() {
    let s = setup(&spellings(), &[]);
    let plain = format!("http://{HOST}:{}", s.plain.addr.port());
    let tls = format!("https://{HOST}:{}", s.tls.addr.port());
    let root = s.pki.intercept_root.display().to_string();
    let proxy = s.gateway.http_proxy();
    let denied = [
        "/files/a",
        "/%66iles/a",
        "/%66%69%6c%65%73/a",
        "/x/../files/a",
        "/x/%2e%2e/files/a",
        "/./files/./a",
        "//files//a",
        "/x/files%2Fa",
        "/x%2F..%2Ffiles/a",
        "/x/files%5Ca",
    ];
    let unsafe_paths = [
        "/a//../files/x",
        "/files/%zz",
        "/x/%00/y",
        "/x%2F%2F..%2Ffiles",
    ];
    // The denied spellings meet the rule (403); unsafe paths are refused
    // before any rule (400).
    for (paths, status) in [(&denied[..], 403), (&unsafe_paths[..], 400)] {
        for path in paths {
            for base in [&plain, &tls] {
                let url = format!("{base}{path}");
                let result = curl(&["--path-as-is", "--proxy", &proxy, "--cacert", &root, &url]);
                assert_eq!(result.status, status, "{url}: {result:?}");
                if status == 403 {
                    let line = s.gateway.decision_for(&url);
                    assert_eq!(line["final_rule_name"], "deny-files", "{url}: {line}");
                }
            }
        }
    }
    // Allowed paths reach the upstream as the client sent them.
    let echo = curl(&["--proxy", &proxy, &format!("{plain}/echo?q=%2F")]);
    assert_eq!(echo.status, 200, "{echo:?}");
    assert!(
        echo.body.contains("\"uri\":\"/echo?q=%2F\""),
        "{}",
        echo.body
    );
}

#[test]
fn a_request_with_two_lengths_is_refused_and_a_response_with_two_is_reframed() {
    let s = setup(&spellings(), &[]);
    let port = s.plain.addr.port();
    for head in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
    ] {
        let response = raw_exchange(
            s.gateway.http,
            format!("POST http://{HOST}:{port}/echo HTTP/1.1\r\nHost: {HOST}\r\n{head}\r\n\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&response), 400, "{head}: {response}");
    }
    assert!(
        s.gateway
            .metric("egress_errors_total{side=\"downstream\",reason=\"ambiguous_length\"}")
            >= 2.0
    );

    // An upstream that sends both: Transfer-Encoding wins (RFC 9112 6.3) and
    // its Content-Length is not passed on.
    let liar = Upstream::http(Behavior::Raw(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ));
    let url = format!("http://{HOST}:{}/", liar.addr.port());
    let response = raw_exchange(
        s.gateway.http,
        format!("GET {url} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert_eq!(status_of(head), 200, "{response}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 3"),
        "{response}"
    );
    assert!(body.contains("hello"), "the whole body arrives: {response}");
    let curled = curl(&["--proxy", &s.gateway.http_proxy(), &url]);
    assert_eq!(
        (curled.status, curled.body.as_str()),
        (200, "hello"),
        "{curled:?}"
    );
}

#[test]
fn a_stalled_upstream_gets_a_504_and_stalled_clients_are_cut() {
    let s = setup(
        &spellings(),
        &["--upstream-response-timeout", "1s", "--idle-timeout", "2s"],
    );
    let silent = Upstream::http(Behavior::Silent);
    let url = format!("http://{HOST}:{}/", silent.addr.port());
    let started = Instant::now();
    let result = curl(&["--proxy", &s.gateway.http_proxy(), &url]);
    assert_eq!(result.status, 504, "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let line = s.gateway.decision_for(&url);
    assert_eq!(line["http_status_code"], 504, "{line}");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("upstream_response_timeout")),
        "{line}"
    );

    // A client that starts a body and stops is cut after the idle timeout.
    let mut stream = TcpStream::connect(s.gateway.http).expect("connect");
    write!(
        stream,
        "POST http://{HOST}:{}/echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789",
        s.plain.addr.port()
    )
    .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let started = Instant::now();
    read_until_closed(&mut stream);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the connection was closed by the gateway, not by the read timeout"
    );
}

#[test]
fn the_admin_listener_cuts_silent_clients() {
    let s = setup(&spellings(), &["--header-timeout", "1s"]);
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(s.gateway.admin).expect("connect"))
        .collect();
    let started = Instant::now();
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        read_until_closed(&mut stream);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "silent admin connections are closed after the header timeout"
    );
    assert_eq!(s.gateway.admin_get("/healthz").0, 200);
}

#[test]
fn credentials_never_reach_the_decision_log() {
    let s = setup(&spellings(), &[]);
    let port = s.plain.addr.port();
    let url = format!("http://alice:s3cret@{HOST}:{port}/echo?token=t0ken&x=1");
    let result = curl(&["--proxy", &s.gateway.http_proxy(), &url]);
    assert_eq!(result.status, 200, "{result:?}");
    let line = s
        .gateway
        .decision(|d| d["url"].as_str().is_some_and(|u| u.contains("/echo")));
    assert_eq!(line["url"], format!("http://{HOST}:{port}/echo"), "{line}");
    let text = line.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("alice") && !text.contains("t0ken"),
        "{text}"
    );
    // Userinfo never goes upstream either.
    assert!(!result.body.contains("s3cret"), "{}", result.body);

    // A proxy that asks for query strings gets them, still without userinfo.
    let dir = TempDir::new("query-strings");
    let policy = policy_with_proxy(dir.path(), &spellings(), true, &["127.0.0.1/32"]);
    add_logging(&policy, "{queryStrings: true}");
    let gateway = Gateway::start(&s.pki, &policy, &[]);
    let result = curl(&["--proxy", &gateway.http_proxy(), &url]);
    assert_eq!(result.status, 200, "{result:?}");
    let line = gateway.decision(|d| d["url"].as_str().is_some_and(|u| u.contains("/echo")));
    assert_eq!(
        line["url"],
        format!("http://{HOST}:{port}/echo?token=t0ken&x=1"),
        "{line}"
    );
    assert!(!line.to_string().contains("s3cret"), "{line}");
}

#[test]
fn tunnels_hold_their_place_under_the_connection_cap() {
    let s = setup(&spellings(), &["--max-connections", "2"]);
    let port = s.plain.addr.port();
    // Two relayed tunnels (the plain upstream is not intercepted: port 80 is
    // not TLS, but interception only starts after the 200; use the bypass
    // host instead).
    let open = || {
        let mut stream = TcpStream::connect(s.gateway.http).expect("connect");
        write!(
            stream,
            "CONNECT {}:{port} HTTP/1.1\r\nHost: x\r\n\r\n",
            common::BYPASS_HOST
        )
        .expect("write");
        let mut reply = [0u8; 12];
        stream.read_exact(&mut reply).expect("reply");
        assert!(
            reply.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        stream
    };
    let first = open();
    let _second = open();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("http://{HOST}:{port}/");
    let waiting = curl(&["--proxy", &s.gateway.http_proxy(), "--max-time", "1", &url]);
    assert_eq!(waiting.status, 0, "open tunnels fill the cap: {waiting:?}");
    drop(first);
    let served = eventually(Duration::from_secs(5), || {
        let result = curl(&["--proxy", &s.gateway.http_proxy(), "--max-time", "2", &url]);
        (result.status == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "a closed tunnel frees its place; open tunnels: {}\n{}",
        s.gateway.metric("egress_open_tunnels"),
        s.gateway.diagnostics().join("\n")
    );
}
