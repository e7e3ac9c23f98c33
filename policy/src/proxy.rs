//! The policy-relevant settings of an `EgressProxy`: which names are never
//! intercepted, which private ranges may be reached, which decisions are logged.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::credential::{Credential, CredentialRequest};
use crate::domain::Domain;
use crate::domain_value::DomainValue;
use crate::engine::Decision;
use crate::error::CompileError;
use crate::net::parse_net;
use crate::spec::{
    Action, CredentialSpec, EgressProxySpec, LogFormat, TunnelAnswer, default_tls_ports,
};

/// What a compiled policy carries of its `EgressProxy` (serialized with it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    /// The proxy's name (`proxy_name` in logs).
    pub name: String,
    /// TLS interception on CONNECT tunnels.
    pub intercept: bool,
    /// Names relayed untouched even when interception is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass_domains: Vec<String>,
    /// When not empty, the only names intercepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intercept_domains: Vec<String>,
    /// Private ranges clients may reach.
    #[serde(
        rename = "allowPrivateCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_private_cidrs: Vec<String>,
    /// Final actions that are logged.
    pub log_actions: Vec<Action>,
    /// Whether logged URLs keep their query string.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_query_strings: bool,
    /// The shape of log lines.
    #[serde(default, skip_serializing_if = "LogFormat::is_native")]
    pub log_format: LogFormat,
    /// Ports whose relayed tunnels must open with a TLS ClientHello.
    #[serde(
        default = "default_tls_ports",
        skip_serializing_if = "is_default_tls_ports"
    )]
    pub tls_ports: Vec<u16>,
    /// What a tunnel to one of them gets when it does not open with TLS.
    #[serde(
        default,
        rename = "nonTLS",
        skip_serializing_if = "TunnelAnswer::is_deny"
    )]
    pub non_tls: TunnelAnswer,
    /// What a ClientHello that hides its name gets.
    #[serde(default, skip_serializing_if = "TunnelAnswer::is_deny")]
    pub encrypted_client_hello: TunnelAnswer,
    /// Headers added from Secrets (names and keys only, never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialSpec>,
}

fn is_default_tls_ports(ports: &[u16]) -> bool {
    ports == default_tls_ports()
}

impl ProxySettings {
    /// The settings of a proxy spec.
    pub fn from_spec(name: &str, spec: &EgressProxySpec) -> ProxySettings {
        ProxySettings {
            name: name.to_owned(),
            intercept: spec.tls_interception.enabled,
            bypass_domains: spec.tls_interception.bypass_domains.clone(),
            intercept_domains: spec.tls_interception.domains.clone(),
            allow_private_cidrs: spec.destinations.allow_private_cidrs.clone(),
            log_actions: spec.logging.actions.clone(),
            log_query_strings: spec.logging.query_strings,
            log_format: spec.logging.format,
            tls_ports: spec.relayed_tunnels.tls_ports.clone(),
            non_tls: spec.relayed_tunnels.non_tls,
            encrypted_client_hello: spec.relayed_tunnels.encrypted_client_hello,
            credentials: spec.credentials.clone(),
        }
    }
}

impl Default for ProxySettings {
    /// A proxy named `egress-proxy` with interception off, no exceptions, and
    /// every decision logged: what a bare configuration runs with.
    fn default() -> Self {
        ProxySettings {
            name: "egress-proxy".to_owned(),
            intercept: false,
            bypass_domains: Vec::new(),
            intercept_domains: Vec::new(),
            allow_private_cidrs: Vec::new(),
            log_actions: vec![Action::Allow, Action::Deny, Action::Alert],
            log_query_strings: false,
            log_format: LogFormat::Native,
            tls_ports: default_tls_ports(),
            non_tls: TunnelAnswer::Deny,
            encrypted_client_hello: TunnelAnswer::Deny,
            credentials: Vec::new(),
        }
    }
}

/// The domain values of the list at `field`; an error for each that is not one.
pub(crate) fn domain_values(
    field: &str,
    values: &[String],
    errors: &mut Vec<CompileError>,
) -> Vec<DomainValue> {
    let mut parsed = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match DomainValue::parse(value) {
            Some(value) => parsed.push(value),
            None => errors.push(CompileError::new(
                format!("{field}[{i}]"),
                format!("{value:?} is not a domain name (expected example.com, or .example.com for the apex and all its subdomains)"),
            )),
        }
    }
    parsed
}

/// [`ProxySettings`] ready to use.
#[derive(Clone, Debug)]
pub struct ProxyPolicy {
    settings: ProxySettings,
    bypass_exact: HashSet<Box<str>>,
    bypass_suffix: HashSet<Box<str>>,
    intercept_only: Vec<DomainValue>,
    allow_private: Vec<IpNet>,
    credentials: Vec<Credential>,
}

impl ProxyPolicy {
    /// Checks the settings; errors carry paths into `EgressProxy.spec`.
    pub fn compile(settings: ProxySettings) -> Result<ProxyPolicy, Vec<CompileError>> {
        let mut errors = Vec::new();
        let (mut bypass_exact, mut bypass_suffix) = (HashSet::new(), HashSet::new());
        let bypass = domain_values(
            "tlsInterception.bypassDomains",
            &settings.bypass_domains,
            &mut errors,
        );
        for value in bypass {
            match value {
                DomainValue::Exact(name) => bypass_exact.insert(name),
                DomainValue::ApexAndSubdomains(apex) => bypass_suffix.insert(apex),
            };
        }
        let intercept_only = domain_values(
            "tlsInterception.domains",
            &settings.intercept_domains,
            &mut errors,
        );
        let mut allow_private = Vec::new();
        for (i, value) in settings.allow_private_cidrs.iter().enumerate() {
            match parse_net(value) {
                Ok(net) => allow_private.push(net),
                Err(_) => errors.push(CompileError::new(
                    format!("destinations.allowPrivateCIDRs[{i}]"),
                    format!("{value:?} is not a CIDR or IP address"),
                )),
            }
        }
        for (i, port) in settings.tls_ports.iter().enumerate() {
            if *port == 0 {
                errors.push(CompileError::new(
                    format!("relayedTunnels.tlsPorts[{i}]"),
                    "0 is not a port (1 to 65535)".to_owned(),
                ));
            }
        }
        let mut policy = ProxyPolicy {
            settings,
            bypass_exact,
            bypass_suffix,
            intercept_only,
            allow_private,
            credentials: Vec::new(),
        };
        for (i, spec) in policy.settings.credentials.iter().enumerate() {
            match Credential::compile(&format!("credentials[{i}]"), spec, |d| policy.intercepts(d))
            {
                Ok(credential) => policy.credentials.push(credential),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(errors)
        }
    }

    /// The settings this was compiled from.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The proxy's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether a CONNECT to `domain` is intercepted: interception on, the
    /// name among `tlsInterception.domains` when those are given, and not
    /// bypassed.
    pub fn intercepts(&self, domain: &Domain) -> bool {
        self.settings.intercept
            && (self.intercept_only.is_empty()
                || self
                    .intercept_only
                    .iter()
                    .any(|d| d.matches(domain.as_str())))
            && !self.is_bypassed(domain)
    }

    /// The first credential that applies to `request`.
    pub fn credential_for(&self, request: &CredentialRequest<'_>) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.applies(request))
    }

    /// The credentials, in order.
    pub fn credentials(&self) -> &[Credential] {
        &self.credentials
    }

    /// Whether a relayed tunnel to `port` must open with a TLS ClientHello.
    pub fn expects_tls(&self, port: u16) -> bool {
        self.settings.tls_ports.contains(&port)
    }

    /// Whether `domain` is on the bypass list.
    pub fn is_bypassed(&self, domain: &Domain) -> bool {
        self.bypass_exact.contains(domain.as_str())
            || domain.suffixes().any(|s| self.bypass_suffix.contains(s))
    }

    /// Whether the guard refuses `ip`: private and not in `allowPrivateCIDRs`.
    pub fn refuses_destination(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        crate::private::is_private(ip) && !self.allow_private.iter().any(|net| net.contains(&ip))
    }

    /// Whether a decision is written to the decision log: its final action is
    /// selected, or it has an alert and `Alert` is selected, or the rules in
    /// monitor mode would have taken a selected action.
    pub fn logs(&self, decision: &Decision) -> bool {
        let selected = |a: Action| self.settings.log_actions.contains(&a);
        selected(decision.final_action)
            || (decision.has_alert() && selected(Action::Alert))
            || decision.would().is_some_and(|would| selected(would.action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bypass: &[&str], allow: &[&str], log: &[Action]) -> ProxyPolicy {
        ProxyPolicy::compile(ProxySettings {
            name: "p".into(),
            intercept: true,
            bypass_domains: bypass.iter().map(|s| s.to_string()).collect(),
            allow_private_cidrs: allow.iter().map(|s| s.to_string()).collect(),
            log_actions: log.to_vec(),
            log_query_strings: false,
            log_format: LogFormat::Native,
            tls_ports: default_tls_ports(),
            non_tls: TunnelAnswer::Deny,
            encrypted_client_hello: TunnelAnswer::Deny,
            ..ProxySettings::default()
        })
        .expect("valid settings")
    }

    #[test]
    fn bypass_uses_domain_semantics() {
        let p = policy(&["pinned.example.com", ".bank.example"], &[], &[]);
        assert!(!p.intercepts(&Domain::new("Pinned.Example.com.")));
        assert!(!p.intercepts(&Domain::new("bank.example")));
        assert!(!p.intercepts(&Domain::new("www.bank.example")));
        assert!(p.intercepts(&Domain::new("www.pinned.example.com")));
        assert!(p.intercepts(&Domain::new("notbank.example")));
    }

    #[test]
    fn private_exceptions() {
        let p = policy(&[], &["10.1.0.0/16", "fd00::5"], &[]);
        let refuses = |ip: &str| p.refuses_destination(ip.parse().expect(ip));
        assert!(!refuses("10.1.2.3"));
        assert!(!refuses("::ffff:10.1.2.3"));
        assert!(refuses("10.2.0.1"));
        assert!(!refuses("fd00::5"));
        assert!(refuses("fd00::6"));
        assert!(refuses("169.254.169.254"));
        assert!(!refuses("8.8.8.8"));
    }

    #[test]
    fn log_selection() {
        let p = policy(&[], &[], &[Action::Deny, Action::Alert]);
        let mut d = Decision::default();
        assert!(!p.logs(&d));
        d.final_action = Action::Deny;
        assert!(p.logs(&d));
        let alerted = Decision {
            first_alert_match: Some(crate::engine::RuleMatch {
                rule: "r".into(),
                group: "g".into(),
                phase: crate::Phase::PreDns,
                action: Action::Alert,
            }),
            ..Decision::default()
        };
        assert!(p.logs(&alerted));
    }

    #[test]
    fn bad_settings_have_paths() {
        let errors = ProxyPolicy::compile(ProxySettings {
            bypass_domains: vec!["ok.com".into(), "not a domain".into()],
            allow_private_cidrs: vec!["10.0.0.0/33".into()],
            tls_ports: vec![443, 0],
            ..ProxySettings::default()
        })
        .expect_err("invalid");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "tlsInterception.bypassDomains[1]: \"not a domain\" is not a domain name (expected example.com, or .example.com for the apex and all its subdomains)",
                "destinations.allowPrivateCIDRs[0]: \"10.0.0.0/33\" is not a CIDR or IP address",
                "relayedTunnels.tlsPorts[1]: 0 is not a port (1 to 65535)",
            ]
        );
    }

    #[test]
    fn relayed_tunnel_settings_are_written_only_when_not_the_defaults() {
        // A policy with the defaults reads the same in gateways that predate
        // them.
        let defaults = serde_json::to_value(ProxySettings::default()).expect("json");
        for field in ["tlsPorts", "nonTLS", "encryptedClientHello"] {
            assert!(defaults.get(field).is_none(), "{field} in {defaults}");
        }
        let set = ProxySettings {
            tls_ports: vec![443, 8443],
            non_tls: TunnelAnswer::Allow,
            encrypted_client_hello: TunnelAnswer::Allow,
            ..ProxySettings::default()
        };
        let json = serde_json::to_value(&set).expect("json");
        assert_eq!(json["nonTLS"], "Allow");
        let back: ProxySettings = serde_json::from_value(json).expect("read back");
        assert_eq!(back, set);
        let p = ProxyPolicy::compile(set).expect("valid");
        assert!(p.expects_tls(8443) && !p.expects_tls(80));
    }
}
