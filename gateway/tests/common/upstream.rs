//! Destination servers on 127.0.0.1, on a runtime of their own so tests can
//! block on client processes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Serves the routes below.
    Normal,
    /// Reads the request, then resets the connection.
    Reset,
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// Answers every request with these bytes, as they are (the connection
    /// kept open for more).
    Raw(&'static str),
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Upstream {
    /// Plain HTTP.
    pub fn http(behavior: Behavior) -> Upstream {
        Self::start(None, behavior)
    }

    /// HTTPS with this certificate.
    pub fn https(cert: &Path, key: &Path) -> Upstream {
        Self::https_with(cert, key, egress_gateway::tls::provider())
    }

    /// HTTPS that takes only P-384 key exchange: a client that offers a
    /// key share for another group first gets a HelloRetryRequest.
    pub fn https_retrying(cert: &Path, key: &Path) -> Upstream {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![rustls::crypto::ring::kx_group::SECP384R1];
        Self::https_with(cert, key, Arc::new(provider))
    }

    fn https_with(
        cert: &Path,
        key: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Upstream {
        let serving =
            egress_gateway::tls::ServingCert::load(cert, key).expect("upstream certificate");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(serving));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(Some(Arc::new(config)), Behavior::Normal)
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>, behavior: Behavior) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    match behavior {
                        Behavior::Normal => {}
                        Behavior::Reset => {
                            let _ = stream.read(&mut buf).await;
                            let _ = stream.set_zero_linger();
                            return;
                        }
                        Behavior::Silent => {
                            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                            return;
                        }
                        Behavior::Raw(bytes) => {
                            // A request (one read, bodies are not expected) each.
                            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                                let _ = stream.write_all(bytes.as_bytes()).await;
                            }
                            return;
                        }
                    }
                    let service =
                        service_fn(|req| async move { Ok::<_, Infallible>(route(req).await) });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(config) => {
                            let Ok(tls) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            runtime: Some(runtime),
        }
    }
}

/// `/` hello, `/status/N` that status, `/files/...` 200, `/echo` (and `.../echo`) the
/// request as JSON, `/large` one MiB, `/redirect/HOST:PORT` a 302 to
/// `https://HOST:PORT/echo`.
async fn route(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let (status, body) = if path == "/" {
        (StatusCode::OK, Bytes::from_static(b"hello from upstream"))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        (status, Bytes::from(format!("status {code}")))
    } else if path.starts_with("/files/") {
        (StatusCode::OK, Bytes::from(format!("file {path}")))
    } else if path == "/large" {
        (StatusCode::OK, Bytes::from(vec![b'x'; 1 << 20]))
    } else if path == "/echo" || path.ends_with("/echo") {
        // A header sent more than once shows its values joined with ", ".
        let mut headers = serde_json::Map::new();
        for (k, v) in req.headers() {
            let v = v.to_str().unwrap_or("");
            let joined = match headers.get(k.as_str()).and_then(|e| e.as_str()) {
                Some(earlier) => format!("{earlier}, {v}"),
                None => v.to_owned(),
            };
            headers.insert(k.to_string(), serde_json::Value::String(joined));
        }
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let version = format!("{:?}", req.version());
        let body = egress_e2e::test_tls::body_of(req).await;
        let json = serde_json::json!({
            "method": method, "uri": uri, "version": version, "headers": headers, "body_len": body.len()
        });
        (StatusCode::OK, Bytes::from(json.to_string()))
    } else if let Some(authority) = path.strip_prefix("/redirect/") {
        let mut response = Response::new(Full::new(Bytes::from_static(b"moved")));
        *response.status_mut() = StatusCode::FOUND;
        if let Ok(location) = format!("https://{authority}/echo").parse() {
            response
                .headers_mut()
                .insert(hyper::header::LOCATION, location);
        }
        return response;
    } else {
        (StatusCode::NOT_FOUND, Bytes::from_static(b"not here"))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}
