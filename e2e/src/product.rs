//! This workspace's binaries (the gateway, the operator) as the tests run
//! them: a real process with a parent-death signal, its stdout and stderr
//! collected line by line (and copied to files a person can read after a
//! failure), the listeners it announces found in its JSON diagnostics
//! (`"message":"listening"`), and its admin endpoints at hand. Every test
//! kit of the product builds on this one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running binary of the product.
#[derive(Debug)]
pub struct Running {
    child: Child,
    name: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Where its output is copied.
    pub output: Output,
}

/// Where a process's output is copied.
#[derive(Clone, Debug)]
pub struct Output {
    /// Its stdout (the gateway's decision log).
    pub stdout: PathBuf,
    /// Its stderr (diagnostics).
    pub stderr: PathBuf,
}

impl Output {
    /// `<dir>/<stem>.stdout.log` and `<dir>/<stem>.stderr.log`.
    pub fn in_dir(dir: &Path, stem: &str) -> Output {
        let _ = std::fs::create_dir_all(dir);
        Output {
            stdout: dir.join(format!("{stem}.stdout.log")),
            stderr: dir.join(format!("{stem}.stderr.log")),
        }
    }

    /// A new pair for one run of `binary` in a test process:
    /// `$TMPDIR/egress-<binary>-tests/<binary>-<pid>-<n>.*.log`, `n`
    /// counting the runs of this process.
    pub fn for_test_run(binary: &str) -> Output {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let stem = format!(
            "{binary}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        );
        Output::in_dir(
            &std::env::temp_dir().join(format!("egress-{binary}-tests")),
            &stem,
        )
    }
}

impl Running {
    /// Starts `binary` with `args` and `env` (added to this process's), its
    /// output copied to `output`. Waits until it announces its admin
    /// listener; fails with what it printed if it exits first.
    pub fn start(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        output: Output,
    ) -> Result<Running, String> {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "SIGKILL", "--"])
            .arg(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{} does not start: {e}", binary.display()))?;
        let stdout = collect(child.stdout.take(), output.stdout.clone());
        let stderr = collect(child.stderr.take(), output.stderr.clone());
        let mut running = Running {
            child,
            name,
            stdout,
            stderr,
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while running.listener("admin").is_none() {
            let exited = !running.is_running();
            if exited || Instant::now() > deadline {
                // What it printed last may still be on its way.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "{} {} before announcing its admin listener:\n{}",
                    running.name,
                    if exited { "exited" } else { "timed out" },
                    running.lines().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(running)
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.wait(grace);
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines written on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    /// Lines written on stderr so far (its diagnostics).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// Both, stdout first.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.stdout();
        lines.extend(self.stderr());
        lines
    }

    /// The address a listener announced (`http`, `https`, `admin`, `webhook`).
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.lines().iter().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == "listening" && v["listener"] == name)
                .then(|| v["address"].as_str()?.parse().ok())?
        })
    }

    /// Polls `check` every 50 ms for at most `timeout`; panics with the
    /// process's output when it exits first or time runs out.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Running) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            // A process that has exited is a zombie until it is reaped.
            let exited = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).map_or(
                true,
                |stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                },
            );
            assert!(
                !exited && Instant::now() < deadline,
                "{} {} before {what}:\n{}",
                self.name,
                if exited { "exited" } else { "timed out" },
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        match self.listener("admin") {
            Some(admin) => http_get(admin, path),
            None => (0, String::new()),
        }
    }

    /// A metric's value from `/metrics` (summed over lines starting with `prefix`).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// CPU seconds used so far (user + system) and resident memory in MiB.
    pub fn usage(&self) -> (f64, f64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let cpu = (ticks(11) + ticks(12)) / 100.0;
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0);
        (cpu, rss_kib / 1024.0)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the lines of `stream`, copying them to `file`.
fn collect(stream: Option<impl Read + Send + 'static>, file: PathBuf) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    if let Some(stream) = stream {
        let collected = lines.clone();
        std::thread::spawn(move || {
            let mut copy = std::fs::File::create(file).ok();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(copy) = copy.as_mut() {
                    let _ = writeln!(copy, "{line}");
                }
                collected.lock().expect("lock").push(line);
            }
        });
    }
    lines
}

/// A bare HTTP/1.1 GET: (status, body); (0, "") when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
