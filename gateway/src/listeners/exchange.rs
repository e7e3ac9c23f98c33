//! One HTTP request through PreREQUEST, the destination and PostRESPONSE,
//! for plain HTTP and for requests inside intercepted tunnels alike. The
//! request goes upstream as the client sent it (its target untouched, its
//! `Host` the canonical one); rules saw its normalised target.

use std::borrow::Cow;
use std::sync::Arc;

use egress_policy::{HttpRequest, HttpResponse, Phase};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::error::Error;
use crate::gateway::Gateway;
use crate::http_util::{
    Body, Counted, OnDone, Progress, denied, empty, is_upgrade, strip_hop_by_hop, text_response,
};
use crate::pipeline::{self, Exchange};
use crate::request::{Protocol, request_target};
use crate::upstream::PoolKey;

/// Sends `req` (cleared by [`pipeline::request`]; its target normalises to
/// `normalized`) to the destination (`key`), and its response through
/// [`pipeline::response`]. The log line is written when the response body
/// has gone to the client.
pub async fn exchange(
    gw: Arc<Gateway>,
    mut exchange: Exchange,
    key: PoolKey,
    normalized: String,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let http1 = req.version() < Version::HTTP_2;
    let method = req.method().clone();
    let client_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    // Request keys stay visible in PostRESPONSE; keep the headers only if rules
    // there could read them, or an upgraded connection is judged again when
    // the policy changes.
    let keep_headers =
        exchange.policy().rule_count(Phase::PostResponse) > 0 || client_upgrade.is_some();
    let request_headers = if keep_headers {
        req.headers().clone()
    } else {
        HeaderMap::new()
    };

    let protocol = if key.tls_name.is_some() {
        Protocol::Https
    } else {
        Protocol::Http
    };
    let (mut parts, body) = req.into_parts();
    let target = request_target(&parts.uri).into_owned();
    strip_hop_by_hop(&mut parts.headers);
    // The canonical host: the URL's userinfo (user:pass@) never goes upstream.
    if let Ok(host) = header_value(exchange.target().host_header(protocol)) {
        parts.headers.insert(header::HOST, host);
    }
    if let Some(via) = &exchange.names().via {
        parts.headers.append(header::VIA, via.clone());
    }
    // A credential travels only encrypted: inside an intercepted tunnel,
    // to a destination reached over TLS.
    if protocol == Protocol::Https
        && let Err(error) =
            add_credential(&gw, &mut exchange, &mut parts.headers, &target, &normalized)
    {
        let text = match &error {
            Error::Credential { name, .. } => {
                format!("The credential {name} is not available; the request was not sent.\n")
            }
            other => other.client_text().to_owned(),
        };
        let reply = text_response(error.status(), &text, http1);
        gw.fail(exchange, i32::from(error.status().as_u16()), (0, 0), &error);
        return reply;
    }
    parts.version = Version::HTTP_11;
    parts.uri = origin_form(&parts.uri);
    let sent = Arc::new(Progress::default());
    let upstream_request = Request::from_parts(parts, Counted::new(body, sent.clone()).boxed());

    let mut response = match crate::upstream::send(
        &gw.upstream,
        &gw.upstream_pool,
        key,
        upstream_request,
        &sent,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            let status = error.status();
            let reply = text_response(status, error.client_text(), http1);
            gw.fail(
                exchange,
                i32::from(status.as_u16()),
                (sent.bytes(), 0),
                &error,
            );
            return reply;
        }
    };
    gw.metrics
        .request_seconds
        .observe(exchange.started().elapsed().as_secs_f64());

    let verdict = pipeline::response(
        &mut exchange,
        HttpRequest {
            method: method.as_str(),
            uri: &normalized,
            headers: &request_headers,
        },
        HttpResponse {
            status: response.status().as_u16(),
            headers: response.headers(),
        },
    );
    if verdict.is_err() {
        // Denied. The upstream response is dropped unread; its connection is
        // not reused.
        gw.record(exchange.finish(403, sent.bytes(), 0, None));
        return denied(http1);
    }

    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let heads = UpgradeHeads {
            method,
            uri: normalized,
            request_headers,
            status: status.as_u16(),
            response_headers: parts.headers.clone(),
        };
        strip_hop_by_hop(&mut parts.headers);
        gw.tasks.spawn(relay_upgrade(
            gw.clone(),
            exchange,
            heads,
            client_upgrade,
            upstream_upgrade,
        ));
        return Response::from_parts(parts, empty());
    }

    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length,
        // and a proxy must not pass the Content-Length on: the body is
        // re-framed for the client from what was actually received.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut parts.headers);
    let received = Arc::new(Progress::default());
    let counted = Counted::new(body, received.clone());
    let logged = OnDone::new(counted, move || {
        gw.record(exchange.finish(
            i32::from(status.as_u16()),
            sent.bytes(),
            received.bytes(),
            None,
        ));
    });
    Response::from_parts(parts, logged.boxed())
}

/// The request's target as it goes upstream, in origin form: its path and
/// query as the client sent them (shared, not parsed again), `/` for none.
fn origin_form(uri: &Uri) -> Uri {
    match request_target(uri) {
        // Added a `/` (`http://host?query`): a new target.
        Cow::Owned(target) => target.parse().unwrap_or_else(|_| Uri::from_static("/")),
        // An empty path reads as `/` but would print as nothing.
        Cow::Borrowed("/") => Uri::from_static("/"),
        Cow::Borrowed(_) => uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone())),
    }
}

/// A header value made of `text` itself, not of a copy of it.
fn header_value(text: String) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
}

/// What an upgraded connection is judged by again when the policy changes:
/// the request that asked for the upgrade and the response that granted it.
struct UpgradeHeads {
    method: Method,
    /// The normalised target.
    uri: String,
    request_headers: HeaderMap,
    status: u16,
    response_headers: HeaderMap,
}

/// Sets the header of the first credential that applies to the request,
/// replacing any the client sent under that name; fails, naming the
/// credential, when its Secret cannot give a value.
fn add_credential(
    gw: &Gateway,
    exchange: &mut Exchange,
    headers: &mut HeaderMap,
    target: &str,
    normalized: &str,
) -> Result<(), Error> {
    let policy = exchange.policy().clone();
    let request = exchange.credential_request(target, normalized);
    let Some(credential) = policy.proxy().credential_for(&request) else {
        return Ok(());
    };
    exchange.carries_credential(&credential.name);
    let value = gw.secrets.header_value(credential)?;
    headers.remove(&credential.header);
    headers.insert(credential.header.clone(), value);
    Ok(())
}

/// After a 101: bytes flow both ways until either side closes or goes idle,
/// or a new policy denies the request that was upgraded.
async fn relay_upgrade(
    gw: Arc<Gateway>,
    exchange: Exchange,
    heads: UpgradeHeads,
    client: OnUpgrade,
    upstream: OnUpgrade,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => return gw.fail(exchange, 101, (0, 0), &Error::Upgrade(e.to_string())),
    };
    let mut revoked = None;
    let relayed = {
        let stop = std::pin::pin!(async {
            let judge = |policy| {
                let request = HttpRequest {
                    method: heads.method.as_str(),
                    uri: &heads.uri,
                    headers: &heads.request_headers,
                };
                let response = HttpResponse {
                    status: heads.status,
                    headers: &heads.response_headers,
                };
                pipeline::rejudge(&exchange, policy, &gw.guard, Some((request, response)))
            };
            revoked =
                Some(crate::listeners::tunnel::revocation(&gw, exchange.policy(), judge).await);
        });
        let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        crate::relay::relay(gw.watch(), client, upstream, stop).await
    };
    crate::listeners::tunnel::record_relayed(&gw, exchange, 101, relayed, revoked);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_target_is_the_path_and_query_in_origin_form() {
        for (client, upstream) in [
            ("http://a.test/p?q=1", "/p?q=1"),
            ("http://a.test/p?q=1#frag", "/p?q=1"),
            ("http://a.test", "/"),
            ("http://a.test/", "/"),
            ("http://a.test#frag", "/"),
            ("http://a.test?q", "/?q"),
            ("/in/a/tunnel?x", "/in/a/tunnel?x"),
            ("*", "*"),
        ] {
            let uri: Uri = client.parse().expect("a URI");
            assert_eq!(origin_form(&uri).to_string(), upstream, "{client}");
        }
    }
}
