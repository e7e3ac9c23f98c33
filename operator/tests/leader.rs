//! Two operator replicas: one leads through a coordination.k8s.io Lease and
//! reconciles, the other waits; when the leader stops (gracefully, releasing
//! the lease, or killed, leaving it to expire) the other takes over.

mod common;

use std::time::{Duration, Instant};

use common::*;
use egress_e2e::ControlPlane;
use egress_operator::crd::ProxyRuleGroup;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

const GROUP: &str = "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata:\n  name: NAME\n  namespace: op-leader\nspec: {}\n";

async fn holder(client: &kube::Client) -> Option<String> {
    // The chart's Lease, in the release namespace.
    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    leases
        .get(&format!("{RELEASE}-operator"))
        .await
        .ok()?
        .spec?
        .holder_identity
}

async fn reconciled(client: &kube::Client, plane: &ControlPlane, name: &str) {
    let (ok, output) = kubectl_apply(plane, &GROUP.replace("NAME", name));
    assert!(ok, "{output}");
    let groups: Api<ProxyRuleGroup> = Api::namespaced(client.clone(), "op-leader");
    eventually(
        Duration::from_secs(40),
        &format!("group {name} to be reconciled"),
        || {
            let groups = groups.clone();
            async move { groups.get(name).await.ok()?.status.map(|_| ()) }
        },
    )
    .await;
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over() {
    let plane = ControlPlane::shared();
    install_crds(plane);
    let client = client(plane).await;
    namespace(&client, "op-leader").await;
    let lease = ["--lease-duration", "6", "--identity"];
    let mut first = Operator::start(plane, &[&lease[..], &["first"]].concat());
    eventually(
        Duration::from_secs(20),
        "the first replica to lead",
        || async { (holder(&client).await.as_deref() == Some("first")).then_some(()) },
    )
    .await;
    let second = Operator::start(plane, &[&lease[..], &["second"]].concat());
    reconciled(&client, plane, "while-first-leads").await;
    assert_eq!(first.metric("egress_operator_leader"), 1.0);
    assert_eq!(
        second.metric("egress_operator_leader"),
        0.0,
        "the follower does not reconcile"
    );
    assert!(second.logged(&["waiting to lead"]));
    assert!(!second.logged(&["caches ready"]));

    // A graceful stop releases the lease: the follower takes over at once,
    // without waiting for the lease to expire.
    first.terminate();
    assert!(
        first
            .wait(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{:?}",
        first.logs()
    );
    assert!(first.logged(&["lease released"]));
    let handed_over = Instant::now();
    eventually(
        Duration::from_secs(20),
        "the second replica to lead",
        || async { (holder(&client).await.as_deref() == Some("second")).then_some(()) },
    )
    .await;
    assert!(
        handed_over.elapsed() < Duration::from_secs(6),
        "took {:?}",
        handed_over.elapsed()
    );
    reconciled(&client, plane, "after-handover").await;

    // A killed leader leaves its lease to expire; the next replica takes it then.
    let third = Operator::start(plane, &[&lease[..], &["third"]].concat());
    drop(second);
    eventually(
        Duration::from_secs(30),
        "the third replica to lead",
        || async { (holder(&client).await.as_deref() == Some("third")).then_some(()) },
    )
    .await;
    reconciled(&client, plane, "after-kill").await;
    assert_eq!(third.metric("egress_operator_leader"), 1.0);
}
