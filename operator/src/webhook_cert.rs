//! The webhook's certificate, kept by the leader when the operator issues
//! it: a self-signed CA (Secret `<secret>-ca`), a serving certificate for
//! the webhook Service's names (Secret `<secret>`, which every replica
//! follows), both renewed before they expire, and the CA patched into the
//! MutatingWebhookConfiguration's `caBundle` so the API server trusts it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::certs::{self, Pems};
use crate::names::{FIELD_MANAGER, MANAGER};

/// How often all is checked again when nothing is due sooner.
const RECHECK: Duration = Duration::from_secs(3600);
/// How soon to try again after a failure or while the configuration is missing.
const RETRY: Duration = Duration::from_secs(10);

/// Where the webhook's certificate lives and what it must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCert {
    /// The operator's namespace.
    pub namespace: String,
    /// Secret with the serving certificate.
    pub secret: String,
    /// The webhook Service.
    pub service: String,
    /// More names or addresses for the certificate.
    pub hosts: Vec<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// The MutatingWebhookConfiguration to patch.
    pub configuration: String,
}

impl WebhookCert {
    /// The Secret with the CA.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.secret)
    }

    /// The names the serving certificate covers: the Service's, then the extras.
    pub fn names(&self) -> Vec<String> {
        let (service, namespace) = (&self.service, &self.namespace);
        let mut names = vec![
            service.clone(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.{}", self.cluster_domain),
        ];
        for host in &self.hosts {
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        names
    }
}

/// Keeps the certificate and the `caBundle` current until `stop`.
pub async fn maintain(client: Client, cert: WebhookCert, stop: CancellationToken) {
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cert.namespace);
    // A change to the configuration (a chart upgrade) or to the Secrets (one
    // deleted) is checked at once.
    let configuration_changes = watcher(
        configurations,
        watcher::Config::default().fields(&format!("metadata.name={}", cert.configuration)),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let secret_changes = watcher(
        secrets,
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}")),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let mut changes = std::pin::pin!(futures_util::stream::select(
        configuration_changes,
        secret_changes
    ));
    loop {
        let wait = match ensure(&client, &cert).await {
            Ok(wait) => wait,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "webhook certificate: retrying");
                RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            _ = changes.next() => {}
        }
    }
}

/// One pass: issue what is missing or due, patch the `caBundle`; how long
/// until the next pass.
///
/// A new CA goes into the `caBundle` next to the previous one before any
/// certificate it signed is served, so the API server trusts both sides of
/// the change: the serving certificate follows on a later pass.
async fn ensure(client: &Client, cert: &WebhookCert) -> anyhow::Result<Duration> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cert.namespace);
    let now = SystemTime::now();
    let existing_ca = secrets
        .get_opt(&cert.ca_secret())
        .await?
        .map(|s| certs::pems_of(&s));
    let (ca, new_ca) = match next_ca(existing_ca.as_ref(), now)? {
        Some(pems) => {
            apply_secret(&secrets, cert, &cert.ca_secret(), &pems).await?;
            tracing::info!(secret = %cert.ca_secret(), "webhook CA issued");
            (pems, true)
        }
        None => (existing_ca.unwrap_or_default(), false),
    };
    let patched = patch_ca_bundle(client, &cert.configuration, &ca.ca).await?;
    let existing = secrets
        .get_opt(&cert.secret)
        .await?
        .map(|s| certs::pems_of(&s));
    let serving_usable = existing
        .as_ref()
        .and_then(|p| egress_pki::inspect(&p.cert).ok())
        .is_some_and(|info| info.not_before <= now && now < info.not_after);
    if new_ca && serving_usable {
        return Ok(RETRY);
    }
    let serving = match certs::serving(existing.as_ref(), &ca, &cert.names(), now)? {
        Some((pems, why)) => {
            apply_secret(&secrets, cert, &cert.secret, &pems).await?;
            tracing::info!(secret = %cert.secret, ?why, "webhook serving certificate issued");
            pems
        }
        None => existing.unwrap_or_default(),
    };
    let next = [&ca.cert, &serving.cert]
        .into_iter()
        .filter_map(|pem| certs::renewal_at(pem))
        .filter_map(|at| at.duration_since(now).ok())
        .min()
        .unwrap_or(RECHECK)
        .clamp(Duration::from_secs(1), RECHECK);
    Ok(if patched { next } else { next.min(RETRY) })
}

/// The webhook CA to store when one is due (`None`: keep `existing`): a new
/// self-signed CA whose `ca.crt` also holds the previous one while that is
/// still valid, so the `caBundle` spans the change.
fn next_ca(existing: Option<&Pems>, now: SystemTime) -> Result<Option<Pems>, egress_pki::Error> {
    let Some((mut pems, _)) = certs::own_ca(existing, "egress-operator webhook CA", now)? else {
        return Ok(None);
    };
    let previous = existing
        .filter(|old| egress_pki::inspect(&old.cert).is_ok_and(|info| now < info.not_after));
    if let Some(old) = previous {
        pems.ca = format!("{}\n{}", pems.cert.trim_end(), old.cert.trim_end()) + "\n";
    }
    Ok(Some(pems))
}

async fn apply_secret(
    secrets: &Api<Secret>,
    cert: &WebhookCert,
    name: &str,
    pems: &Pems,
) -> anyhow::Result<()> {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(cert.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), bytes(&pems.cert)),
            ("tls.key".to_owned(), bytes(&pems.key)),
            ("ca.crt".to_owned(), bytes(&pems.ca)),
        ])),
        ..Secret::default()
    };
    secrets
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// Sets `caBundle` on every webhook of the configuration; false when the
/// configuration does not exist (yet).
async fn patch_ca_bundle(client: &Client, name: &str, ca_pem: &str) -> anyhow::Result<bool> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(configuration) = api.get_opt(name).await? else {
        tracing::warn!(
            configuration = name,
            "MutatingWebhookConfiguration not found: the API server does not call the webhook until it exists (install the chart, or pass --webhook-configuration)"
        );
        return Ok(false);
    };
    let webhooks = configuration.webhooks.unwrap_or_default();
    let current = webhooks.iter().all(|w| {
        w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca_pem.as_bytes())
    });
    if current {
        return Ok(true);
    }
    // Server-side apply of just the caBundle of each webhook (a list keyed
    // by name): the chart keeps owning the rest.
    let patch = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": webhooks.iter().map(|w| serde_json::json!({
            "name": w.name,
            "clientConfig": {"caBundle": ByteString(ca_pem.as_bytes().to_vec())},
        })).collect::<Vec<_>>(),
    });
    api.patch(
        name,
        &PatchParams::apply(&format!("{FIELD_MANAGER}-webhook")).force(),
        &Patch::Apply(patch),
    )
    .await?;
    tracing::info!(configuration = name, "caBundle updated");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_ca_is_trusted_next_to_the_previous_one() {
        let now = SystemTime::now();
        let first = next_ca(None, now).expect("issue").expect("issued");
        assert_eq!(first.ca, first.cert, "alone at first");
        assert!(
            next_ca(Some(&first), now).expect("check").is_none(),
            "kept while good"
        );
        let later = now + certs::OWN_CA_LIFETIME * 3 / 4;
        let second = next_ca(Some(&first), later)
            .expect("issue")
            .expect("renewed");
        assert_ne!(second.cert, first.cert);
        let anchors = egress_pki::certificates(&second.ca).expect("bundle");
        assert_eq!(anchors.len(), 2, "new and previous");
        assert!(second.ca.starts_with(second.cert.trim_end()));
        assert!(second.ca.contains(first.cert.trim_end()));
        // Once the previous one has expired it is dropped.
        let much_later = now + certs::OWN_CA_LIFETIME * 2;
        let third = next_ca(Some(&first), much_later)
            .expect("issue")
            .expect("replaced");
        assert_eq!(third.ca, third.cert);
    }

    #[test]
    fn the_certificate_names_the_service_and_the_extras() {
        let cert = WebhookCert {
            namespace: "egress-system".to_owned(),
            secret: "tls".to_owned(),
            service: "hook".to_owned(),
            hosts: vec!["127.0.0.1".to_owned(), "hook".to_owned()],
            cluster_domain: "cluster.local".to_owned(),
            configuration: "egress-proxy".to_owned(),
        };
        assert_eq!(
            cert.names(),
            [
                "hook",
                "hook.egress-system",
                "hook.egress-system.svc",
                "hook.egress-system.svc.cluster.local",
                "127.0.0.1"
            ]
        );
        assert_eq!(cert.ca_secret(), "tls-ca");
    }
}
