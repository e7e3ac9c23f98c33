//! Command-line interface: one `Args` for the binary, flags settable from the
//! environment (as a Deployment sets them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

/// egress-gateway: an explicit HTTP/HTTPS forward proxy enforcing an
/// egress-proxy policy (PreDNS, PreREQUEST and PostRESPONSE rules), with TLS
/// interception and one JSON decision log line per request on stdout.
#[derive(Debug, Parser)]
#[command(name = "egress-gateway", version, about, long_about = None)]
pub struct Args {
    /// Diagnostics format on stderr (decision logs are always JSON on stdout).
    #[arg(
        long,
        env = "EGRESS_LOG_FORMAT",
        value_enum,
        default_value = "plain",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run(Box<RunArgs>),
    /// Run the gateway on loopback with the example policy, a development CA
    /// and a demo upstream, and print curl lines that exercise each phase.
    Dev(DevArgs),
    /// Check, compile or evaluate a policy file without running the gateway.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Where the gateway reads its policy and certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// Files, polled for changes.
    File,
    /// The Kubernetes API: the EgressProxy's ConfigMap and Secrets, and pods.
    Kubernetes,
}

pub use egress_runtime::log::LogFormat;

/// Flags of `run`.
#[derive(Clone, Debug, ClapArgs)]
pub struct RunArgs {
    /// Where the policy and certificates come from: `file` (the files named
    /// below, reloaded when they change) or `kubernetes` (the EgressProxy's
    /// ConfigMap and Secrets that the operator renders, watched through the
    /// API, and the pods whose addresses identify clients).
    #[arg(long, env = "EGRESS_SOURCE", value_enum, default_value = "file")]
    pub source: SourceKind,

    /// Policy file (file source): the compiled policy JSON the operator writes,
    /// or the CRD YAML documents (ProxyRuleGroup, ProxyConfiguration,
    /// optionally EgressProxy). Reloaded when it changes; a bad version is
    /// reported and the last good one keeps serving.
    #[arg(long, env = "EGRESS_POLICY", required_if_eq("source", "file"))]
    pub policy: Option<PathBuf>,

    /// The EgressProxy: whose ConfigMap and Secrets to watch (kubernetes
    /// source), or which one of a YAML policy file holding several.
    #[arg(
        long,
        env = "EGRESS_PROXY_NAME",
        required_if_eq("source", "kubernetes")
    )]
    pub proxy: Option<String>,

    /// Directory of the Secrets the policy's credentials name (file
    /// source), laid out as Secret volumes are: DIR/<secret>/<key>. Read
    /// again every --file-poll-interval. (The kubernetes source reads them
    /// from the API.)
    #[arg(long, env = "EGRESS_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Namespace of the EgressProxy (kubernetes source; the pod's own, from
    /// the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Kubeconfig (kubernetes source); the in-cluster configuration (or
    /// $KUBECONFIG) when not given.
    #[arg(long, env = "EGRESS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch pods to know which one a client is, by its address (kubernetes
    /// source): the request:Source* identity keys and the src_* log fields.
    /// The pods of the namespaces the ConfigMap <proxy>-namespaces lists
    /// (the operator writes it, and lets the gateway read pods there only).
    #[arg(long, env = "EGRESS_POD_IDENTITY", default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_identity: bool,

    /// Address of the plain HTTP listener (clients use http://HOST:PORT as proxy).
    #[arg(long, env = "EGRESS_HTTP_LISTEN", default_value = "0.0.0.0:1080")]
    pub http_listen: SocketAddr,

    /// Address of the HTTPS listener (clients speak TLS to the proxy:
    /// https://HOST:PORT). With the file source it needs --tls-cert and
    /// --tls-key; with the kubernetes source the certificate is the
    /// EgressProxy's `<proxy>-tls` Secret.
    #[arg(long, env = "EGRESS_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,

    /// PEM certificate chain of the HTTPS listener (file source; reloaded when it changes).
    #[arg(long, env = "EGRESS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the HTTPS listener.
    #[arg(long, env = "EGRESS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Address of the admin listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "EGRESS_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub intercept: InterceptArgs,

    /// Extra PEM CA bundle trusted for upstream TLS, on top of the system roots.
    #[arg(long, env = "EGRESS_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Pin a name to addresses, like curl: NAME:PORT:ADDR[,ADDR...] (PORT may be
    /// `*` for any port). Repeatable; comma-separated in the environment.
    #[arg(long = "resolve", env = "EGRESS_RESOLVE", value_delimiter = ';')]
    pub resolve: Vec<String>,

    /// Name server to query (IP or IP:PORT) instead of those of /etc/resolv.conf.
    #[arg(long, env = "EGRESS_DNS_SERVER")]
    pub dns_server: Option<String>,

    /// Time allowed for one name resolution.
    #[arg(long, env = "EGRESS_DNS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub dns_timeout: Duration,

    /// Cluster name, the value of request:SourceVpc.
    #[arg(long, env = "EGRESS_CLUSTER_NAME", default_value = "")]
    pub cluster_name: String,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Runtime worker threads; default: one per CPU the process may use.
    #[arg(long, env = "EGRESS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Threads that relay CONNECT tunnels from the plain-HTTP listener, each
    /// an event loop for many tunnels (Linux); default: half the worker
    /// threads, at least one.
    #[arg(long, env = "EGRESS_RELAY_THREADS")]
    pub relay_threads: Option<usize>,

    /// How often policy and certificate files are checked for changes.
    #[arg(long, env = "EGRESS_FILE_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub file_poll_interval: Duration,

    /// How long a file changed in place must stay unchanged before it is read,
    /// so a file caught while being written is never loaded. A file replaced
    /// by a rename (mv, editors, ConfigMap volumes) is read at once.
    #[arg(long, env = "EGRESS_FILE_SETTLE", default_value = "500ms", value_parser = parse_duration)]
    pub file_settle: Duration,

    /// Warn (log and count) when a reload removes more than this share of the
    /// rules in force, 0 to 1; removing every rule always warns. The policy
    /// still loads.
    #[arg(long, env = "EGRESS_POLICY_SHRINK_WARNING", default_value_t = 0.5, value_parser = parse_share)]
    pub policy_shrink_warning: f64,
}

/// TLS interception material.
#[derive(Clone, Debug, ClapArgs)]
pub struct InterceptArgs {
    /// PEM certificate of the sub-CA that signs intercepted leaf certificates
    /// (needed when the policy turns interception on; reloaded when it changes).
    #[arg(long, env = "EGRESS_INTERCEPT_CA_CERT", requires = "intercept_ca_key")]
    pub intercept_ca_cert: Option<PathBuf>,

    /// PEM private key of that sub-CA (PKCS#8, or PKCS#1 for RSA).
    #[arg(long, env = "EGRESS_INTERCEPT_CA_KEY", requires = "intercept_ca_cert")]
    pub intercept_ca_key: Option<PathBuf>,

    /// PEM certificates above the sub-CA, up to (optionally including) the root,
    /// served after the leaf and the sub-CA.
    #[arg(long, env = "EGRESS_INTERCEPT_CA_CHAIN")]
    pub intercept_ca_chain: Option<PathBuf>,

    /// Most leaf certificates kept in memory (least recently used go first).
    #[arg(long, env = "EGRESS_CERT_CACHE_SIZE", default_value_t = 10_000)]
    pub cert_cache_size: usize,
}

/// Protection against slow, greedy or broken clients.
#[derive(Clone, Debug, ClapArgs)]
pub struct LimitArgs {
    /// Most client connections open at once; more wait in the accept queue.
    #[arg(long, env = "EGRESS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most bytes of a request head from a client (beyond: 431) or a
    /// response head from an upstream (beyond: 502).
    #[arg(long, env = "EGRESS_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Time a client has to send a complete request head; also how long an idle
    /// keep-alive connection is kept.
    #[arg(long, env = "EGRESS_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time a TLS handshake (client side or upstream) may take.
    #[arg(long, env = "EGRESS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Time to connect to an upstream.
    #[arg(long, env = "EGRESS_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time an upstream has, once the request is sent, to send its response
    /// head; beyond it the client gets 504.
    #[arg(long, env = "EGRESS_UPSTREAM_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,

    /// Time a connection (plain HTTP, tunnel or intercepted) may pass no bytes
    /// before it is closed.
    #[arg(long, env = "EGRESS_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// On SIGTERM/SIGINT: how long the gateway keeps accepting connections
    /// while it reports not ready (/readyz 503) and asks keep-alive clients
    /// to reconnect (`Connection: close`), so Service endpoints and load
    /// balancers drop it before it stops listening. In a pod, a few seconds;
    /// 0 stops listening at once.
    #[arg(long, env = "EGRESS_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Then, once it no longer accepts: how long open connections may drain
    /// before they are cut. A second signal cuts them at once.
    #[arg(long, env = "EGRESS_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Flags of `dev`.
#[derive(Clone, Debug, ClapArgs)]
pub struct DevArgs {
    /// Policy file to serve.
    #[arg(
        long,
        env = "EGRESS_POLICY",
        default_value = "examples/seed-policy.yaml"
    )]
    pub policy: PathBuf,

    /// Where the development CA and certificates are written.
    #[arg(long, env = "EGRESS_DEV_DIR", default_value = ".dev")]
    pub dir: PathBuf,

    /// Port of the plain HTTP listener on 127.0.0.1.
    #[arg(long, default_value_t = 1080)]
    pub http_port: u16,

    /// Port of the HTTPS listener on 127.0.0.1.
    #[arg(long, default_value_t = 1443)]
    pub https_port: u16,

    /// Port of the admin listener on 127.0.0.1.
    #[arg(long, default_value_t = 9090)]
    pub admin_port: u16,

    /// Port of the demo upstream (HTTPS) on 127.0.0.1, which answers for www.example.com.
    #[arg(long, default_value_t = 8443)]
    pub upstream_port: u16,
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Compile a policy file and report every error (exit 1 if any).
    Check {
        /// CRD YAML documents or compiled policy JSON.
        file: PathBuf,
        /// Which EgressProxy, when the file holds several.
        #[arg(long)]
        proxy: Option<String>,
    },
    /// Compile CRD YAML documents and print the compiled policy JSON (what the
    /// operator writes into the ConfigMap).
    Compile {
        /// CRD YAML documents.
        file: PathBuf,
        /// Which EgressProxy, when the file holds several.
        #[arg(long)]
        proxy: Option<String>,
    },
    /// Evaluate one request against a policy file and print the decision log line.
    Eval(Box<EvalArgs>),
    /// Convert AWS Network Firewall Proxy rules into ProxyRuleGroup and
    /// ProxyConfiguration YAML (on stdout; what cannot mean the same here
    /// on stderr, exit 1 if a decision could change).
    Import {
        /// Where the rules come from.
        #[arg(value_enum)]
        from: Vendor,
        /// AWS CLI JSON (create-proxy-rule-group --cli-input-json,
        /// describe-proxy-rule-group, create-proxy-rules,
        /// create-proxy-configuration, describe-proxy-configuration) or the
        /// console's CSV export (its rule group is named after the file).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Convert ProxyRuleGroup and ProxyConfiguration YAML into the AWS CLI's
    /// JSON (`{"CreateProxyRuleGroup": [...], "CreateProxyConfiguration":
    /// [...]}`, each element a --cli-input-json body).
    Export {
        /// Where the rules go.
        #[arg(value_enum)]
        to: Vendor,
        /// CRD YAML documents.
        file: PathBuf,
    },
}

/// Another proxy's rule format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Vendor {
    /// AWS Network Firewall Proxy.
    Aws,
}

/// A request described on the command line.
#[derive(Debug, ClapArgs)]
pub struct EvalArgs {
    /// Policy file (CRD YAML documents or compiled policy JSON).
    pub file: PathBuf,
    /// The request URL: `https://host[:port]/path` is a CONNECT (intercepted when the
    /// policy says so), `http://host[:port]/path` an absolute-form request.
    pub url: String,
    /// Which EgressProxy, when the file holds several.
    #[arg(long)]
    pub proxy: Option<String>,
    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// Request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Upstream response status; the PostRESPONSE phase runs only when given.
    #[arg(long)]
    pub status: Option<u16>,
    /// Upstream response header `Name: value` (repeatable).
    #[arg(long = "response-header")]
    pub response_headers: Vec<String>,
    /// Destination IP (the PreREQUEST phase sees it as request:DestinationIp).
    #[arg(long, default_value = "93.184.215.14")]
    pub dest_ip: std::net::IpAddr,
    /// Client address.
    #[arg(long, default_value = "10.0.0.10:40000")]
    pub source: SocketAddr,
    /// Request time (RFC 3339); now when not given.
    #[arg(long)]
    pub time: Option<jiff::Timestamp>,
    /// The client pod's namespace (request:SourceNamespace, SourceAccount).
    #[arg(long)]
    pub source_namespace: Option<String>,
    /// The client pod's name (request:SourcePod).
    #[arg(long, requires = "source_namespace")]
    pub source_pod: Option<String>,
    /// The client pod's service account (request:SourceServiceAccount; default `default`).
    #[arg(long, requires = "source_namespace")]
    pub source_service_account: Option<String>,
    /// A label of the client pod, `key=value` (request:SourcePodLabel/<key>; repeatable).
    #[arg(long = "source-label", requires = "source_namespace")]
    pub source_labels: Vec<String>,
    /// Cluster name (request:SourceVpc).
    #[arg(long, default_value = "")]
    pub cluster_name: String,
}

/// Parses a share between 0 and 1 (`0.5`).
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1 (such as 0.5)"
        )),
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "{text:?} has an unknown unit {unit:?}; use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
