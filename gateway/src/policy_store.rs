//! The policy in force: loaded from a file, swapped atomically when the file
//! changes, and never replaced by a version that does not compile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use egress_policy::{CompiledPolicy, compile_documents};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, PolicyLabels};

/// Reads a policy file: compiled policy JSON (what the operator writes) when
/// it is a JSON object with `formatVersion`, CRD YAML documents otherwise (a
/// YAML flow mapping may start with `{` too). Errors are one per line.
pub fn load_policy_file(path: &Path, proxy: Option<&str>) -> Result<CompiledPolicy, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let compiled = serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v.get("formatVersion").is_some());
    if compiled {
        CompiledPolicy::from_json(&text).map_err(|e| vec![e.to_string()])
    } else {
        compile_documents(&text, proxy)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }
}

/// The current policy and where it comes from.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    proxy: Option<String>,
    current: RwLock<Option<Loaded>>,
    metrics: Arc<Metrics>,
}

/// A policy with when it was loaded.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The policy.
    pub policy: Arc<CompiledPolicy>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

impl PolicyStore {
    /// A store for `path`; nothing is loaded yet.
    pub fn new(path: PathBuf, proxy: Option<String>, metrics: Arc<Metrics>) -> PolicyStore {
        PolicyStore {
            path,
            proxy,
            current: RwLock::new(None),
            metrics,
        }
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy in force, if one ever loaded.
    pub fn current(&self) -> Option<Arc<CompiledPolicy>> {
        self.loaded().map(|l| l.policy)
    }

    /// The policy in force with its load time.
    pub fn loaded(&self) -> Option<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the file. A policy that does not compile is reported, counted,
    /// and does not replace the one in force.
    pub fn reload(&self) -> Result<Arc<CompiledPolicy>, Vec<String>> {
        match load_policy_file(&self.path, self.proxy.as_deref()) {
            Ok(policy) => {
                let policy = Arc::new(policy);
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                let unchanged = current
                    .as_ref()
                    .is_some_and(|c| c.policy.hash() == policy.hash());
                if !unchanged {
                    self.metrics.policy_info.clear();
                    self.metrics
                        .policy_info
                        .get_or_create(&PolicyLabels {
                            format_version: policy.format_version().to_string(),
                            hash: policy.hash().to_owned(),
                            configuration: policy.configuration().to_owned(),
                        })
                        .set(1);
                    self.metrics.policy_reloads.inc();
                    *current = Some(Loaded {
                        policy: policy.clone(),
                        loaded_at: SystemTime::now(),
                    });
                    tracing::info!(
                        path = %self.path.display(),
                        configuration = policy.configuration(),
                        hash = policy.hash(),
                        proxy = policy.proxy().name(),
                        "policy loaded"
                    );
                }
                Ok(policy)
            }
            Err(errors) => {
                self.metrics.policy_reload_failures.inc();
                let keeping = self.current().map(|p| p.hash().to_owned());
                for error in &errors {
                    tracing::error!(path = %self.path.display(), %error, "policy rejected");
                }
                match keeping {
                    Some(hash) => tracing::warn!(%hash, "the previous policy keeps serving"),
                    None => tracing::warn!(
                        "no valid policy yet: requests are refused with 503 and /readyz fails"
                    ),
                }
                Err(errors)
            }
        }
    }
}

/// Calls `on_change` whenever one of `paths` changes (modification time, size
/// or inode, following symlinks: ConfigMap and Secret volumes swap a symlink),
/// checking every `interval` until `stop`.
pub fn watch_files(
    paths: Vec<PathBuf>,
    interval: Duration,
    stop: CancellationToken,
    on_change: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Vec<Option<Stamp>> = paths.iter().map(|p| stamp(p)).collect();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now: Vec<Option<Stamp>> = paths.iter().map(|p| stamp(p)).collect();
            if now != last {
                last = now;
                on_change();
            }
        }
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}
