//! What a `Domains` list costs as it grows: per request (criterion: a name
//! in the list and one not in it, for 10 to 1,000,000 entries), and once
//! (compile time, and how much the process's resident memory grew to hold
//! the compiled policy, printed).
//!
//! `cargo bench -p egress-policy --bench lists`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use egress_policy::spec::{
    ConditionSpec, DefaultActions, ListRef, ListType, PhaseRules, ProxyConfigurationSpec,
    ProxyListSpec, ProxyRuleGroupSpec, RuleGroupRef, RuleSpec,
};
use egress_policy::{Action, Available, CompiledPolicy, Domain, Named, RequestContext, compile};

/// The process's resident memory, in bytes (Linux; 0 elsewhere).
fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Entry `i`: half exact names, half apexes with their subdomains.
fn entry(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("host{i}.example.com")
    } else {
        format!(".zone{i}.example.net")
    }
}

/// One Deny rule whose domains come from a list of `size` entries.
fn policy(size: usize) -> CompiledPolicy {
    let list = Named::new(
        "big",
        ProxyListSpec {
            description: None,
            list_type: ListType::Domains,
            entries: (0..size).map(entry).collect(),
        },
    );
    let rule = RuleSpec {
        name: "listed".to_owned(),
        description: None,
        action: Action::Deny,
        mode: None,
        overridable: false,
        conditions: vec![ConditionSpec {
            key: "request:DestinationDomain".to_owned(),
            operator: "StringEquals".to_owned(),
            values: Vec::new(),
            values_from: vec![ListRef {
                list: "big".to_owned(),
            }],
        }],
    };
    let group = Named::new(
        "g",
        ProxyRuleGroupSpec {
            rules: PhaseRules {
                pre_dns: vec![rule],
                ..PhaseRules::default()
            },
            ..ProxyRuleGroupSpec::default()
        },
    );
    let config = Named::new(
        "c",
        ProxyConfigurationSpec {
            rule_groups: vec![RuleGroupRef {
                name: "g".to_owned(),
            }],
            default_actions: DefaultActions::all(Action::Allow),
        },
    );
    let (groups, lists) = ([group], [list]);
    compile(
        &config,
        Available {
            groups: &groups,
            lists: &lists,
            ..Available::default()
        },
    )
    .expect("benchmark policy compiles")
}

fn context(domain: &str) -> RequestContext<'static> {
    RequestContext {
        destination_domain: Some(Domain::new(domain)),
        destination_port: Some(443),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let listed = context("a.b.zone9.example.net");
    let unlisted = context("www.service.example.org");
    let mut group = c.benchmark_group("list/domains");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for size in [10, 1_000, 1_000_000] {
        let before = resident();
        let started = Instant::now();
        let policy = policy(size);
        let took = started.elapsed();
        let held = resident().saturating_sub(before);
        println!(
            "list/domains/{size}: compiled in {:.3} s, resident memory grew {:.1} MiB ({} bytes per entry)",
            took.as_secs_f64(),
            held as f64 / (1024.0 * 1024.0),
            held / size
        );
        assert_eq!(policy.evaluate(&listed).final_action, Action::Deny);
        assert_eq!(policy.evaluate(&unlisted).final_action, Action::Allow);
        for (name, ctx) in [("listed", &listed), ("unlisted", &unlisted)] {
            group.bench_with_input(BenchmarkId::new(name, size), &policy, |b, policy| {
                b.iter(|| policy.evaluate(black_box(ctx)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
