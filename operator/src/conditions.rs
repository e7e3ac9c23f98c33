//! Status conditions in the standard `metav1.Condition` shape. Reasons are
//! CamelCase and stable (tests and alerts key on them); messages say what is
//! wrong and what to do.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `Ready` (EgressProxy): gateway pods serve a policy.
pub const READY: &str = "Ready";
/// `PolicyCompiled` (EgressProxy): the configuration and its groups compile.
pub const POLICY_COMPILED: &str = "PolicyCompiled";
/// `CertificateReady` (EgressProxy): the listener certificate, and the sub-CA
/// when interception is on, are issued and valid.
pub const CERTIFICATE_READY: &str = "CertificateReady";
/// `CredentialsReady` (EgressProxy): every Secret key `spec.credentials`
/// names exists (the gateway answers 502 for a credential's requests until
/// it does).
pub const CREDENTIALS_READY: &str = "CredentialsReady";
/// `Progressing` (EgressProxy): a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// `Compiled` (ProxyConfiguration, ProxyRuleGroup).
pub const COMPILED: &str = "Compiled";
/// `Valid` (ProxyList): every entry is well formed for the list's type.
pub const VALID: &str = "Valid";
/// `InUse` (ProxyList): rule groups name the list, so it is kept from
/// deletion (by the `egress.dev/list-in-use` finalizer) while they do.
pub const IN_USE: &str = "InUse";

/// Longest condition message written (the API server's limit is 32 KiB).
const MAX_MESSAGE: usize = 8 * 1024;

/// A condition about to be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Type, e.g. [`READY`].
    pub type_: &'static str,
    /// Whether it holds.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What is the case and what to do.
    pub message: String,
}

impl Wanted {
    /// A condition that holds.
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Wanted {
        Wanted {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Wanted {
        Wanted {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions after setting `wanted` on `current`: a condition whose
/// status did not change keeps its `lastTransitionTime`; conditions of other
/// types are left as they are.
pub fn merge(
    current: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = current
        .iter()
        .filter(|c| !wanted.iter().any(|w| w.type_ == c.type_))
        .cloned()
        .collect();
    for w in wanted {
        let status = if w.status { "True" } else { "False" };
        let since = current
            .iter()
            .find(|c| c.type_ == w.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        merged.push(Condition {
            type_: w.type_.to_owned(),
            status: status.to_owned(),
            reason: w.reason.to_owned(),
            message: truncate(&w.message),
            last_transition_time: since,
            observed_generation: generation,
        });
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    merged
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …(truncated)", &message[..end])
}

/// Whether condition `type_` holds in `conditions`.
pub fn holds(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let t1: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().expect("time");
        let first = merge(&[], &[Wanted::yes(READY, "Serving", "ok")], Some(1), t0);
        let same = merge(
            &first,
            &[Wanted::yes(READY, "Serving", "still ok")],
            Some(2),
            t1,
        );
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].message, "still ok");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[Wanted::no(READY, "NoPods", "none")], Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert!(!holds(&flipped, READY));
    }

    #[test]
    fn other_types_are_kept_and_long_messages_truncated() {
        let t0 = jiff::Timestamp::UNIX_EPOCH;
        let both = merge(
            &[],
            &[
                Wanted::yes(READY, "A", ""),
                Wanted::no(COMPILED, "B", "x".repeat(20_000)),
            ],
            None,
            t0,
        );
        let only_ready = merge(&both, &[Wanted::yes(READY, "A", "")], None, t0);
        assert_eq!(only_ready.len(), 2);
        let compiled = only_ready
            .iter()
            .find(|c| c.type_ == COMPILED)
            .expect("kept");
        assert!(compiled.message.len() < 9 * 1024 && compiled.message.ends_with("(truncated)"));
    }
}
