//! Client-facing listeners: accepting under a connection cap (a connection
//! keeps its place for as long as anything serves it, tunnels included), TLS
//! to the proxy on the HTTPS listener, HTTP/1.1 with size limits, header and
//! idle timeouts, and a graceful stop (no new connections; open ones finish
//! their request).

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::framing::{Heads, Inspected, RequestHeads};
use crate::gateway::{Connection, Gateway};
use crate::relay::ServedIo;
use crate::relay::idle::Activity;
use crate::request::{Client, Listener};
use crate::upstream::Owner;

/// A client-facing listener.
#[derive(Debug)]
pub struct Listening {
    /// The socket.
    pub socket: TcpListener,
    /// Which listener it is.
    pub kind: Listener,
    /// TLS to the proxy (the HTTPS listener).
    pub tls: Option<Arc<ServerConfig>>,
}

/// Accepts connections on every listener until shutdown. At most
/// `max_connections` are open at once across them; beyond that, clients wait
/// in the kernel's accept queue. One loop serves all listeners, so the one
/// place it holds while waiting goes to whichever client comes first.
pub async fn serve(gw: Arc<Gateway>, listeners: Vec<Listening>, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut accepts = futures_util::stream::select_all(listeners.into_iter().map(|l| {
        let listening = Arc::new(l);
        Box::pin(futures_util::stream::unfold(listening, |l| async move {
            let accepted = l.socket.accept().await;
            Some(((accepted, l.kind, l.tls.clone()), l))
        }))
    }));
    loop {
        let permit = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let next = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            next = accepts.next() => next,
        };
        let Some((accepted, kind, tls)) = next else {
            return;
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, listener = kind.as_str(), "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        gw.tasks
            .spawn(connection(gw.clone(), stream, client, kind, tls, permit));
    }
}

async fn connection(
    gw: Arc<Gateway>,
    stream: TcpStream,
    addr: SocketAddr,
    kind: Listener,
    tls: Option<Arc<ServerConfig>>,
    slot: OwnedSemaphorePermit,
) {
    let client = Client {
        addr,
        listener: kind,
        identity: gw.identities.lookup(addr.ip()),
    };
    let owner = Owner::of(&client, gw.identifies_clients);
    let connection = Arc::new(Connection::new(client, owner, slot, &gw.metrics));
    match tls {
        None => serve_http1(&gw, stream, connection).await,
        Some(config) => {
            let accepted = tokio::time::timeout(
                gw.limits.handshake_timeout,
                TlsAcceptor::from(config).accept(stream),
            )
            .await;
            match accepted {
                Ok(Ok(tls)) => serve_http1(&gw, tls, connection).await,
                Ok(Err(e)) => {
                    gw.metrics.error("downstream", "proxy_tls");
                    tracing::warn!(client = %addr, error = %e, "TLS handshake with the client failed on the HTTPS listener");
                }
                Err(_) => {
                    gw.metrics.error("downstream", "proxy_tls");
                    tracing::warn!(client = %addr, "TLS handshake with the client timed out on the HTTPS listener");
                }
            }
        }
    }
}

async fn serve_http1<S>(gw: &Arc<Gateway>, stream: S, connection: Arc<Connection>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = connection.client.addr;
    let heads = Heads::default();
    let activity = Activity::default();
    let io: ServedIo<S> = TokioIo::new(Inspected::new(
        activity.track(stream),
        RequestHeads::new(heads.clone()),
    ));
    let handler_gw = gw.clone();
    let service = service_fn(move |req| {
        crate::listeners::handler::handle(
            handler_gw.clone(),
            connection.clone(),
            heads.clone(),
            req,
        )
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(gw.limits.header_timeout)
        .max_header_size(gw.limits.max_header_bytes);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        // A body that stops moving (either way) holds the connection no longer
        // than a silent tunnel would.
        _ = activity.idle_exceeds(gw.limits.idle_timeout) => {
            gw.metrics.error("downstream", "idle_timeout");
            return;
        }
        _ = gw.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        report(gw, addr, &e);
    }
}

/// Malformed or slow clients: hyper has already answered where it could
/// (400, 431, 414); this counts and logs them.
fn report(gw: &Gateway, client: SocketAddr, error: &hyper::Error) {
    let (reason, status) = if error.is_parse_too_large() {
        ("header_too_large", 431)
    } else if error.is_parse() {
        ("malformed_request", 400)
    } else if error.is_timeout() {
        ("header_timeout", 408)
    } else {
        tracing::debug!(%client, error = %error, "client connection ended");
        return;
    };
    gw.metrics.error("downstream", reason);
    tracing::warn!(%client, reason, status, error = %error, "client request rejected");
}
