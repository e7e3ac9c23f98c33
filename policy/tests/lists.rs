//! Named lists (`ProxyList`): conditions take their values by name, with
//! the matching of the operator they are used with; bad lists and bad
//! references are errors with paths; a large list matches as its entries would.

use egress_policy::domain_value::DomainValue;
use egress_policy::{
    Action, CompiledPolicy, Domain, Phase, RequestContext, compile_documents, parse_documents,
};

const CONFIGURATION: &str = r#"
apiVersion: egress.dev/v1alpha1
kind: ProxyConfiguration
metadata: {name: c, namespace: team}
spec:
  ruleGroups: [{name: g}]
  defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}
"#;

/// A file with the configuration, group `g` whose one PreDNS rule is
/// `condition`, and `lists` (YAML documents).
fn file(condition: &str, lists: &str) -> String {
    format!(
        r#"{CONFIGURATION}
---
apiVersion: egress.dev/v1alpha1
kind: ProxyRuleGroup
metadata: {{name: g, namespace: team}}
spec:
  rules:
    preDNS:
      - name: listed
        action: Deny
        conditions: [{condition}]
{lists}"#
    )
}

fn list(name: &str, list_type: &str, entries: &[&str]) -> String {
    let entries: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "---\napiVersion: egress.dev/v1alpha1\nkind: ProxyList\nmetadata: {{name: {name}, namespace: team}}\nspec:\n  type: {list_type}\n  entries: [{}]\n",
        entries.join(", ")
    )
}

/// The policy of [`file`] with `condition` and `lists`, which must compile.
fn compiled(condition: &str, lists: &str) -> CompiledPolicy {
    compile_documents(&file(condition, lists), None).expect("compiles")
}

fn errors(yaml: &str) -> Vec<String> {
    compile_documents(yaml, None)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn denies(policy: &CompiledPolicy, domain: &str) -> bool {
    let ctx = RequestContext {
        destination_domain: Some(Domain::new(domain)),
        destination_port: Some(443),
        source_ip: Some("10.1.2.3".parse().expect("valid")),
        ..Default::default()
    };
    let mut decision = Default::default();
    policy.evaluate_phase(Phase::PreDns, &ctx, &mut decision);
    decision.final_action == Action::Deny
}

#[test]
fn a_condition_takes_its_values_from_lists_as_if_inline() {
    let condition = "{key: 'request:DestinationDomain', operator: StringEquals, values: [inline.example], valuesFrom: [{list: registries}, {list: more}]}";
    let lists = list(
        "registries",
        "Domains",
        &["pypi.org", ".npmjs.org", "Bücher.example"],
    ) + &list("more", "Domains", &["crates.io"]);
    let policy = compiled(condition, &lists);
    for (domain, denied) in [
        ("inline.example", true),
        ("pypi.org", true),
        ("www.pypi.org", false),
        ("npmjs.org", true),
        ("registry.npmjs.org", true),
        ("xn--bcher-kva.example", true),
        ("crates.io", true),
        ("github.com", false),
    ] {
        assert_eq!(denies(&policy, domain), denied, "{domain}");
    }
    // The compiled document carries the lists it uses, and loads again.
    let json = policy.to_json();
    let loaded = CompiledPolicy::from_json(&json).expect("loads");
    assert_eq!(loaded.hash(), policy.hash());
    assert!(denies(&loaded, "registry.npmjs.org"));
    let names: Vec<&str> = policy
        .document()
        .lists
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["more", "registries"]);
}

#[test]
fn lists_of_addresses_and_patterns() {
    let cidrs = "{key: 'request:SourceIp', operator: NotIpAddress, valuesFrom: [{list: nets}]}";
    let policy = compiled(
        cidrs,
        &list("nets", "CIDRs", &["10.1.0.0/16", "192.168.0.1"]),
    );
    // The client 10.1.2.3 is in the list: NotIpAddress does not hold.
    assert!(!denies(&policy, "example.com"));

    let patterns =
        "{key: 'request:DestinationDomain', operator: StringLike, valuesFrom: [{list: globs}]}";
    let policy = compiled(
        patterns,
        &list("globs", "Patterns", &["*.internal.example", "db?.example"]),
    );
    assert!(denies(&policy, "a.internal.example"));
    assert!(denies(&policy, "db1.example"));
    assert!(!denies(&policy, "db12.example"));
}

#[test]
fn an_empty_list_never_matches_a_positive_condition_and_always_a_negated_one() {
    let positive =
        "{key: 'request:DestinationDomain', operator: StringEquals, valuesFrom: [{list: none}]}";
    let policy = compiled(positive, &list("none", "Domains", &[]));
    assert!(!denies(&policy, "example.com"));
    let negated =
        "{key: 'request:DestinationDomain', operator: StringNotEquals, valuesFrom: [{list: none}]}";
    let policy = compiled(negated, &list("none", "Domains", &[]));
    assert!(denies(&policy, "example.com"));
}

#[test]
fn references_that_cannot_be_used_are_errors_at_their_path() {
    let path = "ruleGroups[0].rules.preDNS[0].conditions[0]";
    let missing =
        "{key: 'request:DestinationDomain', operator: StringEquals, valuesFrom: [{list: nope}]}";
    assert_eq!(
        errors(&file(missing, "")),
        [format!(
            "{path}.valuesFrom[0].list: ProxyList \"nope\" not found (a ProxyList in the rule group's namespace)"
        )]
    );
    // A list of another namespace is not found either.
    let elsewhere =
        list("nope", "Domains", &["a.example"]).replace("namespace: team", "namespace: other");
    assert_eq!(errors(&file(missing, &elsewhere)).len(), 1);

    let wrong_type =
        "{key: 'request:DestinationDomain', operator: StringLike, valuesFrom: [{list: nets}]}";
    assert_eq!(
        errors(&file(wrong_type, &list("nets", "CIDRs", &["10.0.0.0/8"]))),
        [format!(
            "{path}.valuesFrom[0].list: ProxyList \"nets\" holds CIDRs, which are for IpAddress or NotIpAddress on an address key; this condition is StringLike on request:DestinationDomain"
        )]
    );
    let neither = "{key: 'request:DestinationDomain', operator: StringEquals}";
    assert_eq!(
        errors(&file(neither, "")),
        [format!(
            "{path}.values: values must not be empty (give values, valuesFrom or both)"
        )]
    );
}

#[test]
fn a_malformed_entry_is_named_with_its_list_and_index() {
    // Checked on its own, by its type.
    let bad = list("bad", "Domains", &["ok.example", "not a domain", "x..y"]);
    let found: Vec<String> = parse_documents(&bad)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("documents[0] (ProxyList \"bad\").spec.entries[1]: \"not a domain\" is not a domain name"),
        "{found:?}"
    );
    assert!(found[1].contains(".spec.entries[2]:"), "{found:?}");

    // A list pasted from elsewhere may be wrong throughout: ten are shown,
    // then the count.
    let many: Vec<String> = (0..25).map(|i| format!("bad entry {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let found = parse_documents(&list("many", "CIDRs", &many)).expect_err("invalid");
    assert_eq!(found.len(), 11);
    assert!(
        found[10]
            .to_string()
            .ends_with("spec.entries: 25 entries are malformed; the first 10 are shown"),
        "{}",
        found[10]
    );
}

#[test]
fn a_large_domain_list_matches_as_its_entries_do() {
    // Over the size where the index asks the set itself.
    let entries: Vec<String> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                format!("host{i}.example")
            } else {
                format!(".zone{i}.example")
            }
        })
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let condition =
        "{key: 'request:DestinationDomain', operator: StringEquals, valuesFrom: [{list: big}]}";
    let policy = compiled(condition, &list("big", "Domains", &refs));
    let values: Vec<DomainValue> = entries
        .iter()
        .map(|e| DomainValue::parse(e).expect("valid"))
        .collect();
    let probes = [
        "host0.example",
        "host1.example",
        "www.host0.example",
        "zone1.example",
        "a.b.zone3.example",
        "zone2.example",
        "zone1.example.evil",
        "xzone1.example",
        "host1998.example",
        "example",
    ];
    for domain in probes {
        let want = values
            .iter()
            .any(|v| v.matches(Domain::new(domain).as_str()));
        assert_eq!(denies(&policy, domain), want, "{domain}");
    }
}

#[test]
fn a_policy_without_lists_serialises_as_before() {
    let condition =
        "{key: 'request:DestinationDomain', operator: StringEquals, values: [a.example]}";
    let policy = compiled(condition, "");
    assert!(!policy.to_json().contains("\"lists\""));
    assert!(!policy.to_json().contains("valuesFrom"));
}

#[test]
fn a_list_named_from_many_conditions_is_refused_before_it_is_built() {
    // 50,001 entries named from 40 conditions: over the 2,000,000 values a
    // policy may hold, refused without building two million set entries.
    let entries: Vec<String> = (0..50_001).map(|i| format!("h{i}.example")).collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let condition =
        "{key: 'request:DestinationDomain', operator: StringEquals, valuesFrom: [{list: big}]}";
    let conditions = vec![condition; 40].join(", ");
    let found = errors(&file(&conditions, &list("big", "Domains", &refs)));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("ruleGroups: the conditions hold 2000040 values"),
        "{found:?}"
    );
    // Named from one condition it compiles.
    compiled(condition, &list("big", "Domains", &refs));
}
