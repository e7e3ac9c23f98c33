//! The threads spliced tunnels run on. A relayed tunnel does little per event
//! (a couple of syscalls), so what it costs is mostly its thread sleeping in
//! `epoll_wait` and waking again; on the work-stealing runtime each batch of
//! events also wakes a second worker to share it. Tunnels run instead on a few
//! single-threaded event loops of their own, as nginx's and HAProxy's do, each
//! waiting for the events of all its tunnels at once. A tunnel moves to its
//! loop as soon as its CONNECT is answered: the first bytes each way (the
//! ClientHello, judged, and the destination's answer) are read there too.
//! HTTP, TLS to the proxy and interception stay on the main runtime.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The relay loops: each a thread running a single-threaded runtime. Dropping
/// this stops them, and the tunnels still on them are closed.
#[derive(Debug)]
pub struct RelayLoops {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl RelayLoops {
    /// Starts `threads` loops (at least one).
    pub fn start(threads: usize) -> io::Result<RelayLoops> {
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for index in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stopper, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(stopper);
            std::thread::Builder::new()
                .name(format!("relay-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(RelayLoops {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The loop the next tunnel runs on (in turn).
    pub fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }

    /// The default number of loops for a process that may use `cpus` CPUs:
    /// half of them, at least one.
    pub fn default_threads(cpus: usize) -> usize {
        (cpus / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnels_go_to_the_loops_in_turn() {
        let loops = RelayLoops::start(2).expect("start");
        let names: Vec<String> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                loops.next().spawn(async move {
                    let name = std::thread::current().name().map(str::to_owned);
                    tx.send(name.unwrap_or_default()).expect("send");
                });
                rx.recv().expect("ran")
            })
            .collect();
        assert_eq!(names, ["relay-0", "relay-1", "relay-0", "relay-1"]);
        assert_eq!(RelayLoops::default_threads(1), 1);
        assert_eq!(RelayLoops::default_threads(2), 1);
        assert_eq!(RelayLoops::default_threads(8), 4);
    }
}
