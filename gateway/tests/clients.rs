//! Real clients through both listeners, with interception on and off.
//!
//! Which CA a client must trust tells the paths apart: an intercepted tunnel
//! verifies only with the interception root, a relayed one only with the
//! destination's own root.

mod common;

use std::process::{Command, Output};

use common::clients::{curl, go_client, python_script};
use common::process::Gateway;
use common::upstream::{Behavior, Upstream};
use common::{BYPASS_HOST, HOST, Pki, TempDir, seed_policy};

struct Setup {
    pki: Pki,
    _dir: TempDir,
    tls_upstream: Upstream,
    plain_upstream: Upstream,
    gateway: Gateway,
}

fn setup(intercept: bool) -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new("clients");
    let (cert, key) = pki.server_cert(&[HOST, BYPASS_HOST]);
    let tls_upstream = Upstream::https(&cert, &key);
    let plain_upstream = Upstream::http(Behavior::Normal);
    let gateway = Gateway::start(&pki, &seed_policy(dir.path(), intercept), &[]);
    Setup {
        pki,
        _dir: dir,
        tls_upstream,
        plain_upstream,
        gateway,
    }
}

/// Fails unless a client run through `proxy` printed `expected`, a line for
/// each URL it was given.
fn assert_printed(output: &Output, expected: &[&str], proxy: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        expected,
        "{proxy}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn curl_intercepted_through_both_listeners() {
    let s = setup(true);
    let url = format!("https://{HOST}:{}/", s.tls_upstream.addr.port());
    let intercept_root = path(&s.pki.intercept_root);
    let upstream_root = path(&s.pki.upstream_root);
    for proxy_args in [
        vec!["--proxy".to_owned(), s.gateway.http_proxy()],
        vec![
            "--proxy".to_owned(),
            s.gateway.https_proxy(),
            "--proxy-cacert".to_owned(),
            intercept_root.clone(),
        ],
    ] {
        let proxy: Vec<&str> = proxy_args.iter().map(String::as_str).collect();
        let ok = curl(&[&proxy[..], &["--cacert", &intercept_root, &url]].concat());
        assert_eq!(
            (ok.status, ok.body.as_str()),
            (200, "hello from upstream"),
            "{proxy:?}: {ok:?}"
        );
        let refused = curl(&[&proxy[..], &["--cacert", &upstream_root, &url]].concat());
        assert_eq!(
            refused.status, 0,
            "the leaf must come from the interception CA: {refused:?}"
        );
    }
    // Both refusals are the client rejecting the minted leaf (curl 7.88 words the
    // one inside an HTTPS proxy as SSL_ERROR_SYSCALL); the gateway logs the alert.
    for vpce in ["test-proxy-http", "test-proxy-https"] {
        let line = s
            .gateway
            .decision(|d| d["src_vpce"] == vpce && d["error"].as_str().is_some());
        assert_eq!(
            line["error"], "client_tls: received fatal alert: UnknownCA",
            "{line}"
        );
    }
    let https_line = s
        .gateway
        .decision(|d| d["src_vpce"] == "test-proxy-https" && d["http_status_code"] == 200);
    assert_eq!(https_line["url"], url.as_str());
    // HTTP/2 is negotiated with the client on intercepted connections.
    let h2 = curl(&[
        "--http2",
        "--proxy",
        &s.gateway.http_proxy(),
        "--cacert",
        &intercept_root,
        &url,
    ]);
    assert_eq!((h2.status, h2.http_version.as_str()), (200, "2"), "{h2:?}");
}

#[test]
fn curl_relayed_when_bypassed_or_interception_is_off() {
    for (intercept, host) in [(true, BYPASS_HOST), (false, HOST)] {
        let s = setup(intercept);
        let url = format!("https://{host}:{}/", s.tls_upstream.addr.port());
        let upstream_root = path(&s.pki.upstream_root);
        let intercept_root = path(&s.pki.intercept_root);
        let ok = s.gateway.curl(&["--cacert", &upstream_root, &url]);
        assert_eq!(
            (ok.status, ok.body.as_str()),
            (200, "hello from upstream"),
            "{ok:?}"
        );
        let via_https = s
            .gateway
            .curl_over_tls(&intercept_root, &["--cacert", &upstream_root, &url]);
        assert_eq!(via_https.status, 200, "{via_https:?}");
        let refused = s.gateway.curl(&["--cacert", &intercept_root, &url]);
        assert_eq!(
            refused.status, 0,
            "a relayed tunnel shows the upstream's own certificate: {refused:?}"
        );
        // A relayed tunnel is one line at its end: no HTTP status, bytes both ways.
        let line = s.gateway.decision(|d| {
            d["url"] == format!("{host}:{}", s.tls_upstream.addr.port())
                && d["response_size"].as_u64() > Some(0)
        });
        assert_eq!(line["http_status_code"], -1, "{line}");
        assert_eq!(line["http_method"], "CONNECT");
        assert_eq!(line["final_action"], "Allow");
        assert!(line["request_size"].as_u64() > Some(0), "{line}");
    }
}

#[test]
fn curl_plain_http_through_both_listeners() {
    let s = setup(true);
    let url = format!("http://{HOST}:{}/echo", s.plain_upstream.addr.port());
    let intercept_root = path(&s.pki.intercept_root);
    let plain = s.gateway.curl(&[
        "-H",
        "Proxy-Authorization: Basic c2VjcmV0",
        "-H",
        "Connection: x-drop",
        "-H",
        "X-Drop: 1",
        &url,
    ]);
    assert_eq!(plain.status, 200, "{plain:?}");
    let echoed: serde_json::Value = serde_json::from_str(&plain.body).expect("echo JSON");
    let headers = &echoed["headers"];
    assert_eq!(echoed["uri"], "/echo", "origin-form upstream: {echoed}");
    assert_eq!(
        headers["host"],
        format!("{HOST}:{}", s.plain_upstream.addr.port())
    );
    assert_eq!(headers["via"], "1.1 test-proxy (egress-gateway)");
    assert!(
        headers.get("proxy-authorization").is_none(),
        "proxy credentials never go upstream: {echoed}"
    );
    assert!(
        headers.get("x-drop").is_none(),
        "headers named by Connection are hop-by-hop: {echoed}"
    );
    let over_tls = s.gateway.curl_over_tls(&intercept_root, &[&url]);
    assert_eq!(over_tls.status, 200, "{over_tls:?}");
    let line = s
        .gateway
        .decision(|d| d["url"] == url.as_str() && d["src_vpce"] == "test-proxy-https");
    assert_eq!(line["http_method"], "GET");
    assert_eq!(line["final_action"], "Allow");

    // PreREQUEST and PostRESPONSE apply to plain HTTP too.
    let files = s.gateway.curl(&[&format!(
        "http://{HOST}:{}/files/a",
        s.plain_upstream.addr.port()
    )]);
    assert_eq!(files.status, 403);
    let missing = s.gateway.curl(&[&format!(
        "http://{HOST}:{}/status/404",
        s.plain_upstream.addr.port()
    )]);
    assert_eq!(missing.status, 403);
    let upload = s.gateway.curl(&["--data-binary", "0123456789", &url]);
    assert_eq!(upload.status, 200);
    let upload_line = s
        .gateway
        .decision(|d| d["url"] == url.as_str() && d["http_method"] == "POST");
    assert_eq!(upload_line["request_size"], 10, "{upload_line}");

    // Userinfo in an absolute-form URL never reaches the destination's Host header.
    let port = s.plain_upstream.addr.port();
    let raw = common::process::raw_exchange(
        s.gateway.http,
        format!("GET http://user:secret@{HOST}:{port}/echo HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let echoed: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(
        echoed["headers"]["host"],
        format!("{HOST}:{port}"),
        "{echoed}"
    );
}

#[test]
fn python_requests_through_both_listeners() {
    let s = setup(true);
    let intercepted = format!("https://{HOST}:{}/", s.tls_upstream.addr.port());
    let relayed = format!("https://{BYPASS_HOST}:{}/", s.tls_upstream.addr.port());
    let denied = format!("https://{HOST}:{}/files/x", s.tls_upstream.addr.port());
    let plain = format!("http://{HOST}:{}/", s.plain_upstream.addr.port());
    for proxy in [s.gateway.http_proxy(), s.gateway.https_proxy()] {
        let output = python_script(
            "requests_client.py",
            &[
                &proxy,
                &path(&s.pki.both_roots),
                &intercepted,
                &relayed,
                &denied,
                &plain,
            ],
        );
        assert_printed(
            &output,
            &[
                "200 hello from upstream",
                "200 hello from upstream",
                "403 Request denied by the egress policy.",
                "200 hello from upstream",
            ],
            &proxy,
        );
    }
    // Python trusts only the upstream root: the intercepted URL must fail.
    let output = python_script(
        "requests_client.py",
        &[
            &s.gateway.http_proxy(),
            &path(&s.pki.upstream_root),
            &intercepted,
        ],
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("ERROR SSLError"),
        "{output:?}"
    );
}

#[test]
fn go_net_http_through_both_listeners() {
    let s = setup(true);
    let client = go_client();
    let intercepted = format!("https://{HOST}:{}/", s.tls_upstream.addr.port());
    let relayed = format!("https://{BYPASS_HOST}:{}/", s.tls_upstream.addr.port());
    let denied = format!("https://{HOST}:{}/status/404", s.tls_upstream.addr.port());
    let plain = format!("http://{HOST}:{}/", s.plain_upstream.addr.port());
    for proxy in [s.gateway.http_proxy(), s.gateway.https_proxy()] {
        let output = Command::new(&client)
            .args([&intercepted, &relayed, &denied, &plain])
            .env("HTTPS_PROXY", &proxy)
            .env("HTTP_PROXY", &proxy)
            .env("NO_PROXY", "")
            .env("SSL_CERT_FILE", &s.pki.both_roots)
            .output()
            .expect("go client runs");
        assert_printed(
            &output,
            &[
                "200 19 HTTP/2.0",
                "200 19 HTTP/2.0",
                "403 37 HTTP/2.0",
                "200 19 HTTP/1.1",
            ],
            &proxy,
        );
    }
}
