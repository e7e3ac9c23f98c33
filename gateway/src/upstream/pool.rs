//! Idle upstream HTTP/1.1 connections, shared by every client connection of
//! one client: a client that opens a connection per request still reuses
//! the gateway's connection to the destination (no TCP or TLS handshake
//! with it per request).
//!
//! A connection is handed only to requests of the client it served: the
//! same address and the same pod identity. A request that desynchronises a
//! destination (a body it reads as a second request) so reaches no one
//! else's response, and a credential the gateway added to one client's
//! requests never rides in front of another client's. hyper hands a
//! connection back only once its last response was read to the end and
//! nothing more arrived; a response dropped unread, a framing error or
//! unexpected bytes close it, and an upgraded connection is never put back.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egress_policy::SourceIdentity;
use hyper::client::conn::http1::SendRequest;

use crate::http_util::Body;
use crate::request::Client;

/// Idle connections kept to one destination for one client.
pub const MAX_IDLE_PER_DESTINATION: usize = 32;

/// Idle connections kept in all.
pub const MAX_IDLE: usize = 256;

/// How long an idle connection is kept: less than the servers' own keep-alive
/// time (5 s for Apache and Node.js, 75 s for nginx), so that a request
/// seldom goes out on a connection the server is closing at that moment.
/// Clients that open a connection per request come back within it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Who a connection serves and where it leads: two connections with the
/// same key are interchangeable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The client it serves.
    pub client: Owner,
    /// Address dialed.
    pub ip: IpAddr,
    /// Port dialed.
    pub port: u16,
    /// TLS server name, `None` for plain HTTP (the trusted roots are the
    /// gateway's, the same for every connection).
    pub tls_name: Option<String>,
}

/// A client: its address and the pod identity the gateway found for it
/// when its connection arrived. Identities are compared as the index's
/// objects (a pod relabelled or replaced is another owner); the key keeps
/// its identity alive, so an address is never reused for another. Where the
/// gateway identifies pods and knows none at the address (host-network
/// pods, clients behind a NAT, a pod the index has not seen yet), the
/// owner is the client connection alone.
#[derive(Clone, Debug)]
pub struct Owner {
    ip: IpAddr,
    identity: Option<Arc<SourceIdentity>>,
    /// 0, or the client connection's own number.
    connection: u64,
}

impl Owner {
    /// The owner of a client connection from `ip`, of pod `identity`.
    pub fn new(ip: IpAddr, identity: Option<Arc<SourceIdentity>>) -> Owner {
        Owner {
            ip,
            identity,
            connection: 0,
        }
    }

    /// The owner of `client`'s connection; when `identifies_clients` and the
    /// client has no identity, that connection alone.
    pub fn of(client: &Client, identifies_clients: bool) -> Owner {
        static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
        let mut owner = Owner::new(client.addr.ip(), client.identity.clone());
        if identifies_clients && owner.identity.is_none() {
            owner.connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        }
        owner
    }

    fn identity_ptr(&self) -> *const SourceIdentity {
        self.identity.as_ref().map_or(std::ptr::null(), Arc::as_ptr)
    }
}

impl PartialEq for Owner {
    fn eq(&self, other: &Owner) -> bool {
        self.ip == other.ip
            && self.connection == other.connection
            && std::ptr::eq(self.identity_ptr(), other.identity_ptr())
    }
}

impl Eq for Owner {}

impl Hash for Owner {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ip.hash(state);
        self.connection.hash(state);
        std::ptr::hash(self.identity_ptr(), state);
    }
}

/// The idle connections, by key.
#[derive(Debug, Default)]
pub struct Pool {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    idle: HashMap<PoolKey, Vec<Idle>>,
    count: usize,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < IDLE_TIMEOUT
    }
}

impl Pool {
    /// A connection to `key` that can take a request now.
    pub fn take(&self, key: &PoolKey) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut state = self.lock();
        let senders = state.idle.get_mut(key)?;
        let before = senders.len();
        senders.retain(|idle| idle.usable(now));
        let taken = senders
            .iter()
            .position(|idle| idle.sender.is_ready())
            .map(|position| senders.swap_remove(position).sender);
        let removed = before - senders.len();
        if senders.is_empty() {
            state.idle.remove(key);
        }
        state.count -= removed;
        taken
    }

    /// Keeps a connection that has just received a response head: it can
    /// take another request once that response's body is read to the end.
    /// Past the bounds it is dropped (and so closed once its response ends).
    pub fn put(&self, key: PoolKey, sender: SendRequest<Body>) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.count >= MAX_IDLE {
            // Full: what is closed or expired makes room first.
            state.sweep(now);
            if state.count >= MAX_IDLE {
                return;
            }
        }
        let senders = state.idle.entry(key).or_default();
        if senders.len() >= MAX_IDLE_PER_DESTINATION {
            return;
        }
        senders.push(Idle { sender, since: now });
        state.count += 1;
    }

    /// Drops closed and expired connections of every destination (the
    /// gateway calls it every half idle timeout: connections to
    /// destinations no request goes to again are closed on time).
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now());
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.lock().count
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Drops closed and expired connections of every key.
    fn sweep(&mut self, now: Instant) {
        self.idle.retain(|_, senders| {
            senders.retain(|idle| idle.usable(now));
            !senders.is_empty()
        });
        self.count = self.idle.values().map(Vec::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to nowhere in particular (its peer never answers),
    /// ready for a request once its task has run.
    async fn connection() -> (SendRequest<Body>, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(ours))
                .await
                .expect("handshake");
        let task = tokio::spawn(async move {
            let _peer = theirs;
            let _ = connection.await;
        });
        tokio::task::yield_now().await;
        (sender, task)
    }

    fn key(client: &Owner, port: u16) -> PoolKey {
        PoolKey {
            client: client.clone(),
            ip: "192.0.2.1".parse().expect("ip"),
            port,
            tls_name: Some("example.com".to_owned()),
        }
    }

    fn pod(name: &str) -> Arc<SourceIdentity> {
        Arc::new(SourceIdentity {
            namespace: "team".to_owned(),
            service_account: "default".to_owned(),
            pod: name.to_owned(),
            labels: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_connection_goes_only_to_requests_of_the_client_it_served() {
        let pool = Pool::default();
        let address: IpAddr = "10.0.0.5".parse().expect("ip");
        let web = Owner::new(address, Some(pod("web")));
        let (sender, _task) = connection().await;
        pool.put(key(&web, 443), sender);
        // Another pod at the same address (the old one replaced), the same
        // identity as another object, another address, no identity.
        for other in [
            Owner::new(address, Some(pod("web"))),
            Owner::new("10.0.0.6".parse().expect("ip"), web.identity.clone()),
            Owner::new(address, None),
        ] {
            assert!(pool.take(&key(&other, 443)).is_none(), "{other:?}");
        }
        assert!(pool.take(&key(&web, 80)).is_none(), "another destination");
        assert!(pool.take(&key(&web, 443)).is_some());
        assert!(pool.is_empty());
    }

    #[test]
    fn an_unknown_client_keeps_its_connections_to_itself_where_pods_are_identified() {
        let client = Client::unidentified("10.0.0.5:40000");
        // Without pod identity the address is all the gateway knows.
        assert_eq!(Owner::of(&client, false), Owner::of(&client, false));
        // With it, an address no pod is known at may be many clients.
        assert_ne!(Owner::of(&client, true), Owner::of(&client, true));
        let known = Client {
            identity: Some(pod("web")),
            ..client
        };
        assert_eq!(Owner::of(&known, true), Owner::of(&known, true));
    }

    #[tokio::test]
    async fn closed_connections_are_not_handed_on() {
        let pool = Pool::default();
        let client = Owner::new("10.0.0.5".parse().expect("ip"), None);
        let (sender, task) = connection().await;
        pool.put(key(&client, 443), sender);
        task.abort();
        let _ = task.await;
        assert!(pool.take(&key(&client, 443)).is_none());
        assert!(pool.is_empty(), "dropped when seen closed");
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_per_destination_and_in_all() {
        let pool = Pool::default();
        let mut tasks = Vec::new();
        let client = Owner::new("10.0.0.5".parse().expect("ip"), None);
        for _ in 0..MAX_IDLE_PER_DESTINATION + 8 {
            let (sender, task) = connection().await;
            tasks.push(task);
            pool.put(key(&client, 443), sender);
        }
        assert_eq!(pool.len(), MAX_IDLE_PER_DESTINATION);
        for port in 0..(MAX_IDLE / MAX_IDLE_PER_DESTINATION + 2) as u16 {
            for _ in 0..MAX_IDLE_PER_DESTINATION {
                let (sender, task) = connection().await;
                tasks.push(task);
                pool.put(key(&client, 1000 + port), sender);
            }
        }
        assert_eq!(pool.len(), MAX_IDLE);
    }
}
