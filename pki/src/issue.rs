//! Issuing certificates: the shared signing step, the self-signed CAs of the
//! listener and the webhook, and their serving certificates.
//!
//! Every new key is ECDSA P-256. The serial number is rcgen's: the first 20
//! bytes of SHA-256 over the new public key, unique because the key is new.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SanType, SigningKey,
};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{KeyIdentifier, ParsedExtension};

use crate::error::Error;
use crate::{dates, der, inspect, key, pem};

/// How far back a new certificate's validity starts, for clocks that lag.
pub(crate) const BACKDATE: Duration = Duration::from_secs(3600);

/// A new CA certificate with its key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// Its new private key, PKCS#8 PEM ("PRIVATE KEY").
    pub key_pem: String,
    /// The certificates above it, PEM, nearest first: for a sub-CA the parent
    /// and what was given above the parent, up to the root; empty for a
    /// self-signed CA.
    pub chain_pem: String,
    /// Start of validity, as written in the certificate.
    pub not_before: SystemTime,
    /// End of validity, as written in the certificate.
    pub not_after: SystemTime,
}

/// A new serving certificate with its key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its new private key, PKCS#8 PEM ("PRIVATE KEY").
    pub key_pem: String,
    /// Start of validity, as written in the certificate.
    pub not_before: SystemTime,
    /// End of validity, as written in the certificate.
    pub not_after: SystemTime,
}

// Hand-written so a logged value never shows a private key.
impl fmt::Debug for IssuedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .field("chain_pem", &self.chain_pem)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// A self-signed CA for the listener or the webhook: CA:TRUE with pathlen 0
/// (it signs serving certificates only), keyCertSign, cRLSign and
/// digitalSignature, valid from `now` - 1 h to `now` + `lifetime`.
///
/// With `permitted` DNS names, it is name-constrained to them (each with its
/// subdomains) and to no IP address: clients that trust it trust nothing
/// else it might sign, should its key leak.
pub fn self_signed_ca(
    common_name: &str,
    permitted: &[String],
    now: SystemTime,
    lifetime: Duration,
) -> Result<IssuedCa, Error> {
    let not_before = dates::truncate(now.checked_sub(BACKDATE).unwrap_or(now));
    let not_after = dates::truncate(dates::add_capped(now, lifetime, dates::latest()));
    check_window(not_before, not_after, now)?;
    let mut params = ca_params(common_name, not_before, not_after)?;
    if !permitted.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted
                .iter()
                .map(|name| GeneralSubtree::DnsName(name.clone()))
                .collect(),
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });
    }
    // A root's AKI names its own key, as `openssl req -x509` writes it.
    params.use_authority_key_identifier_extension = true;
    let key = new_key()?;
    let cert = params.self_signed(&key).map_err(Error::issue)?;
    Ok(IssuedCa {
        cert_pem: pem::encode("CERTIFICATE", cert.der()),
        key_pem: pem::encode("PRIVATE KEY", key.serialized_der()),
        chain_pem: String::new(),
        not_before,
        not_after,
    })
}

/// A serving certificate signed by the CA in `ca_cert_pem` / `ca_key_pem`
/// (as made by [`self_signed_ca`] or [`Parent::issue_sub_ca`](crate::parent::Parent::issue_sub_ca)).
///
/// `dns_names` become subjectAltNames: IP addresses when they parse as one,
/// DNS names otherwise (a leading `*.` wildcard is allowed); the first DNS
/// name (up to 64 characters) is also the subject CN. The certificate is not a CA, has
/// digitalSignature and the serverAuth extended key usage, and is valid from
/// `now` - 1 h to `now` + `lifetime`, both within the CA's validity.
pub fn issue_server_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    dns_names: &[String],
    now: SystemTime,
    lifetime: Duration,
) -> Result<IssuedCert, Error> {
    let ca_der = pem::certificates(ca_cert_pem)?.remove(0);
    let ca_key = key::key_pair(ca_key_pem)?;
    let ca = inspect::parse(&ca_der, 1)?;
    let subject = ca.subject().to_string();
    if !key_matches(&ca, &ca_key) {
        return Err(Error::CaKeyMismatch { subject });
    }
    let ca_not_before = dates::from_asn1(ca.validity().not_before);
    let ca_not_after = dates::from_asn1(ca.validity().not_after);
    if now < ca_not_before || now > ca_not_after {
        return Err(Error::CaExpired {
            subject,
            not_before: dates::format(ca_not_before),
            not_after: dates::format(ca_not_after),
        });
    }
    let (not_before, not_after) = window(now, lifetime, ca_not_before, ca_not_after);
    check_window(not_before, not_after, now)?;

    let sans = subject_alt_names(dns_names)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let first_dns = sans.iter().find_map(|san| match san {
        SanType::DnsName(name) => Some(name.as_str().to_owned()),
        _ => None,
    });
    // ub-common-name is 64; longer names live in the SAN only.
    if let Some(cn) = first_dns.filter(|n| n.len() <= 64) {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = dates::to_offset(not_before)?;
    params.not_after = dates::to_offset(not_after)?;
    let key = new_key()?;
    let der = sign(
        params,
        &key,
        &Signer {
            cert: &ca_der,
            key: &ca_key,
        },
    )?;
    Ok(IssuedCert {
        cert_pem: pem::encode("CERTIFICATE", &der),
        key_pem: pem::encode("PRIVATE KEY", key.serialized_der()),
        not_before,
        not_after,
    })
}

/// The CA that signs: its certificate (DER) and key.
pub(crate) struct Signer<'a> {
    pub(crate) cert: &'a [u8],
    pub(crate) key: &'a KeyPair,
}

/// Validity of a new certificate: from `now` - 1 h but not before the
/// issuer, to `now` + `lifetime` but not after the issuer; whole seconds.
pub(crate) fn window(
    now: SystemTime,
    lifetime: Duration,
    issuer_not_before: SystemTime,
    issuer_not_after: SystemTime,
) -> (SystemTime, SystemTime) {
    // Issuer times come from a certificate, so they are whole seconds and
    // truncating can only move these inside them.
    let start = dates::sub_floored(now, BACKDATE, issuer_not_before);
    let end = dates::add_capped(now, lifetime, issuer_not_after);
    (dates::truncate(start), dates::truncate(end))
}

/// A certificate must still be valid after `now`.
pub(crate) fn check_window(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
) -> Result<(), Error> {
    if not_after <= not_before || not_after <= dates::truncate(now) {
        return Err(Error::Issue {
            detail: format!(
                "the validity would end at {} (before it starts or before now); give a lifetime of at least a few minutes",
                dates::format(not_after)
            ),
        });
    }
    Ok(())
}

/// Parameters of a CA that may sign end-entity certificates only.
pub(crate) fn ca_params(
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, Error> {
    if common_name.trim().is_empty() || common_name.chars().count() > 64 {
        return Err(Error::InvalidName {
            name: common_name.to_owned(),
            detail: "a CA common name must have 1 to 64 characters".to_owned(),
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = dates::to_offset(not_before)?;
    params.not_after = dates::to_offset(not_after)?;
    Ok(params)
}

pub(crate) fn new_key() -> Result<KeyPair, Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(Error::issue)
}

/// Whether `key` is the key of `cert` (same subjectPublicKey bits).
pub(crate) fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().subject_public_key.data.as_ref() == key.der_bytes()
}

/// Signs `params` for `subject_key` by `signer`.
///
/// rcgen writes the issuer name by re-encoding the signer's subject through
/// its `DistinguishedName`, which keeps one value per attribute type (so
/// `DC=example,DC=com` loses a DC) and refuses multi-valued RDNs. Clients
/// such as Go and webpki match issuer to subject byte for byte, so the issuer
/// field is replaced with the signer's subject exactly as encoded, and the
/// certificate signed again.
pub(crate) fn sign(
    mut params: CertificateParams,
    subject_key: &KeyPair,
    signer: &Signer<'_>,
) -> Result<CertificateDer<'static>, Error> {
    let issuer_cert = inspect::parse(signer.cert, 1)?;
    let ski = issuer_cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(KeyIdentifier(id)) => Some(id.to_vec()),
            _ => None,
        });
    // The AKI must repeat the issuer's SKI; without one there is nothing to name.
    params.use_authority_key_identifier_extension = ski.is_some();
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = DistinguishedName::new();
    issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(ski.unwrap_or_default());
    let issuer = Issuer::new(issuer_params, signer.key);
    let draft = params
        .signed_by(subject_key, &issuer)
        .map_err(Error::issue)?;
    let der = replace_name(
        draft.der(),
        0,
        issuer_cert.tbs_certificate.subject.as_raw(),
        signer.key,
    )?;
    Ok(CertificateDer::from(der))
}

/// `cert` with a name of its TBS replaced by `name` (DER) and signed again
/// by `key`: the issuer when `after_issuer` is 0, the subject when it is 2.
pub(crate) fn replace_name(
    cert: &[u8],
    after_issuer: usize,
    name: &[u8],
    key: &KeyPair,
) -> Result<Vec<u8>, Error> {
    let broken = |e: &str| Error::Issue {
        detail: format!("unexpected certificate structure from rcgen: {e}"),
    };
    let outer = der::read_only(cert, der::SEQUENCE).map_err(broken)?;
    let parts = der::items(outer.content).map_err(broken)?;
    let [tbs, algorithm, _signature] = parts.as_slice() else {
        return Err(broken("not three parts"));
    };
    let fields = der::items(tbs.content).map_err(broken)?;
    // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
    let issuer_at = if fields.first().is_some_and(|f| f.tag == der::CONTEXT_0) {
        3
    } else {
        2
    };
    let at = issuer_at + after_issuer;
    if fields.get(at).is_none_or(|f| f.tag != der::SEQUENCE) {
        return Err(broken("no name where expected"));
    }
    let new_fields: Vec<&[u8]> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| if i == at { name } else { f.whole })
        .collect();
    let new_tbs = der::write_parts(der::SEQUENCE, &new_fields);
    let signature = key.sign(&new_tbs).map_err(Error::issue)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&signature);
    Ok(der::write_parts(
        der::SEQUENCE,
        &[
            &new_tbs,
            algorithm.whole,
            &der::write(der::BIT_STRING, &bits),
        ],
    ))
}

/// SANs from the caller's names, deduplicated, each checked.
fn subject_alt_names(names: &[String]) -> Result<Vec<SanType>, Error> {
    if names.is_empty() {
        return Err(Error::InvalidName {
            name: String::new(),
            detail: "a serving certificate needs at least one name".to_owned(),
        });
    }
    let mut out: Vec<SanType> = Vec::with_capacity(names.len());
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                check_dns_name(name)?;
                let ia5 = name.as_str().try_into().map_err(|e| Error::InvalidName {
                    name: name.clone(),
                    detail: format!("{e}"),
                })?;
                SanType::DnsName(ia5)
            }
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// Hostname syntax (letters, digits, `-`, `_`), with an optional `*.` first label.
fn check_dns_name(name: &str) -> Result<(), Error> {
    let bad = |detail: &str| Error::InvalidName {
        name: name.to_owned(),
        detail: detail.to_owned(),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("a DNS name must have 1 to 253 characters"));
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad(
                "each DNS label must have 1 to 63 characters (no empty labels, no trailing dot)",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "a DNS name may hold ASCII letters, digits, '-' and '_' only, with an optional leading \"*.\"",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::testutil::{CN, DAY, DC, HOUR, now, parse_pem};

    #[test]
    fn self_signed_ca_is_a_pathlen0_ca() {
        let ca = self_signed_ca("egress-proxy listener CA", &[], now(), 365 * DAY).expect("ca");
        assert!(ca.chain_pem.is_empty());
        assert_eq!(ca.not_before, now() - HOUR);
        assert_eq!(ca.not_after, now() + 365 * DAY);
        let der = parse_pem(&ca.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("x509");
        assert_eq!(cert.subject().to_string(), "CN=egress-proxy listener CA");
        assert_eq!(cert.issuer().as_raw(), cert.subject().as_raw());
        let bc = cert.basic_constraints().expect("bc").expect("present");
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().expect("ku").expect("present");
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(ku.value.digital_signature());
        cert.verify_signature(None).expect("self-signed");
        assert_eq!(dates::from_asn1(cert.validity().not_before), ca.not_before);
        assert_eq!(dates::from_asn1(cert.validity().not_after), ca.not_after);
        let key = key::key_pair(&ca.key_pem).expect("key loads");
        assert!(key_matches(&cert, &key));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    /// `openssl verify` of `leaf` against `ca` alone, at the tests' `now()`:
    /// what it printed.
    fn openssl_verify(ca: &str, leaf: &str) -> String {
        let at = now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            .to_string();
        let dir = std::env::temp_dir().join(format!(
            "egress-pki-verify-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("ca.pem"), ca).expect("ca");
        std::fs::write(dir.join("leaf.pem"), leaf).expect("leaf");
        let output = std::process::Command::new("openssl")
            .args(["verify", "-attime", &at, "-CAfile"])
            .arg(dir.join("ca.pem"))
            .arg(dir.join("leaf.pem"))
            .output()
            .expect("openssl runs");
        let _ = std::fs::remove_dir_all(&dir);
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }

    #[test]
    fn a_name_constrained_ca_is_trusted_for_its_names_only() {
        let permitted = [
            "egress.team.svc".to_owned(),
            "egress.team.svc.cluster.local".to_owned(),
        ];
        let ca = self_signed_ca("listener CA", &permitted, now(), 30 * DAY).expect("ca");
        let leaf = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            issue_server_cert(&ca.cert_pem, &ca.key_pem, &names, now(), DAY)
                .expect("signed")
                .cert_pem
        };
        let own = openssl_verify(
            &ca.cert_pem,
            &leaf(&permitted.each_ref().map(String::as_str)),
        );
        assert!(own.contains(": OK"), "{own}");
        // What the key could sign if it leaked is refused by clients.
        let bank = openssl_verify(&ca.cert_pem, &leaf(&["bank.example"]));
        assert!(bank.contains("permitted subtree violation"), "{bank}");
        let address = openssl_verify(&ca.cert_pem, &leaf(&["egress.team.svc", "10.0.0.1"]));
        assert!(address.contains("excluded subtree violation"), "{address}");
        // Unconstrained when no name is given.
        let open = self_signed_ca("webhook CA", &[], now(), DAY).expect("ca");
        let der = parse_pem(&open.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("x509");
        assert!(cert.name_constraints().expect("parses").is_none());
    }

    #[test]
    fn server_cert_has_sans_eku_and_is_not_a_ca() {
        let ca = self_signed_ca("webhook CA", &[], now(), 30 * DAY).expect("ca");
        let names = [
            "egress-webhook.egress-system.svc",
            "egress-webhook.egress-system.svc",
            "10.96.0.10",
            "::1",
            "*.example.com",
        ]
        .map(String::from);
        let cert = issue_server_cert(&ca.cert_pem, &ca.key_pem, &names, now(), 400 * DAY)
            .expect("server cert");
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        let der = parse_pem(&cert.cert_pem);
        let (_, x509) = X509Certificate::from_der(&der).expect("x509");
        let ca_der = parse_pem(&ca.cert_pem);
        let (_, ca_x509) = X509Certificate::from_der(&ca_der).expect("ca");
        x509.verify_signature(Some(ca_x509.public_key()))
            .expect("signed by the CA");
        assert_eq!(x509.issuer().as_raw(), ca_x509.subject().as_raw());
        assert_eq!(
            x509.subject().to_string(),
            "CN=egress-webhook.egress-system.svc"
        );

        let san = x509
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        let expected = [
            GeneralName::DNSName("egress-webhook.egress-system.svc"),
            GeneralName::IPAddress(&[10, 96, 0, 10]),
            GeneralName::IPAddress(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            GeneralName::DNSName("*.example.com"),
        ];
        assert_eq!(san.value.general_names, expected);
        let eku = x509.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let ku = x509.key_usage().expect("ku").expect("present");
        assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
        let bc = x509.basic_constraints().expect("bc").expect("present");
        assert!(!bc.value.ca);
        // AKI names the CA's key.
        let ca_ski = ca_x509
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
                _ => None,
            })
            .expect("CA SKI");
        let aki = x509
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0)
                }
                _ => None,
            })
            .expect("AKI");
        assert_eq!(aki, ca_ski);
        // Capped by the CA's 30 days, not the 400 asked for.
        assert_eq!(cert.not_before, now() - HOUR);
        assert_eq!(cert.not_after, now() + 30 * DAY);
        assert_eq!(dates::from_asn1(x509.validity().not_after), cert.not_after);
        let key = key::key_pair(&cert.key_pem).expect("key");
        assert!(key_matches(&x509, &key));
    }

    #[test]
    fn server_cert_refusals() {
        let ca = self_signed_ca("CA", &[], now(), 30 * DAY).expect("ca");
        let other = self_signed_ca("other CA", &[], now(), 30 * DAY).expect("ca");
        let names = vec!["svc.example".to_owned()];
        let err = issue_server_cert(&ca.cert_pem, &other.key_pem, &names, now(), DAY)
            .expect_err("wrong key");
        assert_eq!(err.reason(), "CaKeyMismatch");
        let err = issue_server_cert(&ca.cert_pem, &ca.key_pem, &names, now() + 31 * DAY, DAY)
            .expect_err("expired CA");
        assert_eq!(err.reason(), "CaExpired");
        for bad in [
            "",
            "bad name.example",
            "trailing.dot.",
            "a..b",
            "ünicode.example",
            "x.*.example",
        ] {
            let err = issue_server_cert(&ca.cert_pem, &ca.key_pem, &[bad.to_owned()], now(), DAY)
                .expect_err(bad);
            assert_eq!(err.reason(), "InvalidName", "{bad:?}: {err}");
        }
        let err =
            issue_server_cert(&ca.cert_pem, &ca.key_pem, &[], now(), DAY).expect_err("no names");
        assert_eq!(err.reason(), "InvalidName");
        let err = issue_server_cert(&ca.cert_pem, &ca.key_pem, &names, now(), Duration::ZERO)
            .expect_err("zero lifetime");
        assert_eq!(err.reason(), "IssueFailed");
        assert_eq!(
            self_signed_ca("", &[], now(), DAY)
                .expect_err("empty CN")
                .reason(),
            "InvalidName"
        );
    }

    #[test]
    fn issuer_name_is_copied_byte_for_byte() {
        // Two values of one attribute type: rcgen's DistinguishedName would
        // keep only one of them.
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = dates::to_offset(now() - DAY).expect("t");
        params.not_after = dates::to_offset(now() + DAY).expect("t");
        let key = new_key().expect("key");
        let placeholder = params.self_signed(&key).expect("cert");
        let two_dcs = crate::testutil::name(&[(DC, "example"), (DC, "com"), (CN, "Issuing CA")]);
        let ca_der = replace_name(placeholder.der(), 0, &two_dcs, &key).expect("issuer");
        // Its subject too, so it is a proper self-signed CA.
        let ca_der = replace_name(&ca_der, 2, &two_dcs, &key).expect("subject");
        let ca_pem = pem::encode("CERTIFICATE", &ca_der);
        let cert = issue_server_cert(
            &ca_pem,
            &key.serialize_pem(),
            &["a.example".to_owned()],
            now(),
            HOUR,
        )
        .expect("cert");
        let der = parse_pem(&cert.cert_pem);
        let (_, x509) = X509Certificate::from_der(&der).expect("x509");
        assert_eq!(x509.issuer().as_raw(), two_dcs.as_slice());
        assert_eq!(
            x509.issuer().to_string(),
            "DC=example, DC=com, CN=Issuing CA"
        );
        let (_, ca) = X509Certificate::from_der(&ca_der).expect("ca");
        x509.verify_signature(Some(ca.public_key()))
            .expect("re-signed");
    }
}
