//! The gateway as a real process (the product kit's [`Running`]): started
//! with `run`, its listeners found in its JSON diagnostics, its decision log
//! read from stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

pub use egress_e2e::product::http_get;
use egress_e2e::product::{Output, Running};
use serde_json::Value;

use super::clients::{Curl, curl};
use super::{Pki, eventually};

pub struct Gateway {
    process: Running,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
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
        Self::spawn_by(&[], args)
    }

    /// The binary with exactly these arguments, started by `launcher`: a
    /// command that ends by exec'ing what follows it (such as a shell that
    /// sets a limit first), so that the process is still the gateway's.
    pub fn spawn_by(launcher: &[&str], args: &[String]) -> Gateway {
        let env = [(
            "RUST_LOG".to_owned(),
            "info,egress_gateway=debug".to_owned(),
        )];
        let output = Output::for_test_run("gateway");
        let binary = env!("CARGO_BIN_EXE_egress-gateway");
        let process = match launcher.split_first() {
            None => Running::start(Path::new(binary), args, &env, output),
            Some((program, launcher_args)) => {
                let all: Vec<String> = launcher_args
                    .iter()
                    .chain(&[binary])
                    .map(|s| s.to_string())
                    .chain(args.iter().cloned())
                    .collect();
                Running::start(Path::new(program), &all, &env, output)
            }
        }
        .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        let http = process.wait_until(Duration::from_secs(20), "the http listener", |p| {
            p.listener("http")
        });
        let https = if args.iter().any(|a| a == "--https-listen") {
            process.wait_until(Duration::from_secs(20), "the https listener", |p| {
                p.listener("https")
            })
        } else {
            "127.0.0.1:9".parse().expect("unused address")
        };
        let admin = process.listener("admin").expect("admin listener");
        Gateway {
            process,
            http,
            https,
            admin,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn http_proxy(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn https_proxy(&self) -> String {
        format!("https://localhost:{}", self.https.port())
    }

    /// curl through the plain listener with `args` (the URL last).
    pub fn curl(&self, args: &[&str]) -> Curl {
        curl(&[&["--proxy", &self.http_proxy()][..], args].concat())
    }

    /// curl through the HTTPS listener, trusting `proxy_root` for it, with
    /// `args` (the URL last).
    pub fn curl_over_tls(&self, proxy_root: &str, args: &[&str]) -> Curl {
        let proxy = ["--proxy", &self.https_proxy(), "--proxy-cacert", proxy_root];
        curl(&[&proxy[..], args].concat())
    }

    /// Every decision line so far (its stdout: nothing else is written there).
    pub fn decisions(&self) -> Vec<Value> {
        self.process
            .stdout()
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("decision log line is not JSON ({e}): {line}"))
            })
            .collect()
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

    /// The decision line for `url`, failing unless it has an `error` that
    /// `expected` accepts.
    pub fn decision_with_error(&self, url: &str, expected: impl Fn(&str) -> bool) -> Value {
        let line = self.decision_for(url);
        assert!(line["error"].as_str().is_some_and(expected), "{line}");
        line
    }

    /// Fails when one of the decision lines so far has `url` as its url.
    pub fn assert_no_decision_for(&self, url: &str) {
        let lines = self.decisions();
        assert!(
            lines.iter().all(|d| d["url"] != url),
            "{url} is logged: {lines:?}"
        );
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
        self.process.stderr()
    }

    /// Everything the gateway has written, by where: its decision lines,
    /// its diagnostics and its metrics.
    pub fn written(&self) -> Vec<(&'static str, String)> {
        let lines: Vec<String> = self.decisions().iter().map(Value::to_string).collect();
        vec![
            ("decision lines", lines.join("\n")),
            ("diagnostics", self.diagnostics().join("\n")),
            ("metrics", self.admin_get("/metrics").1),
        ]
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The value of a metric line starting with `prefix` (summed over matches).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.process.metric(prefix)
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
        self.process.terminate();
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait(timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// A connection to `addr` whose reads give up after `timeout`.
pub fn connect_with_timeout(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream
}

/// Opens a CONNECT tunnel to `target` (`host:port`) through the plain
/// listener at `proxy` (10 s read timeout) and reads the 200 and its headers.
pub fn connect_tunnel(proxy: SocketAddr, target: &str) -> BufReader<TcpStream> {
    let mut stream = connect_with_timeout(proxy, Duration::from_secs(10));
    write!(
        stream,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .expect("write");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "CONNECT {target}: {status}"
    );
    let mut line = String::new();
    while reader.read_line(&mut line).expect("header") > 2 {
        line.clear();
    }
    reader
}

/// One HTTP/1.1 request for `/` through an open tunnel: what the first read
/// of the answer returns.
pub fn request_in_tunnel(tunnel: &mut BufReader<TcpStream>) -> String {
    write!(tunnel.get_mut(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut buf = [0u8; 512];
    let n = tunnel.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends raw bytes to `addr` and returns what comes back until the peer closes
/// (or 10 s pass).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect_with_timeout(addr, Duration::from_secs(10));
    stream.write_all(bytes).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}
