//! Helpers shared by the unit tests: a fixed clock and CAs built with rcgen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{dates, der, pem};

pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

/// A fixed, whole-second "now" (2025-06-15T15:06:40Z).
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// Attribute types for [`name`]: OID content and the string tag to use.
pub(crate) type Attr = (&'static [u8], u8);
/// domainComponent (0.9.2342.19200300.100.1.25), an IA5String.
pub(crate) const DC: Attr = (
    &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
    0x16,
);
/// commonName (2.5.4.3), a UTF8String.
pub(crate) const CN: Attr = (&[0x55, 0x04, 0x03], 0x0c);

/// A DER Name with one attribute per RDN, in order.
pub(crate) fn name(parts: &[(Attr, &str)]) -> Vec<u8> {
    let rdns: Vec<Vec<u8>> = parts
        .iter()
        .map(|((oid, tag), value)| {
            let attr = der::write_parts(
                der::SEQUENCE,
                &[
                    &der::write(der::OID, oid),
                    &der::write(*tag, value.as_bytes()),
                ],
            );
            der::write(0x31, &attr)
        })
        .collect();
    let refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
    der::write_parts(der::SEQUENCE, &refs)
}

/// DER of the first certificate in `text`.
pub(crate) fn parse_pem(text: &str) -> Vec<u8> {
    pem::certificates(text).expect("a certificate")[0].to_vec()
}

/// CA parameters valid from 30 days before to 365 days after [`now`].
pub(crate) fn ca_params(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = is_ca;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = dates::to_offset(now() - 30 * DAY).expect("time");
    params.not_after = dates::to_offset(now() + 365 * DAY).expect("time");
    params
}

pub(crate) fn unconstrained(cn: &str) -> CertificateParams {
    ca_params(cn, IsCa::Ca(BasicConstraints::Unconstrained))
}

/// A certificate made with rcgen: its PEM, its key and the parameters it
/// was made from (to sign with it later).
#[derive(Debug)]
pub(crate) struct Made {
    pub(crate) cert_pem: String,
    pub(crate) key: KeyPair,
    pub(crate) params: CertificateParams,
}

impl Made {
    pub(crate) fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}

pub(crate) fn self_signed(params: CertificateParams) -> Made {
    self_signed_with(params, KeyPair::generate().expect("key"))
}

pub(crate) fn self_signed_with(mut params: CertificateParams, key: KeyPair) -> Made {
    params.use_authority_key_identifier_extension = true;
    let cert = params.self_signed(&key).expect("self-signed");
    Made {
        cert_pem: cert.pem(),
        key,
        params,
    }
}

pub(crate) fn signed_by(mut params: CertificateParams, issuer: &Made) -> Made {
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let signer = Issuer::from_params(&issuer.params, &issuer.key);
    let cert = params.signed_by(&key, &signer).expect("signed");
    Made {
        cert_pem: cert.pem(),
        key,
        params,
    }
}
