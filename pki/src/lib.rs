//! Certificates for egress-proxy.
//!
//! This crate owns the certificate material of the project:
//!
//! - reading what users have: private keys as PKCS#8, PKCS#1 or SEC1
//!   ([`private_key_pkcs8`]) and certificate lists ([`certificates`]);
//! - checking a user's CA Secret (cert-manager layout: `tls.crt`, `tls.key`,
//!   optional `ca.crt`) before it is used as the parent of the gateway's
//!   interception CA, with one error per mistake and a message that says
//!   the fix ([`Parent::load`], [`Error::reason`]);
//! - issuing the interception sub-CA ([`Parent::issue_sub_ca`]), the
//!   self-signed listener and webhook CAs ([`self_signed_ca`]) and their
//!   serving certificates ([`issue_server_cert`]);
//! - reading back a stored certificate and deciding when to renew it
//!   ([`inspect`], [`renewal_due`]);
//! - a PKCS#12 truststore of trusted certificates for Java clients
//!   ([`java_truststore`]).
//!
//! It must not touch files, the network, Kubernetes or the clock: every
//! function takes text or bytes and returns strings, and the caller passes
//! `now`. Minting per-host leaf certificates during interception and
//! building TLS configurations belong to the gateway.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use egress_pki::{Parent, issue_server_cert, self_signed_ca};
//!
//! let now = SystemTime::now();
//! let day = Duration::from_secs(86_400);
//! // A user's CA (here a fresh one; pathlen 0 would be refused as a parent).
//! let root = self_signed_ca("Example Root", &[], now, 365 * day).expect("root");
//! let err = Parent::load(&root.cert_pem, &root.key_pem, None, now).expect_err("pathlen 0");
//! assert_eq!(err.reason(), "ParentPathLenZero");
//!
//! let listener_ca = self_signed_ca("egress-proxy listener", &[], now, 365 * day).expect("ca");
//! let names = ["egress-proxy.egress-system.svc".to_owned()];
//! let serving = issue_server_cert(&listener_ca.cert_pem, &listener_ca.key_pem, &names, now, 90 * day)
//!     .expect("serving certificate");
//! assert!(serving.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

mod dates;
mod der;
mod error;
mod inspect;
mod issue;
mod key;
mod parent;
mod pem;
#[cfg(test)]
mod testutil;
mod truststore;

pub use error::Error;
pub use inspect::{CertInfo, inspect, renewal_due};
pub use issue::{IssuedCa, IssuedCert, issue_server_cert, self_signed_ca};
pub use key::private_key_pkcs8;
pub use parent::Parent;
pub use pem::certificates;
pub use truststore::java_truststore;
