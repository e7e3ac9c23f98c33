//! The one error type of the crate.
//!
//! Every variant has a stable CamelCase [`Error::reason`] (for a Kubernetes
//! status condition) and a message that says what is wrong and what to do.
//! The `Parent*` variants name the fields of a cert-manager style CA Secret
//! (`tls.crt`, `tls.key`, `ca.crt`), because that is where the user fixes them.

/// Key types this crate can parse and sign with, for messages.
pub(crate) const SUPPORTED_KEYS: &str = "supported are unencrypted RSA keys of 2048 to 4096 bits \
     (\"RSA PRIVATE KEY\" or \"PRIVATE KEY\"), ECDSA P-256 and P-384 keys (\"EC PRIVATE KEY\" or \
     \"PRIVATE KEY\") and Ed25519 keys (\"PRIVATE KEY\")";

/// What can go wrong reading CA material or issuing certificates.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PEM text that is not well formed (a block without its END line, bad base64).
    #[error(
        "the PEM data cannot be read: {detail}; expect blocks like \"-----BEGIN CERTIFICATE-----\" ... \"-----END CERTIFICATE-----\""
    )]
    PemInvalid {
        /// What is wrong.
        detail: String,
    },
    /// No CERTIFICATE block where one was expected.
    #[error("no \"-----BEGIN CERTIFICATE-----\" block found; give the certificate in PEM form")]
    CertificateMissing,
    /// A CERTIFICATE block whose content is not an X.509 certificate.
    #[error("certificate {index} (counting from 1) is not a valid X.509 certificate: {detail}")]
    CertificateInvalid {
        /// Position of the block among the CERTIFICATE blocks, from 1.
        index: usize,
        /// What the parser said.
        detail: String,
    },
    /// No private key block.
    #[error(
        "no private key block found (\"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"); {SUPPORTED_KEYS}"
    )]
    KeyMissing,
    /// A private key block whose content cannot be used.
    #[error("the private key cannot be read: {detail}")]
    KeyInvalid {
        /// What is wrong.
        detail: String,
    },
    /// A passphrase-protected key.
    #[error(
        "the private key is encrypted; store it unencrypted (for example `openssl pkey -in key.pem -out plain.pem`); {SUPPORTED_KEYS}"
    )]
    KeyEncrypted,
    /// A key type or size this crate cannot sign with.
    #[error("the private key is not supported: {detail}; {SUPPORTED_KEYS}")]
    KeyUnsupported {
        /// Which type, curve or size it is.
        detail: String,
    },

    /// A field of the parent CA Secret that cannot be read at all.
    #[error(
        "the CA Secret's {field} cannot be read: {detail}. Put the CA certificate first in tls.crt (PEM, followed by its chain if any), its unencrypted private key in tls.key, and optionally the root certificate in ca.crt"
    )]
    ParentInvalid {
        /// `tls.crt`, `tls.key` or `ca.crt`.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The parent certificate is not a CA certificate.
    #[error(
        "the certificate in tls.crt ({subject}) is not a CA: its basicConstraints extension does not say CA:TRUE, so it cannot sign the gateway's interception CA. Point the Secret at a CA certificate and its key: with openssl add `-addext \"basicConstraints=critical,CA:TRUE,pathlen:1\"`; with cert-manager issue a Certificate with `isCA: true`"
    )]
    ParentNotCa {
        /// Subject of the parent certificate.
        subject: String,
    },
    /// The parent certificate's notBefore is in the future.
    #[error(
        "the CA certificate in tls.crt ({subject}) is not valid yet: it is valid from {not_before} to {not_after}. Check the clock of the machine that issued it, or wait until {not_before}"
    )]
    ParentNotYetValid {
        /// Subject of the parent certificate.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// The parent certificate's notAfter has passed.
    #[error(
        "the CA certificate in tls.crt ({subject}) has expired: it was valid from {not_before} to {not_after}. Renew or re-issue it and update the Secret (a cert-manager Certificate renews it before expiry; if it expired anyway, check that Certificate's status), or point the Secret at a current CA"
    )]
    ParentExpired {
        /// Subject of the parent certificate.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// The parent has a keyUsage extension that does not allow keyCertSign.
    #[error(
        "the CA certificate in tls.crt ({subject}) has a keyUsage extension without keyCertSign, so it may not sign certificates. Re-issue it with keyCertSign in keyUsage: with openssl `-addext \"keyUsage=critical,keyCertSign,cRLSign\"`; with cert-manager set `isCA: true` on the Certificate (cert-manager then adds the `cert sign` usage)"
    )]
    ParentCannotSign {
        /// Subject of the parent certificate.
        subject: String,
    },
    /// The parent (or a CA above it) leaves no room for one more CA below it.
    #[error("{}", path_len_message(subject, limited_by.as_ref()))]
    ParentPathLenZero {
        /// Subject of the parent certificate.
        subject: String,
        /// When the limit comes from a certificate above the parent in the
        /// chain: its subject, its pathLenConstraint and the one it would need.
        limited_by: Option<(String, u32, u32)>,
    },
    /// The parent key is of a type or size this crate cannot sign with.
    #[error(
        "the private key in tls.key cannot sign: {detail}; {SUPPORTED_KEYS}. Re-issue the CA with such a key (cert-manager: `privateKey.algorithm: RSA` with `size` 2048 to 4096, `ECDSA` with `size` 256 or 384, or `Ed25519`)"
    )]
    ParentKeyUnsupported {
        /// Which type, curve, size or encryption it is.
        detail: String,
    },
    /// The parent key is not the key of the parent certificate.
    #[error(
        "the private key in tls.key does not belong to the certificate in tls.crt ({subject}): their public keys differ. Put the key of the first certificate of tls.crt in tls.key (compare `openssl x509 -noout -pubkey -in tls.crt` with `openssl pkey -pubout -in tls.key`)"
    )]
    ParentKeyMismatch {
        /// Subject of the parent certificate.
        subject: String,
    },

    /// A CA handed to [`issue_server_cert`](crate::issue_server_cert) whose key is not its own.
    #[error(
        "the CA key does not belong to the CA certificate ({subject}); issue a new CA with `self_signed_ca` and store its certificate and key together"
    )]
    CaKeyMismatch {
        /// Subject of the CA certificate.
        subject: String,
    },
    /// A CA that is no longer (or not yet) valid at the time of issuance.
    #[error(
        "the CA certificate ({subject}) is not valid at the time of issuance (valid from {not_before} to {not_after}); issue a new CA"
    )]
    CaExpired {
        /// Subject of the CA certificate.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// A name that cannot go into a certificate.
    #[error("{name:?} cannot be used as a certificate name: {detail}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why not.
        detail: String,
    },
    /// Building or signing the certificate failed (not expected with valid input).
    #[error("the certificate could not be issued: {detail}")]
    Issue {
        /// What failed.
        detail: String,
    },
}

impl Error {
    /// A stable CamelCase reason, for a Kubernetes condition's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::PemInvalid { .. } => "PemInvalid",
            Error::CertificateMissing => "CertificateMissing",
            Error::CertificateInvalid { .. } => "CertificateInvalid",
            Error::KeyMissing => "KeyMissing",
            Error::KeyInvalid { .. } => "KeyInvalid",
            Error::KeyEncrypted => "KeyEncrypted",
            Error::KeyUnsupported { .. } => "KeyUnsupported",
            Error::ParentInvalid { .. } => "ParentInvalid",
            Error::ParentNotCa { .. } => "ParentNotCA",
            Error::ParentNotYetValid { .. } => "ParentNotYetValid",
            Error::ParentExpired { .. } => "ParentExpired",
            Error::ParentCannotSign { .. } => "ParentCannotSign",
            Error::ParentPathLenZero { .. } => "ParentPathLenZero",
            Error::ParentKeyUnsupported { .. } => "ParentKeyUnsupported",
            Error::ParentKeyMismatch { .. } => "ParentKeyMismatch",
            Error::CaKeyMismatch { .. } => "CaKeyMismatch",
            Error::CaExpired { .. } => "CaExpired",
            Error::InvalidName { .. } => "InvalidName",
            Error::Issue { .. } => "IssueFailed",
        }
    }

    pub(crate) fn issue(err: impl std::fmt::Display) -> Error {
        Error::Issue {
            detail: err.to_string(),
        }
    }
}

// cert-manager has no path length field: a Certificate with `isCA: true` gets
// no pathLenConstraint, so a 0 comes from whatever signed it.
fn path_len_message(subject: &str, limited_by: Option<&(String, u32, u32)>) -> String {
    match limited_by {
        None => format!(
            "the CA certificate in tls.crt ({subject}) has basicConstraints pathlen:0 (pathLenConstraint 0): it may sign end-entity certificates only, not the intermediate CA the gateway needs for interception. Re-issue it with a path length of 1 or more, or none: with openssl `-addext \"basicConstraints=critical,CA:TRUE,pathlen:1\"` (or leave pathlen out). cert-manager has no path length field and sets none on a Certificate with `isCA: true`, so the limit comes from the issuer that signed it (aws-privateca-issuer, for example, has signed `isCA: true` Certificates with AWS Private CA's PathLen0 template): have that issuer sign the intermediate without the limit, or re-issue the intermediate with openssl from a CA whose own constraints allow one more CA below it"
        ),
        Some((above, has, needs)) => format!(
            "the CA certificate in tls.crt ({subject}) cannot sign another CA: {above}, above it in the chain, has basicConstraints pathlen:{has}, and the gateway's interception CA below {subject} needs pathlen:{needs} or none there. Use a chain whose CAs allow it (re-issue with openssl `-addext \"basicConstraints=critical,CA:TRUE,pathlen:{needs}\"`, or leave pathlen out), or use a CA closer to {above} as the parent"
        ),
    }
}
