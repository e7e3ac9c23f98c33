//! Evaluation cost of one request through all three phases.
//!
//!     cargo bench -p egress-policy --bench evaluate
//!
//! `mixed/N`: N rules in 10 groups with a mix of keys (domains exact, suffix and
//! glob, ports, IPs, methods, URI globs, headers, status codes, content types,
//! time), spread over the phases; the request matches none of them, so every
//! rule that can match is looked at (the worst case).
//! `domains/N`: N exact and suffix domain rules only, none matching: the index
//! should keep this flat as N grows.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use egress_policy::spec::{
    ConditionSpec, DefaultActions, PhaseRules, ProxyConfigurationSpec, ProxyRuleGroupSpec,
    RuleGroupRef, RuleSpec,
};
use egress_policy::{
    Action, Available, CompiledPolicy, Domain, HttpRequest, HttpResponse, Named, RequestContext,
    compile,
};
use http::HeaderMap;

const GROUPS: usize = 10;

fn condition(key: &str, operator: &str, value: String) -> ConditionSpec {
    ConditionSpec {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: vec![value],
        values_from: Vec::new(),
    }
}

/// Rule `i` of the mixed set: (phase, condition). None of them matches the benchmark request.
fn mixed_rule(i: usize) -> (usize, ConditionSpec) {
    match i % 12 {
        0 => (
            0,
            condition(
                "request:DestinationDomain",
                "StringEquals",
                format!("host{i}.example.com"),
            ),
        ),
        1 => (
            0,
            condition(
                "request:DestinationDomain",
                "StringEquals",
                format!(".zone{i}.example.net"),
            ),
        ),
        2 => (
            0,
            condition(
                "request:DestinationDomain",
                "StringLike",
                format!("*.glob{i}.example.org"),
            ),
        ),
        3 => (
            0,
            condition(
                "request:DestinationPort",
                "NumericEquals",
                format!("{}", 10_000 + i % 50_000),
            ),
        ),
        4 => (
            0,
            condition(
                "request:SourceIp",
                "IpAddress",
                format!("172.{}.{}.0/24", 16 + i % 16, i % 256),
            ),
        ),
        5 => (
            1,
            condition("request:Http:Method", "StringEquals", format!("METHOD{i}")),
        ),
        6 => (
            1,
            condition("request:Http:Uri", "StringLike", format!("*/path{i}/*")),
        ),
        7 => (
            1,
            condition(
                "request:Http:Header/X-Tenant",
                "StringEquals",
                format!("tenant-{i}"),
            ),
        ),
        8 => (
            1,
            condition(
                "request:DestinationIp",
                "IpAddress",
                format!("198.51.{}.0/24", i % 256),
            ),
        ),
        9 => (
            2,
            condition(
                "response:Http:StatusCode",
                "NumericEquals",
                format!("{}", 600 + i),
            ),
        ),
        10 => (
            2,
            condition(
                "response:Http:ContentType",
                "StringLike",
                format!("application/x-{i}*"),
            ),
        ),
        _ => (
            0,
            condition(
                "request:Time",
                "DateLessThan",
                "2000-01-01T00:00:00Z".to_owned(),
            ),
        ),
    }
}

/// Rule `i` of the domain-only set.
fn domain_rule(i: usize) -> (usize, ConditionSpec) {
    if i.is_multiple_of(2) {
        (
            0,
            condition(
                "request:DestinationDomain",
                "StringEquals",
                format!("host{i}.example.com"),
            ),
        )
    } else {
        (
            0,
            condition(
                "request:DestinationDomain",
                "StringEquals",
                format!(".zone{i}.example.com"),
            ),
        )
    }
}

fn policy(rules: usize, make: fn(usize) -> (usize, ConditionSpec)) -> CompiledPolicy {
    let mut groups: Vec<Named<ProxyRuleGroupSpec>> = (0..GROUPS)
        .map(|g| Named::new(format!("group-{g}"), ProxyRuleGroupSpec::default()))
        .collect();
    for i in 0..rules {
        let (phase, condition) = make(i);
        let rule = RuleSpec {
            name: format!("rule-{i}"),
            description: None,
            mode: None,
            overridable: false,
            action: if i % 3 == 0 {
                Action::Alert
            } else {
                Action::Deny
            },
            conditions: vec![condition],
        };
        let PhaseRules {
            pre_dns,
            pre_request,
            post_response,
        } = &mut groups[i * GROUPS / rules.max(1)].spec.rules;
        [pre_dns, pre_request, post_response][phase].push(rule);
    }
    let config = Named::new(
        "bench",
        ProxyConfigurationSpec {
            rule_groups: groups
                .iter()
                .map(|g| RuleGroupRef {
                    name: g.name.clone(),
                })
                .collect(),
            default_actions: DefaultActions::all(Action::Allow),
        },
    );
    compile(&config, Available::groups(&groups)).expect("benchmark policy compiles")
}

fn bench(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "tenant-none".parse().expect("valid"));
    headers.insert("content-type", "text/html".parse().expect("valid"));
    headers.insert("user-agent", "bench/1.0".parse().expect("valid"));
    let ctx = RequestContext {
        time: Some("2026-11-25T12:00:00Z".parse().expect("valid")),
        source_ip: Some("10.244.3.9".parse().expect("valid")),
        source_port: Some(41_000),
        protocol: Some("https"),
        destination_domain: Some(Domain::new("www.service.example.com")),
        destination_port: Some(443),
        destination_ip: Some("203.0.113.10".parse().expect("valid")),
        request: Some(HttpRequest {
            method: "GET",
            uri: "/api/v1/items?page=2",
            headers: &headers,
        }),
        response: Some(HttpResponse {
            status: 200,
            headers: &headers,
        }),
        ..Default::default()
    };
    for (name, make) in [
        ("mixed", mixed_rule as fn(usize) -> _),
        ("domains", domain_rule),
    ] {
        let mut group = c.benchmark_group(format!("evaluate/{name}"));
        for rules in [10, 1_000, 10_000] {
            let policy = policy(rules, make);
            let decision = policy.evaluate(&ctx);
            assert_eq!(
                decision.final_action,
                Action::Allow,
                "the benchmark request must match no rule"
            );
            assert!(decision.all_matches.is_empty());
            group.bench_with_input(BenchmarkId::from_parameter(rules), &policy, |b, policy| {
                b.iter(|| policy.evaluate(black_box(&ctx)))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
