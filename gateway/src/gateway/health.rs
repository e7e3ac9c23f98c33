//! Whether the policy source reaches what it reads, for `/readyz` and the
//! `egress_source_connected` metric.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::metrics::Metrics;

/// Whether the source reaches what it reads (always, for files).
#[derive(Debug)]
pub struct Health {
    kind: &'static str,
    connected: AtomicBool,
    problem: Mutex<Option<(String, SystemTime)>>,
    watches_pods: AtomicBool,
    pods_synced: AtomicBool,
}

impl Health {
    /// The health of a `file` or `kubernetes` source.
    pub fn new(kind: &'static str) -> Health {
        Health {
            kind,
            connected: AtomicBool::new(true),
            problem: Mutex::new(None),
            watches_pods: AtomicBool::new(false),
            pods_synced: AtomicBool::new(false),
        }
    }

    /// The source answered.
    pub fn ok(&self, metrics: &Metrics) {
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!("the API server is reachable again");
        }
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = None;
        metrics.source_connected.set(1);
    }

    /// The source failed with `error`.
    pub fn failed(&self, metrics: &Metrics, error: &dyn std::fmt::Display) {
        if self.connected.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "the API server is unreachable: serving the last good policy and certificates");
        }
        let mut problem = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        let since = problem
            .as_ref()
            .map_or_else(SystemTime::now, |(_, since)| *since);
        *problem = Some((error.to_string(), since));
        metrics.source_connected.set(0);
    }

    /// `/readyz` detail: whether the API is reachable, and the last error
    /// since when if not.
    pub fn detail(&self) -> serde_json::Value {
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match problem {
            None => serde_json::json!({"kind": self.kind, "connected": true}),
            Some((error, since)) => serde_json::json!({
                "kind": self.kind,
                "connected": false,
                "error": error,
                "since": jiff::Timestamp::try_from(since).map(|t| t.to_string()).unwrap_or_default(),
            }),
        }
    }

    /// The pod index is watched: `/readyz` waits until it is filled.
    pub fn watches_pods(&self) {
        self.watches_pods.store(true, Ordering::Relaxed);
    }

    /// The pod index has been filled: true the first time only.
    pub fn pods_synced(&self) -> bool {
        !self.pods_synced.swap(true, Ordering::Relaxed)
    }

    /// Whether the pod index is watched and has not been filled yet: until
    /// it is, no client would be known by its pod.
    pub fn pods_pending(&self) -> bool {
        self.watches_pods.load(Ordering::Relaxed) && !self.pods_synced.load(Ordering::Relaxed)
    }
}
