//! Reconciling `ProxyConfiguration`s, `ProxyRuleGroup`s and `ProxyList`s:
//! nothing is rendered for them; their status says whether they compile
//! (every error, with its path) and who uses them. A list some group names
//! carries a finalizer, so deleting it waits (and says so) until none does.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use egress_policy::spec::{PhaseRules, ProxyListSpec};
use egress_policy::{
    Available, Named, Phase, compile, validate_cluster_rule_group, validate_list,
    validate_rule_group_with,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::conditions::{self, COMPILED, IN_USE, VALID, Wanted};
use crate::context::Context;
use crate::crd::{
    ClusterProxyList, ClusterProxyRuleGroup, ConfigurationStatus, ListStatus, ProxyConfiguration,
    ProxyList, ProxyRuleGroup, RuleCounts, RuleGroupStatus,
};
use crate::error::Error;
use crate::names::FIELD_MANAGER;

/// Writes `status` on `object` (through `api`, of its scope) with
/// server-side apply, unless unchanged.
async fn write_status<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    status: S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(&status) {
        return Ok(());
    }
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::Incomplete("object without name"))?;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// The API of a namespaced `object`'s kind, in its namespace.
fn api_of<K>(ctx: &Context, object: &K) -> Result<Api<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    let namespace = object
        .meta()
        .namespace
        .clone()
        .ok_or(Error::Incomplete("object without namespace"))?;
    Ok(Api::namespaced(ctx.client.clone(), &namespace))
}

/// Lists `errors` under a heading, paths starting at the object (`spec.`).
fn report(errors: &[egress_policy::CompileError]) -> String {
    let listed: Vec<String> = errors.iter().map(|e| format!("spec.{e}")).collect();
    format!(
        "{} error{}: {}",
        listed.len(),
        if listed.len() == 1 { "" } else { "s" },
        listed.join("; ")
    )
}

/// Reconciles one configuration.
pub async fn reconcile_configuration(
    configuration: Arc<ProxyConfiguration>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = configuration.namespace().unwrap_or_default();
    let name = configuration.name_any();
    let groups = ctx.groups_of(&configuration);
    let lists = ctx.lists_named_by(&namespace, &groups);
    let baseline = ctx.baseline_for(&namespace);
    let cluster_lists = ctx.cluster_lists_named_by(&baseline);
    let old = configuration.status.clone().unwrap_or_default();
    let mut status = ConfigurationStatus {
        observed_generation: configuration.metadata.generation,
        groups: i64::try_from(configuration.spec.rule_groups.len()).unwrap_or(i64::MAX),
        used_by: ctx
            .proxies_using_configuration(&namespace, &name)
            .into_iter()
            .collect(),
        ..ConfigurationStatus::default()
    };
    // A policy of a million list entries takes a second or more: off the
    // runtime's worker, so the watches keep the caches current meanwhile.
    let compiled = tokio::task::block_in_place(|| {
        compile(
            &Named::new(name.clone(), configuration.spec.clone()),
            Available {
                groups: &groups,
                lists: &lists,
                baseline: &baseline,
                cluster_lists: &cluster_lists,
            },
        )
    });
    let wanted = match compiled {
        Ok(policy) => {
            status.policy_hash = Some(policy.hash().to_owned());
            let rules: usize = Phase::ALL.iter().map(|p| policy.rule_count(*p)).sum();
            Wanted::yes(
                COMPILED,
                "Compiled",
                format!("{} rule groups, {rules} rules", groups.len()),
            )
        }
        Err(errors) => Wanted::no(COMPILED, "CompileFailed", report(&errors)),
    };
    status.conditions = conditions::merge(
        &old.conditions,
        &[wanted],
        configuration.metadata.generation,
        jiff::Timestamp::now(),
    );
    let api = api_of(&ctx, configuration.as_ref())?;
    write_status(
        &api,
        configuration.as_ref(),
        configuration.status.as_ref(),
        status,
    )
    .await?;
    Ok(Action::requeue(RECHECK))
}

/// Reconciles one rule group.
pub async fn reconcile_group(
    group: Arc<ProxyRuleGroup>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = group.namespace().unwrap_or_default();
    let name = group.name_any();
    let lists = ctx.lists_named_by(&namespace, &[Named::new(name.clone(), group.spec.clone())]);
    let status = group_status(
        group.status.as_ref(),
        group.metadata.generation,
        &tokio::task::block_in_place(|| validate_rule_group_with(&group.spec, &lists)),
        &group.spec.rules,
        ctx.proxies_using_group(&namespace, &name),
    );
    let api = api_of(&ctx, group.as_ref())?;
    write_status(&api, group.as_ref(), group.status.as_ref(), status).await?;
    Ok(Action::requeue(RECHECK))
}

/// When an object is looked at again without a change.
const RECHECK: Duration = Duration::from_secs(3600);

/// Keeps a `ProxyList` from being deleted while rule groups name it.
pub const LIST_IN_USE_FINALIZER: &str = "egress.dev/list-in-use";

/// Reconciles one list: its entries checked, the groups naming it, and the
/// finalizer that holds its deletion while they do.
pub async fn reconcile_list(list: Arc<ProxyList>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = list.namespace().unwrap_or_default();
    let used_by = ctx.groups_naming_list(&namespace, &list.name_any());
    let api = api_of(&ctx, list.as_ref())?;
    let groups = "ProxyRuleGroups";
    let status = list.status.as_ref();
    hold_and_report(
        &ctx,
        &api,
        list.as_ref(),
        &list.spec,
        status,
        used_by,
        groups,
    )
    .await
}

/// Reconciles one cluster list, as [`reconcile_list`] a namespaced one.
pub async fn reconcile_cluster_list(
    list: Arc<ClusterProxyList>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let used_by = ctx.cluster_groups_naming_list(&list.name_any());
    let api = Api::all(ctx.client.clone());
    let groups = "ClusterProxyRuleGroups";
    let status = list.status.as_ref();
    hold_and_report(
        &ctx,
        &api,
        list.as_ref(),
        &list.spec,
        status,
        used_by,
        groups,
    )
    .await
}

/// A list's finalizer set or released by whether `used_by` (rule groups,
/// of kind `groups`) name it, and its status written.
async fn hold_and_report<K>(
    ctx: &Context,
    api: &Api<K>,
    list: &K,
    spec: &ProxyListSpec,
    current: Option<&ListStatus>,
    used_by: BTreeSet<String>,
    groups: &str,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let used_by: Vec<String> = used_by.into_iter().collect();
    let deleting = list.meta().deletion_timestamp.is_some();
    let held = list.finalizers().iter().any(|f| f == LIST_IN_USE_FINALIZER);
    if used_by.is_empty() && held {
        // Released; when it was being deleted, it is gone now.
        set_finalizers(api, list, false).await?;
        if deleting {
            return Ok(Action::await_change());
        }
    }
    if !used_by.is_empty() && !held && !deleting {
        set_finalizers(api, list, true).await?;
    }
    let errors = tokio::task::block_in_place(|| validate_list(spec));
    let entries = spec.entries.len();
    let valid = if errors.is_empty() {
        Wanted::yes(VALID, "Valid", format!("{entries} entries"))
    } else {
        Wanted::no(VALID, "InvalidEntries", report(&errors))
    };
    let named = used_by.join(", ");
    let in_use = match (used_by.is_empty(), deleting) {
        (true, _) => Wanted::no(IN_USE, "NotNamed", format!("no {groups} name this list")),
        (false, false) => Wanted::yes(
            IN_USE,
            "NamedByRuleGroups",
            format!("named by {groups} {named}; deleting it waits until none does"),
        ),
        (false, true) => Wanted::yes(
            IN_USE,
            "DeletionWaiting",
            format!(
                "deletion waits: {groups} {named} still name this list and their proxies keep enforcing it; remove it from their conditions and the deletion completes"
            ),
        ),
    };
    let old = current.cloned().unwrap_or_default();
    let was_waiting = old
        .conditions
        .iter()
        .any(|c| c.type_ == IN_USE && c.reason == "DeletionWaiting");
    if in_use.reason == "DeletionWaiting" && !was_waiting {
        ctx.event(list, true, "DeletionWaiting", in_use.message.clone())
            .await;
    }
    let generation = list.meta().generation;
    let status = ListStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &old.conditions,
            &[valid, in_use],
            generation,
            jiff::Timestamp::now(),
        ),
        entries: i64::try_from(entries).unwrap_or(i64::MAX),
        used_by,
    };
    write_status(api, list, current, status).await?;
    // A deletion that waits is looked at again soon: the group that last
    // named the list may be gone already from a cache that has not caught up.
    let again = if deleting {
        Duration::from_secs(15)
    } else {
        RECHECK
    };
    Ok(Action::requeue(again))
}

/// Adds or removes [`LIST_IN_USE_FINALIZER`], keeping the others; the
/// resource version makes a concurrent change fail and be retried.
async fn set_finalizers<K>(api: &Api<K>, list: &K, hold: bool) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut finalizers: Vec<String> = list
        .finalizers()
        .iter()
        .filter(|f| *f != LIST_IN_USE_FINALIZER)
        .cloned()
        .collect();
    if hold {
        finalizers.push(LIST_IN_USE_FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": list.resource_version()}
    });
    api.patch(
        &list.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Reconciles one baseline group: whether it compiles with the cluster's
/// lists, and the proxies it applies to.
pub async fn reconcile_cluster_group(
    group: Arc<ClusterProxyRuleGroup>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let rules = group.spec.group();
    let lists = ctx.cluster_lists_named_by(&[Named::new(group.name_any(), rules)]);
    let status = group_status(
        group.status.as_ref(),
        group.metadata.generation,
        &tokio::task::block_in_place(|| validate_cluster_rule_group(&group.spec, &lists)),
        &group.spec.rules,
        ctx.proxies_under(&group),
    );
    let api = Api::all(ctx.client.clone());
    write_status(&api, group.as_ref(), group.status.as_ref(), status).await?;
    Ok(Action::requeue(RECHECK))
}

/// A rule group's status: `Compiled` from its errors, its rules per
/// phase and the proxies using it.
fn group_status(
    old: Option<&RuleGroupStatus>,
    generation: Option<i64>,
    errors: &[egress_policy::CompileError],
    rules: &PhaseRules,
    used_by: BTreeSet<String>,
) -> RuleGroupStatus {
    let wanted = if errors.is_empty() {
        Wanted::yes(COMPILED, "Compiled", "every rule compiles")
    } else {
        Wanted::no(COMPILED, "CompileFailed", report(errors))
    };
    let count = |rules: &Vec<_>| i64::try_from(rules.len()).unwrap_or(i64::MAX);
    RuleGroupStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &old.map(|s| s.conditions.clone()).unwrap_or_default(),
            &[wanted],
            generation,
            jiff::Timestamp::now(),
        ),
        rules: RuleCounts {
            pre_dns: count(&rules.pre_dns),
            pre_request: count(&rules.pre_request),
            post_response: count(&rules.post_response),
        },
        used_by: used_by.into_iter().collect(),
    }
}
