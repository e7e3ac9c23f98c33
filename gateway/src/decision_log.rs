//! The decision log: one JSON line per request on stdout, with the field names
//! of the cloud service's proxy logs (SPEC.md section 7).
//!
//! Lines go through a bounded queue to one writer thread, which batches them
//! and flushes when the queue is empty: request tasks never wait on stdout, and
//! nothing is synced per line. If stdout cannot keep up, lines are dropped and
//! counted (`egress_decision_log_dropped_lines`) rather than stalling traffic.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use egress_policy::{Action, Decision, RuleMatch, SourceIdentity};
use serde::Serialize;

use crate::metrics::Metrics;

/// Lines queued before new ones are dropped.
const QUEUE_LINES: usize = 65_536;

/// One request's log record, filled in as the request progresses.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// When the request arrived (RFC 3339, milliseconds, UTC).
    pub event_timestamp: String,
    /// `proxy_name`.
    pub proxy_name: String,
    /// Client address.
    pub client_src_ip: IpAddr,
    /// Client port.
    pub client_src_port: u16,
    /// Cluster name.
    pub src_vpc: String,
    /// Listener (`<proxy>-http` / `<proxy>-https`).
    pub src_vpce: String,
    /// Requested name.
    pub dest_domain: String,
    /// Address dialed (or that would have been), `null` before resolution.
    pub dest_ip: Option<IpAddr>,
    /// Requested port.
    pub dest_port: u16,
    /// `http://host/path` for HTTP, `https://host/path` inside an intercepted
    /// tunnel, `host:port` for a tunnel that is not intercepted.
    pub url: String,
    /// Method, `CONNECT` for tunnels.
    pub http_method: String,
    /// Status returned to the client, -1 when there was none (a relayed tunnel).
    pub http_status_code: i32,
    /// Final action.
    pub final_action: Action,
    /// Rule that decided, `default`, or `private-destination`.
    pub final_rule_name: String,
    /// Its group, or `default`.
    pub final_rule_group_name: String,
    /// First alert that matched.
    pub first_alert_match: Option<RuleMatch>,
    /// Every match.
    pub all_matches: Vec<RuleMatch>,
    /// Bytes received from the client (body, or tunnel bytes).
    pub request_size: u64,
    /// Bytes sent to the client (body, or tunnel bytes).
    pub response_size: u64,
    /// Client pod namespace, when known.
    pub src_namespace: Option<String>,
    /// Client pod, when known.
    pub src_pod: Option<String>,
    /// Client service account, when known.
    pub src_service_account: Option<String>,
    /// Phase that decided (extension).
    pub decision_phase: &'static str,
    /// Why the request failed after the decision, e.g. `dns_nxdomain: ...` (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// A record for a request from `client` on listener `vpce`.
    pub fn new(
        proxy_name: &str,
        src_vpc: &str,
        vpce: &str,
        client: SocketAddr,
        method: &str,
    ) -> Record {
        Record {
            event_timestamp: now_rfc3339(),
            proxy_name: proxy_name.to_owned(),
            client_src_ip: client.ip().to_canonical(),
            client_src_port: client.port(),
            src_vpc: src_vpc.to_owned(),
            src_vpce: vpce.to_owned(),
            dest_domain: String::new(),
            dest_ip: None,
            dest_port: 0,
            url: String::new(),
            http_method: method.to_owned(),
            http_status_code: -1,
            final_action: Action::Allow,
            final_rule_name: egress_policy::DEFAULT_RULE.to_owned(),
            final_rule_group_name: egress_policy::DEFAULT_RULE.to_owned(),
            first_alert_match: None,
            all_matches: Vec::new(),
            request_size: 0,
            response_size: 0,
            src_namespace: None,
            src_pod: None,
            src_service_account: None,
            decision_phase: "PreDNS",
            error: None,
        }
    }

    /// Copies the decision's fields.
    pub fn set_decision(&mut self, decision: &Decision) {
        self.final_action = decision.final_action;
        self.final_rule_name = decision.final_rule_name.to_string();
        self.final_rule_group_name = decision.final_rule_group_name.to_string();
        self.first_alert_match = decision.first_alert_match.clone();
        self.all_matches = decision.all_matches.clone();
        self.decision_phase = decision.final_phase.as_str();
    }

    /// Copies the client pod's identity.
    pub fn set_identity(&mut self, identity: &SourceIdentity) {
        self.src_namespace = Some(identity.namespace.clone());
        self.src_pod = Some(identity.pod.clone());
        self.src_service_account = Some(identity.service_account.clone());
    }

    /// The JSON line (without newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Now, as the log writes timestamps.
pub fn now_rfc3339() -> String {
    // jiff prints UTC timestamps as RFC 3339 with a `Z`.
    let now = jiff::Timestamp::now();
    format!("{:.3}", now)
}

/// The writer side of the decision log.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    queue: SyncSender<String>,
    /// Lines queued and not yet flushed to stdout.
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl DecisionLog {
    /// Starts the writer thread on stdout.
    pub fn to_stdout(metrics: Arc<Metrics>) -> DecisionLog {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let pending = Arc::new(AtomicUsize::new(0));
        let flushed = pending.clone();
        std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || write_lines(lines, std::io::stdout(), &flushed))
            .map_err(|e| tracing::error!(error = %e, "cannot start the decision log writer"))
            .ok();
        DecisionLog {
            queue,
            pending,
            metrics,
        }
    }

    /// Queues a record's line.
    pub fn write(&self, record: &Record) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(record.to_line())
        {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.metrics.log_lines_dropped.inc();
        }
    }

    /// Waits until every queued line is on stdout, or `timeout` passes (at exit:
    /// the writer thread dies with the process).
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn write_lines(lines: Receiver<String>, out: impl Write, pending: &AtomicUsize) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = lines.recv() {
        let mut line = Some(first);
        let mut batch = 0;
        while let Some(l) = line {
            if out
                .write_all(l.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .is_err()
            {
                return;
            }
            batch += 1;
            line = lines.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
        pending.fetch_sub(batch, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_has_the_cloud_field_names() {
        let mut record = Record::new(
            "egress",
            "prod",
            "egress-http",
            "[::ffff:10.1.2.3]:4000".parse().expect("addr"),
            "GET",
        );
        record.dest_domain = "example.com".into();
        record.dest_port = 80;
        let mut decision = Decision::default();
        decision.deny_by(egress_policy::Phase::PreRequest, "private-destination");
        record.set_decision(&decision);
        let line: serde_json::Value = serde_json::from_str(&record.to_line()).expect("json");
        for field in [
            "event_timestamp",
            "proxy_name",
            "client_src_ip",
            "client_src_port",
            "src_vpc",
            "src_vpce",
            "dest_domain",
            "dest_ip",
            "dest_port",
            "url",
            "http_method",
            "http_status_code",
            "final_action",
            "final_rule_name",
            "final_rule_group_name",
            "first_alert_match",
            "all_matches",
            "request_size",
            "response_size",
            "src_namespace",
            "src_pod",
            "src_service_account",
        ] {
            assert!(line.get(field).is_some(), "missing {field}: {line}");
        }
        assert_eq!(line["client_src_ip"], "10.1.2.3");
        assert_eq!(line["http_status_code"], -1);
        assert_eq!(line["final_action"], "Deny");
        assert_eq!(line["final_rule_name"], "private-destination");
        assert_eq!(line["decision_phase"], "PreREQUEST");
        assert!(line.get("error").is_none());
        let ts = line["event_timestamp"].as_str().expect("string");
        assert!(
            ts.parse::<jiff::Timestamp>().is_ok() && ts.ends_with('Z'),
            "{ts}"
        );
    }

    #[test]
    fn writer_batches_lines() {
        let (queue, lines) = sync_channel(8);
        for i in 0..3 {
            queue.send(format!("{{\"n\":{i}}}")).expect("queued");
        }
        drop(queue);
        let mut out = Vec::new();
        let pending = AtomicUsize::new(3);
        write_lines(lines, &mut out, &pending);
        assert_eq!(pending.load(Ordering::SeqCst), 0);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
        );
    }
}
