//! The cluster's pod ranges followed while the operator runs: with the
//! chart's `cluster.podCIDRs` left empty, a node that joins after the start
//! is in every served pod's `NO_PROXY` and in enforced clients' policies,
//! and one that leaves is taken out. With `cluster.networkPolicyEnforcer`
//! left empty too, an enforcing proxy says when no enforcer's pods are seen.

mod common;

use std::time::Duration;

use common::*;
use egress_e2e::ControlPlane;
use egress_operator::crd::EgressProxy;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;

fn node(plane: &ControlPlane, name: &str, cidr: &str) {
    let (ok, output) = kubectl_apply(
        plane,
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDRs: [\"{cidr}\"]}}\n"
        ),
    );
    assert!(ok, "{output}");
}

#[tokio::test]
async fn pod_cidrs_follow_the_nodes() {
    let plane = ControlPlane::shared();
    install_crds(plane);
    let client = client(plane).await;
    node(plane, "node-a", "10.200.0.0/24");
    // The chart as installed without cluster.podCIDRs.
    let _operator = Operator::start_with_env(plane, &[("EGRESS_POD_CIDRS", "")]);

    let ns = "nodes-team";
    namespace(&client, ns).await;
    let mut label = plane.kubectl();
    label.args(["label", "namespace", ns, "egress.dev/injection=enabled"]);
    run(label);
    let yaml = seed_with_proxy("name: egress", "clients: {enforce: true}")
        .replace("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"));
    let (ok, output) = kubectl_apply(plane, &yaml);
    assert!(ok, "{output}");

    let proxies: Api<EgressProxy> = Api::namespaced(client.clone(), ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    // The pod ranges as the proxy's status and its client policy carry them.
    let ranges = || async {
        let no_proxy = proxies.get("egress").await.ok()?.status?.clients?.no_proxy;
        let policy = policies
            .get_opt("egress-clients.nodes-team.egress")
            .await
            .ok()??;
        let spec = serde_json::to_value(policy.spec).ok()?;
        let blocks: Vec<String> = spec["egress"][2]["to"]
            .as_array()?
            .iter()
            .filter_map(|peer| Some(peer["ipBlock"]["cidr"].as_str()?.to_owned()))
            .filter(|cidr| cidr.starts_with("10.200."))
            .collect();
        let listed: Vec<String> = no_proxy
            .split(',')
            .filter(|entry| entry.starts_with("10.200."))
            .map(str::to_owned)
            .collect();
        (listed == blocks).then_some(listed)
    };
    let wait_for = |wanted: &'static [&'static str]| {
        let ranges = &ranges;
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("pod ranges {wanted:?}"),
                || async { ranges().await.filter(|r| r == wanted) },
            )
            .await
        }
    };
    wait_for(&["10.200.0.0/24"]).await;
    let message = || async {
        let proxy = proxies.get("egress").await.ok()?;
        Some(proxy.status?.clients?.message)
    };
    let said = eventually(Duration::from_secs(30), "no enforcer said", || async {
        message()
            .await
            .filter(|m| m.contains("no NetworkPolicy enforcer was found"))
    })
    .await;
    assert!(said.contains("cluster.networkPolicyEnforcer"), "{said}");

    // A network plugin that enforces, as its pods show it.
    let (ok, output) = kubectl_apply(
        plane,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: kube-system}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: calico-node-x1, namespace: kube-system, labels: {k8s-app: calico-node}}\nspec: {automountServiceAccountToken: false, containers: [{name: calico-node, image: calico/node}]}\n",
    );
    assert!(ok, "{output}");

    node(plane, "node-b", "10.200.1.0/24");
    wait_for(&["10.200.0.0/24", "10.200.1.0/24"]).await;
    eventually(Duration::from_secs(30), "the enforcer seen", || async {
        message()
            .await
            .filter(|m| !m.contains("no NetworkPolicy enforcer"))
    })
    .await;
    let mut delete = plane.kubectl();
    delete.args(["delete", "node", "node-a"]);
    run(delete);
    wait_for(&["10.200.1.0/24"]).await;

    // Leave the plane as it was (it may be one attached for several runs).
    let mut clean = plane.kubectl();
    clean.args([
        "delete",
        "--ignore-not-found",
        "node/node-b",
        "-n",
        "kube-system",
        "pod/calico-node-x1",
    ]);
    run(clean);
    let mut clean = plane.kubectl();
    clean.args([
        "delete",
        "--ignore-not-found",
        "namespace",
        ns,
        "--wait=false",
    ]);
    run(clean);
}
