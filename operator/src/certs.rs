//! When to issue certificates, as pure decisions: what exists (the Secret's
//! PEM), what it should be derived from, and the time in; "keep it" or a new
//! certificate out. Issuing itself is `egress-pki`'s.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use egress_pki::{IssuedCa, Parent};
use sha2::{Digest, Sha256};

use crate::names::PARENT_ANNOTATION;
use crate::render::hex;

/// Lifetime asked for the interception sub-CA (capped by its parent's).
pub const SUB_CA_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetime of the CAs the operator keeps itself (each proxy's listener
/// CA, the webhook's CA).
pub const OWN_CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of the listener's serving certificate.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long a new listener CA is trusted beside the current one before it
/// signs: pods see a changed trust bundle within a minute or two, and
/// processes that read it only at start have a week to be restarted.
pub const CA_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// A TLS Secret's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pems {
    /// `tls.crt`.
    pub cert: String,
    /// `tls.key`.
    pub key: String,
    /// `ca.crt`.
    pub ca: String,
    /// The Secret's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Why a certificate is (re)issued, for events and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// There was none (or it could not be read).
    Missing,
    /// Its parent changed.
    NewParent,
    /// Less than a third of its lifetime is left.
    Renewal,
    /// It no longer covers what it must (names, issuer).
    Outdated,
}

impl Why {
    /// `Issued` or `Renewed`, for event reasons.
    pub fn verb(self) -> &'static str {
        match self {
            Why::Missing | Why::NewParent | Why::Outdated => "Issued",
            Why::Renewal => "Renewed",
        }
    }
}

/// What identifies a parent CA: its Secret and a digest of its certificate,
/// recorded on the sub-CA so a replaced parent re-issues it.
pub fn parent_id(secret: &str, cert_pem: &str) -> String {
    format!(
        "{secret}/{}",
        &hex(&Sha256::digest(cert_pem.as_bytes()))[..16]
    )
}

/// Whether `existing` is still good: readable, valid for long enough (see
/// [`egress_pki::renewal_due`]). `Err` says why it must be issued again.
fn still_good(existing: Option<&Pems>, now: SystemTime) -> Result<&Pems, Why> {
    let existing = existing.ok_or(Why::Missing)?;
    let info = egress_pki::inspect(&existing.cert).map_err(|_| Why::Missing)?;
    if existing.key.is_empty() {
        return Err(Why::Missing);
    }
    if egress_pki::renewal_due(info.not_before, info.not_after, now) {
        return Err(Why::Renewal);
    }
    Ok(existing)
}

/// The interception sub-CA: kept while it was derived from this parent and
/// is not due for renewal; otherwise a new one.
pub fn sub_ca(
    existing: Option<&Pems>,
    parent: &Parent,
    parent_id: &str,
    common_name: &str,
    now: SystemTime,
) -> Result<Option<(Pems, Why)>, egress_pki::Error> {
    let why = match still_good(existing, now) {
        Ok(pems)
            if pems.annotations.get(PARENT_ANNOTATION).map(String::as_str) == Some(parent_id) =>
        {
            return Ok(None);
        }
        Ok(_) => Why::NewParent,
        Err(why) => why,
    };
    let issued = parent.issue_sub_ca(common_name, now, SUB_CA_LIFETIME)?;
    Ok(Some((
        ca_pems(
            issued,
            BTreeMap::from([(PARENT_ANNOTATION.to_owned(), parent_id.to_owned())]),
        ),
        why,
    )))
}

/// A self-signed CA the operator keeps (the webhook's CA): kept until due
/// for renewal.
pub fn own_ca(
    existing: Option<&Pems>,
    common_name: &str,
    now: SystemTime,
) -> Result<Option<(Pems, Why)>, egress_pki::Error> {
    match still_good(existing, now) {
        Ok(_) => Ok(None),
        Err(why) => Ok(Some((new_own_ca(common_name, &[], now)?, why))),
    }
}

/// A new self-signed CA, name-constrained to `permitted` (none:
/// unconstrained).
fn new_own_ca(
    common_name: &str,
    permitted: &[String],
    now: SystemTime,
) -> Result<Pems, egress_pki::Error> {
    let issued = egress_pki::self_signed_ca(common_name, permitted, now, OWN_CA_LIFETIME)?;
    let mut pems = ca_pems(issued, BTreeMap::new());
    // A self-signed CA is its own trust anchor.
    pems.ca = pems.cert.clone();
    Ok(pems)
}

/// What to do with a CA that clients trust and that is rotated with
/// overlap (a proxy's listener CA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaStep {
    /// Keep the current CA, and the next one if one is staged.
    Keep,
    /// None is usable (missing, expired): a new one, in use at once.
    Replace(Pems, Why),
    /// A next CA, trusted beside the current one but not signing yet.
    Stage(Pems, Why),
    /// The staged CA has been trusted for [`CA_OVERLAP`]: it becomes the
    /// current one.
    Promote,
}

/// Whether `pems` holds a CA with its key that is valid at `now`.
pub fn usable_ca(pems: &Pems, now: SystemTime) -> bool {
    !pems.key.is_empty()
        && egress_pki::inspect(&pems.cert)
            .is_ok_and(|info| now >= info.not_before && now < info.not_after)
}

/// When a staged CA `cert` is to be promoted (see [`rotated_ca`]).
pub fn promotion_at(cert: &str) -> Option<SystemTime> {
    Some(egress_pki::inspect(cert).ok()?.not_before + CA_OVERLAP)
}

/// The step for a rotated CA: `current` and `next` as stored, the CA to be
/// constrained to `permitted`. A CA due for renewal, or constrained
/// otherwise (one made by an earlier version), gets a successor that
/// clients trust for [`CA_OVERLAP`] before it signs, so no client meets a
/// certificate from a CA it does not trust yet.
pub fn rotated_ca(
    current: Option<&Pems>,
    next: Option<&Pems>,
    common_name: &str,
    permitted: &[String],
    now: SystemTime,
) -> Result<CaStep, egress_pki::Error> {
    let usable = |pems: Option<&Pems>| {
        let pems = pems.filter(|p| usable_ca(p, now))?;
        egress_pki::inspect(&pems.cert).ok()
    };
    let Some(info) = usable(current) else {
        let why = match current.map(|p| egress_pki::inspect(&p.cert)) {
            Some(Ok(_)) => Why::Renewal,
            _ => Why::Missing,
        };
        return Ok(CaStep::Replace(
            new_own_ca(common_name, permitted, now)?,
            why,
        ));
    };
    if let Some(staged) = usable(next) {
        return Ok(if now >= staged.not_before + CA_OVERLAP {
            CaStep::Promote
        } else {
            CaStep::Keep
        });
    }
    let why = if info.permitted_dns != permitted {
        Why::Outdated
    } else if egress_pki::renewal_due(info.not_before, info.not_after, now) {
        Why::Renewal
    } else {
        return Ok(CaStep::Keep);
    };
    Ok(CaStep::Stage(new_own_ca(common_name, permitted, now)?, why))
}

/// The listener's serving certificate: kept while issued by `ca` for exactly
/// `names` and not due; otherwise a new one.
pub fn serving(
    existing: Option<&Pems>,
    ca: &Pems,
    names: &[String],
    now: SystemTime,
) -> Result<Option<(Pems, Why)>, egress_pki::Error> {
    let why = match still_good(existing, now) {
        Ok(pems) => {
            let covers = egress_pki::inspect(&pems.cert)
                .map(|info| info.names == names)
                .unwrap_or(false);
            if covers && pems.ca == ca.cert {
                return Ok(None);
            }
            Why::Outdated
        }
        Err(why) => why,
    };
    let issued = egress_pki::issue_server_cert(&ca.cert, &ca.key, names, now, SERVING_LIFETIME)?;
    Ok(Some((
        Pems {
            cert: issued.cert_pem,
            key: issued.key_pem,
            ca: ca.cert.clone(),
            annotations: BTreeMap::new(),
        },
        why,
    )))
}

fn ca_pems(issued: IssuedCa, annotations: BTreeMap<String, String>) -> Pems {
    Pems {
        cert: issued.cert_pem,
        key: issued.key_pem,
        ca: issued.chain_pem,
        annotations,
    }
}

/// The PEMs of a `kubernetes.io/tls` Secret (empty where a key is missing).
pub fn pems_of(secret: &k8s_openapi::api::core::v1::Secret) -> Pems {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    Pems {
        cert: text("tls.crt"),
        key: text("tls.key"),
        ca: text("ca.crt"),
        annotations: secret.metadata.annotations.clone().unwrap_or_default(),
    }
}

/// When `cert` is next due for renewal (a third of its lifetime before it
/// ends), so the reconciler can come back then.
pub fn renewal_at(cert: &str) -> Option<SystemTime> {
    let info = egress_pki::inspect(cert).ok()?;
    let lifetime = info.not_after.duration_since(info.not_before).ok()?;
    info.not_after.checked_sub(lifetime / 3)
}

/// A self-signed CA as users bring it (it may sign CAs below it): its
/// certificate and key, as PEM.
#[cfg(test)]
pub(crate) fn user_ca(common_name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).expect("user CA").pem();
    (cert, key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A CA that may sign one more CA below it, as users bring.
    fn parent(now: SystemTime) -> (Parent, String) {
        let (cert, key) = user_ca("test parent");
        let parent = Parent::load(&cert, &key, None, now).expect("usable parent");
        (parent, cert)
    }

    #[test]
    fn the_listener_ca_and_serving_certificate_are_kept_until_due() {
        let now = SystemTime::now();
        let (ca, why) = own_ca(None, "listener", now)
            .expect("issue")
            .expect("issued");
        assert_eq!(why, Why::Missing);
        assert_eq!(ca.ca, ca.cert, "self-signed: its own anchor");
        assert!(own_ca(Some(&ca), "listener", now).expect("check").is_none());
        let names = vec!["egress".to_owned(), "egress.ns.svc".to_owned()];
        let (serving_pems, _) = serving(None, &ca, &names, now)
            .expect("issue")
            .expect("issued");
        assert_eq!(serving_pems.ca, ca.cert);
        assert!(
            serving(Some(&serving_pems), &ca, &names, now)
                .expect("check")
                .is_none()
        );
        // New names, or a new CA: issued again.
        let more = vec!["egress".to_owned(), "egress.other.svc".to_owned()];
        let (_, why) = serving(Some(&serving_pems), &ca, &more, now)
            .expect("issue")
            .expect("reissued");
        assert_eq!(why, Why::Outdated);
        // Two thirds into its life: renewed.
        let later = now + SERVING_LIFETIME * 2 / 3 + DAY;
        let (_, why) = serving(Some(&serving_pems), &ca, &names, later)
            .expect("issue")
            .expect("renewed");
        assert_eq!(why, Why::Renewal);
        assert_eq!(why.verb(), "Renewed");
        let at = renewal_at(&serving_pems.cert).expect("renewal time");
        assert!(
            at > now + SERVING_LIFETIME / 2 && at < now + SERVING_LIFETIME,
            "{at:?}"
        );
    }

    #[test]
    fn the_sub_ca_follows_its_parent() {
        let now = SystemTime::now();
        let (parent_a, cert_a) = parent(now);
        let id_a = parent_id("user-ca", &cert_a);
        let (pems, why) = sub_ca(None, &parent_a, &id_a, "sub", now)
            .expect("issue")
            .expect("issued");
        assert_eq!(why, Why::Missing);
        assert_eq!(pems.annotations[PARENT_ANNOTATION], id_a);
        assert!(
            pems.ca.contains(cert_a.trim()),
            "the chain holds the parent"
        );
        let info = egress_pki::inspect(&pems.cert).expect("sub-CA");
        assert_eq!((info.is_ca, info.path_len), (true, Some(0)));
        assert!(
            sub_ca(Some(&pems), &parent_a, &id_a, "sub", now)
                .expect("check")
                .is_none()
        );
        let (parent_b, cert_b) = parent(now);
        let id_b = parent_id("user-ca", &cert_b);
        let (_, why) = sub_ca(Some(&pems), &parent_b, &id_b, "sub", now)
            .expect("issue")
            .expect("reissued");
        assert_eq!(why, Why::NewParent);
        assert_ne!(parent_id("a", "x"), parent_id("a", "y"));
        assert_ne!(parent_id("a", "x"), parent_id("b", "x"));
    }
}
