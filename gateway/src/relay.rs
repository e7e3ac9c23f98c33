//! Bytes copied both ways: relayed CONNECT tunnels (interception off, or the
//! name bypassed) and upgraded connections (WebSocket). A relayed tunnel is
//! judged again whenever the policy changes, and closed, with a decision log
//! line, when the new policy denies its destination.
//!
//! A tunnel from the plain-HTTP listener joins two TCP sockets: on Linux it is
//! spliced (`crate::splice`), its bytes never copied through the gateway, and
//! an idle one holds no buffer. Other streams (a client on the HTTPS
//! listener, WebSocket upgrades) are copied through buffers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::gateway::{Connection, Gateway};
use crate::idle::Activity;
use crate::pipeline::Exchange;

/// Buffer size for each direction of a copied relay, held for the relay's
/// life. Decrypted TLS arrives in records of at most 16 KiB, so larger buffers
/// would not make fewer reads on the HTTPS listener.
const COPY_BUFFER: usize = 16 * 1024;

/// Bytes read from each side.
#[derive(Clone, Copy, Debug, Default)]
pub struct Relayed {
    /// From the client.
    pub sent: u64,
    /// From the upstream.
    pub received: u64,
}

/// Copies bytes both ways until both sides are done, either side fails,
/// nothing moves for the idle timeout, or `stop` completes.
pub async fn relay<A, B>(
    gw: &Gateway,
    client: A,
    upstream: B,
    stop: impl Future<Output = ()>,
) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::default();
    let mut client = activity.track(client);
    let mut upstream = activity.track(upstream);
    let (from_client, from_upstream) = (client.bytes_read(), upstream.bytes_read());
    let moved = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        COPY_BUFFER,
        COPY_BUFFER,
    );
    until_done(gw, &activity, moved, stop).await;
    Relayed {
        sent: from_client.load(Ordering::Relaxed),
        received: from_upstream.load(Ordering::Relaxed),
    }
}

/// Drives `moved` until it ends (both sides done, or either failed: a reset
/// just ends the relay), nothing moves for the idle timeout, or `stop`
/// completes; the tunnel counts as open meanwhile.
async fn until_done(
    gw: &Gateway,
    activity: &Activity,
    moved: impl Future,
    stop: impl Future<Output = ()>,
) {
    let _open = crate::metrics::OpenTunnel::new(&gw.metrics);
    tokio::select! {
        _ = moved => {}
        _ = activity.idle_exceeds(gw.limits.idle_timeout) => {}
        () = stop => {}
    }
}

/// [`relay`] between two TCP sockets by splicing. `early` is what the client
/// sent after its CONNECT before the tunnel opened (read by hyper already).
#[cfg(target_os = "linux")]
async fn splice_relay(
    gw: &Gateway,
    client: TcpStream,
    early: bytes::Bytes,
    upstream: TcpStream,
    stop: impl Future<Output = ()>,
) -> Relayed {
    let activity = Activity::default();
    let sent = std::sync::atomic::AtomicU64::new(0);
    let received = std::sync::atomic::AtomicU64::new(0);
    tracing::debug!(client = ?client.peer_addr().ok(), "tunnel relayed by splicing");
    let moved = crate::splice::relay(&client, &upstream, early, &activity, &sent, &received);
    until_done(gw, &activity, moved, stop).await;
    Relayed {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
    }
}

/// A relayed CONNECT tunnel, from the client's upgrade to its close; logged
/// when it closes.
pub async fn tunnel(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    exchange: Exchange,
    on_upgrade: OnUpgrade,
    upstream: TcpStream,
) {
    let client = match on_upgrade.await {
        Ok(client) => client,
        Err(e) => return gw.fail(exchange, -1, (0, 0), &Error::Upgrade(e.to_string())),
    };
    let mut revoked = None;
    let stop = async {
        revoked = Some(revocation(&gw, &exchange).await);
    };
    #[cfg(target_os = "linux")]
    let relayed = match client.downcast::<crate::server::ServedIo<TcpStream>>() {
        Ok(plain) => {
            let client = plain.io.into_inner().into_inner().into_inner();
            splice_relay(&gw, client, plain.read_buf, upstream, stop).await
        }
        Err(client) => relay(&gw, TokioIo::new(client), upstream, stop).await,
    };
    #[cfg(not(target_os = "linux"))]
    let relayed = relay(&gw, TokioIo::new(client), upstream, stop).await;
    drop(connection);
    match revoked {
        None => gw.record(exchange.finish(-1, relayed.sent, relayed.received, None)),
        Some((denied, hash)) => {
            gw.metrics.tunnels_revoked.inc();
            tracing::info!(
                destination = %exchange.target().authority(),
                client = %exchange.client().addr,
                policy = %hash,
                "tunnel closed: the new policy denies it"
            );
            let mut finished = denied.finish(-1, relayed.sent, relayed.received, None);
            finished.record.revoked_by = Some(hash);
            gw.record(finished);
        }
    }
}

/// Completes when a newly installed policy denies the tunnel's destination:
/// the denying decision and that policy's hash.
async fn revocation(gw: &Gateway, tunnel: &Exchange) -> (Exchange, String) {
    let mut policies = gw.policy.subscribe();
    loop {
        if policies.changed().await.is_err() {
            // The store is gone: the gateway is stopping.
            std::future::pending::<()>().await;
        }
        let Some(loaded) = policies.borrow_and_update().clone() else {
            continue;
        };
        if let Some(denied) = tunnel.reevaluate(loaded.policy.clone(), &gw.guard) {
            return (denied, loaded.policy.hash().to_owned());
        }
    }
}
