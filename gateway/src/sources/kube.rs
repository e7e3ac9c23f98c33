//! Policy, certificates and client identity from the Kubernetes API, for the
//! gateway in a cluster: watches on the proxy's own ConfigMap (and reads of
//! the parts it names, for a policy over 1 MiB) and Secrets (its
//! certificates', and those its credentials name: [`super::secrets`]), by
//! name (a kubelet refreshes a mounted ConfigMap only after a minute or
//! more; a watch sees a change at once), and on the pods of the namespaces
//! the proxy serves for the identity index ([`crate::sources::pods`]).
//!
//! Every new version goes through the same checks as the file source's: a
//! bad one is refused, logged and counted, and the last good one keeps
//! serving. Losing the API server stops nothing: the gateway serves what it
//! has, and reports the outage (`egress_source_connected` 0, and `/readyz`
//! detail) until the watches reconnect.

use std::sync::Arc;

use std::time::Duration;

use egress_policy::parts::{self, PartsError};
use egress_policy::{CompiledPolicy, objects};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::gateway::Gateway;
use crate::sources::pods::{self, PodWatches};
use crate::sources::secrets::SecretWatches;
use crate::tls::{Pem, ServingCert};

/// Where the gateway finds its objects.
#[derive(Clone, Debug)]
pub struct Target {
    /// The EgressProxy.
    pub proxy: String,
    /// Its namespace.
    pub namespace: String,
}

/// Starts the watches. `serving` is the HTTPS listener's certificate, when
/// there is one.
pub fn start(
    gw: &Arc<Gateway>,
    client: Client,
    target: &Target,
    serving: Option<Arc<ServingCert>>,
    pods: bool,
) {
    let ns = &target.namespace;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let config_maps_for_pods = config_maps.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let policy_name = objects::policy_config_map(&target.proxy);
    follow_policy(
        gw,
        config_maps,
        policy_name,
        SecretWatches::new(gw.clone(), client.clone(), ns),
    );
    let intercept_name = objects::intercept_ca_secret(&target.proxy);
    let origin = format!("Secret {ns}/{intercept_name}");
    let mut last = None;
    follow(gw, secrets.clone(), intercept_name, move |gw, secret| {
        let pem = pem_of(&secret, &origin);
        if last.as_ref() == Some(&(pem.cert.clone(), pem.key.clone())) {
            return;
        }
        match gw.intercept.install(&pem) {
            Ok(subject) => {
                tracing::info!(%subject, origin = %pem.origin, "interception sub-CA installed; leaves of the previous one dropped");
                last = Some((pem.cert, pem.key));
            }
            Err(error) => {
                gw.metrics.tls_reload_failures.inc();
                tracing::error!(%error, "interception sub-CA rejected; the previous one keeps serving");
            }
        }
    });
    if let Some(serving) = serving {
        let tls_name = objects::tls_secret(&target.proxy);
        let origin = format!("Secret {ns}/{tls_name}");
        follow(gw, secrets, tls_name, move |gw, secret| {
            match serving.install(&pem_of(&secret, &origin)) {
                Ok(()) => tracing::info!(%origin, "HTTPS listener certificate installed"),
                Err(error) => {
                    gw.metrics.tls_reload_failures.inc();
                    tracing::error!(%error, "HTTPS listener certificate rejected; the previous one keeps serving");
                }
            }
        });
    }
    if pods {
        let mut watches = PodWatches::new(gw.clone(), client);
        let list_name = objects::served_namespaces(&target.proxy);
        let origin = format!("ConfigMap {ns}/{list_name}");
        follow(gw, config_maps_for_pods, list_name, move |_, cm| {
            let list = cm
                .data
                .as_ref()
                .and_then(|d| d.get(objects::NAMESPACES_KEY))
                .cloned();
            match list {
                Some(list) => watches.set(&pods::parse(&list)),
                None => {
                    tracing::error!(%origin, key = objects::NAMESPACES_KEY, "no list of served namespaces; the pods watched stay as they are")
                }
            }
        });
    }
}

/// How soon a policy whose parts did not match its manifest is read again
/// (the operator writes the parts before the manifest, so a gateway that
/// read between the two sees the next version within moments).
const PARTS_RETRY: Duration = Duration::from_secs(2);

/// Follows the policy ConfigMap: its JSON, or the parts its manifest names
/// ([`egress_policy::parts`]), read and checked before anything is
/// installed. A version whose parts do not all match is reported once and
/// read again every [`PARTS_RETRY`] until they do or a newer one comes.
fn follow_policy(
    gw: &Arc<Gateway>,
    config_maps: Api<ConfigMap>,
    name: String,
    mut credential_secrets: SecretWatches,
) {
    let gw = gw.clone();
    gw.clone().tasks.spawn(async move {
        let mut events = watch(config_maps.clone(), &name);
        let mut waiting: Option<ConfigMap> = None;
        loop {
            // A retry of the version waiting for its parts, or a new one.
            let (next, retrying) = match waiting.take() {
                None => (next_version(&gw, &mut events).await, false),
                Some(version) => tokio::select! {
                    next = next_version(&gw, &mut events) => (next, false),
                    () = tokio::time::sleep(PARTS_RETRY) => (Some(version), true),
                },
            };
            let Some(cm) = next else { return };
            let in_force = gw.policy.current();
            let in_force = in_force.as_ref().map(|p| p.hash());
            let read = match read_policy(&config_maps, &cm, in_force).await {
                // A policy of a million domains takes seconds to read: off
                // the runtime's workers, which keep serving meanwhile.
                Read::Policy(json) => off_the_workers(move || {
                    CompiledPolicy::from_json(&json).map_err(|e| vec![e.to_string()])
                })
                .await
                .unwrap_or_else(|e| Err(vec![e])),
                Read::InForce => continue,
                Read::Missing(error) => Err(vec![error]),
                Read::PartsUnmatched(error) => {
                    waiting = Some(cm);
                    if retrying {
                        continue;
                    }
                    Err(vec![format!("{error}; read again every {PARTS_RETRY:?}")])
                }
            };
            let _ = gw.policy.install(read);
            credential_secrets.follow_policy();
        }
    });
}

/// What a version of the policy ConfigMap gives.
enum Read {
    /// The policy JSON.
    Policy(String),
    /// Parts of the policy already in force (the hash annotation says so):
    /// not read again.
    InForce,
    /// Neither JSON nor a manifest that can be read.
    Missing(String),
    /// Parts missing or of another version.
    PartsUnmatched(String),
}

/// Reads a version of the policy ConfigMap, and its parts when it names
/// some (not when its hash annotation says they are `in_force`).
async fn read_policy(api: &Api<ConfigMap>, cm: &ConfigMap, in_force: Option<&str>) -> Read {
    let data = cm.data.clone().unwrap_or_default();
    if let Some(json) = data.get(objects::POLICY_KEY) {
        return Read::Policy(json.clone());
    }
    let Some(manifest) = data.get(parts::MANIFEST_KEY) else {
        return Read::Missing(format!(
            "neither {} nor {} is in it",
            objects::POLICY_KEY,
            parts::MANIFEST_KEY
        ));
    };
    let manifest = match parts::Manifest::from_json(manifest) {
        Ok(manifest) => manifest,
        Err(error) => return Read::Missing(error.to_string()),
    };
    let annotated = cm.annotations().get(objects::POLICY_HASH_ANNOTATION);
    if annotated.is_some_and(|hash| Some(hash.as_str()) == in_force) {
        return Read::InForce;
    }
    let mut fetched = Vec::with_capacity(manifest.parts.len());
    for part in &manifest.parts {
        let bytes = match api.get_opt(&part.name).await {
            Ok(found) => found
                .and_then(|cm| cm.binary_data)
                .and_then(|mut d| d.remove(parts::PART_KEY))
                .map(|b| b.0),
            Err(error) => {
                return Read::PartsUnmatched(format!(
                    "ConfigMap {} could not be read: {error}",
                    part.name
                ));
            }
        };
        fetched.push(bytes);
    }
    let assembled = off_the_workers(move || manifest.assemble(fetched)).await;
    let Ok(assembled) = assembled else {
        return Read::Missing("the parts could not be unpacked".to_owned());
    };
    match assembled {
        Ok(json) => Read::Policy(json),
        Err(error @ (PartsError::Part { .. } | PartsError::Unpack(_))) => {
            Read::PartsUnmatched(error.to_string())
        }
        Err(error) => Read::Missing(error.to_string()),
    }
}

fn pem_of(secret: &Secret, origin: &str) -> Pem {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Pem {
        cert: text("tls.crt").unwrap_or_default(),
        key: text("tls.key").unwrap_or_default(),
        chain: text("ca.crt").filter(|c| !c.trim().is_empty()),
        origin: origin.to_owned(),
    }
}

/// Runs `work` on the blocking pool; Err when it panicked.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())
}

/// Watches the object `name` and hands every version of it to `install`.
fn follow<K>(
    gw: &Arc<Gateway>,
    api: Api<K>,
    name: String,
    mut install: impl FnMut(&Gateway, K) + Send + 'static,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let gw = gw.clone();
    gw.clone().tasks.spawn(async move {
        let mut events = watch(api, &name);
        while let Some(object) = next_version(&gw, &mut events).await {
            install(&gw, object);
        }
    });
}

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// The watch on the object `name`, by field selector (what RBAC by name allows).
fn watch<K>(api: Api<K>, name: &str) -> Events<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config).default_backoff().boxed()
}

/// The next version of the watched object; None once the gateway stops.
/// The source's health follows what the watch says; a deletion keeps what
/// is in force.
async fn next_version<K>(gw: &Gateway, events: &mut Events<K>) -> Option<K>
where
    K: Resource,
{
    loop {
        let event = tokio::select! {
            () = gw.shutdown.cancelled() => return None,
            event = events.next() => event,
        };
        match event? {
            Err(error) => gw.source.failed(&gw.metrics, &error),
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                gw.source.ok(&gw.metrics);
                return Some(object);
            }
            Ok(Event::Delete(object)) => {
                gw.source.ok(&gw.metrics);
                tracing::warn!(name = %object.name_any(), "deleted; the last good version keeps serving");
            }
            Ok(Event::Init | Event::InitDone) => gw.source.ok(&gw.metrics),
        }
    }
}
