//! One started process of a control plane or node: started with a
//! parent-death signal and its output in a log file, waited for until ready,
//! measured, and stopped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{HarnessError, setup_error, tail};

/// Lines of a process's log quoted when it fails to start.
const TAIL_LINES: usize = 40;

/// One started process and its log.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args` and `env`, its output in `<dir>/<name>.log`.
    /// `setpriv` gives it a parent-death signal, so it dies with the test
    /// binary even when that is killed.
    pub(crate) fn start(
        name: &'static str,
        dir: &Path,
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Process, HarnessError> {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).map_err(setup_error("log file"))?;
        let err = file.try_clone().map_err(setup_error("log file"))?;
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "SIGKILL", "--"])
            .arg(binary)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                HarnessError::Setup(format!(
                    "cannot start {name} (is setpriv from util-linux installed?): {e}"
                ))
            })?;
        Ok(Process { name, child, log })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `ready` until it holds and returns how long that took; fails
    /// with the log's tail if the process exits or `timeout` passes.
    pub(crate) fn wait_ready(
        &mut self,
        ready: impl Fn() -> bool,
        timeout: Duration,
    ) -> Result<Duration, HarnessError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::Exited {
                    name: self.name,
                    status: status.to_string(),
                    log: self.log.display().to_string(),
                    tail: tail(&self.log, TAIL_LINES),
                });
            }
            if ready() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(HarnessError::NotReady {
                    name: self.name,
                    waited: started.elapsed(),
                    log: self.log.display().to_string(),
                    tail: tail(&self.log, TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its name, process ID and resident memory (MiB).
    pub(crate) fn memory(&self) -> (&'static str, u32, f64) {
        let pid = self.child.id();
        let kib: f64 = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0.0);
        (self.name, pid, kib / 1024.0)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process called `name` among `processes`.
pub(crate) fn named<'a>(
    processes: &'a mut [Process],
    name: &str,
) -> Result<&'a mut Process, HarnessError> {
    processes
        .iter_mut()
        .find(|p| p.name == name)
        .ok_or_else(|| HarnessError::Setup(format!("{name} was never started")))
}
