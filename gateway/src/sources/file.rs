//! Policy and certificates from files, for standalone use (and ConfigMap or
//! Secret volumes): read when they change, once they have stopped changing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use anyhow::Context as _;
use egress_policy::{CompiledPolicy, compile_documents};
use tokio_util::sync::CancellationToken;

use crate::args::RunArgs;
use crate::gateway::Gateway;
use crate::gateway::policy_store::PolicyStore;
use crate::tls::authority::{CaFiles, InterceptAuthority};
use crate::tls::{Pem, ServingCert};

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

fn ca_files(args: &RunArgs) -> Option<CaFiles> {
    let intercept = &args.intercept;
    match (&intercept.intercept_ca_cert, &intercept.intercept_ca_key) {
        (Some(cert), Some(key)) => Some(CaFiles {
            cert: cert.clone(),
            key: key.clone(),
            chain: intercept.intercept_ca_chain.clone(),
        }),
        _ => None,
    }
}

/// Loads everything at start. A bad policy leaves the gateway unready until
/// it is fixed; bad certificates stop it (they are the operator's flags, not
/// content that changes under it).
pub fn load_at_start(
    args: &RunArgs,
    policy: &PolicyStore,
    intercept: &InterceptAuthority,
    serving: Option<&ServingCert>,
) -> anyhow::Result<()> {
    let path = args
        .policy
        .as_deref()
        .context("--policy is required with --source file")?;
    let initial = policy
        .install(load_policy_file(path, args.proxy.as_deref()))
        .ok();
    match ca_files(args) {
        Some(files) => {
            intercept
                .install(&files.read()?)
                .context("the interception sub-CA cannot be used")?;
        }
        None if initial.is_some_and(|p| p.proxy().settings().intercept) => tracing::warn!(
            "the policy turns TLS interception on but no --intercept-ca-cert/--intercept-ca-key was given: \
             CONNECT requests to intercepted names will fail with 502"
        ),
        None => {}
    }
    if let Some(serving) = serving {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            anyhow::bail!("--https-listen needs --tls-cert and --tls-key with --source file");
        };
        serving
            .install(&Pem::from_files(cert, key, None)?)
            .context("the HTTPS listener's certificate cannot be used")?;
    }
    Ok(())
}

/// Reloads the policy, the sub-CA and the serving certificate when their
/// files change.
pub fn watch(gw: &Arc<Gateway>, args: &RunArgs) {
    let watch = Watch {
        interval: args.file_poll_interval,
        settle: args.file_settle,
    };
    if let Some(dir) = &args.secrets_dir {
        super::secrets::poll_dir(gw, dir, args.file_poll_interval);
    }
    if let Some(path) = args.policy.clone() {
        let (watched, proxy) = (gw.clone(), args.proxy.clone());
        let secrets_dir = args.secrets_dir.clone();
        watch_files(vec![path.clone()], watch, gw.shutdown.clone(), move || {
            let _ = watched
                .policy
                .install(load_policy_file(&path, proxy.as_deref()));
            // The Secrets a new credential names, before its first request.
            if let Some(dir) = &secrets_dir {
                super::secrets::read_dir(&watched, dir);
            }
        });
    }
    if let Some(files) = ca_files(args) {
        let watched = gw.clone();
        watch_files(
            files.paths(),
            watch,
            gw.shutdown.clone(),
            move || match files.read().and_then(|pem| watched.intercept.install(&pem)) {
                Ok(subject) => {
                    tracing::info!(%subject, "interception sub-CA reloaded; minted leaves dropped")
                }
                Err(e) => {
                    watched.metrics.tls_reload_failures.inc();
                    tracing::error!(error = %e, "interception sub-CA rejected; the previous one keeps serving");
                }
            },
        );
    }
    if let (Some(serving), Some(cert), Some(key)) = (
        gw.serving.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
    ) {
        let watched = gw.clone();
        watch_files(
            vec![cert.clone(), key.clone()],
            watch,
            gw.shutdown.clone(),
            move || match Pem::from_files(&cert, &key, None).and_then(|pem| serving.install(&pem)) {
                Ok(()) => tracing::info!("HTTPS listener certificate reloaded"),
                Err(e) => {
                    watched.metrics.tls_reload_failures.inc();
                    tracing::error!(error = %e, "HTTPS listener certificate rejected; the previous one keeps serving");
                }
            },
        );
    }
}

/// How files are watched.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    /// How often the files are checked.
    pub interval: Duration,
    /// How long a file changed in place must hold still before it is read.
    pub settle: Duration,
}

/// Calls `on_change` whenever one of `paths` changes (modification time, size
/// or inode, following symlinks: ConfigMap and Secret volumes swap a symlink),
/// checking every `watch.interval` until `stop`.
///
/// A file replaced by a rename (a new inode: `mv`, most editors, the kubelet's
/// symlink swap) is whole the moment it appears and is read at once. A file
/// changed in place may still be being written, so it is read only after it
/// has not changed for `watch.settle`: a copy caught half-way is never
/// compiled.
pub fn watch_files(
    paths: Vec<PathBuf>,
    watch: Watch,
    stop: CancellationToken,
    on_change: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let stamps = move || -> Vec<Option<Stamp>> { paths.iter().map(|p| stamp(p)).collect() };
    tokio::spawn(async move {
        let mut last = stamps();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(watch.interval) => {}
            }
            let mut now = stamps();
            if now == last {
                continue;
            }
            if !all_replaced(&last, &now) {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(watch.settle) => {}
                    }
                    let again = stamps();
                    if again == now {
                        break;
                    }
                    now = again;
                }
            }
            last = now;
            on_change();
        }
    })
}

/// Whether every file that changed has a new inode (or appeared): replaced
/// by a rename rather than written in place.
fn all_replaced(before: &[Option<Stamp>], after: &[Option<Stamp>]) -> bool {
    before.iter().zip(after).all(|(b, a)| match (b, a) {
        (_, None) => b.is_none(),
        (None, Some(_)) => true,
        (Some(b), Some(a)) => b == a || b.inode != a.inode,
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting_watch(path: &Path, settle: Duration) -> (Arc<AtomicUsize>, CancellationToken) {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let counter = calls.clone();
        watch_files(
            vec![path.to_path_buf()],
            Watch {
                interval: Duration::from_millis(20),
                settle,
            },
            stop.clone(),
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
        );
        (calls, stop)
    }

    fn temp_file(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("file-source-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("policy.yaml");
        std::fs::write(&path, "first").expect("write");
        path
    }

    #[tokio::test]
    async fn a_file_written_in_pieces_is_read_once_it_holds_still() {
        let path = temp_file("pieces");
        let (calls, stop) = counting_watch(&path, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut file = std::fs::File::create(&path).expect("truncate");
        for piece in ["a: 1\n", "b: 2\n", "c: 3\n", "d: 4\n"] {
            file.write_all(piece.as_bytes()).expect("write");
            file.flush().expect("flush");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(calls.load(Ordering::SeqCst), 0, "read while still changing");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "read once, whole");
        stop.cancel();
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test]
    async fn a_file_replaced_by_rename_is_read_at_once() {
        let path = temp_file("rename");
        let (calls, stop) = counting_watch(&path, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = path.with_extension("new");
        std::fs::write(&next, "second version").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no settle wait for a rename"
        );
        stop.cancel();
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
