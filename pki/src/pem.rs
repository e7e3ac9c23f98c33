//! PEM text: splitting it into labelled blocks, and writing blocks.
//!
//! Hand-rolled rather than taken from `rustls-pki-types` because callers need
//! to know about blocks that parser skips: "ENCRYPTED PRIVATE KEY", the
//! `Proc-Type: 4,ENCRYPTED` header of legacy encrypted keys, DSA keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;

use crate::error::Error;

/// One `-----BEGIN label-----` ... `-----END label-----` block.
#[derive(Debug)]
pub(crate) struct Block<'a> {
    pub(crate) label: &'a str,
    /// RFC 1421 header lines (`Name: value`), as in legacy encrypted keys.
    pub(crate) headers: Vec<&'a str>,
    body: String,
}

impl Block<'_> {
    /// The decoded content.
    pub(crate) fn der(&self) -> Result<Vec<u8>, Error> {
        STANDARD
            .decode(self.body.as_bytes())
            .map_err(|e| Error::PemInvalid {
                detail: format!("the base64 of the {} block is not valid: {e}", self.label),
            })
    }
}

/// All blocks of `text` in order; text outside blocks is ignored.
pub(crate) fn blocks(text: &str) -> Result<Vec<Block<'_>>, Error> {
    let mut out = Vec::new();
    let mut current: Option<Block<'_>> = None;
    for line in text.lines() {
        let line = line.trim();
        match current.as_mut() {
            None => {
                if let Some(label) = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|rest| rest.strip_suffix("-----"))
                {
                    current = Some(Block {
                        label,
                        headers: Vec::new(),
                        body: String::new(),
                    });
                }
            }
            Some(block) => {
                if let Some(label) = line
                    .strip_prefix("-----END ")
                    .and_then(|rest| rest.strip_suffix("-----"))
                {
                    if label != block.label {
                        return Err(Error::PemInvalid {
                            detail: format!(
                                "block \"{}\" ends with \"-----END {label}-----\"",
                                block.label
                            ),
                        });
                    }
                    if let Some(done) = current.take() {
                        out.push(done);
                    }
                } else if line.starts_with("-----BEGIN ") {
                    return Err(Error::PemInvalid {
                        detail: format!("block \"{}\" has no END line", block.label),
                    });
                } else if line.contains(':') {
                    block.headers.push(line);
                } else {
                    block.body.push_str(line);
                }
            }
        }
    }
    if let Some(block) = current {
        return Err(Error::PemInvalid {
            detail: format!("block \"{}\" has no END line", block.label),
        });
    }
    Ok(out)
}

/// All CERTIFICATE blocks of `pem`, in order, each checked to parse as X.509.
///
/// Other blocks (keys, parameters) are skipped; no certificate at all is
/// [`Error::CertificateMissing`].
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut out = Vec::new();
    for block in blocks(pem)?.iter().filter(|b| b.label == "CERTIFICATE") {
        let der = block.der()?;
        let index = out.len() + 1;
        match x509_parser::parse_x509_certificate(&der) {
            Ok(([], _)) => out.push(CertificateDer::from(der)),
            Ok(_) => {
                return Err(Error::CertificateInvalid {
                    index,
                    detail: "trailing data after the certificate".to_owned(),
                });
            }
            Err(e) => {
                return Err(Error::CertificateInvalid {
                    index,
                    detail: e.to_string(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::CertificateMissing);
    }
    Ok(out)
}

/// Encodes one block with 64-column lines and a final newline.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Certificates as consecutive CERTIFICATE blocks.
pub(crate) fn encode_certificates<'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'a>>,
) -> String {
    certs
        .into_iter()
        .map(|c| encode("CERTIFICATE", c.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_split_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = encode("THING", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let found = blocks(&text).expect("parses");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].label, "THING");
        assert_eq!(found[0].der().expect("base64"), der);
    }

    #[test]
    fn keeps_order_headers_and_ignores_text_around_blocks() {
        let text = format!(
            "Bag Attributes\r\n{}junk between\n-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            encode("EC PARAMETERS", &[6, 1, 0]).replace('\n', "\r\n")
        );
        let found = blocks(&text).expect("parses");
        let labels: Vec<_> = found.iter().map(|b| b.label).collect();
        assert_eq!(labels, ["EC PARAMETERS", "RSA PRIVATE KEY"]);
        assert_eq!(found[0].der().expect("base64"), [6, 1, 0]);
        assert_eq!(found[1].headers.len(), 2);
    }

    #[test]
    fn unterminated_or_mismatched_blocks_are_errors() {
        let err = blocks("-----BEGIN CERTIFICATE-----\nAAAA\n").expect_err("no END");
        assert_eq!(err.reason(), "PemInvalid");
        assert!(err.to_string().contains("no END line"), "{err}");
        let err = blocks("-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .expect_err("mismatch");
        assert_eq!(err.reason(), "PemInvalid");
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificates(bad).expect_err("bad base64").reason(),
            "PemInvalid"
        );
    }

    #[test]
    fn certificates_in_order_and_errors() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).expect("a");
        let b = rcgen::generate_simple_self_signed(vec!["b.example".to_owned()]).expect("b");
        let text = format!(
            "{}{}{}",
            a.signing_key.serialize_pem(),
            a.cert.pem(),
            b.cert.pem()
        );
        let certs = certificates(&text).expect("two certificates");
        assert_eq!(certs, vec![a.cert.der().clone(), b.cert.der().clone()]);

        assert_eq!(
            certificates(&a.signing_key.serialize_pem())
                .expect_err("key only")
                .reason(),
            "CertificateMissing"
        );
        assert_eq!(
            certificates("").expect_err("empty").reason(),
            "CertificateMissing"
        );
        let garbage = format!("{}{}", a.cert.pem(), encode("CERTIFICATE", b"not a cert"));
        match certificates(&garbage) {
            Err(Error::CertificateInvalid { index, .. }) => assert_eq!(index, 2),
            other => panic!("expected CertificateInvalid, got {other:?}"),
        }
        assert_eq!(
            encode_certificates(&certs),
            format!("{}{}", a.cert.pem(), b.cert.pem())
        );
    }
}
