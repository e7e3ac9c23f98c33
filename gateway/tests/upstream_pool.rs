//! Upstream connections shared across client connections: one client's
//! requests reuse the gateway's connection to a destination whatever
//! connection they came on, another client's never do, a connection left in
//! doubt (a response with bytes after its end, a body the client stopped
//! reading) is never handed on, and a kept connection the destination
//! closes under a request costs a safe request nothing and any other an
//! error, never a second copy.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::curl;
use common::process::Gateway;
use common::{Pki, TempDir, seed_policy};

/// A destination that answers `conn=<n> path=<path>` (`n` counting its
/// connections from 0), `/poison` with five bytes and a second response
/// behind them, `/large` with 8 MiB written slowly, `/then-close` as any
/// path but closes the connection after (without saying so), and
/// `/drop-next` as any path but closes the connection when the next request
/// on it has arrived, unanswered (a server closing an idle connection just
/// as a request comes).
struct Destination {
    port: u16,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Destination {
    fn start() -> Destination {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, log) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                std::thread::spawn(move || serve(n, stream, &log));
            }
        });
        Destination {
            port,
            connections,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The connections the requests for paths starting with `prefix` came on.
    fn connections_of(&self, prefix: &str) -> Vec<usize> {
        let mut of: Vec<usize> = self
            .seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(_, path)| path.starts_with(prefix))
            .map(|(n, _)| *n)
            .collect();
        of.dedup();
        of
    }
}

/// Requests of one connection, one at a time (their bodies are not read).
fn serve(n: usize, stream: TcpStream, seen: &Mutex<Vec<(usize, String)>>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut drop_next = false;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        seen.lock().expect("seen").push((n, path.clone()));
        if drop_next {
            return;
        }
        drop_next = path == "/drop-next";
        let written = match path.as_str() {
            "/poison" => writer.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
                  HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned",
            ),
            "/large" => {
                let chunk = vec![b'x'; 64 * 1024];
                let mut written =
                    writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8388608\r\n\r\n");
                for _ in 0..128 {
                    written = written.and_then(|()| writer.write_all(&chunk));
                    std::thread::sleep(Duration::from_millis(5));
                }
                written
            }
            _ => {
                let body = format!("conn={n} path={path}");
                writer.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
            }
        };
        if written.is_err() || path == "/then-close" {
            return;
        }
    }
}

fn gateway(tag: &str) -> (Gateway, TempDir) {
    let pki = Pki::new();
    let dir = TempDir::new(tag);
    let policy = seed_policy(dir.path(), false);
    (Gateway::start(&pki, &policy, &[]), dir)
}

/// GET `url` through the gateway on a new connection from `source`.
fn get_from(gateway: &Gateway, source: &str, url: &str) -> String {
    let result = curl(&["--interface", source, "--proxy", &gateway.http_proxy(), url]);
    assert_eq!(result.status, 200, "{result:?}");
    result.body
}

#[test]
fn one_client_s_new_connections_reuse_one_upstream_connection() {
    let (gateway, _dir) = gateway("pool-reuse");
    let destination = Destination::start();
    for i in 0..4 {
        let body = get_from(&gateway, "127.0.0.1", &destination.url(&format!("/a/{i}")));
        assert_eq!(body, format!("conn=0 path=/a/{i}"));
    }
    assert_eq!(destination.connections(), 1);
}

#[test]
fn two_clients_never_share_an_upstream_connection() {
    let (gateway, _dir) = gateway("pool-clients");
    let destination = Destination::start();
    for i in 0..3 {
        for source in ["127.0.0.1", "127.0.0.2"] {
            let path = format!("/{source}/{i}");
            let body = get_from(&gateway, source, &destination.url(&path));
            assert!(body.ends_with(&format!(" path={path}")), "{body}");
        }
    }
    let (first, second) = (
        destination.connections_of("/127.0.0.1/"),
        destination.connections_of("/127.0.0.2/"),
    );
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second);
    assert_eq!(destination.connections(), 2);
}

#[test]
fn a_connection_with_bytes_after_its_response_is_not_handed_on() {
    let (gateway, _dir) = gateway("pool-poison");
    let destination = Destination::start();
    assert_eq!(
        get_from(&gateway, "127.0.0.1", &destination.url("/poison")),
        "hello"
    );
    let after = get_from(&gateway, "127.0.0.1", &destination.url("/after"));
    assert_eq!(
        after, "conn=1 path=/after",
        "never the bytes behind the first response"
    );
    let again = get_from(&gateway, "127.0.0.1", &destination.url("/again"));
    assert_eq!(again, "conn=1 path=/again", "the new connection is kept");
}

#[test]
fn a_connection_whose_response_was_not_read_to_the_end_is_not_handed_on() {
    let (gateway, _dir) = gateway("pool-half-read");
    let destination = Destination::start();
    let mut client = TcpStream::connect(gateway.http).expect("connect");
    write!(
        client,
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        destination.url("/large"),
        destination.port
    )
    .expect("request");
    let mut some = vec![0; 256 * 1024];
    client.read_exact(&mut some).expect("the start of the body");
    drop(client);
    // Longer than the destination takes to write the whole body: a
    // connection that drained it and went back to the pool would be taken.
    std::thread::sleep(Duration::from_millis(1500));
    let after = get_from(&gateway, "127.0.0.1", &destination.url("/after"));
    assert_eq!(after, "conn=1 path=/after");
    let again = get_from(&gateway, "127.0.0.1", &destination.url("/again"));
    assert_eq!(again, "conn=1 path=/again", "the new connection is kept");
    assert_eq!(destination.connections(), 2);
}

#[test]
fn a_connection_the_destination_closed_is_replaced() {
    let (gateway, _dir) = gateway("pool-closed");
    let destination = Destination::start();
    let url = destination.url("/then-close");
    assert_eq!(
        get_from(&gateway, "127.0.0.1", &url),
        "conn=0 path=/then-close"
    );
    for n in [1, 2] {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            get_from(&gateway, "127.0.0.1", &url),
            format!("conn={n} path=/then-close")
        );
    }
}

#[test]
fn a_safe_request_the_kept_connection_loses_goes_again_on_a_new_one() {
    let (gateway, _dir) = gateway("pool-lost");
    let destination = Destination::start();
    assert_eq!(
        get_from(&gateway, "127.0.0.1", &destination.url("/drop-next")),
        "conn=0 path=/drop-next"
    );
    // The kept connection takes the GET and closes unanswered: the gateway
    // sends it again on a new connection.
    assert_eq!(
        get_from(&gateway, "127.0.0.1", &destination.url("/lost")),
        "conn=1 path=/lost"
    );
    assert_eq!(destination.connections_of("/lost"), [0, 1]);

    // A POST is never sent twice: the client hears that it failed.
    assert_eq!(
        get_from(&gateway, "127.0.0.1", &destination.url("/drop-next")),
        "conn=1 path=/drop-next"
    );
    let posted = curl(&[
        "--proxy",
        &gateway.http_proxy(),
        "--data",
        "once",
        &destination.url("/posted"),
    ]);
    assert_eq!(posted.status, 502, "{posted:?}");
    assert_eq!(destination.connections_of("/posted"), [1]);
}
