//! Relay between two TCP sockets (Linux). Bulk transfers are spliced:
//! `splice(2)` moves bytes from one socket into a pipe and from the pipe into
//! the other, so they never pass through user space, as HAProxy does for TCP
//! tunnels. Small chunks (requests and replies of a few KiB, most of what a
//! tunnel carries) are read and written through one buffer per thread: two
//! syscalls where a splice takes three (in, out, and the one that finds the
//! socket drained: a short splice does not prove it is, since the pipe can
//! run out of slots first, while a short read does). An idle tunnel holds no
//! pipe and no buffer, only its two sockets.
//!
//! Pipes come from a small shared pool and are held only while bytes are in
//! flight; at most [`MAX_PIPES`] exist at once (a receiver that stops reading
//! holds its pipe until it reads again). Without one, a chunk is read and
//! written instead, so running out of pipes slows tunnels down and never
//! breaks one.
//!
//! TCP urgent data: splice stops at the urgent mark and a read stops before
//! it, so either would leave that direction stalled with bytes waiting. The
//! sockets are registered for `EPOLLPRI`; while urgent data is pending a
//! direction reads until the socket is drained, which steps over the urgent
//! byte (it is not relayed, as with any read(2)-based relay).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_getpipe_size, pipe_with, splice};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::{Interest, Ready};

use crate::relay::idle::Activity;

/// Most bytes one splice call moves: a pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// Most bytes one read moves; a read that fills it (a bulk transfer) turns
/// that direction to splicing until a chunk is smaller again.
const READ_CHUNK: usize = 16 * 1024;

/// Most pipes open at once in the process (two descriptors each).
pub const MAX_PIPES: usize = 256;

/// Empty pipes kept for reuse. Beyond this many in flight at once, pipes are
/// made and closed as needed (two syscalls each).
const POOLED: usize = 64;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Pipes open now, pooled or in use.
static OPEN_PIPES: AtomicUsize = AtomicUsize::new(0);

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

thread_local! {
    /// The buffer small chunks pass through; emptied before the thread moves
    /// on to anything else.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// A socket of a relayed tunnel, registered with the runtime it runs on.
pub type Socket = AsyncFd<TcpStream>;

/// Registers a (nonblocking) socket with the current runtime for reads,
/// writes and urgent data.
pub fn register(stream: TcpStream) -> io::Result<Socket> {
    // Deprecated because an arbitrary `AsRawFd` may change or close its
    // descriptor; a `TcpStream` owns its own for its life, which is what the
    // replacement (an `unsafe fn`, forbidden in this workspace) asks for.
    #[allow(deprecated)]
    AsyncFd::with_interest(
        stream,
        Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
    )
}

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
    client: &Socket,
    upstream: &Socket,
    early: bytes::Bytes,
    activity: &Activity,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> io::Result<()> {
    let upload = async {
        sent.fetch_add(early.len() as u64, Ordering::Relaxed);
        write_all(upstream, &early).await?;
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
    from: &Socket,
    to: &Socket,
    activity: &Activity,
    moved: &AtomicU64,
) -> io::Result<()> {
    let mut bulk = false;
    loop {
        let mut ready = from.ready(Interest::READABLE | Interest::PRIORITY).await?;
        let urgent = ready.ready().is_priority();
        let pipe = if bulk && !urgent { take_pipe() } else { None };
        let chunk = match pipe {
            Some(pipe) => splice_chunk(&mut ready, pipe, to).await?,
            None => read_chunk(&mut ready, to, urgent).await?,
        };
        match chunk {
            // Nothing to move after all: the readiness is cleared.
            None => continue,
            Some(0) => break,
            Some(n) => {
                moved.fetch_add(n as u64, Ordering::Relaxed);
                activity.touch();
                bulk = n >= READ_CHUNK;
            }
        }
        // Readiness waits do not count against the task's budget: without
        // this, a tunnel whose peers keep up would never yield, and every
        // other tunnel on its relay loop would wait.
        tokio::task::consume_budget().await;
    }
    // The peer may be gone already; nothing is left to tell it.
    let _ = to.get_ref().shutdown(Shutdown::Write);
    Ok(())
}

/// Splices what `from` has (up to [`CHUNK`]) into `pipe` and on to `to`;
/// `None` when it had nothing (its readiness is then cleared), `Some(0)` at
/// its end.
async fn splice_chunk(
    from: &mut AsyncFdReadyGuard<'_, TcpStream>,
    pipe: Pipe,
    to: &Socket,
) -> io::Result<Option<usize>> {
    // The pipe is empty, so a WouldBlock here is the socket's: it clears the
    // socket's readiness.
    let n = match from.try_io(|from| Ok(splice(from, None, &pipe.write, None, CHUNK, FLAGS)?)) {
        Err(_would_block) => {
            give_pipe(pipe);
            return Ok(None);
        }
        Ok(Err(e)) => {
            give_pipe(pipe);
            return Err(e);
        }
        Ok(Ok(n)) => n,
    };
    let mut left = n;
    while left > 0 {
        let mut writable = to.writable().await?;
        // The pipe holds bytes, so a WouldBlock here is the socket's.
        match writable.try_io(|to| Ok(splice(&pipe.read, None, to, None, left, FLAGS)?)) {
            Err(_would_block) => {}
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(written)) => left -= written,
            // The pipe still holds bytes: it is dropped, not pooled.
            Ok(Err(e)) => return Err(e),
        }
    }
    give_pipe(pipe);
    Ok(Some(n))
}

/// Reads what `from` has (up to [`READ_CHUNK`]) and writes it to `to`; `None`
/// when it had nothing (its readiness is then cleared), `Some(0)` at its end.
/// A short read means the socket is drained (its readiness is cleared without
/// another read), unless urgent data was pending: the read may have stopped
/// at its mark.
async fn read_chunk(
    from: &mut AsyncFdReadyGuard<'_, TcpStream>,
    to: &Socket,
    urgent: bool,
) -> io::Result<Option<usize>> {
    let read = from.try_io(|from| {
        BUFFER.with_borrow_mut(|buffer| {
            let n = (&mut from.get_ref()).read(buffer)?;
            if n == 0 {
                return Ok((0, Vec::new()));
            }
            let written = match (&mut to.get_ref()).write(&buffer[..n]) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            // What `to` could not take now waits in a buffer of its own.
            Ok((n, buffer[written..n].to_vec()))
        })
    });
    let (n, unwritten) = match read {
        Err(_would_block) => return Ok(None),
        Ok(result) => result?,
    };
    if 0 < n && n < READ_CHUNK && !urgent {
        from.clear_ready_matching(Ready::READABLE);
    }
    write_all(to, &unwritten).await?;
    Ok(Some(n))
}

async fn write_all(to: &Socket, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut writable = to.writable().await?;
        match writable.try_io(|to| (&mut to.get_ref()).write(data)) {
            Err(_would_block) => {}
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

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
        let client_side = register(client_side.into_std().expect("std")).expect("register");
        let upstream_side = register(upstream_side.into_std().expect("std")).expect("register");
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
        POOL.lock().expect("pool").clear();
        relay_carries_bytes().await;
        assert!(
            !POOL.lock().expect("pool").is_empty(),
            "the bulk upload was spliced: its pipe is back in the pool"
        );
        // Every pipe taken: chunks are copied through a buffer instead.
        POOL.lock().expect("pool").clear();
        OPEN_PIPES.fetch_add(MAX_PIPES, Ordering::Relaxed);
        assert!(take_pipe().is_none());
        relay_carries_bytes().await;
        OPEN_PIPES.fetch_sub(MAX_PIPES, Ordering::Relaxed);
        assert!(take_pipe().is_some());
    }
}
