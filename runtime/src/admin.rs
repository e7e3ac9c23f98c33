//! The admin listener both binaries serve probes and metrics on: plain
//! HTTP/1.1, caps on connections served at once, in all and from one peer
//! (see [`crate::slots`]: a pod flooding the port cannot starve the
//! kubelet's probes), and a header timeout. What each path answers is the
//! caller's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::slots::Slots;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one address: probes and a scraper need a
/// handful each.
pub const MAX_PER_PEER: usize = 8;

/// Serves `respond` on `listener` forever, at most [`MAX_CONNECTIONS`]
/// connections at once and [`MAX_PER_PEER`] from one address (see
/// [`Slots`]: more are closed as they come, and a peer holding the most
/// gives up its oldest to a newcomer when all are taken), each given
/// `header_timeout` to send a request head.
pub async fn serve<F>(listener: TcpListener, header_timeout: Duration, respond: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    let slots = Slots::new(MAX_CONNECTIONS, MAX_PER_PEER);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = slots.take(peer.ip()) else {
            continue; // closed as it is dropped
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let respond = respond.clone();
                async move { Ok::<_, Infallible>(respond(&req)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = slot.evicted() => {}
            }
        });
    }
}

/// A plain-text answer, never cached nor sniffed.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, body: &impl std::fmt::Display) -> Response<Full<Bytes>> {
    let mut response = text(status, format!("{body}\n"));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `/metrics`: the registry in the OpenMetrics text format.
pub fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        );
    }
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The answer to a path neither binary serves.
pub fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /readyz or /metrics\n",
    )
}
