//! Name resolution: pinned names first (`--resolve`, like curl's), then DNS
//! (the system's resolv.conf with its search list, or `--dns-server`).
//! Failures are classified so the client gets 502 for a name that does not
//! exist and 504 for a resolver that does not answer. Names arrive canonical
//! (IP literals never get here).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::error::Error;

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
        let name = match egress_policy::Host::parse(name) {
            Ok(egress_policy::Host::Name(name)) => name.as_str().to_owned(),
            _ => return Err(bad()),
        };
        Ok(Pin { name, port, addrs })
    }
}

/// The resolver.
#[derive(Debug)]
pub struct Resolver {
    pins: Vec<Pin>,
    dns: Result<TokioResolver, String>,
    timeout: Duration,
    answers: Answers,
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
        Ok(Resolver {
            pins,
            dns,
            timeout,
            answers: Answers::default(),
        })
    }

    /// Addresses of `name` (canonical, see [`egress_policy::Host`]) for `port`.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, Error> {
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
            .map_err(|reason| Error::DnsFailure(name.to_owned(), reason.clone()))?;
        if let Some(addrs) = self.answers.get(name, Instant::now()) {
            return Ok(addrs);
        }
        // The absolute form skips the search list: a proxied name is never relative.
        let fqdn = format!("{name}.");
        let lookup = tokio::time::timeout(self.timeout, dns.lookup_ip(fqdn.as_str())).await;
        match lookup {
            Err(_) => Err(Error::DnsTimeout(name.to_owned(), self.timeout)),
            Ok(Err(e)) => Err(classify(name, e, self.timeout)),
            Ok(Ok(found)) => {
                let addrs: Vec<IpAddr> = found.iter().collect();
                if addrs.is_empty() {
                    return Err(Error::DnsNoAddress(name.to_owned()));
                }
                let until = found.valid_until();
                self.answers.put(name, &addrs, until, Instant::now());
                Ok(addrs)
            }
        }
    }
}

impl crate::pipeline::Resolve for Resolver {
    /// The first address: the one checked is the one dialed, with no fallback.
    async fn resolve(&self, name: &egress_policy::Domain, port: u16) -> Result<IpAddr, Error> {
        Ok(Resolver::resolve(self, name.as_str(), port).await?[0])
    }
}

/// Addresses found, by name, until their TTL runs out (hickory's own cache
/// answers too, but only after parsing the name, IDNA included, behind a
/// future and a timer: a twentieth of a plain keep-alive request's CPU; this
/// is one look in a map). Only addresses are kept: a failure is asked
/// again, and hickory's cache answers it by its own rules.
#[derive(Debug, Default)]
struct Answers {
    by_name: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

/// Names kept at most; when full, what expired goes, and if nothing did, all.
const MAX_ANSWERS: usize = 4096;

/// How late a validity hickory reports may be.
const TTL_ROUNDING: Duration = Duration::from_secs(1);

impl Answers {
    /// What `name` resolved to, if that is still valid at `now`.
    fn get(&self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        let (addrs, until) = by_name.get(name)?;
        (now < *until).then(|| addrs.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_name.lock().map_or(0, |by_name| by_name.len())
    }

    /// Keeps what `name` resolved to, valid until `until` less a second:
    /// answered from its cache, hickory counts what is left of a TTL in
    /// whole seconds, so its `until` may be up to a second late.
    fn put(&self, name: &str, addrs: &[IpAddr], until: Instant, now: Instant) {
        let Some(until) = until.checked_sub(TTL_ROUNDING).filter(|until| now < *until) else {
            return;
        };
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        if by_name.len() >= MAX_ANSWERS && !by_name.contains_key(name) {
            by_name.retain(|_, (_, until)| now < *until);
            if by_name.len() >= MAX_ANSWERS {
                by_name.clear();
            }
        }
        by_name.insert(name.to_owned(), (addrs.to_vec(), until));
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

fn classify(name: &str, error: NetError, timeout: Duration) -> Error {
    if error.is_nx_domain() {
        Error::DnsNxDomain(name.to_owned())
    } else if error.is_no_records_found() {
        Error::DnsNoAddress(name.to_owned())
    } else if matches!(error, NetError::Timeout) {
        Error::DnsTimeout(name.to_owned(), timeout)
    } else {
        Error::DnsFailure(name.to_owned(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_like_curl() {
        let pin: Pin = "Example.COM:443:127.0.0.1,[::1]".parse().expect("valid");
        assert_eq!(pin.name, "example.com");
        let idn: Pin = "Bücher.example:*:10.0.0.1".parse().expect("valid");
        assert_eq!(idn.name, "xn--bcher-kva.example");
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

    #[test]
    fn answers_are_kept_until_their_ttl_runs_out_and_are_bounded() {
        let answers = Answers::default();
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        answers.put("a.test", &[ip], now + Duration::from_secs(30), now);
        assert_eq!(answers.get("a.test", now), Some(vec![ip]));
        assert_eq!(answers.get("b.test", now), None);
        let almost = now + Duration::from_secs(29);
        assert_eq!(
            answers.get("a.test", almost),
            None,
            "expired a second early"
        );
        answers.put("brief.test", &[ip], now + TTL_ROUNDING, now);
        assert_eq!(
            answers.get("brief.test", now),
            None,
            "a TTL of a second is not kept"
        );
        let later = now + Duration::from_secs(30);
        // Full: what expired makes room first.
        let answers = Answers::default();
        for i in 0..MAX_ANSWERS {
            answers.put(&format!("n{i}.test"), &[ip], later, now);
        }
        let lasting = later + Duration::from_secs(60);
        answers.put("fresh.test", &[ip], lasting, later);
        assert_eq!(answers.len(), 1, "every other answer had expired");
        // Full of answers still valid: all go.
        for i in 1..MAX_ANSWERS {
            answers.put(&format!("m{i}.test"), &[ip], lasting, later);
        }
        assert_eq!(answers.len(), MAX_ANSWERS);
        answers.put("one-more.test", &[ip], lasting, later);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers.get("fresh.test", later), None);
        assert_eq!(answers.get("one-more.test", later), Some(vec![ip]));
    }

    #[tokio::test]
    async fn pinned_names_need_no_dns() {
        let pins = vec![
            "A.test:443:10.0.0.1".parse().expect("valid"),
            "b.test:*:10.0.0.2".parse().expect("valid"),
        ];
        // A server nobody listens on: any real query would fail.
        let resolver =
            Resolver::new(pins, Some("127.0.0.1:9"), Duration::from_millis(200)).expect("resolver");
        assert_eq!(
            resolver.resolve("a.test", 443).await.expect("pinned"),
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
        assert!(
            resolver.resolve("a.test", 80).await.is_err(),
            "pin is for port 443 only"
        );
    }
}
