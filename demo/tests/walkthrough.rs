//! The user's walkthrough, automated: from an empty cluster to enforced,
//! logged egress (the chart, a CA made with openssl, the seed policy, a
//! labelled namespace and an injected pod), then a rule change and what
//! users break. Without a node the operator and gateway run as local
//! processes, and the client pod's settings are used by local clients.

use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use egress_demo::{
    ALLOWED_HOST, Binaries, CLIENT_NAMESPACE, CLIENT_POD, DENIED_HOST, Demo, PROXY,
    PROXY_NAMESPACE, PROXY_SERVICE, Ports, RULE_GROUP, repository,
};
use egress_e2e::{ControlPlane, eventually};

/// The demo, started once for this test binary on a thread that lives as
/// long as the process (its processes die with the thread that started them).
fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let plane = ControlPlane::shared();
            let binaries = Binaries {
                operator: egress_e2e::workspace_binary("egress-operator", "egress-operator")
                    .expect("operator"),
                gateway: egress_e2e::workspace_binary("egress-gateway", "egress-gateway")
                    .expect("gateway"),
            };
            let started = Instant::now();
            let demo = Demo::start(plane, &binaries, Ports::free().expect("ports"), &|step| {
                eprintln!(
                    "[walkthrough {:>5.1}s] {step}",
                    started.elapsed().as_secs_f64()
                )
            });
            let _ = sender.send(demo.map_err(|e| format!("{e:#}")));
            loop {
                std::thread::park();
            }
        });
        receiver
            .recv()
            .expect("demo thread")
            .unwrap_or_else(|e| panic!("the walkthrough could not be set up: {e}"))
    })
}

/// What a curl run printed: status, body, stderr, exit code.
struct Fetched {
    status: u16,
    body: String,
    stderr: String,
    exit: i32,
}

fn fetched(output: Output) -> Fetched {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Fetched {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit: output.status.code().unwrap_or(-1),
    }
}

/// curl with the client pod's settings, as they were injected.
fn curl(demo: &Demo, url: &str) -> Fetched {
    let output = demo
        .curl()
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    fetched(output)
}

fn kubectl(demo: &Demo, args: &[&str]) -> String {
    demo.kubectl_ok(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The decision line whose `url` is `url` (the last one).
fn decision(demo: &Demo, url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(demo.decisions()).unwrap_or_default();
        let found = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|d| d["url"] == url || d["dest_domain"] == url);
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no decision line for {url}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn condition(demo: &Demo, kind: &str, name: &str, type_: &str) -> (String, String, String) {
    let json = kubectl(
        demo,
        &["get", kind, name, "-n", PROXY_NAMESPACE, "-o", "json"],
    );
    let object: serde_json::Value = serde_json::from_str(&json).expect("json");
    let found = object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default();
    let text = |k: &str| found[k].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

/// The seed rule group without its PreDNS rule.
fn seed_group_without_dns_rule() -> String {
    let seed =
        std::fs::read_to_string(repository().join("examples/seed-policy.yaml")).expect("seed");
    let group = seed
        .split("\n---\n")
        .find(|doc| doc.contains("kind: ProxyRuleGroup"))
        .expect("group")
        .to_owned();
    let start = group.find("    preDNS:").expect("preDNS");
    let end = group.find("    preRequest:").expect("preRequest");
    format!("{}{}", &group[..start], &group[end..])
}

fn apply(demo: &Demo, yaml: &str) -> (bool, String) {
    let mut apply = demo.kubectl();
    apply.args(["apply", "-n", PROXY_NAMESPACE, "-f", "-"]);
    let output = egress_e2e::run_with_stdin(apply, yaml.as_bytes()).expect("kubectl runs");
    (
        output.status.success(),
        egress_e2e::combined_output(&output),
    )
}

#[test]
fn the_walkthrough_from_an_empty_cluster_to_enforced_logged_egress() {
    let demo = demo();
    let seed =
        std::fs::read_to_string(repository().join("examples/seed-policy.yaml")).expect("seed");

    // 1-3. The chart, the CA and the seed policy are in; the proxy's policy
    // and certificates are issued (Ready needs gateway pods: no node here).
    for type_ in ["PolicyCompiled", "CertificateReady"] {
        let (status, reason, message) = condition(demo, "egressproxy", PROXY, type_);
        assert_eq!(status, "True", "{type_}: {reason}: {message}");
    }
    // The client pod got the settings, pointing at the proxy's Service.
    let env: std::collections::BTreeMap<_, _> = demo.client_env.iter().cloned().collect();
    let proxy_url = format!("http://{PROXY_SERVICE}:{}", demo.ports.http);
    assert_eq!(env["HTTPS_PROXY"], proxy_url);
    assert_eq!(env["http_proxy"], proxy_url);
    assert!(env["NO_PROXY"].split(',').any(|e| e == ".svc"));
    // Its trust bundle holds the root examples/cluster/ca.sh made.
    let root = std::fs::read_to_string(demo.dir.join("egress-ca/root.pem")).expect("root");
    let bundle = std::fs::read_to_string(demo.trust_dir().join("ca-bundle.pem")).expect("bundle");
    assert!(bundle.contains(root.trim()), "the user's root is trusted");
    for file in ["ca-certificates.crt", "truststore.p12"] {
        assert!(demo.trust_dir().join(file).exists(), "{file}");
    }

    // 4. Each phase, with exactly those settings.
    let allowed = curl(demo, &demo.url(ALLOWED_HOST, "/"));
    assert_eq!(allowed.status, 200, "{}", allowed.stderr);
    assert!(
        allowed.body.contains("Hello from the demo upstream"),
        "{}",
        allowed.body
    );
    let denied = curl(demo, &demo.url(DENIED_HOST, "/"));
    assert_eq!(
        denied.exit, 56,
        "curl reports the refused CONNECT: {}",
        denied.stderr
    );
    assert!(denied.stderr.contains("403"), "{}", denied.stderr);
    let files = curl(demo, &demo.url(ALLOWED_HOST, "/files/report.pdf"));
    assert_eq!(files.status, 403);
    let missing = curl(demo, &demo.url(ALLOWED_HOST, "/missing"));
    assert_eq!(missing.status, 403, "the 404 becomes a 403");
    // The HTTPS listener: TLS to the proxy too, trusting the injected bundle.
    let https = fetched(
        demo.curl()
            .args([
                "--proxy",
                &format!("https://{PROXY_SERVICE}:{}", demo.ports.https),
            ])
            .arg("--proxy-cacert")
            .arg(demo.trust_dir().join("ca-bundle.pem"))
            .args(["-w", "\n%{http_code}", &demo.url(ALLOWED_HOST, "/")])
            .output()
            .expect("curl"),
    );
    assert_eq!(https.status, 200, "{}", https.stderr);

    // Each decision names the rule, the group, and the client pod.
    for (url, rule) in [
        (DENIED_HOST.to_owned(), "deny-example-org"),
        (demo.url(ALLOWED_HOST, "/files/report.pdf"), "deny-files"),
        (demo.url(ALLOWED_HOST, "/missing"), "deny-not-found"),
    ] {
        let line = decision(demo, &url);
        assert_eq!(line["final_action"], "Deny", "{line}");
        assert_eq!(line["final_rule_name"], rule, "{line}");
        assert_eq!(line["final_rule_group_name"], RULE_GROUP, "{line}");
        assert_eq!(line["src_pod"], CLIENT_POD, "{line}");
        assert_eq!(line["src_namespace"], CLIENT_NAMESPACE, "{line}");
    }
    assert_eq!(
        decision(demo, &demo.url(ALLOWED_HOST, "/"))["final_action"],
        "Allow"
    );

    // 5. Remove the domain deny: the same request goes through, soon.
    let applied = Instant::now();
    let (ok, out) = apply(demo, &seed_group_without_dns_rule());
    assert!(ok, "{out}");
    eventually(Duration::from_secs(10), "the domain to be allowed", || {
        (curl(demo, &demo.url(DENIED_HOST, "/")).status == 200).then_some(())
    });
    let took = applied.elapsed();
    eprintln!("rule change: kubectl apply to the request allowed in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (ok, out) = apply(demo, &seed);
    assert!(ok, "{out}");
    eventually(
        Duration::from_secs(10),
        "the domain to be denied again",
        || (curl(demo, &demo.url(DENIED_HOST, "/")).exit == 56).then_some(()),
    );

    // 6. What users break.
    // An operator the schema does not know: the API server refuses it.
    let typo = seed.replace("operator: StringLike", "operator: StringLikes");
    let (ok, out) = apply(demo, &typo);
    assert!(!ok);
    assert!(out.contains("Unsupported value: \"StringLikes\""), "{out}");
    // One that does not fit its key: status says so, the old policy serves.
    let misfit = seed.replace("operator: StringLike", "operator: NumericEquals");
    let (ok, out) = apply(demo, &misfit);
    assert!(ok, "{out}");
    let message = eventually(Duration::from_secs(30), "the misfit reported", || {
        let (status, _, message) = condition(demo, "proxyrulegroup", RULE_GROUP, "Compiled");
        (status == "False").then_some(message)
    });
    assert!(
        message.contains("NumericEquals does not fit key request:Http:Uri"),
        "{message}"
    );
    assert_eq!(
        curl(demo, &demo.url(ALLOWED_HOST, "/files/a")).status,
        403,
        "the last good policy serves"
    );
    // The group deleted while listed: reported, the old policy serves.
    kubectl(
        demo,
        &[
            "delete",
            "proxyrulegroup",
            RULE_GROUP,
            "-n",
            PROXY_NAMESPACE,
        ],
    );
    let message = eventually(
        Duration::from_secs(30),
        "the missing group reported",
        || {
            let (status, _, message) = condition(demo, "proxyconfiguration", "seed", "Compiled");
            (status == "False" && message.contains(RULE_GROUP)).then_some(message)
        },
    );
    eprintln!("configuration status: {message}");
    assert_eq!(
        curl(demo, &demo.url(ALLOWED_HOST, "/files/a")).status,
        403,
        "the last good policy serves"
    );
    let (ok, out) = apply(demo, &seed);
    assert!(ok, "{out}");
    // A parent CA that cannot sign a CA: refused with what to change, and
    // interception keeps working with the sub-CA issued before.
    demo.make_ca("leaf-only-ca", 0).expect("ca.sh");
    let point_at = |secret: &str| {
        let patch =
            serde_json::json!({"spec": {"tlsInterception": {"caSecretRef": {"name": secret}}}});
        demo.patch_proxy(&patch).unwrap_or_else(|e| panic!("{e:#}"));
    };
    point_at("leaf-only-ca");
    let (reason, message) = eventually(
        Duration::from_secs(30),
        "the refused parent reported",
        || {
            let (status, reason, message) =
                condition(demo, "egressproxy", PROXY, "CertificateReady");
            (status == "False").then_some((reason, message))
        },
    );
    assert_eq!(reason, "ParentPathLenZero", "{message}");
    assert!(message.contains("pathlen"), "{message}");
    assert_eq!(
        curl(demo, &demo.url(ALLOWED_HOST, "/")).status,
        200,
        "still intercepting"
    );
    point_at("egress-ca");

    // Bypass prevention: the NetworkPolicies a node's network plugin enforces.
    let enforce = serde_json::json!({"spec": {"clients": {"enforce": true}}});
    demo.patch_proxy(&enforce)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let policy = eventually(Duration::from_secs(30), "the client egress policy", || {
        demo.kubectl_ok(&[
            "get",
            "networkpolicy",
            "-n",
            CLIENT_NAMESPACE,
            "egress-clients.egress.egress",
            "-o",
            "json",
        ])
        .ok()
    });
    let policy: serde_json::Value = serde_json::from_str(&policy).expect("json");
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    eprintln!(
        "enforce: NetworkPolicies rendered; refusing a pod that goes around the proxy needs a node (e2e real node)"
    );
}

/// A client users run, with exactly the client pod's environment; the
/// proxy's Service name resolves to this machine (`EGRESS_TEST_RESOLVE`, or
/// a hosts file for Java), as cluster DNS resolves it to the Service.
fn client(demo: &Demo, program: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .envs(demo.client_env.iter().map(|(k, v)| (k, v)))
        .env("EGRESS_TEST_RESOLVE", format!("{PROXY_SERVICE}=127.0.0.1"));
    command
}

#[test]
fn clients_users_run_use_what_the_webhook_injected_and_nothing_else() {
    let demo = demo();
    let urls = [
        demo.url(ALLOWED_HOST, "/"),
        demo.url(ALLOWED_HOST, "/files/report.pdf"),
    ];
    let clients = egress_e2e::clients::dir();
    let hosts = demo.dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {PROXY_SERVICE}\n")).expect("hosts file");

    let mut runs: Vec<(&str, std::process::Command)> = Vec::new();
    let mut python = client(demo, &egress_e2e::clients::python().expect("python venv"));
    python.arg(clients.join("env_client.py")).args(&urls);
    runs.push(("Python requests", python));
    let mut go = client(demo, &egress_e2e::clients::go_client().expect("go client"));
    go.args(&urls);
    runs.push(("Go net/http", go));
    let mut node = client(demo, &egress_e2e::clients::node().expect("node"));
    node.arg(clients.join("fetch_client.mjs")).args(&urls);
    runs.push(("Node fetch", node));
    let mut java = client(demo, &egress_e2e::clients::java().expect("java"));
    java.arg(format!("-Djdk.net.hosts.file={}", hosts.display()))
        .arg(clients.join("HttpClientCheck.java"))
        .args(&urls);
    runs.push(("Java HttpClient", java));

    for (name, mut command) in runs {
        let output = command.output().unwrap_or_else(|e| panic!("{name}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        let report = format!(
            "{name}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(lines.len(), 2, "{report}");
        assert!(
            lines[0].starts_with("200 "),
            "allowed, intercepted: {report}"
        );
        assert!(
            lines[1].starts_with("403 "),
            "PreREQUEST deny inside the tunnel: {report}"
        );
    }
}
