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

    /// Namespace of the Lease (the operator's own, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Seconds a leader's lease lasts without renewal; a follower takes over after that.
    #[arg(long, env = "EGRESS_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,

    /// This replica's identity in the Lease (the pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Diagnostics format on stderr.
    #[arg(long, env = "EGRESS_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
}

/// Diagnostics log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
