//! The gateway fed from the real API server (`--source kubernetes`): its
//! policy ConfigMap and certificate Secrets watched by name, the pods of the
//! namespaces it serves (and of no other) indexed by address so the identity
//! keys match the calling pod, changes enforced on the next request, bad
//! versions refused, an API outage survived.
//!
//! The gateway runs as its pod would: the arguments and RBAC the operator
//! renders (its own functions), acting as the gateway's ServiceAccount. No
//! kubelet runs here: pods are created through the API and given their
//! addresses through the status subresource; the clients are curl processes
//! bound to those addresses (127.0.0.2, 127.0.0.3, ...).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::clients::curl;
use common::process::Gateway;
use common::upstream::Upstream;
use common::{HOST, Pki, TempDir, assert_nowhere, eventually};
use egress_e2e::ControlPlane;
use egress_e2e::objects::create;
use egress_operator::crd::EgressProxy;
use egress_operator::{render, render_clients};
use egress_policy::parts::PartSet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// Pod identity rules: team-a pods labelled app=web may go out; nobody else.
fn policy(extra_namespace: Option<&str>) -> String {
    let allowed = match extra_namespace {
        Some(ns) => format!("[team-a, {ns}]"),
        None => "[team-a]".to_owned(),
    };
    format!(
        "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: identity}}\nspec:\n  rules:\n    preDNS:\n      - name: allow-web-pods\n        action: Allow\n        conditions:\n          - {{key: \"request:SourceNamespace\", operator: StringEquals, values: {allowed}}}\n          - {{key: \"request:SourcePodLabel/app\", operator: StringEquals, values: [web]}}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {{name: identity}}\nspec:\n  ruleGroups: [{{name: identity}}]\n  defaultActions: {{preDNS: Deny, preRequest: Allow, postResponse: Allow}}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {{name: egress}}\nspec:\n  configurationRef: {{name: identity}}\n  tlsInterception: {{enabled: true}}\n  destinations: {{allowPrivateCIDRs: [\"127.0.0.1/32\"]}}\n"
    )
}

/// The compiled policy JSON, as the operator would write it.
fn compiled(yaml: &str, dir: &TempDir) -> String {
    let path = common::write(dir.path(), "policy.yaml", yaml);
    let mut compile = std::process::Command::new(env!("CARGO_BIN_EXE_egress-gateway"));
    compile.args(["policy", "compile", &path.display().to_string()]);
    egress_e2e::run(compile)
}

/// A client with the control plane's admin credentials.
async fn client(plane: &ControlPlane) -> Client {
    egress_runtime::kube_client(Some(&plane.kubeconfig))
        .await
        .expect("admin client")
}

/// A namespace with the ServiceAccount the test's pods run as.
async fn namespace(client: &Client, name: &str) {
    egress_e2e::objects::namespace(client, name, serde_json::json!({})).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    create(
        &accounts,
        serde_json::json!({"metadata": {"name": "web-sa"}}),
    )
    .await;
}

/// A pod at `ip`, as a kubelet would report it.
async fn pod(
    client: &Client,
    namespace: &str,
    name: &str,
    ip: &str,
    labels: serde_json::Value,
    host_network: bool,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    create(
        &pods,
        serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"serviceAccountName": "web-sa", "hostNetwork": host_network,
                     "containers": [{"name": "app", "image": "client:test"}]}
        }),
    )
    .await;
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await
    .expect("pod status");
}

/// The metadata of an object named `name`.
fn named(name: &str) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn secret(name: &str, cert: &str, key: &str, ca: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: named(name),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), bytes(cert)),
            ("tls.key".to_owned(), bytes(key)),
            ("ca.crt".to_owned(), bytes(ca)),
        ])),
        ..Secret::default()
    }
}

fn policy_map(json: &str) -> ConfigMap {
    ConfigMap {
        metadata: named("egress-policy"),
        data: Some(BTreeMap::from([(
            "policy.json".to_owned(),
            json.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// The EgressProxy `egress` of `namespace` the gateway serves (it is not
/// stored: no operator runs here; its objects are rendered below).
fn proxy(namespace: &str) -> EgressProxy {
    let spec = serde_saphyr::from_str(
        "configurationRef: {name: identity}\ntlsInterception: {enabled: true}\nlisteners: {httpsPort: 8443}",
    )
    .expect("spec");
    let mut proxy = EgressProxy::new("egress", namespace, spec);
    proxy.metadata.uid = Some(format!("uid-{namespace}"));
    proxy
}

/// What the operator renders for the gateway, by its own functions, applied
/// as the operator would: the policy and certificates, the gateway's
/// ServiceAccount and RBAC, and the namespaces it serves with a pod reader
/// binding in each (`served`; none at all with `None`).
async fn render(client: &Client, namespace: &str, pki: &Pki, json: &str, served: Option<&[&str]>) {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pem");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let chain = pki.intercept.chain.as_ref().expect("chain");
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "egress-intercept-ca",
                &read(&pki.intercept.cert),
                &read(&pki.intercept.key),
                &read(chain),
            ),
        )
        .await
        .expect("sub-CA secret");
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "egress-tls",
                &read(&pki.proxy_cert),
                &read(&pki.proxy_key),
                &read(&pki.intercept_root),
            ),
        )
        .await
        .expect("tls secret");
    let policy = egress_policy::CompiledPolicy::from_json(json).expect("compiled policy");
    let rendered =
        render::policy_config_maps(&proxy(namespace), &policy, PartSet::A).expect("rendered");
    apply_policy(client, namespace, &rendered.parts).await;
    apply_policy(client, namespace, &[rendered.policy]).await;
    let proxy = proxy(namespace);
    let post = PostParams::default();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&post, &render::service_account(&proxy))
        .await
        .expect("service account");
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&post, &render::role(&proxy))
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&post, &render::role_binding(&proxy))
        .await
        .expect("role binding");
    if let Some(served) = served {
        for client_namespace in served {
            bind_pod_reader(client, namespace, client_namespace).await;
        }
        let served: Vec<String> = served.iter().map(|s| (*s).to_owned()).collect();
        serve_namespaces(client, namespace, &served).await;
    }
}

/// Applies ConfigMaps the operator renders for the policy, in order.
async fn apply_policy(client: &Client, namespace: &str, config_maps: &[ConfigMap]) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for config_map in config_maps {
        api.patch(
            config_map.metadata.name.as_deref().expect("name"),
            &PatchParams::apply("test").force(),
            &Patch::Apply(config_map),
        )
        .await
        .expect("policy ConfigMap");
    }
}

/// The binding that lets the gateway of `namespace` read the pods of
/// `client_namespace`.
async fn bind_pod_reader(client: &Client, namespace: &str, client_namespace: &str) {
    egress_operator::ensure_pod_reader_role(client)
        .await
        .expect("pod reader role");
    Api::<RoleBinding>::namespaced(client.clone(), client_namespace)
        .create(
            &PostParams::default(),
            &render_clients::pod_reader_binding(&proxy(namespace), client_namespace),
        )
        .await
        .expect("pod reader binding");
}

/// The list of served namespaces the gateway of `namespace` follows.
async fn serve_namespaces(client: &Client, namespace: &str, served: &[String]) {
    let list = render_clients::served_namespaces(&proxy(namespace), served);
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            list.metadata.name.as_deref().expect("name"),
            &PatchParams::apply("test").force(),
            &Patch::Apply(&list),
        )
        .await
        .expect("served namespaces");
}

/// [`render`] with the identity [`policy`] (team-a only), compiled in a
/// directory it returns, serving `served`.
async fn render_identity_policy(
    client: &Client,
    namespace: &str,
    pki: &Pki,
    served: Option<&[&str]>,
) -> TempDir {
    let dir = TempDir::new(namespace);
    render(
        client,
        namespace,
        pki,
        &compiled(&policy(None), &dir),
        served,
    )
    .await;
    dir
}

/// The gateway as its pod runs it: the arguments the operator renders (its
/// listeners on loopback), acting as its ServiceAccount.
fn gateway_process(plane: &ControlPlane, pki: &Pki, namespace: &str) -> Gateway {
    let settings = render::Settings {
        gateway_image: "egress-gateway:test".to_owned(),
        image_pull_policy: "IfNotPresent".to_owned(),
        cluster_name: "e2e".to_owned(),
        cluster_domain: "cluster.local".to_owned(),
    };
    let deployment = render::deployment(&proxy(namespace), &settings, None);
    let pod = deployment.spec.template.spec.expect("pod");
    let mut args = pod.containers[0].args.clone().expect("args");
    for (flag, value) in [
        ("--http-listen", "127.0.0.1:0"),
        ("--https-listen", "127.0.0.1:0"),
        ("--admin-listen", "127.0.0.1:0"),
        ("--shutdown-delay", "0s"),
    ] {
        let at = args.iter().position(|a| a == flag).expect("rendered flag");
        args[at + 1] = value.to_owned();
    }
    let account = pod.service_account_name.expect("service account");
    let kubeconfig = plane
        .kubeconfig_as_service_account(namespace, &account, &plane.dir)
        .expect("kubeconfig");
    args.extend([
        "--namespace".into(),
        namespace.to_owned(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--upstream-ca".into(),
        pki.upstream_root.display().to_string(),
        "--resolve".into(),
        format!("{HOST}:*:127.0.0.1"),
    ]);
    Gateway::spawn(&args)
}

fn start_gateway(plane: &ControlPlane, pki: &Pki, namespace: &str) -> Gateway {
    let gateway = gateway_process(plane, pki, namespace);
    eventually(Duration::from_secs(20), || {
        (gateway.admin_get("/readyz").0 == 200).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "gateway not ready: {:?}\n{}",
            gateway.admin_get("/readyz"),
            gateway.diagnostics().join("\n")
        )
    });
    gateway
}

/// curl from `source` (a loopback address standing for a pod) through the proxy.
fn request_from(gateway: &Gateway, pki: &Pki, source: &str, url: &str) -> common::clients::Curl {
    let roots = pki.both_roots.display().to_string();
    curl(&[
        "--interface",
        source,
        "--proxy",
        &gateway.http_proxy(),
        "--cacert",
        &roots,
        url,
    ])
}

/// Runs `test` with the test PKI and an HTTPS upstream for HOST.
fn with_upstream<F: std::future::Future<Output = ()>>(test: impl FnOnce(Pki, Upstream) -> F) {
    let pki = Pki::new();
    let (cert, key) = pki.server_cert(&[HOST]);
    let upstream = Upstream::https(&cert, &key);
    on_runtime(test(pki, upstream));
}

/// Runs `test` with the test PKI, an HTTPS upstream for HOST, the control
/// plane the tests share and an admin client of it.
fn on_shared_plane<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(Pki, Upstream, &'static ControlPlane, Client) -> F,
) {
    with_upstream(|pki, upstream| async move {
        let plane = ControlPlane::shared();
        let client = client(plane).await;
        test(pki, upstream, plane, client).await;
    });
}

/// Runs `body` on a runtime of its own: the test upstreams start runtimes
/// of theirs, which cannot happen inside one.
fn on_runtime(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(body);
}

#[test]
fn policy_certificates_and_pod_identity_come_from_the_api() {
    on_shared_plane(api_source_test);
}

async fn api_source_test(
    pki: Pki,
    upstream: Upstream,
    plane: &'static ControlPlane,
    client: Client,
) {
    for ns in ["gw-api", "team-a", "team-b", "team-c"] {
        namespace(&client, ns).await;
    }
    let dir = render_identity_policy(&client, "gw-api", &pki, Some(&["team-a", "team-b"])).await;
    let url = format!("https://{HOST}:{}/", upstream.addr.port());
    // The pods, with `app: web` all: web-c in a namespace the proxy does not
    // serve (the gateway may not read its pods, so it does not know them),
    // node-agent on the host's network.
    for (namespace, name, ip, host_network) in [
        ("team-a", "web-a", "127.0.0.2", false),
        ("team-b", "web-b", "127.0.0.3", false),
        ("team-a", "node-agent", "127.0.0.4", true),
        ("team-c", "web-c", "127.0.0.5", false),
    ] {
        let labels = serde_json::json!({"app": "web"});
        pod(&client, namespace, name, ip, labels, host_network).await;
    }
    // What the gateway's ServiceAccount may read: pods where it serves.
    let may_list_pods = |scope: &[&str]| {
        let mut can_i = plane.kubectl();
        can_i
            .args(["auth", "can-i", "list", "pods", "--as"])
            .arg("system:serviceaccount:gw-api:egress")
            .args(scope);
        let output = can_i.output().expect("kubectl runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(may_list_pods(&["-n", "team-a"]), "yes");
    assert_eq!(may_list_pods(&["-n", "team-c"]), "no");
    assert_eq!(may_list_pods(&["--all-namespaces"]), "no");
    let gateway = start_gateway(plane, &pki, "gw-api");
    let (_, ready) = gateway.admin_get("/readyz");
    assert!(
        ready.contains("\"kind\":\"kubernetes\"") && ready.contains("\"connected\":true"),
        "{ready}"
    );

    // The team-a web pod goes out, intercepted with the sub-CA from the Secret.
    let allowed = request_from(&gateway, &pki, "127.0.0.2", &url);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let line = gateway.decision(|d| d["client_src_ip"] == "127.0.0.2");
    assert_eq!(line["final_rule_name"], "allow-web-pods", "{line}");
    assert_eq!(line["src_namespace"], "team-a");
    assert_eq!(line["src_pod"], "web-a");
    assert_eq!(line["src_service_account"], "web-sa");
    assert_eq!(line["src_vpc"], "e2e");
    // The team-b pod and a host-network pod (not indexed) are refused.
    for (source, namespace) in [
        ("127.0.0.3", serde_json::json!("team-b")),
        ("127.0.0.4", serde_json::Value::Null),
        ("127.0.0.5", serde_json::Value::Null),
    ] {
        let refused = request_from(&gateway, &pki, source, &url);
        assert!(
            refused
                .stderr
                .contains("CONNECT tunnel failed, response 403"),
            "{source}: {refused:?}"
        );
        let line = gateway.decision(|d| d["client_src_ip"] == source);
        assert_eq!(line["final_rule_name"], "default", "{line}");
        assert_eq!(line["src_namespace"], namespace, "{line}");
    }
    // The HTTPS listener presents the certificate from its Secret.
    let roots = pki.both_roots.display().to_string();
    let over_tls = curl(&[
        "--interface",
        "127.0.0.2",
        "--proxy",
        &gateway.https_proxy(),
        "--proxy-cacert",
        &pki.intercept_root.display().to_string(),
        "--cacert",
        &roots,
        &url,
    ]);
    assert_eq!(over_tls.status, 200, "{over_tls:?}");

    // A new version through the API is enforced by the next request.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "gw-api");
    let changed = Instant::now();
    config_maps
        .replace(
            "egress-policy",
            &PostParams::default(),
            &policy_map(&compiled(&policy(Some("team-b")), &dir)),
        )
        .await
        .expect("replace");
    eventually(Duration::from_secs(10), || {
        (request_from(&gateway, &pki, "127.0.0.3", &url).status == 200).then_some(())
    })
    .expect("team-b allowed by the new policy");
    let took = changed.elapsed();
    println!("ConfigMap changed through the API -> new decision at the gateway: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A broken version is refused; the last good one keeps serving.
    let hash = |g: &Gateway| g.admin_get("/readyz").1;
    let before = hash(&gateway);
    let failures = gateway.metric("egress_policy_reload_failures_total");
    config_maps
        .replace(
            "egress-policy",
            &PostParams::default(),
            &policy_map("{\"formatVersion\": 1, \"hash\": \"x\"}"),
        )
        .await
        .expect("replace");
    gateway.wait_metric("egress_policy_reload_failures_total", failures + 1.0);
    gateway.diagnostic(&["policy rejected", "ConfigMap gw-api/egress-policy"]);
    assert_eq!(request_from(&gateway, &pki, "127.0.0.3", &url).status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&hash(&gateway)).expect("json")["policy"]["hash"],
        serde_json::from_str::<serde_json::Value>(&before).expect("json")["policy"]["hash"]
    );

    // A namespace no longer served takes its pods' identities with it.
    serve_namespaces(&client, "gw-api", &["team-a".to_owned()]).await;
    eventually(Duration::from_secs(10), || {
        let seen = gateway.decisions().len();
        let refused = request_from(&gateway, &pki, "127.0.0.3", &url);
        let line = gateway.decision_after(seen, |d| d["client_src_ip"] == "127.0.0.3");
        (refused.stderr.contains("response 403") && line["src_namespace"].is_null()).then_some(())
    })
    .expect("team-b's pods unknown once it is not served");

    // A pod that goes away takes its identity with it.
    Api::<Pod>::namespaced(client.clone(), "team-a")
        .delete("web-a", &Default::default())
        .await
        .expect("delete pod");
    eventually(Duration::from_secs(10), || {
        request_from(&gateway, &pki, "127.0.0.2", &url)
            .stderr
            .contains("response 403")
            .then_some(())
    })
    .expect("the deleted pod's address has no identity any more");
}

/// A policy denying `listed` and `count` more domains of a ProxyList, and
/// allowing the rest.
fn listed_policy(listed: &str, count: usize) -> egress_policy::CompiledPolicy {
    let entries: Vec<String> = (0..count)
        .map(|n| {
            format!(
                "h{:x}.{listed}",
                (n as u64).wrapping_mul(2_654_435_761) % 1_000_000_007
            )
        })
        .chain([listed.to_owned()])
        .collect();
    let yaml = format!(
        "apiVersion: egress.dev/v1alpha1\nkind: ProxyList\nmetadata: {{name: listed}}\nspec: {{type: Domains, entries: [{}]}}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: listed}}\nspec:\n  rules:\n    preDNS: [{{name: listed, action: Deny, conditions: [{{key: \"request:DestinationDomain\", operator: StringEquals, valuesFrom: [{{list: listed}}]}}]}}]\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {{name: identity}}\nspec: {{ruleGroups: [{{name: listed}}], defaultActions: {{preDNS: Allow, preRequest: Allow, postResponse: Allow}}}}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {{name: egress}}\nspec: {{configurationRef: {{name: identity}}, tlsInterception: {{enabled: true}}, destinations: {{allowPrivateCIDRs: [\"127.0.0.1/32\"]}}}}\n",
        entries.join(", ")
    );
    egress_policy::compile_documents(&yaml, Some("egress")).expect("listed policy")
}

#[test]
fn a_policy_in_parts_is_installed_whole_or_not_at_all() {
    on_shared_plane(parts_test);
}

async fn parts_test(pki: Pki, upstream: Upstream, plane: &'static ControlPlane, client: Client) {
    let ns = "gw-parts";
    namespace(&client, ns).await;
    // 300,000 domains: some 8 MB of JSON, gzipped into several parts.
    let first = listed_policy("first.example", 300_000);
    render(&client, ns, &pki, &first.to_json(), Some(&[])).await;
    let gateway = start_gateway(plane, &pki, ns);
    let in_force = |gateway: &Gateway| {
        let (_, body) = gateway.admin_get("/readyz");
        let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
        ready["policy"]["hash"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // The version in force denies its listed name, by the list's rule.
    let denies_listed = |gateway: &Gateway, listed: &str| {
        let refused = request_from(gateway, &pki, "127.0.0.1", &format!("https://{listed}/"));
        assert!(
            refused.stderr.contains("response 403"),
            "{listed}: {refused:?}"
        );
        assert_eq!(
            gateway.decision(|d| d["dest_domain"] == listed)["final_rule_name"],
            "listed",
            "{listed}"
        );
    };
    assert_eq!(in_force(&gateway), first.hash());
    let url = format!("https://{HOST}:{}/", upstream.addr.port());
    assert_eq!(request_from(&gateway, &pki, "127.0.0.1", &url).status, 200);
    denies_listed(&gateway, "first.example");

    // The manifest of the next version (in the other set of names) before
    // its parts: refused once, the one in force kept, read again until the
    // parts are there.
    let second = listed_policy("second.example", 300_000);
    let rendered = render::policy_config_maps(&proxy(ns), &second, PartSet::B).expect("rendered");
    assert!(rendered.parts.len() >= 2, "{}", rendered.parts.len());
    let failures = gateway.metric("egress_policy_reload_failures_total");
    apply_policy(&client, ns, &[rendered.policy]).await;
    gateway.wait_metric("egress_policy_reload_failures_total", failures + 1.0);
    gateway.diagnostic(&[
        "policy rejected",
        "ConfigMap gw-parts/egress-policy",
        "ConfigMap egress-policy-part-b-1 is missing",
        "read again every 2s",
    ]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(in_force(&gateway), first.hash());
    assert_eq!(
        gateway.metric("egress_policy_reload_failures_total"),
        failures + 1.0,
        "reported once, not on every retry"
    );
    assert!(
        request_from(&gateway, &pki, "127.0.0.1", "https://first.example/")
            .stderr
            .contains("response 403")
    );
    apply_policy(&client, ns, &rendered.parts).await;
    eventually(Duration::from_secs(10), || {
        (in_force(&gateway) == second.hash()).then_some(())
    })
    .expect("the second version once its parts are written");
    denies_listed(&gateway, "second.example");

    // A part changed by hand never makes a policy: the one in force stays.
    let third = listed_policy("third.example", 300_000);
    let mut rendered =
        render::policy_config_maps(&proxy(ns), &third, PartSet::A).expect("rendered");
    let tampered = rendered.parts[0].binary_data.as_mut().expect("binaryData");
    let bytes = &mut tampered
        .get_mut(egress_policy::parts::PART_KEY)
        .expect("part")
        .0;
    bytes[100] ^= 1;
    apply_policy(&client, ns, &rendered.parts).await;
    apply_policy(&client, ns, &[rendered.policy]).await;
    gateway.wait_metric("egress_policy_reload_failures_total", failures + 2.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(in_force(&gateway), second.hash());
}

#[test]
fn losing_the_api_server_stops_nothing() {
    with_upstream(outage_test);
}

async fn outage_test(pki: Pki, upstream: Upstream) {
    // A control plane of its own, to stop it.
    let mut plane = ControlPlane::start().expect("control plane");
    let client = client(&plane).await;
    namespace(&client, "gw-outage").await;
    namespace(&client, "team-a").await;
    let _dir = render_identity_policy(&client, "gw-outage", &pki, Some(&["team-a"])).await;
    let url = format!("https://{HOST}:{}/", upstream.addr.port());
    pod(
        &client,
        "team-a",
        "web-a",
        "127.0.0.2",
        serde_json::json!({"app": "web"}),
        false,
    )
    .await;
    let gateway = start_gateway(&plane, &pki, "gw-outage");
    assert_eq!(request_from(&gateway, &pki, "127.0.0.2", &url).status, 200);
    assert_eq!(gateway.metric("egress_source_connected"), 1.0);

    plane.stop();
    gateway.wait_metric_below("egress_source_connected", 1.0);
    let (status, body) = gateway.admin_get("/readyz");
    assert_eq!(status, 200, "still ready: {body}");
    assert!(body.contains("\"connected\":false"), "{body}");
    let during = request_from(&gateway, &pki, "127.0.0.2", &url);
    assert_eq!(
        during.status, 200,
        "the last good policy and pod index keep serving: {during:?}"
    );
    let line = gateway.decision(|d| d["src_pod"] == "web-a" && d["http_status_code"] == 200);
    assert_eq!(line["src_namespace"], "team-a");
}

#[test]
fn a_gateway_that_cannot_read_pods_is_not_ready_until_it_can() {
    on_runtime(pod_index_test());
}

async fn pod_index_test() {
    let pki = Pki::new();
    let plane = ControlPlane::shared();
    let client = client(plane).await;
    let ns = "gw-no-reader";
    namespace(&client, ns).await;
    // Everything but the served namespaces and the pod reader binding:
    // identity rules would not know any client, so the gateway must not take
    // traffic.
    let _dir = render_identity_policy(&client, ns, &pki, None).await;
    let gateway = gateway_process(plane, &pki, ns);
    let reason = |gateway: &Gateway| {
        let (status, body) = gateway.admin_get("/readyz");
        (status == 503 && body.contains("pod index")).then_some(body)
    };
    eventually(Duration::from_secs(20), || reason(&gateway))
        .unwrap_or_else(|| panic!("{:?}", gateway.admin_get("/readyz")));
    std::thread::sleep(Duration::from_secs(2));
    assert!(reason(&gateway).is_some(), "still not ready");

    // The served namespaces without the binding: still not ready.
    namespace(&client, "gw-no-reader-clients").await;
    serve_namespaces(&client, ns, &["gw-no-reader-clients".to_owned()]).await;
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        reason(&gateway).is_some(),
        "still not ready without the binding"
    );

    // The binding the operator makes: ready once the watch retries.
    bind_pod_reader(&client, ns, "gw-no-reader-clients").await;
    eventually(Duration::from_secs(60), || {
        (gateway.admin_get("/readyz").0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("never ready: {:?}", gateway.admin_get("/readyz")));
}

const FIRST_KEY: &str = "sk-cluster-FIRST-0d8e41";
const SECOND_KEY: &str = "sk-cluster-SECOND-7c2a90";

fn key_secret(value: &str) -> Secret {
    Secret {
        metadata: named("llm-api-key"),
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The user guide's worked example, for HOST instead of its API's name.
fn llm_example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/cluster/llm-credential.yaml"
    ))
    .expect("example")
    .replace("api.llm.example", HOST)
    .replace("key: api-key", "key: token")
    .replace(
        "  credentials:",
        "  destinations:\n    allowPrivateCIDRs: [\"127.0.0.1/32\"]\n  credentials:",
    )
}

#[test]
fn a_credential_is_read_through_the_gateway_s_role_and_follows_its_secret() {
    on_shared_plane(credential_test);
}

async fn credential_test(
    pki: Pki,
    upstream: Upstream,
    plane: &'static ControlPlane,
    client: Client,
) {
    let ns = "gw-credential";
    for name in [ns, "agents", "others"] {
        namespace(&client, name).await;
    }
    let dir = TempDir::new(ns);
    let example = llm_example();
    let json = compiled(&example, &dir);
    render(&client, ns, &pki, &json, Some(&["agents", "others"])).await;
    pod(
        &client,
        "agents",
        "agent",
        "127.0.0.6",
        serde_json::json!({}),
        false,
    )
    .await;
    pod(
        &client,
        "others",
        "other",
        "127.0.0.7",
        serde_json::json!({}),
        false,
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .create(&PostParams::default(), &key_secret(FIRST_KEY))
        .await
        .expect("credential secret");
    let may_get = |secret: &str| {
        let output = plane
            .kubectl()
            .args([
                "auth",
                "can-i",
                "get",
                &format!("secrets/{secret}"),
                "-n",
                ns,
                "--as",
            ])
            .arg(format!("system:serviceaccount:{ns}:egress"))
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(may_get("llm-api-key"), "no", "not before the Role names it");

    let gateway = start_gateway(plane, &pki, ns);
    let echo = format!("https://{HOST}:{}/v1/echo", upstream.addr.port());
    let authorization = |source: &str| {
        let got = request_from(&gateway, &pki, source, &echo);
        let json: serde_json::Value = serde_json::from_str(&got.body).unwrap_or_default();
        (
            got.status,
            json["headers"]["authorization"].as_str().map(str::to_owned),
            got.body,
        )
    };
    // The Role the gateway runs with does not name the Secret yet: closed.
    let (status, _, body) = authorization("127.0.0.6");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("credential llm-key"), "{body}");

    // The Role the operator renders for a proxy with the credential.
    let with_credential = {
        let mut proxy = proxy(ns);
        let documents = egress_policy::parse_documents(&example).expect("documents");
        proxy.spec = documents.proxies[0].1.spec.clone();
        proxy
    };
    Api::<Role>::namespaced(client.clone(), ns)
        .replace(
            "egress",
            &PostParams::default(),
            &render::role(&with_credential),
        )
        .await
        .expect("role");
    assert_eq!(may_get("llm-api-key"), "yes");
    assert_eq!(may_get("another-secret"), "no");
    let bearer = |value: &str| Some(format!("Bearer {value}"));
    eventually(Duration::from_secs(60), || {
        (authorization("127.0.0.6").1 == bearer(FIRST_KEY)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "never added: {:?}\n{}",
            authorization("127.0.0.6"),
            gateway.diagnostics().join("\n")
        )
    });
    let line =
        gateway.decision(|d| d["client_src_ip"] == "127.0.0.6" && d["http_status_code"] == 200);
    assert_eq!(
        (&line["credential"], &line["src_namespace"]),
        (&serde_json::json!("llm-key"), &serde_json::json!("agents")),
        "{line}"
    );
    // Another path: nothing added; another namespace's pod: refused.
    let other_path = request_from(&gateway, &pki, "127.0.0.6", &echo.replace("/v1/", "/v2/"));
    assert!(!other_path.body.contains("authorization"), "{other_path:?}");
    let other = request_from(&gateway, &pki, "127.0.0.7", &echo);
    assert!(other.stderr.contains("response 403"), "{other:?}");

    // Rotated through the API: the next requests send the new value.
    let rotated = Instant::now();
    secrets
        .replace(
            "llm-api-key",
            &PostParams::default(),
            &key_secret(SECOND_KEY),
        )
        .await
        .expect("rotate");
    eventually(Duration::from_secs(10), || {
        (authorization("127.0.0.6").1 == bearer(SECOND_KEY)).then_some(())
    })
    .expect("the rotated value is sent");
    println!(
        "Secret rotated through the API -> new value sent: {:?}",
        rotated.elapsed()
    );

    // Deleted: closed, naming the credential; back when it is back.
    secrets
        .delete("llm-api-key", &Default::default())
        .await
        .expect("delete");
    let (_, _, body) = eventually(Duration::from_secs(10), || {
        let got = authorization("127.0.0.6");
        (got.0 == 502).then_some(got)
    })
    .expect("502 once the Secret is gone");
    assert!(body.contains("credential llm-key"), "{body}");
    secrets
        .create(&PostParams::default(), &key_secret(SECOND_KEY))
        .await
        .expect("recreate");
    eventually(Duration::from_secs(10), || {
        (authorization("127.0.0.6").1 == bearer(SECOND_KEY)).then_some(())
    })
    .expect("sent again");

    // The values are in neither the policy ConfigMap nor anything the
    // gateway wrote, nor the namespace's events.
    let policy_map = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("egress-policy")
        .await
        .expect("policy");
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("events");
    let mut places = gateway.written();
    places.push((
        "policy ConfigMap",
        serde_json::to_string(&policy_map).expect("json"),
    ));
    places.push((
        "events",
        serde_json::to_string(&events.items).expect("json"),
    ));
    assert_nowhere(&[FIRST_KEY, SECOND_KEY], &places);
    assert!(
        serde_json::to_string(&policy_map)
            .expect("json")
            .contains("llm-api-key"),
        "the ConfigMap names the Secret"
    );
}
