//! Builders that keep the tests' policies short.
#![allow(dead_code)]

use egress_policy::spec::{
    ConditionSpec, DefaultActions, PhaseRules, ProxyConfigurationSpec, ProxyRuleGroupSpec,
    RuleGroupRef, RuleSpec,
};
use egress_policy::{Action, Available, CompiledPolicy, Named, compile};

pub type Cond<'a> = (&'a str, &'a str, &'a [&'a str]);

pub fn rule(name: &str, action: Action, conditions: &[Cond<'_>]) -> RuleSpec {
    RuleSpec {
        name: name.to_owned(),
        description: None,
        action,
        mode: None,
        overridable: false,
        conditions: conditions
            .iter()
            .map(|(key, operator, values)| ConditionSpec {
                key: key.to_string(),
                operator: operator.to_string(),
                values: values.iter().map(|v| v.to_string()).collect(),
                values_from: Vec::new(),
            })
            .collect(),
    }
}

pub fn group(
    name: &str,
    pre_dns: Vec<RuleSpec>,
    pre_request: Vec<RuleSpec>,
    post_response: Vec<RuleSpec>,
) -> Named<ProxyRuleGroupSpec> {
    Named::new(
        name,
        ProxyRuleGroupSpec {
            description: None,
            mode: None,
            rules: PhaseRules {
                pre_dns,
                pre_request,
                post_response,
            },
        },
    )
}

pub fn config(name: &str, groups: &[&str], defaults: [Action; 3]) -> Named<ProxyConfigurationSpec> {
    Named::new(
        name,
        ProxyConfigurationSpec {
            rule_groups: groups
                .iter()
                .map(|g| RuleGroupRef {
                    name: g.to_string(),
                })
                .collect(),
            default_actions: DefaultActions {
                pre_dns: defaults[0],
                pre_request: defaults[1],
                post_response: defaults[2],
            },
        },
    )
}

pub const ALLOW_ALL: [Action; 3] = [Action::Allow, Action::Allow, Action::Allow];

/// Compiles groups in the order given, with the given defaults.
pub fn policy(groups: Vec<Named<ProxyRuleGroupSpec>>, defaults: [Action; 3]) -> CompiledPolicy {
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    compile(
        &config("test", &names, defaults),
        Available::groups(&groups),
    )
    .expect("valid policy")
}

/// Compile errors as `path: message` lines.
pub fn errors_of(
    config: &Named<ProxyConfigurationSpec>,
    groups: &[Named<ProxyRuleGroupSpec>],
) -> Vec<String> {
    match compile(config, Available::groups(groups)) {
        Ok(_) => panic!("expected compile errors"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}
