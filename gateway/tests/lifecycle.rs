//! Policy reloads, readiness, log selection, metrics and shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::clients::curl;
use common::process::{Gateway, connect_tunnel, connect_with_timeout, request_in_tunnel};
use common::upstream::{Behavior, Upstream};
use common::{
    BYPASS_HOST, DENIED_HOST, HOST, Pki, TempDir, add_logging, eventually, policy_with_proxy,
    seed_policy, seed_without_proxy,
};

/// A PKI, a directory for the policy file, and a plain upstream.
struct Setup {
    pki: Pki,
    dir: TempDir,
    upstream: Upstream,
}

fn setup(tag: &str) -> Setup {
    Setup {
        pki: Pki::new(),
        dir: TempDir::new(tag),
        upstream: Upstream::http(Behavior::Normal),
    }
}

impl Setup {
    /// A gateway on the seed policy (interception as given) with `extra`
    /// flags, and its policy file.
    fn seed_gateway(&self, intercept: bool, extra: &[&str]) -> (Gateway, PathBuf) {
        let policy = seed_policy(self.dir.path(), intercept);
        (Gateway::start(&self.pki, &policy, extra), policy)
    }

    /// A gateway relaying on the seed policy, its proxy's `logging` set to
    /// `settings`.
    fn logging_gateway(&self, settings: &str) -> Gateway {
        let policy = policy_with_proxy(
            self.dir.path(),
            &seed_without_proxy(),
            false,
            &["127.0.0.1/32"],
        );
        add_logging(&policy, settings);
        Gateway::start(&self.pki, &policy, &[])
    }

    /// `path` on the upstream by HOST, over plain HTTP.
    fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.upstream.addr.port())
    }
}

fn ready_hash(gateway: &Gateway) -> Option<String> {
    let (status, body) = gateway.admin_get("/readyz");
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200)
        .then(|| json["policy"]["hash"].as_str().map(str::to_owned))
        .flatten()
}

#[test]
fn policy_changes_apply_and_bad_versions_never_replace_a_good_one() {
    let s = setup("reload");
    let (gateway, policy) = s.seed_gateway(true, &[]);
    let proxy = gateway.http_proxy();
    let files = s.url("/files/a");
    assert_eq!(curl(&["--proxy", &proxy, &files]).status, 403);
    let first_hash = ready_hash(&gateway).expect("ready");

    // The deny becomes an alert: the request passes and is logged as an alert.
    let text = std::fs::read_to_string(&policy).expect("read");
    let alert = text.replacen(
        "action: Deny\n        conditions:\n          - key: request:Http:Uri",
        "action: Alert\n        conditions:\n          - key: request:Http:Uri",
        1,
    );
    assert_ne!(alert, text);
    std::fs::write(&policy, &alert).expect("write");
    let second_hash = eventually(Duration::from_secs(5), || {
        ready_hash(&gateway).filter(|h| *h != first_hash)
    })
    .expect("reloaded");
    assert_eq!(curl(&["--proxy", &proxy, &files]).status, 200);
    let line = gateway.decision(|d| d["url"] == files.as_str() && d["http_status_code"] == 200);
    assert_eq!(line["first_alert_match"]["rule"], "deny-files", "{line}");
    assert_eq!(line["first_alert_match"]["phase"], "PreREQUEST", "{line}");

    // Invalid versions are refused; the last good policy keeps serving.
    for (bad, why) in [
        (alert.replace("\"*/files/*\"", "\"\""), "empty pattern"),
        ("{ not: [valid".to_owned(), "not valid YAML"),
        ("{\"formatVersion\": 99}".to_owned(), "format version 99"),
    ] {
        let failures = gateway.metric("egress_policy_reload_failures_total");
        std::fs::write(&policy, &bad).expect("write");
        gateway.wait_metric("egress_policy_reload_failures_total", failures + 1.0);
        gateway.diagnostic(&["policy rejected", why]);
        assert_eq!(
            ready_hash(&gateway).as_deref(),
            Some(second_hash.as_str()),
            "{why}"
        );
        assert_eq!(curl(&["--proxy", &proxy, &files]).status, 200, "{why}");
    }
    std::fs::remove_file(&policy).expect("remove");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(ready_hash(&gateway).as_deref(), Some(second_hash.as_str()));
    assert!(gateway.metric("egress_policy_info{") >= 1.0);
}

/// The seed file cut off inside the ProxyConfiguration (`spec:` with nothing
/// under it), as a copy that stopped half-way leaves it.
fn truncated_seed(seed: &str) -> String {
    let cut = seed
        .find("kind: ProxyConfiguration")
        .expect("configuration");
    let spec = cut + seed[cut..].find("spec:\n").expect("spec") + "spec:\n".len();
    seed[..spec].to_owned()
}

#[test]
fn a_half_written_policy_is_refused_and_the_old_one_keeps_denying() {
    let s = setup("truncated");
    let (gateway, policy) = s.seed_gateway(false, &[]);
    let hash = ready_hash(&gateway).expect("ready");
    let denied = format!("https://{DENIED_HOST}/");
    let refused = curl(&["--proxy", &gateway.http_proxy(), &denied]);
    assert!(refused.stderr.contains("403"), "{refused:?}");

    // Replaced by rename, so it is read at once: refused for its missing defaults.
    let truncated = truncated_seed(&std::fs::read_to_string(&policy).expect("read"));
    let next = s.dir.path().join("policy.yaml.new");
    std::fs::write(&next, &truncated).expect("write");
    std::fs::rename(&next, &policy).expect("rename");
    gateway.diagnostic(&["policy rejected", "missing field `defaultActions`"]);
    assert_eq!(ready_hash(&gateway).as_deref(), Some(hash.as_str()));
    let still = curl(&["--proxy", &gateway.http_proxy(), &denied]);
    assert!(
        still.stderr.contains("403"),
        "the PreDNS deny holds: {still:?}"
    );
    assert!(
        gateway
            .diagnostics()
            .iter()
            .filter(|l| l.contains("policy loaded"))
            .count()
            == 1
    );
}

#[test]
fn a_policy_written_slowly_in_place_is_loaded_once_whole() {
    let s = setup("slow-write");
    let (gateway, policy) = s.seed_gateway(false, &["--file-settle", "800ms"]);
    let first = ready_hash(&gateway).expect("ready");
    let whole = std::fs::read_to_string(&policy)
        .expect("read")
        .replace("\"*/files/*\"", "\"*/private/*\"");
    let mut file = std::fs::File::create(&policy).expect("truncate in place");
    for piece in whole.as_bytes().chunks(whole.len() / 6 + 1) {
        file.write_all(piece).expect("write");
        file.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(file);
    let second = eventually(Duration::from_secs(5), || {
        ready_hash(&gateway).filter(|h| *h != first)
    })
    .expect("the whole file loads");
    std::thread::sleep(Duration::from_millis(1200));
    let diagnostics = gateway.diagnostics();
    let loads = diagnostics
        .iter()
        .filter(|l| l.contains("policy loaded"))
        .count();
    assert_eq!(
        loads,
        2,
        "initial load and one reload:\n{}",
        diagnostics.join("\n")
    );
    assert!(
        !diagnostics.iter().any(|l| l.contains("policy rejected")),
        "no piece was compiled:\n{}",
        diagnostics.join("\n")
    );
    assert_eq!(ready_hash(&gateway), Some(second));
    assert_eq!(gateway.metric("egress_policy_reload_failures_total"), 0.0);
}

#[test]
fn a_reload_that_removes_every_rule_warns_with_the_counts() {
    let s = setup("shrink");
    let (gateway, policy) = s.seed_gateway(false, &[]);
    let first = ready_hash(&gateway).expect("ready");
    assert_eq!(gateway.metric("egress_policy_rules{phase=\"PreDNS\"}"), 1.0);
    let empty = std::fs::read_to_string(&policy).expect("read").replace(
        "  ruleGroups:\n    - name: seed-rules\n",
        "  ruleGroups: []\n",
    );
    let next = s.dir.path().join("policy.yaml.new");
    std::fs::write(&next, empty).expect("write");
    std::fs::rename(&next, &policy).expect("rename");
    eventually(Duration::from_secs(5), || {
        ready_hash(&gateway).filter(|h| *h != first)
    })
    .expect("an empty policy still loads");
    let warning = gateway.diagnostic(&["drops 3 of 3 rules"]);
    assert!(
        warning.contains("\"rules_before\":3") && warning.contains("\"rules_after\":0"),
        "{warning}"
    );
    assert_eq!(gateway.metric("egress_policy_shrink_warnings_total"), 1.0);
    assert_eq!(gateway.metric("egress_policy_rules{"), 0.0);
}

#[test]
fn an_invalid_policy_at_start_means_unready_until_fixed() {
    let s = setup("unready");
    let good = std::fs::read_to_string(seed_policy(s.dir.path(), true)).expect("read");
    let policy = s.dir.path().join("policy.yaml");
    std::fs::write(&policy, good.replace("values: [404]", "values: [\"4o4\"]")).expect("write");
    let gateway = Gateway::start(&s.pki, &policy, &[]);
    gateway.diagnostic(&["policy rejected", "\\\"4o4\\\" is not a number"]);
    let (status, body) = gateway.admin_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no valid policy loaded"), "{body}");
    let url = s.url("/");
    let refused = curl(&["--proxy", &gateway.http_proxy(), &url]);
    assert_eq!(refused.status, 503, "{refused:?}");
    std::fs::write(&policy, good).expect("write");
    eventually(Duration::from_secs(5), || ready_hash(&gateway)).expect("ready once fixed");
    assert_eq!(curl(&["--proxy", &gateway.http_proxy(), &url]).status, 200);
}

#[test]
fn compiled_policy_json_is_served_as_the_operator_writes_it() {
    let s = setup("json");
    let yaml = seed_policy(s.dir.path(), true);
    let compiled = std::process::Command::new(env!("CARGO_BIN_EXE_egress-gateway"))
        .args(["policy", "compile", &yaml.display().to_string()])
        .output()
        .expect("compile");
    assert!(compiled.status.success());
    let json = s.dir.path().join("policy.json");
    std::fs::write(&json, &compiled.stdout).expect("write");
    let gateway = Gateway::start(&s.pki, &json, &[]);
    let url = s.url("/files/x");
    assert_eq!(curl(&["--proxy", &gateway.http_proxy(), &url]).status, 403);
    let hash = serde_json::from_slice::<serde_json::Value>(&compiled.stdout).expect("json")["hash"]
        .clone();
    assert_eq!(ready_hash(&gateway).as_deref(), hash.as_str());
}

#[test]
fn only_selected_actions_are_logged() {
    let s = setup("log-selection");
    let gateway = s.logging_gateway("{actions: [Deny]}");
    let allowed = s.url("/");
    let denied = s.url("/files/x");
    assert_eq!(
        curl(&["--proxy", &gateway.http_proxy(), &allowed]).status,
        200
    );
    assert_eq!(
        curl(&["--proxy", &gateway.http_proxy(), &denied]).status,
        403
    );
    gateway.decision_for(&denied);
    gateway.assert_no_decision_for(&allowed);
    // Both are counted in metrics whatever is logged.
    assert!(
        gateway.metric("egress_decisions_total{phase=\"PostRESPONSE\",action=\"Allow\"") >= 1.0
    );
    assert!(gateway.metric("egress_decisions_total{phase=\"PreREQUEST\",action=\"Deny\",group=\"seed-rules\",rule=\"deny-files\"}") >= 1.0);
}

#[test]
fn the_aws_log_format_is_chosen_per_proxy() {
    let s = setup("log-format");
    let gateway = s.logging_gateway("{format: aws}");
    let denied = s.url("/files/x");
    assert_eq!(
        curl(&["--proxy", &gateway.http_proxy(), &denied]).status,
        403
    );
    let line = gateway.decision(|d| d["url"]["path"] == "/files/x");
    assert_eq!(line["final_action"], "deny");
    assert_eq!(line["final_rule_name"], "deny-files");
    assert_eq!(line["url"]["scheme"], "http");
    assert!(line["event_timestamp"].is_u64(), "{line}");
    assert_eq!(
        line["all_matches"]["matches"][0],
        serde_json::json!({"rule_id": "deny-files", "hook": "pre_request", "action": "deny"})
    );
}

#[test]
fn admin_endpoints() {
    let (gateway, _) = setup("admin").seed_gateway(true, &[]);
    assert_eq!(gateway.admin_get("/healthz"), (200, "ok\n".to_owned()));
    let (status, body) = gateway.admin_get("/readyz");
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ready["policy"]["configuration"], "seed");
    assert_eq!(ready["policy"]["proxy"], "test-proxy");
    assert_eq!(ready["policy"]["formatVersion"], 1);
    assert!(
        ready["policy"]["hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    let (status, metrics) = gateway.admin_get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "egress_policy_info{",
        "egress_policy_reloads_total",
        "egress_certificate_cache_hits_total",
        "egress_open_tunnels",
        "egress_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert_eq!(gateway.admin_get("/nope").0, 404);
}

/// Opens a relayed CONNECT tunnel to the plain upstream and returns it.
fn open_tunnel(gateway: &Gateway, upstream: &Upstream) -> BufReader<TcpStream> {
    connect_tunnel(
        gateway.http,
        &format!("{BYPASS_HOST}:{}", upstream.addr.port()),
    )
}

#[test]
fn shutdown_drains_open_tunnels_and_refuses_new_connections() {
    let s = setup("drain");
    let (mut gateway, _) = s.seed_gateway(true, &["--shutdown-grace", "20s"]);
    let mut tunnel = open_tunnel(&gateway, &s.upstream);
    assert!(request_in_tunnel(&mut tunnel).contains("hello from upstream"));
    gateway.terminate();
    gateway.diagnostic(&["shutting down"]);
    assert!(
        TcpStream::connect(gateway.http).is_err(),
        "no new connections while draining"
    );
    assert_eq!(gateway.admin_get("/readyz").0, 503);
    assert!(
        request_in_tunnel(&mut tunnel).contains("hello from upstream"),
        "open tunnels keep working"
    );
    assert!(gateway.is_running());
    let closed = Instant::now();
    drop(tunnel);
    let status = gateway
        .wait(Duration::from_secs(10))
        .expect("exits once drained");
    assert!(status.success(), "{status:?}");
    assert!(closed.elapsed() < Duration::from_secs(5));
    gateway.diagnostic(&["all connections drained"]);
    // The tunnel's line was written before exit.
    gateway.decision(|d| d["http_method"] == "CONNECT" && d["response_size"].as_u64() > Some(0));
}

#[test]
fn the_grace_period_and_a_second_signal_cut_tunnels() {
    let s = setup("cut");
    let (mut gateway, _) = s.seed_gateway(true, &["--shutdown-grace", "1s"]);
    let _tunnel = open_tunnel(&gateway, &s.upstream);
    let started = Instant::now();
    gateway.terminate();
    gateway
        .wait(Duration::from_secs(10))
        .expect("exits after the grace period");
    assert!(started.elapsed() >= Duration::from_millis(900));
    gateway.diagnostic(&["grace period over"]);

    // A second signal stops at once: while draining, and the same during the
    // shutdown delay (no delay, no drain).
    for (flags, stopping, cut) in [
        (
            &["--shutdown-grace", "60s"][..],
            "shutting down",
            "second signal",
        ),
        (
            &["--shutdown-delay", "60s", "--shutdown-grace", "60s"],
            "stopping: not ready",
            "second signal: cutting open connections",
        ),
    ] {
        let (mut gateway, _) = s.seed_gateway(true, flags);
        let _tunnel = open_tunnel(&gateway, &s.upstream);
        gateway.terminate();
        gateway.diagnostic(&[stopping]);
        gateway.terminate();
        gateway
            .wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("a second signal after {stopping:?} stops at once"));
        gateway.diagnostic(&[cut]);
    }
}

/// One request on an open keep-alive connection to the plain listener: the
/// response head (lower-cased) and body.
fn keep_alive_request(stream: &mut BufReader<TcpStream>, upstream: &Upstream) -> (String, String) {
    let target = format!("{HOST}:{}", upstream.addr.port());
    write!(
        stream.get_mut(),
        "GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .expect("write");
    let mut head = String::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).expect("head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a sized response");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn with_a_shutdown_delay_the_gateway_goes_unready_but_serves_until_it_stops_listening() {
    let s = setup("delay");
    let (mut gateway, _) =
        s.seed_gateway(true, &["--shutdown-delay", "3s", "--shutdown-grace", "20s"]);
    let upstream = &s.upstream;
    let connect = || BufReader::new(connect_with_timeout(gateway.http, Duration::from_secs(10)));
    let mut kept = connect();
    let (head, body) = keep_alive_request(&mut kept, upstream);
    assert_eq!(body, "hello from upstream");
    assert!(!head.contains("connection: close"), "{head}");

    let signalled = Instant::now();
    gateway.terminate();
    gateway.diagnostic(&["stopping: not ready"]);
    assert_eq!(gateway.admin_get("/readyz").0, 503, "unready at once");
    // Still serving: the open connection gets its answer and is asked to
    // reconnect; a new connection is still accepted.
    let (head, body) = keep_alive_request(&mut kept, upstream);
    assert_eq!(body, "hello from upstream");
    assert!(head.contains("connection: close"), "{head}");
    let (head, body) = keep_alive_request(&mut connect(), upstream);
    assert_eq!(body, "hello from upstream");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "checked within the delay"
    );

    // Then it stops listening and exits once drained.
    gateway.diagnostic(&["shutting down: no new connections"]);
    assert!(signalled.elapsed() >= Duration::from_millis(2900));
    assert!(TcpStream::connect(gateway.http).is_err());
    let status = gateway
        .wait(Duration::from_secs(10))
        .expect("exits once drained");
    assert!(status.success(), "{status:?}");
}
