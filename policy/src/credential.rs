//! Credentials: which requests get which header from a Secret. Only the
//! decision lives here (who, where, which header); the value is the
//! gateway's, read from the Secret when a request needs it, and never part
//! of a policy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;

use crate::context::SourceIdentity;
use crate::domain::Domain;
use crate::domain_value::DomainValue;
use crate::error::CompileError;
use crate::spec::CredentialSpec;

/// Headers a credential may not set: they frame or route the request, or
/// belong to the hop between client and proxy.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "via",
];

/// A credential ready to match requests.
#[derive(Clone, Debug)]
pub struct Credential {
    /// Its name, for logs, errors and status.
    pub name: String,
    /// The Secret holding the value.
    pub secret: String,
    /// The key of the value in the Secret.
    pub key: String,
    /// The header it sets.
    pub header: HeaderName,
    /// Text before the value.
    pub value_prefix: String,
    domains: Vec<DomainValue>,
    path_prefix: Option<String>,
    namespaces: Vec<String>,
    service_accounts: Vec<String>,
    pod_labels: BTreeMap<String, String>,
    source_nets: Vec<IpNet>,
}

/// A request as a credential sees it.
#[derive(Clone, Copy, Debug)]
pub struct CredentialRequest<'a> {
    /// The client's address.
    pub source_ip: IpAddr,
    /// The client pod, when known.
    pub identity: Option<&'a SourceIdentity>,
    /// The destination name (canonical).
    pub domain: &'a Domain,
    /// The target as the client sent it (path and query).
    pub target: &'a str,
    /// The same, normalised as rules see it.
    pub normalized: &'a str,
}

impl Credential {
    /// Checks one spec; `path` is its place (`credentials[0]`), and
    /// `intercepts` says whether a name is intercepted (a credential travels
    /// only inside intercepted TLS).
    pub fn compile(
        path: &str,
        spec: &CredentialSpec,
        intercepts: impl Fn(&Domain) -> bool,
    ) -> Result<Credential, Vec<CompileError>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| {
            errors.push(CompileError::new(format!("{path}.{field}"), message));
        };
        if !is_dns_label(&spec.name) {
            error(
                "name",
                format!(
                    "{:?} must be a DNS label: lower-case letters, digits and '-', at most 63",
                    spec.name
                ),
            );
        }
        if !is_dns_subdomain(&spec.secret_ref.name) {
            error(
                "secretRef.name",
                format!("{:?} is not a Secret name", spec.secret_ref.name),
            );
        }
        let key_ok = |k: &str| {
            (1..=253).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if !key_ok(&spec.secret_ref.key) {
            error(
                "secretRef.key",
                format!(
                    "{:?} is not a Secret key (letters, digits, '-', '_', '.')",
                    spec.secret_ref.key
                ),
            );
        }
        let header = match HeaderName::from_bytes(spec.header.as_bytes()) {
            Ok(name) if FORBIDDEN_HEADERS.contains(&name.as_str()) => {
                error(
                    "header",
                    format!(
                        "{:?} frames or routes the request; a credential cannot set it",
                        spec.header
                    ),
                );
                None
            }
            Ok(name) => Some(name),
            Err(_) => {
                error(
                    "header",
                    format!(
                        "{:?} is not a header name (an HTTP token: letters, digits and !#$%&'*+-.^_`|~)",
                        spec.header
                    ),
                );
                None
            }
        };
        if !spec
            .value_prefix
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            error(
                "valuePrefix",
                "must be printable ASCII (no line breaks or control characters)".to_owned(),
            );
        }
        let mut domains = Vec::new();
        if spec.destination.domains.is_empty() {
            error(
                "destination.domains",
                "name at least one domain: a credential for every destination would go to anyone the client names".to_owned(),
            );
        }
        for (i, value) in spec.destination.domains.iter().enumerate() {
            let field = format!("destination.domains[{i}]");
            match DomainValue::parse(value) {
                None => error(
                    &field,
                    format!(
                        "{value:?} is not a domain name (expected api.example.com, or .example.com for the apex and all its subdomains)"
                    ),
                ),
                Some(DomainValue::ApexAndSubdomains(apex)) if !apex.contains('.') => error(
                    &field,
                    format!(
                        "{value:?} would send the credential to every name under .{apex}; name the API's own domain"
                    ),
                ),
                Some(parsed) => {
                    let name = match &parsed {
                        DomainValue::Exact(name) | DomainValue::ApexAndSubdomains(name) => {
                            Domain::new(name)
                        }
                    };
                    if !intercepts(&name) {
                        error(
                            &field,
                            format!(
                                "{value:?} is not intercepted (see tlsInterception: enabled, domains, bypassDomains): a credential is only added inside intercepted TLS, so it would never be sent"
                            ),
                        );
                    }
                    domains.push(parsed);
                }
            }
        }
        if let Some(prefix) = &spec.destination.path_prefix {
            let normal = crate::uri::normalize(prefix);
            if !prefix.starts_with('/') || prefix.contains('?') {
                error(
                    "destination.pathPrefix",
                    format!("{prefix:?} must be a path starting with '/', without a query"),
                );
            } else {
                match normal {
                    Ok(normal) if normal == prefix.as_str() => {}
                    Ok(normal) => error(
                        "destination.pathPrefix",
                        format!("write {prefix:?} in its normal form: {normal:?}"),
                    ),
                    Err(e) => error("destination.pathPrefix", e.to_string()),
                }
            }
        }
        let clients = &spec.clients;
        if clients.namespaces.is_empty()
            && clients.service_accounts.is_empty()
            && clients.pod_labels.is_empty()
            && clients.source_cidrs.is_empty()
        {
            error(
                "clients",
                "say whose requests get it (namespaces, serviceAccounts, podLabels or sourceCIDRs): every client of the proxy is rarely meant".to_owned(),
            );
        }
        let mut source_nets = Vec::new();
        for (i, value) in clients.source_cidrs.iter().enumerate() {
            match crate::net::parse_net(value) {
                Ok(net) => source_nets.push(net),
                Err(_) => error(
                    &format!("clients.sourceCIDRs[{i}]"),
                    format!("{value:?} is not a CIDR or IP address"),
                ),
            }
        }
        match header {
            Some(header) if errors.is_empty() => Ok(Credential {
                name: spec.name.clone(),
                secret: spec.secret_ref.name.clone(),
                key: spec.secret_ref.key.clone(),
                header,
                value_prefix: spec.value_prefix.clone(),
                domains,
                path_prefix: spec.destination.path_prefix.clone(),
                namespaces: clients.namespaces.clone(),
                service_accounts: clients.service_accounts.clone(),
                pod_labels: clients.pod_labels.clone(),
                source_nets,
            }),
            _ => Err(errors),
        }
    }

    /// Whether this credential is added to `request`.
    pub fn applies(&self, request: &CredentialRequest<'_>) -> bool {
        let name = request.domain.as_str();
        if !self.domains.iter().any(|d| d.matches(name)) {
            return false;
        }
        if let Some(prefix) = &self.path_prefix {
            // Both spellings: what the destination reads and what rules read.
            let path = |target: &str| {
                target
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .starts_with(prefix.as_str())
            };
            if !path(request.target) || !path(request.normalized) {
                return false;
            }
        }
        let source = request.source_ip.to_canonical();
        if !self.source_nets.is_empty() && !self.source_nets.iter().any(|n| n.contains(&source)) {
            return false;
        }
        let needs_identity = !self.namespaces.is_empty()
            || !self.service_accounts.is_empty()
            || !self.pod_labels.is_empty();
        if !needs_identity {
            return true;
        }
        let Some(identity) = request.identity else {
            return false;
        };
        (self.namespaces.is_empty() || self.namespaces.contains(&identity.namespace))
            && (self.service_accounts.is_empty()
                || self.service_accounts.contains(&identity.service_account))
            && self
                .pod_labels
                .iter()
                .all(|(k, v)| identity.labels.get(k) == Some(v))
    }
}

fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && !name.is_empty() && name.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CredentialClients, CredentialDestination, SecretKeyRef};

    fn spec() -> CredentialSpec {
        CredentialSpec {
            name: "llm-key".into(),
            secret_ref: SecretKeyRef {
                name: "llm-api-key".into(),
                key: "token".into(),
            },
            header: "Authorization".into(),
            value_prefix: "Bearer ".into(),
            destination: CredentialDestination {
                domains: vec!["api.llm.example".into()],
                path_prefix: Some("/v1/".into()),
            },
            clients: CredentialClients {
                namespaces: vec!["agents".into()],
                ..CredentialClients::default()
            },
        }
    }

    fn errors(spec: &CredentialSpec) -> Vec<String> {
        match Credential::compile("credentials[0]", spec, |_| true) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn identity(namespace: &str) -> SourceIdentity {
        SourceIdentity {
            namespace: namespace.into(),
            service_account: "runner".into(),
            pod: "p".into(),
            labels: BTreeMap::from([("app".into(), "agent".into())]),
        }
    }

    #[test]
    fn it_applies_to_its_clients_destination_and_path_only() {
        let credential = Credential::compile("c", &spec(), |_| true).expect("valid");
        let domain = Domain::new("api.llm.example");
        let agents = identity("agents");
        let request = CredentialRequest {
            source_ip: "10.1.2.3".parse().expect("ip"),
            identity: Some(&agents),
            domain: &domain,
            target: "/v1/chat?x=1",
            normalized: "/v1/chat?x=1",
        };
        assert!(credential.applies(&request));
        let other_ns = identity("other");
        let other_domain = Domain::new("llm.example");
        for (what, request) in [
            (
                "another namespace",
                CredentialRequest {
                    identity: Some(&other_ns),
                    ..request
                },
            ),
            (
                "no identity",
                CredentialRequest {
                    identity: None,
                    ..request
                },
            ),
            (
                "another name",
                CredentialRequest {
                    domain: &other_domain,
                    ..request
                },
            ),
            (
                "another path",
                CredentialRequest {
                    target: "/v2/chat",
                    normalized: "/v2/chat",
                    ..request
                },
            ),
            (
                "a path that only reads as /v1/",
                CredentialRequest {
                    target: "/v1/../admin",
                    normalized: "/admin",
                    ..request
                },
            ),
            (
                "a prefix only in the query",
                CredentialRequest {
                    target: "/x?/v1/",
                    normalized: "/x?/v1/",
                    ..request
                },
            ),
        ] {
            assert!(!credential.applies(&request), "{what}");
        }
    }

    #[test]
    fn bad_input_is_named_with_its_path() {
        let mut bad = spec();
        bad.header = "Bad Header".into();
        bad.destination.domains = vec![".com".into(), "not a name".into()];
        bad.destination.path_prefix = Some("/v1/../x".into());
        bad.clients = CredentialClients::default();
        bad.secret_ref.key = "a/b".into();
        bad.value_prefix = "Bearer\r\n".into();
        assert_eq!(
            errors(&bad),
            [
                "credentials[0].secretRef.key: \"a/b\" is not a Secret key (letters, digits, '-', '_', '.')",
                "credentials[0].header: \"Bad Header\" is not a header name (an HTTP token: letters, digits and !#$%&'*+-.^_`|~)",
                "credentials[0].valuePrefix: must be printable ASCII (no line breaks or control characters)",
                "credentials[0].destination.domains[0]: \".com\" would send the credential to every name under .com; name the API's own domain",
                "credentials[0].destination.domains[1]: \"not a name\" is not a domain name (expected api.example.com, or .example.com for the apex and all its subdomains)",
                "credentials[0].destination.pathPrefix: write \"/v1/../x\" in its normal form: \"/x\"",
                "credentials[0].clients: say whose requests get it (namespaces, serviceAccounts, podLabels or sourceCIDRs): every client of the proxy is rarely meant",
            ]
        );
        let mut framing = spec();
        framing.header = "Content-Length".into();
        assert_eq!(
            errors(&framing),
            [
                "credentials[0].header: \"Content-Length\" frames or routes the request; a credential cannot set it"
            ]
        );
        let not_intercepted = Credential::compile("credentials[0]", &spec(), |_| false)
            .map(|_| ())
            .expect_err("refused");
        assert!(
            not_intercepted[0]
                .to_string()
                .contains("is not intercepted"),
            "{not_intercepted:?}"
        );
    }
}
