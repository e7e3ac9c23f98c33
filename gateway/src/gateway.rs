//! The state every connection shares, and how failures are classified.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;
use rustls::ClientConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::LimitArgs;
use crate::decision_log::DecisionLog;
use crate::dns::Resolver;
use crate::metrics::Metrics;
use crate::policy_store::PolicyStore;
use crate::tls::authority::InterceptAuthority;

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

/// What a request handler knows about its connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The listener.
    pub listener: Listener,
}

/// Shared state.
#[derive(Debug)]
pub struct Gateway {
    /// The policy in force.
    pub policy: PolicyStore,
    /// Name resolution.
    pub resolver: Resolver,
    /// The interception sub-CA, when configured.
    pub intercept: Option<InterceptAuthority>,
    /// Upstream TLS client configuration.
    pub upstream_tls: Arc<ClientConfig>,
    /// The decision log.
    pub log: DecisionLog,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Timeouts and limits.
    pub limits: LimitArgs,
    /// `request:SourceVpc`.
    pub cluster_name: String,
    /// Addresses the gateway listens on (requests to them are loops).
    pub own_addresses: Vec<SocketAddr>,
    /// Private ranges allowed on top of the policy's (the `dev` command only).
    pub dev_private_allow: Vec<IpNet>,
    /// Tracks every connection and tunnel for graceful shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Whether `ip:port` is one of the gateway's own listeners.
    pub fn is_own_address(&self, ip: IpAddr, port: u16) -> bool {
        self.own_addresses.iter().any(|own| {
            own.port() == port
                && (own.ip() == ip
                    || ip.is_unspecified()
                    || (own.ip().is_unspecified() && is_local(ip)))
        })
    }

    /// Whether the dev command allows this private address.
    pub fn dev_allows(&self, ip: IpAddr) -> bool {
        self.dev_private_allow.iter().any(|net| net.contains(&ip))
    }
}

/// Whether `ip` belongs to this host: binding to it succeeds only then.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Which side of the proxy a failure is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something unusable.
    Downstream,
    /// Resolution, connection or TLS towards the destination failed.
    Upstream,
    /// The gateway itself cannot serve (no policy, no sub-CA).
    Internal,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// A request that could not be served, with the status the client gets and a
/// reason for the log.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Which side failed.
    pub side: Side,
    /// Short code, e.g. `upstream_tls`.
    pub reason: &'static str,
    /// Status for the client.
    pub status: StatusCode,
    /// Details for the log (never sent to the client).
    pub detail: String,
}

impl Failure {
    /// A failure.
    pub fn new(
        side: Side,
        reason: &'static str,
        status: StatusCode,
        detail: impl Into<String>,
    ) -> Failure {
        Failure {
            side,
            reason,
            status,
            detail: detail.into(),
        }
    }

    /// A failure after the client got its `200` for a CONNECT (its TLS
    /// handshake, minting, the upgrade): there is no status left to send.
    pub fn in_tunnel(side: Side, reason: &'static str, detail: impl Into<String>) -> Failure {
        Failure::new(side, reason, StatusCode::OK, detail)
    }

    /// What the client is told: the class of failure, not the details.
    pub fn client_text(&self) -> &'static str {
        match self.reason {
            "dns_nxdomain" | "dns_no_address" => "The destination name does not resolve.\n",
            "dns_timeout" => "The name server did not answer in time.\n",
            "dns_failure" => "The destination name could not be resolved.\n",
            "upstream_connect_timeout" => {
                "The destination did not accept the connection in time.\n"
            }
            "upstream_connect" => "The destination refused or dropped the connection.\n",
            "upstream_tls" => "The destination's TLS certificate or handshake is not valid.\n",
            "upstream_protocol" => "The destination sent an invalid response.\n",
            "no_policy" => "The gateway has no valid policy loaded.\n",
            "no_intercept_ca" => "TLS interception is on but the gateway has no sub-CA.\n",
            "misdirected" => "The request's host does not match the tunnel's host.\n",
            _ => "The request could not be served.\n",
        }
    }

    /// Counts it.
    pub fn count(&self, metrics: &Metrics) {
        metrics.error(self.side.as_str(), self.reason);
    }

    /// `reason: detail`, for the log line.
    pub fn log_text(&self) -> String {
        format!("{}: {}", self.reason, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality() {
        assert!(is_local("127.0.0.1".parse().expect("ip")));
        assert!(is_local("127.0.0.2".parse().expect("ip")));
        assert!(!is_local("192.0.2.1".parse().expect("ip")));
    }
}
