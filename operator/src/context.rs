//! What every reconciler shares: the client, the caches of the three
//! resources (one watch each, shared by all controllers), the event
//! recorder, metrics and settings; and the reverse lookups that decide which
//! objects a change concerns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use egress_policy::objects::AWS_NAME_ANNOTATION;
use egress_policy::spec::{ProxyListSpec, ProxyRuleGroupSpec};
use egress_policy::{Named, list, select_baseline};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster_facts::ClusterView;
use crate::crd::{
    ClusterProxyList, ClusterProxyRuleGroup, EgressProxy, ProxyConfiguration, ProxyList,
    ProxyRuleGroup,
};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::render::Settings;
use crate::render_clients::TrustFiles;
use crate::secret_watches::SecretsOptIn;

/// A namespaced kind the reconcilers read, apply and delete.
pub trait NamespacedKind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> NamespacedKind for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Cached EgressProxies.
    pub proxies: Store<EgressProxy>,
    /// Cached ProxyConfigurations.
    pub configurations: Store<ProxyConfiguration>,
    /// Cached ProxyRuleGroups.
    pub groups: Store<ProxyRuleGroup>,
    /// Cached ProxyLists.
    pub lists: Store<ProxyList>,
    /// Cached ClusterProxyRuleGroups.
    pub cluster_groups: Store<ClusterProxyRuleGroup>,
    /// Cached ClusterProxyLists.
    pub cluster_lists: Store<ClusterProxyList>,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// What shapes every gateway.
    pub settings: Settings,
    /// What the clients reconciler reads.
    pub clients: ClientCaches,
    /// What shapes what client pods get.
    pub client_settings: ClientSettings,
    /// How a namespace lets the operator manage its Secrets.
    pub secrets_opt_in: SecretsOptIn,
}

/// Caches of the clients reconciler (leader only).
#[derive(Clone, Debug)]
pub struct ClientCaches {
    /// Namespaces (labels and annotations).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Pods (metadata and their containers' proxy variables only), to count
    /// those that escaped injection.
    pub pods: Store<Pod>,
    /// Every proxy's `<proxy>-trust-bundle`, the source of the copies.
    pub trust_bundles: Store<ConfigMap>,
    /// Trust bundle copies in client namespaces.
    pub copies: Store<PartialObjectMeta<ConfigMap>>,
    /// NetworkPolicies rendered for clients.
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    /// Pod reader RoleBindings rendered in served namespaces.
    pub role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    /// What the clients reconciler remembers between runs.
    pub memo: Arc<ClientMemo>,
}

/// What the clients reconciler remembers between runs, per proxy
/// (`<namespace>/<name>`).
#[derive(Debug, Default)]
pub struct ClientMemo {
    /// The trust files last built, and the proxy roots they were built from.
    pub trust_files: Mutex<HashMap<String, (String, Arc<TrustFiles>)>>,
    /// When everything was last applied regardless of hashes (so edits to
    /// what the operator rendered are undone).
    pub full_apply: Mutex<HashMap<String, Instant>>,
    /// The hash of the served namespaces' ConfigMap last applied.
    pub served_namespaces: Mutex<HashMap<String, String>>,
    /// Proxies whose cluster-wide pod reader binding (of earlier versions)
    /// was looked for.
    pub legacy_removed: Mutex<BTreeSet<String>>,
}

/// Operator-wide settings of what client pods get.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Cluster facts (domain, CIDRs, the operator's namespace), current.
    pub cluster: ClusterView,
    /// The system roots (PEM) that trust bundle copies add the proxy's to.
    pub system_roots: Arc<str>,
    /// Labels of the cluster DNS pods in kube-system.
    pub dns_selector: BTreeMap<String, String>,
    /// What enforces NetworkPolicies, as the administrator named it (None:
    /// look for known enforcers' pods).
    pub network_policy_enforcer: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The EgressProxy API of `proxy`'s namespace (where its finalizers are
    /// written).
    pub fn proxies_api(&self, proxy: &EgressProxy) -> Result<Api<EgressProxy>, Error> {
        let namespace = proxy
            .namespace()
            .ok_or(Error::Incomplete("proxy without namespace"))?;
        Ok(Api::namespaced(self.client.clone(), &namespace))
    }

    /// The configuration `name` in `namespace`, from the cache.
    pub fn configuration(&self, namespace: &str, name: &str) -> Option<Arc<ProxyConfiguration>> {
        self.configurations
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The rule groups `configuration` lists that exist, from the cache.
    pub fn groups_of(&self, configuration: &ProxyConfiguration) -> Vec<Named<ProxyRuleGroupSpec>> {
        let namespace = configuration.namespace().unwrap_or_default();
        configuration
            .spec
            .rule_groups
            .iter()
            .filter_map(|r| {
                self.groups
                    .get(&ObjectRef::new(&r.name).within(&namespace))
                    .map(|g| {
                        let log_name = g.annotations().get(AWS_NAME_ANNOTATION).cloned();
                        Named::new(r.name.clone(), g.spec.clone()).with_log_name(log_name)
                    })
            })
            .collect()
    }

    /// The lists `groups` (of `namespace`) name that exist, from the cache.
    pub fn lists_named_by(
        &self,
        namespace: &str,
        groups: &[Named<ProxyRuleGroupSpec>],
    ) -> Vec<Named<ProxyListSpec>> {
        list::named_lists(groups, |name| {
            self.lists
                .get(&ObjectRef::new(name).within(namespace))
                .map(|l| l.spec.clone())
        })
    }

    /// The labels of `namespace`, from the cache (none when it is not there).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.clients
            .namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// The ClusterProxyRuleGroups that select `namespace`, as rule groups in
    /// name order.
    pub fn baseline_for(&self, namespace: &str) -> Vec<Named<ProxyRuleGroupSpec>> {
        let state = self.cluster_groups.state();
        let groups = state.iter().map(|g| {
            let name = g.metadata.name.as_deref().unwrap_or_default();
            let aws_name = g.annotations().get(AWS_NAME_ANNOTATION).map(String::as_str);
            (name, &g.spec, aws_name)
        });
        select_baseline(groups, &self.namespace_labels(namespace))
    }

    /// The ClusterProxyLists `groups` name that exist, from the cache.
    pub fn cluster_lists_named_by(
        &self,
        groups: &[Named<ProxyRuleGroupSpec>],
    ) -> Vec<Named<ProxyListSpec>> {
        list::named_lists(groups, |name| {
            self.cluster_lists
                .get(&ObjectRef::new(name))
                .map(|l| l.spec.clone())
        })
    }

    /// The proxies (`<namespace>/<name>`) whose namespace `group` selects.
    pub fn proxies_under(&self, group: &ClusterProxyRuleGroup) -> BTreeSet<String> {
        self.proxies
            .state()
            .iter()
            .filter(|p| {
                let namespace = p.namespace().unwrap_or_default();
                group.spec.selects(&self.namespace_labels(&namespace))
            })
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .collect()
    }

    /// Names of the ClusterProxyRuleGroups whose conditions name list `name`.
    pub fn cluster_groups_naming_list(&self, name: &str) -> BTreeSet<String> {
        self.cluster_groups
            .state()
            .iter()
            .filter(|g| g.spec.rules.list_names().any(|l| l == name))
            .map(|g| g.name_any())
            .collect()
    }

    /// Names of the rule groups in `namespace` whose conditions name list `name`.
    pub fn groups_naming_list(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.groups
            .state()
            .iter()
            .filter(|g| {
                g.namespace().as_deref() == Some(namespace)
                    && g.spec.list_names().any(|l| l == name)
            })
            .map(|g| g.name_any())
            .collect()
    }

    /// Names of the configurations in `namespace` that list a group naming list `name`.
    pub fn configurations_using_list(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.groups_naming_list(namespace, name)
            .iter()
            .flat_map(|g| self.configurations_listing(namespace, g))
            .collect()
    }

    /// Names of the proxies in `namespace` whose policy uses list `name`.
    pub fn proxies_using_list(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.proxies_using_any(namespace, &self.configurations_using_list(namespace, name))
    }

    /// Names of the proxies in `namespace` that enforce configuration `name`.
    pub fn proxies_using_configuration(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.proxies
            .state()
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace) && p.spec.configuration_ref.name == name
            })
            .map(|p| p.name_any())
            .collect()
    }

    /// Names of the configurations in `namespace` that list group `name`.
    pub fn configurations_listing(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.configurations
            .state()
            .iter()
            .filter(|c| {
                c.namespace().as_deref() == Some(namespace)
                    && c.spec.rule_groups.iter().any(|r| r.name == name)
            })
            .map(|c| c.name_any())
            .collect()
    }

    /// Names of the proxies in `namespace` whose configuration lists group `name`.
    pub fn proxies_using_group(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        self.proxies_using_any(namespace, &self.configurations_listing(namespace, name))
    }

    /// Names of the proxies in `namespace` that enforce one of `configurations`.
    fn proxies_using_any(
        &self,
        namespace: &str,
        configurations: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        configurations
            .iter()
            .flat_map(|c| self.proxies_using_configuration(namespace, c))
            .collect()
    }

    /// Publishes an event about `object` (failures are logged: events are
    /// best effort).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let reference: ObjectReference = object.object_ref(&());
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(%error, reason, "event not published");
        }
    }
}
