//! The whole product on one machine, as a user would set it up on a cluster:
//! the Helm chart installed into the test control plane, the operator and
//! its injection webhook, the interception CA made with `examples/cluster/ca.sh`,
//! the seed policy, the gateway fed from the API server, a namespace labelled
//! for injection with a client pod, and a demo destination.
//!
//! There is no node here: the operator and the gateway run as local
//! processes (as they would in their pods), the client pod is never started
//! (its injected settings and trust bundle are read back and used by local
//! clients, its address reported as this machine's loopback so the gateway
//! names it in decision lines), and the proxy's Service name is resolved to
//! 127.0.0.1 by whoever connects (`curl --resolve`). The `egress-demo`
//! binary runs this for a person; `tests/walkthrough.rs` for the suite.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use egress_e2e::ControlPlane;
use egress_e2e::chart::{Release, RenderedGateway};
use egress_e2e::product::{Output, Running};

/// Namespace of the chart and the operator.
pub const RELEASE_NAMESPACE: &str = "egress-system";
/// Namespace of the proxy (listed in the chart's `sharedProxyNamespaces`).
pub const PROXY_NAMESPACE: &str = "egress";
/// The EgressProxy of the seed example.
pub const PROXY: &str = "egress";
/// The ProxyRuleGroup of the seed example.
pub const RULE_GROUP: &str = "seed-rules";
/// The namespace labelled for injection.
pub const CLIENT_NAMESPACE: &str = "demo";
/// The client pod.
pub const CLIENT_POD: &str = "client";
/// The destination the seed policy allows (served here).
pub const ALLOWED_HOST: &str = "www.example.com";
/// The destination the seed policy's PreDNS rule denies (served here too,
/// for when the rule is removed).
pub const DENIED_HOST: &str = "www.example.org";
/// The proxy's Service name, as injected pods see it.
pub const PROXY_SERVICE: &str = "egress.egress.svc";

/// The repository's root (charts, examples).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The local ports of everything that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The gateway's plain listener (also the proxy's `httpPort`).
    pub http: u16,
    /// The gateway's HTTPS listener (also the proxy's `httpsPort`).
    pub https: u16,
    /// The gateway's admin listener.
    pub gateway_admin: u16,
    /// The operator's admin listener.
    pub operator_admin: u16,
    /// The injection webhook.
    pub webhook: u16,
    /// The demo destination.
    pub destination: u16,
}

impl Ports {
    /// The ports a person uses: the seed proxy's listener ports.
    pub fn standard() -> Ports {
        Ports {
            http: 1080,
            https: 8443,
            gateway_admin: 9090,
            operator_admin: 9091,
            webhook: 9444,
            destination: 9443,
        }
    }

    /// Free ports, for tests.
    pub fn free() -> anyhow::Result<Ports> {
        let port = || egress_e2e::free_port().map_err(anyhow::Error::from);
        Ok(Ports {
            http: port()?,
            https: port()?,
            gateway_admin: port()?,
            operator_admin: port()?,
            webhook: port()?,
            destination: port()?,
        })
    }
}

/// The binaries the demo runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `egress-operator`.
    pub operator: PathBuf,
    /// `egress-gateway`.
    pub gateway: PathBuf,
}

/// Everything running, and what a client needs.
#[derive(Debug)]
pub struct Demo {
    /// Files: CA, trust bundle, logs, the client's environment.
    pub dir: PathBuf,
    /// Local ports.
    pub ports: Ports,
    /// The client pod's environment as the webhook injected it, its
    /// `/etc/egress-proxy` paths pointing at [`Demo::trust_dir`].
    pub client_env: Vec<(String, String)>,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    processes: Vec<(&'static str, Running)>,
}

impl Drop for Demo {
    /// Stops what it started, last first, each given time to drain.
    fn drop(&mut self) {
        while let Some((_, process)) = self.processes.pop() {
            process.stop(Duration::from_secs(5));
        }
    }
}

/// Reports progress.
pub type Say<'a> = &'a dyn Fn(&str);

impl Demo {
    /// Sets everything up on `plane` and starts it.
    pub fn start(
        plane: &ControlPlane,
        binaries: &Binaries,
        ports: Ports,
        say: Say,
    ) -> anyhow::Result<Demo> {
        let dir = plane.dir.join("demo");
        fs::create_dir_all(&dir).context("demo directory")?;
        let mut demo = Demo {
            dir,
            ports,
            client_env: Vec::new(),
            kubeconfig: plane.kubeconfig.clone(),
            kubectl: plane.binaries.path("kubectl"),
            processes: Vec::new(),
        };

        say("installing the Helm chart (charts/egress-proxy)");
        let webhook = format!("https://127.0.0.1:{}/mutate", ports.webhook);
        let values = [
            format!("webhook.url={webhook}"),
            "webhook.extraHosts={127.0.0.1}".to_owned(),
            format!("sharedProxyNamespaces={{{PROXY_NAMESPACE}}}"),
            "cluster.name=demo".to_owned(),
        ];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let (release, _) = Release::install(plane, "egress-proxy", RELEASE_NAMESPACE, &values)?;

        say("starting the operator and its webhook (the chart's settings and RBAC)");
        // As the chart's operator pod runs, its listeners on this machine.
        let operator = release.operator(plane, "egress-proxy-operator-demo", &demo.dir)?;
        let env: Vec<(String, String)> = operator
            .env
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "EGRESS_WEBHOOK_LISTEN" => (name, format!("127.0.0.1:{}", ports.webhook)),
                _ => (name, value),
            })
            .collect();
        let mut args = vec![
            "--kubeconfig".to_owned(),
            path(&operator.kubeconfig),
            "--admin-listen".to_owned(),
            format!("127.0.0.1:{}", ports.operator_admin),
        ];
        args.extend(operator.args);
        demo.spawn("operator", &binaries.operator, &args, &env, None)?;
        demo.wait_ready("operator", ports.operator_admin)?;

        say("making the interception CA (examples/cluster/ca.sh) and applying the seed policy");
        demo.kubectl_ok(&["create", "namespace", PROXY_NAMESPACE])?;
        // The proxy's namespace lets the operator manage its Secrets, as
        // the user guide has an administrator do.
        let operator = format!("{RELEASE_NAMESPACE}:egress-proxy-operator");
        demo.kubectl_ok(&[
            "create",
            "rolebinding",
            "egress-proxy-operator-secrets",
            "--namespace",
            PROXY_NAMESPACE,
            "--clusterrole",
            "egress-proxy-operator-secrets",
            "--serviceaccount",
            &operator,
        ])?;
        demo.make_ca("egress-ca", 1)?;
        let seed = repository().join("examples/seed-policy.yaml");
        demo.kubectl_ok(&["apply", "-n", PROXY_NAMESPACE, "-f", &path(&seed)])?;
        // This machine's listener ports, and the demo destination on
        // loopback: a private address the proxy refuses unless allowed.
        let patch = serde_json::json!({"spec": {
            "listeners": {"httpPort": ports.http, "httpsPort": ports.https},
            "destinations": {"allowPrivateCIDRs": ["127.0.0.1/32"]},
        }});
        demo.patch_proxy(&patch)?;
        for condition in ["PolicyCompiled", "CertificateReady"] {
            demo.kubectl_ok(&[
                "wait",
                "-n",
                PROXY_NAMESPACE,
                &format!("egressproxy/{PROXY}"),
                &format!("--for=condition={condition}"),
                "--timeout=60s",
            ])?;
        }

        say("starting the demo destination and the gateway (as the operator rendered it)");
        let destination_ca = start_destination(&demo.dir, ports.destination)?;
        let gateway = demo.rendered_gateway(plane)?;
        let resolve = format!("{ALLOWED_HOST}:*:127.0.0.1;{DENIED_HOST}:*:127.0.0.1");
        let mut args = gateway.args;
        // The demo destination is on this machine, with a CA of its own.
        args.extend([
            "--resolve".to_owned(),
            resolve,
            "--upstream-ca".to_owned(),
            path(&destination_ca),
        ]);
        demo.spawn(
            "gateway",
            &binaries.gateway,
            &args,
            &gateway.env,
            Some(demo.dir.join("decisions.log")),
        )?;
        demo.wait_ready("gateway", ports.gateway_admin)?;

        say("labelling namespace demo for injection and creating a client pod");
        demo.kubectl_ok(&["create", "namespace", CLIENT_NAMESPACE])?;
        // No controller-manager here makes the default ServiceAccount.
        demo.kubectl_ok(&[
            "create",
            "serviceaccount",
            "default",
            "-n",
            CLIENT_NAMESPACE,
        ])?;
        demo.kubectl_ok(&[
            "label",
            "namespace",
            CLIENT_NAMESPACE,
            "egress.dev/injection=enabled",
        ])?;
        let pod = demo.create_client_pod()?;
        demo.write_trust_bundle()?;
        demo.client_env = demo.local_env(&pod);
        fs::write(demo.dir.join("client.env"), demo.shell_env()).context("client.env")?;
        Ok(demo)
    }

    /// The directory standing in for the pod's `/etc/egress-proxy`.
    pub fn trust_dir(&self) -> PathBuf {
        self.dir.join("trust")
    }

    /// The gateway's decision log (one JSON line per decision).
    pub fn decisions(&self) -> PathBuf {
        self.dir.join("decisions.log")
    }

    /// A URL of the demo destination.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.ports.destination)
    }

    /// `curl` with exactly the client pod's environment; the proxy's
    /// Service name resolves to this machine, as cluster DNS would to the
    /// Service.
    pub fn curl(&self) -> Command {
        let mut curl = Command::new("curl");
        curl.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.client_env.iter().map(|(k, v)| (k, v)))
            .args(["-sS", "--max-time", "20"])
            .arg("--resolve")
            .arg(format!("{PROXY_SERVICE}:{}:127.0.0.1", self.ports.https))
            .arg("--resolve")
            .arg(format!("{PROXY_SERVICE}:{}:127.0.0.1", self.ports.http));
        curl
    }

    /// `kubectl` against the demo's control plane.
    pub fn kubectl(&self) -> Command {
        let mut kubectl = Command::new(&self.kubectl);
        kubectl.arg("--kubeconfig").arg(&self.kubeconfig);
        kubectl
    }

    /// What to type next.
    pub fn guide(&self, plane: &ControlPlane) -> String {
        let env = path(&self.dir.join("client.env"));
        let curl = format!(
            "(. {env}; curl --resolve {PROXY_SERVICE}:{}:127.0.0.1 --resolve {PROXY_SERVICE}:{}:127.0.0.1",
            self.ports.http, self.ports.https
        );
        let https_proxy = format!(
            "--proxy https://{PROXY_SERVICE}:{} --proxy-cacert {}/ca-bundle.pem",
            self.ports.https,
            path(&self.trust_dir())
        );
        let site = self.url(ALLOWED_HOST, "");
        format!(
            "
egress-proxy is running: the chart, the operator and its webhook, the gateway
(fed from the API server), and a demo destination for {ALLOWED_HOST} and
{DENIED_HOST}. Files: {dir}

  export KUBECONFIG={kubeconfig}
  export PATH={bin}:$PATH

The webhook gave pod {CLIENT_NAMESPACE}/{CLIENT_POD} these settings (kubectl -n {CLIENT_NAMESPACE} get pod {CLIENT_POD} -o yaml);
{env} holds them, with its trust bundle in {trust}:
{settings}
Each phase of the seed policy, with exactly those settings ({PROXY_SERVICE} is this
machine here, as cluster DNS makes it the Service in a cluster):
  # allowed: the destination's page, through an intercepted tunnel
  {curl} {site}/)
  # PreDNS deny of .example.org: curl reports the CONNECT 403
  {curl} {denied}/)
  # PreREQUEST deny of */files/*: a 403 inside the tunnel
  {curl} {site}/files/report.pdf)
  # PostRESPONSE deny of status 404: the 404 becomes a 403
  {curl} {site}/missing)
  # through the HTTPS listener: TLS to the proxy too (curl reads the proxy's
  # CA only from --proxy-cacert, never from the environment)
  {curl} {https_proxy} {site}/)

Decision log (one JSON line per request, naming the rule and the client pod):
  tail -f {decisions}
Change a rule and watch it apply within a second:
  kubectl -n {PROXY_NAMESPACE} edit proxyrulegroup {RULE_GROUP}
  kubectl -n {PROXY_NAMESPACE} get egressproxy {PROXY} -o yaml    # status: conditions, clients
Operator and gateway diagnostics: {dir}/operator.log, {dir}/gateway.log

Ctrl-C stops everything.
",
            dir = path(&self.dir),
            kubeconfig = path(&plane.kubeconfig),
            bin = path(&plane.binaries.dir),
            trust = path(&self.trust_dir()),
            settings = self
                .client_env
                .iter()
                .map(|(k, v)| format!("  {k}={v}\n"))
                .collect::<String>(),
            denied = self.url(DENIED_HOST, ""),
            decisions = path(&self.decisions()),
        )
    }

    /// Starts a process logging to `<dir>/<name>.log` (stdout to `stdout`
    /// when given, else `<dir>/<name>-stdout.log`) and waits until it
    /// announces its admin listener.
    fn spawn(
        &mut self,
        name: &'static str,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        stdout: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let output = Output {
            stdout: stdout.unwrap_or_else(|| self.dir.join(format!("{name}-stdout.log"))),
            stderr: self.dir.join(format!("{name}.log")),
        };
        let running = Running::start(binary, args, env, output).map_err(anyhow::Error::msg)?;
        self.processes.push((name, running));
        Ok(())
    }

    /// The gateway Deployment the operator rendered, its listeners moved to
    /// this machine's ports, acting as the gateway's ServiceAccount.
    fn rendered_gateway(&self, plane: &ControlPlane) -> anyhow::Result<RenderedGateway> {
        let started = Instant::now();
        loop {
            let overrides = [
                ("--http-listen", format!("127.0.0.1:{}", self.ports.http)),
                ("--https-listen", format!("127.0.0.1:{}", self.ports.https)),
                (
                    "--admin-listen",
                    format!("127.0.0.1:{}", self.ports.gateway_admin),
                ),
                ("--shutdown-delay", "0s".to_owned()),
            ];
            match RenderedGateway::read(plane, PROXY_NAMESPACE, PROXY, &overrides, &self.dir) {
                Ok(gateway) => return Ok(gateway),
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    bail!("the operator rendered no gateway Deployment: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits for `/readyz` of a process this demo started.
    fn wait_ready(&mut self, name: &str, admin: u16) -> anyhow::Result<()> {
        let started = Instant::now();
        while !egress_e2e::http_ok(admin, "/readyz") {
            let (_, process) = self
                .processes
                .iter_mut()
                .find(|(n, _)| *n == name)
                .context("not started")?;
            let log = process.output.stderr.clone();
            if !process.is_running() {
                bail!("{name} exited; see {}:\n{}", log.display(), tail(&log));
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{name} was not ready after 60 s; see {}:\n{}",
                    log.display(),
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Runs `examples/cluster/ca.sh` (as a user would) for a CA Secret `secret` in
    /// the proxy's namespace whose intermediate has path length `pathlen`;
    /// its files are in `<dir>/<secret>`.
    pub fn make_ca(&self, secret: &str, pathlen: u32) -> anyhow::Result<()> {
        let mut ca = Command::new("bash");
        ca.arg(repository().join("examples/cluster/ca.sh"))
            .arg(self.dir.join(secret))
            .args([PROXY_NAMESPACE, secret])
            .env("PATHLEN", pathlen.to_string())
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "PATH",
                with_path(self.kubectl.parent().unwrap_or(Path::new("."))),
            );
        run(ca).map(drop)
    }

    /// Runs kubectl with `args`; its stdout, or an error with its output.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut kubectl = self.kubectl();
        kubectl.args(args);
        run(kubectl)
    }

    /// Merges `patch` into the demo's EgressProxy.
    pub fn patch_proxy(&self, patch: &serde_json::Value) -> anyhow::Result<String> {
        let patch = patch.to_string();
        self.kubectl_ok(&[
            "patch",
            "egressproxy",
            PROXY,
            "-n",
            PROXY_NAMESPACE,
            "--type",
            "merge",
            "-p",
            &patch,
        ])
    }

    /// Creates the client pod once its namespace's trust bundle copy is
    /// there, reports this machine's loopback as its address (as a kubelet
    /// reports a started pod's), and returns it as the API server stored it.
    fn create_client_pod(&self) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let copy = format!("configmap/egress-trust.{PROXY_NAMESPACE}.{PROXY}");
        while self
            .kubectl_ok(&["get", "-n", CLIENT_NAMESPACE, &copy])
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the operator did not copy the trust bundle into {CLIENT_NAMESPACE}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": CLIENT_POD, "labels": {"app": "client"}},
            "spec": {"containers": [{
                "name": "client",
                "image": "curlimages/curl:8.11.1",
                "command": ["sleep", "infinity"]
            }]}
        });
        let mut create = self.kubectl();
        create.args(["create", "-n", CLIENT_NAMESPACE, "-o", "json", "-f", "-"]);
        let created: serde_json::Value =
            serde_json::from_str(&run_with_input(create, &pod.to_string())?)
                .context("the created pod")?;
        if created["metadata"]["annotations"]["egress.dev/proxy"].is_null() {
            bail!("the webhook did not inject the client pod; see the operator's log");
        }
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
        }});
        self.kubectl_ok(&[
            "patch",
            "pod",
            CLIENT_POD,
            "-n",
            CLIENT_NAMESPACE,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            &status.to_string(),
        ])?;
        Ok(created)
    }

    /// Writes the namespace's trust bundle copy where the pod mounts it.
    fn write_trust_bundle(&self) -> anyhow::Result<()> {
        let json = self.kubectl_ok(&[
            "get",
            "configmap",
            "-n",
            CLIENT_NAMESPACE,
            &format!("egress-trust.{PROXY_NAMESPACE}.{PROXY}"),
            "-o",
            "json",
        ])?;
        let copy: serde_json::Value = serde_json::from_str(&json).context("trust bundle")?;
        let dir = self.trust_dir();
        fs::create_dir_all(&dir).context("trust directory")?;
        for (key, value) in copy["data"].as_object().into_iter().flatten() {
            fs::write(dir.join(key), value.as_str().unwrap_or_default()).context("trust file")?;
        }
        for (key, value) in copy["binaryData"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .context("binaryData")?;
            fs::write(dir.join(key), bytes).context("trust file")?;
        }
        Ok(())
    }

    /// The environment of the pod's container, with the mount path replaced
    /// by where its files are on this machine.
    fn local_env(&self, pod: &serde_json::Value) -> Vec<(String, String)> {
        let trust = path(&self.trust_dir());
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|var| {
                let name = var["name"].as_str()?.to_owned();
                let value = var["value"].as_str()?.replace("/etc/egress-proxy", &trust);
                Some((name, value))
            })
            .collect()
    }

    /// The client environment as `export` lines.
    fn shell_env(&self) -> String {
        let mut text =
            String::from("# The client pod's environment as the injection webhook set it.\n");
        for (name, value) in &self.client_env {
            text.push_str(&format!(
                "export {name}='{}'\n",
                value.replace('\'', "'\\''")
            ));
        }
        text
    }
}

/// Starts the demo destination (`/` and `/files/...` answer 200, anything
/// else 404) for both hosts on 127.0.0.1:`port`; returns its CA's file.
fn start_destination(dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let now = std::time::SystemTime::now();
    let year = Duration::from_secs(365 * 24 * 3600);
    let ca = egress_pki::self_signed_ca("egress demo destinations", &[], now, year)?;
    let names = [ALLOWED_HOST, DENIED_HOST].map(str::to_owned);
    let leaf = egress_pki::issue_server_cert(&ca.cert_pem, &ca.key_pem, &names, now, year)?;
    let (ca_file, cert, key) = (
        dir.join("destination-ca.pem"),
        dir.join("destination.pem"),
        dir.join("destination.key"),
    );
    fs::write(&ca_file, &ca.cert_pem).context("destination CA")?;
    fs::write(&cert, &leaf.cert_pem).context("destination certificate")?;
    fs::write(&key, &leaf.key_pem).context("destination key")?;
    let serving = std::sync::Arc::new(egress_gateway::tls::ServingCert::load(&cert, &key)?);
    let config = serving.server_config()?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the demo destination"))?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("demo-destination".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        egress_gateway::dev::demo_upstream(listener, config).await;
                    }
                });
            }
        })
        .context("destination thread")?;
    Ok(ca_file)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `$PATH` with `dir` first.
fn with_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap_or_default()
}

/// Runs `command`; its stdout, or an error with its output.
fn run(mut command: Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run_with_input(mut command: Command, input: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{command:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
