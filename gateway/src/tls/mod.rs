//! TLS material and configurations. Everything uses rustls with the ring
//! provider (no aws-lc: it keeps the build small).

pub mod authority;
pub mod leaf_cache;

use std::path::Path;
use std::sync::{Arc, RwLock};

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

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::File {
        path: path.display().to_string(),
        source,
    })
}

/// All certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::BadKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The key of a PEM file as PKCS#8, which certificate signing needs
/// (PKCS#1 RSA and SEC1 EC keys are converted; see `egress_pki`).
pub fn load_pkcs8(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, Error> {
    let text = String::from_utf8_lossy(&read(path)?).into_owned();
    egress_pki::private_key_pkcs8(&text).map_err(|e| Error::BadKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A certificate chain and key as rustls serves them.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    let signing_key = provider().key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// The HTTPS listener's certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Loads the certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<ServingCert, Error> {
        Ok(ServingCert {
            current: RwLock::new(Arc::new(Self::read(cert, key)?)),
        })
    }

    fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
        let certified = certified_key(load_certs(cert)?, load_key(key)?)?;
        certified.keys_match().map_err(|e| {
            Error::Unusable(format!(
                "{} does not match {}: {e}",
                key.display(),
                cert.display()
            ))
        })?;
        Ok(certified)
    }

    /// Loads new files; on error the current certificate stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), Error> {
        let fresh = Arc::new(Self::read(cert, key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// A server configuration that always presents the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, Error> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // Clients speak HTTP/1.1 to the proxy itself (CONNECT and absolute-form).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
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
