//! The interception sub-CA: loaded from files (reloaded when they change),
//! checked before use, and used to mint a leaf certificate per requested name.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::leaf_cache::{LeafCache, Lookup};
use super::{Pem, certified_key, provider};
use crate::error::Error;
use crate::metrics::Metrics;

/// How long minted leaves are valid (shorter if the sub-CA expires sooner).
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Leaves are minted again once less than this is left.
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
/// Backdating absorbs clock skew between the gateway and its clients.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);

/// A loaded, checked sub-CA.
pub struct InterceptCa {
    issuer: Issuer<'static, KeyPair>,
    /// The sub-CA certificate, then the certificates above it.
    chain: Vec<CertificateDer<'static>>,
    /// The same, as the PEM text of the files.
    chain_pem: String,
    not_after: SystemTime,
    subject: String,
}

impl std::fmt::Debug for InterceptCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptCa")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Where the sub-CA files are.
#[derive(Clone, Debug)]
pub struct CaFiles {
    /// Sub-CA certificate (PEM).
    pub cert: PathBuf,
    /// Sub-CA private key (PEM).
    pub key: PathBuf,
    /// Certificates above the sub-CA (PEM), optional.
    pub chain: Option<PathBuf>,
}

impl CaFiles {
    /// Every file, for change polling.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.chain.clone());
        paths
    }

    /// Their contents.
    pub fn read(&self) -> Result<Pem, Error> {
        Pem::from_files(&self.cert, &self.key, self.chain.as_deref())
    }
}

impl InterceptCa {
    /// Reads the files and checks the sub-CA (see [`InterceptCa::from_pem`]).
    pub fn load(files: &CaFiles) -> Result<InterceptCa, Error> {
        InterceptCa::from_pem(&files.read()?)
    }

    /// Checks the sub-CA: a CA certificate allowed to sign certificates,
    /// currently valid, whose key matches.
    pub fn from_pem(pem: &Pem) -> Result<InterceptCa, Error> {
        let origin = &pem.origin;
        let cert = pem.certificates()?.remove(0);
        let key_der: PrivatePkcs8KeyDer<'static> = pem.pkcs8()?;
        let (_, parsed) = X509Certificate::from_der(&cert)
            .map_err(|e| Error::Unusable(format!("{origin} is not a valid certificate: {e}")))?;
        let subject = parsed.subject().to_string();
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(Error::Unusable(format!(
                "{origin} ({subject}) is not a CA certificate (basicConstraints CA:TRUE is missing); \
                 interception needs a sub-CA allowed to sign certificates"
            )));
        }
        if let Ok(Some(usage)) = parsed.key_usage()
            && !usage.value.key_cert_sign()
        {
            return Err(Error::Unusable(format!(
                "{origin} ({subject}) may not sign certificates (keyUsage lacks keyCertSign)"
            )));
        }
        if !parsed.validity().is_valid() {
            return Err(Error::Unusable(format!(
                "{origin} ({subject}) is not valid now (valid from {} to {})",
                parsed.validity().not_before,
                parsed.validity().not_after
            )));
        }
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0),
            );
        let key = KeyPair::try_from(&key_der).map_err(|e| Error::BadKey {
            path: origin.clone(),
            reason: e.to_string(),
        })?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(Error::Unusable(format!(
                "the key of {origin} does not match its certificate ({subject})"
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        let mut chain = vec![cert];
        chain.extend(pem.chain_certificates());
        let mut chain_pem = pem.cert.clone();
        if let Some(above) = &pem.chain {
            chain_pem.push_str(above);
        }
        Ok(InterceptCa {
            issuer,
            chain,
            chain_pem,
            not_after,
            subject,
        })
    }

    /// Mints a leaf for `name` (a DNS name or an IP address), served with the
    /// sub-CA and its chain. Returns the leaf and when to mint it again.
    pub fn mint(&self, name: &str) -> Result<(CertifiedKey, SystemTime), Error> {
        let (leaf, leaf_key, not_after) = self.issue(&[name])?;
        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(leaf.der().clone());
        chain.extend(self.chain.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let now = SystemTime::now();
        let renew_at = not_after
            .checked_sub(LEAF_RENEW_BEFORE)
            .unwrap_or(now)
            .max(now);
        Ok((certified_key(chain, key)?, renew_at))
    }

    /// A server certificate for `names` as PEM: (leaf then chain, key). For
    /// the `dev` command's listener and demo upstream.
    pub fn issue_pem(&self, names: &[&str]) -> Result<(String, String), Error> {
        let (leaf, key, _) = self.issue(names)?;
        Ok((leaf.pem() + &self.chain_pem, key.serialize_pem()))
    }

    fn issue(&self, names: &[&str]) -> Result<(rcgen::Certificate, KeyPair, SystemTime), Error> {
        let now = SystemTime::now();
        let not_after = (now + LEAF_LIFETIME).min(self.not_after);
        let mut params = CertificateParams::default();
        for name in names {
            params
                .subject_alt_names
                .push(match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*name).try_into()?),
                });
        }
        let mut dn = DistinguishedName::new();
        // CN is limited to 64 characters; the SAN carries the real name.
        dn.push(
            DnType::CommonName,
            names
                .first()
                .copied()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect::<String>(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset_date_time(now - LEAF_BACKDATE);
        params.not_after = offset_date_time(not_after);
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        Ok((leaf, key, not_after))
    }

    /// The sub-CA's subject, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

fn offset_date_time(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The sub-CA in use, the leaves it minted, and the server configuration
/// template for intercepted connections. Empty until a sub-CA is installed.
#[derive(Debug)]
pub struct InterceptAuthority {
    active: RwLock<Option<Arc<Active>>>,
    cache_size: usize,
    template: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
}

/// A sub-CA with the leaves it minted. Swapped as one on reload: a mint that
/// started with the old sub-CA can only land in the old cache, which goes
/// with it, so no leaf of an old sub-CA is ever served from the cache.
#[derive(Debug)]
struct Active {
    ca: Arc<InterceptCa>,
    cache: LeafCache,
    /// Sessions resume from tickets encrypted with keys of this sub-CA's
    /// own (rotated every 6 hours, gone with it and with the process)
    /// instead of from a table of 256 sessions: however many clients
    /// resume, none makes a full handshake because another pushed its
    /// session out, and no session proven by an old sub-CA resumes.
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl InterceptAuthority {
    /// An authority without a sub-CA yet; the cache keeps at most
    /// `cache_size` leaves.
    pub fn new(cache_size: usize, metrics: Arc<Metrics>) -> Result<InterceptAuthority, Error> {
        let mut template = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCert));
        template.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(InterceptAuthority {
            active: RwLock::new(None),
            cache_size,
            template: Arc::new(template),
            metrics,
        })
    }

    /// Whether a sub-CA is installed.
    pub fn is_ready(&self) -> bool {
        self.active().is_some()
    }

    fn active(&self) -> Option<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks and installs a sub-CA, with a new leaf cache (the leaves of the
    /// old one go with it). On error the installed one stays. Returns the
    /// new sub-CA's subject.
    pub fn install(&self, pem: &Pem) -> Result<String, Error> {
        let ca = InterceptCa::from_pem(pem)?;
        let subject = ca.subject().to_owned();
        let ticketer = rustls::crypto::ring::Ticketer::new()?;
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Active {
            ca: Arc::new(ca),
            cache: LeafCache::new(self.cache_size),
            ticketer,
        }));
        self.metrics.cert_cache_size.set(0);
        Ok(subject)
    }

    /// A server configuration presenting a leaf for `name`, minted on first
    /// use, once however many connections ask at the same time.
    pub async fn server_config_for(&self, name: &str) -> Result<Arc<ServerConfig>, Error> {
        let active = self.active().ok_or(Error::NoInterceptCa)?;
        let leaf = self.leaf_for(&active, name).await?;
        // A clone of the template shares its settings; the certificate and
        // the session tickets are the sub-CA's.
        let mut config = (*self.template).clone();
        config.cert_resolver = Arc::new(Fixed(leaf));
        config.ticketer = active.ticketer.clone();
        Ok(Arc::new(config))
    }

    async fn leaf_for(&self, active: &Active, name: &str) -> Result<Arc<CertifiedKey>, Error> {
        let started = Instant::now();
        let (ca, name_owned) = (active.ca.clone(), name.to_owned());
        let (leaf, lookup) = active
            .cache
            .get_or_mint(name, move || ca.mint(&name_owned))
            .await
            .map_err(|e| Error::Mint(Box::new(e)))?;
        match lookup {
            Lookup::Hit => {
                self.metrics.cert_cache_hits.inc();
            }
            Lookup::Minted => {
                self.metrics.cert_cache_misses.inc();
                self.metrics
                    .cert_mint_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        };
        self.metrics
            .cert_cache_size
            .set(i64::try_from(active.cache.len()).unwrap_or(i64::MAX));
        Ok(leaf)
    }
}

#[derive(Debug)]
struct NoCert;

impl rustls::server::ResolvesServerCert for NoCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Writes `contents` to `path`; a private key (`secret`) is readable by the
/// owner only, also when it replaces an existing file.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |source| Error::File {
        path: path.display().to_string(),
        source,
    };
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    // `mode` applies only to a new file; an old one may have been wider.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    file.write_all(contents.as_bytes()).map_err(failed)
}

/// Writes PEM files of a new CA for development and tests: a root and a sub-CA
/// below it (path length 0), returning their paths and the root's PEM.
pub fn write_dev_ca(dir: &Path) -> Result<(CaFiles, PathBuf), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::File {
        path: dir.display().to_string(),
        source,
    })?;
    let write = |name: &str, contents: String| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        write_file(&path, &contents, name.ends_with(".key"))?;
        Ok(path)
    };
    let root_key = KeyPair::generate()?;
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "egress-proxy development root CA");
    root_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root_params.not_before = offset_date_time(SystemTime::now() - LEAF_BACKDATE);
    root_params.not_after =
        offset_date_time(SystemTime::now() + Duration::from_secs(365 * 24 * 3600));
    let root = root_params.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root_params, root_key);

    let sub_key = KeyPair::generate()?;
    let mut sub_params = CertificateParams::default();
    sub_params.distinguished_name.push(
        DnType::CommonName,
        "egress-proxy development interception sub-CA",
    );
    sub_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    sub_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    sub_params.use_authority_key_identifier_extension = true;
    sub_params.not_before = offset_date_time(SystemTime::now() - LEAF_BACKDATE);
    sub_params.not_after =
        offset_date_time(SystemTime::now() + Duration::from_secs(90 * 24 * 3600));
    let sub = sub_params.signed_by(&sub_key, &root_issuer)?;

    let root_path = write("root-ca.pem", root.pem())?;
    let files = CaFiles {
        cert: write("intercept-ca.pem", sub.pem())?,
        key: write("intercept-ca.key", sub_key.serialize_pem())?,
        chain: Some(write("intercept-ca-chain.pem", root.pem())?),
    };
    Ok((files, root_path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("authority-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn private_keys_are_written_owner_only() {
        let dir = temp_dir("modes");
        // A key left world-readable by an older run is tightened, not kept.
        std::fs::write(dir.join("intercept-ca.key"), "old").expect("write");
        std::fs::set_permissions(
            dir.join("intercept-ca.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let (files, root) = write_dev_ca(&dir).expect("dev CA");
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        assert_eq!(mode(&root), 0o644);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_mint_racing_a_reload_never_serves_the_old_sub_ca() {
        let dir = temp_dir("reload");
        let (files, _) = write_dev_ca(&dir.join("first")).expect("first CA");
        let mut registry = prometheus_client::registry::Registry::default();
        let authority =
            InterceptAuthority::new(10, Arc::new(Metrics::new(&mut registry))).expect("authority");
        authority
            .install(&files.read().expect("read"))
            .expect("loads");
        // A handshake that read the active sub-CA just before the reload...
        let before = authority.active().expect("installed");
        let (second, _) = write_dev_ca(&dir.join("second")).expect("second CA");
        for (from, to) in [(&second.cert, &files.cert), (&second.key, &files.key)] {
            std::fs::copy(from, to).expect("replace");
        }
        authority
            .install(&files.read().expect("read"))
            .expect("reload");
        // ...finishes its mint after it.
        let ca = before.ca.clone();
        before
            .cache
            .get_or_mint("a.test", move || ca.mint("a.test"))
            .await
            .expect("mint");
        let active = authority.active().expect("a sub-CA");
        let leaf = authority.leaf_for(&active, "a.test").await.expect("leaf");
        // Tickets of the old sub-CA's sessions are not taken by the new one's.
        let config = authority.server_config_for("a.test").await.expect("config");
        assert!(Arc::ptr_eq(&config.ticketer, &active.ticketer));
        assert!(!Arc::ptr_eq(&before.ticketer, &active.ticketer));
        let new_sub_ca = super::super::load_certs(&second.cert)
            .expect("cert")
            .remove(0);
        assert_eq!(
            leaf.cert[1], new_sub_ca,
            "the leaf is signed by the new sub-CA"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
