//! What the injection webhook does to a pod, as pure functions: which proxy
//! serves it (or why none does), and the pod with the proxy settings added.
//! The webhook ([`crate::webhook`]) turns the difference into a JSON patch;
//! the clients reconciler uses the same decision to count escaped pods.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use egress_policy::spec::ClientListener;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, Pod, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::EgressProxy;
use crate::names::{
    BUNDLE_ALL, BUNDLE_JAVA, BUNDLE_WITH_SYSTEM, INJECT_ANNOTATION, INJECTION_LABEL, Names,
    PROXY_ANNOTATION, PROXY_REASON_ANNOTATION,
};

/// Name of the trust bundle volume added to pods.
pub const TRUST_VOLUME: &str = "egress-trust-bundle";
/// Where the trust bundle is mounted in every container.
pub const TRUST_DIR: &str = "/etc/egress-proxy";
/// Namespaces never injected, whatever their labels say.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// The label of gateway pods, which are never injected.
const GATEWAY_LABEL: (&str, &str) = ("app.kubernetes.io/name", crate::names::GATEWAY_NAME);

/// What the injected settings depend on besides the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// DNS domain (`cluster.local`).
    pub domain: String,
    /// Addresses of the API server's Service (`kubernetes.default`).
    pub api_server: Vec<String>,
    /// Service CIDRs.
    pub service_cidrs: Vec<String>,
    /// Pod CIDRs.
    pub pod_cidrs: Vec<String>,
    /// The operator's namespace (never injected; its proxies may serve
    /// other namespaces).
    pub operator_namespace: String,
    /// Other namespaces whose proxies may serve other namespaces (set by the
    /// cluster's administrator: whoever creates a proxy there decides other
    /// teams' traffic and the roots they trust).
    pub shared_proxy_namespaces: Vec<String>,
}

impl Cluster {
    /// Whether proxies in `namespace` may serve other namespaces.
    pub fn shares_proxies_of(&self, namespace: &str) -> bool {
        namespace == self.operator_namespace
            || self.shared_proxy_namespaces.iter().any(|n| n == namespace)
    }
}

/// Why a pod is left untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The pod says `egress.dev/inject: "false"`.
    OptedOut,
    /// A gateway pod (`app.kubernetes.io/name=egress-gateway`).
    GatewayPod,
    /// A system namespace, or the operator's own.
    SystemNamespace,
    /// The namespace lacks `egress.dev/injection=enabled`.
    NotEnabled,
    /// No proxy selects the pod (or the one the namespace pins does not).
    NotSelected(String),
}

impl Skip {
    /// Short stable reason, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::OptedOut => "opted_out",
            Skip::GatewayPod => "gateway_pod",
            Skip::SystemNamespace => "system_namespace",
            Skip::NotEnabled => "namespace_not_enabled",
            Skip::NotSelected(_) => "no_proxy_selects",
        }
    }
}

/// The proxy chosen for a pod, and why that one.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The proxy.
    pub proxy: Arc<EgressProxy>,
    /// Why it, for the pod annotation.
    pub reason: String,
}

impl Choice {
    /// The proxy's names.
    pub fn names(&self) -> Names {
        Names::of(&self.proxy)
    }
}

/// Which proxy serves a pod with metadata `pod` in `namespace` (whose labels
/// and annotations are given), or why none.
///
/// The candidates are the proxies that may serve the namespace (see
/// [`serves_namespace`]) and whose selectors take the pod. A candidate in the
/// pod's own namespace wins, then the first by namespace and name, so the
/// choice never depends on the order the operator learned of them.
pub fn decide(
    pod: &ObjectMeta,
    namespace: &str,
    namespace_meta: &ObjectMeta,
    proxies: &[Arc<EgressProxy>],
    cluster: &Cluster,
) -> Result<Choice, Skip> {
    let opted_out = pod
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if opted_out {
        return Err(Skip::OptedOut);
    }
    let empty = BTreeMap::new();
    let pod_labels = pod.labels.as_ref().unwrap_or(&empty);
    if pod_labels.get(GATEWAY_LABEL.0).map(String::as_str) == Some(GATEWAY_LABEL.1) {
        return Err(Skip::GatewayPod);
    }
    if let Some(skip) = namespace_skip(namespace, namespace_meta, cluster) {
        return Err(skip);
    }
    let namespace_labels = namespace_meta.labels.as_ref().unwrap_or(&empty);
    let mut candidates: Vec<&Arc<EgressProxy>> = proxies
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| serves_namespace(p, namespace, namespace_meta, cluster))
        .filter(|p| serves(p, namespace_labels, pod_labels))
        .collect();
    candidates.sort_by_key(|p| {
        let names = Names::of(p);
        (names.namespace != namespace, names.namespace, names.proxy)
    });
    let pinned = pinned(namespace_meta);
    let Some(first) = candidates.first() else {
        return Err(Skip::NotSelected(match pinned {
            Some(pinned) => format!(
                "the namespace pins {pinned}, which does not exist, does not select this pod, or (outside the shared proxy namespaces) has no namespaceSelector that takes this namespace"
            ),
            None => "no EgressProxy selects this pod".to_owned(),
        }));
    };
    let reason = if pinned.is_some() {
        format!("the namespace pins it ({PROXY_ANNOTATION} annotation)")
    } else if candidates.len() == 1 {
        "the only EgressProxy that selects this pod".to_owned()
    } else {
        let all: Vec<String> = candidates
            .iter()
            .map(|p| Names::of(p).qualified())
            .collect();
        let rule = if Names::of(first).namespace == namespace {
            "in the pod's namespace"
        } else {
            "first by namespace/name"
        };
        format!(
            "{} EgressProxies select this pod ({}); chosen: {rule}",
            all.len(),
            all.join(", ")
        )
    };
    Ok(Choice {
        proxy: (*first).clone(),
        reason,
    })
}

/// The proxy a namespace pins with the annotation `egress.dev/proxy`.
fn pinned(namespace_meta: &ObjectMeta) -> Option<&String> {
    namespace_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROXY_ANNOTATION))
}

/// Why no pod of `namespace` is injected, if that is so: a system
/// namespace (or the operator's), or not opted in.
fn namespace_skip(namespace: &str, namespace_meta: &ObjectMeta, cluster: &Cluster) -> Option<Skip> {
    if SYSTEM_NAMESPACES.contains(&namespace) || namespace == cluster.operator_namespace {
        return Some(Skip::SystemNamespace);
    }
    (!injection_enabled(namespace_meta)).then_some(Skip::NotEnabled)
}

/// Whether the namespace is labelled for injection.
pub fn injection_enabled(namespace_meta: &ObjectMeta) -> bool {
    namespace_meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECTION_LABEL))
        .is_some_and(|v| v == "enabled")
}

/// Whether `proxy` may serve (some) pods of `namespace`: the namespace is
/// opted in; the proxy is in it, or in a namespace whose proxies the
/// administrator shares, or the namespace pins it and the proxy agrees (its
/// `namespaceSelector` is set: a team's proxy does not serve other
/// namespaces unless it says so); no other proxy is pinned; and the proxy's
/// namespace selector takes it.
pub fn serves_namespace(
    proxy: &EgressProxy,
    namespace: &str,
    namespace_meta: &ObjectMeta,
    cluster: &Cluster,
) -> bool {
    if namespace_skip(namespace, namespace_meta, cluster).is_some() {
        return false;
    }
    let names = Names::of(proxy);
    let trusted = names.namespace == namespace || cluster.shares_proxies_of(&names.namespace);
    let allowed = match pinned(namespace_meta) {
        Some(pinned) => {
            *pinned == names.qualified()
                && (trusted || proxy.spec.clients.namespace_selector.is_some())
        }
        None => trusted,
    };
    let empty = BTreeMap::new();
    allowed
        && proxy
            .spec
            .clients
            .namespace_selector
            .as_ref()
            .is_none_or(|s| s.matches(namespace_meta.labels.as_ref().unwrap_or(&empty)))
}

/// Whether `proxy`'s client selectors take a pod with these labels in a
/// namespace with these labels.
pub fn serves(
    proxy: &EgressProxy,
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    let clients = &proxy.spec.clients;
    clients
        .namespace_selector
        .as_ref()
        .is_none_or(|s| s.matches(namespace_labels))
        && clients
            .pod_selector
            .as_ref()
            .is_none_or(|s| s.matches(pod_labels))
}

/// The proxy variables whose presence in a container shows it was injected.
const PROXY_VARIABLES: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];

/// Whether every container of `pod` (init containers too) carries a proxy
/// variable: what the webhook gives each. The pod's own `egress.dev/proxy`
/// annotation says which proxy, but a pod created while the webhook was
/// down could carry it without having been injected.
pub fn carries_settings(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|container| {
            container
                .env
                .iter()
                .flatten()
                .any(|e| PROXY_VARIABLES.contains(&e.name.as_str()))
        })
}

/// `pod` reduced to what counting served pods reads (metadata without
/// managed fields, and the containers' proxy variables), for a cache of
/// every pod that stays small.
pub fn trim_for_counting(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.status = None;
    let keep = |containers: Vec<Container>| -> Vec<Container> {
        containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                env: c.env.map(|env| {
                    env.into_iter()
                        .filter(|e| PROXY_VARIABLES.contains(&e.name.as_str()))
                        .collect()
                }),
                ..Container::default()
            })
            .collect()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        containers: keep(spec.containers),
        init_containers: spec.init_containers.map(keep),
        ..PodSpec::default()
    });
}

/// Whether pods of `proxy` get the trust bundle: asked for, and there is
/// something to trust (interception, or TLS to the proxy itself).
pub fn mounts_trust_bundle(proxy: &EgressProxy) -> bool {
    proxy.spec.clients.inject_trust_bundle
        && (proxy.spec.tls_interception.enabled
            || proxy.spec.clients.listener == ClientListener::Https)
}

/// `NO_PROXY` for pods of `proxy`: loopback, cluster names, the API server,
/// the service and pod ranges, then the proxy's extras; no duplicates, and
/// no entry that is unusable (see [`unusable_no_proxy`]).
pub fn no_proxy(proxy: &EgressProxy, cluster: &Cluster) -> Vec<String> {
    let mut entries: Vec<String> = ["localhost", "127.0.0.1", "::1", ".svc"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !cluster.domain.is_empty() {
        entries.push(format!(".{}", cluster.domain.trim_start_matches('.')));
    }
    entries.extend(["kubernetes.default".to_owned(), "kubernetes".to_owned()]);
    let rest = cluster
        .api_server
        .iter()
        .chain(&cluster.service_cidrs)
        .chain(&cluster.pod_cidrs)
        .chain(&proxy.spec.clients.no_proxy);
    for entry in rest {
        let entry = entry.trim();
        if why_unusable(entry).is_none() && !entries.iter().any(|e| e == entry) {
            entries.push(entry.to_owned());
        }
    }
    entries
}

/// The proxy's `clients.noProxy` entries that are left out, and why.
pub fn unusable_no_proxy(proxy: &EgressProxy) -> Vec<String> {
    proxy
        .spec
        .clients
        .no_proxy
        .iter()
        .filter_map(|e| why_unusable(e.trim()).map(|why| format!("{e:?} ({why})")))
        .collect()
}

/// Why a `NO_PROXY` entry is left out: it would break the variable's syntax,
/// is not a range, or would send everything around the proxy.
fn why_unusable(entry: &str) -> Option<&'static str> {
    if entry.is_empty() || entry.contains(|c: char| c == ',' || c == '|' || c.is_whitespace()) {
        return Some("empty, or a comma, bar or space in it");
    }
    if entry == "*" {
        return Some("it would bypass the proxy for everything");
    }
    let (address, bits) = entry.split_once('/')?;
    let (Ok(address), Ok(bits)) = (address.parse::<IpAddr>(), bits.parse::<u8>()) else {
        return Some("not an address range");
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    if bits == 0 || bits > max {
        return Some(if bits == 0 {
            "it would bypass the proxy for every address"
        } else {
            "the prefix length is too long"
        });
    }
    None
}

/// `NO_PROXY` entries as Java's `http.nonProxyHosts`: `|`-separated, `*.`
/// for domain suffixes. Java has no CIDRs: an IPv4 range becomes the octet
/// wildcards that cover exactly it (`10.96.0.0/12` → `10.96.*` ... `10.111.*`,
/// at most 128 of them); IPv6 ranges are left out.
pub fn java_non_proxy_hosts(no_proxy: &[String]) -> String {
    let mut hosts: Vec<String> = Vec::new();
    for entry in no_proxy {
        let expanded = if let Some(suffix) = entry.strip_prefix('.') {
            vec![format!("*.{suffix}")]
        } else if let Some((address, bits)) = entry.split_once('/') {
            ipv4_wildcards(address, bits)
        } else {
            vec![entry.clone()]
        };
        for host in expanded {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts.join("|")
}

fn ipv4_wildcards(address: &str, bits: &str) -> Vec<String> {
    let (Ok(IpAddr::V4(address)), Ok(bits)) = (address.parse(), bits.parse::<u32>()) else {
        return Vec::new();
    };
    if bits == 0 || bits > 32 {
        return Vec::new(); // never bypass the proxy for every address
    }
    // The octets the prefix touches; the last one takes `spread` values.
    let octets = bits.div_ceil(8);
    let spread = 1u32 << (octets * 8 - bits);
    let base = u32::from(address) & (u32::MAX << (32 - bits));
    (0..spread)
        .map(|n| {
            let start = base + (n << (32 - octets * 8));
            let kept: Vec<String> = start.to_be_bytes()[..octets as usize]
                .iter()
                .map(u8::to_string)
                .collect();
            if octets == 4 {
                kept.join(".")
            } else {
                format!("{}.*", kept.join("."))
            }
        })
        .collect()
}

/// The pod with `choice`'s settings added: annotations naming the proxy, the
/// variables in every container and init container (unless already set),
/// and, when the proxy asks for it, the trust bundle volume. Applying it to
/// its own output changes nothing.
pub fn mutate(pod: &Pod, choice: &Choice, cluster: &Cluster) -> Pod {
    let proxy = &choice.proxy;
    let names = choice.names();
    let host = format!("{}.{}.svc", names.proxy, names.namespace);
    let listeners = &proxy.spec.listeners;
    let url = match proxy.spec.clients.listener {
        ClientListener::Http => format!("http://{host}:{}", listeners.http_port),
        ClientListener::Https => format!("https://{host}:{}", listeners.https_port),
    };
    let mut pod = pod.clone();
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let volume = Volume {
        name: TRUST_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.client_trust_bundle(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    // A volume of that name that is not ours: no trust bundle, rather than
    // variables pointing at someone else's files.
    let trust = mounts_trust_bundle(proxy)
        && spec
            .volumes
            .iter()
            .flatten()
            .all(|v| v.name != TRUST_VOLUME || *v == volume);
    let variables = Variables {
        url,
        no_proxy: no_proxy(proxy, cluster).join(","),
        java_host: host,
        java_port: listeners.http_port,
        trust,
    };
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        variables.add_to(container);
    }
    if trust {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.contains(&volume) {
            volumes.push(volume);
        }
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(PROXY_ANNOTATION.to_owned(), names.qualified());
    annotations.insert(PROXY_REASON_ANNOTATION.to_owned(), choice.reason.clone());
    pod
}

/// The values every container gets.
struct Variables {
    url: String,
    no_proxy: String,
    /// Java always uses the plain listener: it cannot speak TLS to a proxy.
    java_host: String,
    java_port: u16,
    trust: bool,
}

impl Variables {
    fn add_to(&self, container: &mut Container) {
        let env = container.env.get_or_insert_with(Vec::new);
        let value_of = |env: &[EnvVar], name: &str| -> Option<String> {
            let lower = name.to_ascii_lowercase();
            env.iter()
                .find(|e| e.name == name || e.name == lower)
                .map(|e| e.value.clone().unwrap_or_default())
        };
        // What the container chose itself, which Java follows too.
        let own_proxy = value_of(env, "HTTPS_PROXY").is_some();
        let no_proxy = value_of(env, "NO_PROXY").unwrap_or_else(|| self.no_proxy.clone());
        // A pair the container sets either half of is its own choice: adding
        // the other half would override it in clients that prefer that case.
        for (upper, value) in [
            ("HTTPS_PROXY", &self.url),
            ("HTTP_PROXY", &self.url),
            ("NO_PROXY", &self.no_proxy),
        ] {
            if value_of(env, upper).is_none() {
                env.push(variable(upper, value));
                env.push(variable(&upper.to_ascii_lowercase(), value));
            }
        }
        set_if_absent(env, "NODE_USE_ENV_PROXY", "1");

        // The trust bundle, unless something else is mounted where it goes.
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        let ours = |m: &VolumeMount| m.name == TRUST_VOLUME && m.mount_path == TRUST_DIR;
        let trust = self.trust
            && mounts
                .iter()
                .all(|m| ours(m) || (m.name != TRUST_VOLUME && m.mount_path != TRUST_DIR));
        if trust && !mounts.iter().any(ours) {
            mounts.push(VolumeMount {
                name: TRUST_VOLUME.to_owned(),
                mount_path: TRUST_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }

        let mut java = Vec::new();
        if !own_proxy {
            let (host, port) = (&self.java_host, self.java_port);
            let hosts: Vec<String> = no_proxy.split(',').map(|e| e.trim().to_owned()).collect();
            java.extend([
                ("http.proxyHost", host.clone()),
                ("http.proxyPort", port.to_string()),
                ("https.proxyHost", host.clone()),
                ("https.proxyPort", port.to_string()),
                ("http.nonProxyHosts", java_non_proxy_hosts(&hosts)),
            ]);
        }
        if trust {
            java.extend([
                (
                    "javax.net.ssl.trustStore",
                    format!("{TRUST_DIR}/{BUNDLE_JAVA}"),
                ),
                ("javax.net.ssl.trustStoreType", "PKCS12".to_owned()),
            ]);
            let with_system = format!("{TRUST_DIR}/{BUNDLE_WITH_SYSTEM}");
            for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
                set_if_absent(env, name, &with_system);
            }
            // Node adds these to its own roots.
            set_if_absent(
                env,
                "NODE_EXTRA_CA_CERTS",
                &format!("{TRUST_DIR}/{BUNDLE_ALL}"),
            );
        }
        add_java_options(env, &java);
    }
}

/// Adds each `-D<property>=<value>` the container's `JAVA_TOOL_OPTIONS` does
/// not set yet (the container's own settings win); a value taken from a
/// Secret or ConfigMap cannot be appended to and is left alone.
fn add_java_options(env: &mut Vec<EnvVar>, properties: &[(&str, String)]) {
    let index = match env.iter().position(|e| e.name == "JAVA_TOOL_OPTIONS") {
        Some(index) => index,
        None if properties.is_empty() => return,
        None => {
            env.push(variable("JAVA_TOOL_OPTIONS", ""));
            env.len() - 1
        }
    };
    let existing = &mut env[index];
    if existing.value_from.is_some() {
        return;
    }
    let value = existing.value.get_or_insert_with(String::new);
    for (property, setting) in properties {
        let option = format!("-D{property}=");
        if !value.split_whitespace().any(|o| o.starts_with(&option)) {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(&option);
            value.push_str(setting);
        }
    }
}

fn variable(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn set_if_absent(env: &mut Vec<EnvVar>, name: &str, value: &str) {
    if !env.iter().any(|e| e.name == name) {
        env.push(variable(name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(namespace: &str, name: &str, clients: serde_json::Value) -> Arc<EgressProxy> {
        proxy_with(namespace, name, clients, false)
    }

    fn proxy_with(
        namespace: &str,
        name: &str,
        clients: serde_json::Value,
        intercept: bool,
    ) -> Arc<EgressProxy> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "egress.dev/v1alpha1",
                "kind": "EgressProxy",
                "metadata": {"name": name, "namespace": namespace, "uid": "u"},
                "spec": {
                    "configurationRef": {"name": "c"},
                    "tlsInterception": {"enabled": intercept},
                    "clients": clients,
                }
            }))
            .expect("valid proxy"),
        )
    }

    fn cluster() -> Cluster {
        Cluster {
            domain: "cluster.local".to_owned(),
            api_server: vec!["10.96.0.1".to_owned()],
            service_cidrs: vec!["10.96.0.0/12".to_owned()],
            pod_cidrs: vec!["10.244.0.0/16".to_owned()],
            operator_namespace: "egress-system".to_owned(),
            shared_proxy_namespaces: ["egress", "aaa", "bbb"].map(str::to_owned).to_vec(),
        }
    }

    fn namespace(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        ObjectMeta {
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        }
    }

    fn enabled() -> ObjectMeta {
        namespace(&[("egress.dev/injection", "enabled")], &[])
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("valid pod")
    }

    fn app_pod() -> Pod {
        pod(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [
                    {"name": "app", "image": "app", "env": [
                        {"name": "HTTPS_PROXY", "value": "http://mine:3128"},
                        {"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx256m"},
                        {"name": "SSL_CERT_FILE", "value": "/my/roots.pem"}
                    ]},
                    {"name": "sidecar", "image": "side"}
                ]
            }
        }))
    }

    fn env(pod: &Pod, container: &str) -> BTreeMap<String, String> {
        let spec = pod.spec.as_ref().expect("spec");
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == container)
            .expect("container")
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    fn choose(
        pod: &Pod,
        ns: &str,
        ns_meta: &ObjectMeta,
        proxies: &[Arc<EgressProxy>],
    ) -> Result<Choice, Skip> {
        decide(&pod.metadata, ns, ns_meta, proxies, &cluster())
    }

    #[test]
    fn every_container_gets_the_variables_and_keeps_its_own() {
        let proxies = [proxy("egress", "main", serde_json::json!({}))];
        let choice = choose(&app_pod(), "team", &enabled(), &proxies).expect("served");
        assert_eq!(choice.reason, "the only EgressProxy that selects this pod");
        let mutated = mutate(&app_pod(), &choice, &cluster());
        let annotations = mutated.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations[PROXY_ANNOTATION], "egress/main");

        for container in ["init", "sidecar"] {
            let env = env(&mutated, container);
            for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
                assert_eq!(
                    env[name], "http://main.egress.svc:1080",
                    "{container} {name}"
                );
            }
            assert_eq!(env["NO_PROXY"], env["no_proxy"]);
            assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
            assert!(env["JAVA_TOOL_OPTIONS"].starts_with("-Dhttp.proxyHost=main.egress.svc -Dhttp.proxyPort=1080 -Dhttps.proxyHost=main.egress.svc -Dhttps.proxyPort=1080 -Dhttp.nonProxyHosts=localhost|127.0.0.1|"));
            assert!(
                !env.contains_key("SSL_CERT_FILE"),
                "no interception, no bundle"
            );
        }
        let app = env(&mutated, "app");
        assert_eq!(
            app["HTTPS_PROXY"], "http://mine:3128",
            "the pod's own value stays"
        );
        assert!(
            !app.contains_key("https_proxy"),
            "nor is its twin overridden"
        );
        assert_eq!(app["HTTP_PROXY"], "http://main.egress.svc:1080");
        assert_eq!(app["SSL_CERT_FILE"], "/my/roots.pem");
        assert_eq!(
            app["JAVA_TOOL_OPTIONS"], "-Xmx256m",
            "a container with its own proxy keeps it for Java too"
        );
        assert!(mutated.spec.as_ref().expect("spec").volumes.is_none());
    }

    #[test]
    fn java_follows_the_containers_own_settings_property_by_property() {
        let proxies = [proxy_with("egress", "main", serde_json::json!({}), true)];
        let pod = pod(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "own-no-proxy", "image": "j", "env": [
                    {"name": "no_proxy", "value": "db.internal,.corp"},
                    {"name": "JAVA_TOOL_OPTIONS", "value": "-Dhttp.proxyPort=3128 -Xss1m"}
                ]},
                {"name": "from-secret", "image": "j", "env": [
                    {"name": "JAVA_TOOL_OPTIONS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ]}
            ]}
        }));
        let choice = choose(&pod, "team", &enabled(), &proxies).expect("served");
        let mutated = mutate(&pod, &choice, &cluster());
        let own = env(&mutated, "own-no-proxy");
        assert_eq!(own["no_proxy"], "db.internal,.corp");
        assert!(!own.contains_key("NO_PROXY"));
        assert_eq!(
            own["JAVA_TOOL_OPTIONS"],
            "-Dhttp.proxyPort=3128 -Xss1m -Dhttp.proxyHost=main.egress.svc -Dhttps.proxyHost=main.egress.svc -Dhttps.proxyPort=1080 -Dhttp.nonProxyHosts=db.internal|*.corp -Djavax.net.ssl.trustStore=/etc/egress-proxy/truststore.p12 -Djavax.net.ssl.trustStoreType=PKCS12",
            "its own port stays; Java bypasses what the container's no_proxy says"
        );
        let secret = mutated.spec.as_ref().expect("spec").containers[1]
            .env
            .clone()
            .unwrap_or_default();
        let java = secret
            .iter()
            .find(|e| e.name == "JAVA_TOOL_OPTIONS")
            .expect("kept");
        assert!(
            java.value.is_none() && java.value_from.is_some(),
            "left alone"
        );
    }

    #[test]
    fn trust_variables_only_point_at_the_operators_own_mount() {
        let proxies = [proxy_with("egress", "main", serde_json::json!({}), true)];
        let pod = pod(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "clash", "image": "a", "volumeMounts": [{"name": "mine", "mountPath": "/etc/egress-proxy"}]},
                    {"name": "plain", "image": "b"}
                ],
                "volumes": [{"name": "mine", "emptyDir": {}}]
            }
        }));
        let choice = choose(&pod, "team", &enabled(), &proxies).expect("served");
        let mutated = mutate(&pod, &choice, &cluster());
        assert!(!env(&mutated, "clash").contains_key("SSL_CERT_FILE"));
        assert!(!env(&mutated, "clash")["JAVA_TOOL_OPTIONS"].contains("trustStore"));
        assert_eq!(
            env(&mutated, "plain")["SSL_CERT_FILE"],
            "/etc/egress-proxy/ca-certificates.crt"
        );
        // A pod volume of the same name that is not the bundle: none at all.
        let mut taken = pod.clone();
        taken.spec.as_mut().expect("spec").volumes = Some(vec![
            serde_json::from_value(serde_json::json!({"name": TRUST_VOLUME, "emptyDir": {}}))
                .expect("volume"),
        ]);
        let mutated = mutate(&taken, &choice, &cluster());
        assert!(!env(&mutated, "plain").contains_key("SSL_CERT_FILE"));
        assert_eq!(
            mutated.spec.expect("spec").volumes.expect("volumes").len(),
            1
        );
    }

    #[test]
    fn a_pod_is_counted_as_injected_by_what_it_carries_not_what_it_says() {
        let choice = choose(
            &app_pod(),
            "team",
            &enabled(),
            &[proxy("egress", "main", serde_json::json!({}))],
        )
        .expect("served");
        let mut injected = mutate(&app_pod(), &choice, &cluster());
        assert!(carries_settings(&injected));
        trim_for_counting(&mut injected);
        assert!(carries_settings(&injected), "trimming keeps what counts");
        let containers = &injected.spec.as_ref().expect("spec").containers;
        assert!(
            containers[0]
                .env
                .iter()
                .flatten()
                .all(|e| e.name.ends_with("_proxy") || e.name.ends_with("_PROXY"))
        );
        // Annotated by itself, never injected: not carried.
        let mut forged = app_pod();
        forged
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PROXY_ANNOTATION.to_owned(), "egress/main".to_owned());
        assert!(!carries_settings(&forged));
    }

    #[test]
    fn injection_is_idempotent() {
        for intercept in [false, true] {
            let proxies = [proxy_with(
                "egress",
                "main",
                serde_json::json!({}),
                intercept,
            )];
            let choice = choose(&app_pod(), "team", &enabled(), &proxies).expect("served");
            let once = mutate(&app_pod(), &choice, &cluster());
            let twice = mutate(&once, &choice, &cluster());
            assert_eq!(once, twice, "interception {intercept}");
            let before = serde_json::to_value(&once).expect("json");
            let after = serde_json::to_value(&twice).expect("json");
            assert!(json_patch::diff(&before, &after).0.is_empty());
        }
    }

    #[test]
    fn interception_mounts_the_trust_bundle_everywhere() {
        let proxies = [proxy_with("egress", "main", serde_json::json!({}), true)];
        let choice = choose(&app_pod(), "team", &enabled(), &proxies).expect("served");
        let mutated = mutate(&app_pod(), &choice, &cluster());
        let spec = mutated.spec.as_ref().expect("spec");
        let volume = &spec.volumes.as_ref().expect("volumes")[0];
        assert_eq!(volume.name, TRUST_VOLUME);
        assert_eq!(
            volume.config_map.as_ref().expect("configMap").name,
            "egress-trust.egress.main"
        );
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let mounts = container.volume_mounts.as_ref().expect("mounts");
            assert!(
                mounts
                    .iter()
                    .any(|m| m.mount_path == TRUST_DIR && m.read_only == Some(true))
            );
        }
        let side = env(&mutated, "sidecar");
        for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
            assert_eq!(side[name], "/etc/egress-proxy/ca-certificates.crt");
        }
        assert_eq!(
            side["NODE_EXTRA_CA_CERTS"],
            "/etc/egress-proxy/ca-bundle.pem"
        );
        assert!(side["JAVA_TOOL_OPTIONS"].ends_with(
            "-Djavax.net.ssl.trustStore=/etc/egress-proxy/truststore.p12 -Djavax.net.ssl.trustStoreType=PKCS12"
        ));
        // Turned off by the proxy: no bundle even with interception.
        let off = [proxy_with(
            "egress",
            "main",
            serde_json::json!({"injectTrustBundle": false}),
            true,
        )];
        let choice = choose(&app_pod(), "team", &enabled(), &off).expect("served");
        assert!(
            mutate(&app_pod(), &choice, &cluster())
                .spec
                .expect("spec")
                .volumes
                .is_none()
        );
    }

    #[test]
    fn the_https_listener_is_used_when_asked_but_never_for_java() {
        let proxies = [proxy(
            "egress",
            "main",
            serde_json::json!({"listener": "https"}),
        )];
        let choice = choose(&app_pod(), "team", &enabled(), &proxies).expect("served");
        let side = env(&mutate(&app_pod(), &choice, &cluster()), "sidecar");
        assert_eq!(side["HTTPS_PROXY"], "https://main.egress.svc:443");
        assert!(side["JAVA_TOOL_OPTIONS"].contains("-Dhttps.proxyPort=1080"));
        assert_eq!(
            side["SSL_CERT_FILE"], "/etc/egress-proxy/ca-certificates.crt",
            "the listener CA must be trusted"
        );
    }

    #[test]
    fn opt_out_system_namespaces_and_unlabelled_namespaces_are_skipped() {
        let proxies = [proxy("egress", "main", serde_json::json!({}))];
        let mut opted_out = app_pod();
        opted_out.metadata.annotations = Some(BTreeMap::from([(
            INJECT_ANNOTATION.to_owned(),
            "false".to_owned(),
        )]));
        assert_eq!(
            choose(&opted_out, "team", &enabled(), &proxies).expect_err("skipped"),
            Skip::OptedOut
        );
        for system in ["kube-system", "egress-system"] {
            assert_eq!(
                choose(&app_pod(), system, &enabled(), &proxies).expect_err("skipped"),
                Skip::SystemNamespace
            );
        }
        let mut gateway = app_pod();
        gateway.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "egress-gateway".to_owned(),
        )]));
        assert_eq!(
            choose(&gateway, "egress", &enabled(), &proxies).expect_err("skipped"),
            Skip::GatewayPod
        );
        let unlabelled = namespace(&[("egress.dev/injection", "disabled")], &[]);
        assert_eq!(
            choose(&app_pod(), "team", &unlabelled, &proxies).expect_err("skipped"),
            Skip::NotEnabled
        );
        assert!(matches!(
            choose(&app_pod(), "team", &enabled(), &[]),
            Err(Skip::NotSelected(_))
        ));
    }

    #[test]
    fn selectors_decide_which_pods_a_proxy_serves() {
        let proxies = [proxy(
            "egress",
            "main",
            serde_json::json!({
                "namespaceSelector": {"matchLabels": {"team": "a"}},
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}
            }),
        )];
        let team_a = namespace(&[("egress.dev/injection", "enabled"), ("team", "a")], &[]);
        assert!(choose(&app_pod(), "a", &team_a, &proxies).is_ok());
        assert!(choose(&app_pod(), "b", &enabled(), &proxies).is_err());
        let mut other = app_pod();
        other.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "db".to_owned())]));
        assert!(choose(&other, "a", &team_a, &proxies).is_err());
    }

    #[test]
    fn two_proxies_choose_deterministically_and_say_why() {
        let a = proxy("aaa", "first", serde_json::json!({}));
        let b = proxy("team", "local", serde_json::json!({}));
        let c = proxy("bbb", "second", serde_json::json!({}));
        for order in [
            vec![a.clone(), b.clone(), c.clone()],
            vec![c.clone(), b.clone(), a.clone()],
        ] {
            let choice = choose(&app_pod(), "team", &enabled(), &order).expect("served");
            assert_eq!(choice.names().qualified(), "team/local");
            assert_eq!(
                choice.reason,
                "3 EgressProxies select this pod (team/local, aaa/first, bbb/second); chosen: in the pod's namespace"
            );
            let choice = choose(&app_pod(), "other", &enabled(), &order).expect("served");
            assert_eq!(choice.names().qualified(), "aaa/first");
            assert!(
                choice.reason.ends_with("chosen: first by namespace/name"),
                "{}",
                choice.reason
            );
        }
        // A namespace pins its proxy; one that does not select the pod serves none.
        let pinned = namespace(
            &[("egress.dev/injection", "enabled")],
            &[(PROXY_ANNOTATION, "bbb/second")],
        );
        let choice = choose(
            &app_pod(),
            "team",
            &pinned,
            &[a.clone(), b.clone(), c.clone()],
        )
        .expect("served");
        assert_eq!(choice.names().qualified(), "bbb/second");
        let gone = namespace(
            &[("egress.dev/injection", "enabled")],
            &[(PROXY_ANNOTATION, "bbb/gone")],
        );
        assert!(
            matches!(choose(&app_pod(), "team", &gone, &[a, b, c]), Err(Skip::NotSelected(m)) if m.contains("bbb/gone"))
        );
    }

    #[test]
    fn a_proxy_outside_the_shared_namespaces_serves_only_its_own_and_consenting_namespaces() {
        let rogue = proxy("aaa-rogue", "grab", serde_json::json!({}));
        assert!(matches!(
            choose(&app_pod(), "team", &enabled(), std::slice::from_ref(&rogue)),
            Err(Skip::NotSelected(_))
        ));
        let own = choose(
            &app_pod(),
            "aaa-rogue",
            &enabled(),
            std::slice::from_ref(&rogue),
        );
        assert_eq!(
            own.expect("its own namespace").names().qualified(),
            "aaa-rogue/grab"
        );
        let consenting = namespace(
            &[("egress.dev/injection", "enabled"), ("team", "b")],
            &[(PROXY_ANNOTATION, "aaa-rogue/grab")],
        );
        // The namespace's consent alone is not enough: the proxy's owner
        // must agree too (a namespace selector that takes it).
        assert!(matches!(
            choose(&app_pod(), "team", &consenting, std::slice::from_ref(&rogue)),
            Err(Skip::NotSelected(m)) if m.contains("aaa-rogue/grab")
        ));
        let agreeing = proxy(
            "aaa-rogue",
            "grab",
            serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "b"}}}),
        );
        assert!(choose(&app_pod(), "team", &consenting, &[agreeing]).is_ok());
    }

    #[test]
    fn a_pinned_namespace_is_served_by_that_proxy_and_nothing_else() {
        // The administrator's shared proxy enforces; the namespace's own
        // proxy would win the choice unless the namespace is pinned.
        let shared = proxy(
            "egress-system",
            "shared",
            serde_json::json!({"enforce": true}),
        );
        let own = proxy("team", "mine", serde_json::json!({}));
        let both = [shared.clone(), own.clone()];
        let unpinned = choose(&app_pod(), "team", &enabled(), &both).expect("served");
        assert_eq!(unpinned.names().qualified(), "team/mine");
        let pinned = namespace(
            &[("egress.dev/injection", "enabled")],
            &[(PROXY_ANNOTATION, "egress-system/shared")],
        );
        let choice = choose(&app_pod(), "team", &pinned, &both).expect("served");
        assert_eq!(choice.names().qualified(), "egress-system/shared");
        let cluster = cluster();
        assert!(!serves_namespace(&own, "team", &pinned, &cluster));
        assert!(serves_namespace(&shared, "team", &pinned, &cluster));
    }

    #[test]
    fn no_proxy_keeps_the_cluster_direct() {
        let p = proxy(
            "egress",
            "main",
            serde_json::json!({"noProxy": ["internal.example.com", ".corp", "10.96.0.0/12", "bad entry", "a,b", "*", "10.0.0.0/33", "0.0.0.0/0", "x/8"]}),
        );
        assert_eq!(
            no_proxy(&p, &cluster()).join(","),
            "localhost,127.0.0.1,::1,.svc,.cluster.local,kubernetes.default,kubernetes,10.96.0.1,10.96.0.0/12,10.244.0.0/16,internal.example.com,.corp"
        );
        assert_eq!(
            java_non_proxy_hosts(&no_proxy(&p, &cluster())),
            format!(
                "localhost|127.0.0.1|::1|*.svc|*.cluster.local|kubernetes.default|kubernetes|10.96.0.1|{}|10.244.*|internal.example.com|*.corp",
                (96..112)
                    .map(|n| format!("10.{n}.*"))
                    .collect::<Vec<_>>()
                    .join("|")
            )
        );
        assert_eq!(
            unusable_no_proxy(&p),
            [
                "\"bad entry\" (empty, or a comma, bar or space in it)",
                "\"a,b\" (empty, or a comma, bar or space in it)",
                "\"*\" (it would bypass the proxy for everything)",
                "\"10.0.0.0/33\" (the prefix length is too long)",
                "\"0.0.0.0/0\" (it would bypass the proxy for every address)",
                "\"x/8\" (not an address range)"
            ]
        );
        let odd = [
            "192.168.1.7/32",
            "192.168.4.0/23",
            "172.16.0.0/15",
            "10.1.2.3/8",
            "100.64.0.0/10",
            "0.0.0.0/0",
            "fd00::/8",
            "*.x",
        ]
        .map(str::to_owned);
        assert_eq!(
            java_non_proxy_hosts(&odd),
            "192.168.1.7|192.168.4.*|192.168.5.*|172.16.*|172.17.*|10.*|100.64.*|100.65.*|100.66.*|100.67.*|100.68.*|100.69.*|100.70.*|100.71.*|100.72.*|100.73.*|100.74.*|100.75.*|100.76.*|100.77.*|100.78.*|100.79.*|100.80.*|100.81.*|100.82.*|100.83.*|100.84.*|100.85.*|100.86.*|100.87.*|100.88.*|100.89.*|100.90.*|100.91.*|100.92.*|100.93.*|100.94.*|100.95.*|100.96.*|100.97.*|100.98.*|100.99.*|100.100.*|100.101.*|100.102.*|100.103.*|100.104.*|100.105.*|100.106.*|100.107.*|100.108.*|100.109.*|100.110.*|100.111.*|100.112.*|100.113.*|100.114.*|100.115.*|100.116.*|100.117.*|100.118.*|100.119.*|100.120.*|100.121.*|100.122.*|100.123.*|100.124.*|100.125.*|100.126.*|100.127.*|*.x"
        );
        // Past 256 wildcards a range is rounded out to its enclosing octet.
        assert_eq!(
            java_non_proxy_hosts(&["10.0.0.0/15".to_owned()]),
            "10.0.*|10.1.*"
        );
        assert_eq!(
            java_non_proxy_hosts(&["10.0.0.0/15".to_owned()])
                .split('|')
                .count(),
            2
        );
    }
}
