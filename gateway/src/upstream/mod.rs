//! Connections to destinations: TCP to the address the policy checked, TLS
//! verified against the trusted roots (never skipped), HTTP/1.1 on top.
//!
//! Upstream HTTP connections are reused only by the client connection that
//! opened them: a keep-alive client keeps its upstream connection, and no
//! request ever rides on a connection opened for another client.

pub mod dns;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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

/// Idle upstream HTTP connections of one client connection, by destination.
#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(PoolKey, SendRequest<Body>)>>,
}

/// What a pooled connection leads to: address, port, and TLS name if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolKey {
    /// Address dialed.
    pub ip: IpAddr,
    /// Port dialed.
    pub port: u16,
    /// TLS server name, `None` for plain HTTP.
    pub tls_name: Option<String>,
}

/// Idle connections kept per client connection.
const MAX_IDLE: usize = 4;

impl Pool {
    /// An idle connection to `key` that can take a request now.
    pub fn take(&self, key: &PoolKey) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, sender)| !sender.is_closed());
        let position = idle
            .iter()
            .position(|(k, sender)| k == key && sender.is_ready())?;
        Some(idle.swap_remove(position).1)
    }

    /// Keeps a connection for later (it becomes usable once its response is read).
    pub fn put(&self, key: PoolKey, sender: SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((key, sender));
    }
}

/// Sends a request on a pooled or new connection to `key`. Once the request
/// body has gone out (`sent` ends), the destination has
/// `--upstream-response-timeout` to send its response head (504 otherwise).
pub async fn send(
    connector: &Connector,
    pool: &Pool,
    key: PoolKey,
    request: Request<Body>,
    sent: &Progress,
) -> Result<http::Response<hyper::body::Incoming>, Error> {
    let mut sender = match pool.take(&key) {
        Some(sender) => sender,
        None => {
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
            handshake(stream, connector.max_header_bytes).await?
        }
    };
    let upgrade = crate::http_util::is_upgrade(request.headers());
    let limit = connector.response_timeout;
    let response = tokio::select! {
        response = sender.send_request(request) => {
            response.map_err(|e| Error::UpstreamProtocol(e.to_string()))?
        }
        _ = async {
            sent.ended().await;
            tokio::time::sleep(limit).await;
        } => return Err(Error::UpstreamResponseTimeout(limit)),
    };
    // An upgraded connection belongs to the upgrade; others can serve again.
    if !upgrade {
        pool.put(key, sender);
    }
    Ok(response)
}
