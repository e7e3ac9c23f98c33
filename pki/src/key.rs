//! Private keys in the encodings users have, turned into PKCS#8.
//!
//! cert-manager writes "RSA PRIVATE KEY" (PKCS#1) or "EC PRIVATE KEY" (SEC1)
//! unless `privateKey.encoding: PKCS8` is set, and openssl's `-traditional`
//! does the same. rcgen (ring backend) and rustls' ring provider only take
//! PKCS#8, so both legacy forms are wrapped here without touching the key.

use rcgen::{KeyPair, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::der::{self, Tlv};
use crate::error::Error;
use crate::pem;

// OID contents (without tag and length).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const ED448: &[u8] = &[0x2b, 0x65, 0x71];
const X25519: &[u8] = &[0x2b, 0x65, 0x6e];
const X448: &[u8] = &[0x2b, 0x65, 0x6f];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];

/// The key types this crate signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// The algorithm rcgen signs with for this key: RSA always uses PKCS#1
    /// v1.5 with SHA-256, ECDSA the hash that matches the curve.
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// Reads the first private key of `pem` and returns it as PKCS#8.
///
/// Takes "PRIVATE KEY" (PKCS#8), "RSA PRIVATE KEY" (PKCS#1) and
/// "EC PRIVATE KEY" (SEC1, P-256 or P-384 with a named curve and its public
/// key, as openssl and cert-manager write it). The result is checked to load
/// for signing, so RSA keys must have 2048 to 4096 bits (ring's limits).
/// Encrypted keys, DSA, other curves and other algorithms are refused with an
/// error that lists what is supported.
pub fn private_key_pkcs8(pem: &str) -> Result<PrivatePkcs8KeyDer<'static>, Error> {
    Ok(read(pem)?.0)
}

/// The first private key of `pem`, loaded for signing.
pub(crate) fn key_pair(pem: &str) -> Result<KeyPair, Error> {
    Ok(read(pem)?.1)
}

fn read(pem: &str) -> Result<(PrivatePkcs8KeyDer<'static>, KeyPair), Error> {
    let blocks = pem::blocks(pem)?;
    let block = blocks
        .iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or(Error::KeyMissing)?;
    if block.label == "ENCRYPTED PRIVATE KEY"
        || block
            .headers
            .iter()
            .any(|h| h.starts_with("Proc-Type:") && h.contains("ENCRYPTED"))
    {
        return Err(Error::KeyEncrypted);
    }
    let der = block.der()?;
    let pkcs8 = match block.label {
        "PRIVATE KEY" => der,
        "RSA PRIVATE KEY" => wrap_pkcs1(&der)?,
        "EC PRIVATE KEY" => wrap_sec1(&der)?,
        "DSA PRIVATE KEY" => return Err(unsupported("a DSA key")),
        "OPENSSH PRIVATE KEY" => {
            return Err(unsupported(
                "an OpenSSH key (convert it with `ssh-keygen -p -m PKCS8 -f key`)",
            ));
        }
        other => return Err(unsupported(&format!("a \"{other}\" block"))),
    };
    let kind = pkcs8_kind(&pkcs8)?;
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, kind.algorithm())
        .map_err(|e| rejected(kind, e))?;
    Ok((pkcs8, pair))
}

fn unsupported(what: &str) -> Error {
    Error::KeyUnsupported {
        detail: format!("it is {what}"),
    }
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::KeyInvalid {
        detail: detail.into(),
    }
}

/// Turns ring's refusal into "unsupported" (size) or "invalid" (damage).
fn rejected(kind: KeyKind, err: rcgen::Error) -> Error {
    let text = err.to_string();
    if kind == KeyKind::Rsa && text.contains("TooSmall") {
        return unsupported("an RSA key shorter than 2048 bits");
    }
    if kind == KeyKind::Rsa && text.contains("TooLarge") {
        return unsupported("an RSA key longer than 4096 bits");
    }
    invalid(format!("the {kind:?} key was rejected: {text}"))
}

/// Which supported key a PKCS#8 `PrivateKeyInfo` holds, from its algorithm.
fn pkcs8_kind(pkcs8: &[u8]) -> Result<KeyKind, Error> {
    let outer = der::read_only(pkcs8, der::SEQUENCE)
        .map_err(|e| invalid(format!("not a PKCS#8 structure: {e}")))?;
    let fields = der::items(outer.content).map_err(|e| invalid(format!("bad PKCS#8: {e}")))?;
    let [version, algorithm, ..] = fields.as_slice() else {
        return Err(invalid("PKCS#8 structure too short"));
    };
    if version.tag != der::INTEGER || algorithm.tag != der::SEQUENCE {
        return Err(invalid("not a PKCS#8 structure"));
    }
    let alg =
        der::items(algorithm.content).map_err(|e| invalid(format!("bad PKCS#8 algorithm: {e}")))?;
    let Some(oid) = alg.first().filter(|t| t.tag == der::OID) else {
        return Err(invalid("PKCS#8 algorithm without an OID"));
    };
    match oid.content {
        RSA_ENCRYPTION => Ok(KeyKind::Rsa),
        ED25519 => Ok(KeyKind::Ed25519),
        EC_PUBLIC_KEY => match alg.get(1) {
            Some(Tlv {
                tag: der::OID,
                content,
                ..
            }) => curve(content),
            _ => Err(unsupported(
                "an EC key with explicit curve parameters (re-export it with `openssl ec -param_enc named_curve`)",
            )),
        },
        RSASSA_PSS => Err(unsupported("an RSASSA-PSS key")),
        DSA => Err(unsupported("a DSA key")),
        ED448 => Err(unsupported("an Ed448 key")),
        X25519 | X448 => Err(unsupported("a key-agreement (X25519/X448) key")),
        other => Err(unsupported(&format!(
            "a key of algorithm {}",
            der::oid_string(other)
        ))),
    }
}

fn curve(oid: &[u8]) -> Result<KeyKind, Error> {
    match oid {
        P256 => Ok(KeyKind::EcP256),
        P384 => Ok(KeyKind::EcP384),
        P521 => Err(unsupported("an ECDSA P-521 key")),
        SECP256K1 => Err(unsupported("an ECDSA secp256k1 key")),
        other => Err(unsupported(&format!(
            "an EC key on curve {}",
            der::oid_string(other)
        ))),
    }
}

/// PKCS#1 `RSAPrivateKey` → PKCS#8 with the rsaEncryption algorithm
/// (whose parameters are NULL, RFC 8017 A.1).
fn wrap_pkcs1(pkcs1: &[u8]) -> Result<Vec<u8>, Error> {
    der::read_only(pkcs1, der::SEQUENCE)
        .map_err(|e| invalid(format!("not a PKCS#1 RSA key: {e}")))?;
    let algorithm = der::write_parts(
        der::SEQUENCE,
        &[
            &der::write(der::OID, RSA_ENCRYPTION),
            &der::write(der::NULL, &[]),
        ],
    );
    Ok(pkcs8(&algorithm, pkcs1))
}

/// SEC1 `ECPrivateKey` → PKCS#8 with id-ecPublicKey and the curve named in
/// the key's `parameters [0]`. The SEC1 structure goes in unchanged as the
/// PKCS#8 privateKey (RFC 5915 section 3 allows the copy of the curve).
fn wrap_sec1(sec1: &[u8]) -> Result<Vec<u8>, Error> {
    let outer = der::read_only(sec1, der::SEQUENCE)
        .map_err(|e| invalid(format!("not a SEC1 EC key: {e}")))?;
    let fields = der::items(outer.content).map_err(|e| invalid(format!("bad SEC1 EC key: {e}")))?;
    let params = fields.iter().find(|t| t.tag == der::CONTEXT_0);
    let Some(params) = params else {
        return Err(invalid(
            "the EC key does not name its curve (SEC1 parameters are missing); export it with `openssl ec -in key.pem -out key.pem`",
        ));
    };
    // ring needs the public key next to the private one and cannot derive it.
    if !fields.iter().any(|t| t.tag == der::CONTEXT_1) {
        return Err(invalid(
            "the EC key does not carry its public key; export it with `openssl ec -in key.pem -out key.pem`, which adds it",
        ));
    }
    let curve_oid = match der::read_only(params.content, der::OID) {
        Ok(oid) => oid,
        Err(_) => {
            return Err(unsupported(
                "an EC key with explicit curve parameters (re-export it with `openssl ec -param_enc named_curve`)",
            ));
        }
    };
    curve(curve_oid.content)?;
    let algorithm = der::write_parts(
        der::SEQUENCE,
        &[&der::write(der::OID, EC_PUBLIC_KEY), curve_oid.whole],
    );
    Ok(pkcs8(&algorithm, sec1))
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }`
fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Vec<u8> {
    der::write_parts(
        der::SEQUENCE,
        &[
            &der::write(der::INTEGER, &[0]),
            algorithm,
            &der::write(der::OCTET_STRING, private_key),
        ],
    )
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;

    use super::*;

    const RSA_PKCS1: &str = include_str!("../testdata/rsa2048.pkcs1.pem");
    const RSA_PKCS8: &str = include_str!("../testdata/rsa2048.pkcs8.pem");
    const RSA_PUB: &str = include_str!("../testdata/rsa2048.pub.pem");
    const P256_SEC1: &str = include_str!("../testdata/p256.sec1.pem");
    const P256_PUB: &str = include_str!("../testdata/p256.pub.pem");
    const P384_SEC1: &str = include_str!("../testdata/p384.sec1.pem");
    const P384_PUB: &str = include_str!("../testdata/p384.pub.pem");
    const ED25519_PKCS8: &str = include_str!("../testdata/ed25519.pkcs8.pem");
    const ED25519_PUB: &str = include_str!("../testdata/ed25519.pub.pem");

    /// The subjectPublicKey bits of an openssl "PUBLIC KEY" file.
    fn public_key_bits(pem_text: &str) -> Vec<u8> {
        let blocks = pem::blocks(pem_text).expect("pem");
        let der = blocks[0].der().expect("base64");
        let (_, spki) = SubjectPublicKeyInfo::from_der(&der).expect("spki");
        spki.subject_public_key.data.to_vec()
    }

    /// rcgen's own loader must take the wrapped key and find the same public key.
    fn assert_loads(key_pem: &str, pub_pem: &str, alg: &'static SignatureAlgorithm) {
        let pkcs8 = private_key_pkcs8(key_pem).expect("wraps");
        let pair = KeyPair::try_from(&pkcs8).expect("rcgen accepts the PKCS#8");
        assert_eq!(pair.algorithm(), alg);
        assert_eq!(pair.der_bytes(), public_key_bits(pub_pem).as_slice());
    }

    #[test]
    fn pkcs1_is_wrapped_exactly_like_openssl_pkcs8() {
        let ours = private_key_pkcs8(RSA_PKCS1).expect("wraps");
        let theirs = pem::blocks(RSA_PKCS8).expect("pem")[0]
            .der()
            .expect("base64");
        assert_eq!(ours.secret_pkcs8_der(), theirs.as_slice());
        assert_loads(RSA_PKCS1, RSA_PUB, &rcgen::PKCS_RSA_SHA256);
        assert_loads(RSA_PKCS8, RSA_PUB, &rcgen::PKCS_RSA_SHA256);
    }

    #[test]
    fn sec1_p256_and_p384_are_wrapped_with_their_curve() {
        assert_loads(P256_SEC1, P256_PUB, &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_loads(P384_SEC1, P384_PUB, &rcgen::PKCS_ECDSA_P384_SHA384);
        let pkcs8 = private_key_pkcs8(P384_SEC1).expect("wraps");
        let outer = der::read_only(pkcs8.secret_pkcs8_der(), der::SEQUENCE).expect("seq");
        let fields = der::items(outer.content).expect("fields");
        let alg = der::items(fields[1].content).expect("alg");
        assert_eq!(alg[0].content, EC_PUBLIC_KEY);
        assert_eq!(alg[1].content, P384);
        // The SEC1 structure is carried unchanged.
        let sec1 = pem::blocks(P384_SEC1).expect("pem")[0].der().expect("b64");
        assert_eq!(fields[2].content, sec1.as_slice());
    }

    #[test]
    fn sec1_from_an_ec_parameters_file_skips_the_parameters() {
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{P256_SEC1}"
        );
        assert_loads(&with_params, P256_PUB, &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn ed25519_and_rcgen_generated_pkcs8_pass_through() {
        assert_loads(ED25519_PKCS8, ED25519_PUB, &rcgen::PKCS_ED25519);
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let generated = KeyPair::generate_for(alg).expect("generate");
            let pkcs8 = private_key_pkcs8(&generated.serialize_pem()).expect("reads");
            assert_eq!(pkcs8.secret_pkcs8_der(), generated.serialized_der());
        }
    }

    fn reason_and_message(pem_text: &str) -> (&'static str, String) {
        let err = private_key_pkcs8(pem_text).expect_err("must be refused");
        (err.reason(), err.to_string())
    }

    #[test]
    fn unsupported_keys_say_what_is_supported() {
        let cases = [
            (include_str!("../testdata/dsa.pem"), "KeyUnsupported", "DSA"),
            (
                include_str!("../testdata/dsa.traditional.pem"),
                "KeyUnsupported",
                "DSA",
            ),
            (
                include_str!("../testdata/p521.sec1.pem"),
                "KeyUnsupported",
                "P-521",
            ),
            (
                include_str!("../testdata/secp256k1.sec1.pem"),
                "KeyUnsupported",
                "secp256k1",
            ),
            (
                include_str!("../testdata/ed448.pkcs8.pem"),
                "KeyUnsupported",
                "Ed448",
            ),
            (
                include_str!("../testdata/rsa1024.pkcs1.pem"),
                "KeyUnsupported",
                "shorter than 2048",
            ),
            (
                include_str!("../testdata/rsa5120.pkcs1.pem"),
                "KeyUnsupported",
                "longer than 4096",
            ),
            (
                include_str!("../testdata/p256.sec1-explicit.pem"),
                "KeyUnsupported",
                "explicit curve parameters",
            ),
            (
                include_str!("../testdata/rsa.encrypted-pkcs8.pem"),
                "KeyEncrypted",
                "encrypted",
            ),
            (
                include_str!("../testdata/rsa.encrypted-pkcs1.pem"),
                "KeyEncrypted",
                "encrypted",
            ),
        ];
        for (text, reason, words) in cases {
            let (got, message) = reason_and_message(text);
            assert_eq!(got, reason, "{message}");
            assert!(message.contains(words), "{message:?} lacks {words:?}");
            assert!(
                message.contains("P-256 and P-384"),
                "{message:?} must list what is supported"
            );
        }
    }

    #[test]
    fn damaged_or_missing_keys_are_invalid() {
        let (reason, message) = reason_and_message(include_str!("../testdata/p256.sec1-nopub.pem"));
        assert_eq!(reason, "KeyInvalid");
        assert!(message.contains("public key"), "{message}");

        let (reason, _) = reason_and_message(RSA_PUB);
        assert_eq!(reason, "KeyMissing");

        let garbage = pem::encode("RSA PRIVATE KEY", b"\x30\x03\x02\x01\x00");
        assert_eq!(reason_and_message(&garbage).0, "KeyInvalid");
        let garbage = pem::encode("PRIVATE KEY", b"nonsense");
        assert_eq!(reason_and_message(&garbage).0, "KeyInvalid");

        // A P-256 SEC1 key relabelled as P-384 must not load.
        let sec1 = pem::blocks(P256_SEC1).expect("pem")[0].der().expect("b64");
        let p384_oid = der::write(der::OID, P384);
        let p256_oid = der::write(der::OID, P256);
        let pos = sec1
            .windows(p256_oid.len())
            .position(|w| w == p256_oid.as_slice())
            .expect("curve oid in key");
        let mut lying = sec1[..pos].to_vec();
        lying.extend_from_slice(&p384_oid);
        lying.extend_from_slice(&sec1[pos + p256_oid.len()..]);
        // Fix up the two lengths that contain the OID ([0] and the SEQUENCE).
        let lying = relength(&lying);
        assert_eq!(
            reason_and_message(&pem::encode("EC PRIVATE KEY", &lying)).0,
            "KeyInvalid"
        );
    }

    /// Re-encodes a SEC1 key after its `[0]` content changed length.
    fn relength(sec1_with_bad_lengths: &[u8]) -> Vec<u8> {
        // Layout: 30 len | 02 01 01 | 04 len priv | a0 len (06 ..) | a1 ...
        let body = &sec1_with_bad_lengths[2..];
        let (version, rest) = der::read(body).expect("version");
        let (private, rest) = der::read(rest).expect("private");
        assert_eq!(rest[0], der::CONTEXT_0);
        let (oid, rest) = der::read(&rest[2..]).expect("oid");
        let params = der::write(der::CONTEXT_0, oid.whole);
        der::write_parts(
            der::SEQUENCE,
            &[version.whole, private.whole, &params, rest],
        )
    }
}
