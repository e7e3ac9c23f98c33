//! The Secrets the policy's credentials name, into [`Secrets`]: from the API
//! a watch per Secret, by name (the gateway's Role lets it read those and no
//! other), started and stopped as policies name them; from files, a
//! directory laid out as Secret volumes are (`DIR/<secret>/<key>`), read
//! again every poll interval.
//!
//! A Secret that cannot be read leaves the last version read in place (an
//! API outage stops nothing); one that was never read, does not exist or is
//! deleted fails its credential's requests closed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::gateway::credentials::SecretState;

/// The Secrets the policy in force names.
pub fn named(gw: &Gateway) -> BTreeSet<String> {
    gw.policy
        .current()
        .map(|policy| {
            policy
                .proxy()
                .credentials()
                .iter()
                .map(|c| c.secret.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The running watches, by Secret name.
pub struct SecretWatches {
    gw: Arc<Gateway>,
    api: Api<Secret>,
    running: HashMap<String, CancellationToken>,
}

impl std::fmt::Debug for SecretWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretWatches")
            .field("secrets", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SecretWatches {
    /// None until a policy names a Secret.
    pub fn new(gw: Arc<Gateway>, client: Client, namespace: &str) -> SecretWatches {
        SecretWatches {
            gw,
            api: Api::namespaced(client, namespace),
            running: HashMap::new(),
        }
    }

    /// Watches exactly the Secrets the policy in force names.
    pub fn follow_policy(&mut self) {
        let wanted = named(&self.gw);
        self.running.retain(|name, stop| {
            let keep = wanted.contains(name);
            if !keep {
                stop.cancel();
            }
            keep
        });
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        self.gw.secrets.retain(&names);
        for name in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let stop = self.gw.shutdown.child_token();
            self.gw.tasks.spawn(watch(
                self.gw.clone(),
                self.api.clone(),
                name.clone(),
                stop.clone(),
            ));
            self.running.insert(name, stop);
        }
    }
}

async fn watch(gw: Arc<Gateway>, api: Api<Secret>, name: String, stop: CancellationToken) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // Whether this listing found it.
    let mut listed = false;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        if stop.is_cancelled() {
            return;
        }
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(secret = %name, %error, "credential Secret cannot be read");
                gw.secrets
                    .set(&name, SecretState::Unreadable(error.to_string()));
            }
            Some(Ok(Event::Init)) => listed = false,
            Some(Ok(Event::Apply(secret) | Event::InitApply(secret))) => {
                listed = true;
                gw.secrets.set(&name, SecretState::Data(data_of(&secret)));
                tracing::info!(secret = %name, "credential Secret read");
            }
            Some(Ok(Event::InitDone)) if !listed => {
                gw.secrets.set(&name, SecretState::Missing);
                tracing::warn!(secret = %name, "credential Secret not found: its requests fail until it exists");
            }
            Some(Ok(Event::InitDone)) => {}
            Some(Ok(Event::Delete(_))) => {
                gw.secrets.set(&name, SecretState::Missing);
                tracing::warn!(secret = %name, "credential Secret deleted: its requests fail until it exists again");
            }
        }
    }
}

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect()
}

/// Reads the Secrets the policy names from `dir` now, then every `interval`
/// until shutdown.
pub fn poll_dir(gw: &Arc<Gateway>, dir: &Path, interval: Duration) {
    read_dir(gw, dir);
    let (gw, dir) = (gw.clone(), dir.to_path_buf());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            read_dir(&gw, &dir);
        }
    });
}

/// Reads the Secrets the policy in force names from `dir`.
pub fn read_dir(gw: &Gateway, dir: &Path) {
    let wanted = named(gw);
    for name in &wanted {
        gw.secrets.set(name, read_secret(&dir.join(name)));
    }
    let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
    gw.secrets.retain(&names);
}

/// A Secret volume's directory: a file per key (the `..data` links and other
/// dot-names the kubelet adds are not keys).
fn read_secret(dir: &Path) -> SecretState {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SecretState::Missing,
        Err(e) => return SecretState::Unreadable(format!("{}: {e}", dir.display())),
    };
    let mut data = BTreeMap::new();
    for entry in entries.flatten() {
        let key = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if key.starts_with('.') || !path.is_file() {
            continue;
        }
        match std::fs::read(&path) {
            Ok(value) => {
                data.insert(key, value);
            }
            Err(e) => return SecretState::Unreadable(format!("{}: {e}", path.display())),
        }
    }
    SecretState::Data(data)
}
