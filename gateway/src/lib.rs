//! The egress-proxy gateway: the data plane.
//!
//! This crate owns the network side of a policy decision: the client-facing
//! listeners (plain HTTP and TLS to the proxy), CONNECT and absolute-form
//! handling, name resolution, TLS interception with leaf certificates minted
//! on the fly, upstream connections with verified TLS, the decision log,
//! metrics and the admin endpoints. What a policy *means* is the
//! `egress-policy` crate's business; this crate must not decide anything the
//! policy crate can decide as a pure function.
//!
//! A request flows [`server`] -> [`handler`] -> [`connect`] (then [`relay`] or
//! [`intercept`]) or [`forward`]; both end in [`http_exchange`] for HTTP. The
//! decision sequence is [`pipeline`], which `policy eval` drives too. The
//! policy comes from a source ([`file_source`]) through [`policy_store`]; every
//! failure is an [`error::Error`].

pub mod admin;
pub mod args;
pub mod connect;
pub mod decision_log;
pub mod dev;
pub mod dns;
pub mod error;
pub mod file_source;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod handler;
pub mod http_exchange;
pub mod http_util;
pub mod idle;
pub mod intercept;
pub mod metrics;
pub mod pipeline;
pub mod policy_cli;
pub mod policy_store;
pub mod relay;
pub mod server;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use ipnet::IpNet;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::RunArgs;
use crate::decision_log::DecisionLog;
use crate::dns::{Pin, Resolver};
use crate::file_source::{Watch, load_policy_file, watch_files};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::pipeline::{Guard, Listener};
use crate::policy_store::PolicyStore;
use crate::tls::ServingCert;
use crate::tls::authority::{CaFiles, InterceptAuthority};

/// Options only the `dev` command sets.
#[derive(Clone, Debug, Default)]
pub struct DevOptions {
    /// Private ranges reachable on top of the policy's (the demo upstream).
    pub private_allow: Vec<IpNet>,
}

/// Runs the gateway until SIGTERM or SIGINT (a second one stops at once).
pub async fn run(args: RunArgs, dev: DevOptions) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let registry = Arc::new(registry);

    let policy = PolicyStore::new(
        format!("file {}", args.policy.display()),
        args.policy_shrink_warning,
        metrics.clone(),
    );
    // A bad policy at start is reported; the gateway runs unready until it is fixed.
    let initial = policy
        .install(load_policy_file(&args.policy, args.proxy.as_deref()))
        .ok();

    let intercept = match (
        &args.intercept.intercept_ca_cert,
        &args.intercept.intercept_ca_key,
    ) {
        (Some(cert), Some(key)) => {
            let files = CaFiles {
                cert: cert.clone(),
                key: key.clone(),
                chain: args.intercept.intercept_ca_chain.clone(),
            };
            let authority =
                InterceptAuthority::load(files, args.intercept.cert_cache_size, metrics.clone())
                    .context("the interception sub-CA cannot be used")?;
            Some(authority)
        }
        _ => None,
    };
    if intercept.is_none()
        && initial
            .as_ref()
            .is_some_and(|p| p.proxy().settings().intercept)
    {
        tracing::warn!(
            "the policy turns TLS interception on but no --intercept-ca-cert/--intercept-ca-key was given: \
             CONNECT requests to intercepted names will fail with 502"
        );
    }
    let serving = match (&args.https_listen, &args.tls_cert, &args.tls_key) {
        (Some(_), Some(cert), Some(key)) => Some(Arc::new(
            ServingCert::load(cert, key)
                .context("the HTTPS listener's certificate cannot be used")?,
        )),
        _ => None,
    };
    let upstream_tls = tls::upstream_client_config(args.upstream_ca.as_deref())
        .context("upstream TLS trust cannot be set up")?;
    let pins = args
        .resolve
        .iter()
        .map(|p| p.parse::<Pin>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resolver = Resolver::new(pins, args.dns_server.as_deref(), args.dns_timeout)
        .map_err(anyhow::Error::msg)?;

    let bind = |addr: SocketAddr, what: &str| {
        let what = what.to_owned();
        async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({what})"))
        }
    };
    let http_listener = bind(args.http_listen, "HTTP listener").await?;
    let https_listener = match args.https_listen {
        Some(addr) => Some(bind(addr, "HTTPS listener").await?),
        None => None,
    };
    let admin_listener = bind(args.admin_listen, "admin listener").await?;
    let mut own_addresses = vec![http_listener.local_addr()?];
    if let Some(l) = &https_listener {
        own_addresses.push(l.local_addr()?);
    }
    own_addresses.push(admin_listener.local_addr()?);

    let shutdown = CancellationToken::new();
    let gw = Arc::new(Gateway {
        policy,
        resolver,
        intercept,
        upstream_tls,
        log: DecisionLog::to_stdout(metrics.clone()),
        metrics: metrics.clone(),
        limits: args.limits.clone(),
        cluster_name: Arc::from(args.cluster_name.as_str()),
        guard: Guard {
            own_addresses: own_addresses.clone(),
            extra_allowed: dev.private_allow,
        },
        tasks: TaskTracker::new(),
        shutdown: shutdown.clone(),
    });

    start_watchers(&gw, &args, serving.clone());

    let mut listeners = vec![server::Listening {
        socket: http_listener,
        kind: Listener::Http,
        tls: None,
    }];
    tracing::info!(listener = "http", address = %own_addresses[0], "listening");
    if let (Some(socket), Some(serving)) = (https_listener, serving) {
        tracing::info!(listener = "https", address = %socket.local_addr()?, "listening");
        listeners.push(server::Listening {
            socket,
            kind: Listener::Https,
            tls: Some(serving.server_config()?),
        });
    }
    let accept_loop = tokio::spawn(server::serve(
        gw.clone(),
        listeners,
        args.limits.max_connections,
    ));
    tracing::info!(listener = "admin", address = %admin_listener.local_addr()?, "listening");
    let admin = tokio::spawn(admin::serve(gw.clone(), admin_listener, registry));

    wait_for_signal().await;
    tracing::info!(grace = ?gw.limits.shutdown_grace, "shutting down: no new connections, draining open ones");
    shutdown.cancel();
    let _ = accept_loop.await;
    gw.tasks.close();
    tokio::select! {
        _ = gw.tasks.wait() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(gw.limits.shutdown_grace) => {
            tracing::warn!(open = gw.tasks.len(), "grace period over: cutting open connections");
        }
        _ = wait_for_signal() => tracing::warn!(open = gw.tasks.len(), "second signal: cutting open connections"),
    }
    admin.abort();
    gw.log.drain(std::time::Duration::from_secs(5));
    Ok(())
}

/// Reloads the policy, the sub-CA and the serving certificate when their files change.
fn start_watchers(gw: &Arc<Gateway>, args: &RunArgs, serving: Option<Arc<ServingCert>>) {
    let watch = Watch {
        interval: args.file_poll_interval,
        settle: args.file_settle,
    };
    let watched_gw = gw.clone();
    let (path, proxy) = (args.policy.clone(), args.proxy.clone());
    watch_files(
        vec![args.policy.clone()],
        watch,
        gw.shutdown.clone(),
        move || {
            let _ = watched_gw
                .policy
                .install(load_policy_file(&path, proxy.as_deref()));
        },
    );
    if let Some(authority) = &gw.intercept {
        let watched_gw = gw.clone();
        watch_files(
            authority.files().paths(),
            watch,
            gw.shutdown.clone(),
            move || {
                let Some(authority) = &watched_gw.intercept else {
                    return;
                };
                match authority.reload() {
                    Ok(subject) => {
                        tracing::info!(%subject, "interception sub-CA reloaded; minted leaves dropped")
                    }
                    Err(e) => {
                        watched_gw.metrics.tls_reload_failures.inc();
                        tracing::error!(error = %e, "interception sub-CA rejected; the previous one keeps serving");
                    }
                }
            },
        );
    }
    if let (Some(serving), Some(cert), Some(key)) =
        (serving, args.tls_cert.clone(), args.tls_key.clone())
    {
        let watched_gw = gw.clone();
        watch_files(
            vec![cert.clone(), key.clone()],
            watch,
            gw.shutdown.clone(),
            move || match serving.reload(&cert, &key) {
                Ok(()) => tracing::info!("HTTPS listener certificate reloaded"),
                Err(e) => {
                    watched_gw.metrics.tls_reload_failures.inc();
                    tracing::error!(error = %e, "HTTPS listener certificate rejected; the previous one keeps serving");
                }
            },
        );
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
