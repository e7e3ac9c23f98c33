//! The cluster's baseline (`ClusterProxyRuleGroup`): its rules come before
//! every namespaced group, so its Deny cannot be overridden; its overridable
//! Allow rules come after them; it applies to the namespaces it selects, and
//! decision lines name it by kind.

use egress_policy::{Action, CompiledPolicy, Domain, Phase, RequestContext, compile_documents};

const BASELINE: &str = r#"
apiVersion: egress.dev/v1alpha1
kind: ClusterProxyRuleGroup
metadata: {name: platform}
spec:
  SELECTOR
  rules:
    preDNS:
      - name: no-exfiltration
        action: Deny
        conditions: [{key: "request:DestinationDomain", operator: StringEquals, valuesFrom: [{list: exfiltration}]}]
      - name: registries
        action: Allow
        overridable: true
        conditions: [{key: "request:DestinationDomain", operator: StringEquals, values: [.registry.example]}]
---
apiVersion: egress.dev/v1alpha1
kind: ClusterProxyList
metadata: {name: exfiltration}
spec:
  type: Domains
  entries: [.paste.example, drop.example.org]
"#;

/// A tenant's namespace `team`: its configuration (PreDNS default
/// `default`) and one group of PreDNS rules.
fn tenant(default: &str, rules: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Namespace
metadata: {{name: team, labels: {{tier: tenant}}}}
---
apiVersion: egress.dev/v1alpha1
kind: ProxyConfiguration
metadata: {{name: c, namespace: team}}
spec:
  ruleGroups: [{{name: own}}]
  defaultActions: {{preDNS: {default}, preRequest: Allow, postResponse: Allow}}
---
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {{name: own, namespace: team}}
spec:
  rules:
    preDNS:
{rules}
"#
    )
}

const ALLOW_ALL: &str = "      - {name: everything, action: Allow}";
const DENY_REGISTRY: &str = "      - {name: not-that-registry, action: Deny, conditions: [{key: \"request:DestinationDomain\", operator: StringEquals, values: [npm.registry.example]}]}";

fn policy(selector: &str, default: &str, rules: &str) -> CompiledPolicy {
    let yaml = BASELINE.replace("SELECTOR", selector) + &tenant(default, rules);
    compile_documents(&yaml, None).expect("compiles")
}

fn decide(policy: &CompiledPolicy, domain: &str) -> (Action, String, String) {
    let ctx = RequestContext {
        destination_domain: Some(Domain::new(domain)),
        destination_port: Some(443),
        ..Default::default()
    };
    let mut decision = Default::default();
    policy.evaluate_phase(Phase::PreDns, &ctx, &mut decision);
    let egress_policy::Decision {
        final_action,
        final_rule_name,
        final_rule_group_name,
        ..
    } = decision;
    (
        final_action,
        final_rule_group_name.to_string(),
        final_rule_name.to_string(),
    )
}

#[test]
fn a_baseline_deny_comes_before_every_namespaced_rule() {
    let policy = policy("", "Allow", ALLOW_ALL);
    assert_eq!(
        decide(&policy, "www.paste.example"),
        (
            Action::Deny,
            "ClusterProxyRuleGroup/platform".into(),
            "no-exfiltration".into()
        )
    );
    // What the baseline does not decide, the tenant's rules do.
    assert_eq!(
        decide(&policy, "example.com"),
        (Action::Allow, "own".into(), "everything".into())
    );
}

#[test]
fn an_overridable_allow_applies_when_the_namespace_does_not_decide() {
    // Default deny in the namespace: the baseline's overridable Allow lets
    // the registries through before the default.
    let policy = policy("", "Deny", DENY_REGISTRY);
    assert_eq!(
        decide(&policy, "pypi.registry.example"),
        (
            Action::Allow,
            "ClusterProxyRuleGroup/platform".into(),
            "registries".into()
        )
    );
    // The tenant may refuse one of them: its rules come first.
    assert_eq!(
        decide(&policy, "npm.registry.example"),
        (Action::Deny, "own".into(), "not-that-registry".into())
    );
    assert_eq!(
        decide(&policy, "example.com"),
        (Action::Deny, "default".into(), "default".into())
    );
}

#[test]
fn a_baseline_applies_to_the_namespaces_it_selects() {
    let selected = policy(
        "namespaceSelector: {matchLabels: {tier: tenant}}",
        "Allow",
        ALLOW_ALL,
    );
    assert_eq!(decide(&selected, "drop.example.org").0, Action::Deny);
    let elsewhere = policy(
        "namespaceSelector: {matchLabels: {tier: platform}}",
        "Allow",
        ALLOW_ALL,
    );
    assert_eq!(
        decide(&elsewhere, "drop.example.org"),
        (Action::Allow, "own".into(), "everything".into())
    );
    assert!(elsewhere.document().baseline.is_empty());
    // The compiled document carries the baseline and its lists, and loads again.
    let loaded = CompiledPolicy::from_json(&selected.to_json()).expect("loads");
    assert_eq!(loaded.hash(), selected.hash());
    assert_eq!(decide(&loaded, "drop.example.org").0, Action::Deny);
    assert_eq!(loaded.document().baseline_lists.len(), 1);
}

#[test]
fn overridable_is_for_the_baseline_s_allow_rules_only() {
    let errors = |yaml: String| -> Vec<String> {
        compile_documents(&yaml, None)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let namespaced = tenant(
        "Allow",
        "      - {name: mine, action: Allow, overridable: true}",
    );
    assert_eq!(
        errors(namespaced),
        [
            "ruleGroups[0].rules.preDNS[0].overridable: only rules of a ClusterProxyRuleGroup may be overridable: a namespace's own rules are already below the baseline"
        ]
    );
    let deny = BASELINE.replace("SELECTOR", "").replace(
        "action: Allow\n        overridable: true",
        "action: Deny\n        overridable: true",
    ) + &tenant("Allow", ALLOW_ALL);
    assert_eq!(
        errors(deny),
        [
            "baseline[0].rules.preDNS[1].overridable: only an Allow rule may be overridable: the baseline's Deny rules always apply"
        ]
    );
    // A baseline names cluster lists, never a namespace's.
    let namespaced_list = BASELINE.replace("SELECTOR", "").replace(
        "kind: ClusterProxyList\nmetadata: {name: exfiltration}",
        "kind: ProxyList\nmetadata: {name: exfiltration, namespace: team}",
    ) + &tenant("Allow", ALLOW_ALL);
    assert_eq!(
        errors(namespaced_list),
        [
            "baseline[0].rules.preDNS[0].conditions[0].valuesFrom[0].list: ClusterProxyList \"exfiltration\" not found (a ClusterProxyList of the cluster)"
        ]
    );
}

#[test]
fn a_namespaced_group_cannot_show_as_the_baseline() {
    // The AWS-name annotation is how imported groups keep their name in
    // decision lines; a name with a `/` (the baseline's form) is ignored.
    let yaml = BASELINE.replace("SELECTOR", "")
        + &tenant("Allow", ALLOW_ALL).replace(
            "metadata: {name: own, namespace: team}",
            "metadata: {name: own, namespace: team, annotations: {egress.dev/aws-name: ClusterProxyRuleGroup/platform}}",
        );
    let policy = compile_documents(&yaml, None).expect("compiles");
    assert_eq!(
        decide(&policy, "example.com"),
        (Action::Allow, "own".into(), "everything".into())
    );
}
