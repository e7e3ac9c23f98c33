//! The state every connection shares: the policy in force
//! ([`policy_store`]), the client pods by address ([`identity`]), whether the
//! source of both is reachable ([`health`]), and the handles of the parts
//! below (name resolution, upstream connections, interception, the relay
//! loops, the decision log); and what happens at the end of every request:
//! its decision counted and logged, or its failure counted and answered.

pub mod credentials;
pub mod health;
pub mod identity;
pub mod policy_store;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use egress_policy::{CompiledPolicy, Domain};
use http::Response;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::LimitArgs;
use crate::error::Error;
use crate::gateway::credentials::Secrets;
use crate::gateway::health::Health;
use crate::gateway::identity::Identities;
use crate::gateway::policy_store::PolicyStore;
use crate::http_util::{Body, denied, text_response};
use crate::metrics::{DecisionLabels, ListenerLabels, Metrics, WouldLabels};
use crate::pipeline::decision_log::DecisionLog;
use crate::pipeline::{Exchange, Finished, Guard, ProxyNames, Resolve, Stop, Stopped};
use crate::relay::Watch;
use crate::request::{Client, Protocol, Target};
use crate::tls::ServingCert;
use crate::tls::authority::InterceptAuthority;
use crate::upstream::dns::Resolver;
use crate::upstream::{Connector, Owner, Pool};

/// Shared state.
#[derive(Debug)]
pub struct Gateway {
    /// The policy in force.
    pub policy: PolicyStore,
    /// Name resolution.
    pub resolver: Resolver,
    /// The interception sub-CA (empty until one is installed).
    pub intercept: InterceptAuthority,
    /// The HTTPS listener's certificate, when that listener is on.
    pub serving: Option<Arc<ServingCert>>,
    /// Where policy and certificates come from, and whether it is reachable.
    pub source: Health,
    /// Whether `/readyz` waits for the sub-CA (when the policy intercepts),
    /// the listener certificate and the pod index: a source that delivers
    /// them after start (the API) says so.
    pub waits_for_material: bool,
    /// Whether clients are identified by their pods (`--source kubernetes`
    /// with `--pod-identity`): then a client the index does not know keeps
    /// its upstream connections to itself.
    pub identifies_clients: bool,
    /// Client pods by address (empty without the pod watch).
    pub identities: Identities,
    /// The Secrets credentials take their values from.
    pub secrets: Secrets,
    /// How connections to destinations are made.
    pub upstream: Connector,
    /// Idle connections to destinations, for later requests of the same client.
    pub upstream_pool: Pool,
    /// The decision log.
    pub log: DecisionLog,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Timeouts and limits.
    pub limits: LimitArgs,
    /// The names requests are logged and judged with (the proxy's, its
    /// listeners', the cluster's), made again only when the proxy's name
    /// changes.
    pub names: RwLock<Arc<ProxyNames>>,
    /// What the private-destination guard knows beyond the policy.
    pub guard: Guard,
    /// Tracks every connection and tunnel for graceful shutdown.
    pub tasks: TaskTracker,
    /// The threads spliced tunnels run on.
    #[cfg(target_os = "linux")]
    pub relays: crate::relay::loops::RelayLoops,
    /// Cancelled on the stop signal: not ready, keep-alive clients asked to
    /// reconnect, connections still accepted (`--shutdown-delay`).
    pub draining: CancellationToken,
    /// Cancelled when the listeners close and open connections drain.
    pub shutdown: CancellationToken,
}

/// A client connection: who it is, and its place under `--max-connections`,
/// held by every task that serves it (a tunnel outlives the request that
/// opened it and keeps the place, and its count in
/// `egress_open_connections`, until it closes).
#[derive(Debug)]
pub struct Connection {
    /// The client.
    pub client: Client,
    /// Whose upstream connections its requests may use.
    pub owner: Owner,
    _slot: OwnedSemaphorePermit,
    open: Gauge,
}

impl Connection {
    /// A connection holding `slot`, counted as open until dropped.
    pub fn new(
        client: Client,
        owner: Owner,
        slot: OwnedSemaphorePermit,
        metrics: &Metrics,
    ) -> Connection {
        let open = metrics
            .open_connections
            .get_or_create(&ListenerLabels {
                listener: client.listener.as_str(),
            })
            .clone();
        open.inc();
        Connection {
            client,
            owner,
            _slot: slot,
            open,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Gateway {
    /// What the relays of this gateway answer to.
    pub fn watch(&self) -> Watch<'_> {
        Watch {
            idle_timeout: self.limits.idle_timeout,
            metrics: &self.metrics,
        }
    }

    /// Counts a decided request and writes its log line when the proxy
    /// logs that kind of decision.
    pub fn record(&self, finished: Finished) {
        let decision = &finished.decision;
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                phase: decision.final_phase.as_str(),
                action: decision.final_action.as_str(),
                group: decision.final_rule_group_name.clone(),
                rule: decision.final_rule_name.clone(),
            })
            .inc();
        if let Some(would) = decision.would() {
            self.metrics
                .monitored
                .get_or_create(&WouldLabels {
                    phase: would.phase.as_str(),
                    would_action: would.action.as_str(),
                    group: would.group.clone(),
                    rule: would.rule.clone(),
                })
                .inc();
        }
        if let Some(error) = &finished.record.error {
            tracing::debug!(url = %finished.record.url, %error, "request failed");
        }
        if finished.logged {
            self.log.write(&finished.record, finished.log_format);
        }
    }

    /// A request that arrives now, to be decided by the policy in force:
    /// `path_and_query` for an HTTP request (its logged URL follows the
    /// policy's query-string setting), `None` for a CONNECT (`host:port`).
    /// Refused when no policy is loaded yet.
    pub fn arrived(
        &self,
        client: &Client,
        method: &str,
        target: &Target,
        protocol: Protocol,
        path_and_query: Option<&str>,
    ) -> Result<Exchange, Error> {
        let policy = self.policy.current().ok_or(Error::NoPolicy)?;
        let url = match path_and_query {
            Some(path_and_query) => {
                let with_query = policy.proxy().settings().log_query_strings;
                target.logged_url(protocol, path_and_query, with_query)
            }
            None => target.authority(),
        };
        let names = self.names_of(&policy);
        Ok(Exchange::new(
            policy,
            names,
            client,
            method,
            target,
            protocol,
            url,
            jiff::Timestamp::now(),
        ))
    }

    /// The names of `policy`'s proxy: those of the last request, unless the
    /// proxy's name changed with the policy.
    fn names_of(&self, policy: &CompiledPolicy) -> Arc<ProxyNames> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner()).clone();
        if names.are_of(policy) {
            return names;
        }
        let renamed = ProxyNames::of(policy, names.cluster.clone());
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = renamed.clone();
        renamed
    }

    /// Counts a failure.
    pub fn count(&self, error: &Error) {
        self.metrics.error(error.side().as_str(), error.reason());
    }

    /// Asks an HTTP/1 client to take its next request elsewhere once the
    /// gateway is draining (the connection closes after this response).
    pub fn close_if_draining(&self, response: &mut Response<Body>) {
        if self.draining.is_cancelled() {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }

    /// Answers a request refused before there is anything to decide on (bad
    /// input, no policy): counted and traced, not a decision.
    pub fn refuse(&self, error: Error, close: bool) -> Response<Body> {
        self.count(&error);
        tracing::warn!(reason = error.reason(), error = %error, "request refused");
        text_response(error.status(), error.client_text(), close)
    }

    /// Answers and logs a request that stopped before reaching the destination.
    pub fn stopped(&self, Stopped(exchange, stop): Stopped, http1: bool) -> Response<Body> {
        match stop {
            Stop::Denied => {
                self.record(exchange.finish(403, 0, 0, None));
                denied(http1)
            }
            Stop::Failed(error) => {
                let status = error.status();
                self.fail(exchange, i32::from(status.as_u16()), (0, 0), &error);
                text_response(status, error.client_text(), http1)
            }
        }
    }

    /// Counts a failure after the decision and logs the request with it;
    /// `status` is what the client got (-1 for nothing), `sizes` the bytes
    /// each way.
    pub fn fail(&self, exchange: Exchange, status: i32, sizes: (u64, u64), error: &Error) {
        self.count(error);
        self.record(exchange.finish(status, sizes.0, sizes.1, Some(error)));
    }
}

impl Resolve for Gateway {
    /// The resolver, timed.
    async fn resolve(&self, name: &Domain, port: u16) -> Result<IpAddr, Error> {
        let started = Instant::now();
        let resolved = Resolve::resolve(&self.resolver, name, port).await;
        self.metrics
            .dns_seconds
            .observe(started.elapsed().as_secs_f64());
        resolved
    }
}
