//! What the gateway and the operator both need around their own work,
//! written once: the Kubernetes client ([`kube_client`]), diagnostics on
//! stderr ([`log`]), the stop signal ([`signal`]), a serving certificate
//! swapped in place ([`serving`]), the admin listener ([`admin`]) and the
//! connection slots it and the webhook share ([`slots`]).
//!
//! Nothing here knows about policies, proxies or pods.

pub mod admin;
pub mod log;
pub mod serving;
pub mod signal;
pub mod slots;

use std::path::Path;

use anyhow::Context as _;

/// A client from `kubeconfig`, or the in-cluster configuration (or
/// `$KUBECONFIG`) when none is given.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster configuration and no usable $KUBECONFIG; pass --kubeconfig")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Whether a watch failed because the API server refused the read (403):
/// a binding not in place yet or taken away, which is no outage.
pub fn watch_forbidden(error: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error;
    match error {
        Error::InitialListFailed(kube::Error::Api(status))
        | Error::WatchStartFailed(kube::Error::Api(status))
        | Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}
