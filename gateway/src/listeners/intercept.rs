//! An intercepted CONNECT tunnel: the client's TLS is terminated with a leaf
//! minted for the tunnel's (canonical) name, then every request inside is
//! decided on its own, against the policy in force when it arrives: all
//! phases again (PreDNS, the guard on the tunnel's address, PreREQUEST with
//! the HTTP keys, PostRESPONSE), HTTP/2 or HTTP/1.1 as the client chooses. A
//! policy change therefore reaches the next request of every open
//! intercepted connection.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use egress_policy::{Host, HttpRequest};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;

use crate::error::Error;
use crate::framing::{Heads, Inspected, RequestHeads};
use crate::gateway::{Connection, Gateway};
use crate::http_util::Body;
use crate::pipeline::{self, Destination};
use crate::relay::idle::Activity;
use crate::request::{Protocol, Target, request_target};
use crate::upstream::PoolKey;

/// Serves an intercepted tunnel to `target` (resolved and checked to `ip`)
/// after the client got its `200`.
pub async fn serve(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    target: Target,
    ip: IpAddr,
    on_upgrade: OnUpgrade,
) {
    // Failures before the first request are logged as the tunnel's.
    let fail = |error: Error| {
        if let Ok(exchange) = gw.arrived(
            &connection.client,
            "CONNECT",
            &target,
            Protocol::Https,
            None,
        ) {
            gw.fail(exchange, -1, (0, 0), &error);
        }
    };
    let client = match on_upgrade.await {
        Ok(client) => client,
        Err(e) => return fail(Error::Upgrade(e.to_string())),
    };
    let config = match gw
        .intercept
        .server_config_for(target.host.domain().as_str())
        .await
    {
        Ok(config) => config,
        Err(error) => return fail(error),
    };
    let _open = crate::metrics::OpenTunnel::new(&gw.metrics);
    let activity = Activity::default();
    let io = activity.track(TokioIo::new(client));
    let accepted = tokio::time::timeout(
        gw.limits.handshake_timeout,
        TlsAcceptor::from(config).accept(io),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        // Typically a client that does not trust the interception CA.
        Ok(Err(e)) => return fail(Error::ClientTls(e.to_string())),
        Err(_) => return fail(Error::ClientTls("TLS handshake timed out".to_owned())),
    };
    let heads = Heads::default();
    let tunnel = Arc::new(Tunnel {
        gw: gw.clone(),
        connection,
        target,
        ip,
        heads: heads.clone(),
    });
    let service = service_fn(move |req: Request<Incoming>| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(tunnel.request(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(gw.limits.header_timeout)
        .max_buf_size(gw.limits.max_header_bytes.max(8192));
    let connection = builder.serve_connection_with_upgrades(
        TokioIo::new(Inspected::new(tls, RequestHeads::new(heads))),
        service,
    );
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

/// What every request of one intercepted tunnel shares.
struct Tunnel {
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    target: Target,
    ip: IpAddr,
    heads: Heads,
}

impl Tunnel {
    /// One request inside the tunnel.
    async fn request(&self, req: Request<Incoming>) -> Response<Body> {
        let http1 = req.version() < Version::HTTP_2;
        let mut response = self.decide(req, http1).await;
        if !http1 {
            // Connection-specific headers do not exist in HTTP/2.
            response.headers_mut().remove(header::CONNECTION);
        } else if response.status() == StatusCode::FORBIDDEN {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else {
            self.gw.close_if_draining(&mut response);
        }
        response
    }

    async fn decide(&self, req: Request<Incoming>, http1: bool) -> Response<Body> {
        let gw = &self.gw;
        if http1 && self.heads.next_is_ambiguous() {
            return gw.refuse(Error::AmbiguousLength, true);
        }
        // A request for another host inside this tunnel would be judged as
        // the tunnel's host (domain fronting): refuse it.
        if let Err(error) = self.check_host(&req) {
            return gw.refuse(error, http1);
        }
        let path_and_query = request_target(req.uri());
        let normalized = match egress_policy::uri::normalize(&path_and_query) {
            Ok(normalized) => normalized.into_owned(),
            Err(e) => return gw.refuse(Error::InvalidTarget(e), http1),
        };
        let exchange = match gw.arrived(
            &self.connection.client,
            req.method().as_str(),
            &self.target,
            Protocol::Https,
            Some(&path_and_query),
        ) {
            Ok(exchange) => exchange,
            Err(error) => return gw.refuse(error, http1),
        };
        let http = HttpRequest {
            method: req.method().as_str(),
            uri: &normalized,
            headers: req.headers(),
        };
        let destination = Destination::Known(self.ip);
        let cleared =
            match pipeline::request(exchange, http, destination, gw.as_ref(), &gw.guard).await {
                Ok(cleared) => cleared,
                Err(stopped) => return gw.stopped(stopped, http1),
            };
        let key = PoolKey {
            client: self.connection.owner.clone(),
            ip: cleared.ip,
            port: self.target.port,
            tls_name: Some(self.target.host.domain().to_string()),
        };
        let exchange = cleared.exchange;
        crate::listeners::exchange::exchange(gw.clone(), exchange, key, normalized, req).await
    }

    /// The request's host (`:authority`, or `Host`) must be the tunnel's,
    /// spelled any way that canonicalises to it; its port, if given, too.
    fn check_host(&self, req: &Request<Incoming>) -> Result<(), Error> {
        let named = match req.uri().authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => match req.headers().get(header::HOST) {
                Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
                // HTTP/1.1 requires Host; without one the request is the tunnel's.
                None => return Ok(()),
            },
        };
        let misdirected = || Error::Misdirected {
            authority: named.clone(),
            tunnel: self.target.authority(),
        };
        let (host, port) = split_authority(&named).ok_or_else(misdirected)?;
        let host = Host::parse(host).map_err(Error::InvalidHost)?;
        if host != self.target.host || port.is_some_and(|p| p != self.target.port) {
            return Err(misdirected());
        }
        Ok(())
    }
}

/// `host[:port]`, `[v6][:port]`; `None` for a port that is not a number.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_like_uris() {
        assert_eq!(split_authority("a.example"), Some(("a.example", None)));
        assert_eq!(
            split_authority("a.example:8443"),
            Some(("a.example", Some(8443)))
        );
        assert_eq!(split_authority("[::1]:443"), Some(("[::1]", Some(443))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        assert_eq!(
            split_authority("bücher.example"),
            Some(("bücher.example", None))
        );
        assert_eq!(split_authority("a.example:x"), None);
    }
}
