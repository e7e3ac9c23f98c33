//! Zero-copy relay between two TCP sockets (Linux): `splice(2)` moves bytes
//! from one socket into a pipe and from the pipe into the other, so they never
//! pass through user space, as HAProxy does for TCP tunnels. Pipes come from a
//! small shared pool and are held only while bytes are in flight: an idle
//! tunnel holds no pipe and no buffer, only its two sockets.
//!
//! Pipes are file descriptors: at most [`MAX_PIPES`] exist at once (a
//! receiver that stops reading holds its pipe until it reads again). Without
//! one, a chunk is copied through a buffer instead, so running out of pipes
//! slows tunnels down and never breaks one.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_getpipe_size, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::idle::Activity;

/// Most bytes one splice call moves: a pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// Most pipes open at once in the process (two descriptors each).
pub const MAX_PIPES: usize = 256;

/// Empty pipes kept for reuse. Beyond this many in flight at once, pipes are
/// made and closed as needed (two syscalls each).
const POOLED: usize = 64;

/// The buffer a chunk is copied through when no pipe is to be had.
const COPY_CHUNK: usize = 16 * 1024;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Pipes open now, pooled or in use.
static OPEN_PIPES: AtomicUsize = AtomicUsize::new(0);

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Both ends of one pipe; closing it frees its place under [`MAX_PIPES`].
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        OPEN_PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An empty pipe from the pool, or a new one; `None` when [`MAX_PIPES`] are
/// open or the system refuses one (descriptors, the user's pipe pages).
fn take_pipe() -> Option<Pipe> {
    if let Some(pipe) = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        return Some(pipe);
    }
    if OPEN_PIPES.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
        OPEN_PIPES.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let Ok((read, write)) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC) else {
        OPEN_PIPES.fetch_sub(1, Ordering::Relaxed);
        return None;
    };
    let pipe = Pipe { read, write };
    // Past the user's soft limit of pipe pages the kernel makes small pipes;
    // one is not worth keeping.
    fcntl_getpipe_size(&pipe.read)
        .is_ok_and(|size| size >= CHUNK)
        .then_some(pipe)
}

/// Takes back a pipe that is empty (one still holding bytes is dropped
/// instead, which closes it).
fn give_pipe(pipe: Pipe) {
    let mut free = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if free.len() < POOLED {
        free.push(pipe);
    }
}

/// Moves bytes both ways until both sides have ended (each end passed on as a
/// half-close) or either fails. `early` is what the client sent before the
/// tunnel opened; it goes to `upstream` first. `sent` and `received` count
/// the bytes from `client` (`early` included) and from `upstream`; every move
/// counts as activity.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    early: bytes::Bytes,
    activity: &Activity,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> io::Result<()> {
    let upload = async {
        sent.fetch_add(early.len() as u64, Ordering::Relaxed);
        write_all(upstream, &early, activity).await?;
        // A view of hyper's read buffer: kept, it would hold the buffer.
        drop(early);
        one_way(client, upstream, activity, sent).await
    };
    tokio::try_join!(upload, one_way(upstream, client, activity, received))?;
    Ok(())
}

/// Moves bytes from `from` to `to` until `from` ends, then shuts down the
/// write side of `to`.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Activity,
    moved: &AtomicU64,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let Some(pipe) = take_pipe() else {
            if copy_chunk(from, to, activity, moved).await? {
                continue;
            }
            break;
        };
        // The pipe is empty, so a WouldBlock here is the socket's: it clears
        // the socket's readiness and the loop waits for the next.
        let spliced = from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, &pipe.write, None, CHUNK, FLAGS)?)
        });
        let n = match spliced {
            Ok(0) => {
                give_pipe(pipe);
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give_pipe(pipe);
                continue;
            }
            Err(e) => {
                give_pipe(pipe);
                return Err(e);
            }
        };
        moved.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            // The pipe holds bytes, so a WouldBlock here is the socket's.
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe.read, None, to, None, left, FLAGS)?)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => left -= written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The pipe still holds bytes: it is dropped, not pooled.
                Err(e) => return Err(e),
            }
        }
        activity.touch();
        give_pipe(pipe);
    }
    // The peer may be gone already; nothing is left to tell it.
    let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
    Ok(())
}

/// Copies what `from` has now to `to` through a buffer; `false` once `from`
/// has ended.
async fn copy_chunk(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Activity,
    moved: &AtomicU64,
) -> io::Result<bool> {
    let mut buffer = vec![0u8; COPY_CHUNK];
    let n = match from.try_read(&mut buffer) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
        Err(e) => return Err(e),
    };
    moved.fetch_add(n as u64, Ordering::Relaxed);
    activity.touch();
    write_all(to, &buffer[..n], activity).await?;
    Ok(true)
}

async fn write_all(to: &TcpStream, mut data: &[u8], activity: &Activity) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    activity.touch();
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Both ends of a loopback TCP connection.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let near = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (far, _) = listener.accept().await.expect("accept");
        (near, far)
    }

    /// A client and an upstream joined by [`relay`]: early bytes first, a
    /// large upload, then each side's end reaching the other.
    async fn relay_carries_bytes() {
        let (mut client, client_side) = connected().await;
        let (upstream_side, mut upstream) = connected().await;
        let (activity, sent, received) =
            (Activity::default(), AtomicU64::new(0), AtomicU64::new(0));
        let joined = relay(
            &client_side,
            &upstream_side,
            bytes::Bytes::from_static(b"early:"),
            &activity,
            &sent,
            &received,
        );
        let upload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let ends = async {
            client.write_all(&upload).await.expect("upload");
            client.shutdown().await.expect("client end");
            let mut got = Vec::new();
            upstream
                .read_to_end(&mut got)
                .await
                .expect("upstream reads");
            upstream.write_all(b"reply").await.expect("reply");
            upstream.shutdown().await.expect("upstream end");
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.expect("client reads");
            (got, reply)
        };
        let (joined, (got, reply)) = tokio::join!(joined, ends);
        joined.expect("relay ends cleanly");
        assert_eq!(&got[..6], b"early:");
        assert!(got[6..] == upload[..], "upload arrives unchanged");
        assert_eq!(reply, b"reply");
        assert_eq!(sent.load(Ordering::Relaxed), 6 + upload.len() as u64);
        assert_eq!(received.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn bytes_cross_with_pipes_and_without_any_to_be_had() {
        relay_carries_bytes().await;
        // Every pipe taken: chunks are copied through a buffer instead.
        POOL.lock().expect("pool").clear();
        OPEN_PIPES.fetch_add(MAX_PIPES, Ordering::Relaxed);
        assert!(take_pipe().is_none());
        relay_carries_bytes().await;
        OPEN_PIPES.fetch_sub(MAX_PIPES, Ordering::Relaxed);
        assert!(take_pipe().is_some());
    }
}
