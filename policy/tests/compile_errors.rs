//! Every kind of compile error, reported all at once, each with its path.

mod common;

use common::*;
use egress_policy::spec::{EgressProxySpec, ProxyRuleGroupSpec};
use egress_policy::{
    Action, Available, Named, compile_documents, compile_for_proxy, validate_rule_group,
};

#[test]
fn every_error_of_a_configuration_at_once() {
    let good = group("good", vec![rule("ok", Action::Allow, &[])], vec![], vec![]);
    let bad = group(
        "bad",
        vec![
            rule(
                "dup",
                Action::Deny,
                &[("request:DestinationDomain", "NumericEquals", &["1"])],
            ),
            rule(
                "has space",
                Action::Deny,
                &[("request:Nope", "StringEquals", &["x"])],
            ),
            rule(
                "late-key",
                Action::Deny,
                &[("request:Http:Uri", "StringLike", &["/x*"])],
            ),
        ],
        vec![rule(
            "ips",
            Action::Deny,
            &[
                (
                    "request:DestinationIp",
                    "IpAddress",
                    &["10.0.0.0/8", "192.168.0.0/16", "10.0.0.0/33"],
                ),
                ("request:DestinationPort", "NumericLessThan", &["1o24"]),
                ("request:Http:Uri", "StringLike", &[""]),
                ("request:Time", "DateGreaterThan", &["nine o'clock"]),
                ("request:Http:Method", "StringEqualz", &["GET"]),
                ("request:Http:Method", "StringEquals", &[]),
            ],
        )],
        vec![rule("dup", Action::Deny, &[])],
    );
    let errors = errors_of(
        &config("cfg", &["good", "bad", "missing", "good"], ALLOW_ALL),
        &[good, bad],
    );
    assert_eq!(
        errors,
        [
            "ruleGroups[2].name: rule group \"missing\" not found (a ProxyRuleGroup in the configuration's namespace)",
            "ruleGroups[3].name: rule group \"good\" is listed twice (also at ruleGroups[0])",
            "ruleGroups[1].rules.preDNS[0].conditions[0].operator: operator NumericEquals does not fit key request:DestinationDomain, whose value is a domain; use one of StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike, StringNotLike",
            "ruleGroups[1].rules.preDNS[1].name: rule name \"has space\" must be 1 to 128 letters, digits or '-'",
            "ruleGroups[1].rules.preDNS[1].conditions[0].key: unknown condition key \"request:Nope\"",
            "ruleGroups[1].rules.preDNS[2].conditions[0].key: key request:Http:Uri has no value in phase preDNS (it is known from preRequest on), so this condition could never match",
            "ruleGroups[1].rules.preRequest[0].conditions[0].values[2]: \"10.0.0.0/33\" is not a CIDR",
            "ruleGroups[1].rules.preRequest[0].conditions[1].values[0]: \"1o24\" is not a number (expected an integer or a decimal like 2.5)",
            "ruleGroups[1].rules.preRequest[0].conditions[2].values[0]: an empty pattern only matches the empty string; use StringEquals \"\" for that",
            "ruleGroups[1].rules.preRequest[0].conditions[3].values[0]: \"nine o'clock\" is not a time (expected an instant like 2026-01-31T18:00:00Z, 2026-01-31 or epoch seconds like 1769882400, or a time of day like 09:00, 09:00:30 or 17:30+02:00)",
            "ruleGroups[1].rules.preRequest[0].conditions[4].operator: unknown operator \"StringEqualz\"; did you mean \"StringEquals\"? (operators: StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike, StringNotLike, NumericEquals, NumericNotEquals, NumericLessThan, NumericLessThanEquals, NumericGreaterThan, NumericGreaterThanEquals, IpAddress, NotIpAddress, DateLessThan, DateGreaterThan, DateEquals, DateNotEquals, DateLessThanEquals, DateGreaterThanEquals)",
            "ruleGroups[1].rules.preRequest[0].conditions[5].values: values must not be empty (give values, valuesFrom or both)",
            "ruleGroups[1].rules.postResponse[0].name: rule name \"dup\" is already used in this group at ruleGroups[1].rules.preDNS[0]",
        ]
    );
}

#[test]
fn the_issue_example_path() {
    let groups = vec![
        group("a", vec![], vec![], vec![]),
        group(
            "b",
            vec![],
            vec![
                rule("r0", Action::Allow, &[]),
                rule("r1", Action::Allow, &[]),
                rule("r2", Action::Allow, &[]),
                rule(
                    "r3",
                    Action::Deny,
                    &[(
                        "request:SourceIp",
                        "IpAddress",
                        &["10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/33"],
                    )],
                ),
            ],
            vec![],
        ),
    ];
    assert_eq!(
        errors_of(&config("c", &["a", "b"], ALLOW_ALL), &groups),
        [
            "ruleGroups[1].rules.preRequest[3].conditions[0].values[2]: \"10.0.0.0/33\" is not a CIDR"
        ]
    );
}

#[test]
fn bad_domains_globs_and_header_keys() {
    let groups = vec![group(
        "g",
        vec![rule(
            "r",
            Action::Deny,
            &[
                (
                    "request:DestinationDomain",
                    "StringEquals",
                    &["exa mple.com", ".ok.com"],
                ),
                (
                    "request:DestinationDomain",
                    "StringLike",
                    &["*.ok.com", "no/slash*"],
                ),
                ("request:SourcePodLabel/-bad", "StringEquals", &["x"]),
            ],
        )],
        vec![rule(
            "h",
            Action::Deny,
            &[("request:Http:Header/bad header", "StringEquals", &["x"])],
        )],
        vec![],
    )];
    assert_eq!(
        errors_of(&config("c", &["g"], ALLOW_ALL), &groups),
        [
            "ruleGroups[0].rules.preDNS[0].conditions[0].values[0]: \"exa mple.com\" is not a domain name (expected a name like example.com, or .example.com for the apex and all its subdomains)",
            "ruleGroups[0].rules.preDNS[0].conditions[1].values[1]: \"no/slash*\" is not a domain pattern (letters, digits, '-', '_', '.', and the wildcards '*' and '?')",
            "ruleGroups[0].rules.preDNS[0].conditions[2].key: \"-bad\" in key \"request:SourcePodLabel/-bad\" is not a valid Kubernetes label key",
            "ruleGroups[0].rules.preRequest[0].conditions[0].key: \"bad header\" in key \"request:Http:Header/bad header\" is not a valid HTTP header name",
        ]
    );
}

#[test]
fn response_keys_only_after_the_response() {
    let groups = vec![group(
        "g",
        vec![],
        vec![rule(
            "r",
            Action::Deny,
            &[("response:Http:StatusCode", "NumericEquals", &["404"])],
        )],
        vec![],
    )];
    let errors = errors_of(&config("c", &["g"], ALLOW_ALL), &groups);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("ruleGroups[0].rules.preRequest[0].conditions[0].key: key response:Http:StatusCode has no value in phase preRequest"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_group_alone_is_checked_with_paths_from_its_spec() {
    let spec: ProxyRuleGroupSpec = group(
        "g",
        vec![rule(
            "a",
            Action::Deny,
            &[("request:DestinationPort", "NumericEquals", &["x"])],
        )],
        vec![],
        vec![],
    )
    .spec;
    let errors: Vec<String> = validate_rule_group(&spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "rules.preDNS[0].conditions[0].values[0]: \"x\" is not a number (expected an integer or a decimal like 2.5)"
        ]
    );
}

#[test]
fn proxy_settings_errors_have_spec_paths() {
    let proxy: EgressProxySpec = serde_json::from_value(serde_json::json!({
        "configurationRef": {"name": "c"},
        "tlsInterception": {"enabled": true, "bypassDomains": ["ok.com", "bad..com"]},
        "destinations": {"allowPrivateCIDRs": ["10.0.0.0/8", "300.0.0.0/8"]}
    }))
    .expect("valid spec");
    let groups = vec![group(
        "g",
        vec![rule("bad-name!", Action::Deny, &[])],
        vec![],
        vec![],
    )];
    let errors: Vec<String> = compile_for_proxy(
        &Named::new("p", proxy.clone()),
        &config("c", &["g"], ALLOW_ALL),
        Available::groups(&groups),
    )
    .expect_err("invalid")
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        errors,
        [
            "ruleGroups[0].rules.preDNS[0].name: rule name \"bad-name!\" must be 1 to 128 letters, digits or '-'",
            "tlsInterception.bypassDomains[1]: \"bad..com\" is not a domain name (expected example.com, or .example.com for the apex and all its subdomains)",
            "destinations.allowPrivateCIDRs[1]: \"300.0.0.0/8\" is not a CIDR or IP address",
        ]
    );
    let wrong_config = compile_for_proxy(
        &Named::new("p", proxy),
        &config("other", &[], ALLOW_ALL),
        Available::default(),
    )
    .expect_err("wrong configuration");
    assert_eq!(wrong_config[0].path, "configurationRef.name");
}

#[test]
fn yaml_documents_errors() {
    let cases: &[(&str, &str)] = &[
        ("a: [unclosed", "documents: not valid YAML"),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {name: g}\nspec:\n  rules:\n    preDns: []\n",
            "documents[0] (ProxyRuleGroup \"g\").spec.rules.preDns: unknown field `preDns`, expected one of `preDNS`, `preRequest`, `postResponse`",
        ),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {name: g}\nspec:\n  rules:\n    preDNS:\n      - {name: a, action: Block}\n",
            "documents[0] (ProxyRuleGroup \"g\").spec.rules.preDNS[0].action: unknown variant `Block`, expected one of `Allow`, `Deny`, `Alert`",
        ),
        (
            "apiVersion: egress.dev/v1\nkind: ProxyRuleGroup\nmetadata: {name: g}\n",
            "documents[0] (ProxyRuleGroup \"g\").apiVersion: \"egress.dev/v1\" is not served; use egress.dev/v1alpha1",
        ),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRule\nmetadata: {name: g}\n",
            "documents[0] (ProxyRule \"g\").kind: unknown kind \"ProxyRule\"",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
            "documents: the file holds no ProxyConfiguration",
        ),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: a}\nspec: {defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: b}\nspec: {defaultActions: {preDNS: Deny, preRequest: Deny, postResponse: Deny}}\n",
            "documents: the file holds several ProxyConfiguration documents (a, b)",
        ),
        (
            // A file cut off inside the configuration must not load as an allow-all.
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata:\n  name: a\nspec:\n",
            "documents[0] (ProxyConfiguration \"a\").spec: missing field `defaultActions`; every phase needs its default",
        ),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: a}\nspec: {defaultActions: {preDNS: Deny, preRequest: Allow}}\n",
            "documents[0] (ProxyConfiguration \"a\").spec.defaultActions: missing field `postResponse`; every phase needs its default",
        ),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {name: p}\nspec: {configurationRef: {name: nope}}\n",
            "configurationRef.name: EgressProxy \"p\" refers to ProxyConfiguration \"nope\", which is not in the file",
        ),
        (
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: a, namespace: x}\nspec: {ruleGroups: [{name: g}], defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n---\napiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {name: g, namespace: y}\n",
            "ruleGroups[0].name: rule group \"g\" not found",
        ),
    ];
    for (yaml, want) in cases {
        let errors = compile_documents(yaml, None).expect_err(yaml);
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.starts_with(want), "{yaml}\n got: {text}\nwant: {want}");
    }
}

#[test]
fn a_rule_of_a_monitored_group_cannot_enforce() {
    let yaml = r#"
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {name: watched}
spec:
  mode: Monitor
  rules:
    preDNS:
      - {name: quiet, action: Deny}
      - {name: loud, action: Deny, mode: Enforce}
"#;
    let documents = egress_policy::parse_documents(yaml).expect("a rule group");
    let (_, group) = &documents.rule_groups[0];
    let errors: Vec<String> = validate_rule_group(&group.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "rules.preDNS[1].mode: the group is in Monitor mode, so none of its rules enforces; move the rule to a group in Enforce mode or drop its mode"
        ]
    );
    let unknown = egress_policy::parse_documents(&yaml.replace("mode: Monitor", "mode: Watch"));
    assert!(unknown.is_err(), "only Enforce and Monitor are modes");
}
