//! Name resolution: pinned names first (`--resolve`, like curl's), then DNS
//! (the system's resolv.conf with its search list, or `--dns-server`).
//! Failures are classified so the client gets 502 for a name that does not
//! exist and 504 for a resolver that does not answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// A pinned name: `NAME:PORT:ADDR[,ADDR...]`, `PORT` may be `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    name: String,
    port: Option<u16>,
    addrs: Vec<IpAddr>,
}

impl std::str::FromStr for Pin {
    type Err = String;

    fn from_str(text: &str) -> Result<Pin, String> {
        let bad = || format!("{text:?} is not NAME:PORT:ADDR[,ADDR...] (PORT may be *)");
        let (name, rest) = text.split_once(':').ok_or_else(bad)?;
        let (port, addrs) = rest.split_once(':').ok_or_else(bad)?;
        let port = match port {
            "*" => None,
            p => Some(p.parse().map_err(|_| bad())?),
        };
        let addrs = addrs
            .split(',')
            .map(|a| {
                a.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad())?;
        if name.is_empty() || addrs.is_empty() {
            return Err(bad());
        }
        Ok(Pin {
            name: egress_policy::domain::normalize(name).into_owned(),
            port,
            addrs,
        })
    }
}

/// Why a name could not be resolved.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist.
    #[error("{0} does not exist (NXDOMAIN)")]
    NxDomain(String),
    /// The name exists but has no address.
    #[error("{0} has no IPv4 or IPv6 address")]
    NoAddress(String),
    /// No answer in time.
    #[error("no answer for {0} within {1:?}")]
    Timeout(String, Duration),
    /// The resolver failed otherwise (SERVFAIL, refused, network error).
    #[error("resolving {0} failed: {1}")]
    Failed(String, String),
}

impl DnsError {
    /// Short reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DnsError::NxDomain(_) => "dns_nxdomain",
            DnsError::NoAddress(_) => "dns_no_address",
            DnsError::Timeout(..) => "dns_timeout",
            DnsError::Failed(..) => "dns_failure",
        }
    }

    /// 504 when the resolver did not answer, 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            DnsError::Timeout(..) => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// The resolver.
#[derive(Debug)]
pub struct Resolver {
    pins: Vec<Pin>,
    dns: Result<TokioResolver, String>,
    timeout: Duration,
}

impl Resolver {
    /// A resolver with pinned names, querying `server` (IP or IP:PORT) or the
    /// system's name servers. A missing system configuration is not fatal: only
    /// names that are not pinned fail, with that reason.
    pub fn new(
        pins: Vec<Pin>,
        server: Option<&str>,
        timeout: Duration,
    ) -> Result<Resolver, String> {
        let dns = match server {
            Some(server) => {
                let addr: SocketAddr = server
                    .parse()
                    .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("--dns-server {server:?} is not an IP or IP:PORT"))?;
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                    addr.ip(),
                    true,
                    connections,
                )]);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                set_options(builder.options_mut(), timeout, ResolveHosts::Never);
                builder.build().map_err(|e| e.to_string())
            }
            None => TokioResolver::builder_tokio()
                .map(|mut builder| {
                    set_options(builder.options_mut(), timeout, ResolveHosts::Always);
                    builder
                })
                .and_then(|builder| builder.build())
                .map_err(|e| format!("no usable DNS configuration (/etc/resolv.conf): {e}")),
        };
        if let Err(reason) = &dns {
            tracing::warn!(%reason, "DNS is unavailable; only names pinned with --resolve resolve");
        }
        Ok(Resolver { pins, dns, timeout })
    }

    /// Addresses of `host` for `port`. IP literals resolve to themselves.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let name = egress_policy::domain::normalize(host);
        if let Some(pin) = self
            .pins
            .iter()
            .find(|p| p.name == name && p.port.is_none_or(|p| p == port))
        {
            return Ok(pin.addrs.clone());
        }
        let dns = self
            .dns
            .as_ref()
            .map_err(|reason| DnsError::Failed(name.to_string(), reason.clone()))?;
        // The absolute form skips the search list: a proxied name is never relative.
        let fqdn = format!("{name}.");
        let lookup = tokio::time::timeout(self.timeout, dns.lookup_ip(fqdn.as_str())).await;
        match lookup {
            Err(_) => Err(DnsError::Timeout(name.to_string(), self.timeout)),
            Ok(Err(e)) => Err(classify(&name, e, self.timeout)),
            Ok(Ok(found)) => {
                let addrs: Vec<IpAddr> = found.iter().collect();
                if addrs.is_empty() {
                    Err(DnsError::NoAddress(name.to_string()))
                } else {
                    Ok(addrs)
                }
            }
        }
    }
}

fn set_options(opts: &mut ResolverOpts, timeout: Duration, hosts: ResolveHosts) {
    // One attempt per server; the overall deadline is enforced around the lookup.
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.use_hosts_file = hosts;
    // A first, AAAA only when there is no A: IPv4 is preferred (the address
    // checked is the one dialed, there is no fallback), and a name answered by
    // /etc/hosts or an A record does not wait on an AAAA query.
    opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
}

fn classify(name: &str, error: NetError, timeout: Duration) -> DnsError {
    if error.is_nx_domain() {
        DnsError::NxDomain(name.to_owned())
    } else if error.is_no_records_found() {
        DnsError::NoAddress(name.to_owned())
    } else if matches!(error, NetError::Timeout) {
        DnsError::Timeout(name.to_owned(), timeout)
    } else {
        DnsError::Failed(name.to_owned(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_like_curl() {
        let pin: Pin = "Example.COM:443:127.0.0.1,[::1]".parse().expect("valid");
        assert_eq!(pin.name, "example.com");
        assert_eq!(pin.port, Some(443));
        assert_eq!(pin.addrs.len(), 2);
        let any: Pin = "a.test:*:10.0.0.1".parse().expect("valid");
        assert_eq!(any.port, None);
        for bad in [
            "a.test",
            "a.test:443",
            "a.test:x:1.2.3.4",
            "a.test:443:nope",
            ":443:1.2.3.4",
        ] {
            assert!(bad.parse::<Pin>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn pinned_names_and_literals_need_no_dns() {
        let pins = vec![
            "a.test:443:10.0.0.1".parse().expect("valid"),
            "b.test:*:10.0.0.2".parse().expect("valid"),
        ];
        // A server nobody listens on: any real query would fail.
        let resolver =
            Resolver::new(pins, Some("127.0.0.1:9"), Duration::from_millis(200)).expect("resolver");
        assert_eq!(
            resolver.resolve("A.test.", 443).await.expect("pinned"),
            ["10.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(
            resolver
                .resolve("b.test", 8080)
                .await
                .expect("pinned")
                .len(),
            1
        );
        assert_eq!(
            resolver.resolve("[::1]", 80).await.expect("literal"),
            ["::1".parse::<IpAddr>().expect("ip")]
        );
        assert!(
            resolver.resolve("a.test", 80).await.is_err(),
            "pin is for port 443 only"
        );
    }
}
