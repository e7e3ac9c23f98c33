//! The decision log: one JSON line per request on stdout, with the field names
//! of the cloud service's proxy logs (design §7).
//!
//! Request tasks append their line to a shared buffer; one writer thread
//! takes the buffer every few milliseconds and writes it in one go. Nothing
//! waits on stdout, nothing is synced per line, and the writer wakes a fixed
//! number of times per second however many requests there are (waking it per
//! line cost a sixth of the gateway's CPU under load). If stdout cannot keep
//! up and the buffer passes its bound, lines are dropped and counted
//! (`egress_decision_log_dropped_lines`) rather than stalling traffic.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egress_policy::spec::LogFormat;
use egress_policy::{Action, Decision, RuleMatch};
use jiff::Timestamp;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::pipeline::ProxyNames;
use crate::request::Client;

/// How often the writer takes the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Bytes buffered before new lines are dropped.
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// One request's log record, filled in as the request progresses. What is
/// the same for many requests (names of the proxy, its rules, the
/// destination) is shared rather than copied into each record.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// When the request arrived; logged as `event_timestamp` (RFC 3339,
    /// milliseconds, UTC).
    #[serde(rename = "event_timestamp", serialize_with = "rfc3339_millis")]
    pub arrived: Timestamp,
    /// `proxy_name`.
    pub proxy_name: Arc<str>,
    /// Client address.
    pub client_src_ip: IpAddr,
    /// Client port.
    pub client_src_port: u16,
    /// Cluster name.
    pub src_vpc: Arc<str>,
    /// Listener (`<proxy>-http` / `<proxy>-https`).
    pub src_vpce: Arc<str>,
    /// Requested name.
    pub dest_domain: Arc<str>,
    /// Address dialed (or that would have been), `null` before resolution.
    pub dest_ip: Option<IpAddr>,
    /// Requested port.
    pub dest_port: u16,
    /// `http://host/path` for HTTP, `https://host/path` inside an intercepted
    /// tunnel, `host:port` for a tunnel that is not intercepted.
    pub url: String,
    /// Method, `CONNECT` for tunnels.
    pub http_method: Cow<'static, str>,
    /// Status returned to the client, -1 when there was none (a relayed tunnel).
    pub http_status_code: i32,
    /// Final action.
    pub final_action: Action,
    /// Rule that decided, `default`, or `private-destination`.
    pub final_rule_name: Arc<str>,
    /// Its group, or `default`.
    pub final_rule_group_name: Arc<str>,
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
    /// What the rules in monitor mode would have done, when one of them
    /// matched: the action with them enforced (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_action: Option<Action>,
    /// The rule that would have decided (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_rule_name: Option<Arc<str>>,
    /// Its group (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_rule_group_name: Option<Arc<str>>,
    /// The credential added to the request (its name; never its value), or
    /// that could not be (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Why the request failed after the decision, e.g. `dns_nxdomain: ...` (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a relayed tunnel closed because a new policy denies it: that
    /// policy's hash (extension). The decision fields are the new policy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// For a relayed tunnel that opened with a TLS ClientHello: the server
    /// name it sent, as sent (extension; `""` for none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_sni: Option<String>,
    /// The application protocols it offered (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_alpn: Option<Vec<String>>,
}

impl Record {
    /// A record for a request from `client` through the proxy `names`
    /// name, to `dest_domain`, arrived at `arrived`.
    pub fn new(
        names: &ProxyNames,
        client: &Client,
        method: &str,
        dest_domain: Arc<str>,
        arrived: Timestamp,
    ) -> Record {
        let identity = client.identity.as_deref();
        let default_rule = egress_policy::DEFAULT_RULE_NAME.clone();
        Record {
            arrived,
            proxy_name: names.proxy.clone(),
            client_src_ip: client.addr.ip().to_canonical(),
            client_src_port: client.addr.port(),
            src_vpc: names.cluster.clone(),
            src_vpce: names.endpoint(client.listener).clone(),
            dest_domain,
            dest_ip: None,
            dest_port: 0,
            url: String::new(),
            http_method: method_name(method),
            http_status_code: -1,
            final_action: Action::Allow,
            final_rule_name: default_rule.clone(),
            final_rule_group_name: default_rule,
            first_alert_match: None,
            all_matches: Vec::new(),
            request_size: 0,
            response_size: 0,
            src_namespace: identity.map(|i| i.namespace.clone()),
            src_pod: identity.map(|i| i.pod.clone()),
            src_service_account: identity.map(|i| i.service_account.clone()),
            decision_phase: "PreDNS",
            would_action: None,
            would_rule_name: None,
            would_rule_group_name: None,
            credential: None,
            error: None,
            revoked_by: None,
            tls_sni: None,
            tls_alpn: None,
        }
    }

    /// Copies the decision's fields.
    pub fn set_decision(&mut self, decision: &Decision) {
        self.final_action = decision.final_action;
        self.final_rule_name = decision.final_rule_name.clone();
        self.final_rule_group_name = decision.final_rule_group_name.clone();
        self.first_alert_match = decision.first_alert_match.clone();
        self.all_matches = decision.all_matches.clone();
        self.decision_phase = decision.final_phase.as_str();
        let would = decision.would();
        self.would_action = would.as_ref().map(|w| w.action);
        self.would_rule_name = would.as_ref().map(|w| w.rule.clone());
        self.would_rule_group_name = would.map(|w| w.group.clone());
    }

    /// The JSON line (without newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON line in AWS Network Firewall Proxy's shape (its proxy
    /// logging documentation's example record): `event_timestamp` in epoch
    /// seconds, lower-case actions, `dest_domain` with its trailing dot,
    /// `url` split into its parts, `all_matches` as `{"matches": [{rule_id,
    /// hook, action}]}` with `default` for a phase default, and the
    /// namespace as `account_id`; plus this project's identity fields.
    pub fn to_aws_line(&self) -> String {
        let lower = |action: Action| action.as_str().to_ascii_lowercase();
        let hook = |phase: egress_policy::Phase| match phase {
            egress_policy::Phase::PreDns => "pre_dns",
            egress_policy::Phase::PreRequest => "pre_request",
            egress_policy::Phase::PostResponse => "post_response",
        };
        let mut matches: Vec<serde_json::Value> = self
            .all_matches
            .iter()
            .map(|m| {
                serde_json::json!({"rule_id": &*m.rule, "hook": hook(m.phase), "action": lower(m.action)})
            })
            .collect();
        let by_default = *self.final_rule_name == *egress_policy::DEFAULT_RULE;
        let final_hook = aws_hook(self.decision_phase);
        let listed = matches
            .iter()
            .any(|m| m["rule_id"] == egress_policy::DEFAULT_RULE && m["hook"] == final_hook);
        if by_default && !listed {
            // The default that decided, as AWS lists it.
            matches.push(serde_json::json!({
                "rule_id": egress_policy::DEFAULT_RULE,
                "hook": final_hook,
                "action": lower(self.final_action),
            }));
        }
        let dest_domain = if self.dest_domain.is_empty() || self.dest_domain.ends_with('.') {
            self.dest_domain.to_string()
        } else {
            format!("{}.", self.dest_domain)
        };
        let mut line = serde_json::json!({
            "event_timestamp": self.arrived.as_second(),
            "proxy_name": self.proxy_name,
            "client_src_ip": self.client_src_ip,
            "client_src_port": self.client_src_port,
            "src_vpc": self.src_vpc,
            "src_vpce": self.src_vpce,
            "account_id": self.src_namespace.clone().unwrap_or_default(),
            "dest_domain": dest_domain,
            "url": aws_url(&self.url),
            "http_method": self.http_method,
            "dest_ip": self.dest_ip,
            "dest_port": self.dest_port,
            "http_status_code": self.http_status_code,
            "first_alert_match": self.first_alert_match.as_ref().map(|m| m.rule.to_string()).unwrap_or_default(),
            "all_matches": {"matches": matches},
            "final_action": lower(self.final_action),
            "final_rule_name": self.final_rule_name,
            "final_rule_group_name": if by_default { String::new() } else { self.final_rule_group_name.to_string() },
            "request_size": self.request_size,
            "response_size": self.response_size,
            "src_namespace": self.src_namespace,
            "src_pod": self.src_pod,
            "src_service_account": self.src_service_account,
        });
        // What monitored rules would have done and a relayed tunnel's
        // ClientHello, as in the native line.
        if let Some(object) = line.as_object_mut() {
            if let (Some(action), Some(rule), Some(group)) = (
                self.would_action,
                &self.would_rule_name,
                &self.would_rule_group_name,
            ) {
                object.insert("would_action".to_owned(), lower(action).into());
                object.insert("would_rule_name".to_owned(), rule.as_ref().into());
                object.insert("would_rule_group_name".to_owned(), group.as_ref().into());
            }
            if let Some(credential) = &self.credential {
                object.insert("credential".to_owned(), credential.as_str().into());
            }
            if let Some(sni) = &self.tls_sni {
                object.insert("tls_sni".to_owned(), sni.as_str().into());
            }
            if let Some(alpn) = &self.tls_alpn {
                object.insert("tls_alpn".to_owned(), alpn.clone().into());
            }
        }
        line.to_string()
    }
}

/// The method as logged: the standard ones without a copy.
fn method_name(method: &str) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|m| **m == method) {
        Some(standard) => Cow::Borrowed(standard),
        None => Cow::Owned(method.to_owned()),
    }
}

/// `event_timestamp`: jiff prints UTC timestamps as RFC 3339 with a `Z`,
/// here with milliseconds, straight into the line.
fn rfc3339_millis<S: serde::Serializer>(arrived: &Timestamp, out: S) -> Result<S::Ok, S::Error> {
    out.collect_str(&format_args!("{arrived:.3}"))
}

/// `PreDNS` and friends as AWS's `hook` values.
fn aws_hook(phase: &str) -> &'static str {
    match phase {
        "PreREQUEST" => "pre_request",
        "PostRESPONSE" => "post_response",
        _ => "pre_dns",
    }
}

/// A logged URL split as AWS logs it: `scheme`, `authority`, `path`,
/// `query`, `fragment` (empty strings for what is absent; a relayed tunnel
/// has only an authority).
fn aws_url(url: &str) -> serde_json::Value {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path_and_query) = match rest.find('/') {
        Some(at) if !scheme.is_empty() => rest.split_at(at),
        _ => (rest, ""),
    };
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    serde_json::json!({
        "scheme": scheme,
        "authority": authority,
        "path": path,
        "query": query,
        "fragment": "",
    })
}

/// The writer side of the decision log.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Bytes appended and bytes written so far, for [`DecisionLog::drain`].
    appended: AtomicU64,
    written: AtomicU64,
}

impl DecisionLog {
    /// Starts the writer thread on stdout.
    pub fn to_stdout(metrics: Arc<Metrics>) -> DecisionLog {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    if writer.flush_to(&mut std::io::stdout().lock()).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the decision log writer"))
            .ok();
        DecisionLog { shared, metrics }
    }

    /// Appends a record's line, in `format`, unless the buffer has reached
    /// its bound (the last line may take it past by its own length). A
    /// native line is serialized straight into the shared buffer, with no
    /// string of its own to allocate and copy; an AWS line is built first,
    /// outside the lock.
    pub fn write(&self, record: &Record, format: LogFormat) {
        let aws = (format == LogFormat::Aws).then(|| record.to_aws_line());
        let mut buffer = self.shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() >= MAX_BUFFERED {
            drop(buffer);
            self.metrics.log_lines_dropped.inc();
            return;
        }
        let before = buffer.len();
        let written = match aws {
            Some(line) => {
                buffer.extend_from_slice(line.as_bytes());
                true
            }
            None => serde_json::to_writer(&mut *buffer, record).is_ok(),
        };
        if written {
            buffer.push(b'\n');
        } else {
            buffer.truncate(before);
        }
        // Counted under the lock, so that no line is written out before it
        // is counted here (`drain` compares the two).
        self.shared
            .appended
            .fetch_add((buffer.len() - before) as u64, Ordering::SeqCst);
    }

    /// Waits until every line appended so far is on stdout, or `timeout`
    /// passes (at exit: the writer thread dies with the process).
    pub fn drain(&self, timeout: Duration) {
        let target = self.shared.appended.load(Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        while self.shared.written.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Shared {
    /// Writes out what is buffered; the lock is held only to take the buffer.
    fn flush_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let batch = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        out.write_all(&batch)?;
        out.flush()?;
        self.written.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_has_the_cloud_field_names() {
        let client = Client::unidentified("[::ffff:10.1.2.3]:4000");
        let mut record = Record::new(
            &ProxyNames::named("egress", "prod".into()),
            &client,
            "GET",
            "example.com".into(),
            Timestamp::now(),
        );
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

    /// The example record of AWS's proxy logging documentation
    /// (docs.aws.amazon.com/network-firewall/latest/developerguide/proxy-logging-and-monitoring.html).
    const AWS_EXAMPLE: &str = r#"{
      "proxy_name": "my-awesome-proxy", "event_timestamp": 1717171,
      "client_src_ip": "192.168.10.1", "client_src_port": 123,
      "src_vpc": "vpc-aabbccdd", "src_vpce": "vpce-xxyyzz", "account_id": "1122334455",
      "dest_domain": "www.amazon.com",
      "url": {"scheme": "https", "authority": "www.amazon.com", "path": "/xyz", "query": "crid=U7M9K3I5QT25&dib", "fragment": ""},
      "http_method": "GET", "dest_ip": "205.251.242.103", "dest_port": 443, "http_status_code": 200,
      "first_alert_match": "rule-that-alerts-if-it-goes-to-amazon.com",
      "all_matches": {"matches": [
        {"rule_id": "rule-that-alerts-if-it-goes-to-amazon.com", "hook": "pre_dns", "action": "alert"},
        {"rule_id": "default", "hook": "pre_dns", "action": "allow"}]},
      "final_action": "allow", "final_rule_name": "", "final_rule_group_name": ""
    }"#;

    #[test]
    fn the_aws_format_has_the_documented_fields_and_shapes() {
        let client = Client {
            addr: "192.168.10.1:123".parse().expect("addr"),
            listener: crate::request::Listener::Https,
            identity: Some(std::sync::Arc::new(egress_policy::SourceIdentity {
                namespace: "team-a".into(),
                service_account: "default".into(),
                pod: "web-0".into(),
                labels: Default::default(),
            })),
        };
        let arrived: Timestamp = "2026-01-10T04:56:45.250Z".parse().expect("time");
        let mut record = Record::new(
            &ProxyNames::named("egress", "prod".into()),
            &client,
            "GET",
            "www.amazon.com".into(),
            arrived,
        );
        record.dest_ip = Some("205.251.242.103".parse().expect("ip"));
        record.dest_port = 443;
        record.url = "https://www.amazon.com/xyz?crid=U7M9K3I5QT25&dib".into();
        record.http_status_code = 200;
        let alert = RuleMatch {
            rule: "alert-amazon".into(),
            group: "watch".into(),
            phase: egress_policy::Phase::PreDns,
            action: Action::Alert,
        };
        record.first_alert_match = Some(alert.clone());
        record.all_matches = vec![alert];
        record.decision_phase = "PostRESPONSE";
        let line: serde_json::Value = serde_json::from_str(&record.to_aws_line()).expect("json");
        let example: serde_json::Value = serde_json::from_str(AWS_EXAMPLE).expect("example");
        // Every documented field, with the documented JSON type.
        let kind = |v: &serde_json::Value| match v {
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Object(_) => "object",
            serde_json::Value::Array(_) => "array",
            _ => "other",
        };
        for (field, value) in example.as_object().expect("object") {
            assert_eq!(kind(&line[field]), kind(value), "{field}: {line}");
        }
        for (field, value) in example["url"].as_object().expect("url") {
            assert_eq!(kind(&line["url"][field]), kind(value), "url.{field}");
        }
        assert_eq!(line["event_timestamp"], 1_768_021_005, "epoch seconds");
        assert!(line.get("tls_sni").is_none(), "only for relayed tunnels");
        record.tls_sni = Some("www.amazon.com".into());
        let relayed: serde_json::Value = serde_json::from_str(&record.to_aws_line()).expect("json");
        assert_eq!(relayed["tls_sni"], "www.amazon.com");
        assert_eq!(line["final_action"], "allow");
        assert_eq!(
            line["dest_domain"], "www.amazon.com.",
            "the trailing dot AWS logs"
        );
        assert_eq!(line["url"]["path"], "/xyz");
        assert_eq!(line["url"]["query"], "crid=U7M9K3I5QT25&dib");
        assert_eq!(
            line["account_id"], "team-a",
            "the namespace stands for the account"
        );
        assert_eq!(line["first_alert_match"], "alert-amazon");
        assert_eq!(
            line["all_matches"],
            serde_json::json!({"matches": [
                {"rule_id": "alert-amazon", "hook": "pre_dns", "action": "alert"},
                {"rule_id": "default", "hook": "post_response", "action": "allow"}
            ]})
        );
        assert_eq!(
            (
                line["final_rule_name"].as_str(),
                line["final_rule_group_name"].as_str()
            ),
            (Some("default"), Some(""))
        );
        assert_eq!(line["src_pod"], "web-0");
        // A relayed tunnel: only an authority.
        assert_eq!(
            aws_url("api.example.com:443"),
            serde_json::json!({"scheme": "", "authority": "api.example.com:443", "path": "", "query": "", "fragment": ""})
        );
    }

    #[test]
    fn lines_are_written_in_batches_and_drained() {
        let mut registry = prometheus_client::registry::Registry::default();
        let log = DecisionLog {
            shared: Arc::new(Shared::default()),
            metrics: Arc::new(Metrics::new(&mut registry)),
        };
        let client = Client::unidentified("127.0.0.1:1");
        let record = Record::new(
            &ProxyNames::named("p", "".into()),
            &client,
            "GET",
            "".into(),
            Timestamp::now(),
        );
        for _ in 0..3 {
            log.write(&record, LogFormat::Native);
        }
        let mut out = Vec::new();
        log.shared.flush_to(&mut out).expect("flush");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
        log.drain(Duration::from_millis(10));
        assert_eq!(
            log.shared.written.load(Ordering::SeqCst),
            log.shared.appended.load(Ordering::SeqCst)
        );
        let mut again = Vec::new();
        log.shared.flush_to(&mut again).expect("flush");
        assert!(again.is_empty(), "nothing is written twice");
    }
}
