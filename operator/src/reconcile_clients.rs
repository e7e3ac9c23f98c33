//! The pods an `EgressProxy` serves: the namespaces its gateway may read
//! pods in (a RoleBinding in each, and their list for the gateway), its
//! trust bundle copied into each served namespace, the NetworkPolicies of
//! `spec.clients.enforce`, and
//! `status.clients` (the effective `NO_PROXY`, injected and escaped pods),
//! with an event and a metric when pods escape injection. Everything is
//! read from caches and applied only when it changed, since pod churn
//! triggers this often.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use crate::context::{Context, NamespacedKind};
use crate::crd::{ClientsStatus, EgressProxy};
use crate::error::Error;
use crate::inject;
use crate::metrics::ProxyLabels;
use crate::names::{
    BUNDLE_ALL, CLIENT_OF_LABEL, CLIENT_OF_NAMESPACE_LABEL, FIELD_MANAGER, Names, PROXY_ANNOTATION,
    RENDER_HASH_ANNOTATION, is_owned_by,
};
use crate::reconcile_proxy::{remove, remove_cluster_pod_reader};
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
    let api = ctx.proxies_api(&proxy)?;
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
    .map_err(Error::from)
}

/// A memo's lock. A reconcile that panicked holding it leaves nothing half
/// written that matters: every memo only spares work, so it is used anyway.
fn locked<T>(memo: &Mutex<T>) -> MutexGuard<'_, T> {
    memo.lock().unwrap_or_else(|e| e.into_inner())
}

async fn apply(proxy: &EgressProxy, ctx: &Context) -> Result<Action, Error> {
    let names = Names::of(proxy);
    let qualified = names.qualified();
    let cluster = &ctx.client_settings.cluster.borrow().clone();
    let namespaces = ctx.clients.namespaces.state();
    let served: BTreeMap<String, ObjectMeta> = namespaces
        .iter()
        .map(|ns| (ns.name_any(), ns.metadata.clone()))
        .filter(|(name, meta)| inject::serves_namespace(proxy, name, meta, cluster))
        .collect();
    let no_proxy = inject::no_proxy(proxy, cluster);
    let proxies = ctx.proxies.state();
    // Now and then everything is applied again, whatever the hashes say.
    let force = {
        let mut last = locked(&ctx.clients.memo.full_apply);
        let due = last
            .get(&qualified)
            .is_none_or(|at| at.elapsed() >= RECHECK);
        if due {
            last.insert(qualified.clone(), Instant::now());
        }
        due
    };
    let mut problems = Vec::new();

    // Client identity: the gateway may read pods where it serves, and learns
    // where that is: the namespaces whose binding is in place (bindings
    // first, so it is allowed by the time it looks; one that cannot be
    // applied, such as a tenant's object of that name, leaves only its own
    // namespace out).
    let bindings: Vec<RoleBinding> = served
        .keys()
        .map(|ns| render_clients::pod_reader_binding(proxy, ns))
        .collect();
    let failed = sync(
        ctx,
        &ctx.clients.role_bindings,
        &names,
        Some(&bindings),
        force,
    )
    .await;
    if !failed.is_empty() {
        problems.push(format!("pod reading: RoleBindings: {}", said(&failed)));
    }
    let readable: Vec<String> = served
        .keys()
        .filter(|ns| !failed.iter().any(|(failed_ns, _)| failed_ns == *ns))
        .cloned()
        .collect();
    let list = render_clients::served_namespaces(proxy, &readable);
    match apply_served_namespaces(ctx, proxy, &list, force).await {
        // Only now may the cluster-wide binding of earlier versions go.
        Ok(()) => remove_cluster_pod_reader_once(ctx, &names).await,
        Err(error) => problems.push(format!("pod reading: {error}")),
    }

    // Trust bundle copies; while the source is missing (not written yet, or
    // being replaced) the copies there are kept.
    let copies = if !inject::mounts_trust_bundle(proxy) {
        Some(Vec::new())
    } else {
        trust_files(proxy, ctx)?.map(|files| {
            served
                .keys()
                .map(|ns| render_clients::trust_bundle_copy(proxy, ns, &files))
                .collect::<Vec<ConfigMap>>()
        })
    };
    if let Some(copies) = copies {
        let failed = sync(ctx, &ctx.clients.copies, &names, Some(&copies), force).await;
        if !failed.is_empty() {
            problems.push(format!("trust bundle copies: {}", said(&failed)));
        }
    }

    // Bypass prevention.
    let policies = proxy.spec.clients.enforce.then(|| {
        let mut policies: Vec<NetworkPolicy> = served
            .iter()
            .map(|(ns, meta)| {
                let serving: Vec<Names> = proxies
                    .iter()
                    .filter(|p| inject::serves_namespace(p, ns, meta, cluster))
                    .map(|p| Names::of(p))
                    .collect();
                render_clients::client_egress_policy(
                    proxy,
                    ns,
                    &serving,
                    &no_proxy,
                    &ctx.client_settings.dns_selector,
                )
            })
            .collect();
        let served_names: Vec<String> = served.keys().cloned().collect();
        policies.push(render_clients::proxy_ingress_policy(proxy, &served_names));
        policies
    });
    let failed = sync(
        ctx,
        &ctx.clients.network_policies,
        &names,
        policies.as_deref(),
        force,
    )
    .await;
    if !failed.is_empty() {
        problems.push(format!("NetworkPolicies: {}", said(&failed)));
    }
    if proxy.spec.clients.enforce {
        let confined: Vec<String> = proxies
            .iter()
            .map(|p| Names::of(p))
            .filter(|other| {
                other.namespace != names.namespace && served.contains_key(&other.namespace)
            })
            .map(|other| other.qualified())
            .collect();
        if !confined.is_empty() {
            problems.push(format!(
                "enforce confines the gateway pods of {} like every other pod of their namespace (a label cannot exempt them outside this proxy's own namespace): they reach only what their namespace's pods may; pin those namespaces to this proxy (annotation {PROXY_ANNOTATION}) so no pod is pointed at them",
                confined.join(", ")
            ));
        }
    }
    if proxy.spec.clients.enforce && ctx.client_settings.network_policy_enforcer.is_none() {
        let pods = ctx.clients.pods.state();
        let seen = pods.iter().map(|p| {
            let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
            (namespace, p.labels())
        });
        if render_clients::known_enforcer(seen).is_none() {
            problems.push(render_clients::NO_ENFORCER.to_owned());
        }
    }
    if proxy.spec.clients.enforce && cluster.pod_cidrs.is_empty() {
        problems.push("enforce is on but the pod CIDRs are unknown: served pods cannot reach other pods directly; set --pod-cidr (the chart's cluster.podCIDRs)".to_owned());
    }
    let unusable = inject::unusable_no_proxy(proxy);
    if !unusable.is_empty() {
        problems.push(format!("noProxy entries left out: {}", unusable.join(", ")));
    }

    // Which served pods carry the settings, and which escaped.
    let (mut injected, mut escaped) = (0, Vec::new());
    for pod in ctx.clients.pods.state() {
        let namespace = pod.namespace().unwrap_or_default();
        let Some(namespace_meta) = served.get(&namespace) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // The annotation says whose a pod is only when its containers show
        // the injection; otherwise whose it should be is decided again.
        let carries = inject::carries_settings(&pod);
        match pod.annotations().get(PROXY_ANNOTATION) {
            Some(p) if carries && *p == qualified => injected += 1,
            Some(_) if carries => {} // another proxy's
            _ => {
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
    let status = clients_status(&served, &no_proxy, injected, &escaped, &problems);
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
    if problems.iter().any(|p| {
        p.starts_with("trust") || p.starts_with("NetworkPolicies") || p.starts_with("pod reading")
    }) {
        // Reported in status; retried with backoff.
        return Err(Error::Clients(problems.join("; ")));
    }
    Ok(Action::requeue(RECHECK))
}

/// The trust files for `proxy`'s current roots (built once per change of
/// them); `None` while its `<proxy>-trust-bundle` is not there.
fn trust_files(proxy: &EgressProxy, ctx: &Context) -> Result<Option<Arc<TrustFiles>>, Error> {
    let names = Names::of(proxy);
    let source = ctx
        .clients
        .trust_bundles
        .get(&ObjectRef::new(&names.trust_bundle()).within(&names.namespace));
    let Some(roots) = source.and_then(|s| s.data.as_ref()?.get(BUNDLE_ALL).cloned()) else {
        return Ok(None);
    };
    let mut memo = locked(&ctx.clients.memo.trust_files);
    if let Some((built_from, files)) = memo.get(&names.qualified())
        && *built_from == roots
    {
        return Ok(Some(files.clone()));
    }
    let files = Arc::new(TrustFiles::new(&roots, &ctx.client_settings.system_roots)?);
    memo.insert(names.qualified(), (roots, files.clone()));
    Ok(Some(files))
}

/// `status.clients` from the counts and what went wrong.
fn clients_status(
    served: &BTreeMap<String, ObjectMeta>,
    no_proxy: &[String],
    injected: i64,
    escaped: &[String],
    problems: &[String],
) -> ClientsStatus {
    let namespaces: Vec<String> = served.keys().cloned().collect();
    let mut message = if escaped.is_empty() {
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
    for problem in problems {
        message.push_str(". ");
        message.push_str(problem);
    }
    ClientsStatus {
        no_proxy: no_proxy.join(","),
        namespaces,
        injected_pods: injected,
        escaped_pods: i64::try_from(escaped.len()).unwrap_or(i64::MAX),
        escaped: escaped.iter().take(EXAMPLES).cloned().collect(),
        message,
    }
}

/// Makes the objects of one kind rendered for the proxy exactly `wanted`
/// (`None`: none): applies those whose hash differs from the cached one (or
/// all of them with `force`), deletes the rest. Each object on its own: what
/// could not be applied or deleted is returned (namespace, what the API
/// server said), and the rest is done.
async fn sync<K>(
    ctx: &Context,
    cache: &Store<PartialObjectMeta<K>>,
    names: &Names,
    wanted: Option<&[K]>,
    force: bool,
) -> Vec<(String, String)>
where
    K: NamespacedKind,
{
    let mut keep = BTreeSet::new();
    let mut failed = Vec::new();
    for object in wanted.unwrap_or_default() {
        let meta = object.meta();
        let (namespace, name) = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let hash = |m: &ObjectMeta| m.annotations.as_ref()?.get(RENDER_HASH_ANNOTATION).cloned();
        let current = cache
            .get(&ObjectRef::new(&name).within(&namespace))
            .and_then(|c| hash(&c.metadata));
        if force || current.is_none() || current != hash(meta) {
            let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(object),
                )
                .await;
            if let Err(error) = applied {
                failed.push((
                    namespace.clone(),
                    format!("{} {name}: {error}", K::kind(&())),
                ));
            }
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
        if ours
            && !keep.contains(&key)
            && let Err(error) = remove::<K>(ctx, &key.0, &key.1).await
        {
            failed.push((
                key.0.clone(),
                format!("{} {} (removal): {error}", K::kind(&()), key.1),
            ));
        }
    }
    failed
}

/// The failures of [`sync`] in a sentence.
fn said(failed: &[(String, String)]) -> String {
    let all: Vec<&str> = failed.iter().map(|(_, error)| error.as_str()).collect();
    format!(
        "in namespace{} {}",
        if all.len() == 1 { "" } else { "s" },
        all.join("; ")
    )
}

/// Removes the cluster-wide pod reader binding an earlier version made for
/// the proxy, once per operator process (gateways read pods through the
/// per-namespace bindings by then).
async fn remove_cluster_pod_reader_once(ctx: &Context, names: &Names) {
    let first = locked(&ctx.clients.memo.legacy_removed).insert(names.qualified());
    if first && let Err(error) = remove_cluster_pod_reader(ctx, names).await {
        tracing::warn!(%error, proxy = %names.qualified(), "the cluster-wide pod reader binding of an earlier version could not be removed; retried after a restart");
    }
}

/// Applies `<proxy>-namespaces` when it changed since it was last applied
/// (or with `force`), unless an object of that name is someone else's.
async fn apply_served_namespaces(
    ctx: &Context,
    proxy: &EgressProxy,
    list: &ConfigMap,
    force: bool,
) -> Result<(), Error> {
    let names = Names::of(proxy);
    let hash = list
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RENDER_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let key = names.qualified();
    let applied = {
        let memo = locked(&ctx.clients.memo.served_namespaces);
        memo.get(&key).cloned()
    };
    if !force && applied.as_deref() == Some(hash.as_str()) {
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let name = names.served_namespaces();
    if let Some(existing) = api.get_metadata_opt(&name).await?
        && !is_owned_by(&existing.metadata, proxy)
    {
        return Err(Error::Clients(format!(
            "ConfigMap {name} exists and is not this proxy's: it is left alone, and the gateway reads no pods (NameTaken); rename the proxy"
        )));
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(list),
    )
    .await?;
    locked(&ctx.clients.memo.served_namespaces).insert(key, hash);
    Ok(())
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
        remove::<ConfigMap>(ctx, &namespace, &object.name_any()).await?;
    }
    let policies: Api<NetworkPolicy> = Api::all(ctx.client.clone());
    for object in policies.list_metadata(&selector).await? {
        let namespace = object.namespace().unwrap_or_default();
        remove::<NetworkPolicy>(ctx, &namespace, &object.name_any()).await?;
    }
    let bindings: Api<RoleBinding> = Api::all(ctx.client.clone());
    for object in bindings.list_metadata(&selector).await? {
        let namespace = object.namespace().unwrap_or_default();
        remove::<RoleBinding>(ctx, &namespace, &object.name_any()).await?;
    }
    locked(&ctx.clients.memo.served_namespaces).remove(&names.qualified());
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
        let fine = clients_status(&served, &no_proxy, 4, &[], &[]);
        assert_eq!(fine.no_proxy, "localhost,.svc");
        assert_eq!(fine.namespaces, ["a", "b"]);
        assert_eq!((fine.injected_pods, fine.escaped_pods), (4, 0));
        assert_eq!(
            fine.message,
            "4 pod(s) in 2 namespace(s) carry this proxy's settings"
        );
        let escaped: Vec<String> = (0..12).map(|n| format!("a/pod-{n:02}")).collect();
        let bad = clients_status(
            &served,
            &no_proxy,
            1,
            &escaped,
            &["noProxy entries left out: \"*\"".to_owned()],
        );
        assert_eq!(bad.escaped_pods, 12);
        assert_eq!(bad.escaped.len(), EXAMPLES);
        assert!(bad.message.starts_with("12 pod(s) this proxy serves run without its settings (a/pod-00, a/pod-01, a/pod-02, ...)"), "{}", bad.message);
        assert!(
            bad.message
                .ends_with("restart them. noProxy entries left out: \"*\""),
            "{}",
            bad.message
        );
    }
}
