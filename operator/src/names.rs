//! Names, labels and owner references of everything the operator renders for
//! an `EgressProxy` (design §8). The names the gateway reads too are
//! defined once, in `egress_policy::objects`.

use std::collections::BTreeMap;

use egress_policy::objects;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::EgressProxy;

/// `app.kubernetes.io/managed-by` on everything the operator renders.
pub const MANAGER: &str = "egress-operator";
/// Field manager of server-side apply.
pub const FIELD_MANAGER: &str = "egress-operator";
/// `app.kubernetes.io/name` of the gateway's objects.
pub const GATEWAY_NAME: &str = "egress-gateway";

pub use egress_policy::objects::{POLICY_HASH_ANNOTATION, POLICY_KEY, POLICY_VERSION_ANNOTATION};
/// Annotation on the pod template with the hash of what pods read at start.
pub const POD_CONFIG_ANNOTATION: &str = "egress.dev/pod-config-hash";
/// Annotation on the sub-CA Secret: which parent Secret (and certificate) it
/// was derived from, so a new parent re-issues it.
pub const PARENT_ANNOTATION: &str = "egress.dev/parent";

/// Trust bundle keys.
pub const BUNDLE_INTERCEPT: &str = "intercept-ca.pem";
/// The listener CA in the trust bundle.
pub const BUNDLE_LISTENER: &str = "listener-ca.pem";
/// Everything clients should trust, in one file.
pub const BUNDLE_ALL: &str = "ca-bundle.pem";

/// Namespace label that opts a namespace in to injection (value `enabled`).
pub const INJECTION_LABEL: &str = "egress.dev/injection";
/// Pod annotation that opts a pod out of injection (value `"false"`).
pub const INJECT_ANNOTATION: &str = "egress.dev/inject";
/// Pod annotation the webhook writes: the chosen proxy, `<namespace>/<name>`.
pub const PROXY_ANNOTATION: &str = "egress.dev/proxy";
/// Pod annotation the webhook writes: why that proxy.
pub const PROXY_REASON_ANNOTATION: &str = "egress.dev/proxy-reason";
/// Label on objects rendered into client namespaces: the proxy's name.
pub const CLIENT_OF_LABEL: &str = "egress.dev/proxy-name";
/// Label on objects rendered into client namespaces: the proxy's namespace.
pub const CLIENT_OF_NAMESPACE_LABEL: &str = "egress.dev/proxy-namespace";
/// Annotation with the hash of what was rendered, so unchanged objects are
/// not applied again.
pub const RENDER_HASH_ANNOTATION: &str = "egress.dev/render-hash";

/// Label on each proxy's `<proxy>-trust-bundle` (value `source`), which the
/// clients reconciler caches to copy.
pub const TRUST_BUNDLE_LABEL: &str = "egress.dev/trust-bundle";

/// The system roots plus the proxy's roots, for `SSL_CERT_FILE` and friends.
pub const BUNDLE_WITH_SYSTEM: &str = "ca-certificates.crt";
/// The same as a PKCS#12 truststore for Java.
pub const BUNDLE_JAVA: &str = "truststore.p12";

/// The names of one proxy's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The proxy.
    pub proxy: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// The names for `proxy`.
    pub fn of(proxy: &EgressProxy) -> Names {
        Names {
            proxy: proxy.metadata.name.clone().unwrap_or_default(),
            namespace: proxy.metadata.namespace.clone().unwrap_or_default(),
        }
    }

    /// ConfigMap with the compiled policy.
    pub fn policy(&self) -> String {
        objects::policy_config_map(&self.proxy)
    }

    /// Part `index` (from 1) of set `set` of a policy too large for one
    /// ConfigMap.
    pub fn policy_part(&self, set: egress_policy::parts::PartSet, index: usize) -> String {
        egress_policy::parts::part_name(&self.policy(), set, index)
    }

    /// Secret with the interception sub-CA.
    pub fn intercept_ca(&self) -> String {
        objects::intercept_ca_secret(&self.proxy)
    }

    /// Secret with the HTTPS listener's serving certificate.
    pub fn tls(&self) -> String {
        objects::tls_secret(&self.proxy)
    }

    /// Secret with the CA that signs the listener's certificate.
    pub fn listener_ca(&self) -> String {
        objects::listener_ca_secret(&self.proxy)
    }

    /// Secret with the listener CA's successor while a rotation overlaps.
    pub fn listener_ca_next(&self) -> String {
        format!("{}-next", self.listener_ca())
    }

    /// ConfigMap with what clients trust.
    pub fn trust_bundle(&self) -> String {
        objects::trust_bundle(&self.proxy)
    }

    /// ConfigMap with the namespaces the proxy serves (the gateway's pod
    /// watches).
    pub fn served_namespaces(&self) -> String {
        objects::served_namespaces(&self.proxy)
    }

    /// RoleBinding in each served namespace letting the gateway read its
    /// pods.
    pub fn client_pod_reader(&self) -> String {
        format!("egress-gateway.{}.{}", self.namespace, self.proxy)
    }

    /// The copy of the trust bundle in each client namespace (pods cannot
    /// mount across namespaces). Named after the proxy's namespace too:
    /// proxies of two namespaces may serve one client namespace.
    pub fn client_trust_bundle(&self) -> String {
        format!("egress-trust.{}.{}", self.namespace, self.proxy)
    }

    /// NetworkPolicy in each client namespace limiting served pods' egress.
    pub fn client_egress_policy(&self) -> String {
        format!("egress-clients.{}.{}", self.namespace, self.proxy)
    }

    /// NetworkPolicy in the proxy's namespace admitting only served pods.
    pub fn proxy_ingress_policy(&self) -> String {
        format!("{}-clients", self.proxy)
    }

    /// `<namespace>/<name>`, as the pod annotation names the proxy.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.proxy)
    }

    /// Labels of objects rendered into client namespaces (no owner reference
    /// can cross namespaces, so these find them for clean-up).
    pub fn client_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels();
        labels.insert(CLIENT_OF_LABEL.to_owned(), self.proxy.clone());
        labels.insert(CLIENT_OF_NAMESPACE_LABEL.to_owned(), self.namespace.clone());
        labels
    }

    /// Deployment, Service, ServiceAccount, Role, RoleBinding, PDB, HPA.
    pub fn workload(&self) -> String {
        self.proxy.clone()
    }

    /// The ClusterRoleBinding that let the gateway read pods cluster-wide
    /// before it read only the served namespaces': removed where found.
    pub fn pod_reader_binding(&self) -> String {
        format!("egress-gateway:{}:{}", self.namespace, self.proxy)
    }

    /// The names the HTTPS listener's certificate is for, and its CA is
    /// constrained to: the Service's names under `.svc`, which no public
    /// name can be (`<proxy>` or `<proxy>.<ns>` could: a namespace `io`).
    pub fn listener_names(&self, cluster_domain: &str) -> Vec<String> {
        let (p, ns) = (&self.proxy, &self.namespace);
        vec![
            format!("{p}.{ns}.svc"),
            format!("{p}.{ns}.svc.{cluster_domain}"),
        ]
    }

    /// Labels of every object rendered for the proxy.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), GATEWAY_NAME.to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.proxy.clone()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGER.to_owned(),
            ),
        ])
    }

    /// Labels that select the proxy's pods.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), GATEWAY_NAME.to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.proxy.clone()),
        ])
    }
}

/// The owner reference to `proxy` every namespaced object carries, so
/// deleting the proxy deletes them.
pub fn owner(proxy: &EgressProxy) -> Option<OwnerReference> {
    let mut owner = proxy.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

/// Metadata of an object named `name` rendered for the proxy.
/// Whether an object is `proxy`'s: it names the proxy as its controller. An
/// object of the same name that does not was made by someone else, and the
/// operator never takes it over.
pub fn is_owned_by(object: &ObjectMeta, proxy: &EgressProxy) -> bool {
    let Some(uid) = proxy.metadata.uid.as_deref() else {
        return false;
    };
    object
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Metadata of an object rendered for `proxy`: named, labelled and owned.
pub fn metadata(proxy: &EgressProxy, name: String) -> ObjectMeta {
    let names = Names::of(proxy);
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: owner(proxy).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}
