//! The policy in force: swapped atomically when a source delivers a new
//! version, and never replaced by a version that does not compile.
//!
//! Every source (the policy file today, the API later) hands what it read to
//! [`PolicyStore::install`], so the checks, logs and metrics of a reload are
//! the same wherever the policy comes from. Open tunnels [`subscribe`] to
//! changes, so a revocation reaches them.
//!
//! [`subscribe`]: PolicyStore::subscribe

use std::sync::Arc;
use std::time::SystemTime;

use egress_policy::{CompiledPolicy, Phase};
use tokio::sync::watch;

use crate::metrics::{Metrics, PhaseLabels, PolicyLabels};

/// The current policy and where it comes from.
#[derive(Debug)]
pub struct PolicyStore {
    origin: String,
    shrink_warning: f64,
    current: watch::Sender<Option<Loaded>>,
    metrics: Arc<Metrics>,
}

/// A policy with when it was loaded.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The policy.
    pub policy: Arc<CompiledPolicy>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

impl PolicyStore {
    /// An empty store fed from `origin` (a description such as the file path,
    /// for logs and `/readyz`). A reload that removes more than
    /// `shrink_warning` (a share, 0 to 1) of the rules is logged as a warning.
    pub fn new(origin: String, shrink_warning: f64, metrics: Arc<Metrics>) -> PolicyStore {
        PolicyStore {
            origin,
            shrink_warning,
            current: watch::Sender::new(None),
            metrics,
        }
    }

    /// Where the policy comes from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The policy in force, if one ever loaded.
    pub fn current(&self) -> Option<Arc<CompiledPolicy>> {
        self.loaded().map(|l| l.policy)
    }

    /// The policy in force with its load time.
    pub fn loaded(&self) -> Option<Loaded> {
        self.current.borrow().clone()
    }

    /// Notified whenever a new policy is installed.
    pub fn subscribe(&self) -> watch::Receiver<Option<Loaded>> {
        self.current.subscribe()
    }

    /// Installs what a source read. A version that does not compile is
    /// reported, counted, and does not replace the one in force; the same
    /// version again changes nothing. Returns the policy now in force when
    /// `read` was good.
    pub fn install(
        &self,
        read: Result<CompiledPolicy, Vec<String>>,
    ) -> Result<Arc<CompiledPolicy>, Vec<String>> {
        let policy = match read {
            Ok(policy) => Arc::new(policy),
            Err(errors) => {
                self.refuse(&errors);
                return Err(errors);
            }
        };
        let mut previous = None;
        let replaced = self.current.send_if_modified(|current| {
            previous = current.as_ref().map(|c| c.policy.clone());
            if previous.as_ref().is_some_and(|p| p.hash() == policy.hash()) {
                return false;
            }
            *current = Some(Loaded {
                policy: policy.clone(),
                loaded_at: SystemTime::now(),
            });
            true
        });
        if !replaced {
            return Ok(previous.unwrap_or(policy));
        }
        self.record(&policy, previous.as_deref());
        Ok(policy)
    }

    fn refuse(&self, errors: &[String]) {
        self.metrics.policy_reload_failures.inc();
        for error in errors {
            tracing::error!(origin = %self.origin, %error, "policy rejected");
        }
        match self.current() {
            Some(keeping) => {
                tracing::warn!(hash = keeping.hash(), "the previous policy keeps serving")
            }
            None => tracing::warn!(
                "no valid policy yet: requests are refused with 503 and /readyz fails"
            ),
        }
    }

    /// Logs and counts a newly installed policy, warning when it drops a
    /// large share of the rules in force (a file cut short, a group deleted by
    /// mistake). It still loads: shrinking a policy on purpose is legitimate.
    fn record(&self, policy: &CompiledPolicy, previous: Option<&CompiledPolicy>) {
        self.metrics.policy_info.clear();
        self.metrics
            .policy_info
            .get_or_create(&PolicyLabels {
                format_version: policy.format_version().to_string(),
                hash: policy.hash().to_owned(),
                configuration: policy.configuration().to_owned(),
            })
            .set(1);
        self.metrics.policy_reloads.inc();
        for phase in Phase::ALL {
            self.metrics
                .policy_rules
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(i64::try_from(policy.rule_count(phase)).unwrap_or(i64::MAX));
        }
        tracing::info!(
            origin = %self.origin,
            configuration = policy.configuration(),
            hash = policy.hash(),
            proxy = policy.proxy().name(),
            rules = total_rules(policy),
            "policy loaded"
        );
        if let Some(previous) = previous {
            let (before, after) = (total_rules(previous), total_rules(policy));
            if shrinks_too_much(before, after, self.shrink_warning) {
                self.metrics.policy_shrink_warnings.inc();
                tracing::warn!(
                    rules_before = before,
                    rules_after = after,
                    previous_hash = previous.hash(),
                    hash = policy.hash(),
                    "the new policy drops {} of {before} rules at once; check that this is intended",
                    before - after
                );
            }
        }
    }
}

fn total_rules(policy: &CompiledPolicy) -> usize {
    Phase::ALL.iter().map(|p| policy.rule_count(*p)).sum()
}

/// Whether going from `before` to `after` rules removes all of them, or more
/// than `share` of them.
fn shrinks_too_much(before: usize, after: usize, share: f64) -> bool {
    if after >= before {
        return false;
    }
    after == 0 || (before - after) as f64 > share * before as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_thresholds() {
        assert!(
            shrinks_too_much(3, 0, 0.5),
            "losing every rule always warns"
        );
        assert!(shrinks_too_much(3, 0, 1.0), "even with the warning at 100%");
        assert!(shrinks_too_much(10, 4, 0.5));
        assert!(
            !shrinks_too_much(10, 5, 0.5),
            "exactly half is not more than half"
        );
        assert!(!shrinks_too_much(10, 12, 0.5));
        assert!(!shrinks_too_much(0, 0, 0.5));
        assert!(!shrinks_too_much(10, 9, 0.5));
    }
}
