//! CONNECT: PreDNS on the requested name and port, one resolution, the
//! private-destination guard, then either
//!
//! - a relayed tunnel (interception off, or the name bypassed): PreREQUEST
//!   without HTTP keys, connect, `200`, then [`crate::relay`]; or
//! - an intercepted tunnel: `200`, then [`crate::intercept`], where every
//!   request inside is decided on its own against the policy in force.

use std::sync::Arc;
use std::time::Instant;

use egress_policy::Host;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::Error;
use crate::gateway::{Connection, Gateway};
use crate::http_util::{Body, empty};
use crate::pipeline::{Exchange, Protocol, Target};
use crate::upstream::connect_tcp;

/// Handles a CONNECT request.
pub async fn connect(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let target = match connect_target(req.uri()) {
        Ok(target) => target,
        Err(error) => return gw.refuse(error, true),
    };
    let Some(policy) = gw.policy.current() else {
        return gw.refuse(Error::NoPolicy, true);
    };
    let mut exchange = Exchange::new(
        policy,
        gw.cluster_name.clone(),
        &connection.client,
        "CONNECT",
        &target,
        Protocol::Https,
        target.authority(),
        jiff::Timestamp::now(),
    );
    if let Err(stop) = exchange.pre_dns() {
        return gw.stopped(exchange, stop, true);
    }
    let ip = match exchange.resolve(gw.as_ref(), &gw.guard).await {
        Ok(ip) => ip,
        Err(stop) => return gw.stopped(exchange, stop, true),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);

    if exchange.policy().proxy().intercepts(exchange.domain()) {
        if !gw.intercept.is_ready() {
            return gw.stopped(
                exchange,
                crate::pipeline::Stop::Failed(Error::NoInterceptCa),
                true,
            );
        }
        // The CONNECT itself is not logged: each request inside is.
        gw.tasks.spawn(crate::intercept::serve(
            gw.clone(),
            connection,
            target,
            ip,
            on_upgrade,
        ));
        return Response::new(empty());
    }

    if let Err(stop) = exchange.pre_request(None) {
        return gw.stopped(exchange, stop, true);
    }
    let started = Instant::now();
    let upstream = match connect_tcp(&gw, ip, target.port).await {
        Ok(stream) => stream,
        Err(error) => return gw.stopped(exchange, crate::pipeline::Stop::Failed(error), true),
    };
    gw.metrics
        .upstream_connect_seconds
        .observe(started.elapsed().as_secs_f64());
    gw.tasks.spawn(crate::relay::tunnel(
        gw.clone(),
        connection,
        exchange,
        on_upgrade,
        upstream,
    ));
    Response::new(empty())
}

/// The canonical `host:port` of a CONNECT request.
fn connect_target(uri: &http::Uri) -> Result<Target, Error> {
    let Some(authority) = uri.authority() else {
        return Err(Error::ConnectTarget(uri.to_string()));
    };
    let port = match authority.port_u16() {
        Some(port) if port != 0 => port,
        _ => return Err(Error::ConnectTarget(authority.to_string())),
    };
    let host = Host::parse(authority.host()).map_err(Error::InvalidHost)?;
    Ok(Target { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_are_canonical() {
        let target = |s: &str| connect_target(&s.parse().expect("uri"));
        assert_eq!(
            target("WWW.Example.COM.:443").expect("valid").authority(),
            "www.example.com:443"
        );
        assert_eq!(
            target("2130706433:8443").expect("valid").authority(),
            "127.0.0.1:8443"
        );
        assert_eq!(
            target("[::ffff:7f00:1]:443").expect("valid").authority(),
            "127.0.0.1:443"
        );
        assert!(matches!(
            target("a.example:0"),
            Err(Error::ConnectTarget(_))
        ));
        assert!(matches!(target("a.example"), Err(Error::ConnectTarget(_))));
        assert!(matches!(
            target("a..example:443"),
            Err(Error::InvalidHost(_))
        ));
    }
}
