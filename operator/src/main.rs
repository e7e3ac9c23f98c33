//! The `egress-operator` binary: flags, the admin listener, leader election
//! and the controllers.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use egress_operator::admin::{self, Readiness};
use egress_operator::args::{Args, WebhookCertificates};
use egress_operator::cluster_facts;
use egress_operator::context::{ClientSettings, Context};
use egress_operator::inject::Cluster;
use egress_operator::metrics::Metrics;
use egress_operator::render::Settings;
use egress_operator::run;
use egress_operator::secret_watches::SecretsOptIn;
use egress_operator::webhook::{self, Webhook};
use egress_operator::webhook_cert::{self, WebhookCert};
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse_normalized();
    egress_runtime::log::init(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(operate(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn operate(args: Args) -> anyhow::Result<()> {
    let client = egress_runtime::kube_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let ready = Arc::new(Readiness::default());
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
    tracing::info!(listener = "admin", address = %listener.local_addr()?, "listening");
    tokio::spawn(admin::serve(listener, Arc::new(registry), ready.clone()));

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            egress_runtime::signal::terminated().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("egress-operator-{}", std::process::id()));
    let settings = Settings {
        gateway_image: args.gateway_image.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        cluster_name: args.cluster_name.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };
    let cluster = Cluster {
        domain: args.cluster_domain.clone(),
        api_server: egress_operator::api_server_addresses(&client).await,
        service_cidrs: match args.service_cidrs.as_slice() {
            [] => egress_operator::discover_service_cidrs(&client).await,
            given => given.to_vec(),
        },
        pod_cidrs: match args.pod_cidrs.as_slice() {
            [] => egress_operator::discover_pod_cidrs(&client).await,
            given => given.to_vec(),
        },
        operator_namespace: args.namespace.clone(),
        shared_proxy_namespaces: args.shared_proxy_namespaces.clone(),
    };
    let client_settings = ClientSettings {
        // Pod CIDRs not given follow the nodes.
        cluster: if args.pod_cidrs.is_empty() {
            cluster_facts::follow_pod_cidrs(client.clone(), cluster)
        } else {
            cluster_facts::fixed(cluster)
        },
        system_roots: egress_operator::system_roots(args.client_roots.as_deref())?.into(),
        network_policy_enforcer: Some(args.network_policy_enforcer.trim().to_owned())
            .filter(|name| !name.is_empty()),
        dns_selector: egress_operator::parse_labels(&args.dns_selector)
            .context("--dns-selector")?,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "egress-operator".to_owned(),
            instance: Some(identity.clone()),
        },
    );

    // The webhook runs on every replica; the leader keeps its certificate.
    let webhook_cert = match (args.webhook_listen, args.webhook_certificates) {
        (Some(_), WebhookCertificates::Operator) => Some(WebhookCert {
            namespace: args.namespace.clone(),
            secret: args.webhook_secret.clone(),
            service: args.webhook_service.clone(),
            hosts: args.webhook_hosts.clone(),
            cluster_domain: args.cluster_domain.clone(),
            configuration: args.webhook_configuration.clone(),
        }),
        _ => None,
    };
    match args.webhook_listen {
        Some(address) => {
            let webhook = Webhook::start(
                client.clone(),
                client_settings.cluster.clone(),
                &args.namespace,
                &args.webhook_secret,
                metrics.clone(),
            );
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (webhook)"))?;
            tracing::info!(listener = "webhook", address = %listener.local_addr()?, "listening");
            let ready = ready.clone();
            tokio::spawn(async move {
                webhook.ready().await;
                tracing::info!("webhook ready");
                ready.set(true);
                if let Err(error) = webhook::serve(listener, webhook).await {
                    tracing::error!(%error, "webhook stopped");
                }
            });
        }
        None => ready.set(true),
    }

    let manage_pod_reader_role = args.manage_pod_reader_role;
    let secrets_opt_in = SecretsOptIn {
        role: args.secrets_role.clone(),
        service_account: args.service_account.clone(),
    };
    let lead = |stop: CancellationToken| {
        let (client, metrics, settings, client_settings, recorder, webhook_cert, secrets_opt_in) = (
            client.clone(),
            metrics.clone(),
            settings.clone(),
            client_settings.clone(),
            recorder.clone(),
            webhook_cert.clone(),
            secrets_opt_in.clone(),
        );
        async move {
            if manage_pod_reader_role {
                egress_operator::ensure_pod_reader_role(&client).await?;
            }
            if let Some(cert) = webhook_cert {
                tokio::spawn(webhook_cert::maintain(client.clone(), cert, stop.clone()));
            }
            run::controllers(
                client.clone(),
                |caches| Context {
                    client,
                    proxies: caches.proxies,
                    configurations: caches.configurations,
                    groups: caches.groups,
                    lists: caches.lists,
                    cluster_groups: caches.cluster_groups,
                    cluster_lists: caches.cluster_lists,
                    recorder,
                    metrics,
                    settings,
                    clients: caches.clients,
                    client_settings,
                    secrets_opt_in,
                },
                stop,
            )
            .await
        }
    };

    if !args.leader_election {
        metrics.leader.set(1);
        return lead(shutdown).await;
    }
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration)
        .with_grace((args.lease_duration / 3).max(1))
        .build()
        .await
        .context("cannot set up leader election")?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(lease = %args.lease_name, namespace = %args.namespace, %identity, "waiting to lead");
    while !*leading.borrow_and_update() {
        tokio::select! {
            _ = shutdown.cancelled() => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("leader election stopped");
                }
            }
        }
    }
    tracing::info!(%identity, "leading");
    metrics.leader.set(1);
    let stop = shutdown.child_token();
    let controllers = lead(stop.clone());
    tokio::pin!(controllers);
    let outcome = tokio::select! {
        result = &mut controllers => result,
        () = lost(&mut leading) => {
            stop.cancel();
            let _ = controllers.await;
            Err(anyhow::anyhow!("lost the lease: exiting so that a fresh start can compete again"))
        }
    };
    metrics.leader.set(0);
    // Dropping the channel releases the lease at once, so a follower takes
    // over without waiting for it to expire.
    drop(leading);
    let _ = lease_task.await;
    tracing::info!("lease released");
    outcome
}

/// Completes when this replica stops holding the lease.
async fn lost(leading: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if leading.changed().await.is_err() || !*leading.borrow_and_update() {
            return;
        }
    }
}
