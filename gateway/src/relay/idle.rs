//! Idle detection for streams the gateway relays: every read or write that
//! moves bytes counts as activity; a watcher ends the connection when there
//! was none for too long (a client that opens a tunnel and goes silent does
//! not hold it forever).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

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
        Tracked {
            inner,
            activity: self.clone(),
            read: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// A stream whose traffic is recorded in an [`Activity`], counting the bytes
/// read from it.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
    read: Arc<AtomicU64>,
}

impl<S> Tracked<S> {
    /// The stream itself.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The count of bytes read from the stream so far (shared, live).
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.touch();
            self.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
