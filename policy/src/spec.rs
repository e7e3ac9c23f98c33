//! The `spec` of the three custom resources, exactly as users write them.
//!
//! These types only carry data; [`crate::compile`] checks it. They refuse unknown
//! fields, so a typo such as `preDns:` is an error instead of a silently empty
//! phase (the API server prunes unknown fields before they reach the operator, so
//! this only bites the standalone gateway, where it is wanted).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// API group and version of every resource.
pub const API_VERSION: &str = "egress.dev/v1alpha1";

/// What a rule, or a phase default, does with a request it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Action {
    /// Ends the current phase; the next phase runs.
    Allow,
    /// Refuses the request; no later phase runs.
    Deny,
    /// Records the match and lets evaluation continue.
    Alert,
}

impl Action {
    /// The spelling used in specs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Alert => "Alert",
        }
    }
}

/// `Enforce` (the default) carries the action out; `Monitor` evaluates the
/// rule where it stands and only reports what it would have done (decision
/// line fields `would_action`, `would_rule_name`; metric
/// `egress_monitored_decisions_total`). On a group it applies to every rule,
/// and none of them may then say `Enforce`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum RuleMode {
    /// The action applies.
    #[default]
    Enforce,
    /// The rule is evaluated where it stands and what it would have done is
    /// logged (`would_action`, `would_rule_name`) and counted; nothing is
    /// enforced.
    Monitor,
}

/// `ProxyRuleGroup.spec`: ordered rules per phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.mode) || self.mode != 'Monitor' || !has(self.rules) || ((!has(self.rules.preDNS) || self.rules.preDNS.all(r, !has(r.mode) || r.mode != 'Enforce')) && (!has(self.rules.preRequest) || self.rules.preRequest.all(r, !has(r.mode) || r.mode != 'Enforce')) && (!has(self.rules.postResponse) || self.rules.postResponse.all(r, !has(r.mode) || r.mode != 'Enforce')))",
    "message": "the group is in Monitor mode, so none of its rules may say mode: Enforce"
}])))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyRuleGroupSpec {
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub description: Option<String>,
    /// `Monitor` puts every rule of the group in monitor mode (default `Enforce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RuleMode>,
    /// The rules of each phase; list order is priority.
    #[serde(default)]
    pub rules: PhaseRules,
}

impl ProxyRuleGroupSpec {
    /// The lists its conditions name (`valuesFrom`), repeats included.
    pub fn list_names(&self) -> impl Iterator<Item = &str> {
        self.rules.list_names()
    }
}

/// `ClusterProxyRuleGroup.spec`: the baseline of every proxy in the
/// namespaces it selects. Its rules come before every namespaced group (a
/// `Deny` there cannot be overridden), except `Allow` rules marked
/// `overridable`, which come after them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterProxyRuleGroupSpec {
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub description: Option<String>,
    /// The proxies it applies to, by the labels of their namespace (which
    /// tenants of a namespace cannot change); absent: every proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// `Monitor` puts every rule of the group in monitor mode (default `Enforce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RuleMode>,
    /// The rules of each phase; list order is priority. Their lists
    /// (`valuesFrom`) are `ClusterProxyList`s.
    #[serde(default)]
    pub rules: PhaseRules,
}

impl ClusterProxyRuleGroupSpec {
    /// The rules as a rule group (what the compiled policy carries).
    pub fn group(&self) -> ProxyRuleGroupSpec {
        ProxyRuleGroupSpec {
            description: self.description.clone(),
            mode: self.mode,
            rules: self.rules.clone(),
        }
    }

    /// Whether it applies to proxies of a namespace with these labels.
    pub fn selects(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        self.namespace_selector
            .as_ref()
            .is_none_or(|selector| selector.matches(namespace_labels))
    }
}

/// Rules of one group, per phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseRules {
    /// Evaluated before the destination name is resolved.
    #[serde(rename = "preDNS", default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000), extend("x-kubernetes-validations" = [{"rule": "self.map(r, r.name).distinct().size() == self.size()", "message": "rule names must be unique in a phase"}])))]
    pub pre_dns: Vec<RuleSpec>,
    /// Evaluated after resolution, before the request goes upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000), extend("x-kubernetes-validations" = [{"rule": "self.map(r, r.name).distinct().size() == self.size()", "message": "rule names must be unique in a phase"}])))]
    pub pre_request: Vec<RuleSpec>,
    /// Evaluated when the upstream response head arrives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000), extend("x-kubernetes-validations" = [{"rule": "self.map(r, r.name).distinct().size() == self.size()", "message": "rule names must be unique in a phase"}])))]
    pub post_response: Vec<RuleSpec>,
}

impl PhaseRules {
    /// The rules of each phase, in phase order.
    pub fn by_phase(&self) -> [&Vec<RuleSpec>; 3] {
        [&self.pre_dns, &self.pre_request, &self.post_response]
    }

    /// Every rule, phase by phase.
    pub fn all(&self) -> impl Iterator<Item = &RuleSpec> {
        self.pre_dns
            .iter()
            .chain(&self.pre_request)
            .chain(&self.post_response)
    }

    /// The lists the rules' conditions name (`valuesFrom`), repeats included.
    pub fn list_names(&self) -> impl Iterator<Item = &str> {
        self.all()
            .flat_map(|rule| &rule.conditions)
            .flat_map(|condition| &condition.values_from)
            .map(|reference| reference.list.as_str())
    }
}

/// One rule: all its conditions must hold for its action to apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique inside the group; `^[a-zA-Z0-9-]{1,128}$`.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[a-zA-Z0-9-]{1,128}$"), length(min = 1, max = 128))
    )]
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub description: Option<String>,
    /// What happens when every condition holds.
    pub action: Action,
    /// `Monitor` reports the action instead of carrying it out (default: the
    /// group's mode; a rule of a `Monitor` group cannot say `Enforce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RuleMode>,
    /// Only on an `Allow` rule of a `ClusterProxyRuleGroup`: it is tried
    /// after the namespace's own rule groups, so they may still refuse what
    /// it allows; it applies when none of them decided. Default false: the
    /// baseline's rules come before every namespaced group.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overridable: bool,
    /// All must hold (AND). An empty list matches every request.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub conditions: Vec<ConditionSpec>,
}

/// One condition: `key operator values`, where any value may match (OR), except
/// for negated operators, where none may.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.values) && size(self.values) > 0) || (has(self.valuesFrom) && size(self.valuesFrom) > 0)",
    "message": "a condition needs values, valuesFrom or both"
}])))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionSpec {
    /// A condition key such as `request:DestinationDomain`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 512)))]
    pub key: String,
    /// An operator such as `StringEquals`; it must fit the key's value type.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = crate::operator::Operator::NAMES)))]
    pub operator: String,
    /// Values compared with the key's value. Numbers may be written unquoted.
    #[serde(
        default,
        deserialize_with = "strings_or_numbers",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "schema", schemars(schema_with = "int_or_string_list"))]
    pub values: Vec<String>,
    /// `ProxyList`s whose entries are values too, compared exactly as
    /// `values` are. A condition needs `values`, `valuesFrom` or both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 64)))]
    pub values_from: Vec<ListRef>,
}

/// A reference to a `ProxyList` in the rule group's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRef {
    /// Name of the `ProxyList`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub list: String,
}

/// `ProxyList.spec`: a named list of values that conditions use by name
/// (`valuesFrom`) instead of repeating them inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyListSpec {
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub description: Option<String>,
    /// What the entries are, which decides the conditions that may use it.
    #[serde(rename = "type")]
    pub list_type: ListType,
    /// The entries, in any order; duplicates are harmless.
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 100000), schema_with = "list_entries")
    )]
    pub entries: Vec<String>,
}

/// Schema of a list's entries: strings of at most 1024 characters.
#[cfg(feature = "schema")]
fn list_entries(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 100000,
        "items": {"type": "string", "maxLength": 1024},
        "description": "The entries, in any order; duplicates are harmless."
    })
}

/// The kind of entries a `ProxyList` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ListType {
    /// Domain names as `StringEquals` on `request:DestinationDomain` reads
    /// them: `example.com` that name only, `.example.com` the apex and every
    /// subdomain. For `StringEquals` and `StringNotEquals` on that key.
    Domains,
    /// Addresses or CIDR ranges, for `IpAddress` and `NotIpAddress` on the
    /// address keys.
    #[serde(rename = "CIDRs")]
    Cidrs,
    /// Globs (`*` any run, `?` one character), for `StringLike` and
    /// `StringNotLike` on a text or domain key (URL patterns on
    /// `request:Http:Uri`, header values, domain patterns).
    Patterns,
}

impl ListType {
    /// The spelling used in specs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ListType::Domains => "Domains",
            ListType::Cidrs => "CIDRs",
            ListType::Patterns => "Patterns",
        }
    }
}

/// Schema of a list whose items may be written as strings or numbers.
#[cfg(feature = "schema")]
fn int_or_string_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 1000,
        "items": {"x-kubernetes-int-or-string": true, "maxLength": 1024},
        "description": "Values compared with the key's value. Numbers may be written unquoted."
    })
}

/// `ProxyConfiguration.spec`: ordered rule groups and a default per phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfigurationSpec {
    /// Rule groups in priority order, by name, in the configuration's namespace.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 100), extend("x-kubernetes-validations" = [{"rule": "self.map(g, g.name).distinct().size() == self.size()", "message": "each rule group may be listed once"}])))]
    pub rule_groups: Vec<RuleGroupRef>,
    /// The action of each phase when no rule ended it. Required, every phase
    /// (as AWS requires `DefaultRulePhaseActions`): a configuration cut off
    /// before its defaults must not load as an allow-all.
    pub default_actions: DefaultActions,
}

/// A reference to a `ProxyRuleGroup` in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleGroupRef {
    /// Name of the `ProxyRuleGroup`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
}

/// Default action per phase; all three are required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultActions {
    /// Default of the PreDNS phase.
    #[serde(rename = "preDNS")]
    pub pre_dns: Action,
    /// Default of the PreREQUEST phase.
    pub pre_request: Action,
    /// Default of the PostRESPONSE phase.
    pub post_response: Action,
}

impl DefaultActions {
    /// The same action for every phase.
    pub fn all(action: Action) -> DefaultActions {
        DefaultActions {
            pre_dns: action,
            pre_request: action,
            post_response: action,
        }
    }
}

/// `EgressProxy.spec`: one gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressProxySpec {
    /// The `ProxyConfiguration` (same namespace) this gateway enforces.
    pub configuration_ref: ConfigurationRef,
    /// Ports of the two client-facing listeners.
    #[serde(default)]
    pub listeners: Listeners,
    /// TLS interception of CONNECT tunnels.
    #[serde(default)]
    pub tls_interception: TlsInterception,
    /// How relayed tunnels are judged by the TLS ClientHello they open with.
    #[serde(default)]
    pub relayed_tunnels: RelayedTunnels,
    /// Which destinations the private-address guard lets through, and which
    /// CAs their certificates may come from.
    #[serde(default)]
    pub destinations: Destinations,
    /// Which decisions are written to the decision log.
    #[serde(default)]
    pub logging: Logging,
    /// Number of gateway pods (default 2, so a rollout or a lost node does
    /// not stop egress; with `autoscaling`, the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1000)))]
    pub replicas: Option<i32>,
    /// Compute resources of each gateway pod (default: requests of 100m CPU
    /// and 64Mi memory, no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Scale the gateway with its CPU load (renders a HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Which pods are pointed at this proxy by the injection webhook, and how.
    #[serde(default)]
    pub clients: Clients,
    /// Headers the gateway adds to some clients' requests to some APIs, their
    /// values read from Secrets the workloads never see; added only inside
    /// intercepted TLS. The first credential that applies to a request is used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 64), extend("x-kubernetes-validations" = [{"rule": "self.map(c, c.name).distinct().size() == self.size()", "message": "credential names must be unique"}])))]
    pub credentials: Vec<CredentialSpec>,
}

/// A header whose value comes from a Secret, added by the gateway to the
/// requests of some clients to one API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialSpec {
    /// Names the credential in decision lines (`credential`), errors and
    /// status; never its value.
    #[cfg_attr(
        feature = "schema",
        schemars(
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
            length(min = 1, max = 63)
        )
    )]
    pub name: String,
    /// The Secret (in the proxy's namespace) and the key whose value is sent.
    pub secret_ref: SecretKeyRef,
    /// The header set, e.g. `Authorization`; a header of that name sent by
    /// the client is replaced, never forwarded beside it.
    #[cfg_attr(
        feature = "schema",
        schemars(
            regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"),
            length(min = 1, max = 256)
        )
    )]
    pub header: String,
    /// Text sent before the Secret's value, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 256)))]
    pub value_prefix: String,
    /// Where the header is sent.
    pub destination: CredentialDestination,
    /// Whose requests get it: a request must match every field given, and at
    /// least one must be given.
    pub clients: CredentialClients,
}

/// A key of a Secret in the proxy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    /// The key in its `data`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub key: String,
}

/// The API a credential is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialDestination {
    /// Its names, as `StringEquals` on `request:DestinationDomain` matches
    /// them (a leading dot: the apex and every subdomain). Each must be
    /// intercepted.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 32)))]
    pub domains: Vec<String>,
    /// Only requests whose path starts with this (in its normal form, as
    /// sent and as normalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub path_prefix: Option<String>,
}

/// The clients a credential is added for, by who they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialClients {
    /// The client pod's namespace is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 100)))]
    pub namespaces: Vec<String>,
    /// The client pod's service account is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 100)))]
    pub service_accounts: Vec<String>,
    /// The client pod has every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// The client's address is in one of these ranges (CIDR or address).
    #[serde(rename = "sourceCIDRs", default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 100)))]
    pub source_cidrs: Vec<String>,
}

/// A reference to a `ProxyConfiguration` in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigurationRef {
    /// Name of the `ProxyConfiguration`.
    pub name: String,
}

/// Listener ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listeners {
    /// Plain HTTP listener port (clients use `http://<proxy>:<port>`).
    #[serde(default = "default_http_port")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "i32", range(min = 1, max = 65535))
    )]
    pub http_port: u16,
    /// HTTPS listener port (clients speak TLS to the proxy itself).
    #[serde(default = "default_https_port")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "i32", range(min = 1, max = 65535))
    )]
    pub https_port: u16,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            http_port: default_http_port(),
            https_port: default_https_port(),
        }
    }
}

fn default_http_port() -> u16 {
    1080
}

fn default_https_port() -> u16 {
    443
}

/// TLS interception settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsInterception {
    /// Terminate client TLS on CONNECT tunnels so HTTP keys can match.
    #[serde(default)]
    pub enabled: bool,
    /// Secret (`tls.crt`, `tls.key`, optional `ca.crt`) of the CA the sub-CA is derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
    /// Domains relayed untouched even when interception is on (pinned clients).
    /// Same matching as `StringEquals` on `request:DestinationDomain`: a leading
    /// dot covers the apex and every subdomain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000)))]
    pub bypass_domains: Vec<String>,
    /// When given, only these domains are intercepted (same matching as
    /// `bypassDomains`) and every other CONNECT is relayed; `bypassDomains`
    /// still wins. Empty: every domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000)))]
    pub domains: Vec<String>,
}

/// Relayed tunnels (interception off, or the name bypassed), judged by the
/// TLS ClientHello they open with, read without decrypting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayedTunnels {
    /// Ports whose relayed tunnels must open with a TLS ClientHello (on
    /// any port, a ClientHello's server name must be the CONNECT's name, or
    /// for a CONNECT to an address is the name PreDNS judges). Elsewhere,
    /// what is not TLS is relayed as it is.
    #[serde(default = "default_tls_ports")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "port_list"))]
    pub tls_ports: Vec<u16>,
    /// What a tunnel to one of those ports gets when it does not open with
    /// TLS (or its destination speaks first).
    #[serde(default, rename = "nonTLS")]
    pub non_tls: TunnelAnswer,
    /// What a ClientHello that hides the name it is for (Encrypted Client
    /// Hello, or the older encrypted SNI) gets: its outer name is a
    /// front's, so the real destination cannot be judged.
    #[serde(default)]
    pub encrypted_client_hello: TunnelAnswer,
}

impl Default for RelayedTunnels {
    fn default() -> Self {
        RelayedTunnels {
            tls_ports: default_tls_ports(),
            non_tls: TunnelAnswer::default(),
            encrypted_client_hello: TunnelAnswer::default(),
        }
    }
}

/// Port 443.
pub fn default_tls_ports() -> Vec<u16> {
    vec![443]
}

/// Schema of a list of TCP ports.
#[cfg(feature = "schema")]
fn port_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "integer", "minimum": 1, "maximum": 65535},
        "default": [443],
        "description": "Ports whose relayed tunnels must open with a TLS ClientHello (on any port, a ClientHello's server name must be the CONNECT's name, or for a CONNECT to an address is the name PreDNS judges). Elsewhere, what is not TLS is relayed as it is."
    })
}

/// Let a relayed tunnel through, or close it (the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TunnelAnswer {
    /// Relay it.
    Allow,
    /// Close it, with a decision line saying why.
    #[default]
    Deny,
}

impl TunnelAnswer {
    /// Whether this is `Deny`, the default.
    pub fn is_deny(&self) -> bool {
        *self == TunnelAnswer::Deny
    }
}

/// A reference to a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// Destination settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destinations {
    /// Private ranges (CIDR or address) that clients may reach through the proxy.
    #[serde(
        rename = "allowPrivateCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "schema", schemars(length(max = 256)))]
    pub allow_private_cidrs: Vec<String>,
    /// A ConfigMap key (same namespace) with PEM CA certificates the gateway
    /// trusts for destinations' certificates, besides the system roots: the
    /// private CAs of internal services it connects to with TLS (intercepted
    /// tunnels, `https://` requests). A change rolls the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<ConfigMapKeyRef>,
}

/// A key of a ConfigMap in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    /// The key holding the PEM certificates.
    #[serde(default = "ConfigMapKeyRef::default_key")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub key: String,
}

impl ConfigMapKeyRef {
    fn default_key() -> String {
        "ca.crt".to_owned()
    }
}

/// Decision log settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// Decisions whose final action is one of these are logged; a request with
    /// an alert match is logged when `Alert` is listed, and one that rules in
    /// monitor mode would have given a listed action (`would_action`) too.
    /// Default: all three.
    #[serde(default = "all_actions")]
    #[cfg_attr(feature = "schema", schemars(length(max = 3)))]
    pub actions: Vec<Action>,
    /// Whether logged URLs keep their query string. Off by default: queries
    /// often carry tokens and other credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub query_strings: bool,
    /// The shape of each line: `native` (RFC 3339 times, actions as
    /// written in rules) or `aws` (AWS Network Firewall Proxy's: epoch
    /// seconds, lower-case actions, `url` and `all_matches` as objects), for
    /// log pipelines built for it.
    #[serde(default, skip_serializing_if = "LogFormat::is_native")]
    pub format: LogFormat,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            actions: all_actions(),
            query_strings: false,
            format: LogFormat::Native,
        }
    }
}

/// The shape of decision log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// This project's (design §7).
    #[default]
    Native,
    /// AWS Network Firewall Proxy's.
    Aws,
}

impl LogFormat {
    /// Whether this is the default.
    pub fn is_native(&self) -> bool {
        *self == LogFormat::Native
    }
}

fn all_actions() -> Vec<Action> {
    vec![Action::Allow, Action::Deny, Action::Alert]
}

/// The pods a proxy serves (in namespaces labelled
/// `egress.dev/injection=enabled`) and what the webhook gives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Clients {
    /// Namespaces served, among those labelled `egress.dev/injection=enabled`
    /// that this proxy may serve (its own; any, when it is in a shared-proxy
    /// namespace; those that pin it); all of them when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods served in those namespaces; all of them when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Which listener the injected `HTTPS_PROXY`/`HTTP_PROXY` point at:
    /// `http` (every client can) or `https` (TLS to the proxy too; Java
    /// always gets the `http` one, it cannot speak TLS to a proxy).
    #[serde(default)]
    pub listener: ClientListener,
    /// Extra `NO_PROXY` entries (names, `.domain` suffixes, addresses,
    /// CIDRs) on top of the cluster's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 256), inner(regex(pattern = r"^[^\s,|]+$")))
    )]
    pub no_proxy: Vec<String>,
    /// Mount the trust bundle and point `SSL_CERT_FILE` and friends at it,
    /// when there is something to trust (interception on, or the `https`
    /// listener).
    #[serde(default = "yes")]
    pub inject_trust_bundle: bool,
    /// Bypass prevention: NetworkPolicies that let every pod of the served
    /// namespaces reach only the proxies serving them, cluster DNS and the
    /// `NO_PROXY` ranges, and admit only those namespaces to the proxy.
    /// Needs a CNI that enforces NetworkPolicy.
    #[serde(default)]
    pub enforce: bool,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            namespace_selector: None,
            pod_selector: None,
            listener: ClientListener::default(),
            no_proxy: Vec::new(),
            inject_trust_bundle: true,
            enforce: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// The listener injected clients use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClientListener {
    /// Plain HTTP to the proxy (`http://<proxy>.<ns>.svc:<httpPort>`).
    #[default]
    Http,
    /// TLS to the proxy (`https://<proxy>.<ns>.svc:<httpsPort>`).
    Https,
}

/// Compute resources of a container, as Kubernetes quantities (`cpu: 500m`,
/// `memory: 128Mi`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// Horizontal autoscaling of the gateway on CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [{"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// Fewest pods.
    #[serde(default = "one")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub min_replicas: i32,
    /// Most pods.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the requested CPU, that the autoscaler aims for.
    #[serde(default = "seventy", rename = "targetCPUUtilizationPercentage")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub target_cpu_utilization_percentage: i32,
}

fn one() -> i32 {
    1
}

fn seventy() -> i32 {
    70
}

/// A Kubernetes label selector (the subset of `metav1.LabelSelector` in use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label relates to `values`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`LabelSelectorRequirement`], as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SelectorOperator {
    /// The label is set to one of the values.
    In,
    /// The label is absent or set to none of the values.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every label and requirement (Kubernetes
    /// semantics: an empty selector selects everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match requirement.operator {
                    SelectorOperator::In => value.is_some_and(|v| requirement.values.contains(v)),
                    SelectorOperator::NotIn => {
                        !value.is_some_and(|v| requirement.values.contains(v))
                    }
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// Accepts `["404", 404, 1.5, true]`-style lists: YAML users write status codes and
/// ports unquoted, and the CRD schema says int-or-string.
fn strings_or_numbers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        String(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let scalars = Vec::<Scalar>::deserialize(deserializer)?;
    Ok(scalars
        .into_iter()
        .map(|scalar| match scalar {
            Scalar::String(s) => s,
            Scalar::Integer(n) => n.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_group_reads_camel_case_and_unquoted_numbers() {
        let group: ProxyRuleGroupSpec = serde_json::from_value(serde_json::json!({
            "rules": {
                "postResponse": [{
                    "name": "deny-404",
                    "action": "Deny",
                    "conditions": [{"key": "response:Http:StatusCode", "operator": "NumericEquals", "values": [404, "405"]}]
                }]
            }
        }))
        .expect("valid group");
        assert_eq!(
            group.rules.post_response[0].conditions[0].values,
            ["404", "405"]
        );
        assert!(group.rules.pre_dns.is_empty());
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]}
            ]
        }))
        .expect("valid selector");
        assert!(selector.matches(&labels(&[("team", "a"), ("tier", "web")])));
        assert!(selector.matches(&labels(&[("team", "a"), ("tier", "api"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("team", "b"), ("tier", "web")])));
        assert!(
            !selector.matches(&labels(&[("team", "a")])),
            "In needs the label"
        );
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "web"), ("legacy", "")])));
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "web"), ("env", "dev")])));
        assert!(
            LabelSelector::default().matches(&labels(&[])),
            "empty selects all"
        );
        let exists: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "x", "operator": "Exists"}]
        }))
        .expect("valid selector");
        assert!(exists.matches(&labels(&[("x", "")])));
        assert!(!exists.matches(&labels(&[("y", "1")])));
        let typo = serde_json::from_value::<LabelSelector>(serde_json::json!({
            "matchExpressions": [{"key": "x", "operator": "in"}]
        }));
        assert!(typo.is_err(), "operators are spelled as Kubernetes does");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<ProxyRuleGroupSpec>(serde_json::json!({
            "rules": {"preDns": []}
        }))
        .expect_err("typo must be refused");
        assert!(err.to_string().contains("preDns"), "{err}");
    }

    #[test]
    fn configuration_defaults_are_required_for_every_phase() {
        let config: ProxyConfigurationSpec = serde_json::from_value(serde_json::json!({
            "ruleGroups": [{"name": "a"}],
            "defaultActions": {"preDNS": "Deny", "preRequest": "Allow", "postResponse": "Alert"}
        }))
        .expect("valid configuration");
        assert_eq!(config.default_actions.pre_dns, Action::Deny);
        assert_eq!(config.default_actions.post_response, Action::Alert);
        for partial in [
            serde_json::json!({"ruleGroups": [{"name": "a"}]}),
            serde_json::json!({"defaultActions": {"preDNS": "Deny"}}),
            serde_json::json!({"defaultActions": {"preDNS": "Allow", "preRequest": "Allow"}}),
        ] {
            let err = serde_json::from_value::<ProxyConfigurationSpec>(partial.clone())
                .expect_err("a missing default must be refused");
            assert!(
                err.to_string().contains("missing field"),
                "{partial}: {err}"
            );
        }
    }

    #[cfg(feature = "schema")]
    #[test]
    fn schema_lists_operators_and_accepts_unquoted_numbers() {
        let schema = serde_json::to_value(schemars::schema_for!(ProxyRuleGroupSpec))
            .expect("schema serializes");
        let condition = &schema["$defs"]["ConditionSpec"]["properties"];
        let operators = condition["operator"]["enum"]
            .as_array()
            .expect("operator enum");
        assert_eq!(operators.len(), crate::operator::Operator::NAMES.len());
        assert!(operators.contains(&serde_json::json!("DateGreaterThanEquals")));
        assert!(operators.contains(&serde_json::json!("StringLike")));
        assert_eq!(
            condition["values"]["items"]["x-kubernetes-int-or-string"], true,
            "{condition}"
        );
    }

    #[test]
    fn egress_proxy_spec_round_trips_with_defaults() {
        let proxy: EgressProxySpec = serde_json::from_value(serde_json::json!({
            "configurationRef": {"name": "seed"},
            "destinations": {"allowPrivateCIDRs": ["10.1.0.0/16"]}
        }))
        .expect("valid proxy");
        assert_eq!(proxy.listeners.http_port, 1080);
        assert_eq!(proxy.listeners.https_port, 443);
        assert_eq!(proxy.logging.actions.len(), 3);
        let back = serde_json::to_value(&proxy).expect("serializes");
        assert_eq!(back["destinations"]["allowPrivateCIDRs"][0], "10.1.0.0/16");
        assert_eq!(
            serde_json::from_value::<EgressProxySpec>(back).expect("reads back"),
            proxy
        );
    }
}
