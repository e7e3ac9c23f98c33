//! The admin listener under connection floods: a peer that opens far more
//! connections than it may and sends nothing takes only its share, and when
//! several peers take every slot, a probe from another address is still
//! answered at once.

use std::net::SocketAddr;
use std::time::Duration;

use egress_runtime::admin::{self, MAX_CONNECTIONS, MAX_PER_PEER, text};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A connection to `to` from loopback address `from` (all of 127/8 is local).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

/// How many of `streams` the server closed (it sends nothing on its own),
/// each given half a second, all at once.
async fn closed(streams: Vec<TcpStream>) -> usize {
    let mut reads = tokio::task::JoinSet::new();
    for mut stream in streams {
        reads.spawn(async move {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        });
    }
    reads
        .join_all()
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}

/// A health probe from `from`: the status line, within two seconds.
async fn probe(from: &str, to: SocketAddr) -> String {
    let mut probe = connect_from(from, to).await;
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), probe.read_to_string(&mut answer))
        .await
        .expect("answered under the flood")
        .expect("read");
    answer.lines().next().unwrap_or_default().to_owned()
}

async fn listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(admin::serve(listener, Duration::from_secs(30), |_| {
        text(StatusCode::OK, "ok\n")
    }));
    address
}

#[tokio::test]
async fn one_flooding_peer_takes_only_its_share() {
    let address = listener().await;
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(connect_from("127.0.0.2", address).await);
    }
    assert_eq!(
        closed(flood).await,
        100 - MAX_PER_PEER,
        "all but its share closed"
    );
    assert_eq!(probe("127.0.0.1", address).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn peers_that_take_every_slot_still_leave_the_probes_one() {
    let address = listener().await;
    // Enough peers, each with its full share, to take every slot.
    let peers = MAX_CONNECTIONS / MAX_PER_PEER;
    let mut flood = Vec::new();
    for peer in 0..peers {
        for _ in 0..MAX_PER_PEER {
            flood.push(connect_from(&format!("127.0.1.{}", peer + 1), address).await);
        }
    }
    // Every slot is taken: the probes are served all the same, each time
    // from an idle connection of a peer holding the most.
    for _ in 0..3 {
        assert_eq!(probe("127.0.0.1", address).await, "HTTP/1.1 200 OK");
    }
    let shut = closed(flood).await;
    assert!((1..=3).contains(&shut), "{shut} flood connections closed");
}
