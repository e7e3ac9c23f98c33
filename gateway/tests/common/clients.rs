//! Real clients: curl, Python (`requests`, `websockets`) and Go `net/http`.
//! The Python venv and the Go binary are built once into the cache folder
//! (`$EGRESS_CACHE_DIR`, default `~/.cache/egress-proxy`), keyed by a hash of
//! their sources, so every test run uses the same versions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

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

fn cache_dir() -> PathBuf {
    std::env::var_os("EGRESS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/egress-proxy")
        })
}

fn hash_of(paths: &[&Path]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for path in paths {
        std::fs::read(path).expect("read source").hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

/// Builds `final_dir` with `build` into a temporary sibling and renames it into
/// place, so concurrent tests never see a half-built directory.
fn build_once(final_dir: &Path, build: impl FnOnce(&Path)) {
    if final_dir.exists() {
        return;
    }
    let tmp = final_dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create build dir");
    build(&tmp);
    if std::fs::rename(&tmp, final_dir).is_err() {
        // Another test built it first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

fn check(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Python of a venv with `tests/clients/requirements.txt` installed.
pub fn python() -> PathBuf {
    let requirements = Path::new(CLIENTS).join("requirements.txt");
    let dir = cache_dir().join(format!("py-{}", hash_of(&[&requirements])));
    build_once(&dir, |tmp| {
        check(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(tmp)
                .output()
                .expect("python3"),
            "python3 -m venv",
        );
        check(
            Command::new(tmp.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "-r"])
                .arg(&requirements)
                .output()
                .expect("pip"),
            "pip install -r tests/clients/requirements.txt",
        );
    });
    dir.join("bin/python")
}

/// Runs one of the Python clients.
pub fn python_script(script: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg(Path::new(CLIENTS).join(script))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .expect("python runs")
}

/// The Go client binary.
pub fn go_client() -> PathBuf {
    let source = Path::new(CLIENTS).join("goclient");
    let dir = cache_dir().join(format!(
        "goclient-{}",
        hash_of(&[&source.join("main.go"), &source.join("go.mod")])
    ));
    build_once(&dir, |tmp| {
        check(
            Command::new("go")
                .args(["build", "-o"])
                .arg(tmp.join("goclient"))
                .arg(".")
                .current_dir(&source)
                .env("GOFLAGS", "-mod=mod")
                .output()
                .expect("go"),
            "go build goclient",
        );
    });
    dir.join("goclient")
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
        .arg(Path::new(CLIENTS).join(script))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .envs(env.iter().copied());
    command
}
