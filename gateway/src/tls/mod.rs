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

/// The key as PKCS#8, which certificate signing needs. PKCS#1 RSA keys are
/// wrapped; SEC1 EC keys are refused with the command that converts them.
pub fn pkcs8(
    key: PrivateKeyDer<'static>,
    path: &Path,
) -> Result<PrivatePkcs8KeyDer<'static>, Error> {
    match key {
        PrivateKeyDer::Pkcs8(k) => Ok(k),
        PrivateKeyDer::Pkcs1(k) => Ok(PrivatePkcs8KeyDer::from(wrap_pkcs1_in_pkcs8(
            k.secret_pkcs1_der(),
        ))),
        _ => Err(Error::BadKey {
            path: path.display().to_string(),
            reason: format!(
                "an EC key in SEC1 form; convert it with `openssl pkcs8 -topk8 -nocrypt -in {0} -out {0}.pk8`",
                path.display()
            ),
        }),
    }
}

/// PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 } (RFC 5208).
fn wrap_pkcs1_in_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_AND_ALGORITHM: &[u8] = &[
        0x02, 0x01, 0x00, // INTEGER 0
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
        0x00, // rsaEncryption, NULL
    ];
    let octets = der_tlv(0x04, pkcs1);
    let mut body = VERSION_AND_ALGORITHM.to_vec();
    body.extend_from_slice(&octets);
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = der_tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn pkcs1_is_wrapped_as_rsa_private_key_info() {
        // Interop with real PKCS#1 keys from openssl is in tests/intercept.rs.
        let wrapped = wrap_pkcs1_in_pkcs8(&[0x30, 0x00]);
        assert_eq!(
            wrapped,
            [
                0x30, 0x16, 0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                0x0d, 0x01, 0x01, 0x01, 0x05, 0x00, 0x04, 0x02, 0x30, 0x00
            ]
        );
    }
}
