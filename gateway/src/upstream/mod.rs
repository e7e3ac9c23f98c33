//! Connections to destinations: TCP to the address the policy checked, TLS
//! verified against the trusted roots (never skipped), HTTP/1.1 on top.
//!
//! Idle upstream HTTP connections are kept in one [`Pool`] and reused by
//! later requests of the same client (see [`pool`]).

pub mod dns;
pub mod pool;

pub use pool::{Owner, Pool, PoolKey};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::args::LimitArgs;
use crate::error::Error;
use crate::http_util::{Body, Progress};
use crate::metrics::Metrics;

/// How connections to destinations are made: TLS trusting the configured
/// roots, and the time each step may take.
#[derive(Debug)]
pub struct Connector {
    /// Upstream TLS client configuration.
    pub tls: Arc<ClientConfig>,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// `--handshake-timeout`, for the TLS handshake with the destination.
    pub handshake_timeout: Duration,
    /// `--upstream-response-timeout`.
    pub response_timeout: Duration,
    /// `--max-header-bytes`, which bounds a response head.
    pub max_header_bytes: usize,
    /// Where the time to connect is observed.
    pub metrics: Arc<Metrics>,
}

impl Connector {
    /// A connector trusting `tls`'s roots, within `limits`.
    pub fn new(tls: Arc<ClientConfig>, limits: &LimitArgs, metrics: Arc<Metrics>) -> Connector {
        Connector {
            tls,
            connect_timeout: limits.connect_timeout,
            handshake_timeout: limits.handshake_timeout,
            response_timeout: limits.upstream_response_timeout,
            max_header_bytes: limits.max_header_bytes,
            metrics,
        }
    }

    /// Connects TCP to `ip:port` within the connect timeout, with Nagle off
    /// (small proxied writes would otherwise wait for delayed ACKs).
    pub async fn connect_tcp(&self, ip: IpAddr, port: u16) -> Result<TcpStream, Error> {
        let (addr, after) = (SocketAddr::new(ip, port), self.connect_timeout);
        let stream = match tokio::time::timeout(after, TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::UpstreamConnectTimeout { addr, after }),
            Ok(Err(source)) => return Err(Error::UpstreamConnect { addr, source }),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// TLS to the destination, verifying its certificate for `name`.
pub async fn connect_tls(
    config: Arc<ClientConfig>,
    after: Duration,
    stream: TcpStream,
    name: &str,
) -> Result<TlsStream<TcpStream>, Error> {
    let failed = |detail: String| Error::UpstreamTls {
        name: name.to_owned(),
        detail,
    };
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(
        after,
        TlsConnector::from(config).connect(server_name, stream),
    )
    .await
    {
        Err(_) => Err(Error::UpstreamTlsTimeout {
            name: name.to_owned(),
            after,
        }),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Ok(Ok(tls)) => Ok(tls),
    }
}

/// HTTP/1.1 over an established stream; the connection task runs until the
/// peer or the last sender goes away, and keeps upgrades (WebSocket) possible.
/// `max_buffer` caps the connection's read and write buffers, and so the
/// size of a response head.
pub async fn handshake<S>(stream: S, max_buffer: usize) -> Result<SendRequest<Body>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(max_buffer.max(8192))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::UpstreamProtocol(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A connection to a destination, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for S {}

/// Sends a request on a pooled or new connection to `key`. Once the request
/// body has gone out (`sent` ends), the destination has
/// `--upstream-response-timeout` to send its response head (504 otherwise).
/// A pooled connection the destination closed before the request could go
/// out is replaced by a new one, once; so is one it closed as the request
/// went out, for a request that is safe to send twice ([`retryable`]).
pub async fn send(
    connector: &Connector,
    pool: &Pool,
    key: PoolKey,
    request: Request<Body>,
    sent: &Progress,
) -> Result<http::Response<hyper::body::Incoming>, Error> {
    let upgrade = crate::http_util::is_upgrade(request.headers());
    let limit = connector.response_timeout;
    let failed = |e: hyper::Error| Error::UpstreamProtocol(e.to_string());
    let on_pooled = match pool.take(&key) {
        Some(mut pooled) => {
            let again = (!upgrade && retryable(&request)).then(|| head_of(&request));
            match answered(sent, limit, pooled.try_send_request(request)).await? {
                Ok(response) => Ok((pooled, response)),
                Err(mut error) => match (error.take_message(), again) {
                    (Some(request), _) => Err(request),
                    (None, Some(again)) if lost_connection(error.error()) => Err(again),
                    (None, _) => return Err(failed(error.into_error())),
                },
            }
        }
        None => Err(request),
    };
    let (sender, response) = match on_pooled {
        Ok(answered) => answered,
        // None was kept, or the kept one was lost before an answer came
        // and the request can go again: a new connection takes it.
        Err(request) => {
            let mut sender = open(connector, &key).await?;
            let response = answered(sent, limit, sender.send_request(request))
                .await?
                .map_err(failed)?;
            (sender, response)
        }
    };
    if reusable(upgrade, sent, &response) {
        pool.put(key, sender);
    }
    Ok(response)
}

/// Whether `request` may be sent again when a kept connection is lost under
/// it: a safe method (RFC 9110 section 9.2.2 lets a proxy retry those) and
/// no body, so the whole request is in its head.
fn retryable(request: &Request<Body>) -> bool {
    use http::Method;
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && hyper::body::Body::is_end_stream(request.body())
}

/// A copy of a bodiless request's head, to send again.
fn head_of(request: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(crate::http_util::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether a kept connection was lost before any answer: closed or reset by
/// the destination (which may close an idle connection just as a request
/// goes out), not a response hyper could not read.
fn lost_connection(error: &hyper::Error) -> bool {
    error.is_incomplete_message()
        || error.is_canceled()
        || error.is_closed()
        || std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

/// Whether a connection can serve another request once this response is
/// read: not an upgraded one (it belongs to the upgrade), not one whose
/// request body had not all gone out when the answer came (the destination
/// may read the rest as a request no rule saw), and not one whose response
/// says both how long it is and that it is chunked (a destination and a
/// server behind it may disagree on where it ends).
fn reusable(
    upgrade: bool,
    sent: &Progress,
    response: &http::Response<hyper::body::Incoming>,
) -> bool {
    let headers = response.headers();
    !upgrade
        && sent.is_ended()
        && !(headers.contains_key(http::header::TRANSFER_ENCODING)
            && headers.contains_key(http::header::CONTENT_LENGTH))
}

/// `response`, unless the request body has gone out (`sent` ends) and
/// `limit` passes first.
async fn answered<T>(
    sent: &Progress,
    limit: Duration,
    response: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    tokio::select! {
        response = response => Ok(response),
        _ = async {
            sent.ended().await;
            tokio::time::sleep(limit).await;
        } => Err(Error::UpstreamResponseTimeout(limit)),
    }
}

/// A new connection to `key`'s destination, HTTP/1.1 over TCP or TLS.
async fn open(connector: &Connector, key: &PoolKey) -> Result<SendRequest<Body>, Error> {
    let started = Instant::now();
    let tcp = connector.connect_tcp(key.ip, key.port).await?;
    let stream: Box<dyn Stream> = match &key.tls_name {
        Some(name) => Box::new(
            connect_tls(
                connector.tls.clone(),
                connector.handshake_timeout,
                tcp,
                name,
            )
            .await?,
        ),
        None => Box::new(tcp),
    };
    connector
        .metrics
        .upstream_connect_seconds
        .observe(started.elapsed().as_secs_f64());
    handshake(stream, connector.max_header_bytes).await
}
