//! The pods an `EgressProxy` serves: its trust bundle copied into each
//! served namespace, the NetworkPolicies of `spec.clients.enforce`, and
//! `status.clients` (the effective `NO_PROXY`, injected and escaped pods),
//! with an event and a metric when pods escape injection. Everything is
//! read from caches and applied only when it changed, since pod churn
//! triggers this often.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::crd::{ClientsStatus, EgressProxy};
use crate::error::Error;
use crate::inject;
use crate::metrics::ProxyLabels;
use crate::names::{
    BUNDLE_ALL, CLIENT_OF_LABEL, CLIENT_OF_NAMESPACE_LABEL, FIELD_MANAGER, Names, PROXY_ANNOTATION,
    RENDER_HASH_ANNOTATION,
};
use crate::render_clients::{self, TrustFiles};

/// Finalizer of what is rendered in client namespaces.
pub const FINALIZER: &str = "egress.dev/clients";
/// Field manager of `status.clients` (the proxy reconciler owns the rest).
const STATUS_MANAGER: &str = "egress-operator-clients";
/// Escaped pods named in the status.
const EXAMPLES: usize = 10;
/// How often all is checked again without a change.
const RECHECK: Duration = Duration::from_secs(300);

/// Reconciles what `proxy` renders for its clients, and its `status.clients`.
/// Its own finalizer removes those objects: reconciles of one proxy never
/// overlap, so none can write a copy after the clean-up.
pub async fn reconcile(proxy: Arc<EgressProxy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile("clients");
    let namespace = proxy
        .namespace()
        .ok_or(Error::Incomplete("proxy without namespace"))?;
    let api: Api<EgressProxy> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, proxy, |event| async {
        match event {
            Event::Apply(proxy) => apply(&proxy, &ctx).await,
            Event::Cleanup(proxy) => {
                remove_all(&ctx, &Names::of(&proxy)).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn apply(proxy: &EgressProxy, ctx: &Context) -> Result<Action, Error> {
    let names = Names::of(proxy);
    let cluster = &ctx.client_settings.cluster;
    let served: BTreeMap<String, ObjectMeta> = ctx
        .clients
        .namespaces
        .state()
        .iter()
        .map(|ns| (ns.name_any(), ns.metadata.clone()))
        .filter(|(name, meta)| inject::serves_namespace(proxy, name, meta, cluster))
        .collect();
    let no_proxy = inject::no_proxy(proxy, cluster);

    // Trust bundle copies.
    let mut copies = Vec::new();
    if inject::mounts_trust_bundle(proxy) {
        let source = ctx
            .clients
            .trust_bundles
            .get(&ObjectRef::new(&names.trust_bundle()).within(&names.namespace));
        // Until the proxy reconciler has written it, nothing to copy yet
        // (its creation triggers this again).
        if let Some(roots) = source.and_then(|s| s.data.as_ref()?.get(BUNDLE_ALL).cloned()) {
            let files = TrustFiles::new(&roots, &ctx.client_settings.system_roots)?;
            copies = served
                .keys()
                .map(|ns| render_clients::trust_bundle_copy(proxy, ns, &files))
                .collect();
        }
    }
    sync(&ctx.client, &ctx.clients.copies, &names, &copies).await?;

    // Bypass prevention.
    let mut policies = Vec::new();
    if proxy.spec.clients.enforce {
        policies = served
            .keys()
            .map(|ns| {
                render_clients::client_egress_policy(
                    proxy,
                    ns,
                    &no_proxy,
                    &ctx.client_settings.dns_selector,
                )
            })
            .collect();
        policies.push(render_clients::proxy_ingress_policy(
            proxy,
            &cluster.operator_namespace,
        ));
    }
    sync(
        &ctx.client,
        &ctx.clients.network_policies,
        &names,
        &policies,
    )
    .await?;

    // Which served pods carry the settings, and which escaped.
    let proxies = ctx.proxies.state();
    let qualified = names.qualified();
    let (mut injected, mut escaped) = (0, Vec::new());
    for pod in ctx.clients.pods.state() {
        let namespace = pod.namespace().unwrap_or_default();
        let Some(namespace_meta) = served.get(&namespace) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pod.annotations().get(PROXY_ANNOTATION) {
            Some(p) if *p == qualified => injected += 1,
            Some(_) => {} // another proxy's
            None => {
                let ours =
                    inject::decide(&pod.metadata, &namespace, namespace_meta, &proxies, cluster)
                        .is_ok_and(|choice| choice.names() == names);
                if ours {
                    escaped.push(format!("{namespace}/{}", pod.name_any()));
                }
            }
        }
    }
    escaped.sort();
    let status = clients_status(&served, &no_proxy, injected, &escaped);
    ctx.metrics
        .escaped_pods
        .get_or_create(&ProxyLabels {
            namespace: names.namespace.clone(),
            proxy: names.proxy.clone(),
        })
        .set(status.escaped_pods);
    let old = proxy.status.as_ref().and_then(|s| s.clients.clone());
    if old.as_ref() != Some(&status) {
        let before = old.map_or(0, |o| o.escaped_pods);
        if status.escaped_pods > before {
            ctx.event(proxy, true, "PodsEscapedInjection", status.message.clone())
                .await;
        }
        let api: Api<EgressProxy> = Api::namespaced(ctx.client.clone(), &names.namespace);
        let patch = serde_json::json!({
            "apiVersion": EgressProxy::api_version(&()),
            "kind": EgressProxy::kind(&()),
            "status": {"clients": status},
        });
        api.patch_status(
            &names.proxy,
            &PatchParams::apply(STATUS_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    Ok(Action::requeue(RECHECK))
}

/// `status.clients` from the counts.
fn clients_status(
    served: &BTreeMap<String, ObjectMeta>,
    no_proxy: &[String],
    injected: i64,
    escaped: &[String],
) -> ClientsStatus {
    let namespaces: Vec<String> = served.keys().cloned().collect();
    let message = if escaped.is_empty() {
        format!(
            "{injected} pod(s) in {} namespace(s) carry this proxy's settings",
            namespaces.len()
        )
    } else {
        format!(
            "{} pod(s) this proxy serves run without its settings ({}{}): they were created while the injection webhook was unreachable, or before their namespace was labelled egress.dev/injection=enabled. Check the webhook (the operator's logs, kubectl get mutatingwebhookconfigurations), then restart them",
            escaped.len(),
            escaped
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if escaped.len() > 3 { ", ..." } else { "" }
        )
    };
    ClientsStatus {
        no_proxy: no_proxy.join(","),
        namespaces,
        injected_pods: injected,
        escaped_pods: i64::try_from(escaped.len()).unwrap_or(i64::MAX),
        escaped: escaped.iter().take(EXAMPLES).cloned().collect(),
        message,
    }
}

/// Makes the objects of `kind` rendered for the proxy exactly `wanted`:
/// applies those whose hash differs from the cached one, deletes the rest.
async fn sync<K>(
    client: &Client,
    cache: &Store<PartialObjectMeta<K>>,
    names: &Names,
    wanted: &[K],
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut keep = BTreeSet::new();
    for object in wanted {
        let meta = object.meta();
        let (namespace, name) = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let hash = |m: &ObjectMeta| m.annotations.as_ref()?.get(RENDER_HASH_ANNOTATION).cloned();
        let current = cache
            .get(&ObjectRef::new(&name).within(&namespace))
            .and_then(|c| hash(&c.metadata));
        if current.is_none() || current != hash(meta) {
            let api: Api<K> = Api::namespaced(client.clone(), &namespace);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await?;
        }
        keep.insert((namespace, name));
    }
    for existing in cache.state() {
        let labels = existing.labels();
        let ours = labels.get(CLIENT_OF_LABEL) == Some(&names.proxy)
            && labels.get(CLIENT_OF_NAMESPACE_LABEL) == Some(&names.namespace);
        let key = (
            existing.namespace().unwrap_or_default(),
            existing.name_any(),
        );
        if ours && !keep.contains(&key) {
            delete::<K>(client, &key.0, &key.1).await?;
        }
    }
    Ok(())
}

async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes what the proxy rendered in client namespaces (no owner
/// reference can do it across namespaces).
async fn remove_all(ctx: &Context, names: &Names) -> Result<(), Error> {
    let selector = ListParams::default().labels(&format!(
        "{CLIENT_OF_LABEL}={},{CLIENT_OF_NAMESPACE_LABEL}={}",
        names.proxy, names.namespace
    ));
    let config_maps: Api<ConfigMap> = Api::all(ctx.client.clone());
    for object in config_maps.list_metadata(&selector).await? {
        let namespace = object.namespace().unwrap_or_default();
        delete::<ConfigMap>(&ctx.client, &namespace, &object.name_any()).await?;
    }
    let policies: Api<NetworkPolicy> = Api::all(ctx.client.clone());
    for object in policies.list_metadata(&selector).await? {
        let namespace = object.namespace().unwrap_or_default();
        delete::<NetworkPolicy>(&ctx.client, &namespace, &object.name_any()).await?;
    }
    ctx.metrics.escaped_pods.remove(&ProxyLabels {
        namespace: names.namespace.clone(),
        proxy: names.proxy.clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_says_what_escaped_and_what_to_do() {
        let served = BTreeMap::from([
            ("a".to_owned(), ObjectMeta::default()),
            ("b".to_owned(), ObjectMeta::default()),
        ]);
        let no_proxy = ["localhost".to_owned(), ".svc".to_owned()];
        let fine = clients_status(&served, &no_proxy, 4, &[]);
        assert_eq!(fine.no_proxy, "localhost,.svc");
        assert_eq!(fine.namespaces, ["a", "b"]);
        assert_eq!((fine.injected_pods, fine.escaped_pods), (4, 0));
        assert_eq!(
            fine.message,
            "4 pod(s) in 2 namespace(s) carry this proxy's settings"
        );
        let escaped: Vec<String> = (0..12).map(|n| format!("a/pod-{n:02}")).collect();
        let bad = clients_status(&served, &no_proxy, 1, &escaped);
        assert_eq!(bad.escaped_pods, 12);
        assert_eq!(bad.escaped.len(), EXAMPLES);
        assert!(bad.message.starts_with("12 pod(s) this proxy serves run without its settings (a/pod-00, a/pod-01, a/pod-02, ...)"), "{}", bad.message);
        assert!(bad.message.contains("restart them"));
    }
}
