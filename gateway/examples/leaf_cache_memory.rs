//! Leaf certificate minting and cache memory, through the real gateway.
//!
//!     cargo build --release -p egress-gateway
//!     cargo run --release -p egress-gateway --example leaf_cache_memory [NAMES] [CACHE]
//!
//! Starts the release gateway with interception on and a cache of CACHE leaves
//! (default 10,000), then opens CONNECT tunnels to NAMES distinct destinations
//! (default 20,000; 127.1.x.y, so no upstream and no DNS are involved: the leaf
//! is minted for the address) and completes a TLS handshake in each, four at a
//! time. It prints the gateway's resident memory as the cache fills and after
//! it is full, the handshake time of first-seen names (mint included) against
//! names already cached, and the gateway's own mint time histogram.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn metric(admin: SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("admin");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn destination(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// CONNECT to `dest:443` and a TLS handshake with the minted leaf; returns its duration.
async fn handshake(proxy: SocketAddr, dest: IpAddr, tls: Arc<rustls::ClientConfig>) -> Duration {
    let started = Instant::now();
    let reader = common::connect(proxy, &format!("{dest}:443")).await;
    let name = rustls_pki_types::ServerName::IpAddress(dest.into());
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, reader.into_inner())
        .await
        .expect("TLS with the minted leaf");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let names: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let cache: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("leaf-cache-memory-{}", std::process::id()));
    let (ca, root) = egress_gateway::tls::authority::write_dev_ca(&dir).expect("dev CA");
    let policy = common::allow_all_policy(&dir, true);
    let cache_size = cache.to_string();
    let (mut child, proxy, admin) = common::start_gateway(&[
        "--policy".as_ref(),
        policy.as_os_str(),
        "--intercept-ca-cert".as_ref(),
        ca.cert.as_os_str(),
        "--intercept-ca-key".as_ref(),
        ca.key.as_os_str(),
        "--cert-cache-size".as_ref(),
        cache_size.as_ref(),
    ]);
    let pid = child.id();

    let mut roots = rustls::RootCertStore::empty();
    for cert in egress_gateway::tls::load_certs(&root).expect("root") {
        roots.add(cert).expect("root");
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(egress_gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    println!(
        "gateway pid {pid}, leaf cache {cache}, {names} distinct names, 4 handshakes at a time"
    );
    println!("| names seen | leaves cached | gateway RSS MiB |");
    println!("|---:|---:|---:|");
    println!("| 0 | 0 | {:.1} |", common::rss_mib(pid));
    let mut first_seen = Vec::with_capacity(names);
    let step = (names / 8).max(1);
    let mut next = 0;
    while next < names {
        let end = (next + step).min(names);
        for chunk in (next..end).collect::<Vec<_>>().chunks(4) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|&i| tokio::spawn(handshake(proxy, destination(i), tls.clone())))
                .collect();
            for task in tasks {
                first_seen.push(task.await.expect("task"));
            }
        }
        next = end;
        let cached = metric(admin, "egress_certificate_cache_size");
        println!("| {next} | {cached:.0} | {:.1} |", common::rss_mib(pid));
    }
    // Names still in the cache (the most recent ones): no mint.
    let mut cached_times = Vec::new();
    for i in (names - 2000.min(names)..names).step_by(1) {
        cached_times.push(handshake(proxy, destination(i), tls.clone()).await);
    }
    first_seen.sort();
    cached_times.sort();
    let mints = metric(admin, "egress_certificate_mint_duration_seconds_count");
    let mint_sum = metric(admin, "egress_certificate_mint_duration_seconds_sum");
    println!();
    println!("| handshake through the gateway | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    println!(
        "| first-seen name (leaf minted) | {:.2} | {:.2} |",
        percentile(&first_seen, 0.5),
        percentile(&first_seen, 0.99)
    );
    println!(
        "| cached name | {:.2} | {:.2} |",
        percentile(&cached_times, 0.5),
        percentile(&cached_times, 0.99)
    );
    println!();
    println!(
        "gateway mint time (egress_certificate_mint_duration_seconds): mean {:.2} ms over {mints:.0} mints",
        mint_sum / mints.max(1.0) * 1000.0
    );
    println!("peak RSS (VmHWM): {:.1} MiB", {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
