//! Operator metrics, served on the admin port's `/metrics`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `egressproxy`, `proxyconfiguration` or `proxyrulegroup`.
    pub controller: &'static str,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: &'static str,
    /// Short reason, e.g. `kube_api`.
    pub reason: &'static str,
}

/// Labels of a webhook review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `injected`, `skipped` or `error`.
    pub outcome: &'static str,
    /// Why skipped (`opted_out`, `namespace_not_enabled`, ...) or failed.
    pub reason: &'static str,
}

/// Labels naming a proxy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    /// The proxy's namespace.
    pub namespace: String,
    /// The proxy.
    pub proxy: String,
}

/// Every metric of the operator.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed (and were requeued with backoff).
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Family<ControllerLabels, Histogram>,
    /// 1 while this replica leads (runs the controllers).
    pub leader: Gauge,
    /// Webhook reviews answered.
    pub webhook: Family<WebhookLabels, Counter>,
    /// Pods a proxy should serve that run without its settings.
    pub escaped_pods: Family<ProxyLabels, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
            leader: Gauge::default(),
            webhook: Family::default(),
            escaped_pods: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("egress_operator");
        r.register(
            "reconciles",
            "Reconciles run, by controller",
            metrics.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed and were requeued with backoff",
            metrics.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by controller",
            metrics.duration.clone(),
        );
        r.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        r.register(
            "webhook_reviews",
            "Injection webhook reviews, by outcome and reason",
            metrics.webhook.clone(),
        );
        r.register(
            "escaped_pods",
            "Pods a proxy should serve that run without its settings (webhook unreachable, or created before their namespace was labelled)",
            metrics.escaped_pods.clone(),
        );
        metrics
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, controller: &'static str) -> Timer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        Timer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }
}

/// Observes a reconcile's duration when dropped.
#[derive(Debug)]
pub struct Timer<'m> {
    metrics: &'m Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}
