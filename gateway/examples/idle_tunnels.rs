//! Many long-lived relayed tunnels held open at once: the gateway's memory per
//! tunnel, and that new requests are still served quickly meanwhile.
//!
//!     cargo build --release -p egress-gateway --examples
//!     target/release/examples/idle_tunnels [TUNNELS]
//!
//! Starts the release gateway (or `$EGRESS_GATEWAY_BIN`, to compare builds)
//! relaying, without interception, and an echo upstream in a second process.
//! Opens TUNNELS CONNECT tunnels (default 10,000, fewer when the open-file
//! limit cannot hold two sockets per tunnel in the gateway), each carrying one
//! round trip and then left idle, the way pods keep connections open for hours.
//! Prints the gateway's resident memory as they open, then, with all of them
//! open, the latency of new tunnels and of round trips on old ones.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The soft open-file limit (what a child process gets).
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// The upstream: echoes what it reads, on every connection, until it closes.
async fn echo_upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}

fn start_upstream() -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("echo-upstream")
        .stdout(Stdio::piped())
        .spawn()
        .expect("upstream");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("upstream address");
    (child, line.trim().parse().expect("address"))
}

/// A tunnel to `upstream` through `proxy` after one round trip in it.
async fn open(proxy: SocketAddr, upstream: SocketAddr) -> BufReader<TcpStream> {
    let mut reader = common::connect(proxy, &upstream.to_string()).await;
    round_trip(&mut reader).await;
    reader
}

async fn round_trip(tunnel: &mut BufReader<TcpStream>) {
    tunnel.get_mut().write_all(b"ping").await.expect("ping");
    let mut pong = [0u8; 4];
    tunnel.read_exact(&mut pong).await.expect("echo");
    assert_eq!(&pong, b"ping");
}

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("echo-upstream") {
        return echo_upstream().await;
    }
    let limit = open_file_limit();
    // Two sockets per tunnel in the gateway, plus its listeners and files.
    let fits = limit.saturating_sub(200) / 2;
    let asked: usize = first.and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let tunnels = asked.min(fits);
    if tunnels < asked {
        println!(
            "open-file limit {limit}: {tunnels} tunnels fit (two sockets each in the gateway), not {asked}"
        );
    }
    let dir = std::env::temp_dir().join(format!("idle-tunnels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let policy = common::allow_all_policy(&dir, false);
    let (mut upstream_child, upstream) = start_upstream();
    let cap = (tunnels + 1000).to_string();
    let (mut gateway, proxy, _) = common::start_gateway(&[
        "--idle-timeout".as_ref(),
        "1h".as_ref(),
        "--max-connections".as_ref(),
        cap.as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ]);
    let pid = gateway.id();

    println!(
        "gateway {} (pid {pid}), {tunnels} tunnels",
        common::gateway_binary().display()
    );
    println!("| tunnels open | gateway RSS MiB |");
    println!("|---:|---:|");
    let base = common::rss_mib(pid);
    println!("| 0 | {base:.1} |");
    let mut held = Vec::with_capacity(tunnels);
    let step = (tunnels / 4).max(1);
    while held.len() < tunnels {
        let end = (held.len() + step).min(tunnels);
        while held.len() < end {
            let batch = (end - held.len()).min(100);
            let tasks: Vec<_> = (0..batch)
                .map(|_| tokio::spawn(open(proxy, upstream)))
                .collect();
            for task in tasks {
                held.push(task.await.expect("task"));
            }
        }
        // Let the gateway's allocator settle before reading its size.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("| {} | {:.1} |", held.len(), common::rss_mib(pid));
    }
    let full = common::rss_mib(pid);

    // With every tunnel open: new tunnels, and round trips on old ones.
    let mut fresh = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        drop(open(proxy, upstream).await);
        fresh.push(started.elapsed());
    }
    let mut old = Vec::new();
    for i in (0..held.len()).step_by((held.len() / 1000).max(1)) {
        let started = Instant::now();
        round_trip(&mut held[i]).await;
        old.push(started.elapsed());
    }
    let (fresh_p50, fresh_p99) = percentiles(fresh);
    let (old_p50, old_p99) = percentiles(old);
    println!();
    println!(
        "memory per open tunnel: {:.1} KiB ((RSS with {tunnels} open - RSS with none) / {tunnels})",
        (full - base) * 1024.0 / tunnels as f64
    );
    println!("| with {tunnels} tunnels open | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    println!("| new tunnel (CONNECT, 200, one round trip) | {fresh_p50:.2} | {fresh_p99:.2} |");
    println!("| round trip on an old tunnel | {old_p50:.2} | {old_p99:.2} |");

    drop(held);
    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = upstream_child.kill();
    let _ = upstream_child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
