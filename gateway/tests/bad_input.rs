//! Bad input from clients, destinations and DNS: each gets its status and its
//! log line, and the gateway keeps serving everyone else.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::clients::curl;
use common::dns::FakeDns;
use common::process::{Gateway, raw_exchange};
use common::upstream::{Behavior, Upstream};
use common::{HOST, Pki, TempDir, read_until_closed, seed_policy};

struct Setup {
    pki: Pki,
    _dir: TempDir,
    plain: Upstream,
    gateway: Gateway,
}

fn setup(extra: &[&str]) -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new("bad-input");
    let plain = Upstream::http(Behavior::Normal);
    let gateway = Gateway::start(&pki, &seed_policy(dir.path(), true), extra);
    Setup {
        pki,
        _dir: dir,
        plain,
        gateway,
    }
}

impl Setup {
    /// A good request still works.
    fn still_serving(&self) {
        let url = format!("http://{HOST}:{}/", self.plain.addr.port());
        let ok = self.gateway.curl(&[&url]);
        assert_eq!(ok.status, 200, "the gateway must keep serving: {ok:?}");
    }
}

#[test]
fn malformed_and_oversized_requests() {
    let s = setup(&[]);
    let reply = raw_exchange(s.gateway.http, b"GARBAGE\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let big = format!(
        "GET http://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let reply = raw_exchange(s.gateway.http, big.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let reply = raw_exchange(s.gateway.http, b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("This is a forward proxy"),
        "{reply}"
    );
    let reply = raw_exchange(
        s.gateway.http,
        format!("GET https://{HOST}/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    );
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("CONNECT"),
        "{reply}"
    );
    assert!(
        s.gateway
            .metric("egress_errors_total{side=\"downstream\",reason=\"malformed_request\"}")
            >= 1.0
    );
    assert!(
        s.gateway
            .metric("egress_errors_total{side=\"downstream\",reason=\"header_too_large\"}")
            >= 1.0
    );
    s.gateway.diagnostic(&["client request rejected", "431"]);
    s.still_serving();
}

#[test]
fn connect_to_bad_ports() {
    let s = setup(&[]);
    for target in [
        format!("{HOST}:0"),
        HOST.to_owned(),
        format!("{HOST}:99999"),
        format!("{HOST}:https"),
    ] {
        let reply = raw_exchange(
            s.gateway.http,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        );
        assert!(reply.starts_with("HTTP/1.1 400"), "{target}: {reply}");
    }
    s.still_serving();
}

#[test]
fn slow_headers_are_cut_and_others_are_served_meanwhile() {
    let s = setup(&["--header-timeout", "1s"]);
    let mut slow = TcpStream::connect(s.gateway.http).expect("connect");
    slow.write_all(b"GET http://www.example.com/ HTTP/1.1\r\n")
        .expect("write");
    let started = Instant::now();
    s.still_serving();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    read_until_closed(&mut slow);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "closed after the header timeout, not {waited:?}"
    );
    s.gateway.wait_metric(
        "egress_errors_total{side=\"downstream\",reason=\"header_timeout\"}",
        1.0,
    );
    s.still_serving();
}

#[test]
fn garbage_on_the_https_listener() {
    let s = setup(&[]);
    let reply = raw_exchange(s.gateway.https, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!reply.contains("200"), "{reply}");
    s.gateway.wait_metric(
        "egress_errors_total{side=\"downstream\",reason=\"proxy_tls\"}",
        1.0,
    );
    let url = format!("http://{HOST}:{}/", s.plain.addr.port());
    let root = s.pki.intercept_root.display().to_string();
    let ok = s.gateway.curl_over_tls(&root, &[&url]);
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn upstreams_that_reset_or_have_bad_certificates() {
    let s = setup(&[]);
    let root = s.pki.intercept_root.display().to_string();
    let proxy = s.gateway.http_proxy();

    let reset = Upstream::http(Behavior::Reset);
    let url = format!("http://{HOST}:{}/", reset.addr.port());
    assert_eq!(curl(&["--proxy", &proxy, &url]).status, 502);
    let line = s
        .gateway
        .decision_with_error(&url, |e| e.starts_with("upstream_protocol"));
    assert_eq!(line["http_status_code"], 502);

    let (cert, key) = s.pki.untrusted_server_cert(&[HOST]);
    let rogue = Upstream::https(&cert, &key);
    let url = format!("https://{HOST}:{}/", rogue.addr.port());
    let result = curl(&["--proxy", &proxy, "--cacert", &root, &url]);
    assert_eq!(result.status, 502, "never a silent downgrade: {result:?}");
    assert!(result.body.contains("TLS certificate"), "{result:?}");
    s.gateway.decision_with_error(&url, |e| {
        e.starts_with("upstream_tls") && e.contains("UnknownIssuer")
    });

    let (cert, key) = s.pki.server_cert(&["other.example.com"]);
    let wrong_name = Upstream::https(&cert, &key);
    let url = format!("https://{HOST}:{}/", wrong_name.addr.port());
    assert_eq!(
        curl(&["--proxy", &proxy, "--cacert", &root, &url]).status,
        502
    );
    s.gateway
        .decision_with_error(&url, |e| e.contains("not valid for name"));

    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://{HOST}:{closed}/");
    assert_eq!(curl(&["--proxy", &proxy, &url]).status, 502);
    s.gateway
        .decision_with_error(&url, |e| e.starts_with("upstream_connect"));
    s.still_serving();
}

/// `--max-header-bytes` bounds response heads from upstreams too (and with
/// them the buffers an upstream connection may grow).
#[test]
fn an_upstream_response_head_beyond_the_header_limit_is_502() {
    let s = setup(&["--max-header-bytes", "16384"]);
    let proxy = s.gateway.http_proxy();
    let head_with = |header: usize| -> &'static str {
        let value = "a".repeat(header);
        let response = format!("HTTP/1.1 200 OK\r\nX-Big: {value}\r\nContent-Length: 2\r\n\r\nok");
        Box::leak(response.into_boxed_str())
    };
    let within = Upstream::http(Behavior::Raw(head_with(10_000)));
    let url = format!("http://{HOST}:{}/", within.addr.port());
    let result = curl(&["--proxy", &proxy, &url]);
    assert_eq!(
        (result.status, result.body.as_str()),
        (200, "ok"),
        "{result:?}"
    );

    let beyond = Upstream::http(Behavior::Raw(head_with(20_000)));
    let url = format!("http://{HOST}:{}/", beyond.addr.port());
    assert_eq!(curl(&["--proxy", &proxy, &url]).status, 502);
    s.gateway.decision_with_error(&url, |e| {
        e.starts_with("upstream_protocol") && e.contains("too large")
    });
    s.still_serving();
}

#[test]
fn nxdomain_is_502_and_a_silent_resolver_is_504() {
    let dns = FakeDns::start();
    let server = dns.addr.to_string();
    let s = setup(&["--dns-server", &server, "--dns-timeout", "1s"]);
    let proxy = s.gateway.http_proxy();
    let url = "http://nx.example.com/";
    let result = curl(&["--proxy", &proxy, url]);
    assert_eq!(result.status, 502, "{result:?}");
    assert!(result.body.contains("does not resolve"), "{result:?}");
    let line = s
        .gateway
        .decision_with_error(url, |e| e.starts_with("dns_nxdomain"));
    assert!(line["dest_ip"].is_null());

    let started = Instant::now();
    let url = "http://slow.example.com/";
    assert_eq!(curl(&["--proxy", &proxy, url]).status, 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    s.gateway
        .decision_with_error(url, |e| e.starts_with("dns_timeout"));

    // An A answer is used at once, even when the AAAA query is never answered.
    let started = Instant::now();
    let url = format!("http://a-only.example.com:{}/", s.plain.addr.port());
    let ok = curl(&["--proxy", &proxy, &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    let connect = curl(&["--proxy", &proxy, "https://nx.example.com/"]);
    assert!(
        connect
            .stderr
            .contains("CONNECT tunnel failed, response 502"),
        "{connect:?}"
    );
    s.still_serving();
}

#[test]
fn private_destinations_and_the_proxy_itself_are_refused() {
    let s = setup(&["--resolve", "internal.example.com:*:10.1.2.3"]);
    let proxy = s.gateway.http_proxy();
    let own_http = format!("http://127.0.0.1:{}/", s.gateway.http.port());
    let metadata = "http://169.254.169.254/latest/meta-data/";
    // Requested URL, and the canonical one the log shows.
    let cases = [
        (metadata, metadata),
        (
            "http://[::ffff:169.254.169.254]/latest/meta-data/",
            metadata,
        ),
        ("http://2852039166/latest/meta-data/", metadata),
        ("http://0xa9.254.43518/latest/meta-data/", metadata),
        (
            "http://internal.example.com/",
            "http://internal.example.com/",
        ),
        (&own_http, &own_http),
    ];
    for (url, logged) in cases {
        let before = s.gateway.decisions().len();
        let result = curl(&["--proxy", &proxy, url]);
        assert_eq!(result.status, 403, "{url}: {result:?}");
        let line = s.gateway.decision_after(before, |d| d["url"] == logged);
        assert_eq!(
            line["final_rule_name"], "private-destination",
            "{url}: {line}"
        );
        assert_eq!(line["decision_phase"], "PreREQUEST", "{url}: {line}");
    }
    let tunnel = curl(&[
        "--proxy",
        &proxy,
        "-k",
        &format!("https://127.0.0.1:{}/", s.gateway.admin.port()),
    ]);
    assert!(
        tunnel
            .stderr
            .contains("CONNECT tunnel failed, response 403"),
        "{tunnel:?}"
    );
    // A request that already went through this proxy is a loop.
    let url = format!("http://{HOST}:{}/", s.plain.addr.port());
    let looped = curl(&[
        "--proxy",
        &proxy,
        "-H",
        "Via: 1.1 test-proxy (egress-gateway)",
        &url,
    ]);
    assert_eq!(looped.status, 403);
    s.still_serving();
}

#[test]
fn the_connection_cap_queues_clients_beyond_it() {
    let s = setup(&["--max-connections", "2"]);
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(s.gateway.http).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("http://{HOST}:{}/", s.plain.addr.port());
    let waiting = curl(&["--proxy", &s.gateway.http_proxy(), "--max-time", "1", &url]);
    assert_eq!(waiting.status, 0, "a third connection waits: {waiting:?}");
    drop(idle);
    s.still_serving();
}
