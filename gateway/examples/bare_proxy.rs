//! The least a forward proxy on hyper and tokio does per plain HTTP request:
//! parse it, send it on over a connection kept for the client connection,
//! stream the answer back. No policy, no decision line, no identity, no
//! limits: what the gateway's own work per request is measured against
//! (docs/benchmarks.md, "Ceilings on this machine"). Not a proxy to run.
//!
//!     cargo build --release -p egress-gateway --examples
//!     target/release/examples/bare_proxy LISTEN_ADDR UPSTREAM_ADDR
//!
//! Every request goes to UPSTREAM_ADDR whatever its target; in the peer
//! benchmark (as root, like the script; with sudo, pass the variables
//! through `sudo env ...`), beside direct access and nginx as a proxy:
//!
//!     PEERS="direct nginx-proxy candidate" CANDIDATE_NAME=bare-proxy CANDIDATE_MODES=http \
//!       CANDIDATE_CMD="exec target/release/examples/bare_proxy 127.0.0.1:\$CANDIDATE_PORT 127.0.0.1:18080" \
//!       bench/peer-proxies.sh

use std::io;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let upstream: Arc<str> = upstream.into();
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        tokio::spawn(serve(client, upstream.clone()));
    }
}

/// One client connection, its requests sent on over one upstream connection.
async fn serve(client: TcpStream, upstream: Arc<str>) {
    let kept = Arc::new(Mutex::new(None::<SendRequest<Incoming>>));
    let service =
        hyper::service::service_fn(move |request| forward(kept.clone(), upstream.clone(), request));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await;
}

async fn forward(
    kept: Arc<Mutex<Option<SendRequest<Incoming>>>>,
    upstream: Arc<str>,
    request: Request<Incoming>,
) -> io::Result<Response<Incoming>> {
    let mut kept = kept.lock().await;
    let sender = match kept.take() {
        Some(sender) if !sender.is_closed() => sender,
        _ => connect(&upstream).await?,
    };
    let sender = kept.insert(sender);
    sender.ready().await.map_err(io::Error::other)?;
    let (mut parts, body) = request.into_parts();
    // Origin-form for the upstream.
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse::<Uri>().map_err(io::Error::other)?;
    sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(io::Error::other)
}

async fn connect(upstream: &str) -> io::Result<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}
