//! Idle detection for streams the gateway relays: every read or write that
//! moves bytes counts as activity; a watcher ends the connection when there
//! was none for too long (a client that opens a tunnel and goes silent does
//! not hold it forever).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::observed::{Observed, Observer};

/// When bytes last moved on one or more streams.
#[derive(Clone, Debug)]
pub struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    /// Records that bytes moved now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }

    /// Completes once no bytes moved for `limit`.
    pub async fn idle_exceeds(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }

    /// Wraps a stream so its traffic counts as activity.
    pub fn track<S>(&self, inner: S) -> Tracked<S> {
        Observed::new(
            inner,
            Traffic {
                activity: self.clone(),
                read: 0,
            },
        )
    }
}

/// A stream whose traffic is recorded in an [`Activity`].
pub type Tracked<S> = Observed<S, Traffic>;

/// Traffic on one stream: it counts as activity, and the bytes read from it
/// are counted.
#[derive(Debug)]
pub struct Traffic {
    activity: Activity,
    read: u64,
}

impl Traffic {
    /// The count of bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl Observer for Traffic {
    fn read(&mut self, bytes: &[u8]) {
        self.activity.touch();
        self.read += bytes.len() as u64;
    }

    fn wrote(&mut self) {
        self.activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn traffic_resets_the_idle_clock() {
        let activity = Activity::default();
        let (a, mut b) = tokio::io::duplex(64);
        let mut tracked = activity.track(a);
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.idle_exceeds(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(8)).await;
        b.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        tracked.read_exact(&mut one).await.expect("read");
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            !watcher.is_finished(),
            "activity at 8s keeps it alive at 16s"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(watcher.is_finished(), "idle since 8s: over 10s at 19s");
    }
}
