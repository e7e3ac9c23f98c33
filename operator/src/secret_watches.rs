//! What wakes a proxy when its parent CA Secret or one of its own Secrets
//! changes: a metadata watch of Secrets in each namespace that holds a
//! proxy, and no cluster-wide one. The operator may read Secrets only where
//! it is let (the release namespace, the shared proxy namespaces, and the
//! namespaces whose owners bind its Secrets role there: docs/reference.md,
//! "Trust model"), so a namespace that has not opted in is retried with
//! backoff, logged once, and its proxies say in their status what to run.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::crd::EgressProxy;

/// Who the operator is, to tell a namespace's owner how to let it manage
/// Secrets there.
#[derive(Clone, Debug, Default)]
pub struct SecretsOptIn {
    /// The ClusterRole with the Secret permissions (the chart's
    /// `<release>-operator-secrets`).
    pub role: String,
    /// The operator's ServiceAccount, `namespace:name`.
    pub service_account: String,
}

impl SecretsOptIn {
    /// Said after the API server refused a Secret in `namespace`.
    pub fn advice(&self, namespace: &str) -> String {
        if self.role.is_empty() || self.service_account.is_empty() {
            return format!(
                "the operator may not manage Secrets in namespace {namespace:?}: bind its Secrets role there to its ServiceAccount (docs/reference.md, \"Trust model\")"
            );
        }
        format!(
            "the operator may not manage Secrets in namespace {namespace:?} until the namespace opts in: kubectl create rolebinding {role} --namespace {namespace} --clusterrole {role} --serviceaccount {}",
            self.service_account,
            role = self.role
        )
    }
}

/// How often the namespaces holding proxies are looked at again. A new
/// proxy is reconciled on its own event; its namespace's watch only brings
/// later changes, so starting it a moment after costs nothing.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Secrets (metadata only) as they change in the namespaces of `proxies`,
/// until `stop`.
pub fn secret_events(
    client: Client,
    proxies: Store<EgressProxy>,
    stop: CancellationToken,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(follow(client, proxies, sender, stop));
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        let secret = receiver.recv().await?;
        Some((Ok(secret), receiver))
    })
}

/// Keeps one watch running per namespace that holds a proxy.
async fn follow(
    client: Client,
    proxies: Store<EgressProxy>,
    sender: mpsc::Sender<PartialObjectMeta<Secret>>,
    stop: CancellationToken,
) {
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    while !sender.is_closed() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let wanted: BTreeSet<String> = proxies
            .state()
            .iter()
            .filter_map(|proxy| proxy.namespace())
            .collect();
        running.retain(|namespace, task| {
            let keep = wanted.contains(namespace);
            if !keep {
                task.abort();
            }
            keep
        });
        for namespace in wanted {
            running.entry(namespace.clone()).or_insert_with(|| {
                let api = Api::namespaced(client.clone(), &namespace);
                tokio::spawn(watch(api, namespace, sender.clone()))
            });
        }
    }
    for task in running.values() {
        task.abort();
    }
}

/// Forwards the Secrets of one namespace as they change.
async fn watch(
    api: Api<PartialObjectMeta<Secret>>,
    namespace: String,
    sender: mpsc::Sender<PartialObjectMeta<Secret>>,
) {
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .boxed();
    let mut refused = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(secret) => {
                if refused {
                    tracing::info!(%namespace, "Secrets may be read there now");
                    refused = false;
                }
                if sender.send(secret).await.is_err() {
                    return;
                }
            }
            Err(error) if egress_runtime::watch_forbidden(&error) => {
                if !refused {
                    tracing::warn!(%namespace, %error, "may not read Secrets there: its proxies cannot be served until the namespace opts in (their status says how)");
                    refused = true;
                }
            }
            Err(error) => tracing::warn!(%namespace, %error, "Secret watch failed; retrying"),
        }
    }
}
