//! HTTP pieces shared by every request path: body types, the responses the
//! gateway itself produces, and hop-by-hop header handling.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;

/// Every body the gateway sends or forwards.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The answer to a request the policy refuses: no rule internals, not cached,
/// not sniffed, and the connection closes (HTTP/1).
pub fn denied(http1: bool) -> Response<Body> {
    text_response(
        StatusCode::FORBIDDEN,
        "Request denied by the egress policy.\n",
        http1,
    )
}

/// A plain-text answer from the gateway itself.
pub fn text_response(status: StatusCode, text: &str, close: bool) -> Response<Body> {
    let mut response = Response::new(full(text.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Headers that belong to one connection and are never forwarded (RFC 9110
/// section 7.6.1), plus the proxy's own credentials.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether the message asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, and those the `Connection` header names. An
/// upgrade keeps `Connection: upgrade` and `Upgrade`, which must reach the peer.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = is_upgrade(headers);
    // The `Connection` values are taken first (their bytes shared, not
    // copied); the names they list are then removed, looked up as text
    // rather than built as header names.
    let listed: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    let named = listed
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !(upgrade && name.eq_ignore_ascii_case("upgrade")));
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// How far a body has gone: bytes so far, and whether it ended.
#[derive(Debug, Default)]
pub struct Progress {
    bytes: AtomicU64,
    ended: AtomicBool,
    notify: Notify,
}

impl Progress {
    /// Bytes that passed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            // Stores a permit when nobody waits yet, so `ended` cannot miss it.
            self.notify.notify_one();
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Completes once the body has been read to its end.
    pub async fn ended(&self) {
        while !self.ended.load(Ordering::Acquire) {
            self.notify.notified().await;
        }
    }
}

/// Counts the bytes of a body as they pass, and notes its end.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    progress: Arc<Progress>,
}

impl<B: HttpBody> Counted<B> {
    /// Wraps `inner`, reporting to `progress`.
    pub fn new(inner: B, progress: Arc<Progress>) -> Counted<B> {
        if inner.is_end_stream() {
            progress.end();
        }
        Counted { inner, progress }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.progress
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if self.inner.is_end_stream() {
                    self.progress.end();
                }
            }
            Poll::Ready(None) => self.progress.end(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.progress.end();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs `on_done` once, when the body has been sent in full or dropped (the
/// client went away): that is when a request's log line is complete.
pub struct OnDone<B, F: FnOnce()> {
    inner: B,
    on_done: Option<F>,
}

impl<B, F: FnOnce()> std::fmt::Debug for OnDone<B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDone")
            .field("done", &self.on_done.is_none())
            .finish_non_exhaustive()
    }
}

impl<B, F: FnOnce()> OnDone<B, F> {
    /// Wraps `inner`.
    pub fn new(inner: B, on_done: F) -> OnDone<B, F> {
        OnDone {
            inner,
            on_done: Some(on_done),
        }
    }

    fn done(&mut self) {
        if let Some(f) = self.on_done.take() {
            f();
        }
    }
}

impl<B, F: FnOnce()> Drop for OnDone<B, F> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin, F: FnOnce() + Unpin> HttpBody for OnDone<B, F> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().expect("valid"));
        h.insert("x-secret", "1".parse().expect("valid"));
        h.insert("proxy-authorization", "Basic abc".parse().expect("valid"));
        h.insert("keep-alive", "timeout=5".parse().expect("valid"));
        h.insert("upgrade", "h2c".parse().expect("valid"));
        h.insert("x-kept", "1".parse().expect("valid"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn websocket_upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().expect("valid"));
        h.insert("upgrade", "websocket".parse().expect("valid"));
        h.insert("sec-websocket-key", "abc".parse().expect("valid"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.contains_key("sec-websocket-key"));
    }

    #[test]
    fn denial_is_plain_and_closes() {
        let r = denied(true);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["connection"], "close");
        assert!(!denied(false).headers().contains_key("connection"));
    }
}
