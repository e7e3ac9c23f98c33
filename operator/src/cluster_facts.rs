//! The cluster facts client settings depend on ([`Cluster`]), kept current
//! while the operator runs: the pod CIDRs, when not given on the command
//! line, follow the nodes' `spec.podCIDRs` as nodes join and leave, so a
//! node added after the start is in `NO_PROXY` and enforced clients' policies
//! like the first ones. The webhook and the clients reconciler read the
//! latest facts through a [`ClusterView`].

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::inject::Cluster;

/// The latest cluster facts (`borrow()` for a look, `changed()` to wait).
pub type ClusterView = watch::Receiver<Cluster>;

/// `cluster` as it is, for facts that never change (everything given on
/// the command line).
pub fn fixed(cluster: Cluster) -> ClusterView {
    let (sender, view) = watch::channel(cluster);
    // The view keeps its value once the sender is gone.
    drop(sender);
    view
}

/// `cluster`, its pod CIDRs then following the nodes' (a background watch;
/// the chart's RBAC lets the operator list and watch nodes).
pub fn follow_pod_cidrs(client: Client, cluster: Cluster) -> ClusterView {
    let (sender, view) = watch::channel(cluster);
    let (store, writer) = reflector::store();
    // Only the pod CIDRs are kept of each node.
    let events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(|node| {
            node.status = None;
            node.metadata.managed_fields = None;
            node.metadata.annotations = None;
            node.metadata.labels = None;
            node.spec = Some(NodeSpec {
                pod_cidrs: node.spec.take().and_then(|s| s.pod_cidrs),
                ..NodeSpec::default()
            });
        });
    let stream = reflector::reflector(writer, events);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The store holds the whole list from InitDone on.
                Ok(
                    watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_),
                ) => {
                    let cidrs = pod_cidrs(&store);
                    sender.send_if_modified(|cluster| {
                        if cluster.pod_cidrs == cidrs {
                            return false;
                        }
                        tracing::info!(before = ?cluster.pod_cidrs, now = ?cidrs, "pod CIDRs changed with the nodes");
                        cluster.pod_cidrs = cidrs;
                        true
                    });
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "node watch failed; retrying with backoff"),
            }
        }
    });
    view
}

/// The pod CIDRs of the nodes in `store`, sorted, each once.
fn pod_cidrs(store: &Store<Node>) -> Vec<String> {
    let nodes = store.state();
    cidrs_of(nodes.iter().map(|n| n.as_ref()))
}

/// The pod CIDRs of `nodes`, sorted, each once.
pub fn cidrs_of<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<String> {
    let mut cidrs: Vec<String> = nodes
        .filter_map(|n| n.spec.as_ref()?.pod_cidrs.clone())
        .flatten()
        .collect();
    cidrs.sort();
    cidrs.dedup();
    cidrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cidrs: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"podCIDRs": cidrs}
        }))
        .expect("node")
    }

    #[test]
    fn every_node_s_ranges_once_in_order() {
        let nodes = [
            node(&["10.244.1.0/24", "fd00:1::/64"]),
            node(&["10.244.0.0/24"]),
            node(&["10.244.1.0/24"]),
            node(&[]),
        ];
        assert_eq!(
            cidrs_of(nodes.iter()),
            ["10.244.0.0/24", "10.244.1.0/24", "fd00:1::/64"]
        );
    }

    #[test]
    fn fixed_facts_stay_readable() {
        let view = fixed(Cluster {
            pod_cidrs: vec!["10.0.0.0/8".to_owned()],
            ..Cluster::default()
        });
        assert_eq!(view.borrow().pod_cidrs, ["10.0.0.0/8"]);
    }
}
