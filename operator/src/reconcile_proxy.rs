//! Reconciling an `EgressProxy`: compile its policy, keep its certificates,
//! apply what [`crate::render`] makes of it with server-side apply, and
//! report in its status. Nothing running is replaced by something worse: a
//! policy that does not compile leaves the last good ConfigMap in place, a
//! parent CA that cannot sign leaves the last sub-CA in place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use egress_policy::{CompiledPolicy, Named, Phase, compile_for_proxy};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::certs::{self, Pems};
use crate::conditions::{self, CERTIFICATE_READY, POLICY_COMPILED, PROGRESSING, READY, Wanted};
use crate::context::Context;
use crate::crd::{EgressProxy, EgressProxyStatus, Endpoints};
use crate::error::Error;
use crate::names::{FIELD_MANAGER, Names, POLICY_HASH_ANNOTATION};
use crate::render;

/// Finalizer that removes what the proxy cannot own (its cluster-scoped
/// ClusterRoleBinding).
pub const FINALIZER: &str = "egress.dev/cleanup";

/// Longest wait before a proxy is looked at again without a change.
const RECHECK: Duration = Duration::from_secs(3600);

/// Reconciles one proxy.
pub async fn reconcile(proxy: Arc<EgressProxy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile("egressproxy");
    let namespace = proxy
        .namespace()
        .ok_or(Error::Incomplete("proxy without namespace"))?;
    let api: Api<EgressProxy> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, proxy, |event| async {
        match event {
            Event::Apply(proxy) => apply(&proxy, &ctx).await,
            Event::Cleanup(proxy) => cleanup(&proxy, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn cleanup(proxy: &EgressProxy, ctx: &Context) -> Result<Action, Error> {
    let api: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    let name = Names::of(proxy).pod_reader_binding();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Server-side apply of a namespaced object the operator owns.
async fn apply_in<K>(ctx: &Context, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?)
}

/// Deletes a namespaced object the spec no longer asks for (gone already is fine).
pub(crate) async fn remove<K>(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn secret_pems(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Pems>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await?.map(|s| certs::pems_of(&s)))
}

/// Why the policy could not be compiled: a reason and a message.
fn compile(proxy: &EgressProxy, ctx: &Context) -> Result<CompiledPolicy, (&'static str, String)> {
    let namespace = proxy.namespace().unwrap_or_default();
    let wanted = &proxy.spec.configuration_ref.name;
    let Some(configuration) = ctx.configuration(&namespace, wanted) else {
        return Err((
            "ConfigurationNotFound",
            format!(
                "ProxyConfiguration {wanted:?} does not exist in namespace {namespace:?}: create it, or set spec.configurationRef.name to one that does"
            ),
        ));
    };
    let groups = ctx.groups_of(&configuration);
    compile_for_proxy(
        &Named::new(proxy.name_any(), proxy.spec.clone()),
        &Named::new(wanted.clone(), configuration.spec.clone()),
        &groups,
    )
    .map_err(|errors| {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        (
            "CompileFailed",
            format!(
                "{} error{} in ProxyConfiguration {wanted:?} or its rule groups (their status lists each): {}",
                listed.len(),
                if listed.len() == 1 { "" } else { "s" },
                listed.join("; ")
            ),
        )
    })
}

/// The interception sub-CA: derived from the user's CA Secret, or why not.
async fn intercept_ca(
    proxy: &EgressProxy,
    ctx: &Context,
    existing: Option<&Pems>,
    now: SystemTime,
) -> Result<Result<Pems, (&'static str, String)>, Error> {
    let names = Names::of(proxy);
    let Some(reference) = &proxy.spec.tls_interception.ca_secret_ref else {
        return Ok(Err((
            "CASecretNotSet",
            "spec.tlsInterception.enabled is true but spec.tlsInterception.caSecretRef is not set: name a Secret holding tls.crt and tls.key of a CA allowed to sign one more level of CA".to_owned(),
        )));
    };
    let Some(parent) = secret_pems(ctx, &names.namespace, &reference.name).await? else {
        return Ok(Err((
            "CASecretNotFound",
            format!(
                "Secret {:?} (spec.tlsInterception.caSecretRef.name) does not exist in namespace {:?}: create it with tls.crt and tls.key (cert-manager's CA layout), optionally ca.crt",
                reference.name, names.namespace
            ),
        )));
    };
    if parent.cert.is_empty() || parent.key.is_empty() {
        return Ok(Err((
            "CASecretIncomplete",
            format!(
                "Secret {:?} must hold tls.crt and tls.key (PEM) of the parent CA",
                reference.name
            ),
        )));
    }
    let ca = (!parent.ca.is_empty()).then_some(parent.ca.as_str());
    let loaded = match egress_pki::Parent::load(&parent.cert, &parent.key, ca, now) {
        Ok(loaded) => loaded,
        Err(error) => {
            return Ok(Err((
                error.reason(),
                format!(
                    "the CA in Secret {:?} cannot be used: {error}",
                    reference.name
                ),
            )));
        }
    };
    let id = certs::parent_id(&reference.name, &parent.cert);
    let common_name = format!(
        "egress-proxy {}/{} interception",
        names.namespace, names.proxy
    );
    match certs::sub_ca(existing, &loaded, &id, &common_name, now)? {
        None => Ok(Ok(existing.cloned().unwrap_or_default())),
        Some((pems, why)) => {
            apply_in(
                ctx,
                &names.namespace,
                &render::tls_secret(
                    proxy,
                    names.intercept_ca(),
                    &pems.cert,
                    &pems.key,
                    &pems.ca,
                    pems.annotations.clone(),
                ),
            )
            .await?;
            ctx.event(
                proxy,
                false,
                &format!("SubCA{}", why.verb()),
                format!(
                    "interception sub-CA {} from Secret {:?} ({why:?}); clients keep trusting the root",
                    why.verb().to_lowercase(),
                    reference.name
                ),
            )
            .await;
            Ok(Ok(pems))
        }
    }
}

async fn apply(proxy: &EgressProxy, ctx: &Context) -> Result<Action, Error> {
    let names = Names::of(proxy);
    let namespace = names.namespace.clone();
    let now = SystemTime::now();
    let old = proxy.status.clone().unwrap_or_default();
    let mut wanted = Vec::new();
    let mut status = EgressProxyStatus {
        observed_generation: proxy.metadata.generation,
        ..EgressProxyStatus::default()
    };

    // The policy: a version that does not compile leaves the last good one.
    let policies: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let rendered_hash = policies
        .get_opt(&names.policy())
        .await?
        .and_then(|cm| cm.metadata.annotations)
        .and_then(|a| a.get(POLICY_HASH_ANNOTATION).cloned());
    match compile(proxy, ctx) {
        Ok(policy) => {
            apply_in(ctx, &namespace, &render::policy_config_map(proxy, &policy)).await?;
            if rendered_hash.as_deref() != Some(policy.hash()) {
                ctx.event(
                    proxy,
                    false,
                    "PolicyRendered",
                    format!(
                        "policy {} written to ConfigMap {}",
                        policy.hash(),
                        names.policy()
                    ),
                )
                .await;
            }
            let rules: usize = Phase::ALL.iter().map(|p| policy.rule_count(*p)).sum();
            wanted.push(Wanted::yes(
                POLICY_COMPILED,
                "Compiled",
                format!(
                    "policy {} with {rules} rules is in ConfigMap {}",
                    policy.hash(),
                    names.policy()
                ),
            ));
            status.policy_hash = Some(policy.hash().to_owned());
        }
        Err((reason, message)) => {
            let keeping = match &rendered_hash {
                Some(hash) => format!(" The last good policy {hash} keeps serving."),
                None => " No policy has been rendered yet: the gateway stays unready until this is fixed.".to_owned(),
            };
            wanted.push(Wanted::no(
                POLICY_COMPILED,
                reason,
                format!("{message}.{keeping}"),
            ));
            status.policy_hash = rendered_hash;
        }
    }

    // Certificates: the listener's, and the sub-CA when interception is on.
    let cluster_domain = ctx.settings.cluster_domain.clone();
    let listener_ca = secret_pems(ctx, &namespace, &names.listener_ca()).await?;
    let listener_ca = match certs::own_ca(
        listener_ca.as_ref(),
        &format!("egress-proxy {namespace}/{} listener CA", names.proxy),
        now,
    )? {
        None => listener_ca.unwrap_or_default(),
        Some((pems, _)) => {
            apply_in(
                ctx,
                &namespace,
                &render::tls_secret(
                    proxy,
                    names.listener_ca(),
                    &pems.cert,
                    &pems.key,
                    &pems.ca,
                    BTreeMap::new(),
                ),
            )
            .await?;
            pems
        }
    };
    let serving = secret_pems(ctx, &namespace, &names.tls()).await?;
    let serving = match certs::serving(
        serving.as_ref(),
        &listener_ca,
        &names.service_dns_names(&cluster_domain),
        now,
    )? {
        None => serving.unwrap_or_default(),
        Some((pems, _)) => {
            apply_in(
                ctx,
                &namespace,
                &render::tls_secret(
                    proxy,
                    names.tls(),
                    &pems.cert,
                    &pems.key,
                    &pems.ca,
                    BTreeMap::new(),
                ),
            )
            .await?;
            pems
        }
    };
    let mut renewals = vec![
        certs::renewal_at(&listener_ca.cert),
        certs::renewal_at(&serving.cert),
    ];
    let existing_sub_ca = secret_pems(ctx, &namespace, &names.intercept_ca()).await?;
    let mut intercept_roots = None;
    if proxy.spec.tls_interception.enabled {
        match intercept_ca(proxy, ctx, existing_sub_ca.as_ref(), now).await? {
            Ok(sub_ca) => {
                renewals.push(certs::renewal_at(&sub_ca.cert));
                status.intercept_ca_not_after = egress_pki::inspect(&sub_ca.cert)
                    .ok()
                    .and_then(|i| jiff::Timestamp::try_from(i.not_after).ok())
                    .map(|t| t.to_string());
                wanted.push(Wanted::yes(
                    CERTIFICATE_READY,
                    "Issued",
                    format!(
                        "listener certificate in Secret {} and interception sub-CA in Secret {} (expires {})",
                        names.tls(),
                        names.intercept_ca(),
                        status.intercept_ca_not_after.as_deref().unwrap_or("?")
                    ),
                ));
                intercept_roots = Some(sub_ca.ca);
            }
            Err((reason, message)) => {
                let already = old
                    .conditions
                    .iter()
                    .any(|c| c.type_ == CERTIFICATE_READY && c.reason == reason);
                if !already {
                    ctx.event(proxy, true, "ParentCARefused", message.clone())
                        .await;
                }
                // The sub-CA issued before keeps serving.
                if let Some(previous) = &existing_sub_ca {
                    intercept_roots = Some(previous.ca.clone());
                }
                let keeping = if existing_sub_ca.is_some() {
                    " The sub-CA issued before keeps serving."
                } else {
                    " Intercepted tunnels fail until this is fixed."
                };
                wanted.push(Wanted::no(
                    CERTIFICATE_READY,
                    reason,
                    format!("{message}.{keeping}"),
                ));
            }
        }
    } else {
        wanted.push(Wanted::yes(
            CERTIFICATE_READY,
            "Issued",
            format!(
                "listener certificate in Secret {} (interception is off)",
                names.tls()
            ),
        ));
    }
    apply_in(
        ctx,
        &namespace,
        &render::trust_bundle(proxy, intercept_roots.as_deref(), &listener_ca.cert),
    )
    .await?;

    // The gateway itself.
    apply_in::<ServiceAccount>(ctx, &namespace, &render::service_account(proxy)).await?;
    apply_in::<Role>(ctx, &namespace, &render::role(proxy)).await?;
    apply_in::<RoleBinding>(ctx, &namespace, &render::role_binding(proxy)).await?;
    let bindings: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    let binding = render::pod_reader_binding(proxy);
    bindings
        .patch(
            &names.pod_reader_binding(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&binding),
        )
        .await?;
    apply_in::<Service>(ctx, &namespace, &render::service(proxy)).await?;
    let deployment: Deployment =
        apply_in(ctx, &namespace, &render::deployment(proxy, &ctx.settings)).await?;
    match render::pod_disruption_budget(proxy) {
        Some(pdb) => drop(apply_in::<PodDisruptionBudget>(ctx, &namespace, &pdb).await?),
        None => remove::<PodDisruptionBudget>(ctx, &namespace, &names.workload()).await?,
    }
    match render::autoscaler(proxy) {
        Some(hpa) => drop(apply_in::<HorizontalPodAutoscaler>(ctx, &namespace, &hpa).await?),
        None => remove::<HorizontalPodAutoscaler>(ctx, &namespace, &names.workload()).await?,
    }

    // Status.
    let (ready, progressing) = rollout(&deployment);
    status.ready_replicas = ready;
    status.endpoints = Some(Endpoints {
        http: format!(
            "http://{}.{namespace}.svc:{}",
            names.proxy, proxy.spec.listeners.http_port
        ),
        https: format!(
            "https://{}.{namespace}.svc:{}",
            names.proxy, proxy.spec.listeners.https_port
        ),
    });
    wanted.push(progressing);
    wanted.push(readiness(
        &names,
        status.policy_hash.as_deref(),
        ready,
        &deployment,
    ));
    status.conditions = conditions::merge(
        &old.conditions,
        &wanted,
        proxy.metadata.generation,
        jiff::Timestamp::now(),
    );
    // `status.clients` is the clients reconciler's (its own field manager):
    // compared as it is, never applied from here.
    status.clients = old.clients.clone();
    if Some(&status) != proxy.status.as_ref() {
        let api: Api<EgressProxy> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": EgressProxy::api_version(&()),
            "kind": EgressProxy::kind(&()),
            "status": EgressProxyStatus { clients: None, ..status },
        });
        api.patch_status(
            &names.proxy,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    }
    let next = renewals
        .into_iter()
        .flatten()
        .filter_map(|at| at.duration_since(now).ok())
        .min()
        .unwrap_or(RECHECK)
        .min(RECHECK);
    Ok(Action::requeue(next.max(Duration::from_secs(1))))
}

/// Ready pods, and whether a rollout is under way.
fn rollout(deployment: &Deployment) -> (i32, Wanted) {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.observed_generation >= deployment.metadata.generation;
    let progressing = if current && updated >= desired && status.replicas.unwrap_or(0) == updated {
        Wanted::no(
            PROGRESSING,
            "Stable",
            format!("{updated} of {desired} gateway pods run the current template"),
        )
    } else {
        Wanted::yes(
            PROGRESSING,
            "RollingOut",
            format!("{updated} of {desired} gateway pods updated, {ready} ready"),
        )
    };
    (ready, progressing)
}

fn readiness(names: &Names, policy: Option<&str>, ready: i32, deployment: &Deployment) -> Wanted {
    let desired = deployment.spec.replicas.unwrap_or(1);
    match policy {
        None => Wanted::no(
            READY,
            "NoPolicy",
            "no valid policy has been rendered yet: see the PolicyCompiled condition",
        ),
        Some(_) if ready == 0 => Wanted::no(
            READY,
            "NoReadyPods",
            format!(
                "0 of {desired} gateway pods are ready: kubectl -n {} describe deployment/{}",
                names.namespace, names.proxy
            ),
        ),
        Some(hash) => Wanted::yes(
            READY,
            "Serving",
            format!("{ready} of {desired} gateway pods ready with policy {hash}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    use super::*;

    fn deployment(desired: i32, generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment {
            spec: DeploymentSpec {
                replicas: Some(desired),
                ..DeploymentSpec::default()
            },
            status: Some(status),
            ..Deployment::default()
        };
        d.metadata.generation = Some(generation);
        d
    }

    fn names() -> Names {
        Names {
            proxy: "egress".to_owned(),
            namespace: "team-a".to_owned(),
        }
    }

    #[test]
    fn readiness_needs_a_policy_and_a_ready_pod() {
        let settled = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(2),
            ..DeploymentStatus::default()
        };
        let d = deployment(2, 2, settled.clone());
        let (ready, progressing) = rollout(&d);
        assert_eq!(ready, 2);
        assert_eq!((progressing.status, progressing.reason), (false, "Stable"));
        let serving = readiness(&names(), Some("sha256:1"), ready, &d);
        assert_eq!((serving.status, serving.reason), (true, "Serving"));
        assert!(serving.message.contains("2 of 2"), "{}", serving.message);
        let no_policy = readiness(&names(), None, ready, &d);
        assert_eq!((no_policy.status, no_policy.reason), (false, "NoPolicy"));
        let none_ready = readiness(&names(), Some("sha256:1"), 0, &d);
        assert_eq!(none_ready.reason, "NoReadyPods");
        assert!(
            none_ready
                .message
                .contains("kubectl -n team-a describe deployment/egress")
        );
    }

    #[test]
    fn a_new_template_or_missing_pods_is_progress() {
        let behind = deployment(
            2,
            3,
            DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(2),
                updated_replicas: Some(2),
                ready_replicas: Some(2),
                ..DeploymentStatus::default()
            },
        );
        assert_eq!(rollout(&behind).1.reason, "RollingOut");
        let surging = deployment(
            2,
            3,
            DeploymentStatus {
                observed_generation: Some(3),
                replicas: Some(3),
                updated_replicas: Some(1),
                ready_replicas: Some(2),
                ..DeploymentStatus::default()
            },
        );
        let (ready, progressing) = rollout(&surging);
        assert_eq!((ready, progressing.status), (2, true));
        assert!(
            progressing.message.contains("1 of 2"),
            "{}",
            progressing.message
        );
    }
}
