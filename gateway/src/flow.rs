//! One request's way through the phases, shared by plain HTTP, relayed tunnels
//! and requests inside intercepted tunnels:
//!
//! PreDNS -> resolve once -> private-destination guard -> PreREQUEST -> (the
//! caller connects to exactly the address that was checked) -> PostRESPONSE,
//! then one decision log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use egress_policy::{
    CompiledPolicy, Decision, Domain, HttpRequest, HttpResponse, PRIVATE_DESTINATION_RULE, Phase,
    RequestContext, Verdict,
};
use http::StatusCode;

use crate::decision_log::Record;
use crate::gateway::{ConnInfo, Failure, Gateway, Side};
use crate::metrics::DecisionLabels;

/// Why a request stops before reaching the destination.
#[derive(Debug)]
pub enum Stop {
    /// The policy (or the private-destination guard) refused it: 403.
    Denied,
    /// It could not be served.
    Failed(Failure),
}

/// The state of one request.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Shared state.
    pub gw: Arc<Gateway>,
    /// The policy this request is evaluated with, from start to end.
    pub policy: Arc<CompiledPolicy>,
    /// The decision so far.
    pub decision: Decision,
    /// The log record so far.
    pub record: Record,
    /// The requested name.
    pub domain: Domain,
    /// The requested port.
    pub port: u16,
    /// `http` or `https`.
    pub protocol: &'static str,
    /// `<proxy>-http` or `<proxy>-https`.
    pub vpce: String,
    /// The client.
    pub client: SocketAddr,
    /// The address checked and dialed, once resolved.
    pub dest_ip: Option<IpAddr>,
    /// When the request head arrived.
    pub started: Instant,
}

impl Flow {
    /// Starts a request. Without a valid policy nothing is served (503).
    pub fn start(
        gw: &Arc<Gateway>,
        conn: ConnInfo,
        method: &str,
        host: &str,
        port: u16,
        protocol: &'static str,
        url: String,
    ) -> Result<Flow, Failure> {
        let policy = gw.policy.current().ok_or_else(|| {
            Failure::new(
                Side::Internal,
                "no_policy",
                StatusCode::SERVICE_UNAVAILABLE,
                "no valid policy is loaded",
            )
        })?;
        let proxy_name = policy.proxy().name().to_owned();
        let vpce = format!("{proxy_name}-{}", conn.listener.as_str());
        let domain = Domain::new(host.trim_start_matches('[').trim_end_matches(']'));
        let mut record = Record::new(&proxy_name, &gw.cluster_name, &vpce, conn.client, method);
        record.dest_domain = domain.to_string();
        record.dest_port = port;
        record.url = url;
        Ok(Flow {
            gw: gw.clone(),
            policy,
            decision: Decision::default(),
            record,
            domain,
            port,
            protocol,
            vpce,
            client: conn.client,
            dest_ip: None,
            started: Instant::now(),
        })
    }

    /// A request inside an intercepted tunnel: the tunnel's PreDNS decision and
    /// resolved address, with its own start time, method and URL.
    pub fn inner_request(&self, method: &str, url: String) -> Flow {
        let mut flow = self.clone();
        flow.started = Instant::now();
        flow.record.event_timestamp = crate::decision_log::now_rfc3339();
        flow.record.http_method = method.to_owned();
        flow.record.url = url;
        flow
    }

    fn context<'a>(
        &'a self,
        request: Option<HttpRequest<'a>>,
        response: Option<HttpResponse<'a>>,
    ) -> RequestContext<'a> {
        RequestContext {
            time: Some(jiff::Timestamp::now()),
            source_ip: Some(self.client.ip()),
            source_port: Some(self.client.port()),
            source_vpc: Some(self.gw.cluster_name.as_str()).filter(|s| !s.is_empty()),
            source_vpce: Some(self.vpce.as_str()),
            source: None,
            protocol: Some(self.protocol),
            destination_domain: Some(self.domain.clone()),
            destination_port: Some(self.port),
            destination_ip: self.dest_ip,
            request,
            response,
        }
    }

    /// PreDNS.
    pub fn pre_dns(&mut self) -> Verdict {
        let mut decision = std::mem::take(&mut self.decision);
        let verdict = {
            let ctx = self.context(None, None);
            self.policy
                .evaluate_phase(Phase::PreDns, &ctx, &mut decision)
        };
        self.decision = decision;
        verdict
    }

    /// Resolves the name once and applies the private-destination guard to the
    /// address that will be dialed.
    pub async fn resolve(&mut self) -> Result<IpAddr, Stop> {
        let started = Instant::now();
        let resolved = self
            .gw
            .resolver
            .resolve(self.domain.as_str(), self.port)
            .await;
        self.gw
            .metrics
            .dns_seconds
            .observe(started.elapsed().as_secs_f64());
        let addrs = resolved.map_err(|e| {
            Stop::Failed(Failure::new(
                Side::Upstream,
                e.reason(),
                e.status(),
                e.to_string(),
            ))
        })?;
        // Resolve once, check, dial that address: no DNS-rebinding gap.
        let ip = addrs[0].to_canonical();
        self.dest_ip = Some(ip);
        self.record.dest_ip = Some(ip);
        let private = self.policy.proxy().refuses_destination(ip) && !self.gw.dev_allows(ip);
        if private || self.gw.is_own_address(ip, self.port) {
            self.decision
                .deny_by(Phase::PreRequest, PRIVATE_DESTINATION_RULE);
            return Err(Stop::Denied);
        }
        Ok(ip)
    }

    /// PreREQUEST, with the HTTP request when it is visible.
    pub fn pre_request(&mut self, request: Option<HttpRequest<'_>>) -> Verdict {
        let mut decision = std::mem::take(&mut self.decision);
        let verdict = {
            let ctx = self.context(request, None);
            self.policy
                .evaluate_phase(Phase::PreRequest, &ctx, &mut decision)
        };
        self.decision = decision;
        verdict
    }

    /// PostRESPONSE.
    pub fn post_response(
        &mut self,
        request: Option<HttpRequest<'_>>,
        response: HttpResponse<'_>,
    ) -> Verdict {
        let mut decision = std::mem::take(&mut self.decision);
        let verdict = {
            let ctx = self.context(request, Some(response));
            self.policy
                .evaluate_phase(Phase::PostResponse, &ctx, &mut decision)
        };
        self.decision = decision;
        verdict
    }

    /// Writes the log line (if the proxy logs this kind of decision) and counts
    /// the decision. `status` is what the client got, -1 for none.
    pub fn finish(
        mut self,
        status: i32,
        request_size: u64,
        response_size: u64,
        failure: Option<&Failure>,
    ) {
        self.record.set_decision(&self.decision);
        self.record.http_status_code = status;
        self.record.request_size = request_size;
        self.record.response_size = response_size;
        if let Some(failure) = failure {
            failure.count(&self.gw.metrics);
            self.record.error = Some(failure.log_text());
        }
        self.gw
            .metrics
            .decisions
            .get_or_create(&DecisionLabels {
                phase: self.decision.final_phase.as_str(),
                action: self.decision.final_action.as_str(),
                group: self.decision.final_rule_group_name.to_string(),
                rule: self.decision.final_rule_name.to_string(),
            })
            .inc();
        if self.policy.proxy().logs(&self.decision) {
            self.gw.log.write(&self.record);
        }
    }
}
