//! Request handling on the client-facing listeners: CONNECT goes to
//! [`crate::tunnel`], absolute-form HTTP is forwarded here, anything else is
//! not a proxy request. [`exchange`] runs one HTTP request through PreREQUEST,
//! the destination and PostRESPONSE; it serves plain HTTP and the requests
//! inside intercepted tunnels alike.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use egress_policy::{HttpRequest, HttpResponse, PRIVATE_DESTINATION_RULE, Phase, Verdict};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::flow::{Flow, Stop};
use crate::gateway::{ConnInfo, Failure, Gateway, Side};
use crate::http_util::{
    Body, Counted, OnDone, denied, empty, is_upgrade, strip_hop_by_hop, text_response,
};
use crate::upstream::{Pool, PoolKey};

/// Handles one request from a client-facing listener.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    pool: Arc<Pool>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(crate::tunnel::connect(gw, conn, req).await);
    }
    let uri = req.uri();
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(forward(gw, conn, pool, req).await),
        (Some("https"), Some(_)) => Ok(bad_request(
            "HTTPS URLs go through CONNECT: set the proxy for https:// URLs, the client will tunnel.\n",
        )),
        _ => Ok(bad_request(
            "This is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port.\n",
        )),
    }
}

fn bad_request(text: &str) -> Response<Body> {
    text_response(StatusCode::BAD_REQUEST, text, true)
}

/// Token this gateway adds to `Via`; seeing it on an incoming request means the
/// request looped back through the proxy.
fn via_token(proxy_name: &str) -> String {
    format!("1.1 {proxy_name} (egress-gateway)")
}

fn has_looped(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop.trim() == token)
}

/// An absolute-form request: `GET http://host[:port]/path`.
async fn forward(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    pool: Arc<Pool>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return bad_request("The request URL has no host.\n");
    };
    let port = authority.port_u16().unwrap_or(80);
    let url = req.uri().to_string();
    let mut flow = match Flow::start(
        &gw,
        conn,
        req.method().as_str(),
        authority.host(),
        port,
        "http",
        url,
    ) {
        Ok(flow) => flow,
        Err(failure) => return failed_before_decision(&gw, failure),
    };
    if has_looped(req.headers(), &via_token(flow.policy.proxy().name())) {
        flow.decision
            .deny_by(Phase::PreDns, PRIVATE_DESTINATION_RULE);
        return stopped(flow, Stop::Denied, true);
    }
    if flow.pre_dns() == Verdict::Deny {
        return stopped(flow, Stop::Denied, true);
    }
    let ip = match flow.resolve().await {
        Ok(ip) => ip,
        Err(stop) => return stopped(flow, stop, true),
    };
    let key = PoolKey {
        ip,
        port,
        tls_name: None,
    };
    exchange(flow, pool, key, req).await
}

/// Answers a request that stopped before reaching the destination, and logs it.
pub fn stopped(flow: Flow, stop: Stop, http1: bool) -> Response<Body> {
    match stop {
        Stop::Denied => {
            flow.finish(403, 0, 0, None);
            denied(http1)
        }
        Stop::Failed(failure) => {
            let response = text_response(failure.status, failure.client_text(), http1);
            flow.finish(i32::from(failure.status.as_u16()), 0, 0, Some(&failure));
            response
        }
    }
}

/// A failure before there is anything to decide on (no policy): counted and
/// traced, not logged as a decision.
pub fn failed_before_decision(gw: &Gateway, failure: Failure) -> Response<Body> {
    failure.count(&gw.metrics);
    tracing::warn!(reason = failure.reason, detail = %failure.detail, "request refused");
    text_response(failure.status, failure.client_text(), true)
}

/// The request target as origin-form (`/path?query`).
fn origin_form(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("/")
        .to_owned()
}

/// Runs `req` through PreREQUEST, the destination (`key`) and PostRESPONSE.
/// The log line is written when the response body has gone to the client.
pub async fn exchange(
    mut flow: Flow,
    pool: Arc<Pool>,
    key: PoolKey,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let http1 = req.version() < Version::HTTP_2;
    let method = req.method().as_str().to_owned();
    let target = origin_form(req.uri());
    let verdict = flow.pre_request(Some(HttpRequest {
        method: &method,
        uri: &target,
        headers: req.headers(),
    }));
    if verdict == Verdict::Deny {
        return stopped(flow, Stop::Denied, http1);
    }
    // Request keys stay visible in PostRESPONSE; keep the headers only if rules
    // there could read them.
    let needs_request_in_post = flow.policy.rule_count(Phase::PostResponse) > 0;
    let request_headers = if needs_request_in_post {
        req.headers().clone()
    } else {
        HeaderMap::new()
    };
    let client_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));

    // host[:port] only: the URL's userinfo (user:pass@) never goes upstream.
    let host = match req.uri().authority() {
        Some(a) => match a.port_u16() {
            Some(port) => format!("{}:{port}", a.host()),
            None => a.host().to_owned(),
        },
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| flow.domain.to_string(), str::to_owned),
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(&host) {
        parts.headers.insert(header::HOST, host);
    }
    if let Ok(via) = HeaderValue::from_str(&via_token(flow.policy.proxy().name())) {
        parts.headers.append(header::VIA, via);
    }
    parts.version = Version::HTTP_11;
    parts.uri = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
    let request_bytes = Arc::new(AtomicU64::new(0));
    let upstream_request =
        Request::from_parts(parts, Counted::new(body, request_bytes.clone()).boxed());

    let mut response = match crate::upstream::send(&flow.gw, &pool, key, upstream_request).await {
        Ok(response) => response,
        Err(failure) => {
            let reply = text_response(failure.status, failure.client_text(), http1);
            let sent = request_bytes.load(Ordering::Relaxed);
            flow.finish(i32::from(failure.status.as_u16()), sent, 0, Some(&failure));
            return reply;
        }
    };
    flow.gw
        .metrics
        .request_seconds
        .observe(flow.started.elapsed().as_secs_f64());

    let verdict = flow.post_response(
        Some(HttpRequest {
            method: &method,
            uri: &target,
            headers: &request_headers,
        }),
        HttpResponse {
            status: response.status().as_u16(),
            headers: response.headers(),
        },
    );
    if verdict == Verdict::Deny {
        // The upstream response is dropped unread; its connection is not reused.
        flow.finish(403, request_bytes.load(Ordering::Relaxed), 0, None);
        return denied(http1);
    }

    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let gw = flow.gw.clone();
        gw.tasks
            .spawn(relay_upgrade(flow, client_upgrade, upstream_upgrade));
        return Response::from_parts(parts, empty());
    }

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let response_bytes = Arc::new(AtomicU64::new(0));
    let counted = Counted::new(body, response_bytes.clone());
    let logged = OnDone::new(counted, move || {
        flow.finish(
            i32::from(status.as_u16()),
            request_bytes.load(Ordering::Relaxed),
            response_bytes.load(Ordering::Relaxed),
            None,
        );
    });
    Response::from_parts(parts, logged.boxed())
}

/// After a 101: bytes flow both ways until either side closes or goes idle.
async fn relay_upgrade(
    flow: Flow,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            let failure = Failure::new(
                Side::Downstream,
                "upgrade",
                StatusCode::SWITCHING_PROTOCOLS,
                e.to_string(),
            );
            flow.finish(101, 0, 0, Some(&failure));
            return;
        }
    };
    let (sent, received) =
        crate::tunnel::relay(&flow.gw, TokioIo::new(client), TokioIo::new(upstream)).await;
    flow.finish(101, sent, received, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_seen_in_via() {
        let token = via_token("egress");
        let mut headers = HeaderMap::new();
        headers.append(
            header::VIA,
            "1.0 fred, 1.1 egress (egress-gateway)"
                .parse()
                .expect("valid"),
        );
        assert!(has_looped(&headers, &token));
        assert!(!has_looped(&headers, &via_token("other")));
        assert!(!has_looped(&HeaderMap::new(), &token));
    }

    #[test]
    fn origin_form_targets() {
        assert_eq!(
            origin_form(&"http://a.test/x?y=1".parse().expect("uri")),
            "/x?y=1"
        );
        assert_eq!(origin_form(&"http://a.test".parse().expect("uri")), "/");
    }
}
