//! Prometheus metrics, served on the admin listener's `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Phase that decided.
    pub phase: &'static str,
    /// Final action.
    pub action: &'static str,
    /// Rule group of the deciding rule (`default` for a phase default).
    pub group: Arc<str>,
    /// Deciding rule (`default`, `private-destination`).
    pub rule: Arc<str>,
}

/// Labels of what the rules in monitor mode would have decided.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WouldLabels {
    /// Phase of that outcome.
    pub phase: &'static str,
    /// The action that would have been taken.
    pub would_action: &'static str,
    /// Rule group of the rule that would have decided.
    pub group: Arc<str>,
    /// That rule (`default` for a phase default).
    pub rule: Arc<str>,
}

/// Labels of an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `downstream`, `upstream` or `internal`.
    pub side: &'static str,
    /// Short reason code, e.g. `dns_nxdomain`, `upstream_tls`.
    pub reason: &'static str,
}

/// Labels of the loaded policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Serialized format version.
    pub format_version: String,
    /// Content hash.
    pub hash: String,
    /// ProxyConfiguration name.
    pub configuration: String,
}

/// Labels of a phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `PreDNS`, `PreREQUEST` or `PostRESPONSE`.
    pub phase: &'static str,
}

/// Labels of a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `http` or `https`.
    pub listener: &'static str,
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    /// Decisions by phase, action and rule.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Requests where a rule in monitor mode matched, by what would have happened.
    pub monitored: Family<WouldLabels, Counter>,
    /// Failures by side and reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Time from request head to response head (HTTP requests, plain or intercepted).
    pub request_seconds: Histogram,
    /// Time to resolve a name.
    pub dns_seconds: Histogram,
    /// Time to connect to an upstream (TCP, plus TLS when the gateway speaks it).
    pub upstream_connect_seconds: Histogram,
    /// Leaf certificates found in the cache.
    pub cert_cache_hits: Counter,
    /// Leaf certificates minted.
    pub cert_cache_misses: Counter,
    /// Time to mint a leaf certificate.
    pub cert_mint_seconds: Histogram,
    /// Leaf certificates held.
    pub cert_cache_size: Gauge,
    /// The loaded policy (value 1, labels say which).
    pub policy_info: Family<PolicyLabels, Gauge>,
    /// Successful policy loads.
    pub policy_reloads: Counter,
    /// Policy loads that failed (the previous policy kept serving).
    pub policy_reload_failures: Counter,
    /// Rules of the policy in force, by phase.
    pub policy_rules: Family<PhaseLabels, Gauge>,
    /// Reloads that removed a large share of the rules (see `--policy-shrink-warning`).
    pub policy_shrink_warnings: Counter,
    /// Certificate file loads that failed (the previous material kept serving).
    pub tls_reload_failures: Counter,
    /// Client connections open, by listener (tunnels included).
    pub open_connections: Family<ListenerLabels, Gauge>,
    /// CONNECT tunnels open (relayed or intercepted).
    pub open_tunnels: Gauge,
    /// Decision log lines dropped because stdout could not keep up.
    pub log_lines_dropped: Counter,
    /// Relayed tunnels and upgraded connections closed because a new policy
    /// denies them.
    pub tunnels_revoked: Counter,
    /// 1 while the policy source reaches the API server (always 1 for files).
    pub source_connected: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Metrics {
        let latency = || Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let metrics = Metrics {
            decisions: Family::default(),
            monitored: Family::default(),
            errors: Family::default(),
            request_seconds: latency(),
            dns_seconds: latency(),
            upstream_connect_seconds: latency(),
            cert_cache_hits: Counter::default(),
            cert_cache_misses: Counter::default(),
            cert_mint_seconds: latency(),
            cert_cache_size: Gauge::default(),
            policy_info: Family::default(),
            policy_reloads: Counter::default(),
            policy_reload_failures: Counter::default(),
            policy_rules: Family::default(),
            policy_shrink_warnings: Counter::default(),
            tls_reload_failures: Counter::default(),
            open_connections: Family::default(),
            open_tunnels: Gauge::default(),
            log_lines_dropped: Counter::default(),
            tunnels_revoked: Counter::default(),
            source_connected: Gauge::default(),
        };
        metrics.source_connected.set(1);
        let r = registry.sub_registry_with_prefix("egress");
        r.register(
            "decisions",
            "Requests decided, by phase, final action, group and rule",
            metrics.decisions.clone(),
        );
        r.register(
            "monitored_decisions",
            "Requests where a rule in monitor mode matched, by what would have happened with it enforced",
            metrics.monitored.clone(),
        );
        r.register(
            "errors",
            "Requests that failed, by side and reason",
            metrics.errors.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request head to response head",
            metrics.request_seconds.clone(),
        );
        r.register(
            "dns_duration_seconds",
            "Name resolution time",
            metrics.dns_seconds.clone(),
        );
        r.register(
            "upstream_connect_duration_seconds",
            "Upstream connection time (TCP, and TLS when intercepting)",
            metrics.upstream_connect_seconds.clone(),
        );
        r.register(
            "certificate_cache_hits",
            "Leaf certificates found in the cache",
            metrics.cert_cache_hits.clone(),
        );
        r.register(
            "certificate_cache_misses",
            "Leaf certificates minted",
            metrics.cert_cache_misses.clone(),
        );
        r.register(
            "certificate_mint_duration_seconds",
            "Leaf certificate mint time",
            metrics.cert_mint_seconds.clone(),
        );
        r.register(
            "certificate_cache_size",
            "Leaf certificates held",
            metrics.cert_cache_size.clone(),
        );
        r.register(
            "policy_info",
            "The loaded policy",
            metrics.policy_info.clone(),
        );
        r.register(
            "policy_reloads",
            "Policy loads that succeeded",
            metrics.policy_reloads.clone(),
        );
        r.register(
            "policy_reload_failures",
            "Policy loads that failed; the previous policy kept serving",
            metrics.policy_reload_failures.clone(),
        );
        r.register(
            "policy_rules",
            "Rules of the policy in force, by phase",
            metrics.policy_rules.clone(),
        );
        r.register(
            "policy_shrink_warnings",
            "Reloads that removed all rules, or more than the configured share of them, at once",
            metrics.policy_shrink_warnings.clone(),
        );
        r.register(
            "tls_reload_failures",
            "Certificate reloads that failed; the previous certificate kept serving",
            metrics.tls_reload_failures.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open",
            metrics.open_connections.clone(),
        );
        r.register(
            "open_tunnels",
            "CONNECT tunnels open",
            metrics.open_tunnels.clone(),
        );
        r.register(
            "tunnels_revoked",
            "Relayed tunnels and upgraded connections closed because a new policy denies them",
            metrics.tunnels_revoked.clone(),
        );
        r.register(
            "source_connected",
            "1 while the policy source reaches the API server (always 1 for files)",
            metrics.source_connected.clone(),
        );
        r.register(
            "decision_log_dropped_lines",
            "Decision log lines dropped because stdout could not keep up",
            metrics.log_lines_dropped.clone(),
        );
        metrics
    }

    /// Counts an error.
    pub fn error(&self, side: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { side, reason })
            .inc();
    }
}

/// Keeps the open-tunnel gauge right however a tunnel ends.
#[derive(Debug)]
pub struct OpenTunnel<'m>(&'m Metrics);

impl<'m> OpenTunnel<'m> {
    /// Counts a tunnel as open until this is dropped.
    pub fn new(metrics: &'m Metrics) -> Self {
        metrics.open_tunnels.inc();
        OpenTunnel(metrics)
    }
}

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.open_tunnels.dec();
    }
}
