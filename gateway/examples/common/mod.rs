//! What the measuring examples share: the gateway binary they start, its
//! listeners, and its resident memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `$EGRESS_GATEWAY_BIN` (to compare builds), or the `egress-gateway` built
/// beside this example.
pub fn gateway_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("EGRESS_GATEWAY_BIN") {
        return bin.into();
    }
    // target/<profile>/examples/<example> -> target/<profile>/egress-gateway
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("egress-gateway")
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The gateway running `run` with JSON diagnostics, its HTTP and admin
/// listeners on free loopback ports, and `args`; returns it with the
/// addresses of those two listeners.
pub fn start_gateway(args: &[&std::ffi::OsStr]) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(gateway_binary())
        .args([
            "--log-format",
            "json",
            "run",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the release gateway (cargo build --release -p egress-gateway first)");
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
    std::thread::spawn(move || lines.for_each(drop));
    (child, proxy.expect("proxy"), admin.expect("admin"))
}

/// A CONNECT tunnel to `target` (`host:port`) through `proxy`, its 200 and
/// headers read.
pub async fn connect(
    proxy: SocketAddr,
    target: &str,
) -> tokio::io::BufReader<tokio::net::TcpStream> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect to gateway");
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "CONNECT refused: {line}");
    while {
        line.clear();
        reader.read_line(&mut line).await.expect("header") > 2
    } {}
    reader
}

/// A policy in `dir` allowing everything, loopback destinations included,
/// logging only denials; interception as given.
pub fn allow_all_policy(dir: &std::path::Path, intercept: bool) -> PathBuf {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {{name: bench}}\n\
             spec: {{defaultActions: {{preDNS: Allow, preRequest: Allow, postResponse: Allow}}}}\n---\n\
             apiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {{name: bench}}\n\
             spec: {{configurationRef: {{name: bench}}, tlsInterception: {{enabled: {intercept}}}, destinations: {{allowPrivateCIDRs: [\"127.0.0.0/8\"]}}, logging: {{actions: [Deny]}}}}\n"
        ),
    )
    .expect("policy");
    policy
}
