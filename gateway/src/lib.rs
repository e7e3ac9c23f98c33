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
//! The parts, each a folder, from the top: [`listeners`] (accepting, what
//! kind of request each is and how it is carried through, and the admin
//! listener) and [`sources`] (policy, certificates and pod identity, from
//! files or the API) work on [`gateway`], the state every connection
//! shares, which holds handles of the parts below it: [`pipeline`] (the
//! decision sequence, which `policy eval` drives too, and the decision log),
//! [`upstream`] (DNS, connections and HTTP to the destination), [`relay`]
//! (bytes copied both ways), [`tls`] (interception, the HTTPS listener's
//! certificate, the ClientHello reader) and [`metrics`]. [`request`] holds
//! the words they share; every failure is an [`error::Error`]. No part
//! imports one above it.

pub mod args;
pub mod dev;
pub mod error;
pub mod framing;
pub mod gateway;
pub mod http_util;
pub mod listeners;
pub mod metrics;
pub mod observed;
pub mod pipeline;
pub mod policy_cli;
pub mod relay;
pub mod request;
pub mod sources;
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

use crate::args::{RunArgs, SourceKind};
use crate::gateway::Gateway;
use crate::gateway::credentials::Secrets;
use crate::gateway::health::Health;
use crate::gateway::identity::Identities;
use crate::gateway::policy_store::PolicyStore;
use crate::metrics::Metrics;
use crate::pipeline::Guard;
use crate::pipeline::decision_log::DecisionLog;
use crate::request::Listener;
use crate::tls::ServingCert;
use crate::tls::authority::InterceptAuthority;
use crate::upstream::dns::{Pin, Resolver};
use crate::upstream::{Connector, Pool};

/// Options only the `dev` command sets.
#[derive(Clone, Debug, Default)]
pub struct DevOptions {
    /// Private ranges reachable on top of the policy's (the demo upstream).
    pub private_allow: Vec<IpNet>,
}

/// Each connection holds up to two sockets (client and upstream), and
/// spliced tunnels share up to `relay::splice::MAX_PIPES` pipes. Raises the
/// soft open-file limit to the hard one, as Go programs and nginx's
/// `worker_rlimit_nofile` do, and warns when even that cannot hold
/// `--max-connections`: past it, accepts fail instead of clients queueing.
#[cfg(target_os = "linux")]
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // `None` is unlimited.
    if let Rlimit {
        current: Some(soft),
        maximum: Some(hard),
    } = getrlimit(Resource::Nofile)
        && soft < hard
    {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    let Some(open_files) = getrlimit(Resource::Nofile).current else {
        return;
    };
    // Two sockets per connection, the spliced tunnels' pipes, and the rest.
    let needed = 2 * (max_connections + relay::splice::MAX_PIPES) as u64 + 64;
    if open_files < needed {
        tracing::warn!(
            open_file_limit = open_files,
            max_connections,
            "the open-file limit holds about {} connections (two sockets each), fewer than --max-connections; raise it (ulimit -n, or the container runtime's limit) or lower --max-connections",
            (open_files.saturating_sub(64) / 2).saturating_sub(relay::splice::MAX_PIPES as u64)
        );
    }
}

/// Runs the gateway until SIGTERM or SIGINT (a second one stops at once).
pub async fn run(args: RunArgs, dev: DevOptions) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    raise_open_file_limit(args.limits.max_connections);
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let registry = Arc::new(registry);

    let kubernetes = args.source == SourceKind::Kubernetes;
    let origin = match (&args.policy, &args.proxy) {
        (Some(path), _) if !kubernetes => format!("file {}", path.display()),
        (_, Some(proxy)) => format!(
            "ConfigMap {}/{}",
            args.namespace,
            egress_policy::objects::policy_config_map(proxy)
        ),
        _ => anyhow::bail!(
            "--policy is required with --source file (the default); --proxy with --source kubernetes"
        ),
    };
    let policy = PolicyStore::new(origin, args.policy_shrink_warning, metrics.clone());
    let intercept = InterceptAuthority::new(args.intercept.cert_cache_size, metrics.clone())?;
    let serving = args.https_listen.map(|_| Arc::new(ServingCert::default()));
    if !kubernetes {
        sources::file::load_at_start(&args, &policy, &intercept, serving.as_deref())?;
    }
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

    let draining = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let gw = Arc::new(Gateway {
        policy,
        resolver,
        intercept,
        serving: serving.clone(),
        source: Health::new(if kubernetes { "kubernetes" } else { "file" }),
        waits_for_material: kubernetes,
        identifies_clients: kubernetes && args.pod_identity,
        identities: Identities::default(),
        secrets: Secrets::default(),
        upstream: Connector::new(upstream_tls, &args.limits, metrics.clone()),
        upstream_pool: Pool::default(),
        log: DecisionLog::to_stdout(metrics.clone()),
        metrics: metrics.clone(),
        limits: args.limits.clone(),
        // The proxy's name comes with the first policy.
        names: std::sync::RwLock::new(pipeline::ProxyNames::named(
            "",
            Arc::from(args.cluster_name.as_str()),
        )),
        guard: Guard {
            own_addresses: own_addresses.clone(),
            extra_allowed: dev.private_allow,
        },
        tasks: TaskTracker::new(),
        #[cfg(target_os = "linux")]
        relays: relay_loops(&args)?,
        draining: draining.clone(),
        shutdown: shutdown.clone(),
    });

    if kubernetes {
        let client = egress_runtime::kube_client(args.kubeconfig.as_deref()).await?;
        let target = sources::kube::Target {
            proxy: args.proxy.clone().unwrap_or_default(),
            namespace: args.namespace.clone(),
        };
        sources::kube::start(&gw, client, &target, serving.clone(), args.pod_identity);
    } else {
        sources::file::watch(&gw, &args);
    }

    let mut listeners = vec![listeners::server::Listening {
        socket: http_listener,
        kind: Listener::Http,
        tls: None,
    }];
    tracing::info!(listener = "http", address = %own_addresses[0], "listening");
    if let (Some(socket), Some(serving)) = (https_listener, serving) {
        tracing::info!(listener = "https", address = %socket.local_addr()?, "listening");
        listeners.push(listeners::server::Listening {
            socket,
            kind: Listener::Https,
            tls: Some(serving.server_config()?),
        });
    }
    // Idle upstream connections nobody asks for again are closed on time.
    let sweeping = gw.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(upstream::pool::IDLE_TIMEOUT / 2);
        loop {
            tokio::select! {
                _ = every.tick() => sweeping.upstream_pool.sweep(),
                () = sweeping.shutdown.cancelled() => return,
            }
        }
    });
    let accept_loop = tokio::spawn(listeners::server::serve(
        gw.clone(),
        listeners,
        args.limits.max_connections,
    ));
    tracing::info!(listener = "admin", address = %admin_listener.local_addr()?, "listening");
    let admin = tokio::spawn(listeners::admin::serve(
        gw.clone(),
        admin_listener,
        registry,
    ));

    egress_runtime::signal::terminated().await;
    draining.cancel();
    // A second signal, during the delay or the drain, cuts what is open.
    let mut cut = false;
    let delay = gw.limits.shutdown_delay;
    if !delay.is_zero() {
        tracing::info!(
            ?delay,
            "stopping: not ready, still accepting while endpoints drop this gateway"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = egress_runtime::signal::terminated() => cut = true,
        }
    }
    shutdown.cancel();
    // The accept loop owns the listeners: once it has returned they are
    // closed, and the line below is true.
    let _ = accept_loop.await;
    gw.tasks.close();
    if cut {
        tracing::warn!(
            open = gw.tasks.len(),
            "second signal: cutting open connections"
        );
    } else {
        tracing::info!(grace = ?gw.limits.shutdown_grace, "shutting down: no new connections, draining open ones");
        tokio::select! {
            _ = gw.tasks.wait() => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(gw.limits.shutdown_grace) => {
                tracing::warn!(open = gw.tasks.len(), "grace period over: cutting open connections");
            }
            _ = egress_runtime::signal::terminated() => tracing::warn!(open = gw.tasks.len(), "second signal: cutting open connections"),
        }
    }
    admin.abort();
    gw.log.drain(std::time::Duration::from_secs(5));
    Ok(())
}

/// The relay loops `--relay-threads` asks for, by default half the worker
/// threads (as many as CPUs the process may use, unless set).
#[cfg(target_os = "linux")]
fn relay_loops(args: &RunArgs) -> anyhow::Result<relay::loops::RelayLoops> {
    let threads = args.relay_threads.unwrap_or_else(|| {
        let workers = args.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        relay::loops::RelayLoops::default_threads(workers)
    });
    relay::loops::RelayLoops::start(threads).context("cannot start the relay threads")
}
