//! The admin listener: `/healthz` (the process serves), `/readyz` (a valid
//! policy is loaded and the gateway is not shutting down; the body says which
//! policy) and `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::gateway::Gateway;
use crate::http_util::{Body, full, text_response};

/// Admin connections served at once; more wait in the accept queue. Probes
/// and a scraper need a handful; a flood must not cost more than that.
const MAX_ADMIN_CONNECTIONS: usize = 16;

/// Serves the admin endpoints until shutdown completes. Clients get the
/// listeners' header timeout, and at most `MAX_ADMIN_CONNECTIONS` are served
/// at once.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, registry: Arc<Registry>) {
    let permits = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (gw, registry) = (gw.clone(), registry.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let header_timeout = gw.limits.header_timeout;
            let service = service_fn(move |req| {
                let (gw, registry) = (gw.clone(), registry.clone());
                async move { Ok::<_, Infallible>(respond(&gw, &registry, &req)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(gw: &Gateway, registry: &Registry, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "GET only\n", false);
    }
    match req.uri().path() {
        "/healthz" => text_response(StatusCode::OK, "ok\n", false),
        "/readyz" => readiness(gw),
        "/metrics" => {
            let mut text = String::new();
            if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
                return text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n",
                    false,
                );
            }
            let mut response = Response::new(full(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text_response(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
            false,
        ),
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

fn readiness(gw: &Gateway) -> Response<Body> {
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
    let mut response = Response::new(full(format!("{body}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
