//! Command-line interface of `egress-operator`; every flag can be set from
//! the environment, as the chart's Deployment does.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// egress-operator: reconciles ProxyRuleGroup, ProxyConfiguration and
/// EgressProxy resources into a gateway Deployment per proxy, with its
/// compiled policy (ConfigMap), interception sub-CA and serving certificate
/// (Secrets), Service and RBAC, and reports in status.conditions.
#[derive(Clone, Debug, Parser)]
#[command(name = "egress-operator", version)]
pub struct Args {
    /// Kubeconfig to use; in-cluster configuration (or $KUBECONFIG) when not given.
    #[arg(long, env = "EGRESS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Image of the gateway the rendered Deployments run.
    #[arg(
        long,
        env = "EGRESS_GATEWAY_IMAGE",
        default_value = "egress-gateway:dev"
    )]
    pub gateway_image: String,

    /// Pull policy of that image (IfNotPresent where images are preloaded).
    #[arg(long, env = "EGRESS_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,

    /// Cluster name: the value of request:SourceVpc in every gateway.
    #[arg(long, env = "EGRESS_CLUSTER_NAME", default_value = "")]
    pub cluster_name: String,

    /// The cluster's DNS domain, for the listener certificate's names.
    #[arg(long, env = "EGRESS_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Address of the admin listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "EGRESS_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,

    /// Elect one leader among replicas through a coordination.k8s.io Lease;
    /// only the leader reconciles. Turn off only for a single replica.
    #[arg(long, env = "EGRESS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease.
    #[arg(long, env = "EGRESS_LEASE_NAME", default_value = "egress-operator")]
    pub lease_name: String,

    /// The operator's own namespace (from the downward API): where the Lease
    /// and the webhook's certificate live; never injected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Seconds a leader's lease lasts without renewal; a follower takes over after that.
    #[arg(long, env = "EGRESS_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,

    /// This replica's identity in the Lease (the pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Diagnostics format on stderr.
    #[arg(long, env = "EGRESS_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Serve the injection webhook (HTTPS) on this address, e.g. 0.0.0.0:9443;
    /// not served when not given.
    #[arg(long, env = "EGRESS_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,

    /// Who issues the webhook's serving certificate: `operator` (a
    /// self-signed CA in Secret <webhook-secret>-ca, renewed before expiry,
    /// its certificate patched into the webhook configuration's caBundle) or
    /// `external` (cert-manager or you write Secret <webhook-secret> and
    /// the caBundle).
    #[arg(
        long,
        env = "EGRESS_WEBHOOK_CERTIFICATES",
        value_enum,
        default_value = "operator"
    )]
    pub webhook_certificates: WebhookCertificates,

    /// Secret (in --namespace) with the webhook's serving certificate
    /// (tls.crt, tls.key); reloaded when it changes.
    #[arg(
        long,
        env = "EGRESS_WEBHOOK_SECRET",
        default_value = "egress-operator-webhook-tls"
    )]
    pub webhook_secret: String,

    /// The webhook's Service (in --namespace): its DNS names go in the certificate.
    #[arg(
        long,
        env = "EGRESS_WEBHOOK_SERVICE",
        default_value = "egress-operator-webhook"
    )]
    pub webhook_service: String,

    /// More names or addresses for the webhook's certificate (repeatable), for
    /// an API server that calls it by URL.
    #[arg(
        long = "webhook-host",
        env = "EGRESS_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    pub webhook_hosts: Vec<String>,

    /// The MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "EGRESS_WEBHOOK_CONFIGURATION",
        default_value = "egress-proxy"
    )]
    pub webhook_configuration: String,

    /// The cluster's Service CIDRs (repeatable or comma-separated): injected
    /// pods reach them directly (NO_PROXY), and enforced clients may. Read
    /// from the cluster's ServiceCIDR objects when not given.
    #[arg(
        long = "service-cidr",
        env = "EGRESS_SERVICE_CIDRS",
        value_delimiter = ','
    )]
    pub service_cidrs: Vec<String>,

    /// The cluster's pod CIDRs (repeatable or comma-separated), as
    /// --service-cidr. Read from the nodes' podCIDRs when not given.
    #[arg(long = "pod-cidr", env = "EGRESS_POD_CIDRS", value_delimiter = ',')]
    pub pod_cidrs: Vec<String>,

    /// Namespaces whose EgressProxies may serve pods of other namespaces
    /// (repeatable or comma-separated), besides --namespace. A proxy
    /// elsewhere serves only its own namespace, and namespaces that pin it.
    #[arg(
        long = "shared-proxy-namespace",
        env = "EGRESS_SHARED_PROXY_NAMESPACES",
        value_delimiter = ','
    )]
    pub shared_proxy_namespaces: Vec<String>,

    /// Create the gateways' pod-reader ClusterRole at start (off when the
    /// chart installs it).
    #[arg(long, env = "EGRESS_MANAGE_POD_READER_ROLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_pod_reader_role: bool,

    /// The ClusterRole that lets the operator manage Secrets in a namespace
    /// once bound there (the chart's `<release>-operator-secrets`); named in
    /// the status of a proxy in a namespace that has not opted in.
    #[arg(long, env = "EGRESS_SECRETS_ROLE", default_value = "")]
    pub secrets_role: String,

    /// The operator's own ServiceAccount, `namespace:name`, for the same
    /// advice.
    #[arg(long, env = "EGRESS_SERVICE_ACCOUNT", default_value = "")]
    pub service_account: String,

    /// Labels of the cluster DNS pods in kube-system, which enforced clients
    /// may reach on port 53.
    #[arg(long, env = "EGRESS_DNS_SELECTOR", default_value = "k8s-app=kube-dns")]
    pub dns_selector: String,

    /// What enforces NetworkPolicies in this cluster (`calico`, `cilium`,
    /// ... or any name), when it runs where the operator cannot see it (not
    /// as pods). Empty: look for the pods of the known enforcers, and say in
    /// the status of each proxy with `enforce` when none is found.
    #[arg(long, env = "EGRESS_NETWORK_POLICY_ENFORCER", default_value = "")]
    pub network_policy_enforcer: String,

    /// PEM file of the system roots given to clients (SSL_CERT_FILE and the
    /// Java truststore hold these plus the proxy's roots); this machine's
    /// roots when not given.
    #[arg(long, env = "EGRESS_CLIENT_ROOTS")]
    pub client_roots: Option<PathBuf>,
}

impl Args {
    /// The arguments from the command line and the environment, with the
    /// empty entries a list read from an empty variable has dropped
    /// (`EGRESS_WEBHOOK_HOSTS=""` means none).
    pub fn parse_normalized() -> Args {
        use clap::Parser;
        Args::parse().normalized()
    }

    /// These arguments without empty list entries.
    pub fn normalized(mut self) -> Args {
        for list in [
            &mut self.webhook_hosts,
            &mut self.service_cidrs,
            &mut self.pod_cidrs,
            &mut self.shared_proxy_namespaces,
        ] {
            list.retain(|entry| !entry.trim().is_empty());
        }
        self
    }
}

/// Who issues the webhook's serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookCertificates {
    /// The operator (self-signed CA, caBundle patched).
    Operator,
    /// Someone else (cert-manager), into --webhook-secret.
    External,
}

pub use egress_runtime::log::LogFormat;

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }

    #[test]
    fn empty_list_entries_are_dropped() {
        // As the chart's `EGRESS_WEBHOOK_HOSTS: ""` arrives.
        let args = super::Args::parse_from([
            "egress-operator",
            "--webhook-host",
            "",
            "--service-cidr",
            "10.0.0.0/8,,",
        ])
        .normalized();
        assert!(args.webhook_hosts.is_empty());
        assert_eq!(args.service_cidrs, ["10.0.0.0/8"]);
    }
}
