//! TLS material and configurations. Everything uses rustls with the ring
//! provider (no aws-lc: it keeps the build small).

pub mod authority;
pub mod client_hello;
pub mod leaf_cache;

use std::path::Path;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;

/// The crypto provider used everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.display().to_string(),
        source,
    })
}

/// Certificate material as PEM text, whichever source it came from (files,
/// or a Secret through the API), and a name for it in messages.
#[derive(Clone)]
pub struct Pem {
    /// The certificate, possibly followed by its chain.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// Certificates above it (the interception sub-CA's chain), if apart.
    pub chain: Option<String>,
    /// Where it came from, e.g. `/etc/tls/tls.crt` or `Secret ns/name`.
    pub origin: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Pem {
    /// Reads the files.
    pub fn from_files(cert: &Path, key: &Path, chain: Option<&Path>) -> Result<Pem, Error> {
        Ok(Pem {
            cert: read(cert)?,
            key: read(key)?,
            chain: chain.map(read).transpose()?,
            origin: cert.display().to_string(),
        })
    }

    /// The certificates of `cert`, in order.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(Error::NoCertificate {
                path: self.origin.clone(),
            });
        }
        Ok(certs)
    }

    /// The certificates of `chain`.
    pub fn chain_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.chain
            .as_deref()
            .map(|chain| {
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .filter_map(Result::ok)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The key (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, Error> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).map_err(|e| Error::BadKey {
            path: self.origin.clone(),
            reason: e.to_string(),
        })
    }

    /// The key as PKCS#8, which certificate signing needs (PKCS#1 RSA and
    /// SEC1 EC keys are converted; see `egress_pki`).
    pub fn pkcs8(&self) -> Result<PrivatePkcs8KeyDer<'static>, Error> {
        egress_pki::private_key_pkcs8(&self.key).map_err(|e| Error::BadKey {
            path: self.origin.clone(),
            reason: e.to_string(),
        })
    }
}

/// All certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    Pem {
        cert: read(path)?,
        key: String::new(),
        chain: None,
        origin: path.display().to_string(),
    }
    .certificates()
}

/// A certificate chain and key as rustls serves them.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    let signing_key = provider().key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// The HTTPS listener's certificate, swapped in place when a new one is
/// installed ([`egress_runtime::serving::ServingCert`]); none until the first
/// (handshakes fail meanwhile).
#[derive(Debug, Default)]
pub struct ServingCert(Arc<egress_runtime::serving::ServingCert>);

impl ServingCert {
    /// The certificate and key of these files.
    pub fn load(cert: &Path, key: &Path) -> Result<ServingCert, Error> {
        let serving = ServingCert::default();
        serving.install(&Pem::from_files(cert, key, None)?)?;
        Ok(serving)
    }

    /// Checks and installs a certificate and key; on error the current one
    /// stays.
    pub fn install(&self, pem: &Pem) -> Result<(), Error> {
        self.0
            .install(pem.certificates()?, pem.private_key()?)
            .map_err(|e| {
                Error::Unusable(format!(
                    "the certificate and key of {} cannot be served: {e}",
                    pem.origin
                ))
            })
    }

    /// Whether a certificate is installed.
    pub fn is_installed(&self) -> bool {
        self.0.is_installed()
    }

    /// A server configuration that always presents the current certificate
    /// (clients speak HTTP/1.1 to the proxy itself: CONNECT and absolute-form).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        Ok(self.0.server_config()?)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.resolve(hello)
    }
}

/// Client configuration for upstream TLS: the system roots plus an optional
/// extra bundle. Verification is never turned off.
pub fn upstream_client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // Skip the odd system certificate rustls cannot parse.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| Error::Unusable(format!("{}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(Error::Unusable(
            "no trusted roots: the system has none and no --upstream-ca was given".to_owned(),
        ));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
