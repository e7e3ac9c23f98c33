//! Memory and lookup cost of the client identity index with 10,000 and
//! 100,000 pods (or the counts given as arguments):
//!
//!     cargo run --release -p egress-gateway --example identity_index [PODS...]
//!
//! Each count runs in a fresh index; the resident growth of the larger runs
//! reuses memory the smaller ones gave back, so read the counted bytes.
//! Relisting one of 50 namespaces (a namespace's watch reconnecting) is
//! timed too.
//! Pods carry five labels each (the usual app.kubernetes.io set plus two),
//! realistic names and one IPv4 address.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use egress_gateway::gateway::identity::{PodIndex, PodView};

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pod(i: u32) -> PodView {
    let app = format!("service-{}", i % 300);
    PodView {
        uid: format!("3f1c2a7e-{:04x}-4b8e-9d2f-{:012x}", i % 0xffff, i),
        namespace: format!("team-{}", i % 50),
        name: format!("{app}-7d9f8b6c5-{:05}", i),
        service_account: format!("{app}-sa"),
        labels: BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), app.clone()),
            (
                "app.kubernetes.io/instance".to_owned(),
                format!("{app}-prod"),
            ),
            ("app.kubernetes.io/version".to_owned(), "1.24.3".to_owned()),
            ("pod-template-hash".to_owned(), "7d9f8b6c5".to_owned()),
            ("tier".to_owned(), "backend".to_owned()),
        ]),
        ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))],
        ..PodView::default()
    }
}

fn main() {
    let counts: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of pods"))
        .collect();
    let counts = if counts.is_empty() {
        vec![10_000, 100_000]
    } else {
        counts
    };
    for pods in counts {
        run(pods);
    }
}

fn run(count: u32) {
    let pods: Vec<PodView> = (0..count).map(pod).collect();
    let before = resident_kib();
    let mut index = PodIndex::default();
    let started = Instant::now();
    for p in &pods {
        index.apply(p);
    }
    let built = started.elapsed();
    let after = resident_kib();
    let heap = index.heap_bytes();
    println!("identity index with {count} pods (5 labels each):");
    println!(
        "  {:.0} bytes per pod counted from the index's allocations ({:.1} MiB in all)",
        heap as f64 / f64::from(count),
        heap as f64 / 1048576.0
    );
    println!(
        "  resident memory grew by {:.1} MiB while building it ({:.0} bytes per pod)",
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / f64::from(count)
    );
    println!(
        "  built in {:?} ({:.2} us per pod event)",
        built,
        built.as_secs_f64() * 1e6 / f64::from(count)
    );
    let rounds = 1_000_000u32;
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..rounds {
        let ip = IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000 + i.wrapping_mul(7919) % (count + count / 10),
        ));
        found += usize::from(black_box(index.lookup(ip)).is_some());
    }
    let per = started.elapsed().as_secs_f64() * 1e9 / f64::from(rounds);
    println!(
        "  lookup: {per:.0} ns ({found} of {rounds} addresses known; one lookup per client connection)"
    );
    let team: Vec<PodView> = pods
        .iter()
        .filter(|p| p.namespace == "team-7")
        .cloned()
        .collect();
    let started = Instant::now();
    index.replace_namespace("team-7", &team);
    println!(
        "  relisting one namespace of 50 ({} pods): {:?}",
        team.len(),
        started.elapsed()
    );
}
