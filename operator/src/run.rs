//! Wiring: one cache per resource type shared by the three controllers (each
//! reconciles from the caches, without API reads), watches that route a
//! change, deletions included, to exactly the objects it concerns, and error
//! backoff. (Relations use plain watches: a shared stream carries no
//! deletions, and a deleted group must reach the proxies that used it.)
//!
//! - A `ProxyRuleGroup` change reconciles the group, the configurations that
//!   list it and the proxies that use those.
//! - A `ProxyList` change reconciles it, and the configurations and proxies
//!   whose groups name it; a group change reconciles the lists of its
//!   namespace (whose `usedBy` and finalizer it may change).
//! - A `ClusterProxyRuleGroup` or `ClusterProxyList` change reconciles it, and
//!   every proxy and configuration when its spec changed or it was deleted
//!   (the baseline is part of each policy); a namespace's labels, which the
//!   baseline selects by, reconcile the proxies in it.
//! - A `ProxyConfiguration` change reconciles it and the proxies that use it.
//! - An `EgressProxy` change reconciles it, and its configuration and groups
//!   (whose `usedBy` it changes).
//! - A change to an object a proxy owns, or to a Secret a proxy names as its
//!   parent CA, reconciles that proxy.
//! - The clients reconciler (what a proxy renders for the pods it serves)
//!   runs on a proxy's change and on changes to namespaces, pods that it may
//!   serve, its trust bundle and what it rendered in client namespaces.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::context::{ClientCaches, Context};
use crate::crd::{
    ClusterProxyList, ClusterProxyRuleGroup, EgressProxy, ProxyConfiguration, ProxyList,
    ProxyRuleGroup,
};
use crate::error::Error;
use crate::metrics::ErrorLabels;
use crate::names::{
    CLIENT_OF_LABEL, CLIENT_OF_NAMESPACE_LABEL, MANAGER, Names, PROXY_ANNOTATION,
    TRUST_BUNDLE_LABEL,
};
use crate::{cache, inject, reconcile_clients, reconcile_policy, reconcile_proxy, secret_watches};

/// The subscriber a controller reads its primary objects from.
fn subscriber<K>(
    writer: &reflector::store::Writer<K>,
) -> anyhow::Result<reflector::ReflectHandle<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    writer
        .subscribe()
        .ok_or_else(|| anyhow::anyhow!("shared stores must allow subscribers"))
}

/// Logs what a controller's stream reports besides successful reconciles
/// (reconcile failures are logged by the error policy).
fn log_outcome<T, E: std::fmt::Display>(outcome: Result<T, E>) -> std::future::Ready<()> {
    if let Err(error) = outcome {
        tracing::debug!(%error, "controller");
    }
    std::future::ready(())
}

/// Drives a watch stream in the background (it feeds a cache and its
/// subscribers; the items themselves are not needed here).
fn watch<S, K>(stream: S)
where
    S: futures_util::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        Box::pin(stream)
            .for_each(|event| {
                if let Err(error) = event {
                    tracing::warn!(%error, "watch failed; retrying with backoff");
                }
                std::future::ready(())
            })
            .await;
    });
}

/// Keeps `writer`'s cache (and its subscribers) fed with every object of
/// kind `K`, in the background.
fn cache_every<K: Watched>(client: &Client, writer: reflector::store::Writer<K>) {
    watch(
        watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect_shared(writer)
            .boxed(),
    );
}

/// Error backoff per object: 1 s, doubling, at most 5 min; reset by success.
#[derive(Debug, Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        format!(
            "{}/{}/{}",
            K::kind(&()),
            object.meta().namespace.as_deref().unwrap_or_default(),
            object.meta().name.as_deref().unwrap_or_default()
        )
    }

    fn failed<K: Resource<DynamicType = ()>>(&self, object: &K) -> Duration {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(Self::key(object)).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    fn succeeded<K: Resource<DynamicType = ()>>(&self, object: &K) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(object));
    }
}

/// A kind the operator watches cluster-wide and caches.
trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// What a controller runs with: the backoff its failures count against,
/// the context its reconciles get and the signal that stops it.
#[derive(Clone)]
struct Runner {
    backoff: Arc<Backoff>,
    ctx: Arc<Context>,
    stop: CancellationToken,
}

impl Runner {
    /// Runs `controller` until the stop signal, each reconcile wrapped with
    /// its metrics and backoff, each outcome logged.
    async fn run<K, F, Fut>(&self, controller: Controller<K>, name: &'static str, reconcile: F)
    where
        K: Watched,
        F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<Action, Error>> + Send + 'static,
    {
        controller
            .graceful_shutdown_on(self.stop.clone().cancelled_owned())
            .run(
                wrapped(name, reconcile, self.backoff.clone()),
                error_policy::<K>(self.backoff.clone()),
                self.ctx.clone(),
            )
            .for_each(log_outcome)
            .await;
    }
}

/// What a mapper returns: the objects of kind `R` to reconcile.
trait Refs<R: Resource>: IntoIterator<Item = ObjectRef<R>, IntoIter: Send> + 'static {}

impl<R: Resource, I> Refs<R> for I where
    I: IntoIterator<Item = ObjectRef<R>, IntoIter: Send> + 'static
{
}

/// How a controller follows another kind `K`, watching all of its objects:
/// what the mapper returns is reconciled.
trait Follows<R: Watched> {
    /// On every change of a `K` (status writes included).
    fn on_every_change<K: Watched, I: Refs<R>>(
        self,
        client: &Client,
        mapper: impl Fn(K) -> I + Send + Sync + 'static,
    ) -> Self;

    /// On every change of a `K`, the objects of this kind that `related`
    /// names in the `K`'s namespace.
    fn on_related_change<K: Watched>(
        self,
        client: &Client,
        ctx: &Arc<Context>,
        related: fn(&Context, &str, &str) -> std::collections::BTreeSet<String>,
    ) -> Self;

    /// When a `K`'s spec changes or it is deleted (see [`spec_changes`]).
    fn on_spec_change<K: Watched, I: Refs<R>>(
        self,
        client: &Client,
        mapper: impl Fn(K) -> I + Send + Sync + 'static,
    ) -> Self;
}

impl<R: Watched> Follows<R> for Controller<R> {
    fn on_every_change<K: Watched, I: Refs<R>>(
        self,
        client: &Client,
        mapper: impl Fn(K) -> I + Send + Sync + 'static,
    ) -> Self {
        self.watches(Api::all(client.clone()), watcher::Config::default(), mapper)
    }

    fn on_related_change<K: Watched>(
        self,
        client: &Client,
        ctx: &Arc<Context>,
        related: fn(&Context, &str, &str) -> std::collections::BTreeSet<String>,
    ) -> Self {
        self.on_every_change(client, related_objects::<K, R>(ctx, related))
    }

    fn on_spec_change<K: Watched, I: Refs<R>>(
        self,
        client: &Client,
        mapper: impl Fn(K) -> I + Send + Sync + 'static,
    ) -> Self {
        self.watches_stream(spec_changes(Api::all(client.clone())), mapper)
    }
}

/// A reconcile in flight.
type Reconciling = std::pin::Pin<Box<dyn Future<Output = Result<Action, Error>> + Send>>;

/// A reconcile with its metrics (counted, timed, errors by reason) and
/// backoff bookkeeping around it.
fn wrapped<K, F, Fut>(
    name: &'static str,
    reconcile: F,
    backoff: Arc<Backoff>,
) -> impl FnMut(Arc<K>, Arc<Context>) -> Reconciling
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |object, ctx| {
        let (reconcile, backoff) = (reconcile.clone(), backoff.clone());
        Box::pin(async move {
            let _timer = ctx.metrics.reconcile(name);
            tracing::debug!(
                controller = name,
                namespace = object.meta().namespace.as_deref().unwrap_or_default(),
                name = object.meta().name.as_deref().unwrap_or_default(),
                "reconcile"
            );
            let result = reconcile(object.clone(), ctx.clone()).await;
            match &result {
                Ok(_) => backoff.succeeded(object.as_ref()),
                Err(error) => {
                    ctx.metrics
                        .errors
                        .get_or_create(&ErrorLabels {
                            controller: name,
                            reason: error.reason(),
                        })
                        .inc();
                }
            }
            result
        })
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(
    backoff: Arc<Backoff>,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |object, error, _| {
        let wait = backoff.failed(object.as_ref());
        tracing::warn!(
            kind = %K::kind(&()),
            namespace = object.meta().namespace.as_deref().unwrap_or_default(),
            name = object.meta().name.as_deref().unwrap_or_default(),
            %error,
            retry_in = ?wait,
            "reconcile failed"
        );
        Action::requeue(wait)
    }
}

/// A mapper to the proxies a Secret or ConfigMap concerns: those that own
/// it, and those in its namespace that `references` it by name.
fn proxies_of<K: Resource>(
    ctx: &Arc<Context>,
    references: fn(&EgressProxy, &str) -> bool,
) -> impl Fn(K) -> Vec<ObjectRef<EgressProxy>> + Send + Sync + 'static {
    let ctx = ctx.clone();
    move |object| proxies_of_object(&ctx, &object, references)
}

/// Whether `proxy` names Secret `name`: as its parent CA or for credentials.
fn names_secret(proxy: &EgressProxy, name: &str) -> bool {
    let parent = proxy.spec.tls_interception.ca_secret_ref.as_ref();
    parent.is_some_and(|r| r.name == name)
        || proxy
            .spec
            .credentials
            .iter()
            .any(|c| c.secret_ref.name == name)
}

/// Whether `proxy` names ConfigMap `name`: as its destinations' CA bundle.
fn names_config_map(proxy: &EgressProxy, name: &str) -> bool {
    let bundle = proxy.spec.destinations.ca_bundle_ref.as_ref();
    bundle.is_some_and(|r| r.name == name)
}

/// The proxies `object` concerns (see [`proxies_of`]).
fn proxies_of_object<K: Resource>(
    ctx: &Context,
    object: &K,
    references: fn(&EgressProxy, &str) -> bool,
) -> Vec<ObjectRef<EgressProxy>> {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let name = object.meta().name.clone().unwrap_or_default();
    let owned = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "EgressProxy")
        .map(|o| o.name.clone());
    let referencing = ctx
        .proxies
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()) && references(p, &name))
        .map(|p| p.name_any());
    owned
        .chain(referencing)
        .map(|p| ObjectRef::new(&p).within(&namespace))
        .collect()
}

/// The caches every controller reads.
#[derive(Clone, Debug)]
pub struct Caches {
    /// EgressProxies.
    pub proxies: reflector::Store<EgressProxy>,
    /// ProxyConfigurations.
    pub configurations: reflector::Store<ProxyConfiguration>,
    /// ProxyRuleGroups.
    pub groups: reflector::Store<ProxyRuleGroup>,
    /// ProxyLists.
    pub lists: reflector::Store<ProxyList>,
    /// ClusterProxyRuleGroups.
    pub cluster_groups: reflector::Store<ClusterProxyRuleGroup>,
    /// ClusterProxyLists.
    pub cluster_lists: reflector::Store<ClusterProxyList>,
    /// What the clients reconciler reads.
    pub clients: ClientCaches,
}

/// Runs the controllers until `stop` is cancelled; the caches are filled before
/// the first reconcile, so nothing is judged on a partial view.
pub async fn controllers(
    client: Client,
    make_context: impl FnOnce(Caches) -> Context,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (proxies, proxy_writer) = reflector::store_shared::<EgressProxy>(1024);
    let (configurations, configuration_writer) =
        reflector::store_shared::<ProxyConfiguration>(1024);
    let (groups, group_writer) = reflector::store_shared::<ProxyRuleGroup>(1024);
    let (lists, list_writer) = reflector::store_shared::<ProxyList>(1024);
    let (cluster_groups, cluster_group_writer) =
        reflector::store_shared::<ClusterProxyRuleGroup>(1024);
    let (cluster_lists, cluster_list_writer) = reflector::store_shared::<ClusterProxyList>(1024);
    let proxy_events = subscriber(&proxy_writer)?;
    let client_proxy_events = subscriber(&proxy_writer)?;
    let configuration_events = subscriber(&configuration_writer)?;
    let group_events = subscriber(&group_writer)?;
    let list_events = subscriber(&list_writer)?;
    let cluster_group_events = subscriber(&cluster_group_writer)?;
    let cluster_list_events = subscriber(&cluster_list_writer)?;

    // The watches of the custom resources, feeding the caches and every
    // subscriber.
    cache_every(&client, proxy_writer);
    cache_every(&client, configuration_writer);
    cache_every(&client, group_writer);
    cache_every(&client, list_writer);
    cache_every(&client, cluster_group_writer);
    cache_every(&client, cluster_list_writer);
    let (client_changes, client_triggers) = tokio::sync::mpsc::unbounded_channel();
    let (proxy_changes, proxy_triggers) = tokio::sync::mpsc::unbounded_channel();
    let client_caches = client_caches(&client, &proxies, &client_changes, &proxy_changes);
    tokio::try_join!(
        proxies.wait_until_ready(),
        configurations.wait_until_ready(),
        groups.wait_until_ready(),
        lists.wait_until_ready(),
        cluster_groups.wait_until_ready(),
        cluster_lists.wait_until_ready(),
        client_caches.namespaces.wait_until_ready(),
        client_caches.pods.wait_until_ready(),
        client_caches.trust_bundles.wait_until_ready(),
        client_caches.copies.wait_until_ready(),
        client_caches.network_policies.wait_until_ready(),
        client_caches.role_bindings.wait_until_ready()
    )
    .map_err(|e| anyhow::anyhow!("cache: {e}"))?;
    tracing::info!(
        proxies = proxies.state().len(),
        configurations = configurations.state().len(),
        groups = groups.state().len(),
        lists = lists.state().len(),
        cluster_groups = cluster_groups.state().len(),
        namespaces = client_caches.namespaces.state().len(),
        pods = client_caches.pods.state().len(),
        "caches ready; reconciling"
    );

    let ctx = Arc::new(make_context(Caches {
        proxies: proxies.clone(),
        configurations: configurations.clone(),
        groups: groups.clone(),
        lists: lists.clone(),
        cluster_groups: cluster_groups.clone(),
        cluster_lists: cluster_lists.clone(),
        clients: client_caches.clone(),
    }));
    // New cluster facts (a node with new pod CIDRs) concern every proxy's
    // clients.
    {
        let (mut facts, proxies, changes, stop) = (
            ctx.client_settings.cluster.clone(),
            proxies.clone(),
            client_changes.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = facts.changed() => if changed.is_err() { return },
                }
                for proxy in proxies.state() {
                    let _ = changes.send(ObjectRef::from_obj(proxy.as_ref()));
                }
            }
        });
    }
    let runner = Runner {
        backoff: Arc::new(Backoff::default()),
        ctx: ctx.clone(),
        stop: stop.clone(),
    };
    let managed =
        || watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));

    let proxy_triggers = futures_util::stream::unfold(proxy_triggers, |mut triggers| async move {
        triggers.recv().await.map(|proxy| (proxy, triggers))
    });
    let proxy_controller = Controller::for_shared_stream(proxy_events, proxies.clone())
        .owns(Api::<Deployment>::all(client.clone()), managed())
        .owns(Api::<Service>::all(client.clone()), managed())
        .watches_stream(
            secret_watches::secret_events(client.clone(), proxies.clone(), stop.clone()),
            proxies_of::<PartialObjectMeta<Secret>>(&ctx, names_secret),
        )
        .watches_stream(
            watcher(
                Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .touched_objects(),
            proxies_of::<PartialObjectMeta<ConfigMap>>(&ctx, names_config_map),
        )
        .on_related_change::<ProxyConfiguration>(
            &client,
            &ctx,
            Context::proxies_using_configuration,
        )
        .on_related_change::<ProxyRuleGroup>(&client, &ctx, Context::proxies_using_group)
        .on_related_change::<ProxyList>(&client, &ctx, Context::proxies_using_list)
        .on_spec_change(&client, every::<ClusterProxyRuleGroup, _>(&ctx.proxies))
        .on_spec_change(&client, every::<ClusterProxyList, _>(&ctx.proxies))
        .reconcile_on(proxy_triggers);

    let configuration_of_proxy = |p: EgressProxy| {
        let namespace = p.namespace().unwrap_or_default();
        Some(ObjectRef::new(&p.spec.configuration_ref.name).within(&namespace))
    };
    let configuration_controller =
        Controller::for_shared_stream(configuration_events, configurations.clone())
            .on_related_change::<ProxyRuleGroup>(&client, &ctx, Context::configurations_listing)
            .on_related_change::<ProxyList>(&client, &ctx, Context::configurations_using_list)
            .on_spec_change(
                &client,
                every::<ClusterProxyRuleGroup, _>(&ctx.configurations),
            )
            .on_spec_change(&client, every::<ClusterProxyList, _>(&ctx.configurations))
            .on_every_change(&client, configuration_of_proxy);

    let groups_of_configuration =
        |c: ProxyConfiguration| groups_listed(&c, &c.namespace().unwrap_or_default());
    let lookup = ctx.clone();
    let groups_of_proxy = move |p: EgressProxy| {
        let namespace = p.namespace().unwrap_or_default();
        lookup
            .configuration(&namespace, &p.spec.configuration_ref.name)
            .map(|c| groups_listed(&c, &namespace))
            .unwrap_or_default()
    };
    let group_controller = Controller::for_shared_stream(group_events, groups.clone())
        .on_related_change::<ProxyList>(&client, &ctx, Context::groups_naming_list)
        .on_every_change(&client, groups_of_configuration)
        .on_every_change(&client, groups_of_proxy);

    // A group that stops naming a list is seen only as it is now, so a
    // group change looks at every list of its namespace.
    let lookup = ctx.clone();
    let lists_of_group = move |g: ProxyRuleGroup| {
        let namespace = g.namespace();
        lookup
            .lists
            .state()
            .iter()
            .filter(|l| l.namespace() == namespace)
            .map(|l| ObjectRef::from_obj(l.as_ref()))
            .collect::<Vec<_>>()
    };
    let list_controller = Controller::for_shared_stream(list_events, lists.clone())
        .on_every_change(&client, lists_of_group);

    // A baseline group's status names the proxies it applies to (any proxy
    // change may change that) and whether its lists exist. (Its status
    // writes reach the proxies only through `on_spec_change`: no fan-out.)
    let cluster_group_controller =
        Controller::for_shared_stream(cluster_group_events, cluster_groups.clone())
            .on_every_change(&client, every::<EgressProxy, _>(&ctx.cluster_groups))
            .on_every_change(&client, every::<ClusterProxyList, _>(&ctx.cluster_groups));
    let cluster_list_controller =
        Controller::for_shared_stream(cluster_list_events, cluster_lists.clone()).on_every_change(
            &client,
            every::<ClusterProxyRuleGroup, _>(&ctx.cluster_lists),
        );

    let triggers = futures_util::stream::unfold(client_triggers, |mut triggers| async move {
        triggers.recv().await.map(|proxy| (proxy, triggers))
    });
    // Pod churn triggers this often: a second's debounce folds bursts into
    // one run. Its own backoff: the proxy controller's successes must not
    // reset its failures.
    let clients_controller = Controller::for_shared_stream(client_proxy_events, proxies.clone())
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
        .reconcile_on(triggers);
    let clients_runner = Runner {
        backoff: Arc::new(Backoff::default()),
        ..runner.clone()
    };

    tokio::join!(
        runner.run(proxy_controller, "egressproxy", reconcile_proxy::reconcile),
        runner.run(
            configuration_controller,
            "proxyconfiguration",
            reconcile_policy::reconcile_configuration
        ),
        runner.run(
            group_controller,
            "proxyrulegroup",
            reconcile_policy::reconcile_group
        ),
        runner.run(
            list_controller,
            "proxylist",
            reconcile_policy::reconcile_list
        ),
        runner.run(
            cluster_group_controller,
            "clusterproxyrulegroup",
            reconcile_policy::reconcile_cluster_group
        ),
        runner.run(
            cluster_list_controller,
            "clusterproxylist",
            reconcile_policy::reconcile_cluster_list
        ),
        clients_runner.run(clients_controller, "clients", reconcile_clients::reconcile),
    );
    Ok(())
}

/// The clients reconciler's caches; every change is sent to `changes` as
/// the proxies it concerns.
fn client_caches(
    client: &Client,
    proxies: &reflector::Store<EgressProxy>,
    changes: &UnboundedSender<ObjectRef<EgressProxy>>,
    proxy_changes: &UnboundedSender<ObjectRef<EgressProxy>>,
) -> ClientCaches {
    // Which proxies an object rendered for clients (or a trust bundle) is of.
    let of_labels = |changes: UnboundedSender<ObjectRef<EgressProxy>>| {
        move |meta: &ObjectMeta| {
            let labels = meta.labels.clone().unwrap_or_default();
            let name = labels
                .get(CLIENT_OF_LABEL)
                .or_else(|| labels.get("app.kubernetes.io/instance"));
            let namespace = labels
                .get(CLIENT_OF_NAMESPACE_LABEL)
                .or(meta.namespace.as_ref());
            if let (Some(name), Some(namespace)) = (name, namespace) {
                let _ = changes.send(ObjectRef::new(name).within(namespace));
            }
        }
    };
    let every_proxy = {
        let (proxies, changes) = (proxies.clone(), changes.clone());
        move || {
            for proxy in proxies.state() {
                let _ = changes.send(ObjectRef::from_obj(proxy.as_ref()));
            }
        }
    };
    let namespaces = {
        let every_proxy = every_proxy.clone();
        // The baseline selects proxies by their namespace's labels: once the
        // cache has the new labels, the proxies in it are reconciled.
        let (proxies, proxy_changes) = (proxies.clone(), proxy_changes.clone());
        cache::spawn(
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
            move |namespace: &PartialObjectMeta<Namespace>| {
                every_proxy();
                let name = namespace.name_any();
                for proxy in proxies.state() {
                    if proxy.namespace().as_deref() == Some(name.as_str()) {
                        let _ = proxy_changes.send(ObjectRef::from_obj(proxy.as_ref()));
                    }
                }
            },
        )
    };
    let pods = {
        // A pod concerns the proxy it names and those that may serve it.
        let (proxies, namespaces, changes) = (proxies.clone(), namespaces.clone(), changes.clone());
        cache::spawn(
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .modify(inject::trim_for_counting),
            move |pod: &Pod| {
                let namespace = pod.namespace().unwrap_or_default();
                let Some(namespace) = namespaces.get(&ObjectRef::new(&namespace)) else {
                    return;
                };
                let named = pod.annotations().get(PROXY_ANNOTATION);
                let empty = Default::default();
                let namespace_labels = namespace.metadata.labels.as_ref().unwrap_or(&empty);
                for proxy in proxies.state() {
                    let names = Names::of(&proxy);
                    if named == Some(&names.qualified())
                        || inject::serves(&proxy, namespace_labels, pod.labels())
                    {
                        let _ = changes.send(ObjectRef::from_obj(proxy.as_ref()));
                    }
                }
            },
        )
    };
    let trust_bundles = {
        let changed = of_labels(changes.clone());
        cache::spawn(
            watcher(
                Api::<ConfigMap>::all(client.clone()),
                watcher::Config::default().labels(&format!("{TRUST_BUNDLE_LABEL}=source")),
            )
            .default_backoff(),
            move |c: &ConfigMap| changed(&c.metadata),
        )
    };
    let copies = rendered::<ConfigMap>(client, of_labels(changes.clone()));
    let network_policies = rendered::<NetworkPolicy>(client, of_labels(changes.clone()));
    let role_bindings = rendered::<RoleBinding>(client, of_labels(changes.clone()));
    ClientCaches {
        namespaces,
        pods,
        trust_bundles,
        copies,
        network_policies,
        role_bindings,
        memo: Default::default(),
    }
}

/// A cache of the objects of kind `K` the operator rendered in client
/// namespaces (metadata only); `changed` sees each change.
fn rendered<K>(
    client: &Client,
    changed: impl Fn(&ObjectMeta) + Send + 'static,
) -> reflector::Store<PartialObjectMeta<K>>
where
    K: Watched,
{
    cache::spawn(
        watcher(
            Api::<PartialObjectMeta<K>>::all(client.clone()),
            watcher::Config::default().labels(CLIENT_OF_NAMESPACE_LABEL),
        )
        .default_backoff(),
        move |object: &PartialObjectMeta<K>| changed(&object.metadata),
    )
}

/// A watch mapper: the objects `related` names, in the changed object's
/// namespace, for each change.
fn related_objects<K, R>(
    ctx: &Arc<Context>,
    related: fn(&Context, &str, &str) -> std::collections::BTreeSet<String>,
) -> impl Fn(K) -> Vec<ObjectRef<R>> + Send + Sync + 'static
where
    K: Resource,
    R: Resource<DynamicType = ()>,
{
    let ctx = ctx.clone();
    move |object: K| {
        let namespace = object.namespace().unwrap_or_default();
        related(&ctx, &namespace, &object.name_any())
            .into_iter()
            .map(|name| ObjectRef::new(&name).within(&namespace))
            .collect()
    }
}

/// The objects of a kind whose spec changed (their generation moved) or
/// that were deleted: what a change to every proxy's policy must follow,
/// without the status writes that would have every proxy reconciled again.
fn spec_changes<K>(
    api: Api<K>,
) -> impl futures_util::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut seen: HashMap<ObjectRef<K>, Option<i64>> = HashMap::new();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    let generation = object.meta().generation;
                    let before = seen.insert(ObjectRef::from_obj(&object), generation);
                    (before != Some(generation)).then_some(Ok(object))
                }
                Ok(watcher::Event::Delete(object)) => {
                    seen.remove(&ObjectRef::from_obj(&object));
                    Some(Ok(object))
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(error) => Some(Err(error)),
            };
            std::future::ready(changed)
        })
}

/// A watch mapper for a change (of a `K`) that concerns every object of a
/// cache.
fn every<K, R>(
    store: &reflector::Store<R>,
) -> impl Fn(K) -> Vec<ObjectRef<R>> + Send + Sync + 'static
where
    R: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    move |_| {
        store
            .state()
            .iter()
            .map(|object| ObjectRef::from_obj(object.as_ref()))
            .collect()
    }
}

fn groups_listed(c: &ProxyConfiguration, namespace: &str) -> Vec<ObjectRef<ProxyRuleGroup>> {
    c.spec
        .rule_groups
        .iter()
        .map(|r| ObjectRef::new(&r.name).within(namespace))
        .collect()
}
