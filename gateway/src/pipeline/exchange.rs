//! One request on its way through the phases: what is known of it, each
//! phase's evaluation, and its decision log record. The steps are the
//! driver's ([`super`]) to order; nothing else calls them.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use egress_policy::credential::CredentialRequest;
use egress_policy::spec::LogFormat;
use egress_policy::{
    CompiledPolicy, Decision, Domain, Host, HttpRequest, HttpResponse, PRIVATE_DESTINATION_RULE,
    Phase, RequestContext, Verdict,
};
use http::HeaderValue;
use ipnet::IpNet;
use jiff::Timestamp;

use crate::error::Error;
use crate::pipeline::decision_log::Record;
use crate::request::{Client, Listener, Protocol, Target};
use crate::tls::client_hello::ClientHello;

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

/// Why a request stops before reaching the destination.
#[derive(Debug)]
pub enum Stop {
    /// The policy (or the private-destination guard) refused it: 403.
    Denied,
    /// It could not be served.
    Failed(Error),
}

/// What requests under one proxy are logged and judged as coming through:
/// the proxy (`proxy_name`), the cluster (`request:SourceVpc`) and each
/// listener (`request:SourceVpce`, `<proxy>-http`). Made once and shared by
/// the requests, not built for each.
#[derive(Debug)]
pub struct ProxyNames {
    /// The proxy's name.
    pub proxy: Arc<str>,
    /// The cluster's name (empty when none is set).
    pub cluster: Arc<str>,
    /// What the gateway adds to `Via` ([`super::via_token`]), when the
    /// proxy's name can be a header value.
    pub via: Option<HeaderValue>,
    http: Arc<str>,
    https: Arc<str>,
}

impl ProxyNames {
    /// The names of `policy`'s proxy in `cluster`.
    pub fn of(policy: &CompiledPolicy, cluster: Arc<str>) -> Arc<ProxyNames> {
        ProxyNames::named(policy.proxy().name(), cluster)
    }

    /// The names of the proxy called `proxy` in `cluster`.
    pub fn named(proxy: &str, cluster: Arc<str>) -> Arc<ProxyNames> {
        let endpoint = |listener: Listener| Arc::from(format!("{proxy}-{}", listener.as_str()));
        Arc::new(ProxyNames {
            proxy: Arc::from(proxy),
            cluster,
            via: HeaderValue::from_str(&super::via_token(proxy)).ok(),
            http: endpoint(Listener::Http),
            https: endpoint(Listener::Https),
        })
    }

    /// Whether these are the names of `policy`'s proxy.
    pub fn are_of(&self, policy: &CompiledPolicy) -> bool {
        *self.proxy == *policy.proxy().name()
    }

    /// The name of `listener` (`request:SourceVpce`).
    pub fn endpoint(&self, listener: Listener) -> &Arc<str> {
        match listener {
            Listener::Http => &self.http,
            Listener::Https => &self.https,
        }
    }
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
    names: Arc<ProxyNames>,
    client: Client,
    target: Target,
    domain: Domain,
    protocol: Protocol,
    arrived: Timestamp,
    started: Instant,
    dest_ip: Option<IpAddr>,
    decision: Decision,
    record: Record,
}

impl Exchange {
    /// A request that arrived at `arrived` (the value of `request:Time` in
    /// every phase), evaluated with `policy` (whose proxy `names` are) from
    /// start to end.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Arc<CompiledPolicy>,
        names: Arc<ProxyNames>,
        client: &Client,
        method: &str,
        target: &Target,
        protocol: Protocol,
        url: String,
        arrived: Timestamp,
    ) -> Exchange {
        let domain = target.host.domain();
        let mut record = Record::new(&names, client, method, domain.shared(), arrived);
        record.dest_port = target.port;
        record.url = url;
        Exchange {
            policy,
            names,
            client: client.clone(),
            target: target.clone(),
            domain,
            protocol,
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

    /// The names of the policy's proxy.
    pub fn names(&self) -> &ProxyNames {
        &self.names
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

    /// How the client asked.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The address the guard passed, once known.
    pub fn dest_ip(&self) -> Option<IpAddr> {
        self.dest_ip
    }

    /// The same request, as it arrived, to be judged again by `policy`.
    pub(super) fn again(&self, policy: Arc<CompiledPolicy>) -> Exchange {
        let names = if self.names.are_of(&policy) {
            self.names.clone()
        } else {
            ProxyNames::of(&policy, self.names.cluster.clone())
        };
        let mut again = Exchange::new(
            policy,
            names,
            &self.client,
            &self.record.http_method,
            &self.target,
            self.protocol,
            self.record.url.clone(),
            self.arrived,
        );
        again.started = self.started;
        again.record.tls_sni = self.record.tls_sni.clone();
        again.record.tls_alpn = self.record.tls_alpn.clone();
        again
    }

    /// The same tunnel with its destination named `name` (the server name
    /// of the ClientHello it carried, for a CONNECT to an address), to be
    /// judged from PreDNS on: its client, arrival and logged URL kept.
    pub(super) fn named(&self, name: Host) -> Exchange {
        let target = Target {
            host: name,
            port: self.target.port,
        };
        let mut named = Exchange::new(
            self.policy.clone(),
            self.names.clone(),
            &self.client,
            &self.record.http_method,
            &target,
            self.protocol,
            self.record.url.clone(),
            self.arrived,
        );
        named.started = self.started;
        named.dest_ip = self.dest_ip;
        named.record.dest_ip = self.dest_ip;
        named.record.tls_sni = self.record.tls_sni.clone();
        named.record.tls_alpn = self.record.tls_alpn.clone();
        named
    }

    /// Records what the tunnel's ClientHello asked for.
    pub(super) fn saw_hello(&mut self, hello: &ClientHello) {
        self.record.tls_sni = Some(hello.server_name.clone().unwrap_or_default());
        self.record.tls_alpn = (!hello.alpn.is_empty()).then(|| hello.alpn.clone());
    }

    /// Refuses the request by one of the gateway's own rules.
    /// This request as credentials see it (`target` as sent, `normalized`
    /// as rules see it).
    pub fn credential_request<'a>(
        &'a self,
        target: &'a str,
        normalized: &'a str,
    ) -> CredentialRequest<'a> {
        CredentialRequest {
            source_ip: self.client.addr.ip(),
            identity: self.client.identity.as_deref(),
            domain: self.domain(),
            target,
            normalized,
        }
    }

    /// Names the credential the request goes with, on its log line.
    pub fn carries_credential(&mut self, name: &str) {
        self.record.credential = Some(name.to_owned());
    }

    pub(super) fn deny_by_gateway(&mut self, phase: Phase, rule: &str) -> Stop {
        self.decision.deny_by(phase, rule);
        Stop::Denied
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
            source_vpc: Some(&*self.names.cluster).filter(|s| !s.is_empty()),
            source_vpce: Some(self.names.endpoint(self.client.listener)),
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
    pub(super) fn pre_dns(&mut self) -> Result<(), Stop> {
        self.evaluate(Phase::PreDns, None, None)
    }

    /// Refuses a request that already went through this proxy (its `Via`
    /// shows it): a loop, reported like a private destination.
    pub(super) fn deny_loop(&mut self) -> Stop {
        self.deny_by_gateway(Phase::PreDns, PRIVATE_DESTINATION_RULE)
    }

    /// Resolves the name once (an IP literal is its own address) and applies
    /// the guard to the address that will be dialed.
    pub(super) async fn resolve(
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
    pub(super) fn check_address(&mut self, ip: IpAddr, guard: &Guard) -> Result<IpAddr, Stop> {
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
    pub(super) fn pre_request(&mut self, request: Option<HttpRequest<'_>>) -> Result<(), Stop> {
        self.evaluate(Phase::PreRequest, request, None)
    }

    /// PostRESPONSE.
    pub(super) fn post_response(
        &mut self,
        request: Option<HttpRequest<'_>>,
        response: HttpResponse<'_>,
    ) -> Result<(), Stop> {
        self.evaluate(Phase::PostResponse, request, Some(response))
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: c}\nspec: {ruleGroups: [{name: g}], defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n";

    fn policy(yaml: &str) -> Arc<CompiledPolicy> {
        Arc::new(egress_policy::compile_documents(yaml, None).expect("valid policy"))
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
