//! Proof that the harness is a real control plane: custom resources with
//! schema, defaulting, CEL and watches; a mutating webhook called by the API
//! server; and helm against the live server.
//!
//! All tests share one control plane per test binary and keep to namespaces
//! of their own. Set `EGRESS_E2E_KUBECONFIG` to run them against a control
//! plane started with `cargo run -p egress-e2e -- up`.

use std::path::Path;
use std::time::Duration;

use egress_e2e::objects::namespace;
use egress_e2e::{ControlPlane, run};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

/// A client with the control plane's admin credentials.
async fn client(plane: &ControlPlane) -> Client {
    egress_runtime::kube_client(Some(&plane.kubeconfig))
        .await
        .expect("admin client")
}

#[tokio::test]
async fn the_server_reports_its_real_version() {
    let plane = ControlPlane::shared();
    let mut kubectl = plane.kubectl();
    kubectl.args(["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&run(kubectl)).expect("json");
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.37.2",
        "{version}"
    );
    assert_eq!(version["serverVersion"]["minor"], "37");
    assert_eq!(version["clientVersion"]["gitVersion"], "v1.37.2");
}

#[tokio::test]
async fn custom_resources_are_validated_defaulted_and_watched() {
    let plane = ControlPlane::shared();
    let client = client(plane).await;
    namespace(&client, "e2e-crd", serde_json::json!({})).await;

    let mut apply = plane.kubectl();
    apply
        .args(["apply", "-f"])
        .arg(Path::new(TESTDATA).join("widget-crd.yaml"));
    run(apply);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let crd = crds.get("widgets.e2e.egress.dev").await.expect("crd");
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(established.is_ok(), "the CRD never became Established");

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.egress.dev", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "e2e-crd", &resource);
    let widget = |name: &str, spec: serde_json::Value| {
        serde_json::from_value::<DynamicObject>(serde_json::json!({
            "apiVersion": "e2e.egress.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec
        }))
        .expect("widget")
    };

    // Schema enum, CEL rule and required fields are enforced by the server.
    for (spec, message) in [
        (
            serde_json::json!({"color": "purple"}),
            "Unsupported value: \"purple\"",
        ),
        (
            serde_json::json!({"color": "red", "size": 11}),
            "size must be at most 10",
        ),
        (serde_json::json!({"size": 2}), "spec.color: Required value"),
    ] {
        let err = widgets
            .create(&PostParams::default(), &widget("bad", spec))
            .await
            .expect_err("rejected");
        assert!(err.to_string().contains(message), "{err}");
    }

    // Defaulting fills in size; the object reads back.
    widgets
        .create(
            &PostParams::default(),
            &widget("w1", serde_json::json!({"color": "red"})),
        )
        .await
        .expect("created");
    let read = widgets.get("w1").await.expect("read back");
    assert_eq!(
        read.data["spec"]["size"], 3,
        "defaulted by the server: {:?}",
        read.data
    );
    let version = read
        .metadata
        .resource_version
        .clone()
        .expect("resource version");

    // A watch from that version sees the change.
    let mut events = widgets
        .watch(
            &WatchParams::default()
                .fields("metadata.name=w1")
                .timeout(20),
            &version,
        )
        .await
        .expect("watch")
        .boxed();
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"color": "blue"}})),
        )
        .await
        .expect("patched");
    let event = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event in time");
    match event {
        Some(Ok(WatchEvent::Modified(object))) => assert_eq!(object.data["spec"]["color"], "blue"),
        other => panic!("expected a Modified event, got {other:?}"),
    }
}

#[tokio::test]
async fn helm_lints_renders_and_dry_runs_against_the_server() {
    let plane = ControlPlane::shared();
    let client = client(plane).await;
    namespace(&client, "e2e-helm", serde_json::json!({})).await;
    let chart = Path::new(TESTDATA).join("charts/trivial");

    let mut lint = plane.helm();
    lint.arg("lint").arg(&chart);
    assert!(run(lint).contains("1 chart(s) linted, 0 chart(s) failed"));

    let mut template = plane.helm();
    template
        .args(["template", "demo"])
        .arg(&chart)
        .args(["--set", "message=rendered"]);
    let rendered = run(template);
    assert!(
        rendered.contains("kind: ConfigMap") && rendered.contains("message: \"rendered\""),
        "{rendered}"
    );
    assert!(rendered.contains("kind: Deployment"), "{rendered}");

    let mut install = plane.helm();
    install.args(["install", "demo"]).arg(&chart).args([
        "--namespace",
        "e2e-helm",
        "--dry-run=server",
    ]);
    let out = run(install);
    assert!(out.contains("STATUS: pending-install"), "{out}");
    assert!(
        out.contains("clusterCheck: \"kube-system\""),
        "lookup reached the live server: {out}"
    );
    assert!(
        rendered.contains("clusterCheck: \"not-looked-up\""),
        "{rendered}"
    );

    // kubeVersion is checked against the server's /version (v1.37.2, not the
    // client's built-in default).
    let dir = plane.dir.join("helm-too-new");
    std::fs::create_dir_all(dir.join("templates")).expect("dir");
    for file in [
        "values.yaml",
        "templates/configmap.yaml",
        "templates/deployment.yaml",
    ] {
        std::fs::copy(chart.join(file), dir.join(file)).expect("copy");
    }
    let chart_yaml = std::fs::read_to_string(chart.join("Chart.yaml")).expect("read");
    std::fs::write(
        dir.join("Chart.yaml"),
        chart_yaml.replace(">= 1.30.0-0", ">= 1.38.0-0"),
    )
    .expect("write");
    let mut too_new = plane.helm();
    too_new.args(["install", "demo"]).arg(&dir).args([
        "--namespace",
        "e2e-helm",
        "--dry-run=server",
    ]);
    let output = too_new.output().expect("helm runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("incompatible with Kubernetes v1.37.2"),
        "{stderr}"
    );
}

mod webhook {
    //! A mutating webhook served over HTTPS on 127.0.0.1 and called by the API
    //! server through `clientConfig.url`.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine as _;
    use bytes::Bytes;
    use egress_e2e::test_tls::{body_of, serve_https, test_server_tls};
    use http_body_util::Full;
    use rcgen::SanType;

    pub struct Server {
        pub addr: SocketAddr,
        pub ca_pem: String,
        pub calls: Arc<AtomicUsize>,
    }

    /// The patch: a label, and HTTPS_PROXY in the first container.
    fn review_response(review: &serde_json::Value) -> serde_json::Value {
        let patch = serde_json::json!([
            {"op": "add", "path": "/metadata/labels/e2e-mutated", "value": "yes"},
            {"op": "add", "path": "/spec/containers/0/env", "value": [{"name": "HTTPS_PROXY", "value": "http://egress.proxy:1080"}]},
        ]);
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": review["request"]["uid"],
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
            }
        })
    }

    pub async fn start() -> Server {
        let tls = test_server_tls("webhook CA", SanType::IpAddress([127, 0, 0, 1].into()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        tokio::spawn(serve_https(listener, tls.config, move |req| {
            let counter = counter.clone();
            async move {
                let body = body_of(req).await;
                let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = review_response(&review).to_string();
                let mut response = hyper::Response::new(Full::new(Bytes::from(reply)));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().expect("valid"));
                response
            }
        }));
        Server {
            addr,
            ca_pem: tls.ca_pem,
            calls,
        }
    }
}

#[tokio::test]
async fn a_mutating_webhook_on_loopback_patches_pods() {
    let plane = ControlPlane::shared();
    let client = client(plane).await;
    let server = webhook::start().await;
    namespace(
        &client,
        "e2e-webhook",
        serde_json::json!({"e2e-webhook": "enabled"}),
    )
    .await;

    use base64::Engine as _;
    let configuration = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "e2e-webhook"},
        "webhooks": [{
            "name": "pods.e2e.egress.dev",
            "clientConfig": {
                "url": format!("https://{}/mutate", server.addr),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&server.ca_pem),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"e2e-webhook": "enabled"}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        }]
    });
    let dir = plane.dir.join("webhook");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("webhook.json");
    std::fs::write(&file, configuration.to_string()).expect("write");
    let mut apply = plane.kubectl();
    apply.arg("apply").arg("-f").arg(&file);
    run(apply);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "e2e-webhook");
    // The API server starts calling a new webhook configuration within a moment.
    let mut patched = None;
    for attempt in 0..50 {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("app-{attempt}"), "labels": {"app": "demo"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
        }))
        .expect("pod");
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
        if created
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("e2e-mutated"))
            .is_some()
        {
            patched = Some(created);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let patched = patched.expect("the webhook's patch was never applied");
    let name = patched.metadata.name.clone().expect("name");
    let stored = pods.get(&name).await.expect("read back");
    let env = stored.spec.expect("spec").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "HTTPS_PROXY"
                && e.value.as_deref() == Some("http://egress.proxy:1080")),
        "{env:?}"
    );
    assert!(server.calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // Outside the selected namespaces the webhook is not called.
    namespace(&client, "e2e-no-webhook", serde_json::json!({})).await;
    let other: Api<Pod> = Api::namespaced(client.clone(), "e2e-no-webhook");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "plain", "labels": {"app": "demo"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    }))
    .expect("pod");
    let created = other
        .create(&PostParams::default(), &pod)
        .await
        .expect("created");
    assert!(
        !created
            .metadata
            .labels
            .expect("labels")
            .contains_key("e2e-mutated")
    );
}
