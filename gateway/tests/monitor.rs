//! Monitor mode through the running gateway: a rule group, and a single
//! rule, in `mode: Monitor` enforce nothing on plain HTTP or inside an
//! intercepted tunnel; what they would have done is in
//! the decision line and the metric, and selects the line for the log.

mod common;

use common::clients::curl;
use common::process::Gateway;
use common::upstream::{Behavior, Upstream};
use common::{DENIED_HOST, HOST, Pki, TempDir, add_logging, policy_with_proxy, seed_without_proxy};

/// The seed's rule group in monitor mode, then an enforced group with one
/// monitored rule; only denials (real or would-be) are logged.
fn watched_seed(dir: &std::path::Path) -> std::path::PathBuf {
    let seed = seed_without_proxy();
    let watched = seed
        .replacen(
            "  description: One rule per phase, to see each phase at work.\n",
            "  description: One rule per phase, to see each phase at work.\n  mode: Monitor\n",
            1,
        )
        .replacen(
            "    - name: seed-rules\n",
            "    - name: seed-rules\n    - name: enforced\n",
            1,
        );
    assert_ne!(watched, seed);
    let enforced = r#"
---
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata:
  name: enforced
spec:
  rules:
    preRequest:
      - name: try-deny-posts
        action: Deny
        mode: Monitor
        conditions:
          - {key: request:Http:Method, operator: StringEquals, values: [POST]}
      - name: deny-secrets
        action: Deny
        conditions:
          - {key: request:Http:Uri, operator: StringLike, values: ["*/secret*"]}
"#;
    let policy = policy_with_proxy(dir, &(watched + enforced), true, &["127.0.0.1/32"]);
    add_logging(&policy, "{actions: [Deny]}");
    policy
}

fn would(line: &serde_json::Value) -> (&str, &str, &str) {
    (
        line["would_action"].as_str().unwrap_or("-"),
        line["would_rule_group_name"].as_str().unwrap_or("-"),
        line["would_rule_name"].as_str().unwrap_or("-"),
    )
}

#[test]
fn monitored_rules_enforce_nothing_and_say_what_they_would_have_done() {
    let pki = Pki::new();
    let dir = TempDir::new("monitor");
    let policy = watched_seed(dir.path());
    let gateway = Gateway::start(&pki, &policy, &[]);
    let proxy = gateway.http_proxy();
    let plain = Upstream::http(Behavior::Normal);
    let port = plain.addr.port();
    // curl through the gateway with `args`: the status it expects, then the
    // decision line.
    let request = |args: &[&str], url: &str, status: u16| {
        let mut all = vec!["--proxy", &proxy];
        all.extend(args);
        all.push(url);
        let result = curl(&all);
        assert_eq!(result.status, status, "{url}: {result:?}");
        gateway.decision_for(url)
    };

    // Plain HTTP: each monitored Deny lets the request through.
    let files = format!("http://{HOST}:{port}/files/a");
    let line = request(&[], &files, 200);
    assert_eq!(line["final_action"], "Allow", "{line}");
    assert_eq!(would(&line), ("Deny", "seed-rules", "deny-files"), "{line}");
    assert!(
        line["all_matches"].as_array().is_some_and(Vec::is_empty),
        "monitored matches are not matches: {line}"
    );

    let org = format!("http://{DENIED_HOST}:{port}/");
    let line = request(&[], &org, 200);
    assert_eq!(
        would(&line),
        ("Deny", "seed-rules", "deny-example-org"),
        "{line}"
    );
    assert_eq!(line["decision_phase"], "PostRESPONSE", "{line}");

    // One monitored rule in an enforced group; the group's other rule enforces.
    let posted = format!("http://{HOST}:{port}/echo");
    let line = request(&["-d", "a=b"], &posted, 200);
    assert_eq!(
        would(&line),
        ("Deny", "enforced", "try-deny-posts"),
        "{line}"
    );
    let secret = format!("http://{HOST}:{port}/secret");
    let line = request(&[], &secret, 403);
    assert_eq!(line["final_rule_name"], "deny-secrets", "{line}");
    assert_eq!(
        would(&line),
        ("-", "-", "-"),
        "no monitored rule matched: {line}"
    );

    // Inside an intercepted tunnel: the monitored PostRESPONSE rule lets a 404 through.
    let (cert, key) = pki.server_cert(&[HOST]);
    let tls = Upstream::https(&cert, &key);
    let missing = format!("https://{HOST}:{}/status/404", tls.addr.port());
    let root = pki.intercept_root.display().to_string();
    let line = request(&["--cacert", &root], &missing, 404);
    assert_eq!(line["http_status_code"], 404, "{line}");
    assert_eq!(
        would(&line),
        ("Deny", "seed-rules", "deny-not-found"),
        "{line}"
    );

    // An allowed request no monitored rule objects to is not logged (only
    // denials are); the ones above were logged for their would-be denial.
    let fine = format!("http://{HOST}:{port}/");
    assert_eq!(curl(&["--proxy", &proxy, &fine]).status, 200);
    let counted = |rule: &str| {
        gateway.metric(&format!(
            "egress_monitored_decisions_total{{phase=\"PreREQUEST\",would_action=\"Deny\",group=\"enforced\",rule=\"{rule}\"}}"
        ))
    };
    assert_eq!(counted("try-deny-posts"), 1.0);
    assert_eq!(
        gateway.metric(
            "egress_monitored_decisions_total{phase=\"PreDNS\",would_action=\"Deny\",group=\"seed-rules\",rule=\"deny-example-org\"}"
        ),
        1.0
    );
    gateway.wait_metric(
        "egress_decisions_total{phase=\"PostRESPONSE\",action=\"Allow\"",
        5.0,
    );
    gateway.assert_no_decision_for(&fine);
}
