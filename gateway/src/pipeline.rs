//! One request's decision sequence, the same for plain HTTP, relayed tunnels,
//! requests inside intercepted tunnels and `policy eval`:
//!
//! PreDNS -> resolve once -> private-destination guard -> PreREQUEST -> (the
//! caller connects to exactly the address that was checked) -> PostRESPONSE,
//! then one decision log record.
//!
//! The I/O is passed in (a [`Resolve`] for names; dialing and HTTP stay with
//! the caller), so the whole sequence runs without sockets in `policy eval`
//! and in tests. Hosts and targets arrive canonical ([`egress_policy::Host`],
//! [`egress_policy::uri::normalize`]): parsing a request is the caller's job,
//! deciding on it is this module's.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use egress_policy::{
    CompiledPolicy, Decision, Domain, Host, HttpRequest, HttpResponse, PRIVATE_DESTINATION_RULE,
    Phase, RequestContext, SourceIdentity, Verdict,
};
use http::HeaderMap;
use ipnet::IpNet;
use jiff::Timestamp;

use crate::decision_log::Record;
use crate::error::Error;
use egress_policy::spec::LogFormat;

/// Names to one address: the one checked is the one dialed.
pub trait Resolve: Sync {
    /// The address to dial for `name` (canonical) and `port`.
    fn resolve(
        &self,
        name: &Domain,
        port: u16,
    ) -> impl Future<Output = Result<IpAddr, Error>> + Send;
}

/// A resolver that answers every name with one address (`policy eval`).
#[derive(Clone, Copy, Debug)]
pub struct FixedAddress(pub IpAddr);

impl Resolve for FixedAddress {
    async fn resolve(&self, _: &Domain, _: u16) -> Result<IpAddr, Error> {
        Ok(self.0)
    }
}

/// What the private-destination guard knows beyond the policy: the gateway's
/// own listeners (always refused: a request to them is a loop) and ranges
/// only the `dev` command allows.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// The gateway's listeners.
    pub own_addresses: Vec<SocketAddr>,
    /// Private ranges allowed on top of the policy's.
    pub extra_allowed: Vec<IpNet>,
}

impl Guard {
    /// Whether `ip:port` is refused before PreREQUEST.
    pub fn refuses(&self, policy: &CompiledPolicy, ip: IpAddr, port: u16) -> bool {
        let private = policy.proxy().refuses_destination(ip)
            && !self.extra_allowed.iter().any(|net| net.contains(&ip));
        private || self.is_own_address(ip, port)
    }

    fn is_own_address(&self, ip: IpAddr, port: u16) -> bool {
        self.own_addresses.iter().any(|own| {
            own.port() == port
                && (own.ip() == ip
                    || ip.is_unspecified()
                    || (own.ip().is_unspecified() && is_local(ip)))
        })
    }
}

/// Whether `ip` belongs to this host: binding to it succeeds only then.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
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

    fn default_port(self) -> u16 {
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

/// Why a request stops before reaching the destination.
#[derive(Debug)]
pub enum Stop {
    /// The policy (or the private-destination guard) refused it: 403.
    Denied,
    /// It could not be served.
    Failed(Error),
}

/// A decided request, ready for the decision log.
#[derive(Debug)]
pub struct Finished {
    /// The log record.
    pub record: Record,
    /// The decision.
    pub decision: Decision,
    /// Whether the proxy's logging settings select it.
    pub logged: bool,
    /// The shape of its line.
    pub log_format: LogFormat,
}

/// One request on its way through the phases.
#[derive(Clone, Debug)]
pub struct Exchange {
    policy: Arc<CompiledPolicy>,
    cluster: Arc<str>,
    client: Client,
    target: Target,
    domain: Domain,
    protocol: Protocol,
    vpce: String,
    arrived: Timestamp,
    started: Instant,
    dest_ip: Option<IpAddr>,
    decision: Decision,
    record: Record,
}

impl Exchange {
    /// A request that arrived at `arrived` (the value of `request:Time` in
    /// every phase), evaluated with `policy` from start to end.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Arc<CompiledPolicy>,
        cluster: Arc<str>,
        client: &Client,
        method: &str,
        target: &Target,
        protocol: Protocol,
        url: String,
        arrived: Timestamp,
    ) -> Exchange {
        let proxy_name = policy.proxy().name();
        let vpce = format!("{proxy_name}-{}", client.listener.as_str());
        let domain = target.host.domain();
        let mut record = Record::new(proxy_name, &cluster, &vpce, client, method, arrived);
        record.dest_domain = domain.to_string();
        record.dest_port = target.port;
        record.url = url;
        Exchange {
            policy,
            cluster,
            client: client.clone(),
            target: target.clone(),
            domain,
            protocol,
            vpce,
            arrived,
            started: Instant::now(),
            dest_ip: None,
            decision: Decision::default(),
            record,
        }
    }

    /// The policy this request is evaluated with.
    pub fn policy(&self) -> &Arc<CompiledPolicy> {
        &self.policy
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The destination.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The destination as `request:DestinationDomain` sees it.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// When the gateway received the request head.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn context<'a>(
        &'a self,
        request: Option<HttpRequest<'a>>,
        response: Option<HttpResponse<'a>>,
    ) -> RequestContext<'a> {
        RequestContext {
            time: Some(self.arrived),
            source_ip: Some(self.client.addr.ip()),
            source_port: Some(self.client.addr.port()),
            source_vpc: Some(&*self.cluster).filter(|s| !s.is_empty()),
            source_vpce: Some(self.vpce.as_str()),
            source: self.client.identity.as_deref(),
            protocol: Some(self.protocol.as_str()),
            destination_domain: Some(self.domain.clone()),
            destination_port: Some(self.target.port),
            destination_ip: self.dest_ip,
            request,
            response,
        }
    }

    fn evaluate(
        &mut self,
        phase: Phase,
        request: Option<HttpRequest<'_>>,
        response: Option<HttpResponse<'_>>,
    ) -> Result<(), Stop> {
        let mut decision = std::mem::take(&mut self.decision);
        let verdict = {
            let ctx = self.context(request, response);
            self.policy.evaluate_phase(phase, &ctx, &mut decision)
        };
        self.decision = decision;
        match verdict {
            Verdict::Continue => Ok(()),
            Verdict::Deny => Err(Stop::Denied),
        }
    }

    /// PreDNS.
    pub fn pre_dns(&mut self) -> Result<(), Stop> {
        self.evaluate(Phase::PreDns, None, None)
    }

    /// Refuses a request that already went through this proxy (its `Via`
    /// shows it): a loop, reported like a private destination.
    pub fn deny_loop(&mut self) -> Stop {
        self.decision
            .deny_by(Phase::PreDns, PRIVATE_DESTINATION_RULE);
        Stop::Denied
    }

    /// Resolves the name once (an IP literal is its own address) and applies
    /// the guard to the address that will be dialed.
    pub async fn resolve(
        &mut self,
        resolver: &impl Resolve,
        guard: &Guard,
    ) -> Result<IpAddr, Stop> {
        let ip = match self.target.host.ip() {
            Some(ip) => ip,
            None => resolver
                .resolve(&self.domain, self.target.port)
                .await
                .map_err(Stop::Failed)?,
        };
        self.check_address(ip, guard)
    }

    /// The private-destination guard on an address already known (the
    /// tunnel's, for a request inside it).
    pub fn check_address(&mut self, ip: IpAddr, guard: &Guard) -> Result<IpAddr, Stop> {
        let ip = ip.to_canonical();
        self.dest_ip = Some(ip);
        self.record.dest_ip = Some(ip);
        if guard.refuses(&self.policy, ip, self.target.port) {
            self.decision
                .deny_by(Phase::PreRequest, PRIVATE_DESTINATION_RULE);
            return Err(Stop::Denied);
        }
        Ok(ip)
    }

    /// PreREQUEST, with the HTTP request when it is visible (its target
    /// normalised).
    pub fn pre_request(&mut self, request: Option<HttpRequest<'_>>) -> Result<(), Stop> {
        self.evaluate(Phase::PreRequest, request, None)
    }

    /// PostRESPONSE.
    pub fn post_response(
        &mut self,
        request: Option<HttpRequest<'_>>,
        response: HttpResponse<'_>,
    ) -> Result<(), Stop> {
        self.evaluate(Phase::PostResponse, request, Some(response))
    }

    /// The same request judged by `policy`: a relayed tunnel (`http` is
    /// `None`), or an upgraded connection with its request and the response
    /// that upgraded it, which go through PreREQUEST and PostRESPONSE again.
    /// `Some` with the denying decision when it would now be refused, `None`
    /// when it may stay open.
    pub fn reevaluate(
        &self,
        policy: Arc<CompiledPolicy>,
        guard: &Guard,
        http: Option<(HttpRequest<'_>, HttpResponse<'_>)>,
    ) -> Option<Exchange> {
        let mut again = Exchange::new(
            policy,
            self.cluster.clone(),
            &self.client,
            &self.record.http_method,
            &self.target,
            self.protocol,
            self.record.url.clone(),
            self.arrived,
        );
        again.started = self.started;
        let ip = self.dest_ip?;
        let (request, response) = http.unzip();
        let denied = again.pre_dns().is_err()
            || again.check_address(ip, guard).is_err()
            || again.pre_request(request).is_err()
            || response.is_some_and(|response| again.post_response(request, response).is_err());
        denied.then_some(again)
    }

    /// The record of the finished request: `status` is what the client got
    /// (-1 for none), sizes are body or tunnel bytes each way.
    pub fn finish(
        self,
        status: i32,
        request_size: u64,
        response_size: u64,
        error: Option<&Error>,
    ) -> Finished {
        let mut record = self.record;
        record.set_decision(&self.decision);
        record.http_status_code = status;
        record.request_size = request_size;
        record.response_size = response_size;
        record.error = error.map(Error::log_text);
        Finished {
            logged: self.policy.proxy().logs(&self.decision),
            log_format: self.policy.proxy().settings().log_format,
            record,
            decision: self.decision,
        }
    }
}

/// A request described up front, as `policy eval` takes it.
#[derive(Debug)]
pub struct Described<'a> {
    /// The client.
    pub client: Client,
    /// `http://...` (absolute-form) or `https://...` (CONNECT, intercepted
    /// when the policy says so).
    pub url: &'a str,
    /// The method of the HTTP request.
    pub method: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The upstream response, when PostRESPONSE should run.
    pub response: Option<HttpResponse<'a>>,
    /// Arrival time.
    pub arrived: Timestamp,
}

/// Decides a described request exactly as the gateway would, with
/// `resolver` standing in for DNS: the same steps in the same order, and the
/// same log record (`-1` for a relayed tunnel, `403` for a denial).
pub async fn evaluate(
    policy: Arc<CompiledPolicy>,
    cluster: Arc<str>,
    request: &Described<'_>,
    resolver: &impl Resolve,
    guard: &Guard,
) -> Result<Finished, Error> {
    let uri: http::Uri = request.url.parse().map_err(|e| {
        Error::InvalidTarget(egress_policy::Error::InvalidTarget {
            target: request.url.to_owned(),
            reason: format!("not a URL: {e}"),
        })
    })?;
    let protocol = match uri.scheme_str() {
        Some("http") => Protocol::Http,
        Some("https") => Protocol::Https,
        _ => return Err(Error::NotAProxyRequest),
    };
    let authority = uri.authority().ok_or(Error::NotAProxyRequest)?;
    let target = Target {
        host: Host::parse(authority.host()).map_err(Error::InvalidHost)?,
        port: authority.port_u16().unwrap_or(protocol.default_port()),
    };
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let normalized = egress_policy::uri::normalize(path_and_query).map_err(Error::InvalidTarget)?;
    let with_query = policy.proxy().settings().log_query_strings;
    let http = HttpRequest {
        method: request.method,
        uri: &normalized,
        headers: request.headers,
    };
    let new = |method: &str, url: String| {
        Exchange::new(
            policy.clone(),
            cluster.clone(),
            &request.client,
            method,
            &target,
            protocol,
            url,
            request.arrived,
        )
    };
    let stopped = |exchange: Exchange, stop: Stop| match stop {
        Stop::Denied => exchange.finish(403, 0, 0, None),
        Stop::Failed(error) => {
            let status = i32::from(error.status().as_u16());
            exchange.finish(status, 0, 0, Some(&error))
        }
    };
    let url = target.logged_url(protocol, path_and_query, with_query);
    let mut outer = match protocol {
        Protocol::Http => new(request.method, url.clone()),
        Protocol::Https => new("CONNECT", target.authority()),
    };
    if let Err(stop) = outer.pre_dns() {
        return Ok(stopped(outer, stop));
    }
    let ip = match outer.resolve(resolver, guard).await {
        Ok(ip) => ip,
        Err(stop) => return Ok(stopped(outer, stop)),
    };
    let mut exchange = if protocol == Protocol::Https {
        if !policy.proxy().intercepts(outer.domain()) {
            return Ok(match outer.pre_request(None) {
                Ok(()) => outer.finish(-1, 0, 0, None),
                Err(stop) => stopped(outer, stop),
            });
        }
        // Inside an intercepted tunnel every request runs every phase again.
        let mut inner = new(request.method, url);
        if let Err(stop) = inner.pre_dns() {
            return Ok(stopped(inner, stop));
        }
        if let Err(stop) = inner.check_address(ip, guard) {
            return Ok(stopped(inner, stop));
        }
        inner
    } else {
        outer
    };
    if let Err(stop) = exchange.pre_request(Some(http)) {
        return Ok(stopped(exchange, stop));
    }
    let Some(response) = request.response else {
        return Ok(exchange.finish(-1, 0, 0, None));
    };
    if let Err(stop) = exchange.post_response(Some(http), response) {
        return Ok(stopped(exchange, stop));
    }
    Ok(exchange.finish(i32::from(response.status), 0, 0, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Arc<CompiledPolicy> {
        Arc::new(egress_policy::compile_documents(yaml, None).expect("valid policy"))
    }

    const CONFIG: &str = "---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: c}\nspec: {ruleGroups: [{name: g}], defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n";

    fn client() -> Client {
        Client {
            addr: "10.0.0.10:40000".parse().expect("addr"),
            listener: Listener::Http,
            identity: None,
        }
    }

    fn described<'a>(url: &'a str, headers: &'a HeaderMap, arrived: Timestamp) -> Described<'a> {
        Described {
            client: client(),
            url,
            method: "GET",
            headers,
            response: Some(HttpResponse {
                status: 200,
                headers,
            }),
            arrived,
        }
    }

    #[tokio::test]
    async fn request_time_is_the_arrival_in_every_phase() {
        // A rule that holds only for requests that arrived before 2001: with
        // "now" read per phase, PostRESPONSE would see today's date.
        let policy = policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec:\n  rules:\n    postResponse:\n      - name: old-requests\n        action: Deny\n        conditions: [{{key: \"request:Time\", operator: DateLessThan, values: [\"2001-01-01T00:00:00Z\"]}}]\n{CONFIG}"
        ));
        let headers = HeaderMap::new();
        let arrived: Timestamp = "2000-06-01T12:00:00Z".parse().expect("time");
        let finished = evaluate(
            policy,
            Arc::from("c"),
            &described("http://a.example/", &headers, arrived),
            &FixedAddress("93.184.215.14".parse().expect("ip")),
            &Guard::default(),
        )
        .await
        .expect("evaluates");
        assert_eq!(&*finished.decision.final_rule_name, "old-requests");
        assert_eq!(finished.record.event_timestamp, "2000-06-01T12:00:00.000Z");
    }

    #[tokio::test]
    async fn a_relayed_tunnel_is_revoked_only_by_a_policy_that_denies_it() {
        let allow = policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec: {{}}\n{CONFIG}"
        ));
        let deny = policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec:\n  rules:\n    preDNS:\n      - name: no-a\n        action: Deny\n        conditions: [{{key: \"request:DestinationDomain\", operator: StringEquals, values: [a.example]}}]\n{CONFIG}"
        ));
        let target = Target {
            host: Host::parse("A.Example.").expect("host"),
            port: 443,
        };
        let mut tunnel = Exchange::new(
            allow.clone(),
            Arc::from(""),
            &client(),
            "CONNECT",
            &target,
            Protocol::Https,
            target.authority(),
            Timestamp::now(),
        );
        tunnel.pre_dns().expect("allowed");
        let resolver = FixedAddress("93.184.215.14".parse().expect("ip"));
        tunnel
            .resolve(&resolver, &Guard::default())
            .await
            .expect("resolves");
        tunnel.pre_request(None).expect("allowed");
        assert!(tunnel.reevaluate(allow, &Guard::default(), None).is_none());
        let revoked = tunnel
            .reevaluate(deny, &Guard::default(), None)
            .expect("the new policy denies it");
        let finished = revoked.finish(-1, 10, 20, None);
        assert_eq!(&*finished.decision.final_rule_name, "no-a");
        assert_eq!(finished.record.url, "a.example:443");
        assert_eq!(finished.record.request_size, 10);
    }

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

    #[test]
    fn the_guard_refuses_own_listeners_and_honours_extra_ranges() {
        let policy = policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec: {{}}\n{CONFIG}"
        ));
        let guard = Guard {
            own_addresses: vec!["0.0.0.0:1080".parse().expect("addr")],
            extra_allowed: vec!["127.0.0.1/32".parse().expect("net")],
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(
            guard.refuses(&policy, ip("127.0.0.1"), 1080),
            "own listener"
        );
        assert!(
            !guard.refuses(&policy, ip("127.0.0.1"), 8080),
            "dev allowance"
        );
        assert!(guard.refuses(&policy, ip("10.1.2.3"), 80), "private");
        assert!(!guard.refuses(&policy, ip("93.184.215.14"), 80));
    }
}
