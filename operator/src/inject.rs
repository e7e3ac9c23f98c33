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
/// What marks our options in `JAVA_TOOL_OPTIONS` (so a second pass adds nothing).
const JAVA_MARKER: &str = "-Dhttps.proxyHost=";

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
    /// The operator's namespace (never injected).
    pub operator_namespace: String,
}

/// Why a pod is left untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The pod says `egress.dev/inject: "false"`.
    OptedOut,
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
/// A namespace may pin its proxy with the annotation `egress.dev/proxy:
/// <namespace>/<name>`; otherwise, among the proxies that select the pod, one
/// in the pod's own namespace wins, then the first by namespace and name, so
/// the choice never depends on the order the operator learned of them.
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
    if let Some(skip) = namespace_skip(namespace, namespace_meta, cluster) {
        return Err(skip);
    }
    let empty = BTreeMap::new();
    let namespace_labels = namespace_meta.labels.as_ref().unwrap_or(&empty);
    let pod_labels = pod.labels.as_ref().unwrap_or(&empty);
    let mut candidates: Vec<&Arc<EgressProxy>> = proxies
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| serves(p, namespace_labels, pod_labels))
        .collect();
    let pinned = namespace_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROXY_ANNOTATION));
    if let Some(pinned) = pinned {
        return candidates
            .into_iter()
            .find(|p| &Names::of(p).qualified() == pinned)
            .map(|p| Choice {
                proxy: p.clone(),
                reason: format!("the namespace pins it ({PROXY_ANNOTATION} annotation)"),
            })
            .ok_or_else(|| {
                Skip::NotSelected(format!(
                    "the namespace pins {pinned}, which does not exist or does not select this pod"
                ))
            });
    }
    candidates.sort_by_key(|p| {
        let names = Names::of(p);
        (names.namespace != namespace, names.namespace, names.proxy)
    });
    let Some(first) = candidates.first() else {
        return Err(Skip::NotSelected(
            "no EgressProxy selects this pod".to_owned(),
        ));
    };
    let reason = if candidates.len() == 1 {
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

/// Why no pod of `namespace` is injected, if that is so: a system
/// namespace (or the operator's), or not opted in.
fn namespace_skip(namespace: &str, namespace_meta: &ObjectMeta, cluster: &Cluster) -> Option<Skip> {
    if SYSTEM_NAMESPACES.contains(&namespace) || namespace == cluster.operator_namespace {
        return Some(Skip::SystemNamespace);
    }
    let enabled = namespace_meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECTION_LABEL))
        .is_some_and(|v| v == "enabled");
    (!enabled).then_some(Skip::NotEnabled)
}

/// Whether `proxy` serves (some) pods of `namespace`: opted in, selected by
/// the proxy's namespace selector, and not pinned to another proxy.
pub fn serves_namespace(
    proxy: &EgressProxy,
    namespace: &str,
    namespace_meta: &ObjectMeta,
    cluster: &Cluster,
) -> bool {
    if namespace_skip(namespace, namespace_meta, cluster).is_some() {
        return false;
    }
    let pinned = namespace_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROXY_ANNOTATION));
    let empty = BTreeMap::new();
    pinned.is_none_or(|p| *p == Names::of(proxy).qualified())
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

/// Whether pods of `proxy` get the trust bundle: asked for, and there is
/// something to trust (interception, or TLS to the proxy itself).
pub fn mounts_trust_bundle(proxy: &EgressProxy) -> bool {
    proxy.spec.clients.inject_trust_bundle
        && (proxy.spec.tls_interception.enabled
            || proxy.spec.clients.listener == ClientListener::Https)
}

/// `NO_PROXY` for pods of `proxy`: loopback, cluster names, the API server,
/// the service and pod ranges, then the proxy's extras; no duplicates, and
/// nothing that would break the variable's syntax (commas, spaces).
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
        let usable = !entry.is_empty()
            && !entry.contains(|c: char| c == ',' || c == '|' || c.is_whitespace());
        if usable && !entries.iter().any(|e| e == entry) {
            entries.push(entry.to_owned());
        }
    }
    entries
}

/// `NO_PROXY` entries as Java's `http.nonProxyHosts`: `|`-separated, `*.`
/// for domain suffixes; CIDRs become octet wildcards (`10.96.0.0/12` →
/// `10.*`, rounded out to the enclosing octet), since Java has no CIDRs.
pub fn java_non_proxy_hosts(no_proxy: &[String]) -> String {
    let mut hosts: Vec<String> = Vec::new();
    for entry in no_proxy {
        let host = if let Some(suffix) = entry.strip_prefix('.') {
            Some(format!("*.{suffix}"))
        } else if let Some((address, bits)) = entry.split_once('/') {
            ipv4_wildcard(address, bits)
        } else {
            Some(entry.clone())
        };
        if let Some(host) = host
            && !hosts.contains(&host)
        {
            hosts.push(host);
        }
    }
    hosts.join("|")
}

fn ipv4_wildcard(address: &str, bits: &str) -> Option<String> {
    let IpAddr::V4(address) = address.parse().ok()? else {
        return None;
    };
    let bits: u8 = bits.parse().ok()?;
    let octets = usize::from(bits.min(32) / 8);
    if octets == 0 {
        return None; // everything: never bypass the proxy for all addresses
    }
    let kept: Vec<String> = address.octets()[..octets]
        .iter()
        .map(u8::to_string)
        .collect();
    Some(if octets == 4 {
        kept.join(".")
    } else {
        format!("{}.*", kept.join("."))
    })
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
    let no_proxy = no_proxy(proxy, cluster);
    let trust = mounts_trust_bundle(proxy);
    // Java cannot speak TLS to a proxy: always the plain listener.
    let mut java = format!(
        "-Dhttp.proxyHost={host} -Dhttp.proxyPort={port} -Dhttps.proxyHost={host} -Dhttps.proxyPort={port} -Dhttp.nonProxyHosts={hosts}",
        port = listeners.http_port,
        hosts = java_non_proxy_hosts(&no_proxy),
    );
    if trust {
        java.push_str(&format!(
            " -Djavax.net.ssl.trustStore={TRUST_DIR}/{BUNDLE_JAVA} -Djavax.net.ssl.trustStoreType=PKCS12"
        ));
    }
    let variables = Variables {
        url,
        no_proxy: no_proxy.join(","),
        java,
        trust,
    };

    let mut pod = pod.clone();
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(PROXY_ANNOTATION.to_owned(), names.qualified());
    annotations.insert(PROXY_REASON_ANNOTATION.to_owned(), choice.reason.clone());
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        variables.add_to(container);
    }
    if trust {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == TRUST_VOLUME) {
            volumes.push(Volume {
                name: TRUST_VOLUME.to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names.client_trust_bundle(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
    }
    pod
}

/// The values every container gets.
struct Variables {
    url: String,
    no_proxy: String,
    java: String,
    trust: bool,
}

impl Variables {
    fn add_to(&self, container: &mut Container) {
        let env = container.env.get_or_insert_with(Vec::new);
        // A pair the container sets either half of is its own choice: adding
        // the other half would override it in clients that prefer that case.
        for (upper, value) in [
            ("HTTPS_PROXY", &self.url),
            ("HTTP_PROXY", &self.url),
            ("NO_PROXY", &self.no_proxy),
        ] {
            let lower = upper.to_ascii_lowercase();
            if !env.iter().any(|e| e.name == upper || e.name == lower) {
                env.push(variable(upper, value));
                env.push(variable(&lower, value));
            }
        }
        set_if_absent(env, "NODE_USE_ENV_PROXY", "1");
        match env.iter_mut().find(|e| e.name == "JAVA_TOOL_OPTIONS") {
            None => env.push(variable("JAVA_TOOL_OPTIONS", &self.java)),
            // Appended to the pod's own options, once; a value from a
            // Secret or ConfigMap cannot be appended to and is left alone.
            Some(existing) => {
                if let Some(value) = existing.value.as_mut()
                    && existing.value_from.is_none()
                    && !value.contains(JAVA_MARKER)
                {
                    value.push(' ');
                    value.push_str(&self.java);
                }
            }
        }
        if !self.trust {
            return;
        }
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
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts
            .iter()
            .any(|m| m.name == TRUST_VOLUME || m.mount_path == TRUST_DIR)
        {
            mounts.push(VolumeMount {
                name: TRUST_VOLUME.to_owned(),
                mount_path: TRUST_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
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
        assert!(
            app["JAVA_TOOL_OPTIONS"].starts_with("-Xmx256m -Dhttp.proxyHost=main.egress.svc"),
            "appended: {}",
            app["JAVA_TOOL_OPTIONS"]
        );
        assert!(mutated.spec.as_ref().expect("spec").volumes.is_none());
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
    fn no_proxy_keeps_the_cluster_direct() {
        let p = proxy(
            "egress",
            "main",
            serde_json::json!({"noProxy": ["internal.example.com", ".corp", "10.96.0.0/12", "bad entry", "a,b"]}),
        );
        assert_eq!(
            no_proxy(&p, &cluster()).join(","),
            "localhost,127.0.0.1,::1,.svc,.cluster.local,kubernetes.default,kubernetes,10.96.0.1,10.96.0.0/12,10.244.0.0/16,internal.example.com,.corp"
        );
        assert_eq!(
            java_non_proxy_hosts(&no_proxy(&p, &cluster())),
            "localhost|127.0.0.1|::1|*.svc|*.cluster.local|kubernetes.default|kubernetes|10.96.0.1|10.*|10.244.*|internal.example.com|*.corp"
        );
        let odd = [
            "192.168.1.7/32",
            "172.16.0.0/12",
            "0.0.0.0/0",
            "fd00::/8",
            "*.x",
        ]
        .map(str::to_owned);
        assert_eq!(java_non_proxy_hosts(&odd), "192.168.1.7|172.*|*.x");
    }
}
