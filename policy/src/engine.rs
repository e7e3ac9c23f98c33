//! Evaluation of one phase, exactly as design §2 says: the rules of
//! all groups form one list (group order, then rule order); the first `Allow` or
//! `Deny` that matches ends the phase; `Alert` is recorded and evaluation goes
//! on; when nothing ended the phase its default applies.
//!
//! Rules in monitor mode are left out of that list; when a policy has any,
//! the same phases are also evaluated with them in it, as if enforced, and
//! the outcome is kept beside the real one ([`WouldBe`]).
//!
//! The [`RuleIndex`] narrows the rules a request needs to look at; the
//! candidates come in rule order, which keeps first-match semantics intact.

use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use serde::Serialize;

use crate::condition::Condition;
use crate::context::RequestContext;
use crate::index::RuleIndex;
use crate::phase::Phase;
use crate::spec::Action;

/// Rule and group name reported when a phase default decided.
pub const DEFAULT_RULE: &str = "default";

/// [`DEFAULT_RULE`], shared: what a decision names until a rule decides.
pub static DEFAULT_RULE_NAME: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(DEFAULT_RULE));

/// A rule ready to evaluate.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) action: Action,
    /// In monitor mode: evaluated only for [`WouldBe`].
    pub(crate) monitor: bool,
    /// Cheapest first; all must hold.
    pub(crate) conditions: Box<[Condition]>,
}

impl CompiledRule {
    fn matches(&self, ctx: &RequestContext<'_>) -> bool {
        self.conditions.iter().all(|c| c.holds(ctx))
    }
}

/// The rules of one phase, in priority order, with their index.
#[derive(Clone, Debug, Default)]
pub(crate) struct PhaseTable {
    rules: Vec<CompiledRule>,
    index: RuleIndex,
}

impl PhaseTable {
    pub(crate) fn new(rules: Vec<CompiledRule>) -> PhaseTable {
        let index = RuleIndex::build(rules.iter().map(|r| &*r.conditions));
        PhaseTable { rules, index }
    }

    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }
}

/// A rule (or default) that matched, as the decision log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    /// Rule name, or `default`.
    pub rule: Arc<str>,
    /// Group name, or `default`.
    pub group: Arc<str>,
    /// Phase it matched in.
    pub phase: Phase,
    /// Its action.
    pub action: Action,
}

/// The outcome of the phases evaluated so far: everything the log line needs.
///
/// The `final_*` fields report the last phase outcome that was not a plain
/// Allow default: a `Deny` (which ends evaluation), an `Allow` or `Alert` by a
/// rule, or an `Alert` default. When every phase fell to its Allow default they
/// say `default`, with the last phase evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The final action.
    pub final_action: Action,
    /// The rule that decided, `default` when a phase default did.
    pub final_rule_name: Arc<str>,
    /// The group of that rule, `default` when a phase default decided.
    pub final_rule_group_name: Arc<str>,
    /// The phase that decided.
    pub final_phase: Phase,
    /// The first `Alert` that matched (a rule, or an `Alert` default).
    pub first_alert_match: Option<RuleMatch>,
    /// Every rule that matched, in evaluation order, and `Alert` defaults.
    pub all_matches: Vec<RuleMatch>,
    /// For a policy with rules in monitor mode: the phases evaluated as if
    /// they were enforced.
    pub would_be: Option<Box<WouldBe>>,
}

/// What a request's decision would have been had the rules in monitor mode
/// been enforced, over the phases the request really went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WouldBe {
    /// The decision with every rule enforced.
    pub decision: Decision,
    /// The monitored rules that matched in it, in evaluation order.
    pub monitored: Vec<RuleMatch>,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            final_action: Action::Allow,
            final_rule_name: DEFAULT_RULE_NAME.clone(),
            final_rule_group_name: DEFAULT_RULE_NAME.clone(),
            final_phase: Phase::PreDns,
            first_alert_match: None,
            all_matches: Vec::new(),
            would_be: None,
        }
    }
}

impl Decision {
    /// Whether any alert (rule or default) matched.
    pub fn has_alert(&self) -> bool {
        self.first_alert_match.is_some()
    }

    /// Records a refusal decided outside the rules (such as the private
    /// destination guard), under a reserved rule name.
    pub fn deny_by(&mut self, phase: Phase, rule: &str) {
        if let Some(would) = &mut self.would_be
            && would.decision.final_action != Action::Deny
        {
            would.decision.deny_by(phase, rule);
        }
        self.final_action = Action::Deny;
        self.final_rule_name = Arc::from(rule);
        self.final_rule_group_name = DEFAULT_RULE_NAME.clone();
        self.final_phase = phase;
    }

    /// What the rules in monitor mode would have decided, when one of them
    /// matched: the outcome with them enforced (an alert when that is all
    /// they added to a plain Allow default).
    pub fn would(&self) -> Option<RuleMatch> {
        let would = self.would_be.as_deref()?;
        let first_monitored = would.monitored.first()?;
        let d = &would.decision;
        if &*d.final_rule_name == DEFAULT_RULE && d.final_action == Action::Allow {
            return Some(first_monitored.clone());
        }
        Some(RuleMatch {
            rule: d.final_rule_name.clone(),
            group: d.final_rule_group_name.clone(),
            phase: d.final_phase,
            action: d.final_action,
        })
    }

    fn record(&mut self, found: RuleMatch) {
        if found.action == Action::Alert && self.first_alert_match.is_none() {
            self.first_alert_match = Some(found.clone());
        }
        self.all_matches.push(found);
    }
}

/// Whether the request may go on after a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed (or alerted): run the next step.
    Continue,
    /// Refused: answer 403 and run no later phase.
    Deny,
}

/// Evaluates one phase of `table` with `default` into `decision`; with
/// `monitoring` (the policy has rules in monitor mode) into its [`WouldBe`]
/// too, unless that one was already denied.
pub(crate) fn evaluate_phase(
    table: &PhaseTable,
    default: Action,
    phase: Phase,
    ctx: &RequestContext<'_>,
    decision: &mut Decision,
    monitoring: bool,
) -> Verdict {
    if monitoring {
        let would = decision.would_be.get_or_insert_with(Default::default);
        if would.decision.final_action != Action::Deny {
            let WouldBe {
                decision,
                monitored,
            } = &mut **would;
            run_phase(table, default, phase, ctx, decision, Some(monitored));
        }
    }
    run_phase(table, default, phase, ctx, decision, None)
}

/// One phase: the rules in monitor mode are evaluated, and their matches
/// pushed to `monitored`, only when it is given.
fn run_phase(
    table: &PhaseTable,
    default: Action,
    phase: Phase,
    ctx: &RequestContext<'_>,
    decision: &mut Decision,
    mut monitored: Option<&mut Vec<RuleMatch>>,
) -> Verdict {
    let mut ended: Option<&CompiledRule> = None;
    table.index.for_each_candidate(ctx, |position| {
        let rule = &table.rules[position as usize];
        if rule.monitor && monitored.is_none() || !rule.matches(ctx) {
            return ControlFlow::Continue(());
        }
        let found = RuleMatch {
            rule: rule.name.clone(),
            group: rule.group.clone(),
            phase,
            action: rule.action,
        };
        if rule.monitor
            && let Some(monitored) = monitored.as_deref_mut()
        {
            monitored.push(found.clone());
        }
        decision.record(found);
        if rule.action == Action::Alert {
            ControlFlow::Continue(())
        } else {
            ended = Some(rule);
            ControlFlow::Break(())
        }
    });
    match ended {
        Some(rule) => {
            decision.final_action = rule.action;
            decision.final_rule_name = rule.name.clone();
            decision.final_rule_group_name = rule.group.clone();
            decision.final_phase = phase;
        }
        None => {
            // A phase that falls to an Allow default raises no objection: the
            // outcome of an earlier phase (an explicit rule, an Alert default)
            // stays the one the log reports.
            let earlier_outcome = &*decision.final_rule_name != DEFAULT_RULE
                || decision.final_action != Action::Allow;
            if default != Action::Allow || !earlier_outcome {
                decision.final_action = default;
                decision.final_rule_name = DEFAULT_RULE_NAME.clone();
                decision.final_rule_group_name = DEFAULT_RULE_NAME.clone();
                decision.final_phase = phase;
            }
            if default == Action::Alert {
                decision.record(RuleMatch {
                    rule: DEFAULT_RULE_NAME.clone(),
                    group: DEFAULT_RULE_NAME.clone(),
                    phase,
                    action: Action::Alert,
                });
            }
        }
    }
    if decision.final_action == Action::Deny {
        Verdict::Deny
    } else {
        Verdict::Continue
    }
}
