//! The operator's admin listener: `/healthz` (the process serves),
//! `/readyz` (caches synced on the leader, or following), `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use egress_runtime::admin::{self as endpoints, text};
use http::StatusCode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Whether the operator is ready to be counted on.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks it ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves the admin endpoints forever (at most
/// [`egress_runtime::admin::MAX_CONNECTIONS`] connections at once).
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, ready: Arc<Readiness>) {
    endpoints::serve(listener, Duration::from_secs(10), move |req| {
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if ready.get() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => endpoints::metrics(&registry),
            _ => endpoints::not_found(),
        }
    })
    .await;
}
