//! The seed walkthrough: one deny per phase, seen by curl and in the decision log.

mod common;

use common::clients::{Curl, curl};
use common::process::Gateway;
use common::upstream::Upstream;
use common::{DENIED_HOST, HOST, Pki, TempDir, seed_policy};

struct Setup {
    pki: Pki,
    _dir: TempDir,
    upstream: Upstream,
    gateway: Gateway,
}

fn setup() -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new("seed");
    let (cert, key) = pki.server_cert(&[HOST]);
    let upstream = Upstream::https(&cert, &key);
    let gateway = Gateway::start(&pki, &seed_policy(dir.path(), true), &[]);
    Setup {
        pki,
        _dir: dir,
        upstream,
        gateway,
    }
}

impl Setup {
    /// `path` on the upstream by HOST.
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.upstream.addr.port())
    }

    /// curl `url` through the gateway, trusting the interception root, with
    /// `args`.
    fn curl(&self, args: &[&str], url: &str) -> Curl {
        let ca = self.pki.intercept_root.display().to_string();
        let proxy = self.gateway.http_proxy();
        let mut all = vec!["--proxy", &proxy, "--cacert", &ca];
        all.extend(args);
        all.push(url);
        curl(&all)
    }
}

fn assert_decision(
    line: &serde_json::Value,
    action: &str,
    rule: &str,
    group: &str,
    status: i64,
    phase: &str,
) {
    assert_eq!(line["final_action"], action, "{line}");
    assert_eq!(line["final_rule_name"], rule, "{line}");
    assert_eq!(line["final_rule_group_name"], group, "{line}");
    assert_eq!(line["http_status_code"], status, "{line}");
    assert_eq!(line["decision_phase"], phase, "{line}");
}

#[test]
fn pre_dns_domain_deny_is_the_connect_reply() {
    let s = setup();
    let url = format!("https://{DENIED_HOST}/");
    let result = s.curl(&[], &url);
    assert!(
        result
            .stderr
            .contains("CONNECT tunnel failed, response 403"),
        "{result:?}"
    );
    let line = s.gateway.decision_for(&format!("{DENIED_HOST}:443"));
    assert_decision(
        &line,
        "Deny",
        "deny-example-org",
        "seed-rules",
        403,
        "PreDNS",
    );
    assert_eq!(line["http_method"], "CONNECT");
    assert!(
        line["dest_ip"].is_null(),
        "denied before resolution: {line}"
    );
    assert_eq!(line["all_matches"][0]["phase"], "PreDNS");
}

#[test]
fn pre_request_uri_deny_is_a_403_inside_the_intercepted_tunnel() {
    let s = setup();
    let url = s.url("/reports/files/q3.pdf");
    let result = s.curl(&["-i"], &url);
    assert_eq!(result.status, 403, "{result:?}");
    assert!(
        result.body.contains("Request denied by the egress policy."),
        "{result:?}"
    );
    let headers = result.body.to_ascii_lowercase();
    assert!(headers.contains("content-type: text/plain"), "{result:?}");
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{result:?}"
    );
    assert!(
        !result.body.contains("deny-files"),
        "no rule internals in the body"
    );
    let line = s.gateway.decision_for(&url);
    assert_decision(&line, "Deny", "deny-files", "seed-rules", 403, "PreREQUEST");
    assert_eq!(line["http_method"], "GET");
    assert_eq!(line["dest_ip"], "127.0.0.1");
}

#[test]
fn post_response_deny_replaces_a_404() {
    let s = setup();
    let url = s.url("/status/404");
    let result = s.curl(&[], &url);
    assert_eq!(result.status, 403, "{result:?}");
    assert!(
        !result.body.contains("status 404"),
        "the upstream body must not leak: {result:?}"
    );
    let line = s.gateway.decision_for(&url);
    assert_decision(
        &line,
        "Deny",
        "deny-not-found",
        "seed-rules",
        403,
        "PostRESPONSE",
    );
}

#[test]
fn allowed_requests_pass_with_the_default() {
    let s = setup();
    let url = s.url("/");
    let result = s.curl(&[], &url);
    assert_eq!(
        (result.status, result.body.as_str()),
        (200, "hello from upstream"),
        "{result:?}"
    );
    let line = s.gateway.decision_for(&url);
    assert_decision(&line, "Allow", "default", "default", 200, "PostRESPONSE");
    assert_eq!(line["response_size"], 19);
    assert_eq!(line["proxy_name"], "test-proxy");
    assert_eq!(line["src_vpce"], "test-proxy-http");
    assert_eq!(line["client_src_ip"], "127.0.0.1");
    // One upstream connection (TCP and TLS), measured once.
    assert_eq!(
        s.gateway
            .metric("egress_upstream_connect_duration_seconds_count"),
        1.0
    );
}
