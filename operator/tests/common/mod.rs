//! Harness for the operator on the real control plane: a client, namespaces,
//! CA material made with openssl (as users make it), kubectl, and the
//! operator as a real process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use egress_e2e::ControlPlane;
use egress_e2e::chart::Release;
use egress_e2e::product::{Output, Running};
pub use egress_e2e::run;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, PostParams};

/// A client with the control plane's admin credentials.
pub async fn client(plane: &ControlPlane) -> Client {
    egress_runtime::kube_client(Some(&plane.kubeconfig))
        .await
        .expect("admin client")
}

/// A namespace that may host proxies: [`bare_namespace`], opted in to the
/// operator's Secrets role as the chart's notes tell an administrator.
pub async fn namespace(client: &Client, name: &str) {
    bare_namespace(client, name).await;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), name);
    let role = secrets_role();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": format!("{RELEASE}-operator"), "namespace": RELEASE_NAMESPACE}],
    }))
    .expect("binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("the operator's Secrets role bound");
}

/// `count` domains of list `list`, spread so that they compress as real
/// names do rather than as a counter.
pub fn list_domains(list: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let spread = ((list * count + n) as u64).wrapping_mul(2_654_435_761) % 4_294_967_291;
            format!("d{spread:08x}.l{list:02}.example.net")
        })
        .collect()
}

/// ProxyLists `block-00`, `block-01`, ... of `per_list` domains each in
/// `namespace`, applied server-side as the reference says large lists are (a
/// client-side apply copies the object into an annotation, limited to
/// 256 KiB); a condition naming them all (`valuesFrom: [...]`).
pub fn apply_domain_lists(
    plane: &ControlPlane,
    namespace: &str,
    lists: usize,
    per_list: usize,
) -> String {
    let objects: Vec<String> = (0..lists)
        .map(|l| {
            format!(
                "apiVersion: egress.dev/v1alpha1\nkind: ProxyList\nmetadata:\n  name: block-{l:02}\n  namespace: {namespace}\nspec:\n  type: Domains\n  entries: [{}]\n",
                list_domains(l, per_list).join(", ")
            )
        })
        .collect();
    let mut apply = plane.kubectl();
    apply.args(["apply", "--server-side", "-f", "-"]);
    let output =
        egress_e2e::run_with_stdin(apply, objects.join("---\n").as_bytes()).expect("kubectl runs");
    assert!(
        output.status.success(),
        "{}",
        egress_e2e::combined_output(&output)
    );
    let named: Vec<String> = (0..lists)
        .map(|l| format!("{{list: block-{l:02}}}"))
        .collect();
    format!("valuesFrom: [{}]", named.join(", "))
}

/// The gateway of EgressProxy `egress` in `namespace` as its pod runs it:
/// the arguments and environment the operator renders (its listeners on
/// loopback, `extra` arguments after them), as its ServiceAccount; its
/// kubeconfig in `dir`.
pub fn rendered_gateway(
    plane: &ControlPlane,
    namespace: &str,
    dir: &Path,
    extra: &[&str],
) -> Operator {
    let binary =
        egress_e2e::workspace_binary("egress-gateway", "egress-gateway").expect("gateway binary");
    let local = "127.0.0.1:0".to_owned();
    let rendered = egress_e2e::chart::RenderedGateway::read(
        plane,
        namespace,
        "egress",
        &[
            ("--http-listen", local.clone()),
            ("--https-listen", local.clone()),
            ("--admin-listen", local),
            ("--shutdown-delay", "0s".to_owned()),
        ],
        dir,
    )
    .expect("the rendered gateway");
    let mut args = rendered.args;
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Operator::spawn_with_env(&binary, &args, &rendered.env)
}

/// curl through `gateway`'s HTTP listener to `url`: what curl said.
pub fn curl_through(gateway: &Operator, url: &str) -> String {
    let proxy = format!(
        "http://{}",
        gateway.listener("http").expect("http listener")
    );
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "--proxy",
            &proxy,
            url,
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The rule that decided `gateway`'s last request to `domain`, from its
/// decision lines.
pub fn last_rule_for(gateway: &Operator, domain: &str) -> Option<String> {
    gateway
        .logs()
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|d| d["dest_domain"] == domain)
        .map(|d| d["final_rule_name"].as_str().unwrap_or_default().to_owned())
}

/// The chart's ClusterRole that lets the operator manage a namespace's Secrets.
pub fn secrets_role() -> String {
    format!("{RELEASE}-operator-secrets")
}

/// A namespace with its `default` ServiceAccount (no controller-manager here).
pub async fn bare_namespace(client: &Client, name: &str) {
    egress_e2e::objects::namespace(client, name, serde_json::json!({})).await;
}

/// The seed example users apply first.
pub const SEED: &str = include_str!("../../../examples/seed-policy.yaml");

/// The seed example's configuration and rule groups, without its EgressProxy.
pub fn seed_without_proxy() -> String {
    let documents: Vec<&str> = SEED
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: EgressProxy"))
        .collect();
    documents.join("\n---\n")
}

/// The seed example with an EgressProxy of `metadata` (one line, such as
/// `name: egress`) and extra `spec` fields (one line, flow style), for the
/// seed's configuration, no interception.
pub fn seed_with_proxy(metadata: &str, spec: &str) -> String {
    format!(
        "{}\n---\napiVersion: egress.dev/v1alpha1\nkind: EgressProxy\nmetadata:\n  {metadata}\nspec:\n  configurationRef: {{name: seed}}\n  {spec}\n",
        seed_without_proxy()
    )
}

/// The chart's release in every control plane of these tests.
pub const RELEASE: &str = "egress-proxy";
/// Its namespace.
pub const RELEASE_NAMESPACE: &str = "egress-system";

/// The chart as installed in one control plane, with the webhook called by
/// URL on this machine (no node runs pods here).
#[derive(Clone, Debug)]
pub struct Chart {
    /// The release.
    pub release: Release,
    /// The port of the webhook URL the API server calls.
    pub webhook_port: u16,
    /// What `helm install` printed (the chart's NOTES).
    pub notes: String,
}

/// The chart installed in `plane` (once per control plane, with default
/// values but for what a machine without a node needs): the CRDs, the
/// operator's RBAC, the webhook configuration.
pub fn chart(plane: &ControlPlane) -> Chart {
    static INSTALLED: Mutex<Vec<(PathBuf, Chart)>> = Mutex::new(Vec::new());
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, chart)) = installed.iter().find(|(dir, _)| *dir == plane.dir) {
        return chart.clone();
    }
    let webhook_port = egress_e2e::free_port().expect("free port");
    let values = [
        format!("webhook.url=https://127.0.0.1:{webhook_port}/mutate"),
        "webhook.extraHosts={127.0.0.1}".to_owned(),
        "sharedProxyNamespaces={proxies}".to_owned(),
        "cluster.name=e2e".to_owned(),
        "cluster.serviceCIDRs={10.0.0.0/24}".to_owned(),
        "cluster.podCIDRs={10.244.0.0/16}".to_owned(),
    ];
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let (release, notes) = Release::install(plane, RELEASE, RELEASE_NAMESPACE, &values)
        .expect("helm install of the chart");
    let chart = Chart {
        release,
        webhook_port,
        notes,
    };
    installed.push((plane.dir.clone(), chart.clone()));
    chart
}

/// `kubectl` with `args`, as the administrator; its stdout (it must succeed).
pub fn kubectl(plane: &ControlPlane, args: &[&str]) -> String {
    let mut command = plane.kubectl();
    command.args(args);
    run(command)
}

/// `kubectl apply` of YAML text: (success, stdout + stderr).
pub fn kubectl_apply(plane: &ControlPlane, yaml: &str) -> (bool, String) {
    let mut apply = plane.kubectl();
    apply.args(["apply", "-f", "-"]);
    let output = egress_e2e::run_with_stdin(apply, yaml.as_bytes()).expect("kubectl runs");
    (
        output.status.success(),
        egress_e2e::combined_output(&output),
    )
}

/// A user who owns one namespace and nothing else: the built-in `admin`
/// role there, as the roles it aggregates (no controller-manager aggregates
/// here), the chart's role for the egress resources among them. Its
/// requests go through the API server as that user.
pub struct Tenant {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Tenant {
    /// The user `name`, admin of `namespace` (which must exist).
    pub fn of(plane: &ControlPlane, name: &str, namespace: &str) -> Tenant {
        let edit = format!("{RELEASE}-edit");
        for role in [
            "system:aggregate-to-admin",
            "system:aggregate-to-edit",
            "system:aggregate-to-view",
            edit.as_str(),
        ] {
            let binding = format!("{name}-{}", role.replace(':', "-"));
            let (ok, output) = kubectl_apply(
                plane,
                &format!(
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {binding}, namespace: {namespace}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: \"{role}\"}}\nsubjects: [{{kind: User, name: {name}, apiGroup: rbac.authorization.k8s.io}}]\n"
                ),
            );
            assert!(ok, "{output}");
        }
        let kubeconfig = plane
            .kubeconfig_as(
                name,
                &["system:authenticated".to_owned()],
                &plane.dir.join(format!("tenant-{name}.kubeconfig")),
            )
            .expect("tenant kubeconfig");
        Tenant {
            kubeconfig,
            kubectl: plane.binaries.path("kubectl"),
        }
    }

    /// `kubectl` as the tenant.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// `kubectl apply` of YAML text as the tenant: (success, output).
    pub fn apply(&self, yaml: &str) -> (bool, String) {
        let mut apply = self.kubectl();
        apply.args(["apply", "-f", "-"]);
        let output = egress_e2e::run_with_stdin(apply, yaml.as_bytes()).expect("kubectl runs");
        (
            output.status.success(),
            egress_e2e::combined_output(&output),
        )
    }
}

/// The CRDs as users install them (with the chart: [`chart`]), Established.
pub fn install_crds(plane: &ControlPlane) {
    chart(plane);
    let mut wait = plane.kubectl();
    wait.args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/egressproxies.egress.dev",
        "crd/proxyconfigurations.egress.dev",
        "crd/proxyrulegroups.egress.dev",
        "crd/proxylists.egress.dev",
        "crd/clusterproxyrulegroups.egress.dev",
        "crd/clusterproxylists.egress.dev",
    ]);
    run(wait);
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Object `name` of `api` once it exists (30 s at most; `what` it is, for
/// the failure).
pub async fn once_exists<K>(api: &Api<K>, name: &str, what: &str) -> K
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(Duration::from_secs(30), what, || async {
        api.get_opt(name).await.ok().flatten()
    })
    .await
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("egress-operator-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir);
    run(command);
}

/// `openssl req` for `subject` with a new unencrypted P-256 key written to
/// `key`, the request (with -x509 in `more`, the certificate) to `out`.
fn openssl_req(dir: &Path, key: &str, out: &str, subject: &str, more: &[&str]) {
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ];
    args.extend(more);
    openssl(dir, &args);
}

/// A root and an intermediate CA made with openssl the way users make them;
/// the intermediate's path length is `pathlen` (None: unconstrained).
/// Returns the files (intermediate cert, intermediate key, root cert).
pub fn openssl_ca(dir: &Path, tag: &str, pathlen: Option<u32>) -> [PathBuf; 3] {
    let ext = dir.join(format!("{tag}-ext.cnf"));
    let constraint = match pathlen {
        Some(n) => format!("critical,CA:TRUE,pathlen:{n}"),
        None => "critical,CA:TRUE".to_owned(),
    };
    std::fs::write(
        &ext,
        format!("basicConstraints={constraint}\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"),
    )
    .expect("ext");
    let name = |suffix: &str| format!("{tag}-{suffix}");
    openssl_req(
        dir,
        &name("root.key"),
        &name("root.pem"),
        &format!("/CN={tag} root"),
        &[
            "-x509",
            "-days",
            "365",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl_req(
        dir,
        &name("int.key"),
        &name("int.csr"),
        &format!("/CN={tag} intermediate"),
        &[],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &name("int.csr"),
            "-CA",
            &name("root.pem"),
            "-CAkey",
            &name("root.key"),
            "-CAcreateserial",
            "-out",
            &name("int.pem"),
            "-days",
            "180",
            "-extfile",
            &ext.display().to_string(),
        ],
    );
    [
        dir.join(name("int.pem")),
        dir.join(name("int.key")),
        dir.join(name("root.pem")),
    ]
}

/// `kubectl create secret generic` in cert-manager's CA layout.
pub fn create_ca_secret(
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
    [cert, key, root]: &[PathBuf; 3],
) {
    let mut create = plane.kubectl();
    create
        .args(["create", "secret", "generic", name, "-n", namespace])
        .arg(format!("--from-file=tls.crt={}", cert.display()))
        .arg(format!("--from-file=tls.key={}", key.display()))
        .arg(format!("--from-file=ca.crt={}", root.display()));
    run(create);
}

/// The operator (or another of this workspace's binaries that logs JSON and
/// announces its listeners) as a real process: the product kit's
/// [`Running`].
pub struct Operator {
    process: Running,
    pub admin: SocketAddr,
}

impl Operator {
    /// An operator for the whole test binary, started on a thread that lives
    /// as long as the process: the parent-death signal that keeps it from
    /// outliving the tests fires when the starting *thread* ends, and test
    /// threads end with their test.
    pub fn shared(
        plane: &'static ControlPlane,
        extra: &'static [&'static str],
    ) -> &'static Operator {
        static SHARED: std::sync::OnceLock<Operator> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = sender.send(Operator::start(plane, extra));
                loop {
                    std::thread::park();
                }
            });
            receiver.recv().expect("operator started")
        })
    }

    /// `egress-operator` against `plane` as the chart runs it (its
    /// environment, and its ServiceAccount's RBAC: see [`chart`]), with
    /// `extra` flags, the webhook on a port of its own; owned by the calling
    /// thread (it dies with it).
    pub fn start(plane: &ControlPlane, extra: &[&str]) -> Operator {
        Operator::installed(plane, extra, None, &[])
    }

    /// As [`Operator::start`], with the chart's environment variables in
    /// `changed` set to other values (as other chart values would).
    pub fn start_with_env(plane: &ControlPlane, changed: &[(&str, &str)]) -> Operator {
        Operator::installed(plane, &[], None, changed)
    }

    /// As [`Operator::start`], serving the webhook the chart's
    /// MutatingWebhookConfiguration calls ([`Chart::webhook_port`]).
    pub fn serving_webhook(plane: &ControlPlane, extra: &[&str]) -> Operator {
        Operator::installed(plane, extra, Some(chart(plane).webhook_port), &[])
    }

    fn installed(
        plane: &ControlPlane,
        extra: &[&str],
        webhook: Option<u16>,
        changed: &[(&str, &str)],
    ) -> Operator {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static PODS: AtomicUsize = AtomicUsize::new(0);
        let release = &chart(plane).release;
        let pod = format!(
            "egress-proxy-operator-{}-{}",
            std::process::id(),
            PODS.fetch_add(1, Ordering::SeqCst)
        );
        let installed = release
            .operator(plane, &pod, &plane.dir)
            .expect("the chart's operator");
        // The chart's environment, but every replica on this one machine:
        // listeners on loopback.
        let env: Vec<(String, String)> = installed
            .env
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "EGRESS_WEBHOOK_LISTEN" => {
                    (name, format!("127.0.0.1:{}", webhook.unwrap_or_default()))
                }
                _ => match changed.iter().find(|(n, _)| *n == name) {
                    Some((_, changed)) => (name, (*changed).to_owned()),
                    None => (name, value),
                },
            })
            .collect();
        let mut args = vec![
            "--kubeconfig".to_owned(),
            installed.kubeconfig.display().to_string(),
            "--log-format".to_owned(),
            "json".to_owned(),
            "--admin-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        args.extend(installed.args);
        args.extend(extra.iter().map(|s| s.to_string()));
        Operator::spawn_with_env(
            Path::new(env!("CARGO_BIN_EXE_egress-operator")),
            &args,
            &env,
        )
    }

    /// Any of this workspace's binaries that log JSON and announce their
    /// listeners (`"message":"listening"`), with exactly `args`.
    pub fn spawn(binary: &Path, args: &[String]) -> Operator {
        Operator::spawn_with_env(binary, args, &[])
    }

    /// As [`Operator::spawn`], with these environment variables too.
    pub fn spawn_with_env(binary: &Path, args: &[String], env: &[(String, String)]) -> Operator {
        let mut env = env.to_vec();
        env.push((
            "RUST_LOG".to_owned(),
            "info,egress_operator=debug".to_owned(),
        ));
        let output = Output::for_test_run("operator");
        let process = Running::start(binary, args, &env, output).unwrap_or_else(|e| panic!("{e}"));
        let admin = process.listener("admin").expect("admin listener");
        Operator { process, admin }
    }

    /// The address a listener announced (`http`, `https`, `admin`).
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.process.listener(name)
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.process.admin_get(path)
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// CPU seconds used so far (user + system) and resident memory in MiB.
    pub fn usage(&self) -> (f64, f64) {
        self.process.usage()
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.process.lines()
    }

    /// Whether a log line contains every one of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        self.logs()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// A metric's value from `/metrics` (summed over lines starting with `prefix`).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.process.metric(prefix)
    }

    pub fn terminate(&self) {
        self.process.terminate();
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait(timeout)
    }
}
