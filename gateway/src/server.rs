//! Client-facing listeners: accepting under a connection cap, TLS to the
//! proxy on the HTTPS listener, HTTP/1.1 with size limits and timeouts, and a
//! graceful stop (no new connections; open ones finish their request).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::gateway::{ConnInfo, Gateway, Listener};
use crate::metrics::ListenerLabels;
use crate::upstream::Pool;

/// Accepts connections on `listener` until shutdown. `permits` caps the
/// connections open at once across listeners: beyond it, clients wait in the
/// kernel's accept queue.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    kind: Listener,
    tls: Option<Arc<ServerConfig>>,
    permits: Arc<Semaphore>,
) {
    loop {
        let permit = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
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
        let gw2 = gw.clone();
        let tls = tls.clone();
        gw.tasks.spawn(async move {
            let _permit = permit;
            connection(gw2, stream, client, kind, tls).await;
        });
    }
}

async fn connection(
    gw: Arc<Gateway>,
    stream: TcpStream,
    client: SocketAddr,
    kind: Listener,
    tls: Option<Arc<ServerConfig>>,
) {
    let gauge = gw
        .metrics
        .open_connections
        .get_or_create(&ListenerLabels {
            listener: kind.as_str(),
        })
        .clone();
    gauge.inc();
    match tls {
        None => serve_http1(&gw, TokioIo::new(stream), client, kind).await,
        Some(config) => {
            let accepted = tokio::time::timeout(
                gw.limits.handshake_timeout,
                TlsAcceptor::from(config).accept(stream),
            )
            .await;
            match accepted {
                Ok(Ok(tls)) => serve_http1(&gw, TokioIo::new(tls), client, kind).await,
                Ok(Err(e)) => {
                    gw.metrics.error("downstream", "proxy_tls");
                    tracing::warn!(%client, error = %e, "TLS handshake with the client failed on the HTTPS listener");
                }
                Err(_) => {
                    gw.metrics.error("downstream", "proxy_tls");
                    tracing::warn!(%client, "TLS handshake with the client timed out on the HTTPS listener");
                }
            }
        }
    }
    gauge.dec();
}

async fn serve_http1<I>(gw: &Arc<Gateway>, io: I, client: SocketAddr, kind: Listener)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn_info = ConnInfo {
        client,
        listener: kind,
    };
    let pool = Arc::new(Pool::default());
    let handler_gw = gw.clone();
    let service = service_fn(move |req| {
        crate::proxy::handle(handler_gw.clone(), conn_info, pool.clone(), req)
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
        _ = gw.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        report(gw, client, &e);
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
