//! `egress-gateway dev`: everything needed to see the three phases at work on
//! one machine without a cluster or the internet. It writes a development CA,
//! starts a demo HTTPS upstream on 127.0.0.1 answering for www.example.com, pins
//! that name to it, and runs the gateway on loopback with interception.
//!
//! The demo upstream is on a private address; `dev` alone lets the gateway
//! reach 127.0.0.1 (the `run` command only follows the policy's
//! `allowPrivateCIDRs`).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::args::{DevArgs, InterceptArgs, LimitArgs, RunArgs};
use crate::error::Error;
use crate::http_util::{Body, full};
use crate::tls::ServingCert;
use crate::tls::authority::{InterceptCa, write_dev_ca, write_file};
use crate::{DevOptions, run};

/// The name the demo upstream answers for.
pub const DEMO_HOST: &str = "www.example.com";

/// Runs `dev`.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let (ca_files, root) = write_dev_ca(&args.dir).context("cannot write the development CA")?;
    let ca = InterceptCa::load(&ca_files)?;
    let write_pair = |name: &str, names: &[&str]| -> Result<(PathBuf, PathBuf), Error> {
        let (chain, key) = ca.issue_pem(names)?;
        let cert_path = args.dir.join(format!("{name}.pem"));
        let key_path = args.dir.join(format!("{name}.key"));
        write_file(&cert_path, &chain, false)?;
        write_file(&key_path, &key, true)?;
        Ok((cert_path, key_path))
    };
    let (listener_cert, listener_key) = write_pair("proxy-tls", &["localhost", "127.0.0.1"])?;
    let (upstream_cert, upstream_key) = write_pair("demo-upstream", &[DEMO_HOST, "example.com"])?;

    let upstream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.upstream_port));
    let upstream = TcpListener::bind(upstream_addr)
        .await
        .with_context(|| format!("cannot listen on {upstream_addr} for the demo upstream"))?;
    let upstream_tls = Arc::new(ServingCert::load(&upstream_cert, &upstream_key)?);
    tokio::spawn(demo_upstream(upstream, upstream_tls.server_config()?));

    print_guide(&args, &root);
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let run_args = RunArgs {
        source: crate::args::SourceKind::File,
        policy: Some(args.policy.clone()),
        proxy: None,
        namespace: "default".to_owned(),
        secrets_dir: None,
        kubeconfig: None,
        pod_identity: false,
        http_listen: loopback(args.http_port),
        https_listen: Some(loopback(args.https_port)),
        tls_cert: Some(listener_cert),
        tls_key: Some(listener_key),
        admin_listen: loopback(args.admin_port),
        intercept: InterceptArgs {
            intercept_ca_cert: Some(ca_files.cert),
            intercept_ca_key: Some(ca_files.key),
            intercept_ca_chain: ca_files.chain,
            cert_cache_size: 10_000,
        },
        upstream_ca: Some(root),
        resolve: vec![
            format!("{DEMO_HOST}:*:127.0.0.1"),
            "example.com:*:127.0.0.1".to_owned(),
        ],
        dns_server: None,
        dns_timeout: std::time::Duration::from_secs(5),
        cluster_name: "dev".to_owned(),
        limits: LimitArgs {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_timeout: std::time::Duration::from_secs(30),
            handshake_timeout: std::time::Duration::from_secs(10),
            connect_timeout: std::time::Duration::from_secs(10),
            upstream_response_timeout: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(300),
            shutdown_delay: std::time::Duration::ZERO,
            shutdown_grace: std::time::Duration::from_secs(5),
        },
        worker_threads: None,
        relay_threads: None,
        file_poll_interval: std::time::Duration::from_secs(1),
        file_settle: std::time::Duration::from_millis(500),
        policy_shrink_warning: 0.5,
    };
    let dev = DevOptions {
        private_allow: vec!["127.0.0.1/32".parse().context("loopback net")?],
    };
    run(run_args, dev).await
}

fn print_guide(args: &DevArgs, root: &Path) {
    let root = root.display();
    let http = format!("http://127.0.0.1:{}", args.http_port);
    let https = format!("https://localhost:{}", args.https_port);
    let site = format!("https://{DEMO_HOST}:{}", args.upstream_port);
    eprintln!(
        "
egress-gateway dev: policy {policy} (edits are picked up live)
  development root CA (trust it): {root}
  demo upstream for {DEMO_HOST}:  127.0.0.1:{up} (pinned; the only private address dev allows)
  listeners: HTTP {http}   HTTPS {https}   admin http://127.0.0.1:{admin}/readyz
  decision log: one JSON line per request on stdout

Try each phase of the seed policy (examples/seed-policy.yaml):
  # allowed: 200 from the demo upstream, through an intercepted tunnel
  curl --proxy {http} --cacert {root} {site}/
  # PreDNS deny of .example.org: curl reports the CONNECT 403
  curl --proxy {http} --cacert {root} https://www.example.org/
  # PreREQUEST deny of */files/*: 403 inside the intercepted tunnel
  curl --proxy {http} --cacert {root} {site}/files/report.pdf
  # PostRESPONSE deny of status 404: the 404 is replaced by a 403
  curl --proxy {http} --cacert {root} {site}/missing
  # the same through the HTTPS listener (TLS to the proxy too)
  curl --proxy {https} --proxy-cacert {root} --cacert {root} {site}/
",
        policy = args.policy.display(),
        up = args.upstream_port,
        admin = args.admin_port,
    );
}

/// The demo upstream: `/` and `/files/...` answer 200, anything else 404
/// (also the demo destination of `egress-demo`).
pub async fn demo_upstream(listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(stream) = TlsAcceptor::from(tls).accept(stream).await else {
                return;
            };
            let service = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(demo_response(&req))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn demo_response(req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let (status, text) = if path == "/" {
        (
            StatusCode::OK,
            "Hello from the demo upstream (www.example.com).\n".to_owned(),
        )
    } else if path.starts_with("/files/") {
        (StatusCode::OK, format!("Contents of {path}\n"))
    } else {
        (StatusCode::NOT_FOUND, format!("{path} is not here\n"))
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}
