//! Why the harness could not do its job, and the helpers that say it.

use std::fs;
use std::path::Path;
use std::time::Duration;

/// Why the harness could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Building or locating the binaries failed.
    #[error("control plane binaries: {0}")]
    Binaries(String),
    /// A process exited while starting.
    #[error("{name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// Which process.
        name: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{name} was not ready after {waited:?}; last lines of {log}:\n{tail}")]
    NotReady {
        /// Which process.
        name: &'static str,
        /// How long the harness waited.
        waited: Duration,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// Files, ports or processes could not be set up.
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn setup_error(what: &str) -> impl Fn(std::io::Error) -> HarnessError + '_ {
    move |e| HarnessError::Setup(format!("{what}: {e}"))
}

/// The last `lines` lines of the log at `path`.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
