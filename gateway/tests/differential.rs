//! `policy eval` and the running gateway reach the same decision line for
//! the same request and policy: every phase, alerts, a monitored rule,
//! normalised paths, plain HTTP, intercepted and relayed tunnels. Both go
//! through the same decision sequence (`pipeline`); this checks that what
//! the gateway does around it (parsing, resolving, dialing, logging) adds
//! nothing to the decision and takes nothing from it.

mod common;

use std::path::Path;

use common::clients::curl;
use common::process::Gateway;
use common::upstream::{Behavior, Upstream};
use common::{
    BYPASS_HOST, DENIED_HOST, HOST, Pki, TempDir, allowing_by_default, policy_with_proxy,
};

const RULES: &str = r#"apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {name: differential}
spec:
  rules:
    preDNS:
      - name: alert-www
        action: Alert
        conditions: [{key: request:DestinationDomain, operator: StringLike, values: ["www.*"]}]
      - name: deny-org
        action: Deny
        conditions: [{key: request:DestinationDomain, operator: StringEquals, values: [".example.org"]}]
    preRequest:
      - name: deny-files
        action: Deny
        conditions: [{key: request:Http:Uri, operator: StringLike, values: ["*/files/*"]}]
      - name: alert-posts
        action: Alert
        conditions: [{key: request:Http:Method, operator: StringEquals, values: [POST]}]
      - name: watch-ops
        action: Deny
        mode: Monitor
        conditions: [{key: "request:Http:Header/X-Team", operator: StringEquals, values: [ops]}]
    postResponse:
      - name: deny-not-found
        action: Deny
        conditions: [{key: response:Http:StatusCode, operator: NumericEquals, values: [404]}]
      - name: alert-server-errors
        action: Alert
        conditions: [{key: response:Http:StatusCode, operator: NumericGreaterThanEquals, values: [500]}]
"#;

/// The fields not compared: when, from which port, how many bytes, and
/// what a relayed ClientHello said (which `policy eval` cannot know). Every
/// other field of either line must be the same.
const NOT_COMPARED: &[&str] = &[
    "event_timestamp",
    "client_src_ip",
    "client_src_port",
    "request_size",
    "response_size",
    "tls_sni",
    "tls_alpn",
];

/// What the upstreams answer on `path` (their routes).
fn status_of(target: &str) -> u16 {
    let path = target.split('?').next().unwrap_or(target);
    match path.strip_prefix("/status/") {
        Some(code) => code.parse().expect("status"),
        None if path == "/" || path.contains("/files/") || path.ends_with("/echo") => 200,
        None => 404,
    }
}

fn eval(
    policy: &Path,
    url: &str,
    method: &str,
    header: Option<&str>,
    status: u16,
) -> serde_json::Value {
    let mut args = vec![
        "policy".to_owned(),
        "eval".to_owned(),
        policy.display().to_string(),
        url.to_owned(),
        "-X".to_owned(),
        method.to_owned(),
        "--dest-ip".to_owned(),
        "127.0.0.1".to_owned(),
        "--status".to_owned(),
        status.to_string(),
    ];
    if let Some(header) = header {
        args.extend(["-H".to_owned(), header.to_owned()]);
    }
    let mut eval = std::process::Command::new(env!("CARGO_BIN_EXE_egress-gateway"));
    eval.args(&args);
    serde_json::from_str(&egress_e2e::run(eval)).expect("one JSON line")
}

#[test]
fn policy_eval_and_the_gateway_write_the_same_decision() {
    let pki = Pki::new();
    let dir = TempDir::new("differential");
    let documents = allowing_by_default(RULES, "differential");
    let policy = policy_with_proxy(dir.path(), &documents, true, &["127.0.0.1/32"]);
    let gateway = Gateway::start(&pki, &policy, &[]);
    let proxy = gateway.http_proxy();
    let plain = Upstream::http(Behavior::Normal);
    let (cert, key) = pki.server_cert(&[HOST, DENIED_HOST, BYPASS_HOST]);
    let tls = Upstream::https(&cert, &key);
    let roots = pki.both_roots.display().to_string();

    let mut compared = 0;
    for scheme in ["http", "https"] {
        let port = if scheme == "http" {
            plain.addr.port()
        } else {
            tls.addr.port()
        };
        for host in [HOST, DENIED_HOST, BYPASS_HOST] {
            for path in [
                "/",
                "/files/a",
                "/a/%2E%2e/files/b",
                "/status/404",
                "/status/503",
                "/v1/echo?q=%41",
            ] {
                for (method, header) in [("GET", None), ("POST", Some("X-Team: ops"))] {
                    let url = format!("{scheme}://{host}:{port}{path}");
                    let seen = gateway.decisions().len();
                    let mut args = vec!["--proxy", &proxy, "--cacert", &roots, "-X", method];
                    if let Some(header) = header {
                        args.extend(["-H", header]);
                    }
                    args.push(&url);
                    curl(&args);
                    let served = gateway.decision_after(seen, |_| true);
                    let evaluated = eval(&policy, &url, method, header, status_of(path));
                    let fields = served
                        .as_object()
                        .into_iter()
                        .chain(evaluated.as_object())
                        .flat_map(|o| o.keys());
                    for field in fields.filter(|f| !NOT_COMPARED.contains(&f.as_str())) {
                        assert_eq!(
                            served.get(field),
                            evaluated.get(field),
                            "{method} {url} {header:?}: {field} differs\ngateway: {served}\neval:    {evaluated}"
                        );
                    }
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 72);
}
