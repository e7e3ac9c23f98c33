//! CONNECT: its target made canonical, [`pipeline::connect`] decides, then
//! either
//!
//! - a relayed tunnel (interception off, or the name bypassed): connect,
//!   `200`, then [`crate::relay`]; or
//! - an intercepted tunnel: `200`, then [`crate::listeners::intercept`],
//!   where every request inside is decided on its own against the policy in
//!   force.

use std::sync::Arc;
use std::time::Instant;

use egress_policy::Host;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::Error;
use crate::gateway::{Connection, Gateway};
use crate::http_util::{Body, empty};
use crate::pipeline::{self, Stop, Stopped, Tunnel};
use crate::request::{Protocol, Target};

/// Handles a CONNECT request: what [`pipeline::connect`] decides, then the
/// tunnel's I/O.
pub async fn connect(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let target = match connect_target(req.uri()) {
        Ok(target) => target,
        Err(error) => return gw.refuse(error, true),
    };
    let exchange = match gw.arrived(
        &connection.client,
        "CONNECT",
        &target,
        Protocol::Https,
        None,
    ) {
        Ok(exchange) => exchange,
        Err(error) => return gw.refuse(error, true),
    };
    let tunnel = match pipeline::connect(exchange, gw.as_ref(), &gw.guard).await {
        Ok(tunnel) => tunnel,
        Err(stopped) => return gw.stopped(stopped, true),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    match tunnel {
        Tunnel::Intercept(exchange, ip) => {
            if !gw.intercept.is_ready() {
                return gw.stopped(Stopped(exchange, Stop::Failed(Error::NoInterceptCa)), true);
            }
            gw.tasks.spawn(crate::listeners::intercept::serve(
                gw.clone(),
                connection,
                target,
                ip,
                on_upgrade,
            ));
        }
        Tunnel::Relay(exchange, ip) => {
            let started = Instant::now();
            let upstream = match gw.upstream.connect_tcp(ip, target.port).await {
                Ok(stream) => stream,
                Err(error) => return gw.stopped(Stopped(exchange, Stop::Failed(error)), true),
            };
            gw.metrics
                .upstream_connect_seconds
                .observe(started.elapsed().as_secs_f64());
            gw.tasks.spawn(crate::listeners::tunnel::tunnel(
                gw.clone(),
                connection,
                exchange,
                on_upgrade,
                upstream,
            ));
        }
    }
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
