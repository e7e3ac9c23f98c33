//! Zero-copy relay between two TCP sockets (Linux): `splice(2)` moves bytes
//! from one socket into a pipe and from the pipe into the other, so they never
//! pass through user space, as HAProxy does for TCP tunnels. Pipes come from a
//! small shared pool and are held only while bytes are in flight: an idle
//! tunnel holds no pipe and no buffer, only its two sockets.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::idle::Activity;

/// Most bytes one splice call moves: a pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// Empty pipes kept for reuse. Beyond this many in flight at once, pipes are
/// made and closed as needed (two syscalls each).
const POOLED: usize = 64;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Both ends of one pipe.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Empty pipes shared by every tunnel in the process.
#[derive(Debug)]
struct Pipes(Mutex<Vec<Pipe>>);

static PIPES: Pipes = Pipes(Mutex::new(Vec::new()));

impl Pipes {
    fn take(&self) -> io::Result<Pipe> {
        if let Some(pipe) = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { read, write })
    }

    /// Takes back a pipe that is empty (one still holding bytes is dropped
    /// instead, which closes it).
    fn give(&self, pipe: Pipe) {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED {
            free.push(pipe);
        }
    }
}

/// Moves bytes both ways until both sides have ended (each end passed on as a
/// half-close) or either fails. `sent` and `received` count the bytes read
/// from `client` and from `upstream`; every move counts as activity.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    activity: &Activity,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> io::Result<()> {
    tokio::try_join!(
        one_way(client, upstream, activity, sent),
        one_way(upstream, client, activity, received),
    )?;
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
    let pipes = &PIPES;
    loop {
        from.readable().await?;
        let pipe = pipes.take()?;
        // The pipe is empty, so a WouldBlock here is the socket's: it clears
        // the socket's readiness and the loop waits for the next.
        let spliced = from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, &pipe.write, None, CHUNK, FLAGS)?)
        });
        let n = match spliced {
            Ok(0) => {
                pipes.give(pipe);
                // The peer may be gone already; nothing is left to tell it.
                let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipes.give(pipe);
                continue;
            }
            Err(e) => {
                pipes.give(pipe);
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
        pipes.give(pipe);
    }
}
