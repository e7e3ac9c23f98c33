//! Real clients: curl, Python (`requests`, `websockets`) and Go `net/http`
//! (provisioned by `egress_e2e::clients`, sources in `e2e/clients/`).

use std::path::PathBuf;
use std::process::{Command, Output};

/// The client sources, shared with the other crates' tests.
fn clients() -> PathBuf {
    egress_e2e::clients::dir()
}

/// What curl did.
#[derive(Debug)]
pub struct Curl {
    /// `%{http_code}`: the last response's status, 0 when none.
    pub status: u16,
    /// `%{http_version}`.
    pub http_version: String,
    pub body: String,
    pub stderr: String,
    pub exit: i32,
}

/// Runs curl with `args` (silent, showing errors, 20 s cap).
pub fn curl(args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut trailer = trailer.split(' ');
    Curl {
        status: trailer.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: trailer.next().unwrap_or("").to_owned(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit: output.status.code().unwrap_or(-1),
    }
}

/// The Python of the shared clients venv (`e2e/clients/requirements.txt`).
pub fn python() -> PathBuf {
    egress_e2e::clients::python().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs one of the Python clients.
pub fn python_script(script: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg(clients().join(script))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .expect("python runs")
}

/// The Go client binary.
pub fn go_client() -> PathBuf {
    egress_e2e::clients::go_client().unwrap_or_else(|e| panic!("{e}"))
}

/// A client process driven step by step: it prints a line per result and
/// waits on stdin where its arguments say `WAIT`.
pub struct Interactive {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Interactive {
    /// Starts `command` with piped stdin and stdout.
    pub fn start(mut command: Command) -> Interactive {
        use std::io::BufRead;
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("client starts");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Interactive { child, lines }
    }

    /// The next line it prints (20 s at most).
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the client prints a line")
    }

    /// Lets it go past a `WAIT`.
    pub fn resume(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `python keepalive_client.py ARGS...` with this environment, ready for [`Interactive`].
pub fn python_command(script: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(clients().join(script))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .envs(env.iter().copied());
    command
}
