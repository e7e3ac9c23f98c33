//! Reconciling an `EgressProxy`: observe what the caches and the API server
//! hold, let [`crate::proxy_plan`] decide (no I/O there), apply each planned
//! object with server-side apply, and write the status the outcome gives.

use std::sync::Arc;
use std::time::SystemTime;

use egress_policy::{Named, parts};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};

use crate::certs::{self, Pems};
use crate::context::{Context, NamespacedKind};
use crate::crd::{EgressProxy, EgressProxyStatus};
use crate::error::Error;
use crate::names::{FIELD_MANAGER, MANAGER, Names, POLICY_HASH_ANNOTATION, is_owned_by};
use crate::proxy_plan::{self, Failure, Note, Object, Read, Snapshot, Step};

/// Finalizer that removed what the proxy could not own (the cluster-scoped
/// pod reader binding of earlier versions): kept so that the proxies those
/// versions made are released when deleted.
pub const FINALIZER: &str = "egress.dev/cleanup";

/// Reconciles one proxy.
pub async fn reconcile(proxy: Arc<EgressProxy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = ctx.proxies_api(&proxy)?;
    finalizer(&api, FINALIZER, proxy, |event| async {
        match event {
            Event::Apply(proxy) => apply(&proxy, &ctx).await,
            Event::Cleanup(proxy) => cleanup(&proxy, &ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

async fn cleanup(proxy: &EgressProxy, ctx: &Context) -> Result<Action, Error> {
    remove_cluster_pod_reader(ctx, &Names::of(proxy)).await?;
    Ok(Action::await_change())
}

/// Removes the cluster-wide pod reader binding an earlier version made for
/// the proxy, if it is there and still this operator's: gateways now read
/// pods only in the namespaces they serve.
pub async fn remove_cluster_pod_reader(ctx: &Context, names: &Names) -> Result<(), Error> {
    let api: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    let name = names.pod_reader_binding();
    let Some(binding) = api.get_metadata_opt(&name).await? else {
        return Ok(());
    };
    let labels = binding.labels();
    let ours = labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some(MANAGER)
        && labels.get("app.kubernetes.io/instance") == Some(&names.proxy);
    if ours {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(binding = %name, "cluster-wide pod reader binding removed"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Server-side apply of a namespaced object the operator owns.
async fn apply_in<K>(ctx: &Context, namespace: &str, object: &K) -> Result<K, Error>
where
    K: NamespacedKind,
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
    K: NamespacedKind,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads one object: absent, present, or why not.
async fn read<K>(ctx: &Context, namespace: &str, name: &str) -> Read<K>
where
    K: NamespacedKind,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|error| refusal(ctx, namespace, K::kind(&()) == "Secret", &error.into()))
}

/// What the API server said, without the rest of its response; for a
/// Secret it may not touch, how the namespace opts in.
fn refusal(ctx: &Context, namespace: &str, secret: bool, error: &Error) -> String {
    match error {
        Error::Kube(kube::Error::Api(status)) => {
            let said = format!("{} ({})", status.message, status.reason);
            if secret && status.code == 403 {
                format!("{said}; {}", ctx.secrets_opt_in.advice(namespace))
            } else {
                said
            }
        }
        other => other.to_string(),
    }
}

/// The objects this proxy renders, read to see whose they are: one of the
/// same name that names another controller (or none) is recorded in
/// `taken` and read as absent, so nothing of it is used.
struct Owned<'a> {
    ctx: &'a Context,
    proxy: &'a EgressProxy,
    namespace: &'a str,
    taken: Vec<String>,
    unchecked: Vec<(String, String)>,
}

impl Owned<'_> {
    /// The whole object, when it is the proxy's.
    async fn read<K>(&mut self, name: &str) -> Read<K>
    where
        K: NamespacedKind,
    {
        let found = read::<K>(self.ctx, self.namespace, name).await?;
        Ok(found.filter(|object| self.mine(object.meta(), K::kind(&()).as_ref(), name)))
    }

    /// Only whether an object of this name is someone else's.
    async fn check<K>(&mut self, name: &str)
    where
        K: NamespacedKind,
    {
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        match api.get_metadata_opt(name).await {
            Ok(Some(object)) => {
                self.mine(&object.metadata, K::kind(&()).as_ref(), name);
            }
            Ok(None) => {}
            Err(error) => self
                .unchecked
                .push((format!("{} {name}", K::kind(&())), error.to_string())),
        }
    }

    fn mine(&mut self, meta: &ObjectMeta, kind: &str, name: &str) -> bool {
        let mine = is_owned_by(meta, self.proxy);
        if !mine {
            self.taken.push(format!("{kind} {name}"));
        }
        mine
    }
}

async fn read_pems(owned: &mut Owned<'_>, name: &str) -> Read<Pems> {
    owned
        .read::<Secret>(name)
        .await
        .map(|secret| secret.as_ref().map(certs::pems_of))
}

/// What the plan is made from: the caches, and the objects the proxy's
/// certificates and status depend on, each only if it is the proxy's own.
async fn observe(proxy: &EgressProxy, ctx: &Context) -> Snapshot {
    let names = Names::of(proxy);
    let namespace = &names.namespace;
    let wanted = &proxy.spec.configuration_ref.name;
    let configuration = ctx.configuration(namespace, wanted);
    let groups = configuration
        .as_deref()
        .map(|c| ctx.groups_of(c))
        .unwrap_or_default();
    let lists = ctx.lists_named_by(namespace, &groups);
    let baseline = ctx.baseline_for(namespace);
    let cluster_lists = ctx.cluster_lists_named_by(&baseline);
    let interception = &proxy.spec.tls_interception;
    // The user's parent CA is theirs: read, never owned.
    let parent = match (&interception.ca_secret_ref, interception.enabled) {
        (Some(reference), true) => Some(
            read::<Secret>(ctx, namespace, &reference.name)
                .await
                .map(|secret| secret.as_ref().map(certs::pems_of)),
        ),
        _ => None,
    };
    let destination_ca = match &proxy.spec.destinations.ca_bundle_ref {
        Some(reference) => Some(
            read::<ConfigMap>(ctx, namespace, &reference.name)
                .await
                .map(|cm| cm.and_then(|cm| cm.data?.get(&reference.key).cloned())),
        ),
        None => None,
    };
    // The credentials' Secrets are the user's: only their keys are kept.
    let mut credential_secrets: Vec<(String, Read<Vec<String>>)> = Vec::new();
    for credential in &proxy.spec.credentials {
        let secret = &credential.secret_ref.name;
        if credential_secrets.iter().any(|(name, _)| name == secret) {
            continue;
        }
        let keys = read::<Secret>(ctx, namespace, secret)
            .await
            .map(|found| found.map(|s| s.data.unwrap_or_default().into_keys().collect()));
        credential_secrets.push((secret.clone(), keys));
    }
    let mut owned = Owned {
        ctx,
        proxy,
        namespace,
        taken: Vec::new(),
        unchecked: Vec::new(),
    };
    let rendered_policy = owned.read::<ConfigMap>(&names.policy()).await;
    let rendered_parts = match &rendered_policy {
        Ok(Some(cm)) => cm
            .data
            .as_ref()
            .and_then(|d| d.get(parts::MANIFEST_KEY))
            .and_then(|m| parts::Manifest::from_json(m).ok())
            .map(|m| m.parts.into_iter().map(|p| p.name).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let rendered_policy_hash = rendered_policy.map(|cm| {
        cm.and_then(|cm| cm.metadata.annotations)
            .and_then(|a| a.get(POLICY_HASH_ANNOTATION).cloned())
    });
    let listener_ca = read_pems(&mut owned, &names.listener_ca()).await;
    let listener_ca_next = read_pems(&mut owned, &names.listener_ca_next()).await;
    let serving = read_pems(&mut owned, &names.tls()).await;
    let sub_ca = read_pems(&mut owned, &names.intercept_ca()).await;
    let deployment = owned.read::<Deployment>(&names.workload()).await;
    let workload = names.workload();
    owned.check::<ConfigMap>(&names.trust_bundle()).await;
    owned.check::<ServiceAccount>(&workload).await;
    owned.check::<Role>(&workload).await;
    owned.check::<RoleBinding>(&workload).await;
    owned.check::<Service>(&workload).await;
    owned.check::<PodDisruptionBudget>(&workload).await;
    owned.check::<HorizontalPodAutoscaler>(&workload).await;
    Snapshot {
        configuration: configuration.map(|c| Named::new(wanted.clone(), c.spec.clone())),
        groups,
        lists,
        baseline,
        cluster_lists,
        rendered_policy_hash,
        rendered_parts,
        listener_ca,
        listener_ca_next,
        serving,
        sub_ca,
        parent,
        deployment,
        destination_ca,
        credential_secrets,
        taken: owned.taken,
        unchecked: owned.unchecked,
    }
}

/// Applies one object; a Deployment comes back as the API server has it.
async fn apply_object(
    ctx: &Context,
    namespace: &str,
    object: &Object,
) -> Result<Option<Deployment>, Error> {
    match object {
        Object::ConfigMap(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::Secret(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::ServiceAccount(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::Role(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::RoleBinding(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::Service(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::Deployment(o) => return Ok(Some(apply_in(ctx, namespace, o).await?)),
        Object::PodDisruptionBudget(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::HorizontalPodAutoscaler(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::RemovePodDisruptionBudget(name) => {
            remove::<PodDisruptionBudget>(ctx, namespace, name).await?;
        }
        Object::RemoveHorizontalPodAutoscaler(name) => {
            remove::<HorizontalPodAutoscaler>(ctx, namespace, name).await?;
        }
        Object::RemoveSecret(name) => remove::<Secret>(ctx, namespace, name).await?,
        Object::PolicyPart(o) => drop(apply_in(ctx, namespace, o).await?),
        Object::RemovePolicyPart(name) => remove::<ConfigMap>(ctx, namespace, name).await?,
    }
    Ok(None)
}

/// For a policy part, whose an object of its name is, read just before it
/// is written or removed: a refusal when it is someone else's or cannot be
/// told (other objects are checked when observed).
async fn part_refusal(ctx: &Context, proxy: &EgressProxy, step: &Step) -> Option<Failure> {
    let (Object::PolicyPart(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name), ..
        },
        ..
    })
    | Object::RemovePolicyPart(name)) = &step.object
    else {
        return None;
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &proxy.namespace()?);
    match api.get_metadata_opt(name).await {
        Ok(Some(found)) if !is_owned_by(&found.metadata, proxy) => Some(Failure::taken(step)),
        Ok(_) => None,
        Err(error) => Some(Failure::refused(
            step,
            format!("whose it is could not be checked, so it is not written: {error}"),
        )),
    }
}

async fn publish(ctx: &Context, proxy: &EgressProxy, note: &Note) {
    ctx.event(proxy, note.warning, &note.reason, note.message.clone())
        .await;
}

/// Observe, plan, apply: every planned object is applied on its own, so one
/// the API server refuses leaves the others, the events and the status to
/// be written; the refusal is in the status, and the reconcile fails so it
/// is retried with backoff.
async fn apply(proxy: &EgressProxy, ctx: &Context) -> Result<Action, Error> {
    let names = Names::of(proxy);
    let namespace = names.namespace.clone();
    let snapshot = observe(proxy, ctx).await;
    // Compiling and gzipping a large policy takes a second or more: off the
    // runtime's worker, so the watches keep the caches current meanwhile.
    let plan = tokio::task::block_in_place(|| {
        proxy_plan::plan(proxy, &snapshot, &ctx.settings, SystemTime::now())
    })?;
    for note in &plan.events {
        publish(ctx, proxy, note).await;
    }
    let mut failures = Vec::new();
    let mut deployment = snapshot.deployment.clone();
    for step in &plan.steps {
        if step.taken {
            failures.push(Failure::taken(step));
            continue;
        }
        if let Some(why) = &step.unchecked {
            failures.push(Failure::refused(
                step,
                format!("whose it is could not be checked, so it is not written: {why}"),
            ));
            continue;
        }
        if step.needs_earlier && failures.iter().any(|f| f.condition == step.condition) {
            continue;
        }
        if let Some(refused) = part_refusal(ctx, proxy, step).await {
            failures.push(refused);
            continue;
        }
        match apply_object(ctx, &namespace, &step.object).await {
            Ok(applied) => {
                if let Some(applied) = applied {
                    deployment = Ok(Some(applied));
                }
                if let Some(note) = &step.event {
                    publish(ctx, proxy, note).await;
                }
            }
            Err(error) => {
                let secret = matches!(step.object, Object::Secret(_) | Object::RemoveSecret(_));
                failures.push(Failure::refused(
                    step,
                    refusal(ctx, &namespace, secret, &error),
                ));
            }
        }
    }
    let (status, notes) = proxy_plan::outcome(
        proxy,
        &plan,
        &failures,
        deployment
            .as_ref()
            .map(Option::as_ref)
            .map_err(String::as_str),
        jiff::Timestamp::now(),
    );
    for note in &notes {
        publish(ctx, proxy, note).await;
    }
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
    if !failures.is_empty() {
        let listed: Vec<String> = failures
            .iter()
            .map(|f| format!("{}: {}", f.object, f.error))
            .collect();
        return Err(Error::Apply(listed.join("; ")));
    }
    Ok(Action::requeue(plan.requeue))
}
