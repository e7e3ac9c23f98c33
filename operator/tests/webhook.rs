//! Adoption on the real control plane: the Helm chart lints, renders objects
//! the API server accepts and installs; the API server calls the operator's
//! injection webhook (by URL: no node runs here) for pods in labelled
//! namespaces; the operator copies the trust bundle, renders NetworkPolicies
//! for enforced clients, swaps its webhook certificate without a restart,
//! and reports pods that escaped injection while the webhook was down.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    Operator, RELEASE, RELEASE_NAMESPACE, TempDir, chart, client, create_ca_secret, eventually,
    install_crds, kubectl, kubectl_apply, namespace, once_exists, openssl_ca, run,
};
use egress_e2e::ControlPlane;
use egress_operator::crd::EgressProxy;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/egress-proxy");

fn setup() -> &'static ControlPlane {
    static CRDS: OnceLock<()> = OnceLock::new();
    let plane = ControlPlane::shared();
    CRDS.get_or_init(|| install_crds(plane));
    plane
}

/// Runs `command` with `input` on stdin: (success, stdout, stderr).
fn with_stdin(command: Command, input: &str) -> (bool, String, String) {
    let output = egress_e2e::run_with_stdin(command, input.as_bytes()).expect("command runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Creates a pod and returns it as the API server stored it.
fn create_pod(plane: &ControlPlane, namespace: &str, pod: serde_json::Value) -> serde_json::Value {
    let mut create = plane.kubectl();
    create.args(["create", "-n", namespace, "-o", "json", "-f", "-"]);
    let (ok, stdout, stderr) = with_stdin(create, &pod.to_string());
    assert!(ok, "pod not created: {stderr}");
    serde_json::from_str(&stdout).expect("pod JSON")
}

fn pod(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}, "annotations": annotations},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{
                "name": "app",
                "image": "app",
                "env": [
                    {"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx64m"},
                    {"name": "NO_PROXY", "value": "mine.example"}
                ]
            }]
        }
    })
}

/// The environment of container `name` (init containers too).
fn env(pod: &serde_json::Value, name: &str) -> BTreeMap<String, String> {
    let spec = &pod["spec"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten();
    containers
        .filter(|c| c["name"] == name)
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// SHA-256 fingerprint of the certificate served on `port`.
fn served_fingerprint(port: u16) -> String {
    let mut connect = Command::new("openssl");
    connect.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    let (_, pem, _) = with_stdin(connect, "");
    let mut fingerprint = Command::new("openssl");
    fingerprint.args(["x509", "-noout", "-fingerprint", "-sha256"]);
    let (_, out, _) = with_stdin(fingerprint, &pem);
    out.trim().to_owned()
}

/// `curl` to the webhook: the status code.
fn webhook_status(port: u16, method: &str, body: &str) -> String {
    let mut curl = Command::new("curl");
    curl.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("https://127.0.0.1:{port}/mutate"));
    let (_, code, _) = with_stdin(curl, body);
    code
}

async fn proxy(client: &kube::Client) -> EgressProxy {
    let api: Api<EgressProxy> = Api::namespaced(client.clone(), "proxies");
    api.get("main").await.expect("proxy")
}

/// Reads the operator makes on paths its caches do not cover, which the
/// other tests may never reach: the chart's RBAC must allow each, in every
/// namespace. (Secrets it may read only where a namespace opts in: see
/// cluster.rs.)
#[test]
fn the_chart_lets_the_operator_read_what_its_caches_may_miss() {
    let plane = setup();
    let account = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-operator");
    for (verb, resource, why) in [
        (
            "get",
            "namespaces",
            "the webhook, for a namespace created moments before its pod",
        ),
        (
            "list",
            "egressproxies.egress.dev",
            "the webhook, for a proxy created moments before the pods it serves",
        ),
        (
            "get",
            "configmaps",
            "the policy ConfigMap and a destination CA bundle",
        ),
        ("get", "deployments.apps", "the gateway's rollout status"),
        (
            "get",
            "serviceaccounts",
            "whose an object of a proxy's names is",
        ),
        (
            "get",
            "roles.rbac.authorization.k8s.io",
            "whose an object of a proxy's names is",
        ),
        (
            "get",
            "rolebindings.rbac.authorization.k8s.io",
            "whose an object of a proxy's names is",
        ),
        ("get", "services", "whose an object of a proxy's names is"),
        (
            "get",
            "poddisruptionbudgets.policy",
            "whose an object of a proxy's names is",
        ),
        (
            "get",
            "horizontalpodautoscalers.autoscaling",
            "whose an object of a proxy's names is",
        ),
        (
            "list",
            "pods",
            "escaped pods, and what it binds to gateways",
        ),
        ("list", "nodes", "pod CIDRs"),
        ("create", "events", "events on EgressProxies"),
    ] {
        let mut can = plane.kubectl();
        can.args([
            "auth",
            "can-i",
            verb,
            resource,
            "--all-namespaces",
            "--as",
            &account,
        ]);
        let output = can.output().expect("kubectl");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "yes",
            "the chart does not let the operator {verb} {resource} ({why})"
        );
    }
}

/// The chart rendered with `values`, as JSON objects (kubectl reads the YAML).
fn rendered_objects(plane: &ControlPlane, values: &[&str]) -> Vec<serde_json::Value> {
    let mut template = plane.helm();
    template.args(["template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE]);
    for value in values {
        template.args(["--set", value]);
    }
    let rendered = run(template);
    let mut read = plane.kubectl();
    read.args(["create", "--dry-run=client", "-o", "json", "-f", "-"]);
    let (ok, stdout, stderr) = with_stdin(read, &rendered);
    assert!(ok, "{stderr}");
    // One JSON document per object, one after the other.
    serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .map(|object| object.expect("JSON"))
        .collect()
}

fn of_kind<'a>(objects: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn the_chart_confines_the_operator_s_ports_and_secrets() {
    let plane = setup();
    let secrets_role = format!("{RELEASE}-operator-secrets");
    let monitoring = r#"networkPolicy.adminFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring"#;
    let objects = rendered_objects(plane, &[monitoring]);

    // The NetworkPolicy takes the operator's pods, and names their ports.
    let deployment = of_kind(&objects, "Deployment")[0];
    let template = &deployment["spec"]["template"];
    let policies = of_kind(&objects, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let policy = &policies[0]["spec"];
    let selector = policy["podSelector"]["matchLabels"]
        .as_object()
        .expect("labels");
    for (label, value) in selector {
        assert_eq!(&template["metadata"]["labels"][label], value, "{label}");
    }
    let ports: Vec<&str> = template["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let rules = policy["ingress"].as_array().expect("ingress");
    let rule_of = |port: &str| {
        assert!(
            ports.contains(&port),
            "{port} is not a port of the operator: {ports:?}"
        );
        rules
            .iter()
            .find(|r| r["ports"][0]["port"] == port)
            .unwrap_or_else(|| panic!("no rule for {port}: {rules:?}"))
    };
    assert!(
        rule_of("webhook").get("from").is_none(),
        "the API server calls from outside the pod network"
    );
    assert_eq!(
        rule_of("admin")["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(rules.len(), 2, "{rules:?}");
    // Without adminFrom nothing reaches the admin port but the node's
    // probes; disabled, no policy.
    let objects = rendered_objects(plane, &[]);
    let rules = of_kind(&objects, "NetworkPolicy")[0]["spec"]["ingress"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    assert!(
        of_kind(
            &rendered_objects(plane, &["networkPolicy.enabled=false"]),
            "NetworkPolicy"
        )
        .is_empty()
    );

    // Secrets: no cluster-wide read; the role bound in the release
    // namespace and those listed, or everywhere with "*".
    let secret_bindings = |objects: &[serde_json::Value]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| o["roleRef"]["name"] == secrets_role.as_str())
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["namespace"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    let operator_role = of_kind(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == format!("{RELEASE}-operator"))
        .expect("the operator's ClusterRole");
    assert!(
        !operator_role["rules"].to_string().contains("secrets"),
        "{operator_role}"
    );
    assert_eq!(
        secret_bindings(&objects),
        [format!("RoleBinding/{RELEASE_NAMESPACE}")]
    );
    let listed = rendered_objects(plane, &["operator.secretNamespaces={team-a,team-b}"]);
    assert_eq!(
        secret_bindings(&listed),
        [
            format!("RoleBinding/{RELEASE_NAMESPACE}"),
            "RoleBinding/team-a".to_owned(),
            "RoleBinding/team-b".to_owned()
        ]
    );
    let everywhere = rendered_objects(plane, &["operator.secretNamespaces={*}"]);
    assert_eq!(secret_bindings(&everywhere), ["ClusterRoleBinding/-"]);
}

#[test]
fn the_chart_lints_and_renders_what_the_api_server_accepts() {
    let plane = setup();
    let mut lint = plane.helm();
    lint.args(["lint", "--strict", CHART]);
    run(lint);
    // The values schema refuses what cannot work: a broken webhook, no
    // gateway image for the proxies.
    for (value, named) in [
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("image.gateway=", "gateway"),
    ] {
        let mut bad = plane.helm();
        bad.args(["lint", CHART, "--set", value]);
        let output = bad.output().expect("helm");
        assert!(!output.status.success(), "{value} accepted");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(named),
            "{value}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    kubectl(plane, &["create", "namespace", "egress-dry"]);
    // Its own release name: the other test installs RELEASE meanwhile.
    let mut template = plane.helm();
    template.args([
        "template",
        "dry-run",
        CHART,
        "--namespace",
        "egress-dry",
        "--include-crds",
        "--set",
        "cluster.serviceCIDRs={10.96.0.0/12}",
    ]);
    let rendered = run(template);
    for kind in [
        "kind: CustomResourceDefinition",
        "kind: Deployment",
        "kind: ClusterRole",
        "kind: MutatingWebhookConfiguration",
        "kind: Service",
    ] {
        assert!(rendered.contains(kind), "{kind} missing");
    }
    let mut apply = plane.kubectl();
    apply.args(["apply", "--dry-run=server", "-f", "-"]);
    let (ok, stdout, stderr) = with_stdin(apply, &rendered);
    assert!(ok, "the API server refused the chart:\n{stdout}{stderr}");
    assert!(stdout.contains("mutatingwebhookconfiguration.admissionregistration.k8s.io/dry-run-egress-proxy created (server dry run)"), "{stdout}");

    // With cert-manager: it issues the certificate and injects the caBundle.
    let mut template = plane.helm();
    template.args([
        "template",
        RELEASE,
        CHART,
        "--namespace",
        "egress-dry",
        "--set",
        "webhook.certManager.enabled=true",
    ]);
    let rendered = run(template);
    assert!(
        rendered.contains("cert-manager.io/inject-ca-from: egress-dry/egress-proxy-webhook-tls")
    );
    assert!(rendered.contains("kind: Certificate"));
    assert!(rendered.contains("value: external"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_in_labelled_namespaces_are_pointed_at_the_proxy_and_escapes_are_reported() {
    let plane = setup();
    let client = client(plane).await;
    // The chart, with the webhook called by URL on this machine.
    let chart = chart(plane);
    let port = chart.webhook_port;
    assert!(
        chart
            .notes
            .contains("kubectl label namespace <namespace> egress.dev/injection=enabled"),
        "{}",
        chart.notes
    );
    let webhook_url = kubectl(
        plane,
        &[
            "get",
            "mutatingwebhookconfiguration",
            RELEASE,
            "-o",
            "jsonpath={.webhooks[0].clientConfig.url} {.webhooks[0].failurePolicy}",
        ],
    );
    assert_eq!(
        webhook_url,
        format!("https://127.0.0.1:{port}/mutate Ignore")
    );

    // The operator runs with the chart's environment and RBAC, nothing more
    // (leader election included).
    let mut op = Operator::serving_webhook(plane, &[]);
    eventually(Duration::from_secs(30), "webhook ready", || async {
        (op.admin_get("/readyz").0 == 200).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "caBundle patched", || async {
        let ca_bundle = kubectl(
            plane,
            &[
                "get",
                "mutatingwebhookconfiguration",
                RELEASE,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
        );
        (!ca_bundle.is_empty()).then_some(())
    })
    .await;

    let dir = TempDir::new("webhook");

    // What is not a review is refused without harm.
    assert_eq!(webhook_status(port, "POST", "not json"), "400");
    assert_eq!(webhook_status(port, "GET", ""), "404");
    let oversized = format!("{{\"padding\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    assert_eq!(webhook_status(port, "POST", &oversized), "413");

    // A proxy that intercepts, and the namespaces.
    namespace(&client, "proxies").await;
    let ca = openssl_ca(&dir.0, "hook", None);
    create_ca_secret(plane, "proxies", "user-ca", &ca);
    let (ok, out) = kubectl_apply(
        plane,
        r#"
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {name: allow-all, namespace: proxies}
spec: {rules: {preDNS: [{name: all, action: Allow, conditions: [{key: "request:DestinationDomain", operator: StringLike, values: ["*"]}]}]}}
---
apiVersion: egress.dev/v1alpha1
kind: ProxyConfiguration
metadata: {name: config, namespace: proxies}
spec:
  ruleGroups: [{name: allow-all}]
  defaultActions: {preDNS: Deny, preRequest: Allow, postResponse: Allow}
---
apiVersion: egress.dev/v1alpha1
kind: EgressProxy
metadata: {name: main, namespace: proxies}
spec:
  configurationRef: {name: config}
  tlsInterception: {enabled: true, caSecretRef: {name: user-ca}}
  clients:
    podSelector: {matchLabels: {app: web}}
    noProxy: [internal.example.com]
"#,
    );
    assert!(ok, "{out}");
    namespace(&client, "team").await;
    namespace(&client, "plain").await;
    kubectl(
        plane,
        &["label", "namespace", "team", "egress.dev/injection=enabled"],
    );

    // Injected: every container, the pod's own values kept.
    let injected = create_pod(plane, "team", pod("web", serde_json::json!({})));
    assert_eq!(
        injected["metadata"]["annotations"]["egress.dev/proxy"],
        "proxies/main"
    );
    assert_eq!(
        injected["metadata"]["annotations"]["egress.dev/proxy-reason"],
        "the only EgressProxy that selects this pod"
    );
    for container in ["init", "app"] {
        let env = env(&injected, container);
        assert_eq!(
            env["HTTPS_PROXY"], "http://main.proxies.svc:1080",
            "{container}"
        );
        assert_eq!(
            env["http_proxy"], "http://main.proxies.svc:1080",
            "{container}"
        );
        assert_eq!(
            env["SSL_CERT_FILE"],
            "/etc/egress-proxy/ca-certificates.crt"
        );
        assert_eq!(
            env["NODE_EXTRA_CA_CERTS"],
            "/etc/egress-proxy/ca-bundle.pem"
        );
        assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
    }
    let app = env(&injected, "app");
    assert_eq!(
        app["NO_PROXY"], "mine.example",
        "the pod's own NO_PROXY stays"
    );
    assert!(!app.contains_key("no_proxy"));
    assert!(app["JAVA_TOOL_OPTIONS"].starts_with("-Xmx64m -Dhttp.proxyHost=main.proxies.svc"));
    assert!(
        app["JAVA_TOOL_OPTIONS"]
            .contains("-Djavax.net.ssl.trustStore=/etc/egress-proxy/truststore.p12")
    );
    let no_proxy = env(&injected, "init")["NO_PROXY"].clone();
    for entry in [
        ".svc",
        ".cluster.local",
        "10.0.0.0/24",
        "10.244.0.0/16",
        "internal.example.com",
    ] {
        assert!(
            no_proxy.split(',').any(|e| e == entry),
            "{entry} not in {no_proxy}"
        );
    }
    assert_eq!(
        injected["spec"]["volumes"]
            .as_array()
            .map(|v| v.iter().any(|v| v["name"] == "egress-trust-bundle"
                && v["configMap"]["name"] == "egress-trust.proxies.main")),
        Some(true)
    );

    // Untouched: an unlabelled namespace, an opted-out pod, an unselected pod.
    let plain = create_pod(plane, "plain", pod("web", serde_json::json!({})));
    assert!(
        plain["metadata"]["annotations"]
            .get("egress.dev/proxy")
            .is_none()
    );
    assert!(!env(&plain, "app").contains_key("HTTPS_PROXY"));
    let opted_out = create_pod(
        plane,
        "team",
        pod(
            "opted-out",
            serde_json::json!({"egress.dev/inject": "false"}),
        ),
    );
    assert!(
        opted_out["metadata"]["annotations"]
            .get("egress.dev/proxy")
            .is_none()
    );
    assert!(!env(&opted_out, "app").contains_key("HTTPS_PROXY"));
    let mut unselected = pod("db", serde_json::json!({}));
    unselected["metadata"]["labels"] = serde_json::json!({"app": "db"});
    let mut create = plane.kubectl();
    create.args(["create", "-n", "team", "-o", "json", "-f", "-"]);
    let (ok, stdout, stderr) = with_stdin(create, &unselected.to_string());
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("HTTPS_PROXY"));
    assert!(
        stderr.contains("egress-proxy: no EgressProxy selects this pod"),
        "kubectl shows why: {stderr}"
    );

    // The trust bundle is copied where the pods can mount it.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let copy_name = "egress-trust.proxies.main";
    let copy = once_exists(&config_maps, copy_name, "trust bundle copy").await;
    let source: ConfigMap = Api::namespaced(client.clone(), "proxies")
        .get("main-trust-bundle")
        .await
        .expect("source");
    let data = copy.data.clone().unwrap_or_default();
    let roots = &source.data.as_ref().expect("data")["ca-bundle.pem"];
    assert_eq!(&data["ca-bundle.pem"], roots);
    assert!(data["ca-certificates.crt"].ends_with(roots.as_str()));
    assert!(
        data["ca-certificates.crt"]
            .matches("BEGIN CERTIFICATE")
            .count()
            > roots.matches("BEGIN CERTIFICATE").count(),
        "system roots come first"
    );
    assert!(
        !copy.binary_data.unwrap_or_default()["truststore.p12"]
            .0
            .is_empty()
    );

    // Status: what pods get, and that none escaped.
    let status = eventually(Duration::from_secs(30), "clients status", || async {
        let clients = proxy(&client).await.status?.clients?;
        (clients.injected_pods == 1).then_some(clients)
    })
    .await;
    assert_eq!(status.namespaces, ["team"]);
    assert_eq!(status.escaped_pods, 0);
    assert_eq!(status.no_proxy, no_proxy);

    // A new certificate is served without a restart.
    let before = served_fingerprint(port);
    assert!(before.contains("Fingerprint"), "{before}");
    kubectl(
        plane,
        &[
            "delete",
            "secret",
            "-n",
            RELEASE_NAMESPACE,
            "egress-proxy-webhook-tls",
        ],
    );
    eventually(
        Duration::from_secs(30),
        "a new webhook certificate served",
        || async {
            let now = served_fingerprint(port);
            (now.contains("Fingerprint") && now != before).then_some(())
        },
    )
    .await;
    let again = create_pod(plane, "team", pod("web-2", serde_json::json!({})));
    assert_eq!(
        again["metadata"]["annotations"]["egress.dev/proxy"],
        "proxies/main"
    );

    // The webhook down: pods are still created, and the escape is reported.
    op.terminate();
    op.wait(Duration::from_secs(10)).expect("operator stops");
    let escapee = create_pod(plane, "team", pod("escapee", serde_json::json!({})));
    assert!(
        escapee["metadata"]["annotations"]
            .get("egress.dev/proxy")
            .is_none()
    );
    // One that says it was injected, without the settings: the annotation
    // alone does not count.
    create_pod(
        plane,
        "team",
        pod(
            "forger",
            serde_json::json!({"egress.dev/proxy": "proxies/main"}),
        ),
    );
    let op = Operator::serving_webhook(plane, &[]);
    let status = eventually(Duration::from_secs(30), "the escape reported", || async {
        let clients = proxy(&client).await.status?.clients?;
        (clients.escaped_pods == 2).then_some(clients)
    })
    .await;
    assert_eq!(status.escaped, ["team/escapee", "team/forger"]);
    assert!(
        status.message.contains("restart them"),
        "{}",
        status.message
    );
    assert_eq!(
        op.metric("egress_operator_escaped_pods{namespace=\"proxies\",proxy=\"main\"}"),
        2.0
    );
    eventually(Duration::from_secs(30), "a warning event", || async {
        let events = kubectl(
            plane,
            &[
                "get",
                "events",
                "-n",
                "proxies",
                "--field-selector",
                "reason=PodsEscapedInjection",
                "-o",
                "name",
            ],
        );
        (!events.trim().is_empty()).then_some(())
    })
    .await;

    // Bypass prevention: NetworkPolicies in the client and proxy namespaces.
    kubectl(
        plane,
        &[
            "patch",
            "egressproxy",
            "main",
            "-n",
            "proxies",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"clients":{"enforce":true}}}"#,
        ],
    );
    let team_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "team");
    let policy_name = "egress-clients.proxies.main";
    let egress = once_exists(&team_policies, policy_name, "client egress policy").await;
    let spec = serde_json::to_value(egress.spec).expect("json");
    assert_eq!(
        spec["podSelector"],
        serde_json::json!({}),
        "every pod of the namespace, whatever its labels"
    );
    let ranges: Vec<&str> = spec["egress"][2]["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(
        ranges,
        ["10.0.0.1/32", "10.0.0.0/24", "10.244.0.0/16"],
        "API server, services, pods"
    );
    let proxy_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "proxies");
    once_exists(&proxy_policies, "main-clients", "proxy ingress policy").await;

    // A namespace no longer labelled loses what was rendered for it.
    kubectl(
        plane,
        &["label", "namespace", "team", "egress.dev/injection-"],
    );
    // What the proxy rendered in the client namespace: its trust bundle's
    // copy and the client NetworkPolicy, both gone.
    let rendered_gone = || async {
        let copy = config_maps.get_opt(copy_name).await.ok()?;
        let policy = team_policies.get_opt(policy_name).await.ok()?;
        (copy.is_none() && policy.is_none()).then_some(())
    };
    eventually(Duration::from_secs(30), "copies removed", rendered_gone).await;
    kubectl(
        plane,
        &["label", "namespace", "team", "egress.dev/injection=enabled"],
    );
    once_exists(&config_maps, copy_name, "copies back").await;

    // Deleting the proxy removes what it put in client namespaces.
    kubectl(
        plane,
        &[
            "delete",
            "egressproxy",
            "main",
            "-n",
            "proxies",
            "--wait=false",
        ],
    );
    eventually(
        Duration::from_secs(30),
        "client namespace cleaned",
        rendered_gone,
    )
    .await;

    let mut uninstall = plane.helm();
    uninstall.args(["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE]);
    run(uninstall);
    drop(op);
}
