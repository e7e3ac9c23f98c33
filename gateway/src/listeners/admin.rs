//! The admin listener: `/healthz` (the process serves), `/readyz` (a valid
//! policy is loaded and the gateway is not shutting down; the body says which
//! policy) and `/metrics` (Prometheus text format).

use std::sync::Arc;

use bytes::Bytes;
use egress_runtime::admin::{self as endpoints, json, text};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::gateway::Gateway;

/// Serves the admin endpoints until the task is aborted. Clients get the
/// listeners' header timeout, and at most
/// [`egress_runtime::admin::MAX_CONNECTIONS`] are served at once.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, registry: Arc<Registry>) {
    let header_timeout = gw.limits.header_timeout;
    endpoints::serve(listener, header_timeout, move |req| {
        respond(&gw, &registry, req)
    })
    .await;
}

fn respond(gw: &Gateway, registry: &Registry, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(gw),
        "/metrics" => endpoints::metrics(registry),
        _ => endpoints::not_found(),
    }
}

/// What the gateway still waits for before it can serve, if anything.
fn waiting_for(gw: &Gateway) -> Option<&'static str> {
    if gw.draining.is_cancelled() {
        return Some("shutting down");
    }
    let policy = gw.policy.current()?;
    if !gw.waits_for_material {
        return None;
    }
    if policy.proxy().settings().intercept && !gw.intercept.is_ready() {
        return Some("the policy intercepts TLS but no interception sub-CA is loaded yet");
    }
    if gw.source.pods_pending() {
        return Some(
            "the pod index is not filled yet: rules on the client's identity would not know it",
        );
    }
    if gw.serving.as_ref().is_some_and(|s| !s.is_installed()) {
        return Some("the HTTPS listener's certificate is not loaded yet");
    }
    None
}

fn readiness(gw: &Gateway) -> Response<Full<Bytes>> {
    let source = gw.source.detail();
    let (status, body) = match gw.policy.loaded() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "reason": "no valid policy loaded", "policySource": gw.policy.origin(), "source": source}),
        ),
        Some(loaded) => {
            let loaded_at = jiff::Timestamp::try_from(loaded.loaded_at)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let policy = serde_json::json!({
                "configuration": loaded.policy.configuration(),
                "proxy": loaded.policy.proxy().name(),
                "formatVersion": loaded.policy.format_version(),
                "hash": loaded.policy.hash(),
                "loadedAt": loaded_at,
            });
            match waiting_for(gw) {
                Some(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"ready": false, "reason": reason, "policy": policy, "source": source}),
                ),
                None => (
                    StatusCode::OK,
                    serde_json::json!({"ready": true, "policy": policy, "source": source, "clientPods": gw.identities.len()}),
                ),
            }
        }
    };
    json(status, &body)
}
