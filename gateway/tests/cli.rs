//! `egress-gateway policy ...` and `--help`, as a user runs them.

mod common;

use std::process::{Command, Output};

use common::{TempDir, write};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed-policy.yaml");

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_egress-gateway"))
        .args(args)
        .output()
        .expect("runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn eval(args: &[&str]) -> serde_json::Value {
    let output = gateway(&[&["policy", "eval", SEED], args].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

#[test]
fn check_reports_a_valid_policy_and_every_error_of_an_invalid_one() {
    let output = gateway(&["policy", "check", SEED]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert!(
        out.contains("configuration \"seed\", proxy \"egress\", 1 rule groups"),
        "{out}"
    );
    assert!(
        out.contains("rules: 1 PreDNS, 1 PreREQUEST, 1 PostRESPONSE"),
        "{out}"
    );
    assert!(out.contains("hash: sha256:"), "{out}");

    let dir = TempDir::new("cli");
    let seed = std::fs::read_to_string(SEED).expect("seed");
    let broken = seed
        .replace("values: [\".example.org\"]", "values: [\"bad domain\"]")
        .replace("operator: NumericEquals", "operator: NumericEqual")
        .replace("name: deny-files", "name: deny files");
    let path = write(dir.path(), "broken.yaml", &broken);
    let output = gateway(&["policy", "check", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let err = text(&output.stderr);
    assert!(err.contains("is invalid (3 errors):"), "{err}");
    assert!(err.contains("ruleGroups[0].rules.preDNS[0].conditions[0].values[0]: \"bad domain\" is not a domain name"), "{err}");
    assert!(
        err.contains("ruleGroups[0].rules.preRequest[0].name: rule name \"deny files\""),
        "{err}"
    );
    assert!(err.contains("ruleGroups[0].rules.postResponse[0].conditions[0].operator: unknown operator \"NumericEqual\""), "{err}");
}

#[test]
fn check_refuses_a_configuration_cut_off_before_its_defaults() {
    let dir = TempDir::new("cli-truncated");
    let seed = std::fs::read_to_string(SEED).expect("seed");
    let cut = seed
        .find("kind: ProxyConfiguration")
        .expect("configuration");
    let spec = cut + seed[cut..].find("spec:\n").expect("spec") + "spec:\n".len();
    let path = write(dir.path(), "truncated.yaml", &seed[..spec]);
    let output = gateway(&["policy", "check", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let err = text(&output.stderr);
    assert!(
        err.contains(
            "documents[1] (ProxyConfiguration \"seed\").spec: missing field `defaultActions`"
        ),
        "{err}"
    );
}

#[test]
fn eval_prints_the_log_line_of_each_seed_case() {
    let denied_dns = eval(&["https://www.example.org/"]);
    assert_eq!(denied_dns["final_rule_name"], "deny-example-org");
    assert_eq!(denied_dns["http_status_code"], 403);
    // Denied before the tunnel opens: the CONNECT is what the log shows,
    // as the gateway logs it.
    assert_eq!(denied_dns["http_method"], "CONNECT");
    assert_eq!(denied_dns["url"], "www.example.org:443");

    let denied_uri = eval(&["https://www.example.com/a/%66iles/b?token=x"]);
    assert_eq!(denied_uri["final_rule_name"], "deny-files", "{denied_uri}");
    assert_eq!(denied_uri["http_method"], "GET");
    assert_eq!(denied_uri["url"], "https://www.example.com/a/%66iles/b");

    assert_eq!(denied_uri["decision_phase"], "PreREQUEST");

    let denied_status = eval(&["https://www.example.com/missing", "--status", "404"]);
    assert_eq!(denied_status["final_rule_name"], "deny-not-found");
    assert_eq!(denied_status["final_rule_group_name"], "seed-rules");

    let allowed = eval(&["https://www.example.com/", "--status", "200"]);
    assert_eq!(
        (
            allowed["final_action"].as_str(),
            allowed["http_status_code"].as_i64()
        ),
        (Some("Allow"), Some(200))
    );

    let metadata = eval(&["http://metadata.internal/", "--dest-ip", "169.254.169.254"]);
    assert_eq!(metadata["final_rule_name"], "private-destination");
}

#[test]
fn compile_writes_a_document_that_check_accepts() {
    let output = gateway(&["policy", "compile", SEED]);
    assert!(output.status.success());
    let dir = TempDir::new("cli-json");
    let path = write(dir.path(), "policy.json", &text(&output.stdout));
    let checked = gateway(&["policy", "check", &path.display().to_string()]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let tampered = write(
        dir.path(),
        "tampered.json",
        &text(&output.stdout).replacen("Deny", "Allow", 1),
    );
    let refused = gateway(&["policy", "check", &tampered.display().to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("was changed after compiling"));
}

#[test]
fn help_explains_the_commands_and_flags() {
    let help = text(&gateway(&["--help"]).stdout);
    for word in ["run", "dev", "policy", "forward proxy"] {
        assert!(help.contains(word), "{word}: {help}");
    }
    let run = text(&gateway(&["run", "--help"]).stdout);
    for flag in [
        "--policy",
        "--https-listen",
        "--intercept-ca-cert",
        "--resolve",
        "--max-header-bytes",
        "EGRESS_POLICY",
        "--source",
        "kubernetes",
        "--pod-identity",
    ] {
        assert!(run.contains(flag), "{flag}: {run}");
    }
    let missing = gateway(&["run"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("--policy is required with --source file"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn every_example_compiles_and_does_what_its_comments_say() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let policies = std::fs::read_dir(examples)
        .expect("examples dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"));
    for path in policies {
        let output = gateway(&["policy", "check", &path.display().to_string()]);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            text(&output.stderr)
        );
    }
    let eval_example = |file: &str, args: &[&str]| -> serde_json::Value {
        let path = format!("{examples}/{file}");
        let output = gateway(&[&["policy", "eval", path.as_str()], args].concat());
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("one JSON line")
    };
    let outcome = |line: &serde_json::Value| {
        (
            line["final_action"].as_str().unwrap_or("").to_owned(),
            line["final_rule_name"].as_str().unwrap_or("").to_owned(),
        )
    };
    let pypi = eval_example("allowlist.yaml", &["https://pypi.org/simple/requests/"]);
    assert_eq!(outcome(&pypi), ("Allow".into(), "allow-registries".into()));
    let other = eval_example("allowlist.yaml", &["https://www.example.com/"]);
    assert_eq!(outcome(&other), ("Deny".into(), "default".into()));
    assert_eq!(other["decision_phase"], "PreDNS");
    let upload = eval_example(
        "allowlist.yaml",
        &["-X", "POST", "https://upload.pypi.org/legacy/"],
    );
    assert_eq!(outcome(&upload), ("Deny".into(), "no-uploads".into()));
    let would = |line: &serde_json::Value| {
        (
            line["would_action"].as_str().unwrap_or("").to_owned(),
            line["would_rule_name"].as_str().unwrap_or("").to_owned(),
        )
    };
    let watched = "allowlist-monitor.yaml";
    let pypi = eval_example(watched, &["https://pypi.org/simple/requests/"]);
    assert_eq!(outcome(&pypi), ("Allow".into(), "default".into()));
    assert_eq!(would(&pypi), ("Allow".into(), "allow-registries".into()));
    let other = eval_example(watched, &["https://www.example.com/"]);
    assert_eq!(outcome(&other), ("Allow".into(), "default".into()));
    assert_eq!(would(&other), ("Deny".into(), "deny-the-rest".into()));
    assert_eq!(other["would_rule_group_name"], "registries-watched");
    // Values from named lists, as inline values would match.
    for (url, decided) in [
        (
            "https://files.pythonhosted.org/x",
            ("Allow", "allow-registries"),
        ),
        ("https://paste.example/raw/1", ("Deny", "deny-blocked")),
        ("https://www.example.com/", ("Deny", "default")),
    ] {
        let line = eval_example("lists.yaml", &[url]);
        assert_eq!(
            outcome(&line),
            (decided.0.into(), decided.1.into()),
            "{url}"
        );
    }
    // The cluster's baseline before and after the namespace's rules, named by kind.
    for (url, decided) in [
        (
            "https://www.paste.example/",
            ("Deny", "ClusterProxyRuleGroup/platform", "no-exfiltration"),
        ),
        (
            "https://pypi.registry.example/",
            ("Allow", "ClusterProxyRuleGroup/platform", "registries"),
        ),
        (
            "https://npm.registry.example/",
            ("Deny", "team-rules", "not-npm"),
        ),
        ("https://www.example.com/", ("Deny", "default", "default")),
    ] {
        let line = eval_example("baseline.yaml", &[url]);
        assert_eq!(
            outcome(&line),
            (decided.0.into(), decided.2.into()),
            "{url}"
        );
        assert_eq!(line["final_rule_group_name"], decided.1, "{url}");
    }
    // The credential the gateway would add, for the pods it is for only.
    let llm = "cluster/llm-credential.yaml";
    let checked = gateway(&["policy", "check", &format!("{examples}/{llm}")]);
    assert!(
        text(&checked.stdout).contains(
            "credential \"llm-key\": header authorization from Secret llm-api-key key api-key"
        ),
        "{}",
        text(&checked.stdout)
    );
    let agent = eval_example(
        llm,
        &[
            "--source-namespace",
            "agents",
            "https://api.llm.example/v1/models",
        ],
    );
    assert_eq!(
        outcome(&agent),
        ("Allow".into(), "agents-reach-the-llm-api".into())
    );
    assert_eq!(agent["credential"], "llm-key", "{agent}");
    let elsewhere = eval_example(
        llm,
        &[
            "--source-namespace",
            "agents",
            "https://api.llm.example/v2/models",
        ],
    );
    assert!(elsewhere.get("credential").is_none(), "{elsewhere}");
    let pinned = eval_example(
        "allowlist.yaml",
        &["-X", "POST", "https://raw.githubusercontent.com/x"],
    );
    assert_eq!(
        outcome(&pinned),
        ("Allow".into(), "allow-registries".into()),
        "bypassed: HTTP rules do not see it"
    );
    assert_eq!(pinned["http_method"], "CONNECT");

    let file_sharing_at = |time: &str| {
        eval_example(
            "office-hours.yaml",
            &["https://files.example.net/", "--time", time],
        )
    };
    let office = file_sharing_at("2026-03-02T10:00:00Z");
    assert_eq!(outcome(&office), ("Allow".into(), "office-hours".into()));
    assert_eq!(office["first_alert_match"]["rule"], "watch-file-sharing");
    let night = file_sharing_at("2026-03-02T20:00:00Z");
    assert_eq!(outcome(&night), ("Deny".into(), "after-hours".into()));
}

#[test]
fn eval_and_the_gateway_write_the_same_decision_line() {
    use common::clients::curl;
    use common::process::Gateway;
    use common::upstream::{Behavior, Upstream};
    use common::{BYPASS_HOST, DENIED_HOST, HOST, Pki, seed_policy};

    let pki = Pki::new();
    let dir = TempDir::new("eval-parity");
    let (cert, key) = pki.server_cert(&[HOST, BYPASS_HOST]);
    let tls_upstream = Upstream::https(&cert, &key);
    let plain_upstream = Upstream::http(Behavior::Normal);
    let (tls, plain) = (tls_upstream.addr.port(), plain_upstream.addr.port());
    let policy = seed_policy(dir.path(), true);
    let gateway = Gateway::start(&pki, &policy, &[]);
    let both_roots = pki.both_roots.display().to_string();
    // URL, and the status the upstream answers (what eval's --status says).
    let cases = [
        (format!("https://{DENIED_HOST}:{tls}/"), 200),
        (format!("https://{HOST}:{tls}/"), 200),
        (format!("https://{HOST}:{tls}/a/%66iles/b?x=1"), 200),
        (format!("https://{HOST}:{tls}/status/404"), 404),
        (format!("https://{BYPASS_HOST}:{tls}/"), 200),
        (format!("http://{HOST}:{plain}/"), 200),
        (format!("http://{HOST}:{plain}/status/404"), 404),
        (format!("http://{DENIED_HOST}:{plain}/"), 200),
    ];
    let compared = [
        "http_method",
        "url",
        "dest_domain",
        "dest_port",
        "dest_ip",
        "http_status_code",
        "final_action",
        "final_rule_name",
        "final_rule_group_name",
        "decision_phase",
        "first_alert_match",
        "all_matches",
        "proxy_name",
        "src_vpc",
        "src_vpce",
    ];
    for (url, upstream_status) in cases {
        let before = gateway.decisions().len();
        curl(&[
            "--proxy",
            &gateway.http_proxy(),
            "--cacert",
            &both_roots,
            &url,
        ]);
        let live = gateway.decision_after(before, |_| true);
        let status = upstream_status.to_string();
        let evaluated = eval_file(
            &policy,
            &[&url, "--dest-ip", "127.0.0.1", "--status", &status],
        );
        for field in compared {
            assert_eq!(
                live[field], evaluated[field],
                "{url}: {field}\ngateway: {live}\neval:    {evaluated}"
            );
        }
    }
}

fn eval_file(policy: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let output = gateway(&[&["policy", "eval", &policy.display().to_string()], args].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

#[test]
fn dev_writes_its_private_keys_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("dev-keys");
    let out = dir.path().join("dev");
    let mut child = Command::new(env!("CARGO_BIN_EXE_egress-gateway"))
        .args([
            "dev",
            "--policy",
            SEED,
            "--dir",
            &out.display().to_string(),
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--admin-port",
            "0",
            "--upstream-port",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dev starts");
    let keys = ["intercept-ca.key", "proxy-tls.key", "demo-upstream.key"];
    let written = common::eventually(std::time::Duration::from_secs(20), || {
        keys.iter().all(|k| out.join(k).exists()).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(written.is_some(), "dev wrote its keys");
    for key in keys {
        let mode = std::fs::metadata(out.join(key))
            .expect("key")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let root = std::fs::metadata(out.join("root-ca.pem"))
        .expect("root")
        .permissions()
        .mode();
    assert_eq!(root & 0o777, 0o644, "certificates stay readable");
}

#[test]
fn eval_takes_the_client_pod_on_its_command_line() {
    let dir = TempDir::new("cli-identity");
    let policy = write(
        dir.path(),
        "identity.yaml",
        "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {name: g}\nspec:\n  rules:\n    preDNS:\n      - name: web-pods-only\n        action: Allow\n        conditions:\n          - {key: \"request:SourceNamespace\", operator: StringEquals, values: [team-a]}\n          - {key: \"request:SourcePodLabel/app\", operator: StringEquals, values: [web]}\n          - {key: \"request:SourceVpc\", operator: StringEquals, values: [prod]}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: c}\nspec: {ruleGroups: [{name: g}], defaultActions: {preDNS: Deny, preRequest: Allow, postResponse: Allow}}\n",
    );
    let path = policy.display().to_string();
    let eval = |extra: &[&str]| -> serde_json::Value {
        let output = gateway(
            &[
                &[
                    "policy",
                    "eval",
                    path.as_str(),
                    "http://a.example/",
                    "--cluster-name",
                    "prod",
                ],
                extra,
            ]
            .concat(),
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("json")
    };
    let web = eval(&[
        "--source-namespace",
        "team-a",
        "--source-pod",
        "web-1",
        "--source-label",
        "app=web",
        "--source-service-account",
        "web-sa",
    ]);
    assert_eq!(web["final_rule_name"], "web-pods-only", "{web}");
    assert_eq!(web["src_namespace"], "team-a");
    assert_eq!(web["src_pod"], "web-1");
    assert_eq!(web["src_service_account"], "web-sa");
    assert_eq!(web["src_vpc"], "prod");
    let other = eval(&[
        "--source-namespace",
        "team-a",
        "--source-label",
        "app=batch",
    ]);
    assert_eq!(other["final_action"], "Deny");
    let unknown = eval(&[]);
    assert_eq!(
        unknown["final_action"], "Deny",
        "no pod: identity keys never match"
    );
    assert!(unknown["src_namespace"].is_null());
    let bad = gateway(&[
        "policy",
        "eval",
        path.as_str(),
        "http://a.example/",
        "--source-namespace",
        "a",
        "--source-label",
        "nolabel",
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("is not key=value"),
        "{}",
        text(&bad.stderr)
    );
}

const AWS_SEED: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/aws/seed-rule-group.json"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/aws/seed-configuration.json"
    ),
];

#[test]
fn the_seed_imported_from_aws_decides_as_the_seed_does() {
    let dir = TempDir::new("aws-import");
    let imported = gateway(&[&["policy", "import", "aws"][..], &AWS_SEED].concat());
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert!(
        imported.stderr.is_empty(),
        "nothing to report: {}",
        text(&imported.stderr)
    );
    // Served by the seed's proxy (AWS keeps TLS interception on the proxy,
    // not in these files).
    let seed = std::fs::read_to_string(SEED).expect("seed");
    let proxy = seed
        .split("\n---\n")
        .find(|doc| doc.contains("kind: EgressProxy"))
        .expect("the seed's proxy");
    let policy = dir.path().join("imported.yaml");
    std::fs::write(&policy, format!("{}---\n{proxy}", text(&imported.stdout))).expect("write");
    let check = gateway(&["policy", "check", &policy.display().to_string()]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    for request in [
        vec!["https://www.example.org/"],
        vec!["https://www.example.com/a/files/b"],
        vec!["https://www.example.com/missing", "--status", "404"],
        vec!["https://www.example.com/", "--status", "200"],
    ] {
        let ours = eval(&request);
        let theirs = eval_file(&policy, &request);
        for field in [
            "final_action",
            "final_rule_name",
            "final_rule_group_name",
            "decision_phase",
            "http_status_code",
            "all_matches",
        ] {
            assert_eq!(ours[field], theirs[field], "{request:?}: {field}");
        }
    }
    // And back: the seed exported is what the AWS files say.
    let exported = gateway(&["policy", "export", "aws", SEED]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let exported: serde_json::Value = serde_json::from_slice(&exported.stdout).expect("json");
    let file = |path: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
    };
    assert_eq!(exported["CreateProxyRuleGroup"][0], file(AWS_SEED[0]));
    assert_eq!(exported["CreateProxyConfiguration"][0], file(AWS_SEED[1]));
}

#[test]
fn an_import_that_would_decide_differently_says_so_and_exits_1() {
    let dir = TempDir::new("aws-vpc");
    let rules = dir.path().join("Vpc-Rules.json");
    std::fs::write(
        &rules,
        r#"{"ProxyRuleGroupName": "Vpc-Rules", "Rules": {"PreDNS": [{"ProxyRuleName": "block-untrusted-vpcs", "Action": "DENY",
            "Conditions": [{"ConditionKey": "request:SourceVpc", "ConditionOperator": "StringEquals", "ConditionValues": ["vpc-094feb95245dfde25"]}]}]}}"#,
    )
    .expect("write");
    let output = gateway(&["policy", "import", "aws", &rules.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let err = text(&output.stderr);
    assert!(err.contains("changes decisions: Vpc-Rules: PreDNS rule \"block-untrusted-vpcs\" condition 0: request:SourceVpc is the cluster's name"), "{err}");
    // The YAML is written all the same, with the AWS name kept for logs.
    let yaml = text(&output.stdout);
    assert!(
        yaml.contains("name: vpc-rules") && yaml.contains("egress.dev/aws-name: Vpc-Rules"),
        "{yaml}"
    );
    let unreadable = gateway(&["policy", "import", "aws", SEED]);
    assert_eq!(unreadable.status.code(), Some(1));
    assert!(
        text(&unreadable.stderr).contains("neither AWS CLI JSON"),
        "{}",
        text(&unreadable.stderr)
    );
}
