//! Reading back what a stored certificate says, and when to renew it.

use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::Error;
use crate::{dates, pem};

/// What the operator needs to know about a stored certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject, RFC 4514 style (`CN=..., O=...`).
    pub subject: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// basicConstraints says CA:TRUE.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint, when present.
    pub path_len: Option<u32>,
    /// DNS names and IP addresses of the subjectAltName extension, in
    /// order, as [`issue_server_cert`](crate::issue_server_cert) takes them.
    pub names: Vec<String>,
    /// The DNS names a CA's nameConstraints permit, in order (empty: none
    /// named), as [`self_signed_ca`](crate::issue::self_signed_ca) takes them.
    pub permitted_dns: Vec<String>,
}

/// Describes the first certificate of `cert_pem`.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, Error> {
    let certs = pem::certificates(cert_pem)?;
    let first = parse(&certs[0], 1)?;
    let constraints = first
        .basic_constraints()
        .map_err(|e| invalid(1, e))?
        .map(|ext| ext.value.clone());
    let names = first
        .subject_alternative_name()
        .map_err(|e| invalid(1, e))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_address(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let permitted_dns = first
        .name_constraints()
        .map_err(|e| invalid(1, e))?
        .and_then(|nc| nc.value.permitted_subtrees.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|subtree| match subtree.base {
            GeneralName::DNSName(dns) => Some(dns.to_owned()),
            _ => None,
        })
        .collect();
    Ok(CertInfo {
        subject: first.subject().to_string(),
        not_before: dates::from_asn1(first.validity().not_before),
        not_after: dates::from_asn1(first.validity().not_after),
        is_ca: constraints.as_ref().is_some_and(|bc| bc.ca),
        path_len: constraints.and_then(|bc| bc.path_len_constraint),
        names,
        permitted_dns,
    })
}

fn ip_address(bytes: &[u8]) -> Option<String> {
    let address = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(address.to_string())
}

/// Whether a certificate valid from `not_before` to `not_after` should be
/// replaced at `now`.
///
/// The rule: renew once less than a third of the lifetime remains (a 90-day
/// certificate at day 60, like cert-manager's default), so there is time to
/// retry well before expiry. A certificate that has expired, or whose
/// validity is empty, is due; one that is not valid yet is not.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = match not_after.duration_since(not_before) {
        Ok(lifetime) if !lifetime.is_zero() => lifetime,
        _ => return true,
    };
    match not_after.duration_since(now) {
        Ok(remaining) => remaining.is_zero() || remaining < lifetime / 3,
        Err(_) => true,
    }
}

pub(crate) fn parse(der: &[u8], index: usize) -> Result<X509Certificate<'_>, Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| invalid(index, e))
}

fn invalid(index: usize, err: impl std::fmt::Display) -> Error {
    Error::CertificateInvalid {
        index,
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renewal_after_two_thirds_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 90 * DAY;
        assert!(!renewal_due(start, end, start));
        assert!(!renewal_due(start, end, start + 59 * DAY));
        assert!(!renewal_due(start, end, start + 60 * DAY));
        assert!(renewal_due(
            start,
            end,
            start + 60 * DAY + Duration::from_secs(1)
        ));
        assert!(renewal_due(start, end, start + 89 * DAY));
        assert!(renewal_due(start, end, end));
        assert!(renewal_due(start, end, end + DAY));
        // Not valid yet: not due (it will be used once it starts).
        assert!(!renewal_due(start, end, start - DAY));
        // Empty or inverted validity is due.
        assert!(renewal_due(start, start, start - DAY));
        assert!(renewal_due(end, start, start));
    }

    #[test]
    fn inspect_reads_the_first_certificate() {
        let mut params = rcgen::CertificateParams::new(vec![
            "a.example".to_owned(),
            "10.0.0.1".to_owned(),
            "b.example".to_owned(),
        ])
        .expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(3));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Inspected");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("t");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let other = rcgen::generate_simple_self_signed(vec!["c.example".to_owned()]).expect("c");

        let info = inspect(&format!("{}{}", cert.pem(), other.cert.pem())).expect("inspect");
        assert_eq!(info.subject, "CN=Inspected");
        assert_eq!(
            info.not_before,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            info.not_after,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        );
        assert!(info.is_ca);
        assert_eq!(info.path_len, Some(3));
        assert_eq!(info.names, ["a.example", "10.0.0.1", "b.example"]);

        let leaf = inspect(&other.cert.pem()).expect("inspect");
        assert!(!leaf.is_ca);
        assert_eq!(leaf.path_len, None);
        assert_eq!(
            inspect("").expect_err("empty").reason(),
            "CertificateMissing"
        );
    }
}
