//! Credentials through the running gateway (file source, `--secrets-dir`):
//! the header from a Secret is added inside intercepted TLS only, for the
//! clients, names and paths it is for, replacing the client's own; with
//! HTTP/1.1 and HTTP/2 (curl, Python requests); never onward after a redirect; a rotated value is
//! used without a restart; a missing one fails closed with a 502 naming the
//! credential; and the value is nowhere in what the gateway writes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::clients::{curl, python_script};
use common::process::Gateway;
use common::upstream::{Behavior, Upstream};
use common::{DENIED_HOST, HOST, Pki, TempDir, assert_nowhere, eventually, write};

const FIRST: &str = "sk-test-FIRST-5b1f0c";
const SECOND: &str = "sk-test-SECOND-93ad27";

/// Every request allowed; only HOST and DENIED_HOST intercepted; the
/// credential for HOST's `/echo` from 127.0.0.1.
fn write_policy(dir: &Path, header: &str) -> std::path::PathBuf {
    let yaml = format!(
        r#"apiVersion: egress.dev/v1alpha1
kind: ProxyConfiguration
metadata: {{name: open}}
spec:
  defaultActions: {{preDNS: Allow, preRequest: Allow, postResponse: Allow}}
---
apiVersion: egress.dev/v1alpha1
kind: EgressProxy
metadata: {{name: test-proxy}}
spec:
  configurationRef: {{name: open}}
  tlsInterception:
    enabled: true
    domains: ["{HOST}", "{DENIED_HOST}"]
  destinations:
    allowPrivateCIDRs: ["127.0.0.1/32"]
  credentials:
    - name: llm-key
      secretRef: {{name: llm-api-key, key: token}}
      header: {header}
      valuePrefix: "Bearer "
      destination:
        domains: ["{HOST}"]
        pathPrefix: /echo
      clients:
        sourceCIDRs: ["127.0.0.1/32"]
"#
    );
    write(dir, "policy.yaml", &yaml)
}

fn set_secret(secrets: &Path, value: Option<&str>) {
    let dir = secrets.join("llm-api-key");
    std::fs::create_dir_all(&dir).expect("secret dir");
    match value {
        // As a Secret volume changes: the whole new file appears at once.
        Some(value) => {
            let next = dir.join(".token.new");
            std::fs::write(&next, format!("{value}\n")).expect("write");
            std::fs::rename(&next, dir.join("token")).expect("rename");
        }
        None => std::fs::remove_file(dir.join("token")).expect("remove"),
    }
}

fn echoed_header(body: &str, name: &str) -> Option<String> {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("echo JSON ({e}): {body}"));
    json["headers"][name].as_str().map(str::to_owned)
}

#[test]
fn a_secret_becomes_a_header_inside_intercepted_tls_and_nowhere_else() {
    let pki = Pki::new();
    let dir = TempDir::new("credentials");
    let secrets = dir.path().join("secrets");
    set_secret(&secrets, Some(FIRST));
    let policy = write_policy(dir.path(), "Authorization");
    let secrets_arg = secrets.display().to_string();
    let gateway = Gateway::start(&pki, &policy, &["--secrets-dir", &secrets_arg]);
    let proxy = gateway.http_proxy();
    let root = pki.intercept_root.display().to_string();
    let (cert, key) = pki.server_cert(&[HOST, DENIED_HOST]);
    let tls = Upstream::https(&cert, &key);
    let port = tls.addr.port();
    let echo = format!("https://{HOST}:{port}/echo");
    let https = |extra: &[&str], url: &str| {
        curl(&[&["--proxy", &proxy, "--cacert", &root], extra, &[url]].concat())
    };

    // HTTP/1.1 and HTTP/2 to the client; the client's own header is replaced.
    for (version, flag) in [("1.1", "--http1.1"), ("2", "--http2")] {
        let got = https(
            &[flag, "-H", "Authorization: Bearer the-clients-own"],
            &echo,
        );
        assert_eq!(
            (got.status, got.http_version.as_str()),
            (200, version),
            "{got:?}"
        );
        assert_eq!(
            echoed_header(&got.body, "authorization").as_deref(),
            Some(format!("Bearer {FIRST}").as_str()),
            "HTTP/{version}: exactly the credential, not beside the client's"
        );
    }
    let line = gateway.decision(|d| d["url"] == echo.as_str());
    assert_eq!(line["credential"], "llm-key", "{line}");
    // Python requests.
    let python = python_script("requests_client.py", &[&proxy, &root, &echo]);
    let printed = String::from_utf8_lossy(&python.stdout);
    let (status, body) = printed.trim().split_once(' ').unwrap_or_default();
    assert_eq!(
        status,
        "200",
        "{printed}\n{}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(
        echoed_header(body, "authorization").as_deref(),
        Some(format!("Bearer {FIRST}").as_str())
    );

    // Another path of the same name, and a redirect to another intercepted
    // name the client follows: no credential.
    let other_path = https(&[], &format!("https://{HOST}:{port}/files/a"));
    assert_eq!(other_path.status, 200);
    let line = gateway.decision(|d| d["url"].as_str().is_some_and(|u| u.ends_with("/files/a")));
    assert!(line.get("credential").is_none(), "{line}");
    let redirect = format!("https://{HOST}:{port}/redirect/{DENIED_HOST}:{port}");
    let followed = https(&["-L"], &redirect);
    assert_eq!(followed.status, 200, "{followed:?}");
    assert!(followed.body.contains(DENIED_HOST), "{followed:?}");
    assert_eq!(echoed_header(&followed.body, "authorization"), None);

    // Plain HTTP to the same name: the credential never travels in clear.
    let plain = Upstream::http(Behavior::Normal);
    let cleartext = curl(&[
        "--proxy",
        &proxy,
        &format!("http://{HOST}:{}/echo", plain.addr.port()),
    ]);
    assert_eq!(cleartext.status, 200);
    assert_eq!(echoed_header(&cleartext.body, "authorization"), None);

    // Rotated: the next requests get the new value, no restart.
    set_secret(&secrets, Some(SECOND));
    let rotated = eventually(Duration::from_secs(10), || {
        let got = https(&[], &echo);
        (echoed_header(&got.body, "authorization") == Some(format!("Bearer {SECOND}")))
            .then_some(())
    });
    assert!(rotated.is_some(), "the rotated value was never sent");

    // Gone: fail closed, naming the credential, with no request sent.
    set_secret(&secrets, None);
    let refused = eventually(Duration::from_secs(10), || {
        let got = https(&[], &echo);
        (got.status == 502).then_some(got)
    })
    .expect("a 502 once the Secret's key is gone");
    assert!(refused.body.contains("credential llm-key"), "{refused:?}");
    let line = gateway.decision(|d| d["url"] == echo.as_str() && d["http_status_code"] == 502);
    assert_eq!(line["credential"], "llm-key", "{line}");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("Secret llm-api-key has no key token")),
        "{line}"
    );
    set_secret(&secrets, Some(SECOND));

    // A policy with a bad credential is refused; the running one keeps adding.
    let failures = gateway.metric("egress_policy_reload_failures_total");
    let bad = write_policy(dir.path(), "\"Bad Header\"");
    assert_eq!(bad, dir.path().join("policy.yaml"));
    gateway.wait_metric("egress_policy_reload_failures_total", failures + 1.0);
    gateway.diagnostic(&["credentials[0].header", "is not a header name"]);
    let still = eventually(Duration::from_secs(10), || {
        let got = https(&[], &echo);
        (got.status == 200).then_some(got)
    })
    .expect("served");
    assert_eq!(
        echoed_header(&still.body, "authorization").as_deref(),
        Some(format!("Bearer {SECOND}").as_str())
    );

    // The values are in no line, diagnostic or metric.
    assert_nowhere(&[FIRST, SECOND], &gateway.written());
}
