//! The words every part of the gateway shares about a request: who asks
//! ([`Client`], on which [`Listener`]), how ([`Protocol`]) and where to
//! ([`Target`]). Plain data, no behaviour beyond their own formatting.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use egress_policy::{Host, SourceIdentity};
use http::Uri;

/// The target a request is judged, logged and sent by: its path and query
/// as the client wrote them, with the `/` that `http://host?query` leaves
/// out (RFC 9112 section 3.2.1: an empty path is `/`); `*` stays `*`.
pub fn request_target(uri: &Uri) -> Cow<'_, str> {
    match uri.path_and_query().map(|pq| pq.as_str()) {
        None => Cow::Borrowed("/"),
        Some(query) if query.starts_with('?') => Cow::Owned(format!("/{query}")),
        Some(target) => Cow::Borrowed(target),
    }
}

/// Which client-facing listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Plain HTTP.
    Http,
    /// TLS to the proxy.
    Https,
}

impl Listener {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// Who is asking: looked up once per client connection.
#[derive(Clone, Debug)]
pub struct Client {
    /// Address and port.
    pub addr: SocketAddr,
    /// The listener it came in on.
    pub listener: Listener,
    /// The client pod, when the gateway knows it.
    pub identity: Option<Arc<SourceIdentity>>,
}

#[cfg(test)]
impl Client {
    /// A client no pod is known for, on the HTTP listener (unit tests).
    pub fn unidentified(addr: &str) -> Client {
        Client {
            addr: addr.parse().expect("a socket address"),
            listener: Listener::Http,
            identity: None,
        }
    }
}

/// `request:Protocol`: how the client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Absolute-form HTTP.
    Http,
    /// CONNECT (relayed or intercepted).
    Https,
}

impl Protocol {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http => 80,
            Protocol::Https => 443,
        }
    }
}

/// Where a request goes, canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Name or address.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl Target {
    /// `host:port` (IPv6 in brackets).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `host`, or `host:port` when the port is not the scheme's default: the
    /// `Host` header sent upstream.
    pub fn host_header(&self, protocol: Protocol) -> String {
        if self.port == protocol.default_port() {
            self.host.to_string()
        } else {
            self.authority()
        }
    }

    /// The URL the decision log shows: no userinfo ever, the query only when
    /// `with_query`.
    pub fn logged_url(&self, protocol: Protocol, path_and_query: &str, with_query: bool) -> String {
        let path = if with_query {
            path_and_query
        } else {
            path_and_query.split('?').next().unwrap_or("/")
        };
        // Sized once: `https://`, the host (an IPv6 literal in brackets at
        // most 47 bytes), `:` and a port.
        let host_len = match &self.host {
            Host::Name(name) => name.as_str().len(),
            Host::Ip(_) => 47,
        };
        let mut url = String::with_capacity(8 + host_len + 6 + path.len());
        let scheme = protocol.as_str();
        let _ = if self.port == protocol.default_port() {
            write!(url, "{scheme}://{}{path}", self.host)
        } else {
            write!(url, "{scheme}://{}:{}{path}", self.host, self.port)
        };
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: Host::parse(host).expect("host"),
            port,
        }
    }

    #[test]
    fn a_target_without_a_path_has_the_path_slash() {
        for (uri, target) in [
            ("http://a.test?q=1", "/?q=1"),
            ("http://a.test", "/"),
            ("http://a.test#f", "/"),
            ("http://a.test/p?q", "/p?q"),
            ("/p", "/p"),
            ("*", "*"),
        ] {
            let uri: Uri = uri.parse().expect("a URI");
            assert_eq!(request_target(&uri), target, "{uri}");
        }
    }

    #[test]
    fn logged_urls_carry_no_credentials_and_queries_only_on_request() {
        let named = target("WWW.Example.com", 8080);
        let v6 = target("[2001:db8::1]", 443);
        for (url, expected) in [
            (
                named.logged_url(Protocol::Http, "/a?token=secret", false),
                "http://www.example.com:8080/a",
            ),
            (
                named.logged_url(Protocol::Http, "/a?token=secret", true),
                "http://www.example.com:8080/a?token=secret",
            ),
            (
                v6.logged_url(Protocol::Https, "/", false),
                "https://[2001:db8::1]/",
            ),
        ] {
            assert_eq!(url, expected);
        }
        assert_eq!(v6.authority(), "[2001:db8::1]:443");
    }
}
