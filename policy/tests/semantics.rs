//! Phase semantics of design §2, through the public API.

mod common;

use common::*;
use egress_policy::{
    Action, Decision, Domain, HttpRequest, HttpResponse, Phase, RequestContext, RuleMatch, Verdict,
};
use http::HeaderMap;
use proptest::prelude::*;

const DOMAIN: Cond = (
    "request:DestinationDomain",
    "StringEquals",
    &["example.com"],
);
const PORT_443: Cond = ("request:DestinationPort", "NumericEquals", &["443"]);
const GET: Cond = ("request:Http:Method", "StringEquals", &["GET"]);
const FILES: Cond = ("request:Http:Uri", "StringLike", &["*/files/*"]);
const NOT_FOUND: Cond = ("response:Http:StatusCode", "NumericEquals", &["404"]);

fn request<'a>(headers: &'a HeaderMap, uri: &'a str, status: u16) -> RequestContext<'a> {
    RequestContext {
        destination_domain: Some(Domain::new("example.com")),
        destination_port: Some(443),
        destination_ip: Some("93.184.215.14".parse().expect("valid")),
        request: Some(HttpRequest {
            method: "GET",
            uri,
            headers,
        }),
        response: Some(HttpResponse { status, headers }),
        ..Default::default()
    }
}

fn matched(decision: &Decision) -> Vec<(String, String, Phase, Action)> {
    decision
        .all_matches
        .iter()
        .map(|m| (m.rule.to_string(), m.group.to_string(), m.phase, m.action))
        .collect()
}

fn m(rule: &str, group: &str, phase: Phase, action: Action) -> (String, String, Phase, Action) {
    (rule.into(), group.into(), phase, action)
}

#[test]
fn first_allow_or_deny_ends_the_phase_in_group_then_rule_order() {
    let policy = policy(
        vec![
            group(
                "first",
                vec![
                    rule("alert-all", Action::Alert, &[]),
                    rule("allow-example", Action::Allow, &[DOMAIN]),
                ],
                vec![],
                vec![],
            ),
            group(
                "second",
                vec![rule("deny-443", Action::Deny, &[PORT_443])],
                vec![],
                vec![],
            ),
        ],
        ALLOW_ALL,
    );
    let headers = HeaderMap::new();
    let decision = policy.evaluate(&request(&headers, "/", 200));
    // The group "second" Deny is never reached in PreDNS: "first" allowed.
    assert_eq!(decision.final_action, Action::Allow);
    assert_eq!(
        matched(&decision),
        [
            m("alert-all", "first", Phase::PreDns, Action::Alert),
            m("allow-example", "first", Phase::PreDns, Action::Allow),
        ]
    );
    assert_eq!(
        decision.first_alert_match.as_ref().map(|a| &*a.rule),
        Some("alert-all")
    );
    // Later phases fell to their Allow defaults: the explicit Allow stays the
    // decision the log reports.
    assert_eq!(decision.final_phase, Phase::PreDns);
    assert_eq!(&*decision.final_rule_name, "allow-example");
    assert_eq!(&*decision.final_rule_group_name, "first");
}

#[test]
fn alert_then_deny_records_both_and_denies() {
    let policy = policy(
        vec![group(
            "g",
            vec![],
            vec![
                rule("watch-files", Action::Alert, &[FILES]),
                rule("no-get", Action::Deny, &[GET]),
            ],
            vec![rule("never", Action::Deny, &[])],
        )],
        ALLOW_ALL,
    );
    let headers = HeaderMap::new();
    let decision = policy.evaluate(&request(&headers, "/a/files/b", 200));
    assert_eq!(decision.final_action, Action::Deny);
    assert_eq!(&*decision.final_rule_name, "no-get");
    assert_eq!(&*decision.final_rule_group_name, "g");
    assert_eq!(decision.final_phase, Phase::PreRequest);
    assert_eq!(
        decision.first_alert_match,
        Some(RuleMatch {
            rule: "watch-files".into(),
            group: "g".into(),
            phase: Phase::PreRequest,
            action: Action::Alert
        })
    );
    // Deny is terminal: the PostRESPONSE catch-all never ran.
    assert_eq!(
        matched(&decision),
        [
            m("watch-files", "g", Phase::PreRequest, Action::Alert),
            m("no-get", "g", Phase::PreRequest, Action::Deny),
        ]
    );
}

#[test]
fn allow_in_one_phase_then_deny_in_the_next() {
    let policy = policy(
        vec![group(
            "g",
            vec![rule("allow-example", Action::Allow, &[DOMAIN])],
            vec![rule("deny-files", Action::Deny, &[FILES])],
            vec![],
        )],
        ALLOW_ALL,
    );
    let headers = HeaderMap::new();
    let decision = policy.evaluate(&request(&headers, "/files/x", 200));
    assert_eq!(decision.final_action, Action::Deny);
    assert_eq!(&*decision.final_rule_name, "deny-files");
    assert_eq!(
        matched(&decision),
        [
            m("allow-example", "g", Phase::PreDns, Action::Allow),
            m("deny-files", "g", Phase::PreRequest, Action::Deny),
        ]
    );
}

#[test]
fn defaults_of_each_kind() {
    let headers = HeaderMap::new();
    let empty = || vec![group("g", vec![], vec![], vec![])];

    let allow = policy(empty(), ALLOW_ALL).evaluate(&request(&headers, "/", 200));
    assert_eq!(
        (allow.final_action, &*allow.final_rule_name),
        (Action::Allow, "default")
    );
    assert_eq!(
        allow.final_phase,
        Phase::PostResponse,
        "all defaults: the last phase"
    );
    assert!(allow.all_matches.is_empty());

    let deny = policy(empty(), [Action::Allow, Action::Deny, Action::Allow])
        .evaluate(&request(&headers, "/", 200));
    assert_eq!(
        (deny.final_action, deny.final_phase),
        (Action::Deny, Phase::PreRequest)
    );
    assert_eq!(&*deny.final_rule_name, "default");

    // An Alert default lets the request through, logged as an alert.
    let alert = policy(empty(), [Action::Alert, Action::Allow, Action::Alert])
        .evaluate(&request(&headers, "/", 200));
    assert_eq!(
        (alert.final_action, alert.final_phase),
        (Action::Alert, Phase::PostResponse)
    );
    assert_eq!(
        matched(&alert),
        [
            m("default", "default", Phase::PreDns, Action::Alert),
            m("default", "default", Phase::PostResponse, Action::Alert),
        ]
    );
    assert_eq!(
        alert.first_alert_match.as_ref().map(|a| a.phase),
        Some(Phase::PreDns)
    );
}

#[test]
fn an_alert_default_then_an_explicit_allow_reports_the_allow() {
    let headers = HeaderMap::new();
    let policy_a = policy(
        vec![group(
            "g",
            vec![],
            vec![rule("allow-get", Action::Allow, &[GET])],
            vec![],
        )],
        [Action::Alert, Action::Allow, Action::Allow],
    );
    let decision = policy_a.evaluate(&request(&headers, "/", 200));
    assert_eq!(
        (decision.final_action, &*decision.final_rule_name),
        (Action::Allow, "allow-get")
    );
    assert_eq!(decision.final_phase, Phase::PreRequest);
    assert_eq!(
        decision.first_alert_match.as_ref().map(|a| a.phase),
        Some(Phase::PreDns)
    );
    // An Alert default after an explicit Allow is reported: it is notable.
    let policy_b = policy(
        vec![group(
            "g",
            vec![rule("allow-example", Action::Allow, &[DOMAIN])],
            vec![],
            vec![],
        )],
        [Action::Allow, Action::Allow, Action::Alert],
    );
    let decision = policy_b.evaluate(&request(&headers, "/", 200));
    assert_eq!(
        (decision.final_action, &*decision.final_rule_name),
        (Action::Alert, "default")
    );
    assert_eq!(decision.final_phase, Phase::PostResponse);
}

#[test]
fn post_response_deny_on_status() {
    let policy = policy(
        vec![group(
            "g",
            vec![],
            vec![],
            vec![rule("deny-404", Action::Deny, &[NOT_FOUND])],
        )],
        ALLOW_ALL,
    );
    let headers = HeaderMap::new();
    let denied = policy.evaluate(&request(&headers, "/", 404));
    assert_eq!(
        (denied.final_action, denied.final_phase),
        (Action::Deny, Phase::PostResponse)
    );
    assert_eq!(&*denied.final_rule_name, "deny-404");
    let ok = policy.evaluate(&request(&headers, "/", 200));
    assert_eq!(ok.final_action, Action::Allow);
}

#[test]
fn phases_evaluated_one_by_one_as_the_gateway_does() {
    let policy = policy(
        vec![group(
            "g",
            vec![rule("allow-example", Action::Allow, &[DOMAIN])],
            vec![rule("no-files", Action::Deny, &[FILES])],
            vec![],
        )],
        ALLOW_ALL,
    );
    // A CONNECT tunnel that is not intercepted: no HTTP keys ever.
    let mut ctx = RequestContext {
        destination_domain: Some(Domain::new("example.com")),
        destination_port: Some(443),
        ..Default::default()
    };
    let mut decision = Decision::default();
    assert_eq!(
        policy.evaluate_phase(Phase::PreDns, &ctx, &mut decision),
        Verdict::Continue
    );
    ctx.destination_ip = Some("93.184.215.14".parse().expect("valid"));
    assert_eq!(
        policy.evaluate_phase(Phase::PreRequest, &ctx, &mut decision),
        Verdict::Continue
    );
    assert_eq!(decision.final_action, Action::Allow);
    assert_eq!(&*decision.final_rule_name, "allow-example");
    assert_eq!(decision.final_phase, Phase::PreDns);
}

#[test]
fn a_rule_without_conditions_matches_everything() {
    let policy = policy(
        vec![group(
            "g",
            vec![rule("catch-all", Action::Deny, &[])],
            vec![],
            vec![],
        )],
        ALLOW_ALL,
    );
    let decision = policy.evaluate(&RequestContext::default());
    assert_eq!(
        (decision.final_action, &*decision.final_rule_name),
        (Action::Deny, "catch-all")
    );
}

/// Reference model for the index property test: each rule has optional
/// conditions of every indexable kind, evaluated by a plain scan in plain code.
#[derive(Clone, Debug)]
struct ModelRule {
    domain: Option<String>,
    port: Option<u16>,
    method: Option<(&'static str, bool)>,
    uri_contains: Option<&'static str>,
    source: Option<(&'static str, [u8; 2])>,
    action: Action,
}

#[derive(Clone, Debug)]
struct ModelRequest {
    domain: &'static str,
    port: u16,
    method: &'static str,
    uri: &'static str,
    source: [u8; 4],
}

fn model_matches(rule: &ModelRule, r: &ModelRequest) -> bool {
    let domain_ok = match rule.domain.as_deref() {
        None => true,
        Some(pattern) if pattern.starts_with("*.") => r.domain.ends_with(&pattern[1..]),
        Some(pattern) if pattern.starts_with('.') => {
            r.domain == &pattern[1..] || r.domain.ends_with(pattern)
        }
        Some(exact) => r.domain == exact,
    };
    let method_ok = match rule.method {
        None => true,
        Some((m, true)) => m.eq_ignore_ascii_case(r.method),
        Some((m, false)) => m == r.method,
    };
    domain_ok
        && method_ok
        && rule.port.is_none_or(|p| p == r.port)
        && rule.uri_contains.is_none_or(|u| r.uri.contains(u))
        && rule
            .source
            .is_none_or(|(_, [a, b])| r.source[0] == a && r.source[1] == b)
}

fn model_evaluate(
    rules: &[ModelRule],
    request: &ModelRequest,
) -> (Action, Option<usize>, Vec<usize>) {
    let mut alerts = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if model_matches(rule, request) {
            if rule.action == Action::Alert {
                alerts.push(i);
            } else {
                return (rule.action, Some(i), alerts);
            }
        }
    }
    (Action::Allow, None, alerts)
}

fn model_rule() -> impl Strategy<Value = ModelRule> {
    let names = prop::sample::select(vec![
        "a.com",
        "b.a.com",
        "c.b.a.com",
        "a.org",
        "com",
        "x.a.org",
    ]);
    let domain = prop_oneof![
        3 => Just(None),
        1 => names.clone().prop_map(|n| Some(n.to_string())),
        1 => names.clone().prop_map(|n| Some(format!(".{n}"))),
        1 => names.prop_map(|n| Some(format!("*.{n}"))),
    ];
    let port = prop_oneof![Just(None), Just(Some(443u16)), Just(Some(80u16))];
    let method = prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(vec![("GET", false), ("get", true), ("POST", false), ("Post", true)]).prop_map(Some),
    ];
    let uri = prop_oneof![2 => Just(None), 1 => prop::sample::select(vec!["/files/", "/api/", "x"]).prop_map(Some)];
    let source = prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(vec![("10.1.0.0/16", [10, 1]), ("10.2.0.0/16", [10, 2]), ("192.168.0.0/16", [192, 168])]).prop_map(Some),
    ];
    let action = prop::sample::select(vec![Action::Allow, Action::Deny, Action::Alert]);
    (domain, port, method, uri, source, action).prop_map(
        |(domain, port, method, uri_contains, source, action)| ModelRule {
            domain,
            port,
            method,
            uri_contains,
            source,
            action,
        },
    )
}

fn model_request() -> impl Strategy<Value = ModelRequest> {
    (
        prop::sample::select(vec![
            "a.com",
            "b.a.com",
            "c.b.a.com",
            "z.c.b.a.com",
            "a.org",
            "x.a.org",
            "com",
            "other.net",
        ]),
        prop::sample::select(vec![80u16, 443]),
        prop::sample::select(vec!["GET", "POST", "get"]),
        prop::sample::select(vec!["/", "/files/x", "/api/files/", "/xyz"]),
        prop::sample::select(vec![
            [10, 1, 2, 3],
            [10, 2, 0, 1],
            [192, 168, 1, 1],
            [172, 16, 0, 1],
        ]),
    )
        .prop_map(|(domain, port, method, uri, source)| ModelRequest {
            domain,
            port,
            method,
            uri,
            source,
        })
}

fn conditions_of(rule: &ModelRule) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let mut conds = Vec::new();
    if let Some(d) = &rule.domain {
        let op = if d.starts_with('*') {
            "StringLike"
        } else {
            "StringEquals"
        };
        conds.push(("request:DestinationDomain", op, vec![d.clone()]));
    }
    if let Some(p) = rule.port {
        conds.push((
            "request:DestinationPort",
            "NumericEquals",
            vec![p.to_string()],
        ));
    }
    if let Some((m, ignore_case)) = rule.method {
        let op = if ignore_case {
            "StringEqualsIgnoreCase"
        } else {
            "StringEquals"
        };
        conds.push(("request:Http:Method", op, vec![m.to_owned()]));
    }
    if let Some(u) = rule.uri_contains {
        conds.push(("request:Http:Uri", "StringLike", vec![format!("*{u}*")]));
    }
    if let Some((cidr, _)) = rule.source {
        conds.push(("request:SourceIp", "IpAddress", vec![cidr.to_owned()]));
    }
    conds
}

/// The rule spec of a model rule.
fn spec_of(name: &str, model: &ModelRule) -> egress_policy::spec::RuleSpec {
    let conds = conditions_of(model);
    let values: Vec<Vec<&str>> = conds
        .iter()
        .map(|(_, _, v)| v.iter().map(String::as_str).collect())
        .collect();
    let conds: Vec<Cond> = conds
        .iter()
        .zip(&values)
        .map(|((k, o, _), v)| (*k, *o, v.as_slice()))
        .collect();
    rule(name, model.action, &conds)
}

/// The context of a model request, before its response.
fn context_of<'a>(request: &'a ModelRequest, headers: &'a HeaderMap) -> RequestContext<'a> {
    let [a, b, c, d] = request.source;
    RequestContext {
        source_ip: Some(std::net::IpAddr::from([a, b, c, d])),
        destination_domain: Some(Domain::new(request.domain)),
        destination_port: Some(request.port),
        request: Some(HttpRequest {
            method: request.method,
            uri: request.uri,
            headers,
        }),
        ..Default::default()
    }
}

proptest! {
    /// The rule index must never change which rule decides, nor the alerts.
    #[test]
    fn indexed_evaluation_agrees_with_a_plain_scan(
        rules in prop::collection::vec(model_rule(), 0..40),
        request in model_request(),
    ) {
        let specs: Vec<_> = rules.iter().enumerate().map(|(i, r)| spec_of(&format!("r{i}"), r)).collect();
        // Split the rules over three groups to cover group concatenation.
        let third = specs.len().div_ceil(3).max(1);
        let groups: Vec<_> = specs
            .chunks(third)
            .enumerate()
            .map(|(g, chunk)| group(&format!("g{g}"), vec![], chunk.to_vec(), vec![]))
            .collect();
        let policy = policy(groups, ALLOW_ALL);
        let headers = HeaderMap::new();
        let ctx = context_of(&request, &headers);
        let mut decision = Decision::default();
        policy.evaluate_phase(Phase::PreRequest, &ctx, &mut decision);
        let (action, rule_index, alerts) = model_evaluate(&rules, &request);
        prop_assert_eq!(decision.final_action, action);
        let want_rule = rule_index.map(|i| format!("r{i}")).unwrap_or_else(|| "default".into());
        prop_assert_eq!(&*decision.final_rule_name, want_rule.as_str());
        let got_alerts: Vec<String> = decision
            .all_matches
            .iter()
            .filter(|m| m.action == Action::Alert)
            .map(|m| m.rule.to_string())
            .collect();
        let want_alerts: Vec<String> = alerts.iter().map(|i| format!("r{i}")).collect();
        prop_assert_eq!(got_alerts, want_alerts);
    }
}

/// A group's rules in monitor mode, or only the named ones.
fn monitored(
    mut group: egress_policy::Named<egress_policy::spec::ProxyRuleGroupSpec>,
    rules: &[&str],
) -> egress_policy::Named<egress_policy::spec::ProxyRuleGroupSpec> {
    use egress_policy::spec::RuleMode;
    if rules.is_empty() {
        group.spec.mode = Some(RuleMode::Monitor);
    }
    let phases = &mut group.spec.rules;
    for rule in [
        &mut phases.pre_dns,
        &mut phases.pre_request,
        &mut phases.post_response,
    ]
    .into_iter()
    .flatten()
    .filter(|r| rules.contains(&r.name.as_str()))
    {
        rule.mode = Some(RuleMode::Monitor);
    }
    group
}

fn would(decision: &Decision) -> Option<(String, String, Phase, Action)> {
    decision
        .would()
        .map(|w| (w.rule.to_string(), w.group.to_string(), w.phase, w.action))
}

#[test]
fn a_monitored_allow_list_reports_what_it_would_deny_and_enforces_nothing() {
    // The roll-out the mode is for: an allow list ending in a catch-all
    // Deny, watched before it bites.
    let allow_list = monitored(
        group(
            "allow-list",
            vec![
                rule("allow-example", Action::Allow, &[DOMAIN]),
                rule("deny-the-rest", Action::Deny, &[]),
            ],
            vec![],
            vec![],
        ),
        &[],
    );
    let enforced = group(
        "enforced",
        vec![],
        vec![rule("deny-files", Action::Deny, &[FILES])],
        vec![],
    );
    let policy = policy(vec![allow_list, enforced], ALLOW_ALL);
    assert!(policy.monitors());
    let headers = HeaderMap::new();

    let listed = policy.evaluate(&request(&headers, "/", 200));
    assert_eq!(listed.final_action, Action::Allow);
    assert_eq!(&*listed.final_rule_name, "default");
    assert!(listed.all_matches.is_empty(), "{:?}", listed.all_matches);
    assert_eq!(
        would(&listed),
        Some(m(
            "allow-example",
            "allow-list",
            Phase::PreDns,
            Action::Allow
        ))
    );

    let mut other = request(&headers, "/", 200);
    other.destination_domain = Some(egress_policy::Domain::new("other.example"));
    let unlisted = policy.evaluate(&other);
    assert_eq!(
        unlisted.final_action,
        Action::Allow,
        "monitor mode enforces nothing"
    );
    assert_eq!(
        would(&unlisted),
        Some(m(
            "deny-the-rest",
            "allow-list",
            Phase::PreDns,
            Action::Deny
        ))
    );

    // An enforced Deny in a later phase still denies; what would have
    // happened is the same Deny, reached through the monitored Allow.
    let files = policy.evaluate(&request(&headers, "/files/a", 200));
    assert_eq!(files.final_action, Action::Deny);
    assert_eq!(&*files.final_rule_name, "deny-files");
    assert_eq!(
        would(&files),
        Some(m("deny-files", "enforced", Phase::PreRequest, Action::Deny))
    );
}

#[test]
fn one_monitored_rule_among_enforced_ones() {
    let policy = policy(
        vec![monitored(
            group(
                "mixed",
                vec![rule("alert-all", Action::Alert, &[])],
                vec![
                    rule("try-deny-get", Action::Deny, &[GET]),
                    rule("allow-443", Action::Allow, &[PORT_443]),
                ],
                vec![],
            ),
            &["alert-all", "try-deny-get"],
        )],
        ALLOW_ALL,
    );
    let headers = HeaderMap::new();
    let decision = policy.evaluate(&request(&headers, "/", 200));
    assert_eq!(decision.final_action, Action::Allow);
    assert_eq!(&*decision.final_rule_name, "allow-443");
    assert!(
        decision.first_alert_match.is_none(),
        "a monitored alert is not an alert"
    );
    assert_eq!(
        matched(&decision),
        [m("allow-443", "mixed", Phase::PreRequest, Action::Allow)]
    );
    assert_eq!(
        would(&decision),
        Some(m("try-deny-get", "mixed", Phase::PreRequest, Action::Deny))
    );

    // Only an alert in monitor mode matches: the would-be outcome is that alert.
    let alert_only = policy_of_alert_only();
    let decision = alert_only.evaluate(&request(&headers, "/", 200));
    assert_eq!(
        would(&decision),
        Some(m("alert-all", "alerts", Phase::PreDns, Action::Alert))
    );
    assert!(!decision.has_alert());
}

fn policy_of_alert_only() -> egress_policy::CompiledPolicy {
    policy(
        vec![monitored(
            group(
                "alerts",
                vec![rule("alert-all", Action::Alert, &[])],
                vec![],
                vec![],
            ),
            &[],
        )],
        ALLOW_ALL,
    )
}

#[test]
fn without_monitored_rules_nothing_would_differ_and_nothing_is_kept() {
    let policy = policy(
        vec![group(
            "g",
            vec![rule("deny-example", Action::Deny, &[DOMAIN])],
            vec![],
            vec![],
        )],
        ALLOW_ALL,
    );
    assert!(!policy.monitors());
    let headers = HeaderMap::new();
    let decision = policy.evaluate(&request(&headers, "/", 200));
    assert!(decision.would_be.is_none());
    assert_eq!(decision.would(), None);
}

#[test]
fn a_refusal_outside_the_rules_is_one_the_monitored_rules_would_have_met_too() {
    let policy = policy(
        vec![monitored(
            group(
                "watch",
                vec![rule("allow-example", Action::Allow, &[DOMAIN])],
                vec![],
                vec![],
            ),
            &[],
        )],
        ALLOW_ALL,
    );
    let headers = HeaderMap::new();
    let mut decision = Decision::default();
    policy.evaluate_phase(Phase::PreDns, &request(&headers, "/", 200), &mut decision);
    decision.deny_by(Phase::PreRequest, "private-destination");
    assert_eq!(
        would(&decision),
        Some(m(
            "private-destination",
            "default",
            Phase::PreRequest,
            Action::Deny
        ))
    );
}

proptest! {
    /// Monitor mode changes nothing that is enforced: the decision is the
    /// one without the monitored rules, and the would-be decision the one
    /// with every rule enforced.
    #[test]
    fn monitored_rules_are_invisible_to_the_decision_and_enforced_in_the_would_be(
        rules in prop::collection::vec((model_rule(), any::<bool>()), 0..30),
        request in model_request(),
    ) {
        let all: Vec<_> = rules.iter().enumerate().map(|(i, (r, _))| spec_of(&format!("r{i}"), r)).collect();
        let watched: Vec<String> = rules.iter().enumerate().filter(|(_, (_, m))| *m).map(|(i, _)| format!("r{i}")).collect();
        let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
        let mut mixed = group("g", vec![], all.clone(), vec![]);
        if !watched.is_empty() {
            mixed = monitored(mixed, &watched);
        }
        let mixed = policy(vec![mixed], ALLOW_ALL);
        let enforced_only: Vec<_> = all.iter().filter(|r| !watched.contains(&r.name.as_str())).cloned().collect();
        let without = policy(vec![group("g", vec![], enforced_only, vec![])], ALLOW_ALL);
        let everything = policy(vec![group("g", vec![], all, vec![])], ALLOW_ALL);

        let headers = HeaderMap::new();
        let ctx = context_of(&request, &headers);
        let decision = mixed.evaluate(&ctx);
        let mut real = decision.clone();
        real.would_be = None;
        prop_assert_eq!(real, without.evaluate(&ctx));
        if watched.is_empty() {
            prop_assert!(decision.would_be.is_none());
        } else {
            let would_be = decision.would_be.as_deref().expect("kept for a monitoring policy");
            prop_assert_eq!(&would_be.decision, &everything.evaluate(&ctx));
            let reached: Vec<String> = would_be.decision.all_matches.iter().map(|m| m.rule.to_string()).filter(|r| watched.contains(&r.as_str())).collect();
            let listed: Vec<String> = would_be.monitored.iter().map(|m| m.rule.to_string()).collect();
            prop_assert_eq!(&listed, &reached);
            prop_assert_eq!(decision.would().is_some(), !reached.is_empty());
        }
    }
}
