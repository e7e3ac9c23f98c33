//! TLS for the servers a test starts itself (a webhook, a destination):
//! a CA made for the one server and a certificate it signed, and the loop
//! that serves HTTPS with them.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What a test server serves and what its clients trust.
#[derive(Debug)]
pub struct TestServerTls {
    /// The CA's certificate, for clients to trust.
    pub ca_pem: String,
    /// The server's configuration: its certificate for the name, then the CA.
    pub config: Arc<ServerConfig>,
}

/// A CA named `ca_name` and a certificate it signed for `name`.
pub fn test_server_tls(ca_name: &str, name: SanType) -> TestServerTls {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![name];
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(cert.der().to_vec()),
                    CertificateDer::from(ca.der().to_vec()),
                ],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
    TestServerTls {
        ca_pem: ca.pem(),
        config: Arc::new(config),
    }
}

/// The whole body of `request`; empty if it could not be read.
pub async fn body_of(request: Request<Incoming>) -> Bytes {
    use http_body_util::BodyExt as _;
    request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// Serves HTTP/1.1 over TLS (`config`) on `listener` for as long as the
/// runtime runs: every request is answered by `answer`.
pub async fn serve_https<A, F>(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    answer: A,
) where
    A: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, answer) = (acceptor.clone(), answer.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request| {
                let answered = answer(request);
                async move { Ok::<_, Infallible>(answered.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
