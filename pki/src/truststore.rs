//! A PKCS#12 truststore for Java clients (`javax.net.ssl.trustStore`): each
//! certificate a trusted-certificate entry, as `keytool -importcert` writes
//! them (with Oracle's trusted-key-usage attribute, without which Java
//! ignores a certificate that has no private key). No password, no MAC:
//! a truststore holds only public certificates, and Java reads it with
//! `javax.net.ssl.trustStorePassword` unset.

use crate::der::{OCTET_STRING, SEQUENCE, write, write_parts};
use crate::error::Error;
use crate::pem::certificates;

const SET: u8 = 0x31;
const BMP_STRING: u8 = 0x1e;
const EXPLICIT_0: u8 = 0xa0;

/// DER of an OBJECT IDENTIFIER written in dotted form.
fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    write(0x06, &body)
}

/// `ContentInfo` of type data holding `content`.
fn data(content: &[u8]) -> Vec<u8> {
    write_parts(
        SEQUENCE,
        &[
            &oid("1.2.840.113549.1.7.1"),
            &write(EXPLICIT_0, &write(OCTET_STRING, content)),
        ],
    )
}

/// A PKCS#12 truststore with every certificate of `pem`, named by
/// `alias-<n>` (Java shows these in `keytool -list`).
pub fn java_truststore(pem: &str, alias: &str) -> Result<Vec<u8>, Error> {
    let mut bags = Vec::new();
    for (n, cert) in certificates(pem)?.iter().enumerate() {
        let name: Vec<u8> = format!("{alias}-{n}")
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let friendly_name = write_parts(
            SEQUENCE,
            &[
                &oid("1.2.840.113549.1.9.20"),
                &write(SET, &write(BMP_STRING, &name)),
            ],
        );
        // Oracle's "trusted key usage": any extended key usage.
        let trusted = write_parts(
            SEQUENCE,
            &[
                &oid("2.16.840.1.113894.746875.1.1"),
                &write(SET, &oid("2.5.29.37.0")),
            ],
        );
        let cert_bag = write_parts(
            SEQUENCE,
            &[
                &oid("1.2.840.113549.1.9.22.1"),
                &write(EXPLICIT_0, &write(OCTET_STRING, cert.as_ref())),
            ],
        );
        bags.push(write_parts(
            SEQUENCE,
            &[
                &oid("1.2.840.113549.1.12.10.1.3"),
                &write(EXPLICIT_0, &cert_bag),
                &write_parts(SET, &[&friendly_name, &trusted]),
            ],
        ));
    }
    let safe_contents = write(SEQUENCE, &bags.concat());
    let authenticated_safe = write(SEQUENCE, &data(&safe_contents));
    Ok(write_parts(
        SEQUENCE,
        &[&write(0x02, &[3]), &data(&authenticated_safe)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_encode_like_the_standard_examples() {
        assert_eq!(
            oid("1.2.840.113549.1.7.1"),
            [
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01
            ]
        );
        assert_eq!(oid("2.5.29.37.0"), [0x06, 0x04, 0x55, 0x1d, 0x25, 0x00]);
        assert_eq!(
            oid("2.16.840.1.113894.746875.1.1"),
            [
                0x06, 0x0c, 0x60, 0x86, 0x48, 0x01, 0x86, 0xf9, 0x66, 0xad, 0xca, 0x7b, 0x01, 0x01
            ]
        );
    }

    #[test]
    fn every_certificate_becomes_an_entry() {
        let now = std::time::SystemTime::now();
        let a = crate::issue::self_signed_ca("A", &[], now, std::time::Duration::from_secs(86_400))
            .expect("a");
        let b = crate::issue::self_signed_ca("B", &[], now, std::time::Duration::from_secs(86_400))
            .expect("b");
        let store =
            java_truststore(&format!("{}{}", a.cert_pem, b.cert_pem), "egress").expect("store");
        let (pfx, rest) = crate::der::read(&store).expect("der");
        assert!(rest.is_empty());
        assert_eq!(pfx.tag, SEQUENCE);
        // Each certificate's DER is inside, once.
        for pem in [&a.cert_pem, &b.cert_pem] {
            let der = certificates(pem).expect("cert").remove(0);
            assert_eq!(
                store
                    .windows(der.len())
                    .filter(|w| *w == der.as_ref())
                    .count(),
                1
            );
        }
        assert!(java_truststore("no certificate here", "x").is_err());
    }
}
