//! The user's CA (the "parent"): checking it can sign an intermediate CA,
//! and issuing the gateway's interception sub-CA from it.

use std::iter;
use std::time::{Duration, SystemTime};

use rcgen::{CustomExtension, KeyPair};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS;

use crate::error::Error;
use crate::issue::{self, IssuedCa, Signer};
use crate::{dates, inspect, key, pem};

/// id-ce-nameConstraints, 2.5.29.30.
const NAME_CONSTRAINTS: &[u64] = &[2, 5, 29, 30];

/// A CA certificate and key that passed every check of [`Parent::load`].
#[derive(Debug)]
pub struct Parent {
    cert: CertificateDer<'static>,
    key: KeyPair,
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
    chain: Vec<CertificateDer<'static>>,
}

impl Parent {
    /// Reads and checks a CA Secret in cert-manager's layout: `cert_pem` is
    /// `tls.crt` (the CA certificate first, then its chain if any), `key_pem`
    /// is `tls.key`, `ca_pem` is `ca.crt` (the root; empty counts as absent).
    ///
    /// Checks, in this order, each with its own [`Error`] variant: the
    /// certificates parse (`ParentInvalid`); the first is a CA (`ParentNotCa`);
    /// its keyUsage, if present, has keyCertSign (`ParentCannotSign`); its
    /// pathLenConstraint is not 0 and no CA above it in the given chain
    /// forbids one more CA below (`ParentPathLenZero`); it is valid at `now`
    /// (`ParentNotYetValid`, `ParentExpired`); the key parses
    /// (`ParentInvalid`) and can sign (`ParentKeyUnsupported`); the key is
    /// the certificate's (`ParentKeyMismatch`).
    pub fn load(
        cert_pem: &str,
        key_pem: &str,
        ca_pem: Option<&str>,
        now: SystemTime,
    ) -> Result<Parent, Error> {
        let mut certs = pem::certificates(cert_pem).map_err(|e| invalid("tls.crt", &e))?;
        let cert = certs.remove(0);
        let mut chain = certs;
        if let Some(ca_pem) = ca_pem.filter(|text| !text.trim().is_empty()) {
            for root in pem::certificates(ca_pem).map_err(|e| invalid("ca.crt", &e))? {
                if root != cert && !chain.contains(&root) {
                    chain.push(root);
                }
            }
        }

        let x509 = inspect::parse(&cert, 1).map_err(|e| invalid("tls.crt", &e))?;
        let subject = x509.subject().to_string();
        let constraints = x509
            .basic_constraints()
            .map_err(|e| invalid("tls.crt", &e))?
            .map(|ext| ext.value.clone())
            .filter(|bc| bc.ca);
        let Some(constraints) = constraints else {
            return Err(Error::ParentNotCa { subject });
        };
        let key_usage = x509.key_usage().map_err(|e| invalid("tls.crt", &e))?;
        if key_usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(Error::ParentCannotSign { subject });
        }
        if constraints.path_len_constraint == Some(0) {
            return Err(Error::ParentPathLenZero {
                subject,
                limited_by: None,
            });
        }
        check_chain_path_len(&x509, &chain, &subject)?;

        let not_before = dates::from_asn1(x509.validity().not_before);
        let not_after = dates::from_asn1(x509.validity().not_after);
        check_validity(&subject, not_before, not_after, now)?;

        let key = key::key_pair(key_pem).map_err(|e| match e {
            Error::KeyUnsupported { detail } => Error::ParentKeyUnsupported { detail },
            Error::KeyEncrypted => Error::ParentKeyUnsupported {
                detail:
                    "it is encrypted (decrypt it with `openssl pkey -in tls.key -out plain.key`)"
                        .to_owned(),
            },
            other => invalid("tls.key", &other),
        })?;
        if !issue::key_matches(&x509, &key) {
            return Err(Error::ParentKeyMismatch { subject });
        }

        Ok(Parent {
            cert,
            key,
            subject,
            not_before,
            not_after,
            chain,
        })
    }

    /// The parent's subject, RFC 4514 style.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Start of the parent's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the parent's validity; no sub-CA outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The parent certificate itself.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificates above the parent as given: the rest of `tls.crt`,
    /// then those of `ca.crt` that were not already there.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Issues the gateway's interception CA under this parent.
    ///
    /// A new ECDSA P-256 key; basicConstraints CA:TRUE, pathlen 0, critical;
    /// keyUsage keyCertSign, cRLSign and digitalSignature, critical; subject
    /// and authority key identifiers (the latter only when the parent has a
    /// subject key identifier to repeat). The parent's nameConstraints
    /// extension, when it has one, is copied unchanged (every form:
    /// DNS, IP, email, directory name, URI, and any other, permitted and
    /// excluded, with the parent's criticality). Validity runs from
    /// max(`now` - 1 h, parent's notBefore) to min(`now` + `lifetime`,
    /// parent's notAfter). The signature is the parent key's: RSA PKCS#1
    /// v1.5 with SHA-256, ECDSA P-256 with SHA-256, P-384 with SHA-384, or
    /// Ed25519.
    pub fn issue_sub_ca(
        &self,
        common_name: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<IssuedCa, Error> {
        check_validity(&self.subject, self.not_before, self.not_after, now)?;
        let (not_before, not_after) = issue::window(now, lifetime, self.not_before, self.not_after);
        issue::check_window(not_before, not_after, now)?;
        let mut params = issue::ca_params(common_name, not_before, not_after)?;

        let parent = inspect::parse(&self.cert, 1)?;
        let constraints = parent
            .get_extension_unique(&OID_X509_EXT_NAME_CONSTRAINTS)
            .map_err(Error::issue)?;
        if let Some(ext) = constraints {
            // Copied as encoded: rcgen's own NameConstraints type has no URI,
            // otherName or min/max forms, and cannot hold a directory name
            // with a repeated attribute.
            let mut copy = CustomExtension::from_oid_content(NAME_CONSTRAINTS, ext.value.to_vec());
            copy.set_criticality(ext.critical);
            params.custom_extensions.push(copy);
        }

        let key = issue::new_key()?;
        let der = issue::sign(
            params,
            &key,
            &Signer {
                cert: &self.cert,
                key: &self.key,
            },
        )?;
        Ok(IssuedCa {
            cert_pem: pem::encode("CERTIFICATE", &der),
            key_pem: pem::encode("PRIVATE KEY", key.serialized_der()),
            chain_pem: pem::encode_certificates(iter::once(&self.cert).chain(&self.chain)),
            not_before,
            not_after,
        })
    }
}

fn invalid(field: &'static str, err: &dyn std::fmt::Display) -> Error {
    Error::ParentInvalid {
        field,
        detail: err.to_string(),
    }
}

fn check_validity(
    subject: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
) -> Result<(), Error> {
    if now < not_before {
        return Err(Error::ParentNotYetValid {
            subject: subject.to_owned(),
            not_before: dates::format(not_before),
            not_after: dates::format(not_after),
        });
    }
    if now > not_after {
        return Err(Error::ParentExpired {
            subject: subject.to_owned(),
            not_before: dates::format(not_before),
            not_after: dates::format(not_after),
        });
    }
    Ok(())
}

/// Walks up the given chain while each certificate issued the one below it:
/// the one `n` steps above the parent has the parent, the certificates
/// between and the new sub-CA below it, so it needs pathLenConstraint
/// `n + 1` or none (the leaf does not count). Go and OpenSSL enforce this on
/// roots too.
fn check_chain_path_len(
    parent: &X509Certificate<'_>,
    chain: &[CertificateDer<'static>],
    subject: &str,
) -> Result<(), Error> {
    let mut below = parent.clone();
    for (i, der) in chain.iter().enumerate() {
        let above = inspect::parse(der, i + 2).map_err(|e| invalid("tls.crt", &e))?;
        if below.issuer().as_raw() != above.subject().as_raw() {
            break;
        }
        let path_len = above
            .basic_constraints()
            .ok()
            .flatten()
            .and_then(|bc| bc.value.path_len_constraint);
        let needs = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(2);
        if let Some(has) = path_len.filter(|&has| has < needs) {
            return Err(Error::ParentPathLenZero {
                subject: subject.to_owned(),
                limited_by: Some((above.subject().to_string(), has, needs)),
            });
        }
        below = above;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CidrSubnet, DnType, GeneralSubtree, IsCa, KeyUsagePurpose,
        NameConstraints,
    };
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::oid_registry::{
        OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ED25519,
    };
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::testutil::{
        DAY, HOUR, Made, ca_params, now, parse_pem, self_signed, self_signed_with, signed_by,
        unconstrained,
    };

    fn load(made: &Made) -> Result<Parent, Error> {
        Parent::load(&made.cert_pem, &made.key_pem(), None, now())
    }

    fn refused(made: &Made) -> Error {
        load(made).expect_err("parent must be refused")
    }

    fn x509(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).expect("x509").1
    }

    fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .expect("SKI")
    }

    fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("AKI")
    }

    #[test]
    fn good_parent_loads_with_its_facts() {
        let root = self_signed(unconstrained("Root"));
        let parent = load(&root).expect("good parent");
        assert_eq!(parent.subject(), "O=Example Corp, CN=Root");
        assert_eq!(parent.not_before(), now() - 30 * DAY);
        assert_eq!(parent.not_after(), now() + 365 * DAY);
        assert!(parent.chain().is_empty());
        assert_eq!(parent.certificate().as_ref(), parse_pem(&root.cert_pem));
        // pathlen 1 is enough for the one sub-CA.
        let one = self_signed(ca_params("One", IsCa::Ca(BasicConstraints::Constrained(1))));
        load(&one).expect("pathlen 1");
    }

    #[test]
    fn end_entity_is_not_a_ca() {
        for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
            let mut params = unconstrained("leaf.example");
            params.is_ca = is_ca;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let err = refused(&self_signed(params));
            assert_eq!(err.reason(), "ParentNotCA");
            let message = err.to_string();
            assert!(message.contains("CN=leaf.example"), "{message}");
            assert!(message.contains("isCA: true"), "{message}");
            assert!(message.contains("CA:TRUE"), "{message}");
        }
    }

    #[test]
    fn path_len_zero_is_refused_with_the_fix() {
        let err = refused(&self_signed(ca_params(
            "Issuing",
            IsCa::Ca(BasicConstraints::Constrained(0)),
        )));
        assert_eq!(err.reason(), "ParentPathLenZero");
        let message = err.to_string();
        for words in [
            "basicConstraints pathlen:0",
            "-addext \"basicConstraints=critical,CA:TRUE,pathlen:1\"",
            "leave pathlen out",
            "cert-manager has no path length field",
            "isCA: true",
        ] {
            assert!(message.contains(words), "{message:?} lacks {words:?}");
        }
    }

    #[test]
    fn path_len_of_a_ca_above_is_checked() {
        let root = self_signed(ca_params(
            "Root",
            IsCa::Ca(BasicConstraints::Constrained(1)),
        ));
        let issuing = signed_by(unconstrained("Issuing"), &root);
        let err = Parent::load(
            &issuing.cert_pem,
            &issuing.key_pem(),
            Some(&root.cert_pem),
            now(),
        )
        .expect_err("root allows only one CA below it");
        assert_eq!(err.reason(), "ParentPathLenZero");
        assert_eq!(
            err,
            Error::ParentPathLenZero {
                subject: "O=Example Corp, CN=Issuing".to_owned(),
                limited_by: Some(("O=Example Corp, CN=Root".to_owned(), 1, 2)),
            }
        );
        assert!(err.to_string().contains("pathlen:2"), "{err}");

        let root = self_signed(ca_params(
            "Root",
            IsCa::Ca(BasicConstraints::Constrained(2)),
        ));
        let issuing = signed_by(unconstrained("Issuing"), &root);
        Parent::load(
            &issuing.cert_pem,
            &issuing.key_pem(),
            Some(&root.cert_pem),
            now(),
        )
        .expect("pathlen 2 above leaves room");
        // A certificate that did not issue the parent is not counted.
        let stranger = self_signed(ca_params(
            "Other",
            IsCa::Ca(BasicConstraints::Constrained(0)),
        ));
        Parent::load(
            &issuing.cert_pem,
            &issuing.key_pem(),
            Some(&stranger.cert_pem),
            now(),
        )
        .expect("unrelated ca.crt is not a constraint");
    }

    #[test]
    fn key_usage_without_key_cert_sign() {
        let mut params = unconstrained("No Sign");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        let err = refused(&self_signed(params));
        assert_eq!(err.reason(), "ParentCannotSign");
        assert!(err.to_string().contains("keyCertSign"), "{err}");
        // No keyUsage at all is fine (RFC 5280 puts no limit then).
        let mut params = unconstrained("No KU");
        params.key_usages.clear();
        load(&self_signed(params)).expect("absent keyUsage");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let mut params = unconstrained("Old");
        params.not_before = dates::to_offset(now() - 400 * DAY).expect("t");
        params.not_after = dates::to_offset(now() - DAY).expect("t");
        let err = refused(&self_signed(params));
        assert_eq!(err.reason(), "ParentExpired");
        assert!(err.to_string().contains("2025-06-14T15:06:40Z"), "{err}");

        let mut params = unconstrained("Future");
        params.not_before = dates::to_offset(now() + DAY).expect("t");
        let err = refused(&self_signed(params));
        assert_eq!(err.reason(), "ParentNotYetValid");
        assert!(err.to_string().contains("2025-06-16T15:06:40Z"), "{err}");
    }

    #[test]
    fn key_problems() {
        let root = self_signed(unconstrained("Root"));
        let other = rcgen::KeyPair::generate().expect("key");
        let err = Parent::load(&root.cert_pem, &other.serialize_pem(), None, now())
            .expect_err("someone else's key");
        assert_eq!(err.reason(), "ParentKeyMismatch");
        assert!(err.to_string().contains("openssl pkey -pubout"), "{err}");

        for (key, words) in [
            (include_str!("../testdata/p521.sec1.pem"), "P-521"),
            (
                include_str!("../testdata/rsa.encrypted-pkcs8.pem"),
                "encrypted",
            ),
            (include_str!("../testdata/dsa.pem"), "DSA"),
        ] {
            let err = Parent::load(&root.cert_pem, key, None, now()).expect_err(words);
            assert_eq!(err.reason(), "ParentKeyUnsupported", "{err}");
            let message = err.to_string();
            assert!(message.contains(words), "{message}");
            assert!(message.contains("privateKey.algorithm"), "{message}");
        }

        let err = Parent::load(&root.cert_pem, "", None, now()).expect_err("no key");
        assert_eq!(
            err,
            Error::ParentInvalid {
                field: "tls.key",
                detail: Error::KeyMissing.to_string()
            }
        );
    }

    #[test]
    fn unreadable_fields() {
        let root = self_signed(unconstrained("Root"));
        let err = Parent::load("", &root.key_pem(), None, now()).expect_err("empty tls.crt");
        assert!(
            matches!(
                err,
                Error::ParentInvalid {
                    field: "tls.crt",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.reason(), "ParentInvalid");
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = Parent::load(&root.cert_pem, &root.key_pem(), Some(junk), now())
            .expect_err("bad ca.crt");
        assert!(
            matches!(
                err,
                Error::ParentInvalid {
                    field: "ca.crt",
                    ..
                }
            ),
            "{err:?}"
        );
        // Empty ca.crt (cert-manager writes one for some issuers) is absent.
        load(&root).expect("baseline");
        Parent::load(&root.cert_pem, &root.key_pem(), Some("\n"), now()).expect("empty ca.crt");
    }

    #[test]
    fn chain_from_tls_crt_and_ca_crt_without_duplicates() {
        let root = self_signed(unconstrained("Root"));
        let middle = signed_by(unconstrained("Middle"), &root);
        let issuing = signed_by(unconstrained("Issuing"), &middle);
        let tls_crt = format!("{}{}", issuing.cert_pem, middle.cert_pem);
        let root_der = parse_pem(&root.cert_pem);
        let middle_der = parse_pem(&middle.cert_pem);

        let parent =
            Parent::load(&tls_crt, &issuing.key_pem(), Some(&root.cert_pem), now()).expect("ok");
        let chain: Vec<&[u8]> = parent.chain().iter().map(|c| c.as_ref()).collect();
        assert_eq!(chain, [middle_der.as_slice(), root_der.as_slice()]);

        // ca.crt repeating a certificate of tls.crt adds nothing.
        let tls_crt = format!("{tls_crt}{}", root.cert_pem);
        let parent =
            Parent::load(&tls_crt, &issuing.key_pem(), Some(&root.cert_pem), now()).expect("ok");
        assert_eq!(parent.chain().len(), 2);
        // A root used directly: ca.crt is the parent itself.
        let parent =
            Parent::load(&root.cert_pem, &root.key_pem(), Some(&root.cert_pem), now()).expect("ok");
        assert!(parent.chain().is_empty());

        let sub = Parent::load(
            &format!("{}{}", issuing.cert_pem, middle.cert_pem),
            &issuing.key_pem(),
            Some(&root.cert_pem),
            now(),
        )
        .expect("ok")
        .issue_sub_ca("Interception", now(), 30 * DAY)
        .expect("sub-CA");
        let chain = pem::certificates(&sub.chain_pem).expect("chain pem");
        let chain: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
        let issuing_der = parse_pem(&issuing.cert_pem);
        assert_eq!(
            chain,
            [
                issuing_der.as_slice(),
                middle_der.as_slice(),
                root_der.as_slice()
            ]
        );
    }

    #[test]
    fn sub_ca_contents() {
        let root = self_signed(unconstrained("Root"));
        let parent = load(&root).expect("parent");
        let sub = parent
            .issue_sub_ca("egress-proxy interception", now(), 30 * DAY)
            .expect("sub-CA");
        assert!(!format!("{sub:?}").contains("PRIVATE KEY"));
        let der = parse_pem(&sub.cert_pem);
        let cert = x509(&der);
        let root_der = parse_pem(&root.cert_pem);
        let root_cert = x509(&root_der);

        cert.verify_signature(Some(root_cert.public_key()))
            .expect("signed by the parent");
        assert_eq!(cert.issuer().as_raw(), root_cert.subject().as_raw());
        assert_eq!(cert.subject().to_string(), "CN=egress-proxy interception");
        let bc = cert.basic_constraints().expect("bc").expect("present");
        assert!(bc.critical, "basicConstraints must be critical");
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().expect("ku").expect("present");
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
        assert!(!ku.value.key_encipherment());
        assert_eq!(aki(&cert), ski(&root_cert));
        assert_ne!(ski(&cert), ski(&root_cert));
        assert!(cert.name_constraints().expect("nc").is_none());
        assert_eq!(
            cert.signature_algorithm.algorithm,
            OID_SIG_ECDSA_WITH_SHA256
        );

        assert_eq!(sub.not_before, now() - HOUR);
        assert_eq!(sub.not_after, now() + 30 * DAY);
        assert_eq!(dates::from_asn1(cert.validity().not_before), sub.not_before);
        assert_eq!(dates::from_asn1(cert.validity().not_after), sub.not_after);
        assert_eq!(sub.chain_pem, root.cert_pem);

        let key = key::key_pair(&sub.key_pem).expect("PKCS#8 key");
        assert!(sub.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(issue::key_matches(&cert, &key));
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);

        // The sub-CA signs serving certificates.
        let leaf = crate::issue_server_cert(
            &sub.cert_pem,
            &sub.key_pem,
            &["intercepted.example".to_owned()],
            now(),
            DAY,
        )
        .expect("leaf");
        let leaf_der = parse_pem(&leaf.cert_pem);
        x509(&leaf_der)
            .verify_signature(Some(cert.public_key()))
            .expect("leaf signed by the sub-CA");
    }

    #[test]
    fn sub_ca_validity_stays_inside_the_parent() {
        // Parent ends in 10 days and started 10 minutes ago.
        let mut params = unconstrained("Short");
        params.not_before = dates::to_offset(now() - 10 * 60 * Duration::from_secs(1)).expect("t");
        params.not_after = dates::to_offset(now() + 10 * DAY).expect("t");
        let short = self_signed(params);
        let parent = load(&short).expect("parent");
        let sub = parent.issue_sub_ca("Sub", now(), 365 * DAY).expect("sub");
        assert_eq!(sub.not_before, parent.not_before());
        assert_eq!(sub.not_after, parent.not_after());
        let der = parse_pem(&sub.cert_pem);
        let cert = x509(&der);
        assert_eq!(
            dates::from_asn1(cert.validity().not_after),
            parent.not_after()
        );
        assert_eq!(
            dates::from_asn1(cert.validity().not_before),
            parent.not_before()
        );

        // Issuing after the parent expired is refused, not capped to nothing.
        let err = parent
            .issue_sub_ca("Sub", now() + 11 * DAY, DAY)
            .expect_err("parent expired by then");
        assert_eq!(err.reason(), "ParentExpired");
    }

    #[test]
    fn name_constraints_are_copied() {
        let mut params = unconstrained("Constrained");
        let mut permitted_dn = rcgen::DistinguishedName::new();
        permitted_dn.push(DnType::OrganizationName, "Example Corp");
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![
                GeneralSubtree::DnsName("example.com".to_owned()),
                GeneralSubtree::DnsName(".internal.example".to_owned()),
                GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([10, 0, 0, 0], 8)),
                GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
                    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    8,
                )),
                GeneralSubtree::Rfc822Name("example.com".to_owned()),
                GeneralSubtree::DirectoryName(permitted_dn),
            ],
            excluded_subtrees: vec![
                GeneralSubtree::DnsName("secret.example.com".to_owned()),
                GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([10, 9, 0, 0], 16)),
            ],
        });
        let constrained = self_signed(params);
        let sub = load(&constrained)
            .expect("parent")
            .issue_sub_ca("Sub", now(), DAY)
            .expect("sub");

        let parent_der = parse_pem(&constrained.cert_pem);
        let parent_cert = x509(&parent_der);
        let sub_der = parse_pem(&sub.cert_pem);
        let sub_cert = x509(&sub_der);
        let theirs = parent_cert
            .name_constraints()
            .expect("nc")
            .expect("parent has them");
        let ours = sub_cert.name_constraints().expect("nc").expect("copied");
        assert!(ours.critical);
        assert_eq!(ours.value, theirs.value);
        let permitted = ours.value.permitted_subtrees.as_ref().expect("permitted");
        assert_eq!(permitted.len(), 6);
        assert_eq!(ours.value.excluded_subtrees.as_ref().map(Vec::len), Some(2));
        sub_cert
            .verify_signature(Some(parent_cert.public_key()))
            .expect("signature");
    }

    #[test]
    fn parent_key_types_sign_with_their_algorithm() {
        let rsa = key::key_pair(include_str!("../testdata/rsa2048.pkcs1.pem")).expect("rsa");
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let cases = [
            (rsa, OID_PKCS1_SHA256WITHRSA),
            (p384, OID_SIG_ECDSA_WITH_SHA384),
            (ed, OID_SIG_ED25519),
        ];
        for (key, expected) in cases {
            let parent_made = self_signed_with(unconstrained("Typed"), key);
            let parent = load(&parent_made).expect("parent");
            let sub = parent.issue_sub_ca("Sub", now(), DAY).expect("sub");
            let parent_der = parse_pem(&parent_made.cert_pem);
            let sub_der = parse_pem(&sub.cert_pem);
            let sub_cert = x509(&sub_der);
            assert_eq!(sub_cert.signature_algorithm.algorithm, expected);
            sub_cert
                .verify_signature(Some(x509(&parent_der).public_key()))
                .expect("verifies with the parent's key");
        }
    }
}
