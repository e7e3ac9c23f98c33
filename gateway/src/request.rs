//! The words every part of the gateway shares about a request: who asks
//! ([`Client`], on which [`Listener`]), how ([`Protocol`]) and where to
//! ([`Target`]). Plain data, no behaviour beyond their own formatting.

use std::net::SocketAddr;
use std::sync::Arc;

use egress_policy::{Host, SourceIdentity};

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
        format!(
            "{}://{}{path}",
            protocol.as_str(),
            self.host_header(protocol)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_carry_no_credentials_and_queries_only_on_request() {
        let target = Target {
            host: Host::parse("WWW.Example.com").expect("host"),
            port: 8080,
        };
        assert_eq!(
            target.logged_url(Protocol::Http, "/a?token=secret", false),
            "http://www.example.com:8080/a"
        );
        assert_eq!(
            target.logged_url(Protocol::Http, "/a?token=secret", true),
            "http://www.example.com:8080/a?token=secret"
        );
        let v6 = Target {
            host: Host::parse("[2001:db8::1]").expect("host"),
            port: 443,
        };
        assert_eq!(
            v6.logged_url(Protocol::Https, "/", false),
            "https://[2001:db8::1]/"
        );
        assert_eq!(v6.authority(), "[2001:db8::1]:443");
    }
}
