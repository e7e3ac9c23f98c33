//! Bytes copied both ways, for relayed CONNECT tunnels and upgraded
//! connections (WebSocket); what opens, judges and logs them is
//! [`crate::listeners::tunnel`].
//!
//! A tunnel from the plain-HTTP listener joins two TCP sockets: on Linux it
//! moves to a relay loop ([`loops`]) and is spliced there ([`splice`]), and
//! an idle one holds no buffer. Other streams (a client on the HTTPS
//! listener, WebSocket upgrades) are copied through buffers.

pub mod idle;
#[cfg(target_os = "linux")]
pub mod loops;
#[cfg(target_os = "linux")]
pub mod splice;

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::framing::Inspected;
use crate::metrics::Metrics;
use crate::relay::idle::{Activity, Tracked};

/// What hyper serves a client connection over: its stream, with traffic
/// counted as activity and request heads inspected. A CONNECT tunnel from the
/// plain listener takes the `TcpStream` back out of it
/// ([`crate::listeners::tunnel`]).
pub type ServedIo<S> = TokioIo<Inspected<Tracked<S>>>;

/// What every relay answers to: the idle timeout, and the gauge of open
/// tunnels it counts in.
#[derive(Clone, Copy, Debug)]
pub struct Watch<'a> {
    /// How long a relay may move nothing before it is closed.
    pub idle_timeout: Duration,
    /// Where it counts as open.
    pub metrics: &'a Metrics,
}

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

impl std::ops::Add for Relayed {
    type Output = Relayed;

    fn add(self, other: Relayed) -> Relayed {
        Relayed {
            sent: self.sent + other.sent,
            received: self.received + other.received,
        }
    }
}

/// Copies bytes both ways until both sides are done, either side fails,
/// nothing moves for the idle timeout, or `stop` completes.
pub async fn relay<A, B>(
    watch: Watch<'_>,
    client: A,
    upstream: B,
    stop: Pin<&mut impl Future<Output = ()>>,
) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::default();
    let mut client = activity.track(client);
    let mut upstream = activity.track(upstream);
    {
        let moved = pin!(tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            COPY_BUFFER,
            COPY_BUFFER,
        ));
        until_done(watch, &activity, moved, stop).await;
    }
    Relayed {
        sent: client.observer().bytes_read(),
        received: upstream.observer().bytes_read(),
    }
}

/// Drives `moved` until it ends (both sides done, or either failed: a reset
/// just ends the relay), nothing moves for the idle timeout, or `stop`
/// completes; the tunnel counts as open meanwhile.
///
/// The futures are pinned by the caller and passed by reference, here and in
/// the functions above: moved from one async function into the next, each
/// would be stored again in every frame (a tunnel's task, held for its whole
/// life, was 5.5 KiB that way, 3.4 KiB now).
async fn until_done(
    watch: Watch<'_>,
    activity: &Activity,
    moved: Pin<&mut impl Future>,
    stop: Pin<&mut impl Future<Output = ()>>,
) {
    let _open = crate::metrics::OpenTunnel::new(watch.metrics);
    tokio::select! {
        _ = moved => {}
        _ = activity.idle_exceeds(watch.idle_timeout) => {}
        () = stop => {}
    }
}

/// [`relay`] between two TCP sockets by splicing (`crate::relay::splice`), on the
/// relay loop this runs on. `early` is what the client sent that was read
/// already, sent on first.
#[cfg(target_os = "linux")]
pub async fn splice_relay(
    watch: Watch<'_>,
    client: std::net::TcpStream,
    early: bytes::Bytes,
    upstream: std::net::TcpStream,
    stop: Pin<&mut impl Future<Output = ()>>,
) -> std::io::Result<Relayed> {
    use std::sync::atomic::Ordering;

    use crate::relay::splice::register;
    let activity = Activity::default();
    let sent = std::sync::atomic::AtomicU64::new(0);
    let received = std::sync::atomic::AtomicU64::new(0);
    tracing::debug!(client = ?client.peer_addr().ok(), "tunnel relayed by splicing");
    let (client, upstream) = (register(client)?, register(upstream)?);
    let moved = pin!(crate::relay::splice::relay(
        &client, &upstream, early, &activity, &sent, &received
    ));
    until_done(watch, &activity, moved, stop).await;
    Ok(Relayed {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
    })
}
