//! From specs to a [`CompiledPolicy`]: every problem is reported at once,
//! each with the path of the field at fault.
//!
//! The serialized form ([`PolicyDocument`]) holds the validated specs in
//! priority order, the defaults and the proxy settings, with a format version
//! and a SHA-256 content hash. Loading it compiles it again, so a document that
//! was edited by hand is checked like any other input.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::context::RequestContext;
use crate::engine::{self, CompiledRule, Decision, PhaseTable, Verdict};
use crate::error::{CompileError, Error};
use crate::key::ConditionKey;
use crate::list::{self, Lists, Values};
use crate::named::Named;
use crate::operator::Operator;
use crate::phase::Phase;
use crate::proxy::{ProxyPolicy, ProxySettings};
use crate::spec::{
    Action, ClusterProxyRuleGroupSpec, DefaultActions, EgressProxySpec, ProxyConfigurationSpec,
    ProxyListSpec, ProxyRuleGroupSpec, RuleMode, RuleSpec,
};

/// Version of the serialized [`PolicyDocument`] format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Most values a policy's conditions may hold with their lists expanded (a
/// list counts once for every condition that names it): what bounds the
/// memory a policy can make its compiler take, whatever refers to what.
pub const MAX_VALUES: usize = 2_000_000;

/// The serialized compiled policy: what the operator writes into the ConfigMap
/// and the gateway loads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// `sha256:<hex>` of the document with this field empty.
    pub hash: String,
    /// Name of the `ProxyConfiguration`.
    pub configuration: String,
    /// Defaults per phase.
    pub default_actions: DefaultActions,
    /// The referenced groups, in priority order.
    pub rule_groups: Vec<Named<ProxyRuleGroupSpec>>,
    /// The lists the groups' conditions name, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<Named<ProxyListSpec>>,
    /// The `ClusterProxyRuleGroup`s that apply to the proxy, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline: Vec<Named<ProxyRuleGroupSpec>>,
    /// The `ClusterProxyList`s the baseline's conditions name, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_lists: Vec<Named<ProxyListSpec>>,
    /// Settings of the proxy the policy is for.
    pub proxy: ProxySettings,
}

impl PolicyDocument {
    fn content_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        // Struct fields serialize in declaration order and the specs hold no
        // hash maps, so the bytes (and the hash) are stable.
        crate::parts::sha256(&serde_json::to_vec(&unhashed).unwrap_or_default())
    }
}

/// A validated policy with its lookup tables, ready to evaluate requests.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    document: PolicyDocument,
    tables: [PhaseTable; 3],
    proxy: ProxyPolicy,
    /// Some rule is in monitor mode.
    monitors: bool,
}

/// What a configuration may refer to: the rule groups and lists of its
/// namespace, and the cluster's baseline for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Available<'a> {
    /// `ProxyRuleGroup`s.
    pub groups: &'a [Named<ProxyRuleGroupSpec>],
    /// `ProxyList`s.
    pub lists: &'a [Named<ProxyListSpec>],
    /// The `ClusterProxyRuleGroup`s that select the proxy's namespace (their
    /// rules, see [`crate::spec::ClusterProxyRuleGroupSpec::group`]), in name order.
    pub baseline: &'a [Named<ProxyRuleGroupSpec>],
    /// `ClusterProxyList`s.
    pub cluster_lists: &'a [Named<ProxyListSpec>],
}

impl<'a> Available<'a> {
    /// Rule groups only.
    pub fn groups(groups: &'a [Named<ProxyRuleGroupSpec>]) -> Available<'a> {
        Available {
            groups,
            ..Available::default()
        }
    }
}

/// Where a rule group stands: in a namespace, or in the cluster's baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Namespaced,
    Baseline,
}

/// The name a baseline group's rules show in decision lines and metrics:
/// its kind and name, which no namespaced group can take (names have no `/`).
fn baseline_log_name(group: &Named<ProxyRuleGroupSpec>) -> String {
    format!("ClusterProxyRuleGroup/{}", group.log_name())
}

/// Compiles a configuration with the rule groups and lists available in its
/// namespace, for a proxy with default settings (see [`ProxySettings::default`]).
pub fn compile(
    config: &Named<ProxyConfigurationSpec>,
    available: Available<'_>,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    compile_with_settings(config, available, ProxySettings::default())
}

/// Compiles the configuration an `EgressProxy` refers to, with its settings.
pub fn compile_for_proxy(
    proxy: &Named<EgressProxySpec>,
    config: &Named<ProxyConfigurationSpec>,
    available: Available<'_>,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    let wanted = &proxy.spec.configuration_ref.name;
    if *wanted != config.name {
        return Err(vec![CompileError::new(
            "configurationRef.name",
            format!(
                "proxy {:?} refers to configuration {wanted:?}, not {:?}",
                proxy.name, config.name
            ),
        )]);
    }
    compile_with_settings(
        config,
        available,
        ProxySettings::from_spec(&proxy.name, &proxy.spec),
    )
}

fn compile_with_settings(
    config: &Named<ProxyConfigurationSpec>,
    namespace: Available<'_>,
    settings: ProxySettings,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    let mut errors = Vec::new();
    let available: HashMap<&str, &Named<ProxyRuleGroupSpec>> = namespace
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g))
        .collect();
    let lists = list::by_name(namespace.lists);
    let cluster_lists = list::by_name(namespace.cluster_lists);
    let mut listed: HashMap<&str, usize> = HashMap::new();
    let mut selected = Vec::new();
    for (i, reference) in config.spec.rule_groups.iter().enumerate() {
        let path = format!("ruleGroups[{i}].name");
        if let Some(first) = listed.insert(&reference.name, i) {
            errors.push(CompileError::new(
                path,
                format!(
                    "rule group {:?} is listed twice (also at ruleGroups[{first}])",
                    reference.name
                ),
            ));
            continue;
        }
        match available.get(reference.name.as_str()) {
            Some(group) => selected.push((*group).clone()),
            None => errors.push(CompileError::new(
                path,
                format!(
                    "rule group {:?} not found (a ProxyRuleGroup in the configuration's namespace)",
                    reference.name
                ),
            )),
        }
    }
    let document = PolicyDocument {
        format_version: FORMAT_VERSION,
        hash: String::new(),
        configuration: config.name.clone(),
        default_actions: config.spec.default_actions,
        lists: lists_named_by(&selected, &lists),
        rule_groups: selected,
        baseline: namespace.baseline.to_vec(),
        baseline_lists: lists_named_by(namespace.baseline, &cluster_lists),
        proxy: settings,
    };
    // With reference errors the group positions no longer match the
    // configuration's list, so the groups are checked one by one for their paths.
    if !errors.is_empty() {
        for (i, reference) in config.spec.rule_groups.iter().enumerate() {
            if let Some(group) = available.get(reference.name.as_str())
                && listed.get(reference.name.as_str()) == Some(&i)
                && let Err(group_errors) = compile_group(
                    &format!("ruleGroups[{i}]."),
                    &group.spec,
                    group.log_name(),
                    Some(&lists),
                    Standing::Namespaced,
                )
            {
                errors.extend(group_errors);
            }
        }
        for (i, group) in namespace.baseline.iter().enumerate() {
            if let Err(group_errors) = compile_group(
                &format!("baseline[{i}]."),
                &group.spec,
                &baseline_log_name(group),
                Some(&cluster_lists),
                Standing::Baseline,
            ) {
                errors.extend(group_errors);
            }
        }
        if let Err(proxy_errors) = ProxyPolicy::compile(document.proxy.clone()) {
            errors.extend(proxy_errors);
        }
        return Err(errors);
    }
    let mut document = document;
    document.hash = document.content_hash();
    CompiledPolicy::from_document(document)
}

/// How many values the groups' conditions hold with their lists expanded.
fn expanded_values<'a>(
    groups: impl IntoIterator<Item = &'a ProxyRuleGroupSpec>,
    lists: &Lists,
) -> usize {
    groups
        .into_iter()
        .flat_map(|group| group.rules.all())
        .flat_map(|rule| &rule.conditions)
        .map(|condition| {
            let listed = condition
                .values_from
                .iter()
                .filter_map(|reference| lists.get(reference.list.as_str()))
                .map(|list| list.spec.entries.len());
            condition.values.len() + listed.sum::<usize>()
        })
        .sum()
}

fn too_many_values(path: &str, values: usize) -> CompileError {
    CompileError::new(
        path,
        format!(
            "the conditions hold {values} values with their lists expanded (a list counts once for every condition that names it), more than the {MAX_VALUES} a policy may hold: name a large list from fewer conditions"
        ),
    )
}

/// The lists the groups' conditions name that are available, by name.
fn lists_named_by(
    groups: &[Named<ProxyRuleGroupSpec>],
    lists: &Lists,
) -> Vec<Named<ProxyListSpec>> {
    list::named_lists(groups, |name| lists.get(name).map(|l| l.spec.clone()))
}

/// The baseline of a proxy whose namespace has `labels`: the cluster's
/// groups (name, spec, AWS name) that select it, as rule groups in name
/// order (the order their rules are evaluated in).
pub fn select_baseline<'a>(
    groups: impl IntoIterator<Item = (&'a str, &'a ClusterProxyRuleGroupSpec, Option<&'a str>)>,
    labels: &BTreeMap<String, String>,
) -> Vec<Named<ProxyRuleGroupSpec>> {
    let mut selected: Vec<Named<ProxyRuleGroupSpec>> = groups
        .into_iter()
        .filter(|(_, spec, _)| spec.selects(labels))
        .map(|(name, spec, aws_name)| {
            Named::new(name, spec.group()).with_log_name(aws_name.map(str::to_owned))
        })
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    selected
}

/// Checks one rule group on its own; paths start at its spec (`rules.preDNS[0]...`).
/// The lists its conditions name are not looked up.
pub fn validate_rule_group(spec: &ProxyRuleGroupSpec) -> Vec<CompileError> {
    validate_group(spec, None, Standing::Namespaced)
}

/// Checks one rule group with the lists available to it: a list it names
/// that is missing, or whose type does not fit the condition, is an error.
pub fn validate_rule_group_with(
    spec: &ProxyRuleGroupSpec,
    lists: &[Named<ProxyListSpec>],
) -> Vec<CompileError> {
    validate_group(spec, Some(&list::by_name(lists)), Standing::Namespaced)
}

/// Checks a `ClusterProxyRuleGroup` with the `ClusterProxyList`s; paths
/// start at its spec.
pub fn validate_cluster_rule_group(
    spec: &ClusterProxyRuleGroupSpec,
    cluster_lists: &[Named<ProxyListSpec>],
) -> Vec<CompileError> {
    validate_group(
        &spec.group(),
        Some(&list::by_name(cluster_lists)),
        Standing::Baseline,
    )
}

/// The errors of one group checked on its own (paths start at its spec).
fn validate_group(
    spec: &ProxyRuleGroupSpec,
    lists: Option<&Lists>,
    standing: Standing,
) -> Vec<CompileError> {
    compile_group("", spec, "", lists, standing)
        .err()
        .unwrap_or_default()
}

impl CompiledPolicy {
    fn from_document(document: PolicyDocument) -> Result<CompiledPolicy, Vec<CompileError>> {
        let mut errors = Vec::new();
        let baseline_lists = list::by_name(&document.baseline_lists);
        let lists = list::by_name(&document.lists);
        let values = expanded_values(document.baseline.iter().map(|g| &g.spec), &baseline_lists)
            + expanded_values(document.rule_groups.iter().map(|g| &g.spec), &lists);
        if values > MAX_VALUES {
            return Err(vec![too_many_values("ruleGroups", values)]);
        }
        // Per phase: the baseline's rules, the namespace's groups in
        // priority order, then the baseline's overridable Allow rules.
        let mut phases: [Vec<CompiledRule>; 3] = Default::default();
        let mut overridable: [Vec<CompiledRule>; 3] = Default::default();
        for (i, group) in document.baseline.iter().enumerate() {
            match compile_group(
                &format!("baseline[{i}]."),
                &group.spec,
                &baseline_log_name(group),
                Some(&baseline_lists),
                Standing::Baseline,
            ) {
                Ok(rules) => {
                    for (p, mine) in rules.into_iter().enumerate() {
                        let specs = group.spec.rules.by_phase()[p];
                        for (rule, spec) in mine.into_iter().zip(specs) {
                            if spec.overridable {
                                overridable[p].push(rule);
                            } else {
                                phases[p].push(rule);
                            }
                        }
                    }
                }
                Err(group_errors) => errors.extend(group_errors),
            }
        }
        for (i, group) in document.rule_groups.iter().enumerate() {
            match compile_group(
                &format!("ruleGroups[{i}]."),
                &group.spec,
                group.log_name(),
                Some(&lists),
                Standing::Namespaced,
            ) {
                Ok(rules) => {
                    for (all, mut mine) in phases.iter_mut().zip(rules) {
                        all.append(&mut mine);
                    }
                }
                Err(group_errors) => errors.extend(group_errors),
            }
        }
        for (all, mut last) in phases.iter_mut().zip(overridable) {
            all.append(&mut last);
        }
        let proxy = ProxyPolicy::compile(document.proxy.clone())
            .map_err(|e| errors.extend(e))
            .ok();
        match proxy {
            Some(proxy) if errors.is_empty() => Ok(CompiledPolicy {
                monitors: phases.iter().flatten().any(|rule| rule.monitor),
                tables: phases.map(PhaseTable::new),
                document,
                proxy,
            }),
            _ => Err(errors),
        }
    }

    /// Reads a serialized policy, checking its version and hash, and compiles it.
    pub fn from_json(json: &str) -> Result<CompiledPolicy, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let version: Version =
            serde_json::from_str(json).map_err(|e| Error::Malformed(e.to_string()))?;
        if version.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let mut reader = serde_json::Deserializer::from_str(json);
        let document: PolicyDocument = serde_path_to_error::deserialize(&mut reader)
            .map_err(|e| Error::Malformed(format!("{}: {}", e.path(), e.inner())))?;
        let actual = document.content_hash();
        if actual != document.hash {
            return Err(Error::HashMismatch {
                recorded: document.hash,
                actual,
            });
        }
        CompiledPolicy::from_document(document).map_err(Error::Invalid)
    }

    /// The serialized form (compact JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.document).unwrap_or_default()
    }

    /// The serialized form, indented for people.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.document).unwrap_or_default()
    }

    /// The document this policy was compiled from.
    pub fn document(&self) -> &PolicyDocument {
        &self.document
    }

    /// `sha256:<hex>` content hash.
    pub fn hash(&self) -> &str {
        &self.document.hash
    }

    /// The serialized format version.
    pub fn format_version(&self) -> u32 {
        self.document.format_version
    }

    /// Name of the `ProxyConfiguration`.
    pub fn configuration(&self) -> &str {
        &self.document.configuration
    }

    /// The proxy settings.
    pub fn proxy(&self) -> &ProxyPolicy {
        &self.proxy
    }

    /// Number of rules in a phase.
    pub fn rule_count(&self, phase: Phase) -> usize {
        self.tables[phase.index()].len()
    }

    /// The default action of a phase.
    pub fn default_action(&self, phase: Phase) -> Action {
        let d = &self.document.default_actions;
        match phase {
            Phase::PreDns => d.pre_dns,
            Phase::PreRequest => d.pre_request,
            Phase::PostResponse => d.post_response,
        }
    }

    /// Evaluates one phase into `decision` (which accumulates across phases).
    pub fn evaluate_phase(
        &self,
        phase: Phase,
        ctx: &RequestContext<'_>,
        decision: &mut Decision,
    ) -> Verdict {
        engine::evaluate_phase(
            &self.tables[phase.index()],
            self.default_action(phase),
            phase,
            ctx,
            decision,
            self.monitors,
        )
    }

    /// Whether some rule is in monitor mode.
    pub fn monitors(&self) -> bool {
        self.monitors
    }

    /// Evaluates the phases in order with one context, stopping at a `Deny`.
    /// The gateway calls [`Self::evaluate_phase`] as the request progresses; this
    /// is for tools and tests that know everything up front.
    pub fn evaluate(&self, ctx: &RequestContext<'_>) -> Decision {
        let mut decision = Decision::default();
        for phase in Phase::ALL {
            if self.evaluate_phase(phase, ctx, &mut decision) == Verdict::Deny {
                break;
            }
        }
        decision
    }
}

/// Compiles the rules of one group, per phase; `prefix` starts every error path.
/// Without `lists`, conditions are checked but not built (their lists unknown).
fn compile_group(
    prefix: &str,
    spec: &ProxyRuleGroupSpec,
    group_name: &str,
    lists: Option<&Lists>,
    standing: Standing,
) -> Result<[Vec<CompiledRule>; 3], Vec<CompileError>> {
    if let Some(lists) = lists {
        let values = expanded_values([spec], lists);
        if values > MAX_VALUES {
            return Err(vec![too_many_values(&format!("{prefix}rules"), values)]);
        }
    }
    let group: Arc<str> = Arc::from(group_name);
    let mut errors = Vec::new();
    let mut first_use: HashMap<&str, String> = HashMap::new();
    let mut phases: [Vec<CompiledRule>; 3] = Default::default();
    let per_phase = [
        (Phase::PreDns, &spec.rules.pre_dns),
        (Phase::PreRequest, &spec.rules.pre_request),
        (Phase::PostResponse, &spec.rules.post_response),
    ];
    let group_monitors = spec.mode == Some(RuleMode::Monitor);
    for (phase, rules) in per_phase {
        for (j, rule) in rules.iter().enumerate() {
            let path = format!("{prefix}rules.{}[{j}]", phase.field());
            if rule.overridable && standing == Standing::Namespaced {
                errors.push(CompileError::new(
                    format!("{path}.overridable"),
                    "only rules of a ClusterProxyRuleGroup may be overridable: a namespace's own rules are already below the baseline",
                ));
            } else if rule.overridable && rule.action != Action::Allow {
                errors.push(CompileError::new(
                    format!("{path}.overridable"),
                    format!(
                        "only an Allow rule may be overridable: the baseline's {} rules always apply",
                        rule.action.as_str()
                    ),
                ));
            }
            if group_monitors && rule.mode == Some(RuleMode::Enforce) {
                errors.push(CompileError::new(
                    format!("{path}.mode"),
                    "the group is in Monitor mode, so none of its rules enforces; \
                     move the rule to a group in Enforce mode or drop its mode",
                ));
            }
            if !is_rule_name(&rule.name) {
                errors.push(CompileError::new(
                    format!("{path}.name"),
                    format!(
                        "rule name {:?} must be 1 to 128 letters, digits or '-'",
                        rule.name
                    ),
                ));
            } else if let Some(first) = first_use.get(rule.name.as_str()) {
                errors.push(CompileError::new(
                    format!("{path}.name"),
                    format!(
                        "rule name {:?} is already used in this group at {first}",
                        rule.name
                    ),
                ));
            } else {
                first_use.insert(&rule.name, path.clone());
            }
            match compile_rule(&path, phase, rule, lists, standing) {
                Ok(conditions) => phases[phase.index()].push(CompiledRule {
                    name: Arc::from(rule.name.as_str()),
                    group: group.clone(),
                    action: rule.action,
                    monitor: group_monitors || rule.mode == Some(RuleMode::Monitor),
                    conditions,
                }),
                Err(rule_errors) => errors.extend(rule_errors),
            }
        }
    }
    if errors.is_empty() {
        Ok(phases)
    } else {
        Err(errors)
    }
}

fn compile_rule(
    path: &str,
    phase: Phase,
    rule: &RuleSpec,
    lists: Option<&Lists>,
    standing: Standing,
) -> Result<Box<[Condition]>, Vec<CompileError>> {
    let list_kind = match standing {
        Standing::Namespaced => list::NAMESPACED,
        Standing::Baseline => list::CLUSTER,
    };
    let mut errors = Vec::new();
    let mut conditions = Vec::new();
    for (k, condition) in rule.conditions.iter().enumerate() {
        let path = format!("{path}.conditions[{k}]");
        let key = ConditionKey::parse(&condition.key)
            .map_err(|e| errors.push(CompileError::new(format!("{path}.key"), e.to_string())))
            .ok();
        let operator = Operator::parse(&condition.operator);
        if operator.is_none() {
            errors.push(CompileError::new(
                format!("{path}.operator"),
                match Operator::closest(&condition.operator) {
                    Some(close) => format!(
                        "unknown operator {:?}; did you mean {close:?}? (operators: {})",
                        condition.operator,
                        Operator::NAMES.join(", ")
                    ),
                    None => format!(
                        "unknown operator {:?}; expected one of {}",
                        condition.operator,
                        Operator::NAMES.join(", ")
                    ),
                },
            ));
        }
        let (Some(key), Some(operator)) = (key, operator) else {
            continue;
        };
        if !operator.fits(key.value_type()) {
            errors.push(CompileError::new(
                format!("{path}.operator"),
                format!(
                    "operator {operator} does not fit key {key}, whose value is a {}; use one of {}",
                    key.value_type().as_str(),
                    Operator::fitting(key.value_type()).join(", ")
                ),
            ));
            continue;
        }
        if key.first_phase() > phase {
            errors.push(CompileError::new(
                format!("{path}.key"),
                format!(
                    "key {key} has no value in phase {} (it is known from {} on), so this condition could never match",
                    phase.field(),
                    key.first_phase().field()
                ),
            ));
            continue;
        }
        if condition.values.is_empty() && condition.values_from.is_empty() {
            errors.push(CompileError::new(
                format!("{path}.values"),
                "values must not be empty (give values, valuesFrom or both)",
            ));
            continue;
        }
        let at = |e: CompileError| CompileError::new(format!("{path}.{}", e.path), e.message);
        // Without lists (a group checked on its own) only the inline values
        // are checked. A list with no entries gives a condition no values:
        // a positive one never holds, a negated one always does.
        let values = match lists {
            Some(lists) => match Values::gather(condition, &key, operator, lists, list_kind) {
                Ok(values) => values,
                Err(list_errors) => {
                    errors.extend(list_errors.into_iter().map(at));
                    continue;
                }
            },
            None => Values::inline(condition),
        };
        match Condition::build(key, operator, &values.all) {
            Ok(built) => conditions.push(built),
            Err(bad) => errors.extend(values.errors(bad).into_iter().map(at)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    conditions.sort_by_key(Condition::cost);
    Ok(conditions.into_boxed_slice())
}

/// `^[a-zA-Z0-9-]{1,128}$`, as the cloud API requires.
fn is_rule_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}
