//! Moving between AWS Network Firewall Proxy and this project: what the AWS
//! CLI takes and returns (`create-proxy-rule-group --cli-input-json`,
//! `describe-proxy-rule-group`, `create-proxy-rules`,
//! `create-proxy-configuration`, `describe-proxy-configuration`) and the
//! console's CSV export, to `ProxyRuleGroup` and `ProxyConfiguration` YAML;
//! and back. AWS Network Firewall's domain list rule groups
//! (`describe-rule-group` / `create-rule-group` with a `RulesSourceList`)
//! become a `ProxyList` and the rules that use it.
//!
//! Pure: text in, text and notes out. What cannot mean the same here is a
//! [`Note`], never silently dropped; notes that would change a decision say
//! so, and the CLI exits non-zero for them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::key::ConditionKey;
use crate::objects::AWS_NAME_ANNOTATION;
use crate::operator::Operator;
use crate::spec::{API_VERSION, RuleMode};

/// Something about the import a user must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Where: file, rule, condition.
    pub at: String,
    /// What, and what to do.
    pub message: String,
    /// Whether a request could be decided differently here than on AWS.
    pub changes_decisions: bool,
}

/// What an import made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// `ProxyRuleGroup` and `ProxyConfiguration` documents, YAML.
    pub yaml: String,
    /// What the user must know.
    pub notes: Vec<Note>,
}

impl Imported {
    /// Whether a note says a decision could change.
    pub fn changes_decisions(&self) -> bool {
        self.notes.iter().any(|n| n.changes_decisions)
    }
}

/// The phases as AWS names them, in order.
const PHASES: [(&str, &str); 3] = [
    ("PreDNS", "preDNS"),
    ("PreREQUEST", "preRequest"),
    ("PostRESPONSE", "postResponse"),
];

/// A rule group read from AWS's shapes.
#[derive(Debug, Default)]
struct Group {
    name: String,
    description: Option<String>,
    /// Per phase: (insert position, order read, rule).
    rules: [Vec<(i64, usize, Value)>; 3],
}

/// A configuration read from AWS's shapes.
#[derive(Debug, Default)]
struct Configuration {
    name: String,
    description: Option<String>,
    /// (priority, order read, AWS group name).
    groups: Vec<(i64, usize, String)>,
    defaults: Map<String, Value>,
}

/// Reads `files` (name, content): AWS CLI JSON or the console's CSV
/// export (whose rule group is named after the file).
pub fn import(files: &[(String, String)]) -> Result<Imported, String> {
    let mut notes = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut configurations = Vec::new();
    let mut domain_lists = Vec::new();
    for (file, content) in files {
        let text = content.trim_start();
        if text.starts_with('{') {
            let value: Value =
                serde_json::from_str(text).map_err(|e| format!("{file}: not JSON: {e}"))?;
            match read_domain_list(file, &value, &mut notes)? {
                Some(list) => domain_lists.push(list),
                None => read_json(file, &value, &mut groups, &mut configurations, &mut notes)?,
            }
        } else if text.starts_with("rulePriority,") {
            groups.push(read_csv(file, text)?);
        } else {
            return Err(format!(
                "{file}: neither AWS CLI JSON (create-proxy-rule-group, describe-proxy-rule-group, create-proxy-rules, create-proxy-configuration, describe-proxy-configuration) , Network Firewall domain list rule groups (describe-rule-group, create-rule-group with RulesSourceList) nor the console's CSV export (rulePriority,ruleHookType,...)"
            ));
        }
    }
    let mut documents = Vec::new();
    let names: BTreeMap<String, String> = groups
        .iter()
        .map(|g| &g.name)
        .chain(domain_lists.iter().map(|l| &l.name))
        .map(|name| (name.clone(), kubernetes_name(name)))
        .collect();
    for group in &groups {
        documents.push(group_document(group, &mut notes));
    }
    for list in &domain_lists {
        documents.extend(list.documents());
    }
    for configuration in &configurations {
        documents.push(configuration_document(configuration, &names, &mut notes));
    }
    let yaml = documents
        .iter()
        .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n");
    Ok(Imported { yaml, notes })
}

/// A field by name, as AWS spells it or in the camelCase of AWS's own
/// developer guide examples.
fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn text(object: &Value, name: &str) -> Option<String> {
    field(object, name)?.as_str().map(str::to_owned)
}

fn read_json(
    file: &str,
    value: &Value,
    groups: &mut Vec<Group>,
    configurations: &mut Vec<Configuration>,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
    // describe-* responses wrap the object.
    if let Some(group) = field(value, "ProxyRuleGroup") {
        return read_json(file, group, groups, configurations, notes);
    }
    if let Some(configuration) = field(value, "ProxyConfiguration") {
        return read_json(file, configuration, groups, configurations, notes);
    }
    if field(value, "DefaultRulePhaseActions").is_some()
        || field(value, "ProxyConfigurationName").is_some()
    {
        configurations.push(read_configuration(file, value, notes)?);
        return Ok(());
    }
    let name = text(value, "ProxyRuleGroupName")
        .or_else(|| text(value, "ProxyRuleGroupArn").map(|arn| arn_name(&arn)))
        .ok_or_else(|| {
            format!("{file}: no ProxyRuleGroupName, ProxyRuleGroupArn or ProxyConfigurationName")
        })?;
    // create-proxy-rules adds rules to a group another file may define.
    let at = match groups.iter().position(|g| g.name == name) {
        Some(at) => at,
        None => {
            groups.push(Group {
                name: name.clone(),
                ..Group::default()
            });
            groups.len() - 1
        }
    };
    let group = &mut groups[at];
    if let Some(description) = text(value, "Description") {
        group.description = Some(description);
    }
    if field(value, "Tags").is_some() {
        notes.push(Note {
            at: format!("{file}: {name}"),
            message: "tags are not carried over: use Kubernetes labels".to_owned(),
            changes_decisions: false,
        });
    }
    let rules = field(value, "Rules").cloned().unwrap_or(Value::Null);
    for (p, (aws, _)) in PHASES.iter().enumerate() {
        for rule in field(&rules, aws)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let position = field(rule, "InsertPosition")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            let read = group.rules[p].len();
            group.rules[p].push((position, read, rule.clone()));
        }
    }
    Ok(())
}

/// A Network Firewall domain list rule group.
#[derive(Debug)]
struct DomainList {
    name: String,
    description: Option<String>,
    /// `ALLOWLIST`, `DENYLIST`, `REJECTLIST` or `ALERTLIST`.
    generated: String,
    targets: Vec<String>,
    /// `request:Protocol` values the target types stand for (`https` for
    /// TLS_SNI, `http` for HTTP_HOST); empty when both.
    protocols: Vec<&'static str>,
}

/// Reads a domain list rule group, if `value` is one.
fn read_domain_list(
    file: &str,
    value: &Value,
    notes: &mut Vec<Note>,
) -> Result<Option<DomainList>, String> {
    let Some(group) = field(value, "RuleGroup") else {
        return Ok(None);
    };
    let Some(source) = field(group, "RulesSource").and_then(|r| field(r, "RulesSourceList")) else {
        return Err(format!(
            "{file}: a Network Firewall rule group without RulesSource.RulesSourceList: only domain list rule groups are imported (Suricata and 5-tuple rules have no equivalent here)"
        ));
    };
    let response = field(value, "RuleGroupResponse").unwrap_or(value);
    let name = text(response, "RuleGroupName")
        .or_else(|| text(response, "RuleGroupArn").map(|arn| arn_name(&arn)))
        .ok_or_else(|| format!("{file}: no RuleGroupName or RuleGroupArn"))?;
    let at = format!("{file}: {name}");
    let generated = text(source, "GeneratedRulesType")
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !["ALLOWLIST", "DENYLIST", "REJECTLIST", "ALERTLIST"].contains(&generated.as_str()) {
        return Err(format!(
            "{at}: GeneratedRulesType {generated:?} is not ALLOWLIST, DENYLIST, REJECTLIST or ALERTLIST"
        ));
    }
    let strings = |name: &str| -> Vec<String> {
        field(source, name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut protocols = Vec::new();
    for target_type in strings("TargetTypes") {
        match target_type.to_ascii_uppercase().as_str() {
            "TLS_SNI" => protocols.push("https"),
            "HTTP_HOST" => protocols.push("http"),
            other => notes.push(Note {
                at: at.clone(),
                message: format!("target type {other:?} is not TLS_SNI or HTTP_HOST: left out"),
                changes_decisions: true,
            }),
        }
    }
    protocols.sort_unstable();
    protocols.dedup();
    if protocols.is_empty() {
        return Err(format!("{at}: no TargetTypes (TLS_SNI, HTTP_HOST)"));
    }
    if protocols.len() == 2 {
        protocols.clear();
    }
    let mut targets = Vec::new();
    for target in strings("Targets") {
        if crate::domain_value::DomainValue::parse(&target).is_some() {
            targets.push(target);
        } else {
            notes.push(Note {
                at: at.clone(),
                message: format!(
                    "target {target:?} is not a domain name (example.com or .example.com): left out"
                ),
                changes_decisions: true,
            });
        }
    }
    if field(group, "RuleVariables").is_some() {
        notes.push(Note {
            at: at.clone(),
            message: "rule variables (HOME_NET) are not carried over: the proxy judges every client it serves, so a HOME_NET narrower than them changes who the list applies to".to_owned(),
            changes_decisions: true,
        });
    }
    if generated == "ALLOWLIST" {
        notes.push(Note {
            at: at.clone(),
            message: "an ALLOWLIST refuses every other name of its target types, as on Network Firewall: its rule group refuses them in PreDNS, so list it after the groups that should still see that traffic".to_owned(),
            changes_decisions: false,
        });
    }
    Ok(Some(DomainList {
        description: text(response, "Description"),
        name,
        generated,
        targets,
        protocols,
    }))
}

impl DomainList {
    /// A `ProxyList` of the targets and a `ProxyRuleGroup` whose PreDNS
    /// rules act on them as the generated rules do.
    fn documents(&self) -> [Value; 2] {
        let list_name = kubernetes_name(&self.name);
        let listed = json!({
            "key": "request:DestinationDomain",
            "operator": "StringEquals",
            "valuesFrom": [{"list": list_name}],
        });
        let protocol = (!self.protocols.is_empty()).then(|| {
            json!({"key": "request:Protocol", "operator": "StringEquals", "values": self.protocols})
        });
        let rule = |name: &str, action: &str, conditions: Vec<Value>| {
            let conditions: Vec<Value> = protocol.iter().cloned().chain(conditions).collect();
            json!({"name": name, "action": action, "conditions": conditions})
        };
        let rules = match self.generated.as_str() {
            "ALLOWLIST" => vec![
                rule("allow-listed", "Allow", vec![listed]),
                rule("deny-unlisted", "Deny", Vec::new()),
            ],
            "ALERTLIST" => vec![rule("alert-listed", "Alert", vec![listed])],
            _ => vec![rule("deny-listed", "Deny", vec![listed])],
        };
        let mut list_spec = json!({"type": "Domains", "entries": self.targets});
        let mut group_spec = json!({"rules": {"preDNS": rules}});
        if let Some(description) = &self.description {
            list_spec["description"] = json!(description);
            group_spec["description"] = json!(description);
        }
        [
            json!({
                "apiVersion": API_VERSION,
                "kind": "ProxyList",
                "metadata": metadata(&self.name),
                "spec": list_spec,
            }),
            json!({
                "apiVersion": API_VERSION,
                "kind": "ProxyRuleGroup",
                "metadata": metadata(&self.name),
                "spec": group_spec,
            }),
        ]
    }
}

fn read_configuration(
    file: &str,
    value: &Value,
    notes: &mut Vec<Note>,
) -> Result<Configuration, String> {
    let name = text(value, "ProxyConfigurationName")
        .or_else(|| text(value, "ProxyConfigurationArn").map(|arn| arn_name(&arn)))
        .ok_or_else(|| format!("{file}: a proxy configuration needs ProxyConfigurationName"))?;
    let mut groups = Vec::new();
    // describe-proxy-configuration: RuleGroups with priorities (lower first).
    for (read, group) in field(value, "RuleGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let group_name = text(group, "ProxyRuleGroupName")
            .or_else(|| text(group, "ProxyRuleGroupArn").map(|arn| arn_name(&arn)))
            .unwrap_or_default();
        let priority = field(group, "Priority")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX);
        groups.push((priority, read, group_name));
    }
    // create-proxy-configuration: names (and ARNs) in priority order.
    let listed = field(value, "RuleGroupNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .chain(
            field(value, "RuleGroupArns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(arn_name),
        );
    for name in listed {
        if !groups.iter().any(|(_, _, g)| *g == name) {
            groups.push((i64::MAX, groups.len(), name));
        }
    }
    if field(value, "Tags").is_some() {
        notes.push(Note {
            at: format!("{file}: {name}"),
            message: "tags are not carried over: use Kubernetes labels".to_owned(),
            changes_decisions: false,
        });
    }
    Ok(Configuration {
        name,
        description: text(value, "Description"),
        groups,
        defaults: field(value, "DefaultRulePhaseActions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

/// The console's CSV export: a line per rule (with its priority), then a
/// line per condition (values comma-joined in one cell).
fn read_csv(file: &str, text: &str) -> Result<Group, String> {
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("imported")
        .to_owned();
    let mut group = Group {
        name: stem,
        ..Group::default()
    };
    let mut current: BTreeMap<(usize, String), (i64, usize)> = BTreeMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cells = csv_cells(line);
        let cell = |i: usize| cells.get(i).map(String::as_str).unwrap_or("");
        let phase = PHASES
            .iter()
            .position(|(aws, _)| aws.eq_ignore_ascii_case(cell(1)))
            .ok_or_else(|| format!("{file}:{}: unknown ruleHookType {:?}", n + 1, cell(1)))?;
        let rule_name = cell(2).to_owned();
        let key = (phase, rule_name.clone());
        if !cell(0).is_empty() || !current.contains_key(&key) {
            let position = cell(0).parse::<i64>().unwrap_or(i64::MAX);
            let read = group.rules[phase].len();
            group.rules[phase].push((
                position,
                read,
                json!({"ProxyRuleName": rule_name, "Action": cell(3), "Conditions": []}),
            ));
            current.insert(key.clone(), (position, read));
        }
        if !cell(4).is_empty() {
            let (_, read) = current[&key];
            let values: Vec<&str> = cell(6).split(',').map(str::trim).collect();
            if let Some(conditions) = group.rules[phase][read].2["Conditions"].as_array_mut() {
                conditions.push(json!({
                    "ConditionKey": cell(4),
                    "ConditionOperator": cell(5),
                    "ConditionValues": values,
                }));
            }
        }
    }
    Ok(group)
}

/// The cells of one CSV line (quotes as RFC 4180 writes them).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// The name at the end of an ARN (`.../proxy-rule-group/<name>`).
fn arn_name(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

/// An AWS name (letters, digits, `-`; capitals allowed) as a Kubernetes
/// object name (lower-case).
pub fn kubernetes_name(aws: &str) -> String {
    let lower: String = aws
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed: String = lower.trim_matches('-').chars().take(253).collect();
    if trimmed.is_empty() {
        "imported".to_owned()
    } else {
        trimmed
    }
}

fn metadata(aws_name: &str) -> Value {
    let name = kubernetes_name(aws_name);
    if name == aws_name {
        json!({"name": name})
    } else {
        json!({"name": name, "annotations": {AWS_NAME_ANNOTATION: aws_name}})
    }
}

fn group_document(group: &Group, notes: &mut Vec<Note>) -> Value {
    let mut rules = Map::new();
    for (p, (aws, ours)) in PHASES.iter().enumerate() {
        let mut listed = group.rules[p].clone();
        listed.sort_by_key(|(position, read, _)| (*position, *read));
        let converted: Vec<Value> = listed
            .iter()
            .map(|(_, _, rule)| {
                let name = text(rule, "ProxyRuleName").unwrap_or_default();
                rule_document(rule, &format!("{}: {aws} rule {name:?}", group.name), notes)
            })
            .collect();
        if !converted.is_empty() {
            rules.insert((*ours).to_owned(), Value::Array(converted));
        }
    }
    let mut spec = Map::new();
    if let Some(description) = &group.description {
        spec.insert("description".to_owned(), json!(description));
    }
    spec.insert("rules".to_owned(), Value::Object(rules));
    json!({
        "apiVersion": API_VERSION,
        "kind": "ProxyRuleGroup",
        "metadata": metadata(&group.name),
        "spec": spec,
    })
}

fn rule_document(rule: &Value, at: &str, notes: &mut Vec<Note>) -> Value {
    let action = text(rule, "Action").unwrap_or_default();
    let action = match action.to_ascii_uppercase().as_str() {
        "ALLOW" => "Allow",
        "DENY" => "Deny",
        "ALERT" => "Alert",
        _ => {
            notes.push(Note {
                at: at.to_owned(),
                message: format!("unknown action {action:?}: expected ALLOW, DENY or ALERT"),
                changes_decisions: true,
            });
            "Deny"
        }
    };
    let conditions: Vec<Value> = field(rule, "Conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| condition_document(c, &format!("{at} condition {i}"), notes))
        .collect();
    let mut document = Map::new();
    document.insert(
        "name".to_owned(),
        json!(text(rule, "ProxyRuleName").unwrap_or_default()),
    );
    if let Some(description) = text(rule, "Description") {
        document.insert("description".to_owned(), json!(description));
    }
    document.insert("action".to_owned(), json!(action));
    document.insert("conditions".to_owned(), Value::Array(conditions));
    Value::Object(document)
}

fn condition_document(condition: &Value, at: &str, notes: &mut Vec<Note>) -> Value {
    let written_key = text(condition, "ConditionKey").unwrap_or_default();
    let key = match ConditionKey::parse(&written_key) {
        Ok(key) => key.to_string(),
        Err(error) => {
            notes.push(Note {
                at: at.to_owned(),
                message: format!("{error}: kept as written, fix it before applying"),
                changes_decisions: true,
            });
            written_key.clone()
        }
    };
    let mut operator = text(condition, "ConditionOperator").unwrap_or_default();
    for (prefix, changes) in [("ForAnyValue:", false), ("ForAllValues:", true)] {
        if let Some(rest) = operator.strip_prefix(prefix) {
            notes.push(Note {
                at: at.to_owned(),
                message: if changes {
                    format!("{prefix} is not supported: a condition here holds when any value matches; written as {rest}")
                } else {
                    format!("{prefix} dropped: a condition here holds when any value matches")
                },
                changes_decisions: changes,
            });
            operator = rest.to_owned();
        }
    }
    if let Some(rest) = operator.strip_suffix("IfExists") {
        notes.push(Note {
            at: at.to_owned(),
            message: format!("IfExists dropped: here a condition on a key with no value never matches (written as {rest})"),
            changes_decisions: true,
        });
        operator = rest.to_owned();
    }
    if Operator::parse(&operator).is_none() {
        let hint = Operator::closest(&operator)
            .map(|c| format!("; did you mean {c:?}?"))
            .unwrap_or_default();
        notes.push(Note {
            at: at.to_owned(),
            message: format!(
                "unknown operator {operator:?}{hint}: kept as written, fix it before applying"
            ),
            changes_decisions: true,
        });
    }
    let values: Vec<String> = field(condition, "ConditionValues")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .collect();
    if let Some(note) = cloud_values_note(&key, &values) {
        notes.push(Note {
            at: at.to_owned(),
            message: note,
            changes_decisions: true,
        });
    }
    json!({"key": key, "operator": operator, "values": values})
}

/// What AWS-only values (VPC, endpoint and account IDs) never match here,
/// and the key that says the same.
fn cloud_values_note(key: &str, values: &[String]) -> Option<String> {
    let (pattern, meaning, instead): (fn(&str) -> bool, &str, &str) = match key {
        "request:SourceVpc" => (
            |v| v.starts_with("vpc-"),
            "the cluster's name (the gateway's --cluster-name)",
            "write the cluster name",
        ),
        "request:SourceVpce" => (
            |v| v.starts_with("vpce-"),
            "the listener, <proxy>-http or <proxy>-https",
            "write the listener",
        ),
        "request:SourceAccount" => (
            |v| v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()),
            "the client pod's namespace",
            "write the namespace, or use request:SourceNamespace",
        ),
        _ => return None,
    };
    let aws: Vec<&String> = values.iter().filter(|v| pattern(v)).collect();
    (!aws.is_empty()).then(|| format!("{key} is {meaning} here, so {aws:?} never match: {instead}"))
}

fn configuration_document(
    configuration: &Configuration,
    names: &BTreeMap<String, String>,
    notes: &mut Vec<Note>,
) -> Value {
    let mut groups = configuration.groups.clone();
    groups.sort_by_key(|(priority, read, _)| (*priority, *read));
    let rule_groups: Vec<Value> = groups
        .iter()
        .map(|(_, _, aws)| {
            let name = names.get(aws).cloned().unwrap_or_else(|| {
                notes.push(Note {
                    at: configuration.name.clone(),
                    message: format!(
                        "rule group {aws:?} is not among the imported files: import it too"
                    ),
                    changes_decisions: false,
                });
                kubernetes_name(aws)
            });
            json!({"name": name})
        })
        .collect();
    let mut defaults = Map::new();
    for (aws, ours) in PHASES {
        let action = field(&Value::Object(configuration.defaults.clone()), aws)
            .and_then(Value::as_str)
            .map(|a| a.to_ascii_uppercase());
        let action = match action.as_deref() {
            Some("ALLOW") => "Allow",
            Some("ALERT") => "Alert",
            Some("DENY") => "Deny",
            other => {
                notes.push(Note {
                    at: configuration.name.clone(),
                    message: format!(
                        "DefaultRulePhaseActions.{aws} is {}: every phase needs a default here; written as Deny",
                        other.map(|o| format!("{o:?}")).unwrap_or_else(|| "missing".to_owned())
                    ),
                    changes_decisions: true,
                });
                "Deny"
            }
        };
        defaults.insert(ours.to_owned(), json!(action));
    }
    let mut spec = Map::new();
    spec.insert("ruleGroups".to_owned(), Value::Array(rule_groups));
    spec.insert("defaultActions".to_owned(), Value::Object(defaults));
    let mut document = json!({
        "apiVersion": API_VERSION,
        "kind": "ProxyConfiguration",
        "metadata": metadata(&configuration.name),
        "spec": spec,
    });
    if let Some(description) = &configuration.description {
        document["metadata"]["annotations"]["egress.dev/description"] = json!(description);
    }
    document
}

/// The rule groups and configurations of `documents` as the AWS CLI takes
/// them: `{"CreateProxyRuleGroup": [...], "CreateProxyConfiguration": [...]}`,
/// each element a `--cli-input-json` body. Groups keep their AWS names; the
/// entries of a condition's lists are written inline. What AWS cannot hold
/// (a cluster baseline) or what the file lacks (a list a condition names)
/// is an error, never left out.
pub fn export(documents: &crate::Documents) -> Result<Value, Vec<String>> {
    let mut errors: Vec<String> = documents
        .cluster_groups
        .iter()
        .map(|g| {
            format!(
                "ClusterProxyRuleGroup {:?}: AWS has no cluster baseline; put its rules in a rule group every configuration lists first",
                g.name
            )
        })
        .collect();
    for (namespace, group) in &documents.rule_groups {
        for name in group.spec.list_names() {
            let found = documents
                .lists
                .iter()
                .any(|(ns, l)| ns == namespace && l.name == name);
            if !found {
                errors.push(format!(
                    "ProxyRuleGroup {:?} names ProxyList {name:?}, which is not in the file (namespace {namespace:?})",
                    group.name
                ));
            }
        }
    }
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(errors);
    }
    let aws_name =
        |named: &crate::Named<crate::spec::ProxyRuleGroupSpec>| named.log_name().to_owned();
    let names: BTreeMap<&str, String> = documents
        .rule_groups
        .iter()
        .map(|(_, g)| (g.name.as_str(), aws_name(g)))
        .collect();
    // AWS has no named lists: a condition's lists are written out inline.
    let values = |namespace: &str, condition: &crate::spec::ConditionSpec| -> Vec<String> {
        let mut values = condition.values.clone();
        for reference in &condition.values_from {
            let list = documents
                .lists
                .iter()
                .find(|(ns, l)| ns == namespace && l.name == reference.list);
            if let Some((_, list)) = list {
                values.extend(list.spec.entries.iter().cloned());
            }
        }
        values
    };
    let groups: Vec<Value> = documents
        .rule_groups
        .iter()
        .map(|(namespace, group)| {
            let spec = &group.spec;
            let mut rules = Map::new();
            for ((aws, _), list) in PHASES.iter().zip([
                &spec.rules.pre_dns,
                &spec.rules.pre_request,
                &spec.rules.post_response,
            ]) {
                let converted: Vec<Value> = list
                    .iter()
                    .map(|rule| {
                        // AWS has no monitor mode; ALERT is its action that
                        // logs a match and enforces nothing.
                        let monitored = [spec.mode, rule.mode].contains(&Some(RuleMode::Monitor));
                        let action = if monitored {
                            crate::Action::Alert
                        } else {
                            rule.action
                        };
                        let mut out = json!({
                            "ProxyRuleName": rule.name,
                            "Action": action.as_str().to_ascii_uppercase(),
                            "Conditions": rule.conditions.iter().map(|c| json!({
                                "ConditionKey": c.key,
                                "ConditionOperator": c.operator,
                                "ConditionValues": values(namespace, c),
                            })).collect::<Vec<_>>(),
                        });
                        if let Some(description) = &rule.description {
                            out["Description"] = json!(description);
                        }
                        out
                    })
                    .collect();
                rules.insert((*aws).to_owned(), Value::Array(converted));
            }
            let mut out = json!({"ProxyRuleGroupName": aws_name(group), "Rules": rules});
            if let Some(description) = &spec.description {
                out["Description"] = json!(description);
            }
            out
        })
        .collect();
    let configurations: Vec<Value> = documents
        .configurations
        .iter()
        .map(|(_, configuration)| {
            let spec = &configuration.spec;
            let upper = |a: crate::Action| a.as_str().to_ascii_uppercase();
            json!({
                "ProxyConfigurationName": configuration.name,
                "RuleGroupNames": spec.rule_groups.iter().map(|r| names.get(r.name.as_str()).cloned().unwrap_or_else(|| r.name.clone())).collect::<Vec<_>>(),
                "DefaultRulePhaseActions": {
                    "PreDNS": upper(spec.default_actions.pre_dns),
                    "PreREQUEST": upper(spec.default_actions.pre_request),
                    "PostRESPONSE": upper(spec.default_actions.post_response),
                },
            })
        })
        .collect();
    Ok(json!({"CreateProxyRuleGroup": groups, "CreateProxyConfiguration": configurations}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes_of(imported: &Imported) -> Vec<String> {
        imported
            .notes
            .iter()
            .map(|n| format!("{}: {}", n.at, n.message))
            .collect()
    }

    #[test]
    fn names_become_kubernetes_names_and_keep_the_aws_one() {
        assert_eq!(kubernetes_name("Web-Domain-Filter"), "web-domain-filter");
        assert_eq!(kubernetes_name("seed-rules"), "seed-rules");
        assert_eq!(metadata("seed-rules"), json!({"name": "seed-rules"}));
        assert_eq!(
            metadata("Web-Filter"),
            json!({"name": "web-filter", "annotations": {"egress.dev/aws-name": "Web-Filter"}})
        );
    }

    #[test]
    fn rules_are_ordered_by_insert_position_and_keys_made_canonical() {
        let rules = r#"{"ProxyRuleGroupName": "g", "Rules": {"PreDNS": [
            {"ProxyRuleName": "second", "Action": "DENY", "InsertPosition": 1,
             "Conditions": [{"ConditionKey": "request:destinationdomain", "ConditionOperator": "ForAnyValue:StringEquals", "ConditionValues": ["a.example"]}]},
            {"ProxyRuleName": "first", "Action": "allow", "InsertPosition": 0, "Conditions": []}
        ]}}"#;
        let imported = import(&[("rules.json".into(), rules.into())]).expect("import");
        let docs = crate::parse_documents(&imported.yaml).expect("valid YAML documents");
        let (_, group) = &docs.rule_groups[0];
        let names: Vec<&str> = group
            .spec
            .rules
            .pre_dns
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["first", "second"]);
        let condition = &group.spec.rules.pre_dns[1].conditions[0];
        assert_eq!(
            (condition.key.as_str(), condition.operator.as_str()),
            ("request:DestinationDomain", "StringEquals")
        );
        assert!(!imported.changes_decisions(), "{:?}", notes_of(&imported));
    }

    #[test]
    fn what_cannot_mean_the_same_is_reported() {
        let rules = r#"{"ProxyRuleGroup": {"ProxyRuleGroupName": "g", "Tags": [{"Key": "a", "Value": "b"}], "Rules": {"PreDNS": [
            {"ProxyRuleName": "vpcs", "Action": "DENY", "Conditions": [
                {"ConditionKey": "request:SourceVpc", "ConditionOperator": "StringEquals", "ConditionValues": ["vpc-094feb95245dfde25"]},
                {"ConditionKey": "request:SourceAccount", "ConditionOperator": "StringEquals", "ConditionValues": ["111122223333"]},
                {"ConditionKey": "response:HttpStatusCode", "ConditionOperator": "NumericGreaterThanEqual", "ConditionValues": ["500"]},
                {"ConditionKey": "request:Http:UserAgent", "ConditionOperator": "StringLikeIfExists", "ConditionValues": ["curl*"]}
            ]}
        ]}}, "UpdateToken": "x"}"#;
        let imported = import(&[("g.json".into(), rules.into())]).expect("import");
        let notes = notes_of(&imported).join("\n");
        assert!(imported.changes_decisions());
        for expected in [
            "tags are not carried over",
            "request:SourceVpc is the cluster's name (the gateway's --cluster-name) here, so [\"vpc-094feb95245dfde25\"] never match",
            "request:SourceAccount is the client pod's namespace here",
            "unknown condition key \"response:HttpStatusCode\"; did you mean \"response:Http:StatusCode\"?",
            "unknown operator \"NumericGreaterThanEqual\"; did you mean \"NumericGreaterThanEquals\"?",
            "IfExists dropped",
        ] {
            assert!(notes.contains(expected), "{expected}\n{notes}");
        }
    }

    #[test]
    fn monitored_rules_export_as_alerts() {
        let yaml = "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {name: g}\nspec:\n  rules:\n    preDNS:\n      - {name: watched, action: Deny, mode: Monitor}\n      - {name: enforced, action: Deny}\n";
        let exported = export(&crate::parse_documents(yaml).expect("documents")).expect("exports");
        let rules = &exported["CreateProxyRuleGroup"][0]["Rules"]["PreDNS"];
        assert_eq!(rules[0]["Action"], "ALERT");
        assert_eq!(rules[1]["Action"], "DENY");
        let whole = yaml
            .replace("spec:\n", "spec:\n  mode: Monitor\n")
            .replace(", mode: Monitor", "");
        let exported =
            export(&crate::parse_documents(&whole).expect("documents")).expect("exports");
        let rules = &exported["CreateProxyRuleGroup"][0]["Rules"]["PreDNS"];
        assert_eq!(
            (&rules[0]["Action"], &rules[1]["Action"]),
            (&json!("ALERT"), &json!("ALERT"))
        );
    }

    #[test]
    fn lists_export_inline_and_what_aws_cannot_hold_is_refused() {
        let yaml = "apiVersion: egress.dev/v1alpha1\nkind: ProxyList\nmetadata: {name: l}\nspec: {type: Domains, entries: [b.example]}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {name: g}\nspec:\n  rules:\n    preDNS:\n      - {name: r, action: Deny, conditions: [{key: \"request:DestinationDomain\", operator: StringEquals, values: [a.example], valuesFrom: [{list: l}]}]}\n";
        let exported = export(&crate::parse_documents(yaml).expect("documents")).expect("exports");
        assert_eq!(
            exported["CreateProxyRuleGroup"][0]["Rules"]["PreDNS"][0]["Conditions"][0]["ConditionValues"],
            json!(["a.example", "b.example"])
        );
        let missing = yaml.replace("name: l}", "name: other}");
        let errors = export(&crate::parse_documents(&missing).expect("documents"))
            .expect_err("missing list");
        assert!(
            errors[0].contains("names ProxyList \"l\", which is not in the file"),
            "{errors:?}"
        );
        let baseline = format!(
            "{yaml}---\napiVersion: egress.dev/v1alpha1\nkind: ClusterProxyRuleGroup\nmetadata: {{name: base}}\nspec: {{}}\n"
        );
        let errors =
            export(&crate::parse_documents(&baseline).expect("documents")).expect_err("baseline");
        assert!(
            errors[0].contains("AWS has no cluster baseline"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_console_csv_export_is_read() {
        // As a user published it (one line per rule, then one per condition).
        let csv = "rulePriority,ruleHookType,ruleName,ruleAction,conditionKey,conditionOperator,conditionValue\n\
0,PreDNS,test-pre-dns,ALLOW,,,\n\
,PreDNS,test-pre-dns,ALLOW,request:DestinationDomain,StringEquals,\".amazonaws.com,.aws.amazon.com,httpbin.org,google.com\"\n\
0,PreREQUEST,test-pre-req,DENY,,,\n\
,PreREQUEST,test-pre-req,DENY,request:Http:Method,StringEquals,POST\n\
0,PostRESPONSE,test-post-res,ALERT,,,\n\
,PostRESPONSE,test-post-res,ALERT,response:Http:StatusCode,NumericEquals,500\n";
        let imported = import(&[("Console-Rules.csv".into(), csv.into())]).expect("import");
        let docs = crate::parse_documents(&imported.yaml).expect("documents");
        let (_, group) = &docs.rule_groups[0];
        assert_eq!(group.name, "console-rules");
        assert_eq!(group.log_name(), "Console-Rules");
        let dns = &group.spec.rules.pre_dns[0];
        assert_eq!(
            dns.conditions[0].values,
            [
                ".amazonaws.com",
                ".aws.amazon.com",
                "httpbin.org",
                "google.com"
            ]
        );
        assert_eq!(
            group.spec.rules.post_response[0].action,
            crate::Action::Alert
        );
    }

    #[test]
    fn domain_list_rule_groups_become_a_list_and_its_rules() {
        use crate::{Action, CompiledPolicy, Decision, Domain, Phase, RequestContext};
        // As `aws network-firewall describe-rule-group` prints them.
        let described = |name: &str, generated: &str, types: &str| -> (String, String) {
            let json = format!(
                r#"{{"UpdateToken": "t", "RuleGroup": {{"RulesSource": {{"RulesSourceList": {{
                    "Targets": [".pypi.org", "github.com", "bad..name"], "TargetTypes": [{types}],
                    "GeneratedRulesType": "{generated}"}}}}}},
                  "RuleGroupResponse": {{"RuleGroupName": "{name}", "Description": "registries", "Type": "STATEFUL"}}}}"#
            );
            (format!("{name}.json"), json)
        };
        let configuration = |groups: &[&str]| -> (String, String) {
            let listed: Vec<String> = groups
                .iter()
                .enumerate()
                .map(|(i, g)| format!(r#"{{"ProxyRuleGroupName": "{g}", "Priority": {i}}}"#))
                .collect();
            let json = format!(
                r#"{{"ProxyConfigurationName": "main", "RuleGroups": [{}],
                    "DefaultRulePhaseActions": {{"PreDNS": "ALLOW", "PreREQUEST": "ALLOW", "PostRESPONSE": "ALLOW"}}}}"#,
                listed.join(", ")
            );
            ("main.json".to_owned(), json)
        };
        let decide = |policy: &CompiledPolicy, domain: &str, protocol: &'static str| {
            let ctx = RequestContext {
                destination_domain: Some(Domain::new(domain)),
                protocol: Some(protocol),
                ..Default::default()
            };
            let mut decision = Decision::default();
            policy.evaluate_phase(Phase::PreDns, &ctx, &mut decision);
            (decision.final_action, decision.final_rule_name.to_string())
        };
        let allowed = described("Allowed", "ALLOWLIST", r#""TLS_SNI""#);
        let blocked = described("Blocked", "DENYLIST", r#""TLS_SNI", "HTTP_HOST""#);

        let imported = import(&[
            allowed.clone(),
            blocked,
            configuration(&["Blocked", "Allowed"]),
        ])
        .expect("import");
        let notes = notes_of(&imported).join("\n");
        assert!(
            notes.contains("Allowed.json: Allowed: target \"bad..name\" is not a domain name"),
            "{notes}"
        );
        assert!(
            notes.contains("an ALLOWLIST refuses every other name"),
            "{notes}"
        );
        let docs = crate::parse_documents(&imported.yaml).expect("documents");
        let lists: Vec<(&str, usize)> = docs
            .lists
            .iter()
            .map(|(_, l)| (l.name.as_str(), l.spec.entries.len()))
            .collect();
        assert_eq!(lists, [("allowed", 2), ("blocked", 2)]);
        let policy = crate::compile_documents(&imported.yaml, None).expect("compiles");
        // The deny list comes first: a listed name is refused over either protocol.
        assert_eq!(
            decide(&policy, "files.pypi.org", "http"),
            (Action::Deny, "deny-listed".into())
        );

        // The allow list alone: its names over TLS pass, other TLS names are
        // refused, plain HTTP (not a target type) is left to the default.
        let imported = import(&[allowed, configuration(&["Allowed"])]).expect("import");
        let policy = crate::compile_documents(&imported.yaml, None).expect("compiles");
        for (domain, protocol, decided) in [
            ("pypi.org", "https", (Action::Allow, "allow-listed")),
            ("github.com", "https", (Action::Allow, "allow-listed")),
            ("www.github.com", "https", (Action::Deny, "deny-unlisted")),
            ("www.github.com", "http", (Action::Allow, "default")),
        ] {
            assert_eq!(
                decide(&policy, domain, protocol),
                (decided.0, decided.1.to_owned()),
                "{domain} {protocol}"
            );
        }
    }

    #[test]
    fn configurations_follow_priorities_and_need_every_default() {
        let described = r#"{"ProxyConfiguration": {"ProxyConfigurationName": "Main",
            "RuleGroups": [{"ProxyRuleGroupName": "Later", "Priority": 20}, {"ProxyRuleGroupName": "Sooner", "Priority": 10}],
            "DefaultRulePhaseActions": {"PreDNS": "ALLOW", "PreREQUEST": "DENY"}}}"#;
        let imported = import(&[("c.json".into(), described.into())]).expect("import");
        let docs = crate::parse_documents(&imported.yaml).expect("documents");
        let (_, configuration) = &docs.configurations[0];
        assert_eq!(configuration.name, "main");
        let order: Vec<&str> = configuration
            .spec
            .rule_groups
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(order, ["sooner", "later"]);
        assert_eq!(
            configuration.spec.default_actions.post_response,
            crate::Action::Deny
        );
        assert!(
            notes_of(&imported)
                .iter()
                .any(|n| n.contains("DefaultRulePhaseActions.PostRESPONSE is missing"))
        );
        assert!(imported.changes_decisions());
    }
}
