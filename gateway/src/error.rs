//! The gateway's one error type. Every failure is classified once: which side
//! is at fault, the status the client gets, a stable reason code (logs and
//! metrics key on it) and the text the client sees, which never carries the
//! details.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// Which side of the proxy a failure is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something unusable.
    Downstream,
    /// Resolution, connection, TLS or HTTP towards the destination failed.
    Upstream,
    /// The gateway itself cannot serve (no policy, no sub-CA, bad material).
    Internal,
}

impl Side {
    /// `downstream`, `upstream` or `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Everything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the client ---
    /// An origin-form request (`GET /path`) sent to the proxy.
    #[error("not a proxy request (origin-form target)")]
    NotAProxyRequest,
    /// `GET https://...` sent as absolute-form instead of through CONNECT.
    #[error("https:// absolute-form request")]
    HttpsAbsoluteForm,
    /// A CONNECT without `host:port`, or with port 0.
    #[error("CONNECT target {0:?} has no valid host:port")]
    ConnectTarget(String),
    /// A host with no safe canonical form.
    #[error("{0}")]
    InvalidHost(egress_policy::Error),
    /// A request target with no safe normal form.
    #[error("{0}")]
    InvalidTarget(egress_policy::Error),
    /// A request with both Transfer-Encoding and Content-Length (a request
    /// smuggling pattern, RFC 9112 section 6.3).
    #[error("request has both Transfer-Encoding and Content-Length")]
    AmbiguousLength,
    /// A request inside an intercepted tunnel for another host than the tunnel's.
    #[error("request for {authority} inside a tunnel to {tunnel}")]
    Misdirected {
        /// The host the request named.
        authority: String,
        /// The tunnel's `host:port`.
        tunnel: String,
    },
    /// The client's TLS handshake inside a CONNECT tunnel failed (typically:
    /// it does not trust the interception CA).
    #[error("{0}")]
    ClientTls(String),
    /// A relayed tunnel to a port the proxy expects TLS on did not open
    /// with a usable ClientHello (malformed, too large, or none in time).
    #[error("ClientHello: {0}")]
    ClientHello(String),
    /// The connection could not be taken over after a `200` or `101`.
    #[error("{0}")]
    Upgrade(String),

    // --- the destination ---
    /// The name does not exist.
    #[error("{0} does not exist (NXDOMAIN)")]
    DnsNxDomain(String),
    /// The name exists but has no address.
    #[error("{0} has no IPv4 or IPv6 address")]
    DnsNoAddress(String),
    /// The resolver did not answer in time.
    #[error("no answer for {0} within {1:?}")]
    DnsTimeout(String, Duration),
    /// The resolver failed otherwise (SERVFAIL, refused, no configuration).
    #[error("resolving {0} failed: {1}")]
    DnsFailure(String, String),
    /// TCP to the destination failed.
    #[error("connecting to {addr}: {source}")]
    UpstreamConnect {
        /// Address dialed.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TCP to the destination took too long.
    #[error("{addr} did not accept within {after:?}")]
    UpstreamConnectTimeout {
        /// Address dialed.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// TLS with the destination failed (its certificate is never skipped).
    #[error("TLS with {name}: {detail}")]
    UpstreamTls {
        /// The name verified.
        name: String,
        /// Why.
        detail: String,
    },
    /// TLS with the destination took too long.
    #[error("TLS handshake with {name} took longer than {after:?}")]
    UpstreamTlsTimeout {
        /// The name verified.
        name: String,
        /// The limit.
        after: Duration,
    },
    /// The destination broke HTTP.
    #[error("{0}")]
    UpstreamProtocol(String),
    /// The destination took the request but sent no response head in time.
    #[error("no response head within {0:?} after the request was sent")]
    UpstreamResponseTimeout(Duration),

    // --- the gateway ---
    /// A credential the request gets cannot be read (never its value).
    #[error("credential {name}: {why}")]
    Credential {
        /// The credential.
        name: String,
        /// Why, without the value.
        why: String,
    },
    /// No valid policy has been loaded.
    #[error("no valid policy is loaded")]
    NoPolicy,
    /// The policy intercepts but no sub-CA was given.
    #[error(
        "the policy turns interception on but no --intercept-ca-cert/--intercept-ca-key was given"
    )]
    NoInterceptCa,
    /// A leaf certificate could not be minted.
    #[error("minting a leaf certificate: {0}")]
    Mint(Box<Error>),
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: String,
    },
    /// A file holds no usable PEM private key.
    #[error("{path} holds no usable PEM private key ({reason})")]
    BadKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Certificate material cannot be used for its purpose.
    #[error("{0}")]
    Unusable(String),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
}

impl Error {
    /// Which side is at fault.
    pub fn side(&self) -> Side {
        use Error::*;
        match self {
            NotAProxyRequest
            | HttpsAbsoluteForm
            | ConnectTarget(_)
            | InvalidHost(_)
            | InvalidTarget(_)
            | AmbiguousLength
            | Misdirected { .. }
            | ClientTls(_)
            | ClientHello(_)
            | Upgrade(_) => Side::Downstream,
            DnsNxDomain(_)
            | DnsNoAddress(_)
            | DnsTimeout(..)
            | DnsFailure(..)
            | UpstreamConnect { .. }
            | UpstreamConnectTimeout { .. }
            | UpstreamTls { .. }
            | UpstreamTlsTimeout { .. }
            | UpstreamProtocol(_)
            | UpstreamResponseTimeout(_) => Side::Upstream,
            Credential { .. }
            | NoPolicy
            | NoInterceptCa
            | Mint(_)
            | File { .. }
            | NoCertificate { .. }
            | BadKey { .. }
            | Unusable(_)
            | Rustls(_)
            | Certificate(_) => Side::Internal,
        }
    }

    /// The stable reason code of logs and metrics.
    pub fn reason(&self) -> &'static str {
        use Error::*;
        match self {
            NotAProxyRequest => "not_proxy_request",
            HttpsAbsoluteForm => "https_absolute_form",
            ConnectTarget(_) => "bad_connect_target",
            InvalidHost(_) => "invalid_host",
            InvalidTarget(_) => "invalid_target",
            AmbiguousLength => "ambiguous_length",
            Misdirected { .. } => "misdirected",
            ClientTls(_) => "client_tls",
            ClientHello(_) => "client_hello",
            Upgrade(_) => "upgrade",
            DnsNxDomain(_) => "dns_nxdomain",
            DnsNoAddress(_) => "dns_no_address",
            DnsTimeout(..) => "dns_timeout",
            DnsFailure(..) => "dns_failure",
            UpstreamConnect { .. } => "upstream_connect",
            UpstreamConnectTimeout { .. } => "upstream_connect_timeout",
            UpstreamTls { .. } | UpstreamTlsTimeout { .. } => "upstream_tls",
            UpstreamProtocol(_) => "upstream_protocol",
            UpstreamResponseTimeout(_) => "upstream_response_timeout",
            Credential { .. } => "credential",
            NoPolicy => "no_policy",
            NoInterceptCa => "no_intercept_ca",
            Mint(_) => "mint",
            File { .. }
            | NoCertificate { .. }
            | BadKey { .. }
            | Unusable(_)
            | Rustls(_)
            | Certificate(_) => "tls_material",
        }
    }

    /// The status the client gets, when a status can still be sent (not
    /// after the `200` of a CONNECT or a `101`).
    pub fn status(&self) -> StatusCode {
        use Error::*;
        match self {
            NotAProxyRequest | HttpsAbsoluteForm | ConnectTarget(_) | InvalidHost(_)
            | InvalidTarget(_) | AmbiguousLength | ClientTls(_) | ClientHello(_) | Upgrade(_) => {
                StatusCode::BAD_REQUEST
            }
            Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            DnsTimeout(..)
            | UpstreamConnectTimeout { .. }
            | UpstreamTlsTimeout { .. }
            | UpstreamResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            NoPolicy => StatusCode::SERVICE_UNAVAILABLE,
            DnsNxDomain(_)
            | DnsNoAddress(_)
            | DnsFailure(..)
            | UpstreamConnect { .. }
            | UpstreamTls { .. }
            | UpstreamProtocol(_)
            | Credential { .. }
            | NoInterceptCa => StatusCode::BAD_GATEWAY,
            Mint(_)
            | File { .. }
            | NoCertificate { .. }
            | BadKey { .. }
            | Unusable(_)
            | Rustls(_)
            | Certificate(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: the class of failure, not the details.
    pub fn client_text(&self) -> &'static str {
        use Error::*;
        match self {
            NotAProxyRequest => {
                "This is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port.\n"
            }
            HttpsAbsoluteForm => {
                "HTTPS URLs go through CONNECT: set the proxy for https:// URLs, the client will tunnel.\n"
            }
            ConnectTarget(_) => {
                "CONNECT needs a host:port target with a port between 1 and 65535.\n"
            }
            InvalidHost(_) => "The destination host name is not valid.\n",
            InvalidTarget(_) => "The request target cannot be normalised safely.\n",
            AmbiguousLength => {
                "A request may not carry both Transfer-Encoding and Content-Length.\n"
            }
            Misdirected { .. } => "The request's host does not match the tunnel's host.\n",
            DnsNxDomain(_) | DnsNoAddress(_) => "The destination name does not resolve.\n",
            DnsTimeout(..) => "The name server did not answer in time.\n",
            DnsFailure(..) => "The destination name could not be resolved.\n",
            UpstreamConnectTimeout { .. } => {
                "The destination did not accept the connection in time.\n"
            }
            UpstreamConnect { .. } => "The destination refused or dropped the connection.\n",
            UpstreamTls { .. } | UpstreamTlsTimeout { .. } => {
                "The destination's TLS certificate or handshake is not valid.\n"
            }
            UpstreamProtocol(_) => "The destination sent an invalid response.\n",
            UpstreamResponseTimeout(_) => "The destination did not answer in time.\n",
            NoPolicy => "The gateway has no valid policy loaded.\n",
            NoInterceptCa => "TLS interception is on but the gateway has no sub-CA.\n",
            Credential { .. } => {
                "A credential this request gets is not available; the request was not sent.\n"
            }
            _ => "The request could not be served.\n",
        }
    }

    /// `reason: details`, for the log line's `error` field.
    pub fn log_text(&self) -> String {
        format!("{}: {self}", self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_is_consistent() {
        let nx = Error::DnsNxDomain("a.test".into());
        assert_eq!(
            (nx.side(), nx.reason(), nx.status()),
            (Side::Upstream, "dns_nxdomain", StatusCode::BAD_GATEWAY)
        );
        assert_eq!(
            nx.log_text(),
            "dns_nxdomain: a.test does not exist (NXDOMAIN)"
        );
        let slow = Error::UpstreamResponseTimeout(Duration::from_secs(1));
        assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(Error::AmbiguousLength.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Error::NoPolicy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !Error::Mint(Box::new(Error::Unusable("x".into())))
                .client_text()
                .contains('x')
        );
    }
}
