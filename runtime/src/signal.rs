//! The stop signal: SIGTERM (what the kubelet sends) or Ctrl-C.

/// Completes on the next SIGTERM or Ctrl-C; call again for a second one.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
