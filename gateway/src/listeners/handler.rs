//! The entry point of every request on a client-facing listener: CONNECT goes
//! to [`crate::listeners::connect`], absolute-form HTTP to [`crate::listeners::forward`], anything
//! else is not a proxy request.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::error::Error;
use crate::framing::Heads;
use crate::gateway::{Connection, Gateway};
use crate::http_util::Body;

/// Handles one request of a client connection.
pub async fn handle(
    gw: Arc<Gateway>,
    connection: Arc<Connection>,
    heads: Heads,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if heads.next_is_ambiguous() {
        return Ok(gw.refuse(Error::AmbiguousLength, true));
    }
    if req.method() == Method::CONNECT {
        return Ok(crate::listeners::connect::connect(gw, connection, req).await);
    }
    let mut response = match req.uri().scheme_str() {
        Some("http") if req.uri().authority().is_some() => {
            crate::listeners::forward::forward(gw.clone(), connection, req).await
        }
        Some("https") => gw.refuse(Error::HttpsAbsoluteForm, true),
        _ => gw.refuse(Error::NotAProxyRequest, true),
    };
    gw.close_if_draining(&mut response);
    Ok(response)
}
