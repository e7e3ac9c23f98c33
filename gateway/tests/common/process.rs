//! The gateway as a real process: started with `run`, its listeners found in
//! its JSON diagnostics, its decision log collected from stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{Pki, eventually};

pub struct Gateway {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    decisions: Arc<Mutex<Vec<Value>>>,
    diagnostics: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// `run` with the test PKI: both listeners, interception CA, the upstream
    /// root trusted, the test names pinned to 127.0.0.1, plus `extra` flags.
    pub fn start(pki: &Pki, policy: &Path, extra: &[&str]) -> Gateway {
        let mut args: Vec<String> = vec![
            "--log-format".into(),
            "json".into(),
            "run".into(),
            "--policy".into(),
            policy.display().to_string(),
            "--http-listen".into(),
            "127.0.0.1:0".into(),
            "--https-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            pki.proxy_cert.display().to_string(),
            "--tls-key".into(),
            pki.proxy_key.display().to_string(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--upstream-ca".into(),
            pki.upstream_root.display().to_string(),
        ];
        if !extra.contains(&"--file-poll-interval") {
            args.extend(["--file-poll-interval".into(), "100ms".into()]);
        }
        if !extra.contains(&"--intercept-ca-cert") {
            args.extend([
                "--intercept-ca-cert".into(),
                pki.intercept.cert.display().to_string(),
                "--intercept-ca-key".into(),
                pki.intercept.key.display().to_string(),
                "--intercept-ca-chain".into(),
                pki.intercept
                    .chain
                    .as_ref()
                    .expect("chain")
                    .display()
                    .to_string(),
            ]);
        }
        for name in [super::HOST, super::BYPASS_HOST, super::DENIED_HOST] {
            args.push("--resolve".into());
            args.push(format!("{name}:*:127.0.0.1"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args)
    }

    /// The binary with exactly these arguments.
    pub fn spawn(args: &[String]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_egress-gateway"))
            .args(args)
            .env("RUST_LOG", "info,egress_gateway=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway starts");
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        {
            let decisions = decisions.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let value: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("decision log line is not JSON ({e}): {line}"));
                    decisions.lock().expect("lock").push(value);
                }
            });
        }
        {
            let diagnostics = diagnostics.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    diagnostics.lock().expect("lock").push(line);
                }
            });
        }
        let mut listening = |name: &str| {
            let diagnostics = diagnostics.clone();
            let name = name.to_owned();
            eventually(Duration::from_secs(20), || {
                if child.try_wait().ok().flatten().is_some() {
                    // Exited: give up now, the diagnostics say why.
                    std::thread::sleep(Duration::from_millis(100));
                    return Some(None);
                }
                diagnostics.lock().expect("lock").iter().find_map(|line| {
                    let v: Value = serde_json::from_str(line).ok()?;
                    (v["message"] == "listening" && v["listener"] == name.as_str())
                        .then(|| v["address"].as_str()?.parse().ok())
                        .flatten()
                        .map(Some)
                })
            })
            .flatten()
        };
        let Some(http) = listening("http") else {
            let _ = child.kill();
            panic!(
                "gateway did not start:\n{}",
                diagnostics.lock().expect("lock").join("\n")
            );
        };
        let https = if args.iter().any(|a| a == "--https-listen") {
            listening("https").expect("https listener")
        } else {
            "127.0.0.1:9".parse().expect("unused address")
        };
        let admin = listening("admin").expect("admin listener");
        Gateway {
            child,
            http,
            https,
            admin,
            decisions,
            diagnostics,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http_proxy(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn https_proxy(&self) -> String {
        format!("https://localhost:{}", self.https.port())
    }

    /// Every decision line so far.
    pub fn decisions(&self) -> Vec<Value> {
        self.decisions.lock().expect("lock").clone()
    }

    /// The first decision line matching `pred`, waiting up to 10 s.
    pub fn decision(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.decision_after(0, pred)
    }

    /// The first decision line after the first `skip` ones that matches
    /// `pred`, waiting up to 10 s.
    pub fn decision_after(&self, skip: usize, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(10), || {
            self.decisions().into_iter().skip(skip).find(|d| pred(d))
        })
        .unwrap_or_else(|| {
            panic!(
                "no matching decision line; got:\n{}\ndiagnostics:\n{}",
                self.decisions()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.diagnostics().join("\n")
            )
        })
    }

    /// The decision line whose url is `url`.
    pub fn decision_for(&self, url: &str) -> Value {
        self.decision(|d| d["url"] == url)
    }

    /// The first diagnostics line containing every one of `parts`, waiting up to 10 s.
    pub fn diagnostic(&self, parts: &[&str]) -> String {
        eventually(Duration::from_secs(10), || {
            self.diagnostics()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
        })
        .unwrap_or_else(|| {
            panic!(
                "no diagnostics line with {parts:?}:\n{}",
                self.diagnostics().join("\n")
            )
        })
    }

    pub fn diagnostics(&self) -> Vec<String> {
        self.diagnostics.lock().expect("lock").clone()
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The value of a metric line starting with `prefix` (summed over matches).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits up to 10 s for the metric `prefix` to reach `at_least`.
    pub fn wait_metric(&self, prefix: &str, at_least: f64) {
        eventually(Duration::from_secs(10), || {
            (self.metric(prefix) >= at_least).then_some(())
        })
        .unwrap_or_else(|| panic!("{prefix} stayed at {} (< {at_least})", self.metric(prefix)));
    }

    /// Waits up to 30 s for the metric `prefix` to drop below `value`.
    pub fn wait_metric_below(&self, prefix: &str, value: f64) {
        eventually(Duration::from_secs(30), || {
            (self.metric(prefix) < value).then_some(())
        })
        .unwrap_or_else(|| panic!("{prefix} stayed at {} (>= {value})", self.metric(prefix)));
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        eventually(timeout, || self.child.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
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

/// Sends raw bytes to `addr` and returns what comes back until the peer closes
/// (or 10 s pass).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}
