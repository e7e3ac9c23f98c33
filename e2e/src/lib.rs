//! A real Kubernetes control plane for tests: `etcd` and `kube-apiserver`
//! started as local processes (the way controller-runtime's envtest does),
//! with a CA and certificates made per run, an admin client certificate, and
//! a kubeconfig that kube-rs, kubectl and helm read.
//!
//! This crate owns starting, checking and stopping those processes. It does
//! not build them ([`Binaries::ensure`] calls `e2e/tools/build.sh`) and knows
//! nothing of the product: tests bring their own resources.
//!
//! Every process is started with `setpriv --pdeathsig SIGKILL`, so it dies with
//! the thread that started it even if the test process is killed; stopping is
//! otherwise by PID (SIGTERM, then SIGKILL).

pub mod chart;
mod error;
pub mod node;
pub mod objects;
mod process;
pub mod product;
pub mod test_tls;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
pub mod clients;

pub use error::HarnessError;
use error::setup_error;
use process::Process;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// How long each process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding `etcd`, `kube-apiserver`, `kubectl` and `helm`.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// Where the binaries are.
    pub dir: PathBuf,
}

impl Binaries {
    /// Builds the binaries if their pinned versions are not cached yet (see
    /// `e2e/tools/build.sh`), or uses `$EGRESS_E2E_BIN_DIR`.
    pub fn ensure() -> Result<Binaries, HarnessError> {
        static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            if let Some(dir) = std::env::var_os("EGRESS_E2E_BIN_DIR") {
                return Ok(PathBuf::from(dir));
            }
            run_tool("build.sh", &[]).map(PathBuf::from)
        });
        match dir {
            Ok(dir) => Ok(Binaries { dir: dir.clone() }),
            Err(e) => Err(HarnessError::Binaries(e.clone())),
        }
    }

    /// The path of one binary.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Runs one of the scripts under `e2e/tools` (their progress goes to
/// stderr); the last line of its stdout is its answer.
pub(crate) fn run_tool(script: &str, args: &[&Path]) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(script);
    let output = Command::new("bash")
        .arg(&path)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", path.display(), output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// A binary of this workspace (`egress-gateway`, `egress-operator`), built
/// with the profile of the running test if it is not there yet: tests of one
/// package run the others' binaries as users would.
pub fn workspace_binary(package: &str, name: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(setup_error("current executable"))?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).ok_or_else(|| {
        HarnessError::Setup(format!("{} is not in a target directory", exe.display()))
    })?;
    let binary = profile_dir.join(name);
    if !binary.exists() {
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["build", "-p", package, "--bin", name])
            .args(release.then_some("--release"))
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().unwrap_or(profile_dir),
            )
            .status()
            .map_err(setup_error("cargo build"))?;
        if !status.success() || !binary.exists() {
            return Err(HarnessError::Setup(format!(
                "cannot build {name} ({status})"
            )));
        }
    }
    Ok(binary)
}

/// How a control plane is started.
#[derive(Clone, Debug, Default)]
pub struct PlaneOptions {
    /// Serve on and advertise this address instead of 127.0.0.1, and keep
    /// the `kubernetes` Service's endpoints on it (lease reconciler): what a
    /// control plane with a node needs, so pods reach the API server through
    /// the Service, and the API server reaches the kubelet at the node's
    /// InternalIP. `None`: loopback only, no Service endpoints.
    pub address: Option<Ipv4Addr>,
}

/// A running control plane (or one found through `$EGRESS_E2E_KUBECONFIG`).
#[derive(Debug)]
pub struct ControlPlane {
    /// Run directory: certificates, logs, etcd data, kubeconfig.
    pub dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// API server URL.
    pub server: String,
    /// The binaries in use.
    pub binaries: Binaries,
    processes: Vec<Process>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on free ports of 127.0.0.1, in a new
    /// directory under `$EGRESS_E2E_DIR` (default: the system temp dir).
    pub fn start() -> Result<ControlPlane, HarnessError> {
        ControlPlane::start_with(&PlaneOptions::default())
    }

    /// As [`ControlPlane::start`], with `options`.
    pub fn start_with(options: &PlaneOptions) -> Result<ControlPlane, HarnessError> {
        let binaries = Binaries::ensure()?;
        let base = std::env::var_os("EGRESS_E2E_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("egress-e2e"));
        sweep_abandoned_runs(&base);
        let dir = base.join(format!("run-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&dir).map_err(setup_error("run directory"))?;
        fs::write(dir.join("owner.pid"), std::process::id().to_string())
            .map_err(setup_error("owner.pid"))?;
        let mut plane = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            dir,
            binaries,
            processes: Vec::new(),
        };
        let started = Instant::now();
        let result = plane.boot(options);
        if result.is_err() {
            plane.stop();
        } else {
            let _ = fs::write(
                plane.dir.join("started.txt"),
                format!("ready in {:.1}s\n", started.elapsed().as_secs_f64()),
            );
        }
        result.map(|()| plane)
    }

    /// A control plane someone else runs, named by `$EGRESS_E2E_KUBECONFIG`.
    pub fn attach(kubeconfig: PathBuf) -> Result<ControlPlane, HarnessError> {
        let text = fs::read_to_string(&kubeconfig).map_err(setup_error("EGRESS_E2E_KUBECONFIG"))?;
        // The harness writes JSON; a YAML kubeconfig names the server on a `server:` line.
        let server = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v["clusters"][0]["cluster"]["server"]
                    .as_str()
                    .map(str::to_owned)
            })
            .or_else(|| {
                text.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("server:")
                        .map(|s| s.trim().to_owned())
                })
            })
            .unwrap_or_default();
        Ok(ControlPlane {
            dir: kubeconfig
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            kubeconfig,
            server,
            binaries: Binaries::ensure()?,
            processes: Vec::new(),
        })
    }

    /// One control plane for the whole test binary: attached when
    /// `$EGRESS_E2E_KUBECONFIG` is set, started otherwise (on a thread that lives
    /// as long as the process, so its processes die with the test binary).
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            if let Some(kubeconfig) = std::env::var_os("EGRESS_E2E_KUBECONFIG") {
                return ControlPlane::attach(kubeconfig.into()).map_err(|e| e.to_string());
            }
            start_for_process("control-plane", ControlPlane::start)
        });
        match shared {
            Ok(plane) => plane,
            Err(e) => panic!("the control plane could not start: {e}"),
        }
    }

    fn boot(&mut self, options: &PlaneOptions) -> Result<(), HarnessError> {
        let address = options.address.unwrap_or(Ipv4Addr::LOCALHOST);
        let pki = Pki::write(&self.dir.join("pki"), address)?;
        let (etcd_client, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let data = self.dir.join("etcd-data");
        self.spawn(
            "etcd",
            &[
                "--name=e2e".to_owned(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
        )?;
        self.wait_ready("etcd", || http_ok(etcd_client, "/health"))?;

        self.server = format!("https://{address}:{api_port}");
        let p = |name: &str| pki.dir.join(name).display().to_string();
        // With a node: Service endpoints on the advertised address, and the
        // kubelet dialled at its InternalIP (its name resolves nowhere).
        let node_flags = match options.address {
            Some(_) => vec![
                "--endpoint-reconciler-type=lease".to_owned(),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ],
            None => vec!["--endpoint-reconciler-type=none".to_owned()],
        };
        self.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={address}"),
                format!("--advertise-address={address}"),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
                "--authorization-mode=RBAC".to_owned(),
                "--allow-privileged=true".to_owned(),
                "--enable-priority-and-fairness=false".to_owned(),
            ]
            .into_iter()
            .chain(node_flags)
            .collect::<Vec<_>>(),
        )?;
        fs::write(&self.kubeconfig, pki.kubeconfig(&self.server))
            .map_err(setup_error("kubeconfig"))?;
        let kubectl = self.binaries.path("kubectl");
        let kubeconfig = self.kubeconfig.clone();
        self.wait_ready("kube-apiserver", || {
            Command::new(&kubectl)
                .args(["--kubeconfig"])
                .arg(&kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> Result<(), HarnessError> {
        let binary = self.binaries.path(name);
        let process = Process::start(name, &self.dir, &binary, args, &[])?;
        self.processes.push(process);
        Ok(())
    }

    fn wait_ready(
        &mut self,
        name: &'static str,
        ready: impl Fn() -> bool,
    ) -> Result<(), HarnessError> {
        process::named(&mut self.processes, name)?.wait_ready(ready, READY_TIMEOUT)?;
        Ok(())
    }

    /// `kubectl` with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.binaries.path("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// `helm` with this control plane's kubeconfig.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(self.binaries.path("helm"));
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        // Helm keeps caches and config in the run directory, not the user's home.
        for (var, sub) in [
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ] {
            command.env(var, self.dir.join("helm").join(sub));
        }
        command
    }

    /// Process IDs and resident memory (MiB) of the processes started here.
    pub fn memory(&self) -> Vec<(&'static str, u32, f64)> {
        self.processes.iter().map(Process::memory).collect()
    }

    /// Stops the processes (API server first) and removes the run directory
    /// unless `$EGRESS_E2E_KEEP` is set.
    pub fn stop(&mut self) {
        while let Some(process) = self.processes.pop() {
            process.stop();
        }
        // Only a run directory this process made: an attached control plane's
        // directory belongs to whoever started it.
        let owner = fs::read_to_string(self.dir.join("owner.pid")).unwrap_or_default();
        let ours = owner.trim() == std::process::id().to_string();
        if std::env::var_os("EGRESS_E2E_KEEP").is_none() && ours {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A port nobody listens on now (the OS picks it; the short race with other
/// processes is caught by the start-up checks).
/// Runs `start` on a thread that lives as long as the process and returns
/// what it made: the processes it starts get a parent-death signal, which
/// fires when the thread that started them ends, so they die with the test
/// binary and not before.
pub(crate) fn start_for_process<T: Send + 'static>(
    name: &str,
    start: fn() -> Result<T, HarnessError>,
) -> Result<T, String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = sender.send(start());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    receiver
        .recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Runs `command` with `input` on its stdin; its stdout and stderr are
/// captured.
pub fn run_with_stdin(mut command: Command, input: &[u8]) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    child.wait_with_output()
}

/// What `command` printed on stdout; panics with all it printed when it
/// fails (for tests).
pub fn run(mut command: Command) -> String {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        combined_output(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `stdout` followed by `stderr`, as text.
pub fn combined_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits for Ctrl-C or SIGTERM.
pub fn wait_for_signal() -> std::io::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        })
}

/// A port nobody listens on now on 127.0.0.1 (another process may take it
/// before the caller binds it; rare enough for tests).
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(setup_error("free port"))?;
    Ok(listener
        .local_addr()
        .map_err(setup_error("free port"))?
        .port())
}

/// Polls `check` every 250 ms until it returns `Some`, for at most
/// `timeout`; panics, naming `what`, when the time is up (for tests).
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether a plain-HTTP GET of `path` on 127.0.0.1:`port` answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// Removes run directories whose test process is gone (their processes died
/// with it, through the parent-death signal).
fn sweep_abandoned_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = fs::read_to_string(entry.path().join("owner.pid")).unwrap_or_default();
        let alive = !owner.is_empty() && Path::new(&format!("/proc/{}", owner.trim())).exists();
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Certificates and keys of one run.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
}

impl Pki {
    /// `address`: where the API server serves (in its certificate too).
    fn write(dir: &Path, address: Ipv4Addr) -> Result<Pki, HarnessError> {
        fs::create_dir_all(dir).map_err(setup_error("pki directory"))?;
        let mint = |e: rcgen::Error| HarnessError::Setup(format!("certificate generation: {e}"));
        let ca_key = KeyPair::generate().map_err(mint)?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "egress-e2e CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).map_err(mint)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(mint)?;
        let mut server = CertificateParams::default();
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress([10, 0, 0, 1].into()),
        ];
        if !address.is_loopback() {
            server
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(address)));
        }
        for name in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            server
                .subject_alt_names
                .push(SanType::DnsName(name.try_into().map_err(mint)?));
        }
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).map_err(mint)?;

        let admin_key = KeyPair::generate().map_err(mint)?;
        let mut admin = CertificateParams::default();
        admin
            .distinguished_name
            .push(DnType::CommonName, "egress-e2e-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer).map_err(mint)?;

        let sa_key = KeyPair::generate().map_err(mint)?;
        let files = [
            ("ca.crt", ca.pem()),
            ("apiserver.crt", server_cert.pem()),
            ("apiserver.key", server_key.serialize_pem()),
            ("admin.crt", admin_cert.pem()),
            ("admin.key", admin_key.serialize_pem()),
            ("sa.key", sa_key.serialize_pem()),
            ("sa.pub", sa_key.public_key_pem()),
        ];
        for (name, text) in &files {
            fs::write(dir.join(name), text).map_err(setup_error("pki file"))?;
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem: ca.pem(),
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
        })
    }

    /// An admin kubeconfig (JSON, which every YAML reader accepts).
    fn kubeconfig(&self, server: &str) -> String {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": server,
                "certificate-authority-data": BASE64.encode(&self.ca_pem),
            }}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": BASE64.encode(&self.admin_cert_pem),
                "client-key-data": BASE64.encode(&self.admin_key_pem),
            }}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
            "current-context": "e2e",
        })
        .to_string()
    }
}
