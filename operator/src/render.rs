//! What an `EgressProxy` becomes, as pure functions: spec in, Kubernetes
//! objects out. The reconciler applies them with server-side apply; nothing
//! here talks to the API server.

use std::collections::BTreeMap;

use egress_policy::CompiledPolicy;
use egress_policy::parts::{self, MAX_PARTS, PART_BYTES, PartSet, PartsError};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::crd::EgressProxy;
use crate::names::{
    BUNDLE_ALL, BUNDLE_INTERCEPT, BUNDLE_LISTENER, Names, POD_CONFIG_ANNOTATION,
    POLICY_HASH_ANNOTATION, POLICY_KEY, POLICY_VERSION_ANNOTATION, TRUST_BUNDLE_LABEL, metadata,
};

/// The ClusterRole (installed once, shared by every gateway) that lets a
/// gateway list and watch pods for its client identity index.
pub const POD_READER_ROLE: &str = "egress-proxy-gateway-pod-reader";

/// Gateway pods when `spec.replicas` is not set: two, so that a rolling
/// update or an evicted pod never leaves clients without a gateway.
pub const DEFAULT_REPLICAS: i32 = 2;

/// What each gateway pod requests when `spec.resources` is not set: enough
/// for the scheduler to place it honestly, no limit (the load decides).
const DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "100m"), ("memory", "64Mi")];

/// How long a stopping gateway stays reachable but unready, so endpoints and
/// kube-proxy drop it before it stops accepting (then it drains for up to
/// 30 s; the grace period covers both).
const SHUTDOWN_DELAY: &str = "5s";

/// Where the destinations' CA bundle (`spec.destinations.caBundleRef`) is mounted.
const DESTINATION_CA_DIR: &str = "/etc/egress-gateway/destination-ca";

/// Ports the gateway container listens on. The Service maps the proxy's
/// listener ports to these, so the container needs no privilege to bind 443.
pub const HTTP_PORT: i32 = 8080;
/// HTTPS listener port in the container.
pub const HTTPS_PORT: i32 = 8443;
/// Admin port in the container (probes, metrics).
pub const ADMIN_PORT: i32 = 9090;

/// Operator-wide settings that shape every gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The gateway image.
    pub gateway_image: String,
    /// Its pull policy (`IfNotPresent` where no registry is reachable).
    pub image_pull_policy: String,
    /// `request:SourceVpc` of every gateway.
    pub cluster_name: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

/// The most a ConfigMap's data may hold, in bytes (the API server refuses
/// more, whatever the rest of the object holds).
const CONFIG_MAP_LIMIT: usize = 1024 * 1024;

/// The policy as the gateway reads it: `<proxy>-policy` with the compiled
/// JSON when it fits in one ConfigMap; otherwise the JSON gzipped across
/// parts `<proxy>-policy-part-<set>-<n>` (applied first) and `<proxy>-policy`
/// with their manifest ([`egress_policy::parts`]). Either way the policy ConfigMap
/// carries the hash and format version in annotations.
#[derive(Clone, Debug)]
pub struct RenderedPolicy {
    /// The parts, in order (none when the JSON fits).
    pub parts: Vec<ConfigMap>,
    /// `<proxy>-policy`.
    pub policy: ConfigMap,
}

/// Renders `policy` for `proxy`, its parts (if it needs them) in `set`;
/// too large for [`MAX_PARTS`] parts: why.
pub fn policy_config_maps(
    proxy: &EgressProxy,
    policy: &CompiledPolicy,
    set: PartSet,
) -> Result<RenderedPolicy, PartsError> {
    policy_config_maps_within(proxy, policy, set, CONFIG_MAP_LIMIT, MAX_PARTS)
}

/// [`policy_config_maps`] with ConfigMaps of `config_map_limit` bytes, at
/// most `max_parts` parts (smaller in tests).
fn policy_config_maps_within(
    proxy: &EgressProxy,
    policy: &CompiledPolicy,
    set: PartSet,
    config_map_limit: usize,
    max_parts: usize,
) -> Result<RenderedPolicy, PartsError> {
    let names = Names::of(proxy);
    let annotations = BTreeMap::from([
        (POLICY_HASH_ANNOTATION.to_owned(), policy.hash().to_owned()),
        (
            POLICY_VERSION_ANNOTATION.to_owned(),
            policy.format_version().to_string(),
        ),
    ]);
    let config_map = |name: String| {
        let mut meta = metadata(proxy, name);
        meta.annotations = Some(annotations.clone());
        ConfigMap {
            metadata: meta,
            ..ConfigMap::default()
        }
    };
    let json = policy.to_json();
    let mut main = config_map(names.policy());
    if POLICY_KEY.len() + json.len() <= config_map_limit {
        main.data = Some(BTreeMap::from([(POLICY_KEY.to_owned(), json)]));
        return Ok(RenderedPolicy {
            parts: Vec::new(),
            policy: main,
        });
    }
    let part_bytes = PART_BYTES.min(config_map_limit - parts::PART_KEY.len());
    let split = parts::split(&json, |i| names.policy_part(set, i), part_bytes, max_parts)?;
    let parts = split
        .manifest
        .parts
        .iter()
        .zip(split.parts)
        .map(|(part, bytes)| ConfigMap {
            binary_data: Some(BTreeMap::from([(
                parts::PART_KEY.to_owned(),
                ByteString(bytes),
            )])),
            ..config_map(part.name.clone())
        })
        .collect();
    main.data = Some(BTreeMap::from([(
        parts::MANIFEST_KEY.to_owned(),
        split.manifest.to_json(),
    )]));
    Ok(RenderedPolicy {
        parts,
        policy: main,
    })
}

/// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`.
pub fn tls_secret(
    proxy: &EgressProxy,
    name: String,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut meta = metadata(proxy, name);
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: meta,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), bytes(cert_pem)),
            ("tls.key".to_owned(), bytes(key_pem)),
            ("ca.crt".to_owned(), bytes(ca_pem)),
        ])),
        ..Secret::default()
    }
}

/// `<proxy>-trust-bundle`: what clients must trust, one key per purpose and
/// all of it in `ca-bundle.pem`.
pub fn trust_bundle(
    proxy: &EgressProxy,
    intercept_roots: Option<&str>,
    listener_ca: &str,
) -> ConfigMap {
    let mut data = BTreeMap::from([(BUNDLE_LISTENER.to_owned(), listener_ca.to_owned())]);
    let mut all = String::new();
    if let Some(roots) = intercept_roots {
        data.insert(BUNDLE_INTERCEPT.to_owned(), roots.to_owned());
        all.push_str(roots);
    }
    all.push_str(listener_ca);
    data.insert(BUNDLE_ALL.to_owned(), all);
    let mut meta = metadata(proxy, Names::of(proxy).trust_bundle());
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TRUST_BUNDLE_LABEL.to_owned(), "source".to_owned());
    ConfigMap {
        metadata: meta,
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The gateway's ServiceAccount.
pub fn service_account(proxy: &EgressProxy) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(proxy, Names::of(proxy).workload()),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    }
}

/// The least the gateway needs in its namespace: get and watch its own
/// ConfigMaps (the policy and its parts, the namespaces it serves) and Secrets, and the
/// Secrets its credentials name, by name.
/// Pods it reads only in the namespaces it serves (see
/// [`crate::render_clients::pod_reader_binding`]).
pub fn role(proxy: &EgressProxy) -> Role {
    let names = Names::of(proxy);
    let rule = |resource: &str, objects: Vec<String>| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.to_owned()]),
        resource_names: Some(objects),
        verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
        ..PolicyRule::default()
    };
    Role {
        metadata: metadata(proxy, names.workload()),
        rules: Some(vec![
            rule("configmaps", {
                // Every part a policy may take is named, in both sets: the
                // Role need not change before the policy ConfigMap names a
                // new part.
                let mut config_maps = vec![names.policy(), names.served_namespaces()];
                for set in [PartSet::A, PartSet::B] {
                    config_maps.extend((1..=MAX_PARTS).map(|i| names.policy_part(set, i)));
                }
                config_maps
            }),
            rule("secrets", {
                // Its certificates, and the Secrets its credentials name.
                let mut secrets = vec![names.intercept_ca(), names.tls()];
                for credential in &proxy.spec.credentials {
                    if !secrets.contains(&credential.secret_ref.name) {
                        secrets.push(credential.secret_ref.name.clone());
                    }
                }
                secrets
            }),
        ]),
    }
}

/// The gateway's ServiceAccount, as a binding's subject.
pub fn subject(names: &Names) -> Subject {
    Subject {
        kind: "ServiceAccount".to_owned(),
        name: names.workload(),
        namespace: Some(names.namespace.clone()),
        ..Subject::default()
    }
}

/// Binds [`role`] to the gateway's ServiceAccount.
pub fn role_binding(proxy: &EgressProxy) -> RoleBinding {
    let names = Names::of(proxy);
    RoleBinding {
        metadata: metadata(proxy, names.workload()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: names.workload(),
        },
        subjects: Some(vec![subject(&names)]),
    }
}

/// `Service <proxy>`: the endpoint clients use (the cloud's VPC endpoint).
pub fn service(proxy: &EgressProxy) -> Service {
    let names = Names::of(proxy);
    let listeners = &proxy.spec.listeners;
    let port = |name: &str, port: u16, target: i32| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some(name.to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: metadata(proxy, names.workload()),
        spec: Some(ServiceSpec {
            selector: Some(names.selector()),
            ports: Some(vec![
                port("http", listeners.http_port, HTTP_PORT),
                port("https", listeners.https_port, HTTPS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The gateway's arguments: its listeners, and its objects read through the
/// API (`--source kubernetes`): the policy ConfigMap and the certificate
/// Secrets by name, and pods for client identity. A watch sees a change at
/// once; a mounted ConfigMap is refreshed only after a minute or more.
fn gateway_args(proxy: &EgressProxy, settings: &Settings) -> Vec<String> {
    let names = Names::of(proxy);
    [
        "--log-format",
        "json",
        "run",
        "--source",
        "kubernetes",
        "--proxy",
        &names.proxy,
        "--http-listen",
        &format!("0.0.0.0:{HTTP_PORT}"),
        "--https-listen",
        &format!("0.0.0.0:{HTTPS_PORT}"),
        "--admin-listen",
        &format!("0.0.0.0:{ADMIN_PORT}"),
        "--cluster-name",
        &settings.cluster_name,
        "--shutdown-delay",
        SHUTDOWN_DELAY,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        proxy
            .spec
            .destinations
            .ca_bundle_ref
            .as_ref()
            .into_iter()
            .flat_map(|_| {
                [
                    "--upstream-ca".to_owned(),
                    format!("{DESTINATION_CA_DIR}/ca.crt"),
                ]
            }),
    )
    .collect()
}

fn resources(proxy: &EgressProxy) -> Option<ResourceRequirements> {
    let Some(spec) = proxy.spec.resources.as_ref() else {
        return Some(ResourceRequirements {
            requests: Some(
                DEFAULT_REQUESTS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect(),
            ),
            ..ResourceRequirements::default()
        });
    };
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    Some(ResourceRequirements {
        requests: quantities(&spec.requests),
        limits: quantities(&spec.limits),
        ..ResourceRequirements::default()
    })
}

/// `Deployment <proxy>`: non-root, read-only, no privilege, probes on the
/// admin port, spread over nodes, rolled only when what pods read at start
/// changes (policy and certificates are followed live through the API).
/// `destination_ca` is the content of `spec.destinations.caBundleRef`, as
/// read: mounted, and part of what rolls the pods when it changes.
pub fn deployment(
    proxy: &EgressProxy,
    settings: &Settings,
    destination_ca: Option<&str>,
) -> Deployment {
    let names = Names::of(proxy);
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container_port = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let container = Container {
        name: "gateway".to_owned(),
        image: Some(settings.gateway_image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        args: Some(gateway_args(proxy, settings)),
        env: Some(vec![
            EnvVar {
                name: "POD_NAMESPACE".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.namespace".to_owned(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: "RUST_LOG".to_owned(),
                value: Some("info".to_owned()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            container_port("http", HTTP_PORT),
            container_port("https", HTTPS_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        volume_mounts: proxy.spec.destinations.ca_bundle_ref.as_ref().map(|_| {
            vec![VolumeMount {
                name: "destination-ca".to_owned(),
                mount_path: DESTINATION_CA_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: resources(proxy),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    // What the pods read at start; policy and certificate contents are not in
    // it (the gateway reloads them), so a rule change rolls nothing.
    let mut pod_config = serde_json::to_vec(&container).unwrap_or_default();
    if let Some(bundle) = destination_ca {
        pod_config.extend_from_slice(bundle.as_bytes());
    }
    let pod_config_hash = hex(&Sha256::digest(&pod_config))[..16].to_owned();
    let volumes = proxy
        .spec
        .destinations
        .ca_bundle_ref
        .as_ref()
        .map(|reference| {
            vec![Volume {
                name: "destination-ca".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: reference.name.clone(),
                    items: Some(vec![KeyToPath {
                        key: reference.key.clone(),
                        path: "ca.crt".to_owned(),
                        ..KeyToPath::default()
                    }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            }]
        });
    let selector = names.selector();
    let mut pod_labels = names.labels();
    pod_labels.extend(selector.clone());
    Deployment {
        metadata: metadata(proxy, names.workload()),
        spec: DeploymentSpec {
            // With an autoscaler the replica count is the autoscaler's.
            replicas: proxy
                .spec
                .autoscaling
                .is_none()
                .then_some(proxy.spec.replicas.unwrap_or(DEFAULT_REPLICAS)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        POD_CONFIG_ANNOTATION.to_owned(),
                        pod_config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.workload()),
                    containers: vec![container],
                    volumes,
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector),
                            ..LabelSelector::default()
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    termination_grace_period_seconds: Some(40),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// With more than one replica (or an autoscaler), at most one gateway pod
/// may be evicted at a time.
pub fn pod_disruption_budget(proxy: &EgressProxy) -> Option<PodDisruptionBudget> {
    let several = proxy.spec.replicas.unwrap_or(DEFAULT_REPLICAS) > 1
        || proxy
            .spec
            .autoscaling
            .as_ref()
            .is_some_and(|a| a.min_replicas > 1);
    several.then(|| {
        let names = Names::of(proxy);
        PodDisruptionBudget {
            metadata: metadata(proxy, names.workload()),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(names.selector()),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }
    })
}

/// The HorizontalPodAutoscaler of `spec.autoscaling`.
pub fn autoscaler(proxy: &EgressProxy) -> Option<HorizontalPodAutoscaler> {
    let scaling = proxy.spec.autoscaling.as_ref()?;
    let names = Names::of(proxy);
    Some(HorizontalPodAutoscaler {
        metadata: metadata(proxy, names.workload()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: names.workload(),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(scaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        status: None,
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use egress_policy::spec::{Autoscaling, EgressProxySpec};

    use super::*;

    /// `egress` in `team-a` with this spec (also the plan's tests' proxy).
    pub(crate) fn proxy(yaml: &str) -> EgressProxy {
        let spec: EgressProxySpec = serde_saphyr::from_str(yaml).expect("spec");
        let mut proxy = EgressProxy::new("egress", "team-a", spec);
        proxy.metadata.uid = Some("uid-1".to_owned());
        proxy
    }

    pub(crate) fn settings() -> Settings {
        Settings {
            gateway_image: "egress-gateway:dev".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            cluster_name: "prod".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }

    #[test]
    fn every_object_is_owned_labelled_and_named_after_the_proxy() {
        let p = proxy("configurationRef: {name: seed}");
        let deployment = deployment(&p, &settings(), None);
        let meta = &deployment.metadata;
        assert_eq!(meta.name.as_deref(), Some("egress"));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        let owner = &meta.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("EgressProxy", "egress", Some(true))
        );
        let labels = meta.labels.as_ref().expect("labels");
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
        ] {
            assert!(labels.contains_key(key), "{key}");
        }
        assert_eq!(service(&p).metadata.name.as_deref(), Some("egress"));
        assert_eq!(
            trust_bundle(&p, None, "x").metadata.name.as_deref(),
            Some("egress-trust-bundle")
        );
    }

    #[test]
    fn the_gateway_runs_locked_down_and_probed() {
        let p = proxy(
            "configurationRef: {name: seed}\nreplicas: 3\nresources: {requests: {cpu: 100m}, limits: {memory: 128Mi}}",
        );
        let d = deployment(&p, &settings(), None);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        let args = c.args.as_ref().expect("args").join(" ");
        assert!(
            args.contains("--source kubernetes --proxy egress"),
            "{args}"
        );
        assert!(pod.volumes.is_none(), "everything is read through the API");
        let env = c.env.as_ref().expect("env");
        let namespace = env
            .iter()
            .find(|e| e.name == "POD_NAMESPACE")
            .expect("namespace");
        assert!(namespace.value_from.is_some(), "from the downward API");
        assert!(args.contains("--cluster-name prod"), "{args}");
        assert_eq!(
            c.resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .map(|r| r["cpu"].0.clone()),
            Some("100m".to_owned())
        );
        assert_eq!(pod.topology_spread_constraints.map(|t| t.len()), Some(1));
        assert!(
            pod_disruption_budget(&p).is_some(),
            "several replicas get a PDB"
        );
        assert!(
            pod_disruption_budget(&proxy("configurationRef: {name: seed}\nreplicas: 1")).is_none()
        );
    }

    #[test]
    fn by_default_two_pods_request_resources_and_stop_without_dropping_clients() {
        let p = proxy("configurationRef: {name: seed}");
        let d = deployment(&p, &settings(), None);
        assert_eq!(d.spec.replicas, Some(2));
        assert!(pod_disruption_budget(&p).is_some(), "two pods get a PDB");
        let pod = d.spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .expect("requests");
        assert_eq!(
            (requests["cpu"].0.as_str(), requests["memory"].0.as_str()),
            ("100m", "64Mi")
        );
        assert!(
            c.resources
                .as_ref()
                .and_then(|r| r.limits.clone())
                .is_none()
        );
        let args = c.args.as_ref().expect("args").join(" ");
        assert!(args.contains("--shutdown-delay 5s"), "{args}");
        // The delay and the gateway's 30 s drain fit in the grace period.
        assert!(pod.termination_grace_period_seconds >= Some(36));
    }

    #[test]
    fn a_destination_ca_bundle_is_mounted_and_its_content_rolls_the_pods() {
        let p = proxy(
            "configurationRef: {name: seed}\ndestinations: {caBundleRef: {name: internal-roots}}",
        );
        assert_ne!(
            pod_config_hash(&p, Some("one")),
            pod_config_hash(&p, Some("two")),
            "a new bundle rolls the pods"
        );
        let pod = deployment(&p, &settings(), Some("one"))
            .spec
            .template
            .spec
            .expect("pod");
        let volume = &pod.volumes.as_ref().expect("volume")[0];
        let source = volume.config_map.as_ref().expect("from the ConfigMap");
        assert_eq!(source.name, "internal-roots");
        assert_eq!(
            source
                .items
                .as_ref()
                .map(|i| (i[0].key.as_str(), i[0].path.as_str())),
            Some(("ca.crt", "ca.crt"))
        );
        let c = &pod.containers[0];
        let mount = &c.volume_mounts.as_ref().expect("mount")[0];
        assert_eq!(mount.name, volume.name);
        let args = c.args.as_ref().expect("args").join(" ");
        assert!(
            args.contains(&format!("--upstream-ca {}/ca.crt", mount.mount_path)),
            "{args}"
        );
    }

    /// The pod template's config hash of `p`'s Deployment.
    fn pod_config_hash(p: &EgressProxy, destination_ca: Option<&str>) -> String {
        deployment(p, &settings(), destination_ca)
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .map(|a| a[POD_CONFIG_ANNOTATION].clone())
            .expect("hash")
    }

    #[test]
    fn only_what_pods_read_at_start_changes_the_pod_config_hash() {
        let hash = |p: &EgressProxy| pod_config_hash(p, None);
        let p = proxy("configurationRef: {name: seed}");
        let other_rules = proxy("configurationRef: {name: other}\nreplicas: 2");
        assert_eq!(
            hash(&p),
            hash(&other_rules),
            "policy and replica changes do not roll pods"
        );
        let mut intercepting = proxy("configurationRef: {name: seed}");
        intercepting.spec.tls_interception.enabled = true;
        assert_eq!(
            hash(&p),
            hash(&intercepting),
            "interception is followed live too"
        );
        let bigger = proxy("configurationRef: {name: seed}\nresources: {limits: {memory: 1Gi}}");
        assert_ne!(hash(&p), hash(&bigger));
    }

    #[test]
    fn the_service_maps_listener_ports_to_the_containers() {
        let p =
            proxy("configurationRef: {name: seed}\nlisteners: {httpPort: 3128, httpsPort: 443}");
        let ports = service(&p).spec.and_then(|s| s.ports).expect("ports");
        let mapped: Vec<(i32, Option<IntOrString>)> = ports
            .iter()
            .map(|p| (p.port, p.target_port.clone()))
            .collect();
        assert_eq!(
            mapped,
            [
                (3128, Some(IntOrString::Int(HTTP_PORT))),
                (443, Some(IntOrString::Int(HTTPS_PORT)))
            ]
        );
    }

    #[test]
    fn autoscaling_renders_an_hpa_and_leaves_replicas_to_it() {
        let mut p = proxy("configurationRef: {name: seed}");
        p.spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization_percentage: 60,
        });
        let hpa = autoscaler(&p).map(|h| h.spec).expect("hpa");
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 10));
        assert_eq!(deployment(&p, &settings(), None).spec.replicas, None);
        assert!(pod_disruption_budget(&p).is_some());
    }

    #[test]
    fn rbac_is_by_name_and_the_policy_carries_its_hash() {
        let p = proxy("configurationRef: {name: seed}");
        let rules = role(&p).rules.expect("rules");
        let config_maps = rules[0].resource_names.clone().expect("names");
        assert_eq!(
            config_maps[..3],
            [
                "egress-policy",
                "egress-namespaces",
                "egress-policy-part-a-1"
            ]
        );
        assert_eq!(config_maps.len(), 2 + 2 * MAX_PARTS);
        assert_eq!(
            config_maps.last().map(String::as_str),
            Some("egress-policy-part-b-32")
        );
        assert_eq!(
            rules[1].resource_names,
            Some(vec![
                "egress-intercept-ca".to_owned(),
                "egress-tls".to_owned()
            ])
        );
        let yaml = "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: seed}\nspec: {defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n";
        let policy = egress_policy::compile_documents(yaml, None).expect("policy");
        let rendered = policy_config_maps(&p, &policy, PartSet::A).expect("rendered");
        assert!(rendered.parts.is_empty());
        let cm = rendered.policy;
        let annotations = cm.metadata.annotations.expect("annotations");
        assert_eq!(annotations[POLICY_HASH_ANNOTATION], policy.hash());
        assert_eq!(annotations[POLICY_VERSION_ANNOTATION], "1");
        assert!(cm.data.expect("data")[POLICY_KEY].contains("\"formatVersion\":1"));
    }

    #[test]
    fn a_policy_over_one_config_map_comes_in_parts_the_policy_config_map_names() {
        let p = proxy("configurationRef: {name: seed}");
        // 100,000 domains: some 2.6 MB of JSON.
        let entries: Vec<String> = (0..100_000)
            .map(|n| format!("h{:x}.example.com", n * 2_654_435_761_u64 % 1_000_000_007))
            .collect();
        let yaml = format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyList\nmetadata: {{name: big}}\nspec: {{type: Domains, entries: [{}]}}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec:\n  rules:\n    preDNS: [{{name: listed, action: Deny, conditions: [{{key: \"request:DestinationDomain\", operator: StringEquals, valuesFrom: [{{list: big}}]}}]}}]\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {{name: seed}}\nspec: {{ruleGroups: [{{name: g}}], defaultActions: {{preDNS: Allow, preRequest: Allow, postResponse: Allow}}}}\n",
            entries.join(", ")
        );
        let policy = egress_policy::compile_documents(&yaml, None).expect("policy");
        assert!(policy.to_json().len() > CONFIG_MAP_LIMIT);
        let rendered = policy_config_maps(&p, &policy, PartSet::B).expect("rendered");
        assert!(!rendered.parts.is_empty());
        assert_eq!(
            rendered.parts[0].metadata.name.as_deref(),
            Some("egress-policy-part-b-1")
        );
        let manifest = &rendered.policy.data.as_ref().expect("data")[parts::MANIFEST_KEY];
        let manifest = parts::Manifest::from_json(manifest).expect("manifest");
        let bytes = rendered
            .parts
            .iter()
            .zip(&manifest.parts)
            .map(|(cm, named)| {
                assert_eq!(cm.metadata.name.as_ref(), Some(&named.name));
                assert_eq!(
                    cm.metadata.owner_references,
                    rendered.policy.metadata.owner_references
                );
                let annotations = cm.metadata.annotations.as_ref().expect("annotations");
                assert_eq!(annotations[POLICY_HASH_ANNOTATION], policy.hash());
                let data = cm.binary_data.as_ref().expect("binaryData");
                assert!(data[parts::PART_KEY].0.len() <= PART_BYTES);
                Some(data[parts::PART_KEY].0.clone())
            })
            .collect();
        assert_eq!(
            manifest.assemble(bytes).expect("assembled"),
            policy.to_json()
        );
        let annotations = rendered.policy.metadata.annotations.expect("annotations");
        assert_eq!(annotations[POLICY_HASH_ANNOTATION], policy.hash());

        // More than the parts hold: refused, with the sizes (the operator
        // says it in PolicyCompiled=False, reason PolicyTooLarge).
        let error =
            policy_config_maps_within(&p, &policy, PartSet::A, 100_000, 2).expect_err("too large");
        assert!(
            error.to_string().contains(&format!(
                "the compiled policy is {} bytes",
                policy.to_json().len()
            )),
            "{error}"
        );
    }
}
