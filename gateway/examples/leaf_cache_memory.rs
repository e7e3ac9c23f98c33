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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn gateway_binary() -> PathBuf {
    // target/<profile>/examples/leaf_cache_memory -> target/<profile>/egress-gateway
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("egress-gateway")
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

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
    let mut stream = TcpStream::connect(proxy).await.expect("connect to gateway");
    stream
        .write_all(format!("CONNECT {dest}:443 HTTP/1.1\r\nHost: {dest}:443\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "CONNECT refused: {line}");
    while {
        line.clear();
        reader.read_line(&mut line).await.expect("header") > 2
    } {}
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
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: bench}\n\
         spec: {defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n---\n\
         apiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {name: bench}\n\
         spec: {configurationRef: {name: bench}, tlsInterception: {enabled: true}, destinations: {allowPrivateCIDRs: [\"127.0.0.0/8\"]}, logging: {actions: [Deny]}}\n",
    )
    .expect("policy");
    let mut child = Command::new(gateway_binary())
        .args([
            "--log-format",
            "json",
            "run",
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--policy")
        .arg(&policy)
        .arg("--intercept-ca-cert")
        .arg(&ca.cert)
        .arg("--intercept-ca-key")
        .arg(&ca.key)
        .args(["--cert-cache-size", &cache.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the release gateway (cargo build --release -p egress-gateway first)");
    let pid = child.id();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.stderr.take().expect("stderr"),
    ));
    let (mut proxy, mut admin) = (None, None);
    while proxy.is_none() || admin.is_none() {
        let line = lines.next().expect("gateway output").expect("line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let addr = v["address"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        match v["listener"].as_str() {
            Some("http") => proxy = addr,
            Some("admin") => admin = addr,
            _ => {}
        }
    }
    let (proxy, admin) = (proxy.expect("proxy"), admin.expect("admin"));
    std::thread::spawn(move || lines.for_each(drop));

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
    println!("| 0 | 0 | {:.1} |", rss_mib(pid));
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
        println!("| {next} | {cached:.0} | {:.1} |", rss_mib(pid));
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
