//! Policy, certificates and client identity from the Kubernetes API, for the
//! gateway in a cluster: watches on the proxy's own ConfigMap and Secrets
//! (its certificates', and those its credentials name: [`super::secrets`]), by
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

use egress_policy::{CompiledPolicy, objects};
use futures_util::StreamExt;
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
    let origin = format!("ConfigMap {ns}/{policy_name}");
    let mut credential_secrets = SecretWatches::new(gw.clone(), client.clone(), ns);
    follow(gw, config_maps, policy_name, move |gw, cm| {
        let read = policy_of(&cm)
            .ok_or_else(|| vec![format!("{origin} has no {} key", objects::POLICY_KEY)]);
        let _ =
            gw.policy.install(read.and_then(|json| {
                CompiledPolicy::from_json(&json).map_err(|e| vec![e.to_string()])
            }));
        credential_secrets.follow_policy();
    });
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

fn policy_of(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref()?.get(objects::POLICY_KEY).cloned()
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
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    gw.clone().tasks.spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        loop {
            let event = tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Err(error)) => gw.source.failed(&gw.metrics, &error),
                Some(Ok(Event::Apply(object) | Event::InitApply(object))) => {
                    gw.source.ok(&gw.metrics);
                    install(&gw, object);
                }
                Some(Ok(Event::Delete(object))) => {
                    gw.source.ok(&gw.metrics);
                    tracing::warn!(name = %object.name_any(), "deleted; the last good version keeps serving");
                }
                Some(Ok(Event::Init | Event::InitDone)) => gw.source.ok(&gw.metrics),
            }
        }
    });
}
