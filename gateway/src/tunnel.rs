//! CONNECT: PreDNS on the requested name and port, one resolution, the
//! private-destination guard, then either
//!
//! - a relayed tunnel (interception off, or the name is bypassed): PreREQUEST
//!   without HTTP keys, connect, `200`, bytes copied both ways; or
//! - an intercepted tunnel: `200`, TLS terminated with a leaf minted for the
//!   requested name, and every request inside it evaluated on its own
//!   (PreREQUEST with HTTP keys, the destination over verified TLS,
//!   PostRESPONSE), with HTTP/2 or HTTP/1.1 as the client chooses.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use egress_policy::Verdict;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::flow::{Flow, Stop};
use crate::gateway::{ConnInfo, Failure, Gateway, Side};
use crate::http_util::{Body, empty, text_response};
use crate::idle::Activity;
use crate::proxy::{exchange, failed_before_decision, stopped};
use crate::upstream::{Pool, PoolKey, connect_tcp};

/// Handles a CONNECT request.
pub async fn connect(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "CONNECT needs a host:port target.\n",
            true,
        );
    };
    let port = match authority.port_u16() {
        Some(port) if port != 0 => port,
        _ => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "CONNECT needs a port between 1 and 65535.\n",
                true,
            );
        }
    };
    let host = authority.host();
    let url = format!("{host}:{port}");
    let mut flow = match Flow::start(&gw, conn, "CONNECT", host, port, "https", url) {
        Ok(flow) => flow,
        Err(failure) => return failed_before_decision(&gw, failure),
    };
    if flow.pre_dns() == Verdict::Deny {
        return stopped(flow, Stop::Denied, true);
    }
    let ip = match flow.resolve().await {
        Ok(ip) => ip,
        Err(stop) => return stopped(flow, stop, true),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);

    if flow.policy.proxy().intercepts(&flow.domain) {
        if gw.intercept.is_none() {
            let failure = Failure::new(
                Side::Internal,
                "no_intercept_ca",
                StatusCode::BAD_GATEWAY,
                "the policy turns interception on but no --intercept-ca-cert/--intercept-ca-key was given",
            );
            return stopped(flow, Stop::Failed(failure), true);
        }
        gw.tasks.spawn(intercept(flow, on_upgrade, ip));
        return Response::new(empty());
    }

    if flow.pre_request(None) == Verdict::Deny {
        return stopped(flow, Stop::Denied, true);
    }
    let started = std::time::Instant::now();
    let upstream = match connect_tcp(&gw, ip, port).await {
        Ok(stream) => stream,
        Err(failure) => return stopped(flow, Stop::Failed(failure), true),
    };
    gw.metrics
        .upstream_connect_seconds
        .observe(started.elapsed().as_secs_f64());
    gw.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(client) => {
                let (sent, received) = relay(&flow.gw, TokioIo::new(client), upstream).await;
                flow.finish(-1, sent, received, None);
            }
            Err(e) => {
                let failure = Failure::in_tunnel(Side::Downstream, "client_upgrade", e.to_string());
                flow.finish(-1, 0, 0, Some(&failure));
            }
        }
    });
    Response::new(empty())
}

/// Buffer size for each direction of a relayed tunnel.
const COPY_BUFFER: usize = 64 * 1024;

/// Copies bytes both ways until both sides are done, either side fails, or
/// nothing moves for the idle timeout. Returns the bytes read from the client
/// and from the upstream.
pub async fn relay<A, B>(gw: &Gateway, client: A, upstream: B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _open = OpenTunnel::new(gw);
    let activity = Activity::default();
    let mut client = activity.track(client);
    let mut upstream = activity.track(upstream);
    let (from_client, from_upstream) = (client.bytes_read(), upstream.bytes_read());
    tokio::select! {
        // A reset on either side just ends the tunnel.
        // 64 KiB buffers: with tokio's default 8 KiB, a 64 KiB body takes eight
        // reads and writes each way.
        _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER) => {}
        _ = activity.idle_exceeds(gw.limits.idle_timeout) => {}
    }
    (
        from_client.load(Ordering::Relaxed),
        from_upstream.load(Ordering::Relaxed),
    )
}

/// Keeps the open-tunnel gauge right however the tunnel ends.
struct OpenTunnel<'g>(&'g Gateway);

impl<'g> OpenTunnel<'g> {
    fn new(gw: &'g Gateway) -> Self {
        gw.metrics.open_tunnels.inc();
        OpenTunnel(gw)
    }
}

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.metrics.open_tunnels.dec();
    }
}

/// An intercepted tunnel: TLS with a minted leaf, then HTTP inside.
async fn intercept(flow: Flow, on_upgrade: hyper::upgrade::OnUpgrade, ip: std::net::IpAddr) {
    let gw = flow.gw.clone();
    let Some(authority) = gw.intercept.as_ref() else {
        return;
    };
    let client = match on_upgrade.await {
        Ok(client) => client,
        Err(e) => {
            let failure = Failure::in_tunnel(Side::Downstream, "client_upgrade", e.to_string());
            flow.finish(-1, 0, 0, Some(&failure));
            return;
        }
    };
    let config = match authority.server_config_for(flow.domain.as_str()).await {
        Ok(config) => config,
        Err(e) => {
            let failure = Failure::in_tunnel(Side::Internal, "mint", e.to_string());
            flow.finish(-1, 0, 0, Some(&failure));
            return;
        }
    };
    let _open = OpenTunnel::new(&gw);
    let activity = Activity::default();
    let io = activity.track(TokioIo::new(client));
    let accepted = tokio::time::timeout(
        gw.limits.handshake_timeout,
        TlsAcceptor::from(config).accept(io),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            // Typically a client that does not trust the interception CA.
            let failure = Failure::in_tunnel(Side::Downstream, "client_tls", e.to_string());
            flow.finish(-1, 0, 0, Some(&failure));
            return;
        }
        Err(_) => {
            let failure =
                Failure::in_tunnel(Side::Downstream, "client_tls", "TLS handshake timed out");
            flow.finish(-1, 0, 0, Some(&failure));
            return;
        }
    };
    let pool = Arc::new(Pool::default());
    let tunnel = Arc::new(flow);
    let service = service_fn(move |req: Request<Incoming>| {
        let (tunnel, pool) = (tunnel.clone(), pool.clone());
        async move { Ok::<_, Infallible>(inner_request(&tunnel, pool, ip, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(gw.limits.header_timeout)
        .max_buf_size(gw.limits.max_header_bytes.max(8192));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "intercepted connection ended");
            }
        }
        _ = activity.idle_exceeds(gw.limits.idle_timeout) => {}
        _ = gw.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// One request inside an intercepted tunnel.
async fn inner_request(
    tunnel: &Flow,
    pool: Arc<Pool>,
    ip: std::net::IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let http1 = req.version() < Version::HTTP_2;
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| tunnel.domain.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let flow = tunnel.inner_request(req.method().as_str(), format!("https://{authority}{path}"));
    // A request for another host inside this tunnel would be judged as the
    // tunnel's host (domain fronting): refuse it.
    if !same_host(&authority, flow.domain.as_str(), flow.port) {
        let failure = Failure::new(
            Side::Downstream,
            "misdirected",
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "request for {authority} inside a tunnel to {}:{}",
                flow.domain, flow.port
            ),
        );
        let mut response = text_response(failure.status, failure.client_text(), http1);
        if !http1 {
            response.headers_mut().remove(header::CONNECTION);
        }
        flow.finish(421, 0, 0, Some(&failure));
        return response;
    }
    let key = PoolKey {
        ip,
        port: flow.port,
        tls_name: Some(flow.domain.to_string()),
    };
    let mut response = exchange(flow, pool, key, req).await;
    if !http1 {
        // Connection-specific headers do not exist in HTTP/2.
        response.headers_mut().remove(header::CONNECTION);
    } else if response.status() == StatusCode::FORBIDDEN {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether an `authority` (`host[:port]`) names the tunnel's host and port.
fn same_host(authority: &str, domain: &str, port: u16) -> bool {
    let Ok(parsed) = authority.parse::<http::uri::Authority>() else {
        return false;
    };
    let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
    egress_policy::domain::normalize(host) == domain && parsed.port_u16().is_none_or(|p| p == port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching() {
        assert!(same_host("www.example.com", "www.example.com", 443));
        assert!(same_host("WWW.Example.com.:443", "www.example.com", 443));
        assert!(same_host("www.example.com:8443", "www.example.com", 8443));
        assert!(!same_host("www.example.com:8443", "www.example.com", 443));
        assert!(!same_host("evil.example", "www.example.com", 443));
        assert!(same_host("[::1]:443", "::1", 443));
        assert!(same_host("[::1]", "::1", 443));
    }
}
