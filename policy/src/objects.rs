//! Names and keys of the objects the operator renders for an `EgressProxy`
//! and the gateway reads through the API (design §8): one definition
//! for both sides.

/// ConfigMap with the compiled policy.
pub fn policy_config_map(proxy: &str) -> String {
    format!("{proxy}-policy")
}

/// Key of the compiled policy JSON in [`policy_config_map`].
pub const POLICY_KEY: &str = "policy.json";

/// Annotation on [`policy_config_map`] with the policy's content hash.
pub const POLICY_HASH_ANNOTATION: &str = "egress.dev/policy-hash";

/// Annotation on [`policy_config_map`] with the policy's format version.
pub const POLICY_VERSION_ANNOTATION: &str = "egress.dev/policy-format-version";

/// Secret with the interception sub-CA (`tls.crt`, `tls.key`, `ca.crt`).
pub fn intercept_ca_secret(proxy: &str) -> String {
    format!("{proxy}-intercept-ca")
}

/// Secret with the HTTPS listener's serving certificate.
pub fn tls_secret(proxy: &str) -> String {
    format!("{proxy}-tls")
}

/// Secret with the CA that signs the listener's certificate.
pub fn listener_ca_secret(proxy: &str) -> String {
    format!("{proxy}-listener-ca")
}

/// ConfigMap with what clients trust.
pub fn trust_bundle(proxy: &str) -> String {
    format!("{proxy}-trust-bundle")
}

/// ConfigMap with the namespaces the proxy serves, whose pods the gateway
/// may read (and indexes) for client identity.
pub fn served_namespaces(proxy: &str) -> String {
    format!("{proxy}-namespaces")
}

/// Key of [`served_namespaces`]: one namespace per line.
pub const NAMESPACES_KEY: &str = "namespaces";

/// Annotation on a `ProxyRuleGroup` imported from AWS (`policy import aws`)
/// whose AWS name is not a valid Kubernetes name: that name, which decision
/// logs and metrics show as the group's, so log queries keep working.
pub const AWS_NAME_ANNOTATION: &str = "egress.dev/aws-name";
