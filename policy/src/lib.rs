//! The policy model of egress-proxy, shared by the operator and the gateway.
//!
//! This crate owns what a policy *means*: the spec types of the three custom
//! resources ([`spec`]), condition keys and operators with their value types,
//! compilation into lookup tables with precise errors ([`compile`]), the
//! serialized compiled form that travels in a ConfigMap, and evaluation of the
//! three phases into a [`Decision`]. It also owns the private-destination guard
//! and the proxy settings that decide interception bypass and log selection.
//!
//! It does no I/O and knows nothing of Kubernetes clients, sockets or TLS:
//! everything here is a plain function of its inputs.
//!
//! ```
//! use egress_policy::{compile_documents, Action, Domain, RequestContext};
//!
//! let yaml = r#"
//! apiVersion: egress.dev/v1alpha1
//! kind: ProxyRuleGroup
//! metadata: {name: blocklist}
//! spec:
//!   rules:
//!     preDNS:
//!       - name: no-example
//!         action: Deny
//!         conditions:
//!           - {key: "request:DestinationDomain", operator: StringEquals, values: [".example.com"]}
//! ---
//! apiVersion: egress.dev/v1alpha1
//! kind: ProxyConfiguration
//! metadata: {name: default}
//! spec:
//!   ruleGroups: [{name: blocklist}]
//!   defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}
//! "#;
//! let policy = compile_documents(yaml, None).expect("valid policy");
//! let ctx = RequestContext {
//!     destination_domain: Some(Domain::new("www.Example.com")),
//!     ..Default::default()
//! };
//! let decision = policy.evaluate(&ctx);
//! assert_eq!(decision.final_action, Action::Deny);
//! assert_eq!(&*decision.final_rule_name, "no-example");
//! ```

pub mod aws;
pub mod credential;
pub mod domain;
pub mod domain_value;
pub mod glob;
pub mod host;
pub mod key;
pub mod list;
pub mod objects;
pub mod operator;
pub mod parts;
pub mod private;
pub mod spec;
pub mod uri;

mod compile;
mod condition;
mod context;
mod documents;
mod engine;
mod error;
mod index;
mod named;
mod net;
mod phase;
mod proxy;
mod time;

pub use compile::{
    Available, CompiledPolicy, FORMAT_VERSION, PolicyDocument, compile, compile_for_proxy,
    select_baseline, validate_cluster_rule_group, validate_rule_group, validate_rule_group_with,
};
pub use context::{HttpRequest, HttpResponse, RequestContext, SourceIdentity};
pub use documents::{Documents, compile_documents, parse_documents};
pub use domain::Domain;
pub use engine::{DEFAULT_RULE, DEFAULT_RULE_NAME, Decision, RuleMatch, Verdict, WouldBe};
pub use error::{CompileError, Error};
pub use host::Host;
pub use list::validate_list;
pub use named::Named;
pub use phase::Phase;
pub use private::PRIVATE_DESTINATION_RULE;
pub use proxy::{ProxyPolicy, ProxySettings};
pub use spec::Action;
