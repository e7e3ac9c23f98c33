//! A relayed CONNECT tunnel, from the client's upgrade to its close
//! ([`tunnel`]): what the client sends first is read and judged before any
//! of it is sent on, the tunnel is judged again whenever the policy changes
//! and closed, with a decision log line, when the new policy denies it
//! ([`revocation`], for upgraded connections too). The bytes are moved by
//! [`crate::relay`].

use std::pin::pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use egress_policy::CompiledPolicy;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::gateway::{Connection, Gateway};
use crate::pipeline::{self, ClientHello, Exchange, FirstFlight, Stop, Stopped};
#[cfg(target_os = "linux")]
use crate::relay::ServedIo;
use crate::relay::{self, Relayed};
use crate::tls::client_hello::{self, Reading, ServerAnswer};

/// A relayed tunnel's opening, judged and passed: the exchange to relay and
/// log from now on, what the client sent that is still to be sent on
/// (`pending`), and what was passed each way already (`passed`: a first
/// ClientHello and the destination's answer to it), counted in its line.
struct Opened {
    exchange: Exchange,
    pending: Bytes,
    passed: Relayed,
}

/// The two sides of a tunnel.
enum Joined {
    /// A client on the plain-HTTP listener: two TCP sockets, spliced on a
    /// relay loop.
    #[cfg(target_os = "linux")]
    Spliced {
        client: std::net::TcpStream,
        upstream: std::net::TcpStream,
    },
    /// Anything else, copied.
    Copied {
        client: TokioIo<Upgraded>,
        upstream: TcpStream,
    },
}

/// A relayed CONNECT tunnel, from the client's upgrade to its close; logged
/// when it closes. What the client sends first is read and judged
/// ([`first_flight`]) before any of it is sent on.
/// A tunnel from the plain-HTTP listener moves to a relay loop
/// ([`crate::relay::loops`]) as soon as its CONNECT is answered
/// ([`open_on_loop`]).
pub async fn tunnel(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    exchange: Exchange,
    on_upgrade: OnUpgrade,
    mut upstream: TcpStream,
) {
    let client = match on_upgrade.await {
        Ok(client) => client,
        Err(e) => return gw.fail(exchange, -1, (0, 0), &Error::Upgrade(e.to_string())),
    };
    #[cfg(target_os = "linux")]
    let client = match client.downcast::<ServedIo<TcpStream>>() {
        Ok(plain) => {
            let client = plain.io.into_inner().into_inner().into_inner();
            // Deregistered here, registered again on the relay loop.
            match both(client.into_std(), upstream.into_std()) {
                Ok((client, upstream)) => {
                    let early = plain.read_buf;
                    let tunnel =
                        open_on_loop(gw.clone(), connection, exchange, client, early, upstream);
                    gw.relays.next().spawn(gw.tasks.track_future(tunnel));
                }
                Err(e) => gw.fail(exchange, -1, (0, 0), &Error::Upgrade(e.to_string())),
            }
            return;
        }
        Err(client) => client,
    };
    let mut client = TokioIo::new(client);
    let Some(opened) = first_flight(&gw, exchange, &mut client, Bytes::new(), &mut upstream).await
    else {
        return;
    };
    relay_and_log(gw, connection, opened, Joined::Copied { client, upstream }).await;
}

/// A tunnel from the plain-HTTP listener, opened ([`first_flight`]) on the
/// relay loop this runs on, then relayed there in a task of its own: the
/// opening's state is not held for the tunnel's life. Opening it here rather
/// than on the main runtime spares the wake-ups of a task there for the
/// client's first flight and the destination's answer (about 7% of a new
/// tunnel's CPU; docs/benchmarks.md).
#[cfg(target_os = "linux")]
async fn open_on_loop(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    exchange: Exchange,
    client: std::net::TcpStream,
    early: Bytes,
    upstream: std::net::TcpStream,
) {
    let (mut client, mut upstream) =
        match both(TcpStream::from_std(client), TcpStream::from_std(upstream)) {
            Ok(registered) => registered,
            Err(e) => return gw.fail(exchange, -1, (0, 0), &Error::Upgrade(e.to_string())),
        };
    let Some(opened) = first_flight(&gw, exchange, &mut client, early, &mut upstream).await else {
        return;
    };
    // Deregistered here, registered again by the splice.
    match both(client.into_std(), upstream.into_std()) {
        Ok((client, upstream)) => {
            let joined = Joined::Spliced { client, upstream };
            let tunnel = relay_and_log(gw.clone(), connection, opened, joined);
            tokio::spawn(gw.tasks.track_future(tunnel));
        }
        Err(e) => {
            let passed = (opened.passed.sent, opened.passed.received);
            gw.fail(opened.exchange, -1, passed, &Error::Upgrade(e.to_string()));
        }
    }
}

/// Both sockets of a tunnel, or the first error.
#[cfg(target_os = "linux")]
fn both<T, U>(client: std::io::Result<T>, upstream: std::io::Result<U>) -> std::io::Result<(T, U)> {
    Ok((client?, upstream?))
}

/// What the client of a relayed tunnel sends first, judged
/// ([`pipeline::first_flight`]), and passed on when it is a ClientHello
/// ([`retried`]); `None` when the tunnel was closed (and logged). `early`
/// is what the client sent behind its CONNECT,
/// read already. A destination that speaks first ends the wait: no TLS
/// client waits for the server, and protocols where the server speaks first
/// (SSH, SMTP) go on as they are. On the ports the proxy expects TLS on, a
/// client has the handshake timeout to send its ClientHello; elsewhere, the
/// idle timeout. A policy change meanwhile is applied as to any open tunnel.
async fn first_flight<S>(
    gw: &Gateway,
    exchange: Exchange,
    client: &mut S,
    early: Bytes,
    upstream: &mut TcpStream,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls_port = exchange
        .policy()
        .proxy()
        .expects_tls(exchange.target().port);
    let within = if tls_port {
        gw.limits.handshake_timeout
    } else {
        gw.limits.idle_timeout
    };
    let mut read = BytesMut::from(&early[..]);
    let mut probe = [0u8; 1];
    let waited = {
        let judge = |policy| pipeline::rejudge(&exchange, policy, &gw.guard, None);
        let first = async {
            tokio::select! {
                flight = read_flight(client, &mut read, client_hello::read) => Waited::Flight(flight),
                // Left in place for the client: only whether anything came.
                _ = upstream.peek(&mut probe) => Waited::Flight(FirstFlight::ServerFirst),
                revoked = revocation(gw, exchange.policy(), judge) => Waited::Revoked(Box::new(revoked)),
            }
        };
        tokio::time::timeout(within, first).await
    };
    let flight = match waited {
        Ok(Waited::Flight(flight)) => flight,
        Ok(Waited::Revoked(revoked)) => {
            let _ = client.shutdown().await;
            record_relayed(gw, exchange, -1, Relayed::default(), Some(*revoked));
            return None;
        }
        Err(_) if !tls_port => {
            // Idle as long as a relayed tunnel may be: closed as the relay would.
            let _ = client.shutdown().await;
            gw.record(exchange.finish(-1, 0, 0, None));
            return None;
        }
        Err(_) => FirstFlight::Silent,
    };
    let read = read.freeze();
    match pipeline::first_flight(exchange, &flight, &gw.guard) {
        Ok(exchange) => match &flight {
            FirstFlight::Hello(first) => retried(gw, exchange, first, client, upstream, read).await,
            _ => Some(Opened {
                exchange,
                pending: read,
                passed: Relayed::default(),
            }),
        },
        Err(stopped) => refuse(gw, client, stopped, &flight, Relayed::default()).await,
    }
}

/// After a ClientHello that passed, what the destination answers: a
/// HelloRetryRequest makes the client send a second ClientHello, read and
/// judged too ([`pipeline::second_flight`]) before it is sent on. The first
/// ClientHello (`sent`) and the answer are passed on here; what the client
/// sent since is pending.
async fn retried<S>(
    gw: &Gateway,
    exchange: Exchange,
    first: &ClientHello,
    client: &mut S,
    upstream: &mut TcpStream,
    sent: Bytes,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut passed = Relayed {
        sent: sent.len() as u64,
        received: 0,
    };
    let opened = |exchange, pending, passed| {
        Some(Opened {
            exchange,
            pending,
            passed,
        })
    };
    // A broken side ends the relay at once, which logs it.
    if upstream.write_all(&sent).await.is_err() {
        return opened(exchange, Bytes::new(), passed);
    }
    let mut answer = BytesMut::new();
    let answered = tokio::time::timeout(gw.limits.handshake_timeout, async {
        loop {
            match client_hello::server_answer(&answer) {
                ServerAnswer::NeedAtLeast(n) if answer.len() < n => {
                    // Whatever has come, up to one whole record: one read
                    // usually holds the answer, and all of it goes to the
                    // client anyway.
                    let room = MAX_RECORD
                        .saturating_sub(answer.len())
                        .max(n - answer.len());
                    let mut limited = (&mut *upstream).take(room as u64);
                    match limited.read_buf(&mut answer).await {
                        Ok(0) | Err(_) => return ServerAnswer::Other,
                        Ok(_) => {}
                    }
                }
                ServerAnswer::NeedAtLeast(_) => return ServerAnswer::Other,
                decided => return decided,
            }
        }
    })
    .await
    .unwrap_or(ServerAnswer::Other);
    passed.received = answer.len() as u64;
    if client.write_all(&answer).await.is_err() || answered != ServerAnswer::Retry {
        return opened(exchange, Bytes::new(), passed);
    }
    let mut again = BytesMut::new();
    let second = tokio::time::timeout(
        gw.limits.handshake_timeout,
        read_flight(client, &mut again, client_hello::read_second),
    )
    .await
    .unwrap_or(FirstFlight::Silent);
    match pipeline::second_flight(exchange, first, &second) {
        Ok(exchange) => opened(exchange, again.freeze(), passed),
        Err(stopped) => refuse(gw, client, stopped, &second, passed).await,
    }
}

/// Closes a refused tunnel and logs it, with what was `passed` before: a
/// client that spoke TLS reads why.
async fn refuse<S: AsyncWrite + Unpin>(
    gw: &Gateway,
    client: &mut S,
    Stopped(exchange, stop): Stopped,
    flight: &FirstFlight,
    passed: Relayed,
) -> Option<Opened> {
    if matches!(flight, FirstFlight::Hello(_) | FirstFlight::Malformed(_)) {
        // The client's TLS stack says why, rather than "connection closed".
        let _ = client.write_all(&access_denied_alert()).await;
    }
    let _ = client.shutdown().await;
    let Relayed { sent, received } = passed;
    match stop {
        Stop::Denied => gw.record(exchange.finish(-1, sent, received, None)),
        Stop::Failed(error) => gw.fail(exchange, -1, (sent, received), &error),
    }
    None
}

/// The largest TLS record: its header and 16 KiB of payload (plus what
/// an encrypted record may add).
const MAX_RECORD: usize = 5 + 16 * 1024 + 256;

/// How the wait for a tunnel's first bytes ended.
enum Waited {
    /// What they were.
    Flight(FirstFlight),
    /// A new policy denies the tunnel: its denying decision and hash
    /// (boxed: the common outcome does not carry room for it).
    Revoked(Box<(Exchange, String)>),
}

/// Reads into `read` until `reader` decides it holds a whole ClientHello
/// or something that is not one (at most [`client_hello::MAX_FIRST_FLIGHT`]
/// bytes), parsing only when enough has arrived to decide.
async fn read_flight<S: AsyncRead + Unpin>(
    client: &mut S,
    read: &mut BytesMut,
    reader: fn(&[u8]) -> Reading,
) -> FirstFlight {
    let mut need = 0;
    loop {
        if read.len() >= need {
            match reader(read) {
                Reading::Done(flight) => return flight,
                Reading::NeedAtLeast(at_least) => need = at_least,
            }
        }
        let room = (client_hello::MAX_FIRST_FLIGHT + 1).saturating_sub(read.len());
        read.reserve(room.min(4096));
        let mut limited = (&mut *client).take(room as u64);
        match limited.read_buf(read).await {
            Ok(0) | Err(_) => return FirstFlight::Silent,
            Ok(_) => {}
        }
    }
}

/// A TLS alert record, fatal `access_denied` (RFC 8446 section 6): what a
/// refused relayed tunnel's client reads before the close. Its version
/// field is TLS 1.2's, as every TLS 1.3 record's.
fn access_denied_alert() -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49]
}

/// Relays a tunnel until it ends or the policy revokes it, then logs it.
async fn relay_and_log(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    opened: Opened,
    joined: Joined,
) {
    let Opened {
        exchange,
        pending,
        passed,
    } = opened;
    let mut revoked = None;
    let relayed = {
        let stop = pin!(async {
            let judge = |policy| pipeline::rejudge(&exchange, policy, &gw.guard, None);
            revoked = Some(Box::new(revocation(&gw, exchange.policy(), judge).await));
        });
        match joined {
            #[cfg(target_os = "linux")]
            Joined::Spliced { client, upstream } => {
                relay::splice_relay(gw.watch(), client, pending, upstream, stop).await
            }
            // Boxed: the spliced arm's task, the common one, does not carry
            // room for it.
            Joined::Copied {
                client,
                mut upstream,
            } => match upstream.write_all(&pending).await {
                Ok(()) => {
                    let relayed = Box::pin(relay::relay(gw.watch(), client, upstream, stop)).await;
                    Ok(Relayed {
                        sent: relayed.sent + pending.len() as u64,
                        ..relayed
                    })
                }
                Err(e) => Err(e),
            },
        }
    };
    drop(connection);
    match relayed {
        Ok(relayed) => record_relayed(&gw, exchange, -1, passed + relayed, revoked.map(|r| *r)),
        // The epoll set refused the sockets (memory, max_user_watches).
        Err(e) => {
            let passed = (passed.sent, passed.received);
            gw.fail(exchange, -1, passed, &Error::Upgrade(e.to_string()));
        }
    }
}

/// Logs a relayed connection (a tunnel, `status` -1, or an upgraded one,
/// 101) once it has closed; one a new policy closed is logged with that
/// policy's denying decision and hash (`revoked_by`).
pub(crate) fn record_relayed(
    gw: &Gateway,
    exchange: Exchange,
    status: i32,
    relayed: Relayed,
    revoked: Option<(Exchange, String)>,
) {
    let Some((denied, hash)) = revoked else {
        return gw.record(exchange.finish(status, relayed.sent, relayed.received, None));
    };
    gw.metrics.tunnels_revoked.inc();
    tracing::info!(
        destination = %exchange.target().authority(),
        client = %exchange.client().addr,
        policy = %hash,
        "relayed connection closed: the new policy denies it"
    );
    let mut finished = denied.finish(status, relayed.sent, relayed.received, None);
    finished.record.revoked_by = Some(hash);
    gw.record(finished);
}

/// Completes when a newly installed policy denies a relayed connection, as
/// `judge` (`pipeline::rejudge` of the connection) finds: the denying
/// decision and that policy's hash. `judged_with` is the policy the
/// connection was let through by: one installed since, before this watch
/// began (while the connection was being set up), is judged at once.
pub(crate) async fn revocation(
    gw: &Gateway,
    judged_with: &Arc<CompiledPolicy>,
    judge: impl Fn(Arc<CompiledPolicy>) -> Option<Exchange>,
) -> (Exchange, String) {
    let mut policies = gw.policy.subscribe();
    let mut installed_meanwhile = policies
        .borrow()
        .as_ref()
        .is_some_and(|loaded| !Arc::ptr_eq(&loaded.policy, judged_with));
    loop {
        if !std::mem::take(&mut installed_meanwhile) && policies.changed().await.is_err() {
            // The store is gone: the gateway is stopping.
            std::future::pending::<()>().await;
        }
        let Some(loaded) = policies.borrow_and_update().clone() else {
            continue;
        };
        if let Some(denied) = judge(loaded.policy.clone()) {
            return (denied, loaded.policy.hash().to_owned());
        }
    }
}
