//! What an `EgressProxy` renders for the pods it serves, as pure functions:
//! the namespaces it serves and, in each, the binding that lets its gateway
//! read their pods (client identity, and no other namespace's), the trust
//! bundle copied into each client namespace, and, with
//! `spec.clients.enforce`, the NetworkPolicies that keep those pods from
//! going around the proxy. Objects in client namespaces cannot be owned by
//! the proxy (owner references do not cross namespaces), so they carry its
//! name and namespace in labels, and a hash of their content so the
//! reconciler applies only what changed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::EgressProxy;
use crate::names::{
    BUNDLE_ALL, BUNDLE_JAVA, BUNDLE_WITH_SYSTEM, GATEWAY_NAME, Names, RENDER_HASH_ANNOTATION,
    metadata,
};
use crate::render::{ADMIN_PORT, HTTP_PORT, HTTPS_PORT, POD_READER_ROLE, hex, subject};

/// The label Kubernetes sets on every namespace: its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The files of a client trust bundle, computed once per proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustFiles {
    /// The proxy's roots (`ca-bundle.pem`).
    pub proxy_roots: String,
    /// System roots plus the proxy's (`ca-certificates.crt`).
    pub with_system: String,
    /// The same as a PKCS#12 truststore (`truststore.p12`).
    pub java: Vec<u8>,
    /// Hash of the inputs, recorded on each copy.
    pub hash: String,
}

impl TrustFiles {
    /// The files for `proxy_roots` (the proxy's `ca-bundle.pem`) on top of
    /// `system_roots`.
    pub fn new(proxy_roots: &str, system_roots: &str) -> Result<TrustFiles, egress_pki::Error> {
        let mut with_system = system_roots.trim_end().to_owned();
        if !with_system.is_empty() {
            with_system.push('\n');
        }
        with_system.push_str(proxy_roots);
        let mut digest = Sha256::new();
        digest.update(proxy_roots.as_bytes());
        digest.update([0]);
        digest.update(system_roots.as_bytes());
        Ok(TrustFiles {
            proxy_roots: proxy_roots.to_owned(),
            java: egress_pki::java_truststore(&with_system, "egress-proxy")?,
            with_system,
            hash: hex(&digest.finalize())[..16].to_owned(),
        })
    }
}

/// Metadata of an object rendered into `namespace` for the proxy.
fn client_metadata(names: &Names, namespace: &str, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(names.client_labels()),
        ..ObjectMeta::default()
    }
}

/// Records the hash of what `object` holds in its annotations (the
/// reconciler compares it with what is in the cluster).
pub fn with_hash<K: Resource + Serialize>(mut object: K) -> K {
    let json = serde_json::to_vec(&object).unwrap_or_default();
    let hash = hex(&Sha256::digest(&json))[..16].to_owned();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RENDER_HASH_ANNOTATION.to_owned(), hash);
    object
}

/// The copy of the proxy's trust bundle in client namespace `namespace`
/// (its hash is the inputs', so it is known before rendering).
pub fn trust_bundle_copy(proxy: &EgressProxy, namespace: &str, files: &TrustFiles) -> ConfigMap {
    let names = Names::of(proxy);
    let mut metadata = client_metadata(&names, namespace, names.client_trust_bundle());
    metadata.annotations = Some(BTreeMap::from([(
        RENDER_HASH_ANNOTATION.to_owned(),
        files.hash.clone(),
    )]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([
            (BUNDLE_ALL.to_owned(), files.proxy_roots.clone()),
            (BUNDLE_WITH_SYSTEM.to_owned(), files.with_system.clone()),
        ])),
        binary_data: Some(BTreeMap::from([(
            BUNDLE_JAVA.to_owned(),
            ByteString(files.java.clone()),
        )])),
        ..ConfigMap::default()
    }
}

/// In served namespace `namespace`: the shared pod reader ClusterRole
/// bound to the gateway's ServiceAccount there only, so a gateway (and any
/// pod running as its ServiceAccount) reads the pods of the namespaces its
/// proxy serves and of no other.
pub fn pod_reader_binding(proxy: &EgressProxy, namespace: &str) -> RoleBinding {
    let names = Names::of(proxy);
    with_hash(RoleBinding {
        metadata: client_metadata(&names, namespace, names.client_pod_reader()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: POD_READER_ROLE.to_owned(),
        },
        subjects: Some(vec![subject(&names)]),
    })
}

/// `<proxy>-namespaces` in the proxy's namespace: the namespaces it serves,
/// one per line, which its gateway watches pods in.
pub fn served_namespaces(proxy: &EgressProxy, served: &[String]) -> ConfigMap {
    let names = Names::of(proxy);
    let mut text = served.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    with_hash(ConfigMap {
        metadata: metadata(proxy, names.served_namespaces()),
        data: Some(BTreeMap::from([(
            egress_policy::objects::NAMESPACES_KEY.to_owned(),
            text,
        )])),
        ..ConfigMap::default()
    })
}

fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        match_expressions: None,
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

/// Pod labels of the network plugins that enforce NetworkPolicy, egress
/// rules included: (plugin, label, value).
const ENFORCERS: [(&str, &str, &str); 8] = [
    ("Calico", "k8s-app", "calico-node"),
    ("Canal", "k8s-app", "canal"),
    ("Cilium", "k8s-app", "cilium"),
    ("kube-router", "k8s-app", "kube-router"),
    ("Antrea", "component", "antrea-agent"),
    ("Weave Net", "name", "weave-net"),
    ("Azure NPM", "k8s-app", "azure-npm"),
    ("Kube-OVN", "app", "kube-ovn-cni"),
];

/// Namespaces network plugins run in, which tenants cannot create pods in
/// (a tenant's pod wearing a plugin's label elsewhere proves nothing).
const PLUGIN_NAMESPACES: [&str; 3] = ["kube-system", "calico-system", "cilium"];

/// The first known NetworkPolicy enforcer among pods, given as (namespace,
/// labels), in the namespaces network plugins run in.
pub fn known_enforcer<'a>(
    mut pods: impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Option<&'static str> {
    pods.find_map(|(namespace, labels)| {
        if !PLUGIN_NAMESPACES.contains(&namespace) {
            return None;
        }
        ENFORCERS
            .iter()
            .find(|(_, key, value)| labels.get(*key).is_some_and(|v| v == value))
            .map(|(plugin, _, _)| *plugin)
    })
}

/// What `status.clients.message` says when enforcement may be a no-op.
pub const NO_ENFORCER: &str = "enforce is on but no NetworkPolicy enforcer was found (no pods of Calico, Cilium, kube-router, Antrea, Weave Net or the like): without one the NetworkPolicies are accepted and do nothing; if your network plugin enforces them, name it in the chart's cluster.networkPolicyEnforcer";

/// The proxy's pods, as a NetworkPolicy peer.
fn gateway_pods(names: &Names) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(labels(&[(NAMESPACE_NAME_LABEL, &names.namespace)])),
        pod_selector: Some(LabelSelector {
            match_labels: Some(names.selector()),
            match_expressions: None,
        }),
        ip_block: None,
    }
}

/// The address ranges among `NO_PROXY` entries, as CIDRs (loopback left
/// out: NetworkPolicy never applies to it).
pub fn cidrs(no_proxy: &[String]) -> Vec<String> {
    no_proxy
        .iter()
        .filter_map(|entry| {
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => {
                    (address.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?)
                }
                None => {
                    let address: IpAddr = entry.parse().ok()?;
                    (address, if address.is_ipv4() { 32 } else { 128 })
                }
            };
            (!address.is_loopback()).then(|| format!("{address}/{bits}"))
        })
        .collect()
}

/// In client namespace `namespace`: every pod may send only to the
/// listeners of the proxies that serve the namespace (`serving`, this one
/// among them), cluster DNS (pods labelled `dns` in kube-system, port 53)
/// and the `NO_PROXY` address ranges.
///
/// Labels cannot take a pod out of it, with one exception: in the proxy's
/// own namespace its gateway pods must reach destinations, and a
/// NetworkPolicy can tell them apart only by label. Whoever can create pods
/// there can also edit this proxy, so the label gives them nothing they do
/// not have. In any other namespace gateway pods are confined like the rest:
/// there the label would let a tenant out of an administrator's enforcement.
pub fn client_egress_policy(
    proxy: &EgressProxy,
    namespace: &str,
    serving: &[Names],
    no_proxy: &[String],
    dns: &BTreeMap<String, String>,
) -> NetworkPolicy {
    let names = Names::of(proxy);
    let mut rules = vec![
        NetworkPolicyEgressRule {
            to: Some(serving.iter().map(gateway_pods).collect()),
            ports: Some(vec![port("TCP", HTTP_PORT), port("TCP", HTTPS_PORT)]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(labels(&[(NAMESPACE_NAME_LABEL, "kube-system")])),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(dns.clone()),
                    match_expressions: None,
                }),
                ip_block: None,
            }]),
            ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
        },
    ];
    let ranges = cidrs(no_proxy);
    if !ranges.is_empty() {
        rules.push(NetworkPolicyEgressRule {
            to: Some(
                ranges
                    .into_iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock { cidr, except: None }),
                        ..NetworkPolicyPeer::default()
                    })
                    .collect(),
            ),
            ports: None,
        });
    }
    let pods = LabelSelector {
        match_labels: None,
        match_expressions: (names.namespace == namespace).then(|| {
            vec![LabelSelectorRequirement {
                key: "app.kubernetes.io/name".to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(vec![GATEWAY_NAME.to_owned()]),
            }]
        }),
    };
    with_hash(NetworkPolicy {
        metadata: client_metadata(&names, namespace, names.client_egress_policy()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(rules),
            ingress: None,
        }),
    })
}

/// In the proxy's namespace: its listeners admit only pods of the
/// namespaces it serves (`served`); its admin port (probes, metrics) stays
/// open.
pub fn proxy_ingress_policy(proxy: &EgressProxy, served: &[String]) -> NetworkPolicy {
    let names = Names::of(proxy);
    let mut rules = Vec::new();
    // No served namespace: no rule at all (an empty `from` would admit all).
    if !served.is_empty() {
        rules.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: NAMESPACE_NAME_LABEL.to_owned(),
                        operator: "In".to_owned(),
                        values: Some(served.to_vec()),
                    }]),
                }),
                pod_selector: None,
                ip_block: None,
            }]),
            ports: Some(vec![port("TCP", HTTP_PORT), port("TCP", HTTPS_PORT)]),
        });
    }
    rules.push(NetworkPolicyIngressRule {
        from: None,
        ports: Some(vec![port("TCP", ADMIN_PORT)]),
    });
    let mut meta = metadata(proxy, names.proxy_ingress_policy());
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .extend(names.client_labels());
    with_hash(NetworkPolicy {
        metadata: meta,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names.selector()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(rules),
            egress: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(clients: serde_json::Value) -> EgressProxy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "egress.dev/v1alpha1",
            "kind": "EgressProxy",
            "metadata": {"name": "main", "namespace": "egress", "uid": "u"},
            "spec": {"configurationRef": {"name": "c"}, "clients": clients}
        }))
        .expect("valid proxy")
    }

    fn json<T: Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).expect("json")
    }

    #[test]
    fn client_egress_reaches_only_the_serving_proxies_dns_and_no_proxy_ranges() {
        let p = proxy(
            serde_json::json!({"enforce": true, "podSelector": {"matchLabels": {"app": "web"}}}),
        );
        let other = Names {
            proxy: "other".to_owned(),
            namespace: "team".to_owned(),
        };
        let no_proxy = [
            "localhost",
            "127.0.0.1",
            "::1",
            ".svc",
            "10.96.0.1",
            "10.96.0.0/12",
            "fd00::/8",
            "example.com",
        ]
        .map(str::to_owned);
        let dns = BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]);
        let policy = client_egress_policy(
            &p,
            "egress",
            &[Names::of(&p), other.clone()],
            &no_proxy,
            &dns,
        );
        let meta = json(&policy.metadata);
        assert_eq!(meta["name"], "egress-clients.egress.main");
        assert_eq!(meta["namespace"], "egress");
        assert_eq!(meta["labels"]["egress.dev/proxy-name"], "main");
        assert_eq!(meta["labels"]["egress.dev/proxy-namespace"], "egress");
        assert!(
            meta.get("ownerReferences").is_none(),
            "cannot cross namespaces"
        );
        let gateway = |ns: &str, name: &str| {
            serde_json::json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/instance": name, "app.kubernetes.io/name": "egress-gateway"}}
            })
        };
        assert_eq!(
            json(&policy.spec),
            serde_json::json!({
                // Every pod but the gateways of the namespace this proxy
                // lives in (its owner could switch enforcement off anyway).
                "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["egress-gateway"]}]},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [gateway("egress", "main"), gateway("team", "other")],
                        "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8443}]
                    },
                    {
                        "to": [{
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                        }],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
                    },
                    {"to": [
                        {"ipBlock": {"cidr": "10.96.0.1/32"}},
                        {"ipBlock": {"cidr": "10.96.0.0/12"}},
                        {"ipBlock": {"cidr": "fd00::/8"}}
                    ]}
                ]
            })
        );
        // Elsewhere every pod, gateway label or not: a tenant's own gateway
        // (`other` lives in `team`) is confined like the rest.
        for namespace in ["team", "shop"] {
            let elsewhere = client_egress_policy(
                &p,
                namespace,
                &[Names::of(&p), other.clone()],
                &no_proxy,
                &dns,
            );
            assert_eq!(
                json(&elsewhere.spec)["podSelector"],
                serde_json::json!({}),
                "{namespace}"
            );
        }
    }

    #[test]
    fn the_gateway_reads_pods_of_the_served_namespaces_only() {
        let p = proxy(serde_json::json!({}));
        let binding = pod_reader_binding(&p, "team");
        assert_eq!(
            json(&binding),
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {
                    "name": "egress-gateway.egress.main",
                    "namespace": "team",
                    "labels": json(&Names::of(&p).client_labels()),
                    "annotations": binding.metadata.annotations.clone().expect("hash"),
                },
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "egress-proxy-gateway-pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "main", "namespace": "egress"}]
            })
        );
        let list = served_namespaces(&p, &["a".to_owned(), "b".to_owned()]);
        assert_eq!(list.metadata.name.as_deref(), Some("main-namespaces"));
        assert!(
            list.metadata.owner_references.is_some(),
            "owned: same namespace"
        );
        assert_eq!(list.data.expect("data")["namespaces"], "a\nb\n");
        let none = served_namespaces(&p, &[]);
        assert_eq!(none.data.expect("data")["namespaces"], "");
    }

    #[test]
    fn known_enforcers_are_found_by_their_pods() {
        let labels = |pairs: &[(&str, &str)]| {
            BTreeMap::from_iter(pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())))
        };
        let plain = [
            labels(&[("k8s-app", "kube-dns")]),
            labels(&[("app", "flannel")]),
        ];
        let system = |l| ("kube-system", l);
        assert_eq!(known_enforcer(plain.iter().map(system)), None);
        let calico = [
            labels(&[("app", "web")]),
            labels(&[("k8s-app", "calico-node")]),
        ];
        assert_eq!(known_enforcer(calico.iter().map(system)), Some("Calico"));
        // A tenant's pod wearing the label proves nothing.
        assert_eq!(known_enforcer(calico.iter().map(|l| ("team", l))), None);
        let antrea = [labels(&[("app", "antrea"), ("component", "antrea-agent")])];
        assert_eq!(known_enforcer(antrea.iter().map(system)), Some("Antrea"));
    }

    #[test]
    fn the_proxy_admits_only_served_namespaces_on_its_listeners() {
        let p = proxy(serde_json::json!({"enforce": true}));
        let policy = proxy_ingress_policy(&p, &["a".to_owned(), "b".to_owned()]);
        assert_eq!(policy.metadata.name.as_deref(), Some("main-clients"));
        assert!(
            policy.metadata.owner_references.is_some(),
            "owned: same namespace"
        );
        let spec = json(&policy.spec);
        assert_eq!(
            spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "main"
        );
        assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
        assert_eq!(
            spec["ingress"][0]["from"],
            serde_json::json!([{"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
            ]}}])
        );
        assert_eq!(
            spec["ingress"][1],
            serde_json::json!({"ports": [{"protocol": "TCP", "port": 9090}]})
        );
        // Serving no namespace: the listeners admit no one (an empty `from`
        // would admit everyone).
        let none = json(&proxy_ingress_policy(&p, &[]).spec);
        assert_eq!(
            none["ingress"],
            serde_json::json!([{"ports": [{"protocol": "TCP", "port": 9090}]}])
        );
    }

    #[test]
    fn the_trust_bundle_copy_adds_the_proxy_roots_to_the_system_ones() {
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        let system = egress_pki::self_signed_ca("system root", &[], now, day)
            .expect("ca")
            .cert_pem;
        let proxy_root = egress_pki::self_signed_ca("proxy root", &[], now, day)
            .expect("ca")
            .cert_pem;
        let files = TrustFiles::new(&proxy_root, &system).expect("files");
        assert_eq!(
            egress_pki::certificates(&files.with_system)
                .expect("pem")
                .len(),
            2
        );
        let copy = trust_bundle_copy(&proxy(serde_json::json!({})), "team", &files);
        assert_eq!(
            copy.metadata.name.as_deref(),
            Some("egress-trust.egress.main")
        );
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team"));
        let data = copy.data.expect("data");
        assert_eq!(data["ca-bundle.pem"], proxy_root);
        assert!(data["ca-certificates.crt"].starts_with(system.trim_end()));
        assert!(data["ca-certificates.crt"].ends_with(&proxy_root));
        assert!(
            !copy.binary_data.expect("binary")["truststore.p12"]
                .0
                .is_empty()
        );
        let annotations = copy.metadata.annotations.expect("annotations");
        assert_eq!(annotations[RENDER_HASH_ANNOTATION], files.hash);
        let other = TrustFiles::new(&system, &proxy_root).expect("files");
        assert_ne!(files.hash, other.hash);
    }

    #[test]
    fn the_hash_follows_the_content() {
        let p = proxy(serde_json::json!({}));
        let dns = BTreeMap::new();
        let serving = [Names::of(&p)];
        let a = client_egress_policy(&p, "team", &serving, &["10.0.0.0/8".to_owned()], &dns);
        let b = client_egress_policy(&p, "team", &serving, &["10.0.0.0/8".to_owned()], &dns);
        let c = client_egress_policy(&p, "team", &serving, &["10.1.0.0/16".to_owned()], &dns);
        let hash = |n: &NetworkPolicy| {
            n.metadata.annotations.as_ref().expect("annotated")[RENDER_HASH_ANNOTATION].clone()
        };
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
    }
}
