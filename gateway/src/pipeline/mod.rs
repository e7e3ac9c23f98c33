//! The decision sequence, owned here and nowhere else, the same for plain
//! HTTP, relayed tunnels, requests inside intercepted tunnels and `policy
//! eval`:
//!
//! PreDNS -> resolve once -> private-destination guard -> PreREQUEST -> (the
//! caller connects to exactly the address that was checked) -> PostRESPONSE,
//! then one decision log record.
//!
//! Each function takes a request as far as it can go without the network and
//! says what it became: stopped ([`Stopped`]: denied or failed, to answer and
//! log), a tunnel to relay or to intercept ([`Tunnel`]), or a request cleared
//! to go to one address ([`Cleared`]). The I/O is passed in (a [`Resolve`] for
//! names; dialing and HTTP stay with the caller), so the whole sequence runs
//! without sockets in `policy eval` and in tests. Hosts and targets arrive
//! canonical ([`egress_policy::Host`], [`egress_policy::uri::normalize`]):
//! parsing a request is the caller's job, deciding on it is this module's.

pub mod decision_log;
mod exchange;

use std::net::IpAddr;
use std::sync::Arc;

use egress_policy::spec::TunnelAnswer;
use egress_policy::{CompiledPolicy, Host, HttpRequest, HttpResponse, Phase};
use http::HeaderMap;
use jiff::Timestamp;

pub use self::exchange::{Exchange, Finished, FixedAddress, Guard, ProxyNames, Resolve, Stop};
use crate::error::Error;
use crate::request::{Client, Protocol, Target};
pub use crate::tls::client_hello::{ClientHello, FirstFlight};

/// A request that stops before reaching the destination: denied (403) or
/// failed; the caller answers and logs it.
#[derive(Debug)]
pub struct Stopped(pub Exchange, pub Stop);

/// What a CONNECT becomes.
#[derive(Debug)]
pub enum Tunnel {
    /// Relayed as it is, to `ip`: PreREQUEST passed without HTTP keys; the
    /// tunnel is logged when it closes.
    Relay(Exchange, IpAddr),
    /// Intercepted, to `ip`: each request inside goes through [`request`]
    /// with [`Destination::Known`]. The CONNECT's exchange is logged only
    /// when the tunnel cannot be set up.
    Intercept(Exchange, IpAddr),
}

/// An HTTP request cleared to go to `ip`: PreREQUEST passed;
/// [`response`] judges what comes back.
#[derive(Debug)]
pub struct Cleared {
    /// The request, decided so far.
    pub exchange: Exchange,
    /// The address to dial: the one the guard passed.
    pub ip: IpAddr,
}

/// Where an HTTP request's destination address comes from.
#[derive(Clone, Copy, Debug)]
pub enum Destination {
    /// The name is resolved (absolute-form requests).
    Resolve,
    /// The tunnel it came through already has one (intercepted requests).
    Known(IpAddr),
}

/// A CONNECT: PreDNS, one resolution and the guard; then intercepted when
/// the policy intercepts the name, otherwise PreREQUEST without HTTP keys
/// and relayed.
pub async fn connect(
    mut exchange: Exchange,
    resolver: &impl Resolve,
    guard: &Guard,
) -> Result<Tunnel, Stopped> {
    if let Err(stop) = exchange.pre_dns() {
        return Err(Stopped(exchange, stop));
    }
    let ip = match exchange.resolve(resolver, guard).await {
        Ok(ip) => ip,
        Err(stop) => return Err(Stopped(exchange, stop)),
    };
    if exchange.policy().proxy().intercepts(exchange.domain()) {
        return Ok(Tunnel::Intercept(exchange, ip));
    }
    match exchange.pre_request(None) {
        Ok(()) => Ok(Tunnel::Relay(exchange, ip)),
        Err(stop) => Err(Stopped(exchange, stop)),
    }
}

/// The gateway's own rules for relayed tunnels, as decision lines name them.
pub const SNI_MISMATCH_RULE: &str = "tls-sni-mismatch";
/// A ClientHello that hides its name (`relayedTunnels.encryptedClientHello`).
pub const HIDDEN_NAME_RULE: &str = "encrypted-client-hello";
/// A tunnel to a TLS port that does not open with TLS (`relayedTunnels.nonTLS`).
pub const NOT_TLS_RULE: &str = "not-tls";

/// A relayed tunnel, judged by what the client sent first (read by the
/// caller, bounded in size and time) before any of it reaches the
/// destination. A ClientHello, on any port, names the destination: to a
/// name, its server name must be that name (canonical, as every name here);
/// to an address, it is judged from PreDNS as the destination name, the
/// address kept (and the returned exchange is the one to log and to judge
/// again). A ClientHello without a name is the CONNECT's; one that hides its
/// name gets what the proxy's settings say; one that cannot be read fails.
/// On the ports the proxy expects TLS on, what is not TLS (or a destination
/// that speaks first) gets what the settings say, and silence fails;
/// elsewhere they are relayed as they are.
// The exchange moves on either way, as out of `connect` and `request`.
#[allow(clippy::result_large_err)]
pub fn first_flight(
    mut exchange: Exchange,
    flight: &FirstFlight,
    guard: &Guard,
) -> Result<Exchange, Stopped> {
    let proxy = exchange.policy().proxy();
    let tls_port = proxy.expects_tls(exchange.target().port);
    let settings = proxy.settings();
    let (non_tls, hidden) = (settings.non_tls, settings.encrypted_client_hello);
    let hello = match flight {
        FirstFlight::Hello(hello) => hello,
        FirstFlight::Malformed(why) => {
            let error = Error::ClientHello(why.clone());
            return Err(Stopped(exchange, Stop::Failed(error)));
        }
        FirstFlight::NotTls | FirstFlight::ServerFirst | FirstFlight::Silent if !tls_port => {
            return Ok(exchange);
        }
        FirstFlight::NotTls | FirstFlight::ServerFirst if non_tls == TunnelAnswer::Allow => {
            return Ok(exchange);
        }
        FirstFlight::NotTls | FirstFlight::ServerFirst => {
            let stop = exchange.deny_by_gateway(Phase::PreRequest, NOT_TLS_RULE);
            return Err(Stopped(exchange, stop));
        }
        FirstFlight::Silent => {
            let error = Error::ClientHello(
                "no whole ClientHello before the client closed or the handshake timeout".to_owned(),
            );
            return Err(Stopped(exchange, Stop::Failed(error)));
        }
    };
    exchange.saw_hello(hello);
    if hello.hides_name && hidden == TunnelAnswer::Deny {
        let stop = exchange.deny_by_gateway(Phase::PreDns, HIDDEN_NAME_RULE);
        return Err(Stopped(exchange, stop));
    }
    let Some(sent) = &hello.server_name else {
        return Ok(exchange);
    };
    // A server compares the bytes: only a plain DNS name (RFC 6066) can be
    // read one way, whatever IDNA would make of anything else.
    let plain = sent
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let name = plain.then(|| Host::parse(sent).ok()).flatten();
    match (&exchange.target().host, name) {
        (Host::Name(connected), Some(Host::Name(sent))) if *connected == sent => Ok(exchange),
        (Host::Ip(_), Some(name @ Host::Name(_))) => {
            let Some(ip) = exchange.dest_ip() else {
                let stop = exchange.deny_by_gateway(Phase::PreDns, SNI_MISMATCH_RULE);
                return Err(Stopped(exchange, stop));
            };
            let mut named = exchange.named(name);
            let judged = named
                .pre_dns()
                .and_then(|()| named.check_address(ip, guard).map(drop))
                .and_then(|()| named.pre_request(None));
            match judged {
                Ok(()) => Ok(named),
                Err(stop) => Err(Stopped(named, stop)),
            }
        }
        // Another name, an address (which SNI may not carry), or no name at all.
        _ => {
            let stop = exchange.deny_by_gateway(Phase::PreDns, SNI_MISMATCH_RULE);
            Err(Stopped(exchange, stop))
        }
    }
}

/// A relayed tunnel whose destination asked for another ClientHello (a
/// HelloRetryRequest): the second must ask for what the first did, the same
/// server name in the same bytes and the same hidden name or none, or the
/// tunnel is closed before it reaches the destination.
// The exchange moves on either way, as out of `connect` and `request`.
#[allow(clippy::result_large_err)]
pub fn second_flight(
    mut exchange: Exchange,
    first: &ClientHello,
    second: &FirstFlight,
) -> Result<Exchange, Stopped> {
    match second {
        FirstFlight::Hello(again)
            if again.server_name == first.server_name && again.hides_name == first.hides_name =>
        {
            Ok(exchange)
        }
        FirstFlight::Hello(again) => {
            exchange.saw_hello(again);
            let stop = exchange.deny_by_gateway(Phase::PreDns, SNI_MISMATCH_RULE);
            Err(Stopped(exchange, stop))
        }
        FirstFlight::Malformed(why) => {
            let error = Error::ClientHello(format!("after a HelloRetryRequest: {why}"));
            Err(Stopped(exchange, Stop::Failed(error)))
        }
        _ => {
            let error = Error::ClientHello(
                "no second ClientHello after the destination's HelloRetryRequest".to_owned(),
            );
            Err(Stopped(exchange, Stop::Failed(error)))
        }
    }
}

/// An HTTP request, absolute-form or inside an intercepted tunnel: an
/// absolute-form request that already went through this proxy (its `Via`)
/// is a loop; then PreDNS, the address (resolved once, or the tunnel's) and
/// the guard, and PreREQUEST with the request's keys (its target normalised).
pub async fn request(
    mut exchange: Exchange,
    http: HttpRequest<'_>,
    destination: Destination,
    resolver: &impl Resolve,
    guard: &Guard,
) -> Result<Cleared, Stopped> {
    if exchange.protocol() == Protocol::Http
        && has_looped(http.headers, exchange.policy().proxy().name())
    {
        let stop = exchange.deny_loop();
        return Err(Stopped(exchange, stop));
    }
    if let Err(stop) = exchange.pre_dns() {
        return Err(Stopped(exchange, stop));
    }
    let ip = match destination {
        Destination::Resolve => exchange.resolve(resolver, guard).await,
        Destination::Known(ip) => exchange.check_address(ip, guard),
    };
    let ip = match ip {
        Ok(ip) => ip,
        Err(stop) => return Err(Stopped(exchange, stop)),
    };
    match exchange.pre_request(Some(http)) {
        Ok(()) => Ok(Cleared { exchange, ip }),
        Err(stop) => Err(Stopped(exchange, stop)),
    }
}

/// PostRESPONSE, when the response head has arrived: `Err` when it is
/// denied (the client gets the 403 instead).
pub fn response(
    exchange: &mut Exchange,
    http: HttpRequest<'_>,
    response: HttpResponse<'_>,
) -> Result<(), Stop> {
    exchange.post_response(Some(http), response)
}

/// An open relayed tunnel (`http` is `None`), or an upgraded connection
/// with the request that asked for the upgrade and the response that
/// granted it, judged again by `policy`: the same phases, against the address
/// already dialled. `Some` with the denying decision when the new policy
/// refuses it, `None` when it may stay open.
pub fn rejudge(
    exchange: &Exchange,
    policy: Arc<CompiledPolicy>,
    guard: &Guard,
    http: Option<(HttpRequest<'_>, HttpResponse<'_>)>,
) -> Option<Exchange> {
    let mut again = exchange.again(policy);
    let ip = exchange.dest_ip()?;
    let (request, response) = http.unzip();
    let denied = again.pre_dns().is_err()
        || again.check_address(ip, guard).is_err()
        || again.pre_request(request).is_err()
        || response.is_some_and(|response| again.post_response(request, response).is_err());
    denied.then_some(again)
}

/// Token this gateway adds to `Via`; seeing it on an incoming request means
/// the request looped back through the proxy.
pub fn via_token(proxy_name: &str) -> String {
    format!("1.1 {proxy_name} (egress-gateway)")
}

/// Whether `headers` show that the request already went through the proxy
/// named `proxy_name`: one of its `Via` hops is that proxy's
/// [`via_token`] (compared in place, nothing built per request).
fn has_looped(headers: &HeaderMap, proxy_name: &str) -> bool {
    let is_own = |hop: &str| {
        hop.strip_prefix("1.1 ")
            .and_then(|rest| rest.strip_suffix(" (egress-gateway)"))
            == Some(proxy_name)
    };
    headers
        .get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| is_own(hop.trim()))
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
/// `resolver` standing in for DNS: the same functions in the same order, and
/// the same log record (`-1` for a relayed tunnel, `403` for a denial).
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
    let path_and_query = crate::request::request_target(&uri);
    let normalized =
        egress_policy::uri::normalize(&path_and_query).map_err(Error::InvalidTarget)?;
    let with_query = policy.proxy().settings().log_query_strings;
    let http = HttpRequest {
        method: request.method,
        uri: &normalized,
        headers: request.headers,
    };
    let names = ProxyNames::of(&policy, cluster);
    let new = |method: &str, url: String| {
        Exchange::new(
            policy.clone(),
            names.clone(),
            &request.client,
            method,
            &target,
            protocol,
            url,
            request.arrived,
        )
    };
    let stopped = |Stopped(exchange, stop)| match stop {
        Stop::Denied => exchange.finish(403, 0, 0, None),
        Stop::Failed(error) => {
            let status = i32::from(error.status().as_u16());
            exchange.finish(status, 0, 0, Some(&error))
        }
    };
    let url = target.logged_url(protocol, &path_and_query, with_query);
    let destination = match protocol {
        Protocol::Http => Destination::Resolve,
        Protocol::Https => match connect(new("CONNECT", target.authority()), resolver, guard).await
        {
            Err(stop) => return Ok(stopped(stop)),
            Ok(Tunnel::Relay(exchange, _)) => return Ok(exchange.finish(-1, 0, 0, None)),
            // Inside an intercepted tunnel every request runs every phase again.
            Ok(Tunnel::Intercept(_, ip)) => Destination::Known(ip),
        },
    };
    let mut exchange =
        match self::request(new(request.method, url), http, destination, resolver, guard).await {
            Ok(cleared) => cleared.exchange,
            Err(stop) => return Ok(stopped(stop)),
        };
    // The credential the gateway would add: only inside an intercepted tunnel.
    if protocol == Protocol::Https {
        let credential_request = exchange.credential_request(&path_and_query, &normalized);
        if let Some(credential) = policy.proxy().credential_for(&credential_request) {
            exchange.carries_credential(&credential.name);
        }
    }
    let Some(answer) = request.response else {
        return Ok(exchange.finish(-1, 0, 0, None));
    };
    if let Err(stop) = response(&mut exchange, http, answer) {
        return Ok(stopped(Stopped(exchange, stop)));
    }
    Ok(exchange.finish(i32::from(answer.status), 0, 0, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Arc<CompiledPolicy> {
        Arc::new(egress_policy::compile_documents(yaml, None).expect("valid policy"))
    }

    const CONFIG: &str = "---\napiVersion: egress.dev/v1alpha1\nkind: ProxyConfiguration\nmetadata: {name: c}\nspec: {ruleGroups: [{name: g}], defaultActions: {preDNS: Allow, preRequest: Allow, postResponse: Allow}}\n";

    fn client() -> Client {
        Client::unidentified("10.0.0.10:40000")
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
        let line: serde_json::Value =
            serde_json::from_str(&finished.record.to_line()).expect("json");
        assert_eq!(line["event_timestamp"], "2000-06-01T12:00:00.000Z");
    }

    fn allow_all() -> Arc<CompiledPolicy> {
        policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec: {{}}\n{CONFIG}"
        ))
    }

    /// PreDNS denies `a.example`.
    fn deny_a() -> Arc<CompiledPolicy> {
        policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec:\n  rules:\n    preDNS:\n      - name: no-a\n        action: Deny\n        conditions: [{{key: \"request:DestinationDomain\", operator: StringEquals, values: [a.example]}}]\n{CONFIG}"
        ))
    }

    /// A CONNECT to `host:443`, judged by `policy`.
    fn tunnel_to(policy: &Arc<CompiledPolicy>, host: &str) -> Exchange {
        let target = Target {
            host: Host::parse(host).expect("host"),
            port: 443,
        };
        Exchange::new(
            policy.clone(),
            ProxyNames::of(policy, Arc::from("")),
            &client(),
            "CONNECT",
            &target,
            Protocol::Https,
            target.authority(),
            Timestamp::now(),
        )
    }

    #[tokio::test]
    async fn a_relayed_tunnel_is_revoked_only_by_a_policy_that_denies_it() {
        let (allow, deny) = (allow_all(), deny_a());
        let connect_to = tunnel_to(&allow, "A.Example.");
        let resolver = FixedAddress("93.184.215.14".parse().expect("ip"));
        let Ok(Tunnel::Relay(tunnel, _)) = connect(connect_to, &resolver, &Guard::default()).await
        else {
            panic!("relayed");
        };
        assert!(rejudge(&tunnel, allow, &Guard::default(), None).is_none());
        let revoked =
            rejudge(&tunnel, deny, &Guard::default(), None).expect("the new policy denies it");
        let finished = revoked.finish(-1, 10, 20, None);
        assert_eq!(&*finished.decision.final_rule_name, "no-a");
        assert_eq!(finished.record.url, "a.example:443");
        assert_eq!(finished.record.request_size, 10);
    }

    #[tokio::test]
    async fn a_tunnel_to_an_address_is_judged_and_revoked_by_the_name_it_carries() {
        let (allow, deny) = (allow_all(), deny_a());
        let hello = |name: &str| {
            FirstFlight::Hello(ClientHello {
                server_name: Some(name.to_owned()),
                ..ClientHello::default()
            })
        };
        let resolver = FixedAddress("93.184.215.14".parse().expect("ip"));
        let guard = Guard::default();
        let Ok(Tunnel::Relay(by_address, _)) =
            connect(tunnel_to(&allow, "93.184.215.14"), &resolver, &guard).await
        else {
            panic!("relayed");
        };
        let named = first_flight(by_address, &hello("A.Example."), &guard).expect("allowed");
        assert_eq!(named.domain().as_str(), "a.example");
        assert_eq!(named.dest_ip(), Some("93.184.215.14".parse().expect("ip")));
        // The policy that denies the name closes the tunnel opened by address.
        let revoked = rejudge(&named, deny, &guard, None).expect("revoked by its name");
        let finished = revoked.finish(-1, 0, 0, None);
        assert_eq!(&*finished.decision.final_rule_name, "no-a");
        assert_eq!(finished.record.tls_sni.as_deref(), Some("A.Example."));

        // To a name, another name in the ClientHello is refused.
        let Ok(Tunnel::Relay(by_name, _)) =
            connect(tunnel_to(&allow, "b.example"), &resolver, &guard).await
        else {
            panic!("relayed");
        };
        let Err(Stopped(refused, Stop::Denied)) =
            first_flight(by_name, &hello("a.example"), &guard)
        else {
            panic!("refused");
        };
        let finished = refused.finish(-1, 0, 0, None);
        assert_eq!(&*finished.decision.final_rule_name, SNI_MISMATCH_RULE);
    }

    #[test]
    fn a_request_judged_again_under_a_renamed_proxy_is_logged_under_the_new_name() {
        let first = allow_all();
        let renamed = policy(&format!(
            "apiVersion: egress.dev/v1alpha1\nkind: ProxyRuleGroup\nmetadata: {{name: g}}\nspec: {{}}\n{CONFIG}---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata: {{name: renamed}}\nspec: {{configurationRef: {{name: c}}}}\n"
        ));
        assert_ne!(first.proxy().name(), "renamed");
        let exchange = tunnel_to(&first, "a.example");
        let same = exchange.again(first.clone()).finish(-1, 0, 0, None).record;
        assert_eq!(&*same.proxy_name, first.proxy().name());
        let again = exchange.again(renamed).finish(-1, 0, 0, None).record;
        assert_eq!(&*again.proxy_name, "renamed");
        assert_eq!(&*again.src_vpce, "renamed-http");
    }

    #[test]
    fn loops_are_seen_in_via() {
        let mut headers = HeaderMap::new();
        let via = format!("1.0 fred, {}", via_token("egress"));
        headers.append(http::header::VIA, via.parse().expect("valid"));
        assert!(has_looped(&headers, "egress"));
        assert!(!has_looped(&headers, "other"));
        assert!(!has_looped(&headers, "egres"));
        assert!(!has_looped(&HeaderMap::new(), "egress"));
        let mut unnamed = HeaderMap::new();
        unnamed.append(http::header::VIA, via_token("").parse().expect("valid"));
        assert!(has_looped(&unnamed, ""));
        assert!(!has_looped(&headers, ""));
    }
}
