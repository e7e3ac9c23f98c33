//! A policy change reaches connections that are already open: the next
//! request on an intercepted connection (HTTP/1 keep-alive or an HTTP/2
//! stream) meets the new policy, and relayed tunnels and upgraded connections
//! the new policy denies are closed, each with a decision line.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::{Interactive, go_client, python_command};
use common::process::{Gateway, connect_tunnel, connect_with_timeout, request_in_tunnel};
use common::upstream::{Behavior, Upstream};
use common::{
    BYPASS_HOST, HOST, Pki, TempDir, policy_with_proxy, read_until_closed, seed_without_proxy,
};

/// Replaces the policy file by a rename (read at once) with the seed plus a
/// PreDNS deny of `host`.
fn deny_host(policy: &std::path::Path, host: &str) -> Instant {
    let text = std::fs::read_to_string(policy).expect("read");
    let rule = format!(
        "    preDNS:\n      - name: revoke-{}\n        action: Deny\n        conditions:\n          - key: request:DestinationDomain\n            operator: StringEquals\n            values: [\"{host}\"]\n",
        host.split('.').next().unwrap_or("host")
    );
    let denied = text.replacen("    preDNS:\n", &rule, 1);
    assert_ne!(denied, text);
    let next = policy.with_extension("next");
    std::fs::write(&next, denied).expect("write");
    let changed = Instant::now();
    std::fs::rename(&next, policy).expect("rename");
    changed
}

#[test]
fn the_next_request_on_an_open_intercepted_connection_meets_the_new_policy() {
    let pki = Pki::new();
    let dir = TempDir::new("revoke-intercepted");
    let (cert, key) = pki.server_cert(&[HOST]);
    let upstream = Upstream::https(&cert, &key);
    let policy = policy_with_proxy(dir.path(), &seed_without_proxy(), true, &["127.0.0.1/32"]);
    let gateway = Gateway::start(&pki, &policy, &[]);
    let url = format!("https://{HOST}:{}/", upstream.addr.port());
    let both_roots = pki.both_roots.display().to_string();
    let proxy = gateway.http_proxy();

    // HTTP/1.1 keep-alive (Python requests, one Session) and HTTP/2 (Go).
    let mut python = Interactive::start(python_command(
        "keepalive_client.py",
        &[&both_roots, &url, "WAIT", &url],
        &[("HTTPS_PROXY", &proxy)],
    ));
    let mut go = Command::new(go_client());
    go.args([&url, "WAIT", &url])
        .env("HTTPS_PROXY", &proxy)
        .env("NO_PROXY", "")
        .env("SSL_CERT_FILE", &pki.both_roots);
    let mut go = Interactive::start(go);
    assert_eq!(python.line(), "200");
    assert_eq!(go.line(), "200 19 HTTP/2.0");
    assert_eq!(python.line(), "waiting");
    assert_eq!(go.line(), "waiting");

    deny_host(&policy, HOST);
    gateway.wait_metric("egress_policy_reloads_total", 2.0);
    python.resume();
    go.resume();
    assert_eq!(python.line(), "403");
    assert_eq!(go.line(), "403 37 HTTP/2.0");

    // Both requests of each client came over one connection: same client port.
    gateway.decision(|d| d["final_rule_name"] == "revoke-www" && d["http_status_code"] == 403);
    std::thread::sleep(Duration::from_millis(200));
    let lines = gateway.decisions();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let mut ports: Vec<(i64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["client_src_port"].as_i64().unwrap_or_default(),
                l["final_rule_name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ports.sort();
    for pair in ports.chunk_by(|a, b| a.0 == b.0) {
        let rules: Vec<&str> = pair.iter().map(|(_, rule)| rule.as_str()).collect();
        assert_eq!(
            rules,
            ["default", "revoke-www"],
            "one connection, before and after: {lines:?}"
        );
    }
}

/// Opens a relayed tunnel and checks it carries a request.
fn open_tunnel(gateway: &Gateway, host: &str, port: u16) -> BufReader<TcpStream> {
    let mut tunnel = connect_tunnel(gateway.http, &format!("{host}:{port}"));
    assert!(request_in_tunnel(&mut tunnel).starts_with("HTTP/1.1 200"));
    tunnel
}

#[test]
fn relayed_tunnels_the_new_policy_denies_are_closed_within_two_seconds() {
    let pki = Pki::new();
    let dir = TempDir::new("revoke-relayed");
    let upstream = Upstream::http(Behavior::Normal);
    let policy = policy_with_proxy(dir.path(), &seed_without_proxy(), false, &["127.0.0.1/32"]);
    // The default poll interval: the goal holds as shipped.
    let gateway = Gateway::start(&pki, &policy, &["--file-poll-interval", "1s"]);
    let port = upstream.addr.port();
    let mut revoked = open_tunnel(&gateway, HOST, port);
    let mut kept = open_tunnel(&gateway, BYPASS_HOST, port);

    let changed = deny_host(&policy, HOST);
    read_until_closed(&mut revoked);
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "closed {took:?} after the change"
    );

    let line = gateway.decision(|d| d["revoked_by"].is_string());
    assert_eq!(line["url"], format!("{HOST}:{port}"), "{line}");
    assert_eq!(line["final_action"], "Deny", "{line}");
    assert_eq!(line["final_rule_name"], "revoke-www", "{line}");
    assert_eq!(line["http_method"], "CONNECT", "{line}");
    assert!(line["request_size"].as_u64() > Some(0), "{line}");
    assert_eq!(gateway.metric("egress_tunnels_revoked_total"), 1.0);

    // The other tunnel stays open and keeps working.
    assert!(request_in_tunnel(&mut kept).starts_with("HTTP/1.1 200"));
    assert_eq!(
        gateway
            .decisions()
            .iter()
            .filter(|d| d["revoked_by"].is_string())
            .count(),
        1
    );
}

/// An upstream that answers each request with `101 Switching Protocols`, then
/// echoes what it receives.
fn upgrading_upstream() -> u16 {
    upgrading_upstream_after(None)
}

/// Where an upstream says a request has arrived, and what lets it answer.
type Gate = (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);

/// [`upgrading_upstream`]; with a gate, it tells the gate's sender when its
/// first request has arrived and answers it only once the gate opens.
fn upgrading_upstream_after(gate: Option<Gate>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut gate = gate;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let gate = gate.take();
            std::thread::spawn(move || {
                read_head(&mut stream);
                if let Some((arrived, open)) = gate {
                    let _ = arrived.send(());
                    let _ = open.recv();
                }
                let upgraded = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
                if stream.write_all(upgraded.as_bytes()).is_err() {
                    return;
                }
                let mut buffer = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Reads a message head byte by byte (nothing after it is consumed).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Asks the upstream at `port` for an upgrade of `path` through the gateway's
/// plain listener `proxy`; returns the connection and the status line.
fn upgrade(proxy: std::net::SocketAddr, port: u16, path: &str) -> (TcpStream, String) {
    let mut stream = connect_with_timeout(proxy, Duration::from_secs(10));
    write!(
        stream,
        "GET http://{HOST}:{port}{path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
    )
    .expect("write");
    let head = read_head(&mut stream);
    let status = head.lines().next().unwrap_or_default().to_owned();
    (stream, status)
}

fn echoes(stream: &mut TcpStream) -> bool {
    let mut back = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut back).is_ok() && &back == b"ping"
}

/// Rule group and configuration: upgrades allowed only on `/ws` (PreREQUEST
/// denies by default), plus the given PreDNS and PostRESPONSE rules.
fn upgrade_policy(pre_dns: &str, post_response: &str) -> String {
    format!(
        "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata:\n  name: g\nspec:\n  rules:\n    preDNS: {pre_dns}\n    preRequest:\n      - name: allow-ws\n        action: Allow\n        conditions: [{{key: \"request:Http:Uri\", operator: StringEquals, values: [\"/ws\"]}}]\n    postResponse: {post_response}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata:\n  name: seed\nspec:\n  ruleGroups: [{{name: g}}]\n  defaultActions: {{preDNS: Allow, preRequest: Deny, postResponse: Allow}}\n"
    )
}

/// A gateway whose policy allows upgrades on `/ws` only; its policy file.
fn upgrade_gateway(tag: &str) -> (Gateway, std::path::PathBuf, TempDir, Pki) {
    let pki = Pki::new();
    let dir = TempDir::new(tag);
    let documents = upgrade_policy("[]", "[]");
    let policy = policy_with_proxy(dir.path(), &documents, false, &["127.0.0.1/32"]);
    (Gateway::start(&pki, &policy, &[]), policy, dir, pki)
}

/// Installs `documents` (with the test proxy) by a rename and waits until the
/// gateway has loaded it.
fn install(gateway: &Gateway, policy: &std::path::Path, documents: &str) {
    let reloads = gateway.metric("egress_policy_reloads_total");
    let next = TempDir::new("revoke-upgraded-next");
    let written = policy_with_proxy(next.path(), documents, false, &["127.0.0.1/32"]);
    std::fs::rename(written, policy).expect("rename");
    gateway.wait_metric("egress_policy_reloads_total", reloads + 1.0);
}

/// An upgraded connection (WebSocket and the like) is judged again, with the
/// request that asked for the upgrade and the response that granted it, when
/// a new policy is installed: kept when that policy still allows both, closed
/// and logged when it denies either.
#[test]
fn upgraded_connections_are_judged_again_with_their_request_and_response() {
    let (gateway, policy, _dir, _pki) = upgrade_gateway("revoke-upgraded");
    let port = upgrading_upstream();
    let (_, refused) = upgrade(gateway.http, port, "/other");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let (mut upgraded, status) = upgrade(gateway.http, port, "/ws");
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    assert!(echoes(&mut upgraded));

    // Still allowed: its path matches the PreREQUEST rule that allowed it.
    let unrelated = "[{name: no-other, action: Deny, conditions: [{key: \"request:DestinationDomain\", operator: StringEquals, values: [other.example]}]}]";
    install(&gateway, &policy, &upgrade_policy(unrelated, "[]"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        echoes(&mut upgraded),
        "kept open by a policy that allows it"
    );

    // Denied by its response: closed.
    let no_upgrades = "[{name: no-upgrades, action: Deny, conditions: [{key: \"response:Http:StatusCode\", operator: NumericEquals, values: [101]}]}]";
    let changed = Instant::now();
    install(&gateway, &policy, &upgrade_policy(unrelated, no_upgrades));
    read_until_closed(&mut upgraded);
    assert!(changed.elapsed() < Duration::from_secs(3), "closed");
    let line = gateway.decision(|d| d["revoked_by"].is_string());
    assert_eq!(line["http_status_code"], 101, "{line}");
    assert_eq!(line["final_rule_name"], "no-upgrades", "{line}");
    assert_eq!(line["url"], format!("http://{HOST}:{port}/ws"), "{line}");
    assert_eq!(gateway.metric("egress_tunnels_revoked_total"), 1.0);
}

/// A policy installed while an upgrade is under way (the request judged, the
/// 101 not yet back) reaches the connection as soon as it is upgraded.
#[test]
fn a_policy_installed_during_the_upgrade_reaches_the_upgraded_connection() {
    let (gateway, policy, _dir, _pki) = upgrade_gateway("revoke-during-upgrade");
    let (arrived, request_arrived) = std::sync::mpsc::channel();
    let (open, may_answer) = std::sync::mpsc::channel();
    let port = upgrading_upstream_after(Some((arrived, may_answer)));
    let http = gateway.http;
    let asking = std::thread::spawn(move || upgrade(http, port, "/ws"));
    // Judged by the first policy and sent on.
    request_arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reaches the upstream");
    let deny_host = format!(
        "[{{name: no-ws, action: Deny, conditions: [{{key: \"request:DestinationDomain\", operator: StringEquals, values: [\"{HOST}\"]}}]}}]"
    );
    install(&gateway, &policy, &upgrade_policy(&deny_host, "[]"));
    open.send(()).expect("let the 101 go");
    let (mut upgraded, status) = asking.join().expect("upgrade");
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let answered = Instant::now();
    read_until_closed(&mut upgraded);
    assert!(
        answered.elapsed() < Duration::from_secs(3),
        "closed at once, not at the next policy change"
    );
    let line = gateway.decision(|d| d["revoked_by"].is_string());
    assert_eq!(line["final_rule_name"], "no-ws", "{line}");
}
