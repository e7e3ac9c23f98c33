//! Reconciling `ProxyConfiguration`s and `ProxyRuleGroup`s: nothing is
//! rendered for them; their status says whether they compile (every error,
//! with its path) and which proxies use them.

use std::sync::Arc;
use std::time::Duration;

use egress_policy::{Named, Phase, compile, validate_rule_group};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use crate::conditions::{self, COMPILED, Wanted};
use crate::context::Context;
use crate::crd::{
    ConfigurationStatus, ProxyConfiguration, ProxyRuleGroup, RuleCounts, RuleGroupStatus,
};
use crate::error::Error;
use crate::names::FIELD_MANAGER;

/// Writes `status` on `object` with server-side apply, unless unchanged.
async fn write_status<K, S>(
    ctx: &Context,
    object: &K,
    current: Option<&S>,
    status: S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(&status) {
        return Ok(());
    }
    let namespace = object
        .meta()
        .namespace
        .clone()
        .ok_or(Error::Incomplete("object without namespace"))?;
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::Incomplete("object without name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
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
    let _timer = ctx.metrics.reconcile("proxyconfiguration");
    let namespace = configuration.namespace().unwrap_or_default();
    let name = configuration.name_any();
    let groups = ctx.groups_of(&configuration);
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
    let wanted = match compile(
        &Named::new(name.clone(), configuration.spec.clone()),
        &groups,
    ) {
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
    write_status(
        &ctx,
        configuration.as_ref(),
        configuration.status.as_ref(),
        status,
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}

/// Reconciles one rule group.
pub async fn reconcile_group(
    group: Arc<ProxyRuleGroup>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile("proxyrulegroup");
    let namespace = group.namespace().unwrap_or_default();
    let name = group.name_any();
    let old = group.status.clone().unwrap_or_default();
    let count = |rules: &Vec<_>| i64::try_from(rules.len()).unwrap_or(i64::MAX);
    let errors = validate_rule_group(&group.spec);
    let wanted = if errors.is_empty() {
        Wanted::yes(COMPILED, "Compiled", "every rule compiles")
    } else {
        Wanted::no(COMPILED, "CompileFailed", report(&errors))
    };
    let status = RuleGroupStatus {
        observed_generation: group.metadata.generation,
        conditions: conditions::merge(
            &old.conditions,
            &[wanted],
            group.metadata.generation,
            jiff::Timestamp::now(),
        ),
        rules: RuleCounts {
            pre_dns: count(&group.spec.rules.pre_dns),
            pre_request: count(&group.spec.rules.pre_request),
            post_response: count(&group.spec.rules.post_response),
        },
        used_by: ctx
            .proxies_using_group(&namespace, &name)
            .into_iter()
            .collect(),
    };
    write_status(&ctx, group.as_ref(), group.status.as_ref(), status).await?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}
