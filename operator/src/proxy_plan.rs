//! What reconciling an `EgressProxy` should do, decided without I/O. A
//! [`Snapshot`] of what the caches and the API server hold goes in; a
//! [`Plan`] comes out: the objects to apply, each tied to the condition its
//! failure turns false, the events, and when to look again. Once the plan is
//! applied, [`outcome`] turns what happened into the status and the events
//! about failures. The reconciler (`reconcile_proxy`) only reads and writes.
//!
//! Nothing running is replaced by something worse: a policy that does not
//! compile leaves the last good ConfigMap in place, a parent CA that cannot
//! sign leaves the last sub-CA in place, a certificate Secret that could not
//! be read is not replaced by a new one, and one object the API server
//! refuses does not keep the others, the certificates or the status from
//! being written.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use egress_policy::parts::PartSet;
use egress_policy::spec::{ProxyConfigurationSpec, ProxyListSpec, ProxyRuleGroupSpec};
use egress_policy::{Available, CompiledPolicy, Named, Phase, compile_for_proxy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;

use crate::certs::{self, CaStep, Pems};
use crate::conditions::{
    self, CERTIFICATE_READY, CREDENTIALS_READY, POLICY_COMPILED, PROGRESSING, READY, Wanted,
};
use crate::crd::{EgressProxy, EgressProxyStatus, Endpoints};
use crate::names::Names;
use crate::render::{self, Settings};

/// Longest wait before a proxy is looked at again without a change.
pub const RECHECK: Duration = Duration::from_secs(3600);
/// How soon a plan made while something could not be read is made again:
/// a refusal (a namespace that has not opted in to the operator's Secrets
/// role yet) or an outage may end without any event to say so.
pub const RETRY_UNREADABLE: Duration = Duration::from_secs(15);

/// An object as read from the API server: absent, present, or why it could
/// not be read.
pub type Read<T> = Result<Option<T>, String>;

/// What the plan is made from.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The ProxyConfiguration the proxy names, if it exists.
    pub configuration: Option<Named<ProxyConfigurationSpec>>,
    /// The rule groups it lists that exist.
    pub groups: Vec<Named<ProxyRuleGroupSpec>>,
    /// The lists those groups name that exist.
    pub lists: Vec<Named<ProxyListSpec>>,
    /// The ClusterProxyRuleGroups that select the proxy's namespace.
    pub baseline: Vec<Named<ProxyRuleGroupSpec>>,
    /// The ClusterProxyLists those name that exist.
    pub cluster_lists: Vec<Named<ProxyListSpec>>,
    /// The hash annotation of the policy ConfigMap.
    pub rendered_policy_hash: Read<String>,
    /// The parts the policy ConfigMap names (none: it holds the JSON, or
    /// could not be read).
    pub rendered_parts: Vec<String>,
    /// `<proxy>-listener-ca`.
    pub listener_ca: Read<Pems>,
    /// `<proxy>-listener-ca-next`: its successor, while one is staged.
    pub listener_ca_next: Read<Pems>,
    /// `<proxy>-tls`.
    pub serving: Read<Pems>,
    /// `<proxy>-intercept-ca`.
    pub sub_ca: Read<Pems>,
    /// The parent CA Secret `spec.tlsInterception.caSecretRef` names (not
    /// read when interception is off or no Secret is named).
    pub parent: Option<Read<Pems>>,
    /// The gateway Deployment, for its rollout status.
    pub deployment: Read<Deployment>,
    /// The PEM of `spec.destinations.caBundleRef` (not read when none is
    /// named; absent when the ConfigMap or its key is missing).
    pub destination_ca: Option<Read<String>>,
    /// The keys (never the values) of each Secret `spec.credentials` names,
    /// by Secret name.
    pub credential_secrets: Vec<(String, Read<Vec<String>>)>,
    /// Objects with the names this proxy renders that exist and are not its
    /// own (`Kind name`): made by someone else, never written or removed
    /// (and a Secret among them is not read as this proxy's certificate).
    pub taken: Vec<String>,
    /// Objects whose owner could not be checked, and why: not written
    /// either (a write could take over what it cannot see).
    pub unchecked: Vec<(String, String)>,
}

impl Snapshot {
    /// Whether anything could not be read.
    pub fn incomplete(&self) -> bool {
        self.rendered_policy_hash.is_err()
            || self.listener_ca.is_err()
            || self.listener_ca_next.is_err()
            || self.serving.is_err()
            || self.sub_ca.is_err()
            || self.parent.as_ref().is_some_and(Result::is_err)
            || self.deployment.is_err()
            || self.destination_ca.as_ref().is_some_and(Result::is_err)
            || self
                .credential_secrets
                .iter()
                .any(|(_, keys)| keys.is_err())
            || !self.unchecked.is_empty()
    }
}

/// A Kubernetes event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// A warning (or a normal event).
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// One object the operator renders for a proxy, or one it removes.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// The policy or the trust bundle.
    ConfigMap(ConfigMap),
    /// A certificate.
    Secret(Secret),
    /// The gateway's ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// The gateway's Role.
    Role(Role),
    /// Its binding.
    RoleBinding(RoleBinding),
    /// The proxy's Service.
    Service(Service),
    /// The gateway.
    Deployment(Deployment),
    /// With several replicas.
    PodDisruptionBudget(PodDisruptionBudget),
    /// With `spec.autoscaling`.
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    /// A PodDisruptionBudget no longer asked for (by name).
    RemovePodDisruptionBudget(String),
    /// A HorizontalPodAutoscaler no longer asked for (by name).
    RemoveHorizontalPodAutoscaler(String),
    /// A Secret no longer needed (by name).
    RemoveSecret(String),
    /// A part of a policy too large for one ConfigMap: whose an object of
    /// its name is, is read just before it is written (how many parts a
    /// policy takes is known only once it is compiled).
    PolicyPart(ConfigMap),
    /// A part the policy ConfigMap no longer names (by name); read the same
    /// way before it is removed.
    RemovePolicyPart(String),
}

impl Object {
    /// `Kind name`, as status messages name it.
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Object::ConfigMap(o) => ("ConfigMap", o.name_any()),
            Object::Secret(o) => ("Secret", o.name_any()),
            Object::ServiceAccount(o) => ("ServiceAccount", o.name_any()),
            Object::Role(o) => ("Role", o.name_any()),
            Object::RoleBinding(o) => ("RoleBinding", o.name_any()),
            Object::Service(o) => ("Service", o.name_any()),
            Object::Deployment(o) => ("Deployment", o.name_any()),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", o.name_any()),
            Object::HorizontalPodAutoscaler(o) => ("HorizontalPodAutoscaler", o.name_any()),
            Object::RemovePodDisruptionBudget(name) => {
                ("PodDisruptionBudget (removal)", name.clone())
            }
            Object::RemoveHorizontalPodAutoscaler(name) => {
                ("HorizontalPodAutoscaler (removal)", name.clone())
            }
            Object::RemoveSecret(name) => ("Secret (removal)", name.clone()),
            Object::PolicyPart(o) => ("ConfigMap", o.name_any()),
            Object::RemovePolicyPart(name) => ("ConfigMap (removal)", name.clone()),
        };
        format!("{kind} {name}")
    }
}

/// An object to apply, the condition its failure turns false, and the
/// event to publish once it is applied.
#[derive(Clone, Debug)]
pub struct Step {
    /// What to apply.
    pub object: Object,
    /// The condition a failure turns false (reason `ApplyFailed`).
    pub condition: &'static str,
    /// Published once the object is applied.
    pub event: Option<Note>,
    /// Applied only when no earlier step of the same condition failed: it
    /// names what they write (a certificate issued by a CA that was not
    /// stored, a trust bundle of roots the gateway does not use).
    pub needs_earlier: bool,
    /// An object of this name exists and is not this proxy's: refused
    /// without asking the API server (reason `NameTaken`).
    pub taken: bool,
    /// Whose an object of this name is could not be checked (why): not
    /// written until it can be.
    pub unchecked: Option<String>,
}

/// What reconciling one proxy should do.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Applied in order, each on its own.
    pub steps: Vec<Step>,
    /// The conditions if every step is applied.
    pub conditions: Vec<Wanted>,
    /// Events to publish whatever the steps do.
    pub events: Vec<Note>,
    /// The policy the gateway gets (or keeps).
    pub policy_hash: Option<String>,
    /// The policy in the ConfigMap before this plan (what the gateway keeps
    /// if the new one cannot be written).
    pub rendered_policy_hash: Option<String>,
    /// When the interception sub-CA expires.
    pub intercept_ca_not_after: Option<String>,
    /// When to look again without a change (the next certificate renewal).
    pub requeue: Duration,
}

/// Why a policy could not be compiled: a reason and a message.
fn compile(
    proxy: &EgressProxy,
    snapshot: &Snapshot,
) -> Result<CompiledPolicy, (&'static str, String)> {
    let namespace = proxy.namespace().unwrap_or_default();
    let wanted = &proxy.spec.configuration_ref.name;
    let Some(configuration) = &snapshot.configuration else {
        return Err((
            "ConfigurationNotFound",
            format!(
                "ProxyConfiguration {wanted:?} does not exist in namespace {namespace:?}: create it, or set spec.configurationRef.name to one that does"
            ),
        ));
    };
    compile_for_proxy(
        &Named::new(proxy.name_any(), proxy.spec.clone()),
        configuration,
        Available {
            groups: &snapshot.groups,
            lists: &snapshot.lists,
            baseline: &snapshot.baseline,
            cluster_lists: &snapshot.cluster_lists,
        },
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

/// The plan for `proxy` given `snapshot`, at `now`. Fails only when a
/// certificate cannot be generated.
pub fn plan(
    proxy: &EgressProxy,
    snapshot: &Snapshot,
    settings: &Settings,
    now: SystemTime,
) -> Result<Plan, egress_pki::Error> {
    let names = Names::of(proxy);
    let mut plan = Plan {
        steps: Vec::new(),
        conditions: Vec::new(),
        events: Vec::new(),
        policy_hash: None,
        // Unreadable: what the status said last is the best knowledge.
        rendered_policy_hash: match &snapshot.rendered_policy_hash {
            Ok(hash) => hash.clone(),
            Err(_) => proxy.status.as_ref().and_then(|s| s.policy_hash.clone()),
        },
        intercept_ca_not_after: None,
        requeue: RECHECK,
    };
    plan_policy(proxy, snapshot, &names, &mut plan);
    plan.conditions.push(credentials(proxy, snapshot, &names));
    let certificates = plan_certificates(proxy, snapshot, settings, &names, now, &mut plan)?;
    plan.requeue = certificates
        .renewals
        .iter()
        .flatten()
        .filter_map(|at| at.duration_since(now).ok())
        .min()
        .unwrap_or(RECHECK)
        .min(RECHECK)
        .max(Duration::from_secs(1));
    if snapshot.incomplete() {
        plan.requeue = plan.requeue.min(RETRY_UNREADABLE);
    }
    if let Some(listener_ca) = &certificates.listener_ca {
        plan.steps.push(Step {
            object: Object::ConfigMap(render::trust_bundle(
                proxy,
                certificates.intercept_roots.as_deref(),
                listener_ca,
            )),
            condition: CERTIFICATE_READY,
            event: None,
            needs_earlier: true,
            taken: false,
            unchecked: None,
        });
    }
    let destination_ca = destination_ca(proxy, snapshot);
    if let Err((reason, message)) = &destination_ca {
        let message = format!(
            "{message}: Deployment {} is left as it is (its pods keep the bundle they started with) until this is fixed",
            names.workload()
        );
        match plan
            .conditions
            .iter_mut()
            .find(|w| w.type_ == CERTIFICATE_READY && !w.status)
        {
            // Another certificate problem already: both are said, its reason stays.
            Some(earlier) => earlier.message = format!("{}; and {message}", earlier.message),
            None => {
                plan.conditions.retain(|w| w.type_ != CERTIFICATE_READY);
                plan.conditions
                    .push(Wanted::no(CERTIFICATE_READY, reason, message));
            }
        }
    }
    plan_gateway(proxy, settings, &names, destination_ca.ok(), &mut plan);
    // What someone else made is neither written nor removed.
    plan.steps.retain(|step| match &step.object {
        Object::RemovePodDisruptionBudget(name) => !snapshot
            .taken
            .contains(&format!("PodDisruptionBudget {name}")),
        Object::RemoveHorizontalPodAutoscaler(name) => !snapshot
            .taken
            .contains(&format!("HorizontalPodAutoscaler {name}")),
        Object::RemoveSecret(name) => !snapshot.taken.contains(&format!("Secret {name}")),
        _ => true,
    });
    for step in &mut plan.steps {
        let object = step.object.describe();
        step.taken = snapshot.taken.contains(&object);
        step.unchecked = snapshot
            .unchecked
            .iter()
            .find(|(o, _)| *o == object)
            .map(|(_, why)| why.clone());
    }
    // No parts for a policy ConfigMap that will not be written: it is
    // someone else's, or whose it is could not be told (it says so itself).
    let policy = format!("ConfigMap {}", names.policy());
    let policy_blocked = plan
        .steps
        .iter()
        .any(|s| s.object.describe() == policy && (s.taken || s.unchecked.is_some()));
    if policy_blocked {
        plan.steps.retain(|s| {
            !matches!(
                s.object,
                Object::PolicyPart(_) | Object::RemovePolicyPart(_)
            )
        });
    }
    Ok(plan)
}

/// Whether every credential's Secret holds its key; the first that does
/// not is named, with what to do. Values are never read into the plan.
fn credentials(proxy: &EgressProxy, snapshot: &Snapshot, names: &Names) -> Wanted {
    let credentials = &proxy.spec.credentials;
    if credentials.is_empty() {
        return Wanted::yes(
            CREDENTIALS_READY,
            "NoCredentials",
            "no credentials are configured",
        );
    }
    let namespace = &names.namespace;
    for credential in credentials {
        let (secret, key) = (&credential.secret_ref.name, &credential.secret_ref.key);
        let failing = format!(
            "the gateway answers 502 to the requests of credential {:?} until it is fixed",
            credential.name
        );
        let keys = snapshot
            .credential_secrets
            .iter()
            .find(|(name, _)| name == secret)
            .map(|(_, keys)| keys);
        match keys {
            Some(Ok(Some(keys))) if keys.contains(key) => {}
            Some(Ok(Some(_))) => {
                return Wanted::no(
                    CREDENTIALS_READY,
                    "CredentialKeyMissing",
                    format!(
                        "Secret {secret:?} has no key {key:?} (credential {:?}): {failing}",
                        credential.name
                    ),
                );
            }
            Some(Ok(None)) | None => {
                return Wanted::no(
                    CREDENTIALS_READY,
                    "CredentialSecretNotFound",
                    format!(
                        "Secret {secret:?} (credential {:?}) does not exist in namespace {namespace:?}: create it with key {key:?} (kubectl create secret generic {secret} -n {namespace} --from-file={key}=PATH); {failing}",
                        credential.name
                    ),
                );
            }
            Some(Err(why)) => {
                return Wanted::no(
                    CREDENTIALS_READY,
                    "CredentialSecretUnreadable",
                    format!(
                        "Secret {secret:?} (credential {:?}) cannot be read: {why}",
                        credential.name
                    ),
                );
            }
        }
    }
    Wanted::yes(
        CREDENTIALS_READY,
        "SecretsPresent",
        format!(
            "the Secret keys of {} credential{} exist",
            credentials.len(),
            if credentials.len() == 1 { "" } else { "s" }
        ),
    )
}

/// The destinations' CA bundle the gateway pods mount: `Ok(None)` when none
/// is named, or why the named one cannot be used (then the Deployment is not
/// touched: new pods would not start, or would trust what is not meant).
fn destination_ca(
    proxy: &EgressProxy,
    snapshot: &Snapshot,
) -> Result<Option<String>, (&'static str, String)> {
    let Some(reference) = &proxy.spec.destinations.ca_bundle_ref else {
        return Ok(None);
    };
    let what = format!(
        "key {:?} of ConfigMap {:?} (spec.destinations.caBundleRef)",
        reference.key, reference.name
    );
    match snapshot.destination_ca.clone().unwrap_or(Ok(None)) {
        Err(why) => Err((
            "CABundleUnreadable",
            format!("{what} cannot be read: {why}"),
        )),
        Ok(None) => Err((
            "CABundleNotFound",
            format!(
                "{what} does not exist: create the ConfigMap with the PEM CA certificates under that key"
            ),
        )),
        Ok(Some(pem)) => match egress_pki::certificates(&pem) {
            Ok(_) => Ok(Some(pem)),
            Err(error) => Err(("CABundleInvalid", format!("{what} is not usable: {error}"))),
        },
    }
}

/// The policy: a version that does not compile, or does not fit in a
/// ConfigMap, leaves the last good one.
fn plan_policy(proxy: &EgressProxy, snapshot: &Snapshot, names: &Names, plan: &mut Plan) {
    let rendered = plan.rendered_policy_hash.clone();
    // A new version's parts go to the set the policy ConfigMap does not name
    // now; the same version is rewritten where it is (the same bytes).
    let in_place = snapshot
        .rendered_parts
        .first()
        .and_then(|name| PartSet::of(&names.policy(), name));
    let compiled = compile(proxy, snapshot).and_then(|policy| {
        let unchanged = matches!(&snapshot.rendered_policy_hash, Ok(Some(hash)) if hash == policy.hash());
        let set = match in_place {
            Some(set) if unchanged => set,
            Some(set) => set.other(),
            None => PartSet::A,
        };
        match render::policy_config_maps(proxy, &policy, set) {
            Ok(rendered) => Ok((policy, rendered)),
            Err(error) => Err((
                "PolicyTooLarge",
                format!(
                    "{error} (policy {}): use fewer, broader values (a domain suffix instead of each name), fewer groups, or shorter ProxyLists",
                    policy.hash()
                ),
            )),
        }
    });
    match compiled {
        Ok((policy, rendered)) => {
            let changed = match &snapshot.rendered_policy_hash {
                Ok(hash) => hash.as_deref() != Some(policy.hash()),
                Err(_) => false,
            };
            let written: Vec<String> = rendered.parts.iter().map(ResourceExt::name_any).collect();
            let step = |object, needs_earlier| Step {
                object,
                condition: POLICY_COMPILED,
                needs_earlier,
                taken: false,
                unchecked: None,
                event: None,
            };
            // The parts first: the policy ConfigMap names them only once all
            // are written (and is not written if one is refused).
            for part in rendered.parts {
                plan.steps.push(step(Object::PolicyPart(part), false));
            }
            let held = match written.as_slice() {
                [] => String::new(),
                [one] => format!(" (gzipped in part {one})"),
                [first, .., last] => {
                    format!(" (gzipped in {} parts, {first} to {last})", written.len())
                }
            };
            plan.steps.push(Step {
                event: changed.then(|| Note {
                    warning: false,
                    reason: "PolicyRendered".to_owned(),
                    message: format!(
                        "policy {} written to ConfigMap {}{held}",
                        policy.hash(),
                        names.policy()
                    ),
                }),
                ..step(Object::ConfigMap(rendered.policy), !written.is_empty())
            });
            // The parts it named before, once it names them no more.
            for name in &snapshot.rendered_parts {
                if !written.contains(name) {
                    plan.steps
                        .push(step(Object::RemovePolicyPart(name.clone()), true));
                }
            }
            let rules: usize = Phase::ALL.iter().map(|p| policy.rule_count(*p)).sum();
            plan.conditions.push(Wanted::yes(
                POLICY_COMPILED,
                "Compiled",
                format!(
                    "policy {} with {rules} rules is in ConfigMap {}{held}",
                    policy.hash(),
                    names.policy()
                ),
            ));
            plan.policy_hash = Some(policy.hash().to_owned());
        }
        Err((reason, message)) => {
            let keeping = match (&snapshot.rendered_policy_hash, &rendered) {
                (Err(why), _) => format!(
                    " ConfigMap {} could not be read ({why}): the gateway keeps the policy it has.",
                    names.policy()
                ),
                (Ok(_), Some(hash)) => format!(" The last good policy {hash} keeps serving."),
                (Ok(_), None) => " No policy has been rendered yet: the gateway stays unready until this is fixed.".to_owned(),
            };
            plan.conditions.push(Wanted::no(
                POLICY_COMPILED,
                reason,
                format!("{message}.{keeping}"),
            ));
            plan.policy_hash = rendered;
        }
    }
}

/// What the certificates step leaves for the rest of the plan.
struct Certificates {
    /// The listener CA certificates clients trust: the one that signs, and
    /// its successor while one is staged (None: a Secret could not be read).
    listener_ca: Option<String>,
    /// The interception chain clients trust.
    intercept_roots: Option<String>,
    /// When each certificate is due for renewal.
    renewals: Vec<Option<SystemTime>>,
}

/// A certificate Secret `existing` (as read) kept, or replaced by what
/// `issue` makes of it. A Secret that could not be read is neither: a new
/// certificate would replace one that may be good.
fn keep_or_issue(
    existing: &Read<Pems>,
    issue: impl FnOnce(Option<&Pems>) -> Result<Option<(Pems, certs::Why)>, egress_pki::Error>,
) -> Result<Result<(Pems, Option<certs::Why>), String>, egress_pki::Error> {
    let existing = match existing {
        Ok(existing) => existing.as_ref(),
        Err(why) => return Ok(Err(why.clone())),
    };
    Ok(Ok(match issue(existing)? {
        None => (existing.cloned().unwrap_or_default(), None),
        Some((pems, why)) => (pems, Some(why)),
    }))
}

fn plan_certificates(
    proxy: &EgressProxy,
    snapshot: &Snapshot,
    settings: &Settings,
    names: &Names,
    now: SystemTime,
    plan: &mut Plan,
) -> Result<Certificates, egress_pki::Error> {
    let namespace = &names.namespace;
    let mut unreadable = Vec::new();
    let removal = |name: String| Step {
        object: Object::RemoveSecret(name),
        condition: CERTIFICATE_READY,
        event: None,
        needs_earlier: true,
        taken: false,
        unchecked: None,
    };
    let secret_step = |name: String, pems: &Pems, annotations, event| Step {
        object: Object::Secret(render::tls_secret(
            proxy,
            name,
            &pems.cert,
            &pems.key,
            &pems.ca,
            annotations,
        )),
        condition: CERTIFICATE_READY,
        event,
        needs_earlier: true,
        taken: false,
        unchecked: None,
    };

    // The listener CA, rotated with overlap: a successor is trusted for a
    // while beside it before it signs.
    let mut renewals = Vec::new();
    let listener_ca = match (&snapshot.listener_ca, &snapshot.listener_ca_next) {
        (Err(why), _) => {
            unreadable.push(format!("Secret {}: {why}", names.listener_ca()));
            None
        }
        (_, Err(why)) => {
            unreadable.push(format!("Secret {}: {why}", names.listener_ca_next()));
            None
        }
        (Ok(current), Ok(next)) => {
            let step = certs::rotated_ca(
                current.as_ref(),
                next.as_ref(),
                &format!("egress-proxy {namespace}/{} listener CA", names.proxy),
                &names.listener_names(&settings.cluster_domain),
                now,
            )?;
            let staged = next.as_ref().filter(|n| certs::usable_ca(n, now));
            let (signing, successor) = match step {
                CaStep::Keep => (current.clone().unwrap_or_default(), staged.cloned()),
                CaStep::Replace(pems, _) => {
                    plan.steps.push(secret_step(
                        names.listener_ca(),
                        &pems,
                        BTreeMap::new(),
                        None,
                    ));
                    if next.is_some() {
                        plan.steps.push(removal(names.listener_ca_next()));
                    }
                    (pems, None)
                }
                CaStep::Stage(pems, why) => {
                    plan.steps.push(secret_step(
                        names.listener_ca_next(),
                        &pems,
                        BTreeMap::new(),
                        Some(Note {
                            warning: false,
                            reason: "ListenerCAStaged".to_owned(),
                            message: format!(
                                "a new listener CA ({why:?}) is trusted beside the current one in ConfigMap {} and signs in {} days",
                                names.trust_bundle(),
                                certs::CA_OVERLAP.as_secs() / 86_400
                            ),
                        }),
                    ));
                    (current.clone().unwrap_or_default(), Some(pems))
                }
                CaStep::Promote => {
                    let promoted = staged.cloned().unwrap_or_default();
                    plan.steps.push(secret_step(
                        names.listener_ca(),
                        &promoted,
                        BTreeMap::new(),
                        Some(Note {
                            warning: false,
                            reason: "ListenerCARotated".to_owned(),
                            message: "the listener CA trusted since the rotation began now signs the listener's certificate".to_owned(),
                        }),
                    ));
                    plan.steps.push(removal(names.listener_ca_next()));
                    (promoted, None)
                }
            };
            renewals.push(certs::renewal_at(&signing.cert));
            let mut trusted = signing.cert.clone();
            if let Some(successor) = &successor {
                renewals.push(certs::promotion_at(&successor.cert));
                trusted.push_str(&successor.cert);
            }
            Some((signing, trusted))
        }
    };
    if let Some((ca, _)) = &listener_ca {
        let serving = keep_or_issue(&snapshot.serving, |existing| {
            certs::serving(
                existing,
                ca,
                &names.listener_names(&settings.cluster_domain),
                now,
            )
        })?;
        match serving {
            Ok((pems, why)) => {
                renewals.push(certs::renewal_at(&pems.cert));
                if why.is_some() {
                    plan.steps
                        .push(secret_step(names.tls(), &pems, BTreeMap::new(), None));
                }
            }
            Err(why) => unreadable.push(format!("Secret {}: {why}", names.tls())),
        }
    }

    let mut intercept_roots = None;
    let mut intercept = None;
    if proxy.spec.tls_interception.enabled {
        match &snapshot.sub_ca {
            Err(why) => unreadable.push(format!("Secret {}: {why}", names.intercept_ca())),
            Ok(existing) => match parent(proxy, snapshot, names, now) {
                Ok((loaded, id, reference)) => {
                    let common_name =
                        format!("egress-proxy {namespace}/{} interception", names.proxy);
                    let sub_ca = match certs::sub_ca(
                        existing.as_ref(),
                        &loaded,
                        &id,
                        &common_name,
                        now,
                    )? {
                        None => existing.clone().unwrap_or_default(),
                        Some((pems, why)) => {
                            let event = Note {
                                warning: false,
                                reason: format!("SubCA{}", why.verb()),
                                message: format!(
                                    "interception sub-CA {} from Secret {reference:?} ({why:?}); clients keep trusting the root",
                                    why.verb().to_lowercase(),
                                ),
                            };
                            plan.steps.push(secret_step(
                                names.intercept_ca(),
                                &pems,
                                pems.annotations.clone(),
                                Some(event),
                            ));
                            pems
                        }
                    };
                    renewals.push(certs::renewal_at(&sub_ca.cert));
                    plan.intercept_ca_not_after = egress_pki::inspect(&sub_ca.cert)
                        .ok()
                        .and_then(|i| jiff::Timestamp::try_from(i.not_after).ok())
                        .map(|t| t.to_string());
                    intercept_roots = Some(sub_ca.ca);
                    intercept = Some(Ok(()));
                }
                Err((reason, message)) => {
                    let already = proxy
                        .status
                        .iter()
                        .flat_map(|s| &s.conditions)
                        .any(|c| c.type_ == CERTIFICATE_READY && c.reason == reason);
                    if !already {
                        plan.events.push(Note {
                            warning: true,
                            reason: "ParentCARefused".to_owned(),
                            message: message.clone(),
                        });
                    }
                    // The sub-CA issued before keeps serving.
                    let keeping = match existing {
                        Some(previous) => {
                            intercept_roots = Some(previous.ca.clone());
                            " The sub-CA issued before keeps serving."
                        }
                        None => " Intercepted tunnels fail until this is fixed.",
                    };
                    intercept = Some(Err((reason, format!("{message}.{keeping}"))));
                }
            },
        }
    }

    plan.conditions.push(if !unreadable.is_empty() {
        Wanted::no(
            CERTIFICATE_READY,
            "SecretUnreadable",
            format!(
                "{}: they are left as they are (a new certificate could replace a good one); the operator retries",
                unreadable.join("; ")
            ),
        )
    } else {
        match intercept {
            None => Wanted::yes(
                CERTIFICATE_READY,
                "Issued",
                format!(
                    "listener certificate in Secret {} (interception is off)",
                    names.tls()
                ),
            ),
            Some(Ok(())) => Wanted::yes(
                CERTIFICATE_READY,
                "Issued",
                format!(
                    "listener certificate in Secret {} and interception sub-CA in Secret {} (expires {})",
                    names.tls(),
                    names.intercept_ca(),
                    plan.intercept_ca_not_after.as_deref().unwrap_or("?")
                ),
            ),
            Some(Err((reason, message))) => Wanted::no(CERTIFICATE_READY, reason, message),
        }
    });
    Ok(Certificates {
        listener_ca: listener_ca.map(|(_, trusted)| trusted),
        intercept_roots,
        renewals,
    })
}

/// The parent CA loaded, its identity and the Secret's name; or why it
/// cannot be used.
fn parent(
    proxy: &EgressProxy,
    snapshot: &Snapshot,
    names: &Names,
    now: SystemTime,
) -> Result<(egress_pki::Parent, String, String), (&'static str, String)> {
    let Some(reference) = &proxy.spec.tls_interception.ca_secret_ref else {
        return Err((
            "CASecretNotSet",
            "spec.tlsInterception.enabled is true but spec.tlsInterception.caSecretRef is not set: name a Secret holding tls.crt and tls.key of a CA allowed to sign one more level of CA".to_owned(),
        ));
    };
    let name = &reference.name;
    let parent = match snapshot.parent.clone().unwrap_or(Ok(None)) {
        Err(why) => {
            return Err((
                "CASecretUnreadable",
                format!(
                    "Secret {name:?} (spec.tlsInterception.caSecretRef.name) cannot be read: {why}"
                ),
            ));
        }
        Ok(None) => {
            return Err((
                "CASecretNotFound",
                format!(
                    "Secret {name:?} (spec.tlsInterception.caSecretRef.name) does not exist in namespace {:?}: create it with tls.crt and tls.key (cert-manager's CA layout), optionally ca.crt",
                    names.namespace
                ),
            ));
        }
        Ok(Some(parent)) => parent,
    };
    if parent.cert.is_empty() || parent.key.is_empty() {
        return Err((
            "CASecretIncomplete",
            format!("Secret {name:?} must hold tls.crt and tls.key (PEM) of the parent CA"),
        ));
    }
    let chain = (!parent.ca.is_empty()).then_some(parent.ca.as_str());
    let loaded =
        egress_pki::Parent::load(&parent.cert, &parent.key, chain, now).map_err(|error| {
            (
                error.reason(),
                format!("the CA in Secret {name:?} cannot be used: {error}"),
            )
        })?;
    Ok((loaded, certs::parent_id(name, &parent.cert), name.clone()))
}

/// The gateway's objects; a failure of any of them is a failure to serve.
/// `destination_ca`: `None` when the bundle cannot be used (the Deployment is
/// then left out), `Some(bundle)` otherwise.
fn plan_gateway(
    proxy: &EgressProxy,
    settings: &Settings,
    names: &Names,
    destination_ca: Option<Option<String>>,
    plan: &mut Plan,
) {
    let deployment = destination_ca
        .map(|ca| Object::Deployment(render::deployment(proxy, settings, ca.as_deref())));
    let objects = [
        Object::ServiceAccount(render::service_account(proxy)),
        Object::Role(render::role(proxy)),
        Object::RoleBinding(render::role_binding(proxy)),
        Object::Service(render::service(proxy)),
    ]
    .into_iter()
    .chain(deployment)
    .chain([
        match render::pod_disruption_budget(proxy) {
            Some(pdb) => Object::PodDisruptionBudget(pdb),
            None => Object::RemovePodDisruptionBudget(names.workload()),
        },
        match render::autoscaler(proxy) {
            Some(hpa) => Object::HorizontalPodAutoscaler(hpa),
            None => Object::RemoveHorizontalPodAutoscaler(names.workload()),
        },
    ]);
    plan.steps.extend(objects.map(|object| Step {
        object,
        condition: READY,
        event: None,
        needs_earlier: false,
        taken: false,
        unchecked: None,
    }));
}

/// A step that could not be applied, and the API server's answer.
#[derive(Clone, Debug)]
pub struct Failure {
    /// `Kind name` of the object.
    pub object: String,
    /// The condition it turns false.
    pub condition: &'static str,
    /// What the API server said, or why it was not asked.
    pub error: String,
    /// `ApplyFailed` (the API server refused) or `NameTaken` (the object is
    /// someone else's).
    pub reason: &'static str,
}

impl Failure {
    /// The API server refused `step`.
    pub fn refused(step: &Step, error: String) -> Failure {
        Failure {
            object: step.object.describe(),
            condition: step.condition,
            error,
            reason: "ApplyFailed",
        }
    }

    /// `step`'s object exists and is not this proxy's.
    pub fn taken(step: &Step) -> Failure {
        Failure {
            object: step.object.describe(),
            condition: step.condition,
            error: "exists and is not this proxy's (it names no EgressProxy as its controller): rename the EgressProxy, or remove the object if it is no longer used".to_owned(),
            reason: "NameTaken",
        }
    }
}

/// The proxy's status once the plan has been applied with `failures`, the
/// gateway Deployment as last seen (applied, or read before; or why it
/// could not be read), and the events that say what failed (once per new
/// failure, not on every retry).
pub fn outcome(
    proxy: &EgressProxy,
    plan: &Plan,
    failures: &[Failure],
    deployment: Result<Option<&Deployment>, &str>,
    now: jiff::Timestamp,
) -> (EgressProxyStatus, Vec<Note>) {
    let names = Names::of(proxy);
    let namespace = &names.namespace;
    let old = proxy.status.clone().unwrap_or_default();
    let mut wanted = plan.conditions.clone();
    let policy_written = !failures.iter().any(|f| f.condition == POLICY_COMPILED);
    let policy_hash = if policy_written {
        plan.policy_hash.clone()
    } else {
        plan.rendered_policy_hash.clone()
    };
    let (ready, progressing) = match deployment {
        Ok(Some(deployment)) => rollout(deployment),
        Ok(None) => (
            0,
            Wanted::yes(
                PROGRESSING,
                "NoDeployment",
                format!("Deployment {} does not exist yet", names.workload()),
            ),
        ),
        Err(why) => (
            0,
            Wanted::yes(
                PROGRESSING,
                "DeploymentUnreadable",
                format!("Deployment {} could not be read: {why}", names.workload()),
            ),
        ),
    };
    let deployment = deployment.ok().flatten();
    wanted.push(progressing);
    wanted.push(readiness(&names, policy_hash.as_deref(), ready, deployment));
    let mut events = Vec::new();
    for condition in [POLICY_COMPILED, CERTIFICATE_READY, READY] {
        let failed: Vec<&Failure> = failures
            .iter()
            .filter(|f| f.condition == condition)
            .collect();
        if failed.is_empty() {
            continue;
        }
        let listed: Vec<String> = failed
            .iter()
            .map(|f| format!("{}: {}", f.object, f.error))
            .collect();
        let what = if condition == READY {
            format!(
                " {ready} gateway pods ready; what runs keeps serving while the operator retries"
            )
        } else {
            " What was applied before stays in place while the operator retries".to_owned()
        };
        // A name taken by someone else needs a person; say that first.
        let reason = if failed.iter().any(|f| f.reason == "NameTaken") {
            "NameTaken"
        } else {
            "ApplyFailed"
        };
        let hint = if reason == "NameTaken" {
            ""
        } else {
            " If the API server says forbidden, the operator's RBAC (the chart's ClusterRole) lacks a permission."
        };
        let message = format!(
            "{} could not be applied: {}.{what}.{hint}",
            if failed.len() == 1 {
                "1 object".to_owned()
            } else {
                format!("{} objects", failed.len())
            },
            listed.join("; ")
        );
        let already = old
            .conditions
            .iter()
            .any(|c| c.type_ == condition && c.reason == reason && c.message == message);
        if !already {
            events.push(Note {
                warning: true,
                reason: reason.to_owned(),
                message: message.clone(),
            });
        }
        wanted.retain(|w| w.type_ != condition);
        wanted.push(Wanted::no(condition, reason, message));
    }
    let listeners = &proxy.spec.listeners;
    let status = EgressProxyStatus {
        observed_generation: proxy.metadata.generation,
        conditions: conditions::merge(&old.conditions, &wanted, proxy.metadata.generation, now),
        endpoints: Some(Endpoints {
            http: format!(
                "http://{}.{namespace}.svc:{}",
                names.proxy, listeners.http_port
            ),
            https: format!(
                "https://{}.{namespace}.svc:{}",
                names.proxy, listeners.https_port
            ),
        }),
        policy_hash,
        intercept_ca_not_after: plan.intercept_ca_not_after.clone(),
        ready_replicas: ready,
        // `status.clients` is the clients reconciler's (its own field
        // manager): compared as it is, never applied from here.
        clients: old.clients.clone(),
    };
    (status, events)
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

fn readiness(
    names: &Names,
    policy: Option<&str>,
    ready: i32,
    deployment: Option<&Deployment>,
) -> Wanted {
    let desired = deployment.and_then(|d| d.spec.replicas).unwrap_or(1);
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::render::tests::settings;

    fn proxy(yaml: &str) -> EgressProxy {
        let mut proxy = render::tests::proxy(yaml);
        proxy.metadata.generation = Some(3);
        proxy
    }

    const PLAIN: &str = "configurationRef: {name: seed}\nreplicas: 2\n";
    const INTERCEPTING: &str = "configurationRef: {name: seed}\ntlsInterception: {enabled: true, caSecretRef: {name: user-ca}}\n";

    fn configuration() -> Named<ProxyConfigurationSpec> {
        let spec = serde_saphyr::from_str(
            "defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}",
        )
        .expect("configuration");
        Named::new("seed".to_owned(), spec)
    }

    /// A proxy seen for the first time: nothing exists.
    fn fresh() -> Snapshot {
        Snapshot {
            configuration: Some(configuration()),
            groups: Vec::new(),
            lists: Vec::new(),
            baseline: Vec::new(),
            cluster_lists: Vec::new(),
            rendered_policy_hash: Ok(None),
            rendered_parts: Vec::new(),
            listener_ca: Ok(None),
            listener_ca_next: Ok(None),
            serving: Ok(None),
            sub_ca: Ok(None),
            parent: None,
            deployment: Ok(None),
            destination_ca: None,
            credential_secrets: Vec::new(),
            taken: Vec::new(),
            unchecked: Vec::new(),
        }
    }

    /// A parent CA Secret as users bring it (may sign one more level).
    fn parent_pems() -> Pems {
        let (cert, key) = crate::certs::user_ca("user root");
        Pems {
            cert,
            key,
            ..Pems::default()
        }
    }

    fn described(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.object.describe()).collect()
    }

    fn wanted<'a>(plan: &'a Plan, type_: &str) -> &'a Wanted {
        plan.conditions
            .iter()
            .find(|w| w.type_ == type_)
            .expect("condition planned")
    }

    fn condition<'a>(status: &'a EgressProxyStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition set")
    }

    /// The Secret a step writes, as the API server would return it.
    fn written(plan: &Plan, name: &str) -> Pems {
        plan.steps
            .iter()
            .find_map(|s| match &s.object {
                Object::Secret(secret) if secret.name_any() == name => Some(certs::pems_of(secret)),
                _ => None,
            })
            .expect("secret written")
    }

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

    fn settled(replicas: i32) -> Deployment {
        deployment(
            replicas,
            2,
            DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                updated_replicas: Some(replicas),
                ready_replicas: Some(replicas),
                ..DeploymentStatus::default()
            },
        )
    }

    #[test]
    fn a_new_proxy_gets_every_object_policy_first() {
        let planned = plan(&proxy(PLAIN), &fresh(), &settings(), SystemTime::now()).expect("plan");
        assert_eq!(
            described(&planned),
            [
                "ConfigMap egress-policy",
                "Secret egress-listener-ca",
                "Secret egress-tls",
                "ConfigMap egress-trust-bundle",
                "ServiceAccount egress",
                "Role egress",
                "RoleBinding egress",
                "Service egress",
                "Deployment egress",
                "PodDisruptionBudget egress",
                "HorizontalPodAutoscaler (removal) egress",
            ]
        );
        assert_eq!(
            planned.steps[0].event.as_ref().map(|n| n.reason.as_str()),
            Some("PolicyRendered")
        );
        assert!(wanted(&planned, POLICY_COMPILED).status);
        assert_eq!(wanted(&planned, CERTIFICATE_READY).reason, "Issued");
        // Every certificate is months from renewal: the hourly look.
        assert_eq!(planned.requeue, RECHECK);
    }

    #[test]
    fn credentials_ready_names_the_first_secret_or_key_missing_and_never_blocks_the_policy() {
        let with_credential = proxy(
            "configurationRef: {name: seed}\ntlsInterception: {enabled: true, caSecretRef: {name: user-ca}}\ncredentials:\n  - {name: llm-key, secretRef: {name: llm, key: token}, header: Authorization, destination: {domains: [api.llm.example]}, clients: {namespaces: [agents]}}\n",
        );
        let planned_with = |keys: Read<Vec<String>>| {
            let mut snapshot = fresh();
            snapshot.credential_secrets = vec![("llm".to_owned(), keys)];
            plan(&with_credential, &snapshot, &settings(), SystemTime::now()).expect("plan")
        };
        let reason = |planned: &Plan| {
            let wanted = wanted(planned, CREDENTIALS_READY);
            (wanted.status, wanted.reason, wanted.message.clone())
        };
        let (status, why, message) = reason(&planned_with(Ok(Some(vec!["token".into()]))));
        assert_eq!((status, why), (true, "SecretsPresent"), "{message}");
        let (status, why, message) = reason(&planned_with(Ok(Some(vec!["other".into()]))));
        assert_eq!((status, why), (false, "CredentialKeyMissing"));
        assert!(
            message.contains("Secret \"llm\" has no key \"token\""),
            "{message}"
        );
        let missing = planned_with(Ok(None));
        let (status, why, message) = reason(&missing);
        assert_eq!((status, why), (false, "CredentialSecretNotFound"));
        assert!(
            message.contains("kubectl create secret generic llm"),
            "{message}"
        );
        assert!(
            wanted(&missing, POLICY_COMPILED).status,
            "the policy is rendered anyway"
        );
        let unreadable = planned_with(Err("forbidden".into()));
        assert_eq!(reason(&unreadable).1, "CredentialSecretUnreadable");
        assert_eq!(unreadable.requeue, RETRY_UNREADABLE);
        let role = with_credential_role(&with_credential);
        assert!(role.contains(&"llm".to_owned()), "{role:?}");
        assert_eq!(
            reason(&plan(&proxy(PLAIN), &fresh(), &settings(), SystemTime::now()).expect("plan")).1,
            "NoCredentials"
        );
    }

    /// The Secret names the gateway's Role lets it read.
    fn with_credential_role(proxy: &EgressProxy) -> Vec<String> {
        let role = render::role(proxy);
        role.rules
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.resources.as_deref() == Some(&["secrets".to_owned()][..]))
            .and_then(|r| r.resource_names)
            .unwrap_or_default()
    }

    /// What the plan's trust bundle gives clients as the listener's CAs.
    fn trusted_listener_cas(plan: &Plan) -> String {
        plan.steps
            .iter()
            .find_map(|s| match &s.object {
                Object::ConfigMap(cm) if cm.name_any() == "egress-trust-bundle" => {
                    cm.data.as_ref()?.get("listener-ca.pem").cloned()
                }
                _ => None,
            })
            .expect("trust bundle written")
    }

    #[test]
    fn the_listener_ca_is_rotated_with_overlap() {
        let day = Duration::from_secs(86_400);
        let start = SystemTime::now();
        let first = plan(&proxy(PLAIN), &fresh(), &settings(), start).expect("plan");
        let current = written(&first, "egress-listener-ca");
        let serving = written(&first, "egress-tls");
        let settled = Snapshot {
            listener_ca: Ok(Some(current.clone())),
            serving: Ok(Some(serving.clone())),
            ..fresh()
        };
        let steps =
            described(&plan(&proxy(PLAIN), &settled, &settings(), start + day).expect("plan"));
        assert!(
            !steps.iter().any(|s| s.contains("listener-ca")),
            "{steps:?}"
        );

        // Two thirds into its life: a successor is trusted beside it, and
        // the current one still signs.
        let due = start + certs::OWN_CA_LIFETIME * 2 / 3 + day;
        let staging = plan(&proxy(PLAIN), &settled, &settings(), due).expect("plan");
        let steps = described(&staging);
        assert!(
            steps.contains(&"Secret egress-listener-ca-next".to_owned()),
            "{steps:?}"
        );
        assert!(
            !steps.contains(&"Secret egress-listener-ca".to_owned()),
            "{steps:?}"
        );
        let next = written(&staging, "egress-listener-ca-next");
        let trusted = trusted_listener_cas(&staging);
        assert!(trusted.contains(&current.cert) && trusted.contains(&next.cert));
        assert_eq!(
            written(&staging, "egress-tls").ca,
            current.cert,
            "signed by the current CA"
        );
        let staged_event = staging
            .steps
            .iter()
            .find(|s| s.object.describe() == "Secret egress-listener-ca-next")
            .and_then(|s| s.event.clone())
            .expect("an event");
        assert_eq!(staged_event.reason, "ListenerCAStaged");

        // Within the overlap: both stay trusted, nothing is written again.
        let staged = Snapshot {
            listener_ca_next: Ok(Some(next.clone())),
            serving: Ok(Some(written(&staging, "egress-tls"))),
            ..settled.clone()
        };
        let waiting = plan(&proxy(PLAIN), &staged, &settings(), due + day).expect("plan");
        let steps = described(&waiting);
        assert!(
            !steps.iter().any(|s| s.contains("listener-ca")),
            "{steps:?}"
        );
        assert!(trusted_listener_cas(&waiting).contains(&next.cert));
        assert!(
            waiting.requeue <= certs::CA_OVERLAP,
            "comes back to promote it"
        );

        // After the overlap: the successor signs, the old one goes.
        let promoting = plan(
            &proxy(PLAIN),
            &staged,
            &settings(),
            due + certs::CA_OVERLAP + day,
        )
        .expect("plan");
        let steps = described(&promoting);
        assert!(
            steps.contains(&"Secret (removal) egress-listener-ca-next".to_owned()),
            "{steps:?}"
        );
        assert_eq!(written(&promoting, "egress-listener-ca").cert, next.cert);
        assert_eq!(
            written(&promoting, "egress-tls").ca,
            next.cert,
            "signed by the successor"
        );
        assert_eq!(trusted_listener_cas(&promoting), next.cert);
    }

    #[test]
    fn a_listener_ca_without_name_constraints_is_rotated_to_one_with_them() {
        let now = SystemTime::now();
        let issued =
            egress_pki::self_signed_ca("old listener CA", &[], now, certs::OWN_CA_LIFETIME)
                .expect("ca");
        let unconstrained = Pems {
            cert: issued.cert_pem.clone(),
            key: issued.key_pem,
            ca: issued.cert_pem,
            annotations: BTreeMap::new(),
        };
        let snapshot = Snapshot {
            listener_ca: Ok(Some(unconstrained.clone())),
            ..fresh()
        };
        let planned = plan(&proxy(PLAIN), &snapshot, &settings(), now).expect("plan");
        let next = written(&planned, "egress-listener-ca-next");
        let info = egress_pki::inspect(&next.cert).expect("cert");
        assert_eq!(
            info.permitted_dns,
            ["egress.team-a.svc", "egress.team-a.svc.cluster.local"]
        );
        assert_eq!(
            written(&planned, "egress-tls").ca,
            unconstrained.cert,
            "the old one signs meanwhile"
        );
    }

    #[test]
    fn what_is_still_good_is_not_written_again() {
        let first = plan(&proxy(PLAIN), &fresh(), &settings(), SystemTime::now()).expect("plan");
        let policy_hash = first.policy_hash.clone();
        let snapshot = Snapshot {
            rendered_policy_hash: Ok(policy_hash),
            listener_ca: Ok(Some(written(&first, "egress-listener-ca"))),
            serving: Ok(Some(written(&first, "egress-tls"))),
            ..fresh()
        };
        let again = plan(&proxy(PLAIN), &snapshot, &settings(), SystemTime::now()).expect("plan");
        let steps = described(&again);
        assert!(!steps.iter().any(|s| s.starts_with("Secret")), "{steps:?}");
        assert!(again.steps[0].event.is_none(), "the same policy: no event");
    }

    /// Asserts that `planned` writes no policy, says why with `reason`, and
    /// keeps `sha256:good` serving; returns the condition's message.
    fn keeps_the_last_good_policy(planned: &Plan, reason: &str) -> String {
        assert!(!described(planned).contains(&"ConfigMap egress-policy".to_owned()));
        let compiled = wanted(planned, POLICY_COMPILED);
        assert_eq!((compiled.status, compiled.reason), (false, reason));
        assert!(
            compiled
                .message
                .contains("The last good policy sha256:good keeps serving"),
            "{}",
            compiled.message
        );
        assert_eq!(planned.policy_hash.as_deref(), Some("sha256:good"));
        compiled.message.clone()
    }

    #[test]
    fn a_policy_that_does_not_compile_keeps_the_last_good_one() {
        let snapshot = Snapshot {
            configuration: None,
            rendered_policy_hash: Ok(Some("sha256:good".to_owned())),
            ..fresh()
        };
        let kept = plan(&proxy(PLAIN), &snapshot, &settings(), SystemTime::now()).expect("plan");
        keeps_the_last_good_policy(&kept, "ConfigurationNotFound");
        // The rest is planned as usual.
        assert!(described(&kept).contains(&"Deployment egress".to_owned()));

        let never = Snapshot {
            configuration: None,
            ..fresh()
        };
        let unserved = plan(&proxy(PLAIN), &never, &settings(), SystemTime::now()).expect("plan");
        assert!(
            wanted(&unserved, POLICY_COMPILED)
                .message
                .contains("No policy has been rendered yet")
        );
        let (status, _) = outcome(
            &proxy(PLAIN),
            &unserved,
            &[],
            Ok(Some(&settled(2))),
            jiff::Timestamp::now(),
        );
        assert_eq!(condition(&status, READY).reason, "NoPolicy");
    }

    #[test]
    fn a_certificate_secret_that_cannot_be_read_is_not_replaced() {
        let snapshot = Snapshot {
            listener_ca: Err("connection refused".to_owned()),
            ..fresh()
        };
        let planned = plan(&proxy(PLAIN), &snapshot, &settings(), SystemTime::now()).expect("plan");
        let steps = described(&planned);
        assert!(!steps.iter().any(|s| s.starts_with("Secret")), "{steps:?}");
        assert!(
            !steps.contains(&"ConfigMap egress-trust-bundle".to_owned()),
            "no bundle without the listener CA"
        );
        let ready = wanted(&planned, CERTIFICATE_READY);
        assert_eq!((ready.status, ready.reason), (false, "SecretUnreadable"));
        assert!(
            ready
                .message
                .contains("Secret egress-listener-ca: connection refused")
        );
        assert!(steps.contains(&"Deployment egress".to_owned()));
        assert!(wanted(&planned, POLICY_COMPILED).status);
    }

    #[test]
    fn interception_derives_a_sub_ca_and_a_refused_parent_keeps_the_last_one() {
        let now = SystemTime::now();
        let parent = parent_pems();
        let snapshot = Snapshot {
            parent: Some(Ok(Some(parent.clone()))),
            ..fresh()
        };
        let issued = plan(&proxy(INTERCEPTING), &snapshot, &settings(), now).expect("plan");
        let sub_ca = written(&issued, "egress-intercept-ca");
        assert!(sub_ca.ca.contains(parent.cert.trim()));
        let step = issued
            .steps
            .iter()
            .find(|s| s.object.describe() == "Secret egress-intercept-ca")
            .expect("sub-CA step");
        assert_eq!(
            step.event.as_ref().map(|n| n.reason.as_str()),
            Some("SubCAIssued")
        );
        assert!(issued.intercept_ca_not_after.is_some());
        assert!(wanted(&issued, CERTIFICATE_READY).status);

        // The parent's Secret loses its key: the sub-CA issued before stays
        // in the trust bundle, and one warning says why.
        let broken = Snapshot {
            parent: Some(Ok(Some(Pems {
                key: String::new(),
                ..parent
            }))),
            sub_ca: Ok(Some(sub_ca.clone())),
            ..fresh()
        };
        let mut intercepting = proxy(INTERCEPTING);
        let refused = plan(&intercepting, &broken, &settings(), now).expect("plan");
        let ready = wanted(&refused, CERTIFICATE_READY);
        assert_eq!((ready.status, ready.reason), (false, "CASecretIncomplete"));
        assert!(
            ready
                .message
                .contains("The sub-CA issued before keeps serving")
        );
        assert!(!described(&refused).contains(&"Secret egress-intercept-ca".to_owned()));
        let bundle = refused
            .steps
            .iter()
            .find_map(|s| match &s.object {
                Object::ConfigMap(cm) if cm.name_any() == "egress-trust-bundle" => cm.data.clone(),
                _ => None,
            })
            .expect("trust bundle");
        assert_eq!(bundle["intercept-ca.pem"], sub_ca.ca);
        assert_eq!(refused.events.len(), 1);
        assert_eq!(refused.events[0].reason, "ParentCARefused");
        // Reported already: no second warning.
        let (status, _) = outcome(
            &intercepting,
            &refused,
            &[],
            Ok(None),
            jiff::Timestamp::now(),
        );
        intercepting.status = Some(status);
        let again = plan(&intercepting, &broken, &settings(), now).expect("plan");
        assert!(again.events.is_empty());

        // Unreadable (say, forbidden) and missing parents say so.
        for (read, reason) in [
            (Err("forbidden".to_owned()), "CASecretUnreadable"),
            (Ok(None), "CASecretNotFound"),
        ] {
            let snapshot = Snapshot {
                parent: Some(read),
                ..fresh()
            };
            let refused = plan(&proxy(INTERCEPTING), &snapshot, &settings(), now).expect("plan");
            let ready = wanted(&refused, CERTIFICATE_READY);
            assert_eq!((ready.status, ready.reason), (false, reason));
            assert!(
                ready
                    .message
                    .contains("Intercepted tunnels fail until this is fixed")
            );
        }
    }

    #[test]
    fn a_refused_object_fails_its_own_condition_and_the_rest_stand() {
        let p = proxy(PLAIN);
        let planned = plan(&p, &fresh(), &settings(), SystemTime::now()).expect("plan");
        let failures = [Failure {
            object: "RoleBinding egress".to_owned(),
            condition: READY,
            error: "forbidden: attempting to grant RBAC permissions not currently held".to_owned(),
            reason: "ApplyFailed",
        }];
        let (status, events) = outcome(&p, &planned, &failures, Ok(None), jiff::Timestamp::now());
        let ready = condition(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ApplyFailed")
        );
        assert!(ready.message.contains("RoleBinding egress: forbidden"));
        assert!(ready.message.contains("RBAC"));
        assert_eq!(condition(&status, CERTIFICATE_READY).status, "True");
        assert_eq!(condition(&status, POLICY_COMPILED).status, "True");
        assert_eq!(condition(&status, PROGRESSING).reason, "NoDeployment");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].warning, events[0].reason.as_str()),
            (true, "ApplyFailed")
        );
        assert_eq!(status.observed_generation, Some(3));

        // The same failure again: the status says it, no new event.
        let mut seen = p.clone();
        seen.status = Some(status);
        let (_, events) = outcome(&seen, &planned, &failures, Ok(None), jiff::Timestamp::now());
        assert!(events.is_empty());
    }

    #[test]
    fn a_policy_over_one_config_map_is_written_in_parts_before_the_config_map_naming_them() {
        // 60 rules of 1,000 names each: within the CRD's bounds, over 1 MiB compiled.
        let rules: Vec<serde_json::Value> = (0..60)
            .map(|r| {
                let names: Vec<String> = (0..1000)
                    .map(|n| format!("host-{r:02}-{n:04}.example.com"))
                    .collect();
                serde_json::json!({
                    "name": format!("deny-{r}"),
                    "action": "Deny",
                    "conditions": [{"key": "request:DestinationDomain", "operator": "StringEquals", "values": names}]
                })
            })
            .collect();
        let group: ProxyRuleGroupSpec =
            serde_json::from_value(serde_json::json!({"rules": {"preDNS": rules}})).expect("group");
        let configuration = serde_saphyr::from_str(
            "ruleGroups: [{name: huge}]\ndefaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}",
        )
        .expect("configuration");
        // An earlier version took three parts of set A; this one goes to
        // set B, and set A is removed once the policy ConfigMap names B.
        let set_a = |n: usize| format!("egress-policy-part-a-{n}");
        let snapshot = Snapshot {
            configuration: Some(Named::new("seed".to_owned(), configuration)),
            groups: vec![Named::new("huge".to_owned(), group)],
            rendered_policy_hash: Ok(Some("sha256:good".to_owned())),
            rendered_parts: (1..=3).map(set_a).collect(),
            ..fresh()
        };
        let planned = plan(&proxy(PLAIN), &snapshot, &settings(), SystemTime::now()).expect("plan");
        let policy_steps = |planned: &Plan| -> Vec<(String, bool)> {
            planned
                .steps
                .iter()
                .filter(|s| s.condition == POLICY_COMPILED)
                .map(|s| (s.object.describe(), s.needs_earlier))
                .collect()
        };
        let removals = |set: &dyn Fn(usize) -> String| -> Vec<(String, bool)> {
            (1..=3)
                .map(|n| (format!("ConfigMap (removal) {}", set(n)), true))
                .collect()
        };
        let mut expected = vec![
            ("ConfigMap egress-policy-part-b-1".to_owned(), false),
            ("ConfigMap egress-policy".to_owned(), true),
        ];
        expected.extend(removals(&set_a));
        assert_eq!(policy_steps(&planned), expected);
        let compiled = wanted(&planned, POLICY_COMPILED);
        assert!(compiled.status);
        assert!(
            compiled.message.ends_with(
                "is in ConfigMap egress-policy (gzipped in part egress-policy-part-b-1)"
            ),
            "{}",
            compiled.message
        );
        let event = planned.steps[1].event.as_ref().expect("event");
        assert!(
            event
                .message
                .contains("(gzipped in part egress-policy-part-b-1)")
        );

        // The same version again: rewritten where it is, nothing removed.
        let again = Snapshot {
            rendered_policy_hash: Ok(planned.policy_hash.clone()),
            rendered_parts: vec!["egress-policy-part-b-1".to_owned()],
            ..snapshot.clone()
        };
        let planned = plan(&proxy(PLAIN), &again, &settings(), SystemTime::now()).expect("plan");
        assert_eq!(
            policy_steps(&planned),
            [
                ("ConfigMap egress-policy-part-b-1".to_owned(), false),
                ("ConfigMap egress-policy".to_owned(), true),
            ]
        );

        // Back under 1 MiB: the JSON in the ConfigMap, every part removed.
        let small = Snapshot {
            rendered_parts: (1..=3).map(set_a).collect(),
            ..fresh()
        };
        let planned = plan(&proxy(PLAIN), &small, &settings(), SystemTime::now()).expect("plan");
        let mut expected = vec![("ConfigMap egress-policy".to_owned(), false)];
        expected.extend(removals(&set_a));
        assert_eq!(policy_steps(&planned), expected);
    }

    #[test]
    fn a_policy_that_cannot_be_written_is_not_reported_as_served() {
        let snapshot = Snapshot {
            rendered_policy_hash: Ok(Some("sha256:old".to_owned())),
            ..fresh()
        };
        let p = proxy(PLAIN);
        let planned = plan(&p, &snapshot, &settings(), SystemTime::now()).expect("plan");
        let failures = [Failure {
            object: "ConfigMap egress-policy".to_owned(),
            condition: POLICY_COMPILED,
            error: "request entity too large".to_owned(),
            reason: "ApplyFailed",
        }];
        let (status, _) = outcome(
            &p,
            &planned,
            &failures,
            Ok(Some(&settled(2))),
            jiff::Timestamp::now(),
        );
        assert_eq!(status.policy_hash.as_deref(), Some("sha256:old"));
        assert_eq!(condition(&status, POLICY_COMPILED).reason, "ApplyFailed");
        let ready = condition(&status, READY);
        assert_eq!(ready.reason, "Serving");
        assert!(ready.message.contains("sha256:old"), "{}", ready.message);
    }

    #[test]
    fn a_destination_ca_bundle_that_cannot_be_used_leaves_the_deployment_alone() {
        let p = proxy(
            "configurationRef: {name: seed}\ndestinations: {caBundleRef: {name: internal-roots}}",
        );
        let bundle = parent_pems().cert;
        for (read, reason) in [
            (Ok(None), "CABundleNotFound"),
            (Err("forbidden".to_owned()), "CABundleUnreadable"),
            (Ok(Some("not a certificate".to_owned())), "CABundleInvalid"),
        ] {
            let snapshot = Snapshot {
                destination_ca: Some(read),
                ..fresh()
            };
            let planned = plan(&p, &snapshot, &settings(), SystemTime::now()).expect("plan");
            let steps = described(&planned);
            assert!(
                !steps.contains(&"Deployment egress".to_owned()),
                "{steps:?}"
            );
            assert!(steps.contains(&"Service egress".to_owned()), "{steps:?}");
            let ready = wanted(&planned, CERTIFICATE_READY);
            assert_eq!((ready.status, ready.reason), (false, reason));
            assert!(
                ready.message.contains("internal-roots"),
                "{}",
                ready.message
            );
            assert!(ready.message.contains("Deployment egress is left as it is"));
        }
        let usable = Snapshot {
            destination_ca: Some(Ok(Some(bundle))),
            ..fresh()
        };
        let planned = plan(&p, &usable, &settings(), SystemTime::now()).expect("plan");
        assert!(described(&planned).contains(&"Deployment egress".to_owned()));
        assert!(wanted(&planned, CERTIFICATE_READY).status);
    }

    #[test]
    fn what_cannot_be_read_is_not_taken_for_missing() {
        // The policy ConfigMap unreadable while the configuration does not
        // compile: the status's last hash stands, and the message says so.
        let mut p = proxy(PLAIN);
        p.status = Some(EgressProxyStatus {
            policy_hash: Some("sha256:serving".to_owned()),
            ..EgressProxyStatus::default()
        });
        let snapshot = Snapshot {
            configuration: None,
            rendered_policy_hash: Err("timed out".to_owned()),
            ..fresh()
        };
        let planned = plan(&p, &snapshot, &settings(), SystemTime::now()).expect("plan");
        assert_eq!(planned.policy_hash.as_deref(), Some("sha256:serving"));
        let compiled = wanted(&planned, POLICY_COMPILED);
        assert!(
            compiled.message.contains("could not be read (timed out)"),
            "{}",
            compiled.message
        );
        // The same unreadable while it compiles: written, with no event
        // (whether it changed is not known).
        let compiles = Snapshot {
            rendered_policy_hash: Err("timed out".to_owned()),
            ..fresh()
        };
        let planned = plan(&p, &compiles, &settings(), SystemTime::now()).expect("plan");
        assert_eq!(
            planned.steps[0].object.describe(),
            "ConfigMap egress-policy"
        );
        assert!(planned.steps[0].event.is_none());

        // The listener certificate or the sub-CA unreadable: not replaced.
        let first = plan(&proxy(PLAIN), &fresh(), &settings(), SystemTime::now()).expect("plan");
        for snapshot in [
            Snapshot {
                listener_ca: Ok(Some(written(&first, "egress-listener-ca"))),
                serving: Err("forbidden".to_owned()),
                ..fresh()
            },
            Snapshot {
                listener_ca: Ok(Some(written(&first, "egress-listener-ca"))),
                serving: Ok(Some(written(&first, "egress-tls"))),
                sub_ca: Err("forbidden".to_owned()),
                parent: Some(Ok(Some(parent_pems()))),
                ..fresh()
            },
        ] {
            let planned = plan(
                &proxy(INTERCEPTING),
                &snapshot,
                &settings(),
                SystemTime::now(),
            )
            .expect("plan");
            let steps = described(&planned);
            assert!(!steps.iter().any(|s| s.starts_with("Secret")), "{steps:?}");
            let ready = wanted(&planned, CERTIFICATE_READY);
            assert_eq!((ready.status, ready.reason), (false, "SecretUnreadable"));
            // Tried again soon, with no event needed.
            assert_eq!(planned.requeue, RETRY_UNREADABLE);
        }

        // The Deployment unreadable: said, not taken for absent.
        let planned = plan(&proxy(PLAIN), &fresh(), &settings(), SystemTime::now()).expect("plan");
        let (status, _) = outcome(
            &proxy(PLAIN),
            &planned,
            &[],
            Err("connection refused"),
            jiff::Timestamp::now(),
        );
        let progressing = condition(&status, PROGRESSING);
        assert_eq!(progressing.reason, "DeploymentUnreadable");
        assert!(progressing.message.contains("connection refused"));
    }

    #[test]
    fn what_names_a_refused_certificate_is_not_written() {
        let planned = plan(&proxy(PLAIN), &fresh(), &settings(), SystemTime::now()).expect("plan");
        let needing: Vec<String> = planned
            .steps
            .iter()
            .filter(|s| s.needs_earlier)
            .map(|s| s.object.describe())
            .collect();
        assert_eq!(
            needing,
            [
                "Secret egress-listener-ca",
                "Secret egress-tls",
                "ConfigMap egress-trust-bundle"
            ]
        );
        assert!(
            planned
                .steps
                .iter()
                .filter(|s| s.condition != CERTIFICATE_READY)
                .all(|s| !s.needs_earlier),
            "the policy and the gateway do not wait on certificates"
        );
    }

    #[test]
    fn objects_someone_else_made_are_never_taken_over() {
        // A proxy named like the namespace's ServiceAccount and like an
        // Ingress's certificate Secret, with a PodDisruptionBudget of that
        // name that is not its own either.
        let p = proxy("configurationRef: {name: seed}\nreplicas: 1\n");
        let snapshot = Snapshot {
            taken: vec![
                "ServiceAccount egress".to_owned(),
                "Secret egress-tls".to_owned(),
                "PodDisruptionBudget egress".to_owned(),
            ],
            ..fresh()
        };
        let planned = plan(&p, &snapshot, &settings(), SystemTime::now()).expect("plan");
        let taken: Vec<String> = planned
            .steps
            .iter()
            .filter(|s| s.taken)
            .map(|s| s.object.describe())
            .collect();
        assert_eq!(taken, ["Secret egress-tls", "ServiceAccount egress"]);
        assert!(
            !described(&planned)
                .iter()
                .any(|s| s.contains("PodDisruptionBudget")),
            "someone else's PodDisruptionBudget is not removed"
        );
        let failures: Vec<Failure> = planned
            .steps
            .iter()
            .filter(|s| s.taken)
            .map(Failure::taken)
            .collect();
        let (status, events) = outcome(&p, &planned, &failures, Ok(None), jiff::Timestamp::now());
        for type_ in [CERTIFICATE_READY, READY] {
            let c = condition(&status, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "NameTaken")
            );
            assert!(
                c.message.contains("rename the EgressProxy"),
                "{}",
                c.message
            );
        }
        assert!(events.iter().all(|e| e.reason == "NameTaken"));
        assert_eq!(condition(&status, POLICY_COMPILED).status, "True");
    }

    #[test]
    fn readiness_needs_a_policy_and_a_ready_pod() {
        let d = settled(2);
        let (ready, progressing) = rollout(&d);
        assert_eq!(ready, 2);
        assert_eq!((progressing.status, progressing.reason), (false, "Stable"));
        let names = Names::of(&proxy(PLAIN));
        let serving = readiness(&names, Some("sha256:1"), ready, Some(&d));
        assert_eq!((serving.status, serving.reason), (true, "Serving"));
        assert!(serving.message.contains("2 of 2"), "{}", serving.message);
        let no_policy = readiness(&names, None, ready, Some(&d));
        assert_eq!((no_policy.status, no_policy.reason), (false, "NoPolicy"));
        let none_ready = readiness(&names, Some("sha256:1"), 0, Some(&d));
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
