//! Relayed CONNECT tunnels move bytes exactly: each side's end is passed on as
//! a half-close while the other direction keeps flowing, a large transfer
//! arrives unchanged both ways at once, an abrupt reset on either side ends
//! the tunnel (and its place) promptly, and bytes a client sends right behind
//! its CONNECT are not lost. Run through the plain-HTTP listener (spliced on
//! Linux) against a raw TCP upstream the test controls.

mod common;

use std::hash::Hasher;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::process::{Gateway, connect_with_timeout};
use common::{Pki, TempDir, policy_with_proxy, seed_without_proxy};

/// A gateway relaying (interception off) with loopback allowed.
fn relaying_gateway(tag: &str) -> (Gateway, TempDir) {
    relaying_gateway_with(tag, &[])
}

fn relaying_gateway_with(tag: &str, extra: &[&str]) -> (Gateway, TempDir) {
    let pki = Pki::new();
    let dir = TempDir::new(tag);
    let policy = policy_with_proxy(dir.path(), &seed_without_proxy(), false, &["127.0.0.1/32"]);
    (Gateway::start(&pki, &policy, extra), dir)
}

/// Opens a tunnel to `to` with `early` sent in the same write as the CONNECT;
/// returns the client side and the upstream's accepted side.
fn tunnel(gateway: &Gateway, upstream: &TcpListener, early: &[u8]) -> (TcpStream, TcpStream) {
    let to = upstream.local_addr().expect("addr");
    let mut client = connect_with_timeout(gateway.http, Duration::from_secs(20));
    let mut request = format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").into_bytes();
    request.extend_from_slice(early);
    client.write_all(&request).expect("write");
    let (server, _) = upstream.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = Vec::new();
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push(line);
    }
    assert!(head[0].starts_with("HTTP/1.1 200"), "{head:?}");
    assert!(reader.buffer().is_empty(), "nothing follows the 200 yet");
    (client, server)
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read to the end");
    all
}

#[test]
fn bytes_sent_right_behind_the_connect_reach_the_upstream() {
    let (gateway, _dir) = relaying_gateway("relay-early");
    let upstream = listener();
    let (mut client, mut server) = tunnel(&gateway, &upstream, b"hello before the 200");
    let mut got = [0u8; 20];
    server.read_exact(&mut got).expect("early bytes");
    assert_eq!(&got, b"hello before the 200");
    server.write_all(b"and back").expect("write");
    let mut back = [0u8; 8];
    client.read_exact(&mut back).expect("read");
    assert_eq!(&back, b"and back");
    drop((client, server));
    let line = gateway.decision(|d| d["http_method"] == "CONNECT");
    gateway.diagnostic(&["tunnel relayed by splicing"]);
    assert_eq!(line["request_size"].as_u64(), Some(20), "{line}");
    assert_eq!(line["response_size"].as_u64(), Some(8), "{line}");
}

#[test]
fn a_half_close_on_either_side_reaches_the_other_and_the_other_direction_still_flows() {
    let (gateway, _dir) = relaying_gateway("relay-half-close");
    let upstream = listener();
    // Who ends first, what it sends before its end, what the other side
    // sends after it.
    for (client_ends, last, after) in [
        (true, &b"request"[..], &b"reply after your end"[..]),
        (false, b"all I have", b"late upload"),
    ] {
        let (mut client, mut server) = tunnel(&gateway, &upstream, b"");
        let (ender, other, who) = if client_ends {
            (&mut client, &mut server, "the upstream")
        } else {
            (&mut server, &mut client, "the client")
        };
        ender.write_all(last).expect("write");
        ender.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(other), last, "{who} sees the end");
        // The other direction is still open: what is written after the end arrives.
        other.write_all(after).expect("write");
        other.shutdown(Shutdown::Write).expect("close");
        assert_eq!(read_to_end(ender), after, "{who} can still send");
    }
}

/// `len` bytes of a fixed pseudo-random stream, written in uneven pieces;
/// returns their hash.
fn send_stream(stream: &mut TcpStream, seed: u64, len: usize) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut state = seed;
    let mut sent = 0;
    let mut piece = 1;
    while sent < len {
        piece = (piece * 7 + 13) % 200_000 + 1;
        let n = piece.min(len - sent);
        let chunk: Vec<u8> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        hasher.write(&chunk);
        stream.write_all(&chunk).expect("send");
        sent += n;
    }
    stream.shutdown(Shutdown::Write).expect("end");
    hasher.finish()
}

/// Reads to the end; returns the count and hash of what arrived.
fn receive_stream(stream: &mut TcpStream) -> (usize, u64) {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buffer = vec![0u8; 50_000];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buffer).expect("receive");
        if n == 0 {
            return (total, hasher.finish());
        }
        hasher.write(&buffer[..n]);
        total += n;
    }
}

#[test]
fn a_large_transfer_arrives_unchanged_both_ways_at_once() {
    const LEN: usize = 48 * 1024 * 1024;
    let (gateway, _dir) = relaying_gateway("relay-large");
    let upstream = listener();
    let (client, server) = tunnel(&gateway, &upstream, b"");
    let transfer = |mut from: TcpStream, mut to: TcpStream, seed: u64| {
        let sender = std::thread::spawn(move || send_stream(&mut from, seed, LEN));
        let received = receive_stream(&mut to);
        (sender.join().expect("sender"), received)
    };
    let up = {
        let (client, server) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        std::thread::spawn(move || transfer(client, server, 1))
    };
    let (sent_down, (len_down, got_down)) = transfer(server, client, 2);
    let (sent_up, (len_up, got_up)) = up.join().expect("upload");
    assert_eq!((len_up, got_up), (LEN, sent_up), "client to upstream");
    assert_eq!((len_down, got_down), (LEN, sent_down), "upstream to client");
    let line = gateway.decision(|d| d["http_method"] == "CONNECT");
    assert_eq!(line["request_size"].as_u64(), Some(LEN as u64), "{line}");
    assert_eq!(line["response_size"].as_u64(), Some(LEN as u64), "{line}");
}

/// Closes `stream` with a reset instead of an orderly end (SO_LINGER with a
/// zero timeout makes close() send RST).
fn reset(stream: TcpStream) {
    rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).expect("SO_LINGER");
    drop(stream);
}

/// Waits until the peer of `stream` is gone (end or error), at most 5 s.
fn ends_within(stream: &mut TcpStream, what: &str) -> Duration {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) | Err(_) if started.elapsed() < Duration::from_secs(5) => started.elapsed(),
        other => panic!("{what}: the tunnel stayed open ({other:?})"),
    }
}

#[test]
fn a_reset_on_either_side_ends_the_tunnel_and_frees_its_place() {
    let (gateway, _dir) = relaying_gateway("relay-reset");
    let upstream = listener();
    for upstream_resets in [true, false] {
        let (mut client, mut server) = tunnel(&gateway, &upstream, b"");
        client.write_all(b"ping").expect("write");
        let mut ping = [0u8; 4];
        server.read_exact(&mut ping).expect("read");
        gateway.wait_metric("egress_open_tunnels", 1.0);
        if upstream_resets {
            reset(server);
            ends_within(&mut client, "upstream reset");
        } else {
            reset(client);
            ends_within(&mut server, "client reset");
        }
        gateway.wait_metric_below("egress_open_tunnels", 0.5);
    }
    let tunnels_logged = || {
        gateway
            .decisions()
            .iter()
            .filter(|d| d["http_method"] == "CONNECT")
            .count()
    };
    common::eventually(Duration::from_secs(5), || {
        (tunnels_logged() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("each reset tunnel is logged once: {}", tunnels_logged()));
}

#[test]
fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let (gateway, _dir) = relaying_gateway_with("relay-idle", &["--idle-timeout", "1s"]);
    let upstream = listener();
    let (mut client, mut server) = tunnel(&gateway, &upstream, b"");
    // Traffic within the timeout keeps it open.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        client.write_all(b"x").expect("write");
        let mut x = [0u8; 1];
        server.read_exact(&mut x).expect("still open");
    }
    let silent_for = ends_within(&mut client, "silent tunnel");
    assert!(
        silent_for >= Duration::from_millis(800),
        "closed after {silent_for:?}"
    );
    ends_within(&mut server, "silent tunnel, upstream side");
    gateway.decision(|d| d["http_method"] == "CONNECT");
}

/// Writes `len` bytes of `b` to `to` from another thread.
fn bulk_in_background(to: &TcpStream, len: usize) -> std::thread::JoinHandle<()> {
    let mut to = to.try_clone().expect("clone");
    std::thread::spawn(move || to.write_all(&vec![b'b'; len]).expect("bulk"))
}

/// TCP urgent data (`send(MSG_OOB)`, telnet's and FTP's "interrupt") marks a
/// byte in the stream; a relay that stops at the mark would stall that
/// direction until the idle timeout. The urgent byte itself is not relayed
/// (as with a read(2)-based relay); everything around it is, promptly.
#[cfg(target_os = "linux")]
#[test]
fn urgent_data_does_not_stall_a_tunnel() {
    let (gateway, _dir) = relaying_gateway("relay-urgent");
    let upstream = listener();
    let (client, server) = tunnel(&gateway, &upstream, b"");
    // Each way twice: after small chunks (read and written), and after a bulk
    // transfer (spliced, where splice(2) stops at the urgent mark).
    for (mut from, mut to, way, bulk) in [
        (&client, &server, "upload", 0),
        (&server, &client, "download", 0),
        (&client, &server, "upload after bulk", 256 * 1024),
        (&server, &client, "download after bulk", 256 * 1024),
    ] {
        to.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let sending = bulk_in_background(from, bulk);
        let mut received = vec![0u8; bulk];
        to.read_exact(&mut received).expect("bulk");
        assert!(received.iter().all(|&b| b == b'b'), "{way}");
        sending.join().expect("bulk sent");
        from.write_all(b"before").expect("write");
        rustix::net::send(from, b"!", rustix::net::SendFlags::OOB).expect("urgent byte");
        from.write_all(b"after").expect("write");
        let mut got = [0u8; 11];
        to.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{way}: the bytes around the urgent one arrive: {e}"));
        assert_eq!(&got, b"beforeafter", "{way}");
        // And the direction keeps flowing.
        from.write_all(b"more").expect("write");
        let mut more = [0u8; 4];
        to.read_exact(&mut more).expect("more");
        assert_eq!(&more, b"more", "{way}");
    }
}

/// Each thread of `pid` by name, with the nanoseconds it has run.
#[cfg(target_os = "linux")]
fn threads_run_time(pid: u32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            // A thread that has just ended has no files left.
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let ran = std::fs::read_to_string(dir.join("schedstat"))
                .expect("/proc/<pid>/task/<tid>/schedstat (CONFIG_SCHED_INFO)");
            let ran = ran.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_owned(), ran))
        })
        .collect()
}

/// `--relay-threads` starts that many relay loops, and a tunnel's bytes are
/// moved by one of them, not by the workers that parse requests.
#[cfg(target_os = "linux")]
#[test]
fn tunnels_are_relayed_on_the_relay_threads() {
    let (gateway, _dir) = relaying_gateway_with(
        "relay-threads",
        &["--relay-threads", "3", "--worker-threads", "2"],
    );
    let upstream = listener();
    let (mut client, mut server) = tunnel(&gateway, &upstream, b"");
    let before = threads_run_time(gateway.pid());
    let relays: Vec<&String> = before
        .iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("relay-"))
        .collect();
    assert_eq!(relays.len(), 3, "{before:?}");
    let uploading = std::thread::spawn(move || {
        send_stream(&mut client, 7, 32 << 20);
        client
    });
    let (got, _) = receive_stream(&mut server);
    assert_eq!(got, 32 << 20);
    drop(uploading.join().expect("upload"));
    let after = threads_run_time(gateway.pid());
    let ran = |relay: bool| -> u64 {
        after
            .iter()
            .filter(|(name, _)| name.starts_with("relay-") == relay)
            .map(|(name, ran)| {
                let was = before
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, r)| *r);
                ran.saturating_sub(was)
            })
            .sum()
    };
    let (relay, others) = (ran(true), ran(false));
    assert!(
        relay > 4 * others,
        "relay threads ran {relay} ns, the others {others} ns: {after:?}"
    );
}

/// The soft and hard open-file limits in a `/proc/<pid>/limits` file.
fn open_file_limits(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn the_open_file_limit_is_raised_and_a_cap_it_cannot_hold_is_named() {
    let (_, hard) = open_file_limits("self");
    let Ok(hard) = hard.parse::<u64>() else {
        return eprintln!("skipped: the hard open-file limit is unlimited here");
    };
    let dir = TempDir::new("relay-open-files");
    let policy = policy_with_proxy(dir.path(), &seed_without_proxy(), false, &["127.0.0.1/32"]);
    // Two sockets per connection: this cap needs more than the hard limit.
    let cap = (hard / 2 + 100).to_string();
    let args: Vec<String> = [
        "--log-format",
        "json",
        "run",
        "--policy",
        &policy.display().to_string(),
        "--http-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--max-connections",
        &cap,
    ]
    .map(str::to_owned)
    .to_vec();
    let gateway = Gateway::spawn_by(
        &["bash", "-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""],
        &args,
    );
    let warning = gateway.diagnostic(&["open-file limit"]);
    let (soft_now, hard_now) = open_file_limits(&gateway.pid().to_string());
    assert_eq!(
        soft_now, hard_now,
        "the soft limit (256 at exec) is raised to the hard one"
    );
    assert!(
        warning.contains(&format!("\"max_connections\":{cap}")),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("\"open_file_limit\":{hard}")),
        "{warning}"
    );
}
