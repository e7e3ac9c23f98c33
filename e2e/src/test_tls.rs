//! TLS for the servers a test starts itself (a webhook, a destination):
//! a CA made for the one server and a certificate it signed.

use std::sync::Arc;

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
