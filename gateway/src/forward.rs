//! Absolute-form HTTP (`GET http://host/path`): PreDNS, one resolution, the
//! guard, then [`crate::http_exchange`].

use std::sync::Arc;

use egress_policy::Host;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::Error;
use crate::gateway::{Connection, Gateway};
use crate::http_exchange::{exchange, has_looped, via_token};
use crate::http_util::Body;
use crate::pipeline::{Exchange, Protocol, Target};
use crate::upstream::{Pool, PoolKey};

/// Forwards an absolute-form request.
pub async fn forward(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    pool: Arc<Pool>,
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
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let normalized = match egress_policy::uri::normalize(path_and_query) {
        Ok(normalized) => normalized.into_owned(),
        Err(e) => return gw.refuse(Error::InvalidTarget(e), true),
    };
    let Some(policy) = gw.policy.current() else {
        return gw.refuse(Error::NoPolicy, true);
    };
    let with_query = policy.proxy().settings().log_query_strings;
    let url = target.logged_url(Protocol::Http, path_and_query, with_query);
    let mut exchange = Exchange::new(
        policy,
        gw.cluster_name.clone(),
        &connection.client,
        req.method().as_str(),
        &target,
        Protocol::Http,
        url,
        jiff::Timestamp::now(),
    );
    if has_looped(req.headers(), &via_token(exchange.policy().proxy().name())) {
        let stop = exchange.deny_loop();
        return gw.stopped(exchange, stop, true);
    }
    if let Err(stop) = exchange.pre_dns() {
        return gw.stopped(exchange, stop, true);
    }
    let ip = match exchange.resolve(gw.as_ref(), &gw.guard).await {
        Ok(ip) => ip,
        Err(stop) => return gw.stopped(exchange, stop, true),
    };
    let key = PoolKey {
        ip,
        port: target.port,
        tls_name: None,
    };
    self::exchange(gw, exchange, pool, key, normalized, req).await
}
