//! The pod watches behind the identity index: one per namespace the proxy
//! serves, as its `<proxy>-namespaces` ConfigMap lists them. The gateway's
//! ServiceAccount may read pods there and nowhere else, so a gateway (or a
//! pod running as its ServiceAccount) learns nothing of other namespaces.
//!
//! A namespace added to the list gets a watch; one taken off has its watch
//! stopped and its pods dropped from the index by that watch itself, so no
//! late event of it can put them back. `/readyz` waits until every
//! namespace of the first list has been listed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::gateway::identity::PodView;

/// The namespaces of a `<proxy>-namespaces` ConfigMap's list (one per line;
/// blank lines and surrounding spaces ignored).
pub fn parse(list: &str) -> BTreeSet<String> {
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The running watches, by namespace.
pub struct PodWatches {
    gw: Arc<Gateway>,
    client: Client,
    running: HashMap<String, (CancellationToken, JoinHandle<()>)>,
    /// Namespaces of the first list not listed yet (`None`: no list yet).
    first_sync: Arc<Mutex<Option<BTreeSet<String>>>>,
}

impl std::fmt::Debug for PodWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWatches")
            .field("namespaces", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PodWatches {
    /// No watch until the first list arrives.
    pub fn new(gw: Arc<Gateway>, client: Client) -> PodWatches {
        gw.source.watches_pods();
        PodWatches {
            gw,
            client,
            running: HashMap::new(),
            first_sync: Arc::new(Mutex::new(None)),
        }
    }

    /// Watches exactly `namespaces` from now on.
    pub fn set(&mut self, namespaces: &BTreeSet<String>) {
        // What readiness waits for is known before any watch can report.
        {
            let mut pending = self.first_sync.lock().unwrap_or_else(|e| e.into_inner());
            match pending.as_mut() {
                None => *pending = Some(namespaces.clone()),
                Some(waiting) => waiting.retain(|ns| namespaces.contains(ns)),
            }
            synced_if_done(&self.gw, &pending);
        }
        // Those no longer listed stop (each takes its own pods out as it ends).
        for (namespace, (stop, _)) in &self.running {
            if !namespaces.contains(namespace) && !stop.is_cancelled() {
                stop.cancel();
                tracing::info!(%namespace, "no longer served: its pods leave the identity index");
            }
        }
        // Those newly listed start, after a stopping watch of the same
        // namespace has ended.
        for namespace in namespaces {
            if let Some((stop, _)) = self.running.get(namespace)
                && !stop.is_cancelled()
            {
                continue;
            }
            let stopping = self.running.remove(namespace).map(|(_, task)| task);
            let stop = self.gw.shutdown.child_token();
            let task = self.gw.tasks.spawn(watch(
                self.gw.clone(),
                Api::namespaced(self.client.clone(), namespace),
                namespace.clone(),
                stop.clone(),
                stopping,
                self.first_sync.clone(),
            ));
            self.running.insert(namespace.clone(), (stop, task));
        }
        self.running
            .retain(|_, (stop, task)| !(stop.is_cancelled() && task.is_finished()));
    }
}

/// Marks the index synced once no namespace of the first list is waiting.
fn synced_if_done(gw: &Gateway, pending: &Option<BTreeSet<String>>) {
    if pending.as_ref().is_some_and(BTreeSet::is_empty) && gw.source.pods_synced() {
        tracing::info!(addresses = gw.identities.len(), "pod index ready");
    }
}

/// Watches the pods of `namespace` into the index until `stop`, then takes
/// them out. A previous watch of the same namespace still `stopping` is
/// waited for first, so its clean-up cannot remove what this one adds.
async fn watch(
    gw: Arc<Gateway>,
    api: Api<Pod>,
    namespace: String,
    stop: CancellationToken,
    stopping: Option<JoinHandle<()>>,
    first_sync: Arc<Mutex<Option<BTreeSet<String>>>>,
) {
    if let Some(previous) = stopping {
        let _ = previous.await;
    }
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relisted: Vec<PodView> = Vec::new();
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            None => break,
            Some(Err(error)) if egress_runtime::watch_forbidden(&error) => {
                tracing::warn!(%namespace, %error, "may not read the pods there (yet): they are not known until the operator's binding is in place");
            }
            Some(Err(error)) => gw.source.failed(&gw.metrics, &error),
            Some(Ok(Event::Apply(pod))) => gw.identities.update(|index| index.apply(&view(&pod))),
            Some(Ok(Event::Delete(pod))) => gw
                .identities
                .update(|index| index.delete(&pod.uid().unwrap_or_default())),
            Some(Ok(Event::Init)) => relisted.clear(),
            Some(Ok(Event::InitApply(pod))) => relisted.push(view(&pod)),
            Some(Ok(Event::InitDone)) => {
                let pods = std::mem::take(&mut relisted);
                gw.identities
                    .update(|index| index.replace_namespace(&namespace, &pods));
                gw.source.ok(&gw.metrics);
                let mut pending = first_sync.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(waiting) = pending.as_mut() {
                    waiting.remove(&namespace);
                }
                synced_if_done(&gw, &pending);
            }
        }
    }
    gw.identities
        .update(|index| index.remove_namespace(&namespace));
}

/// What the identity index keeps of a pod.
fn view(pod: &Pod) -> PodView {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let ips = status
        .pod_ips
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.ip.parse().ok())
        .chain(status.pod_ip.and_then(|ip| ip.parse().ok()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    PodView {
        uid: pod.uid().unwrap_or_default(),
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        service_account: spec
            .service_account_name
            .unwrap_or_else(|| "default".to_owned()),
        labels: pod.labels().clone().into_iter().collect(),
        ips,
        host_network: spec.host_network.unwrap_or(false),
        finished: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_one_namespace_per_line() {
        assert_eq!(
            parse("team-a\n  team-b \n\nteam-a\n"),
            BTreeSet::from(["team-a".to_owned(), "team-b".to_owned()])
        );
        assert!(parse("").is_empty());
    }
}
