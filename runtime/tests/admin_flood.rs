//! The admin listener under a connection flood: a peer that opens far more
//! connections than it may and sends nothing takes only its own share, and
//! a probe from another address is answered at once.

use std::net::SocketAddr;
use std::time::Duration;

use egress_runtime::admin::{self, MAX_PER_PEER, text};
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

#[tokio::test]
async fn a_flooding_peer_cannot_starve_the_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(admin::serve(listener, Duration::from_secs(30), |_| {
        text(StatusCode::OK, "ok\n")
    }));

    // 200 idle connections from one pod's address.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(connect_from("127.0.0.2", address).await);
    }
    // Those over its share are closed as they come.
    let mut closed = 0;
    for stream in &mut flood {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 200 - MAX_PER_PEER, "all but its share closed");

    // The kubelet, from another address, is answered at once.
    let mut probe = connect_from("127.0.0.1", address).await;
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), probe.read_to_string(&mut answer))
        .await
        .expect("answered under the flood")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(flood);
}
