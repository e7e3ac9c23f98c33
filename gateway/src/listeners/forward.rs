//! Absolute-form HTTP (`GET http://host/path`): its target made canonical,
//! [`pipeline::request`] decides (the name resolved once), then
//! [`crate::listeners::exchange`] sends it.

use std::sync::Arc;

use egress_policy::{Host, HttpRequest};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::Error;
use crate::gateway::{Connection, Gateway};
use crate::http_util::Body;
use crate::listeners::exchange::exchange;
use crate::pipeline::{self, Destination};
use crate::request::{Protocol, Target, request_target};
use crate::upstream::PoolKey;

/// Forwards an absolute-form request.
pub async fn forward(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(authority) = req.uri().authority() else {
        return gw.refuse(Error::NotAProxyRequest, true);
    };
    let host = match Host::parse(authority.host()) {
        Ok(host) => host,
        Err(e) => return gw.refuse(Error::InvalidHost(e), true),
    };
    let target = Target {
        host,
        port: authority.port_u16().unwrap_or(80),
    };
    let path_and_query = request_target(req.uri());
    let normalized = match egress_policy::uri::normalize(&path_and_query) {
        Ok(normalized) => normalized.into_owned(),
        Err(e) => return gw.refuse(Error::InvalidTarget(e), true),
    };
    let method = req.method().as_str();
    let exchange = match gw.arrived(
        &connection.client,
        method,
        &target,
        Protocol::Http,
        Some(&path_and_query),
    ) {
        Ok(exchange) => exchange,
        Err(error) => return gw.refuse(error, true),
    };
    let http = HttpRequest {
        method: req.method().as_str(),
        uri: &normalized,
        headers: req.headers(),
    };
    let cleared =
        match pipeline::request(exchange, http, Destination::Resolve, gw.as_ref(), &gw.guard).await
        {
            Ok(cleared) => cleared,
            Err(stopped) => return gw.stopped(stopped, true),
        };
    let key = PoolKey {
        client: connection.owner.clone(),
        ip: cleared.ip,
        port: target.port,
        tls_name: None,
    };
    self::exchange(gw, cleared.exchange, key, normalized, req).await
}
