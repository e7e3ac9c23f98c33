//! One real node joined to a test control plane, made of the parts kind runs,
//! as local processes: containerd (with runc and the bridge CNI plugin),
//! kubelet, kube-proxy (nftables mode), kube-controller-manager,
//! kube-scheduler, CoreDNS (serving `cluster.local` behind the cluster DNS
//! Service IP) and kube-router's NetworkPolicy controller.
//!
//! The node is opt-in: [`Cluster::start`] (or [`ControlPlane::with_node`])
//! starts a control plane that serves on the host side of the pod network,
//! then the node; tests that need no node keep using [`ControlPlane`] alone.
//!
//! A node changes the machine (a bridge, netfilter rules, mounts, cgroups,
//! sysctls), so there is one at a time per machine: a lock file names the
//! run that holds it. What a run changes is recorded in its directory and
//! undone by `tools/node/teardown.sh`, which runs when the node stops, from
//! a watchdog when the test process dies without stopping it, and at the next
//! start when both failed. The machine needs root, cgroup v1 or v2 with the
//! cgroupfs driver, and the packages `tools/node/install-packages.sh`
//! installs; `../shared/REAL-NODE.md` and `e2e/README.md` say why each
//! setting is what it is.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{self, Process};
use crate::{ControlPlane, HarnessError, PlaneOptions, free_port, setup_error, unique};

/// The node's name (and its `kubernetes.io/hostname` label).
pub const NODE_NAME: &str = "e2e-node";
/// The host side of the pod network: the bridge's address, the node's
/// InternalIP, where the API server and CoreDNS serve, and where tests put
/// servers that stand for destinations outside the cluster.
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's pod range (the first /24 of [`CLUSTER_CIDR`], which
/// kube-controller-manager allocates to the only node).
pub const POD_SUBNET: &str = "10.244.0.0/24";
/// The cluster's pod range.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Service range (the control plane's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The cluster DNS Service's ClusterIP.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// A name the cluster DNS resolves to [`HOST_ADDRESS`]: destinations
/// "outside the cluster" by name.
pub const HOST_NAME: &str = "host.e2e.test";
/// An address of this machine outside every cluster range (pods, Services),
/// on the bridge too: destinations that stand for the internet, which
/// NetworkPolicies treat as outside the cluster. Reserved for benchmarking
/// (RFC 2544), so never anyone's real network.
pub const OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A name the cluster DNS resolves to [`OUTSIDE_ADDRESS`].
pub const OUTSIDE_NAME: &str = "outside.e2e.test";
/// The port the kubelet serves on (logs, exec, port-forward), on [`HOST_ADDRESS`].
pub const KUBELET_PORT: u16 = 10250;
const BRIDGE: &str = "egress-e2e0";
/// The machine-wide node lock: whatever `$EGRESS_E2E_NODE_DIR` says, a node
/// changes the machine (the bridge, rules, sysctls), so there is one at a time.
const LOCK: &str = "/run/egress-e2e-node.lock";
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Images imported into the node's containerd. Pods use them with
/// `imagePullPolicy: Never` or `IfNotPresent`: no registry is reachable.
pub mod images {
    /// The sandbox image (busybox sleeping).
    pub const PAUSE: &str = "docker.io/egress-e2e/pause:1";
    /// busybox (sh, nslookup, httpd, nc, wget) with curl and CA certificates.
    pub const CLIENT: &str = "docker.io/egress-e2e/client:1";
    /// The client image, and the clients users run with their runtimes
    /// (`tools/node/clients-image.sh`): Python requests, Go net/http, Node
    /// fetch, Java HttpClient.
    pub const CLIENTS: &str = "docker.io/egress-e2e/clients:1";
    /// This workspace's release `egress-gateway`, named as the chart's
    /// default `image.gateway` (`egress-gateway:<version>`) resolves.
    pub const GATEWAY: &str = concat!(
        "docker.io/library/egress-gateway:",
        env!("CARGO_PKG_VERSION")
    );
    /// This workspace's release `egress-operator`.
    pub const OPERATOR: &str = concat!(
        "docker.io/library/egress-operator:",
        env!("CARGO_PKG_VERSION")
    );
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/node")
}

/// Runs one of the node's tool scripts; its stdout's last line is its answer.
fn run_script(script: &str, args: &[&Path]) -> Result<String, String> {
    let path = tools_dir().join(script);
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

/// The directory holding kubelet, kube-proxy, kube-controller-manager,
/// kube-scheduler, coredns and kube-router (`tools/node/build.sh`, after
/// `tools/node/install-packages.sh` for containerd and the rest).
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    /// Where the binaries are.
    pub dir: PathBuf,
}

impl NodeBinaries {
    /// Installs the Debian packages if missing and builds the binaries if
    /// their pinned versions are not cached yet, or uses `$EGRESS_E2E_NODE_BIN_DIR`.
    pub fn ensure() -> Result<NodeBinaries, HarnessError> {
        static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            run_script("install-packages.sh", &[])?;
            if let Some(dir) = std::env::var_os("EGRESS_E2E_NODE_BIN_DIR") {
                return Ok(PathBuf::from(dir));
            }
            run_script("build.sh", &[]).map(PathBuf::from)
        });
        match dir {
            Ok(dir) => Ok(NodeBinaries { dir: dir.clone() }),
            Err(e) => Err(HarnessError::Binaries(e.clone())),
        }
    }

    /// The path of one binary.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// This workspace's release `egress-gateway` and `egress-operator`.
#[derive(Clone, Debug)]
pub struct ReleaseBinaries {
    /// `target/release/egress-gateway`.
    pub gateway: PathBuf,
    /// `target/release/egress-operator`.
    pub operator: PathBuf,
}

impl ReleaseBinaries {
    /// Builds them now if missing or stale (`cargo build --release` in the
    /// running test's target directory; a no-op when fresh): the images must
    /// hold what the source says, and release builds are what users run.
    /// Both packages are built in one invocation, as `.ci/run` builds them:
    /// cargo unifies features over the packages built together, so building
    /// them one by one would compile their dependencies again.
    pub fn ensure() -> Result<ReleaseBinaries, HarnessError> {
        static BUILT: OnceLock<Result<ReleaseBinaries, String>> = OnceLock::new();
        BUILT
            .get_or_init(|| ReleaseBinaries::build().map_err(|e| e.to_string()))
            .clone()
            .map_err(HarnessError::Binaries)
    }

    fn build() -> Result<ReleaseBinaries, HarnessError> {
        let exe = std::env::current_exe().map_err(setup_error("current executable"))?;
        // target/<profile>/deps/<test> (or target/<profile>/<bin>) -> target
        let target = exe
            .ancestors()
            .find(|dir| {
                dir.file_name()
                    .is_some_and(|n| n == "debug" || n == "release")
            })
            .and_then(Path::parent)
            .ok_or_else(|| {
                HarnessError::Setup(format!("{} is not in a target directory", exe.display()))
            })?;
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["build", "--release", "--quiet"])
            .args(["-p", "egress-gateway", "-p", "egress-operator"])
            .env("CARGO_TARGET_DIR", target)
            .output()
            .map_err(setup_error("cargo build --release"))?;
        let binaries = ReleaseBinaries {
            gateway: target.join("release/egress-gateway"),
            operator: target.join("release/egress-operator"),
        };
        if !output.status.success() || !binaries.gateway.exists() || !binaries.operator.exists() {
            return Err(HarnessError::Setup(format!(
                "cannot build egress-gateway and egress-operator in release mode ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(binaries)
    }
}

/// The image tarballs: pause, client, and the gateway and operator from
/// this workspace's release binaries (`tools/node/images.sh`); the clients
/// with their runtimes (`tools/node/clients-image.sh`).
#[derive(Clone, Debug)]
pub struct Images {
    /// The folder holding `pause.tar`, `client.tar`, `gateway.tar`, `operator.tar`.
    pub dir: PathBuf,
    /// The folder holding `clients.tar` (kept apart: it changes rarely).
    pub clients_dir: PathBuf,
}

impl Images {
    /// Builds the release binaries if stale, then the tarballs if their
    /// inputs changed.
    pub fn ensure() -> Result<Images, HarnessError> {
        static DIRS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
        let dirs = DIRS.get_or_init(|| {
            let release = ReleaseBinaries::ensure().map_err(|e| e.to_string())?;
            let tag = Path::new(env!("CARGO_PKG_VERSION"));
            let dir = run_script("images.sh", &[&release.gateway, &release.operator, tag])?;
            let runtimes = (|| -> Result<[PathBuf; 4], HarnessError> {
                let python = crate::clients::python()?;
                let venv = python
                    .parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                Ok([
                    venv,
                    crate::clients::go_client()?,
                    crate::clients::node()?,
                    crate::clients::java()?,
                ])
            })()
            .map_err(|e| e.to_string())?;
            let args: Vec<&Path> = runtimes.iter().map(PathBuf::as_path).collect();
            let clients = run_script("clients-image.sh", &args)?;
            Ok((PathBuf::from(dir), PathBuf::from(clients)))
        });
        match dirs {
            Ok((dir, clients_dir)) => Ok(Images {
                dir: dir.clone(),
                clients_dir: clients_dir.clone(),
            }),
            Err(e) => Err(HarnessError::Binaries(e.clone())),
        }
    }

    /// Every tarball with the image name it holds.
    pub fn tarballs(&self) -> Vec<(PathBuf, &'static str)> {
        [
            ("pause.tar", images::PAUSE),
            ("client.tar", images::CLIENT),
            ("gateway.tar", images::GATEWAY),
            ("operator.tar", images::OPERATOR),
        ]
        .into_iter()
        .map(|(file, name)| (self.dir.join(file), name))
        .chain([(self.clients_dir.join("clients.tar"), images::CLIENTS)])
        .collect()
    }
}

/// A control plane with one node: what a test that runs pods needs.
#[derive(Debug)]
pub struct Cluster {
    /// The node (declared first: it stops before the control plane).
    pub node: Node,
    /// The control plane, serving on [`HOST_ADDRESS`].
    pub plane: ControlPlane,
}

impl ControlPlane {
    /// A control plane with a node: see [`Cluster::start`].
    pub fn with_node() -> Result<Cluster, HarnessError> {
        Cluster::start()
    }
}

impl Cluster {
    /// Builds what is missing, takes the machine's node lock (waiting for
    /// another run to finish), prepares the host network, starts a control
    /// plane on [`HOST_ADDRESS`] and the node on it. Everything started is
    /// stopped, and the host restored, when this fails or the cluster is
    /// dropped.
    pub fn start() -> Result<Cluster, HarnessError> {
        let binaries = NodeBinaries::ensure()?;
        let images = Images::ensure()?;
        let started = Instant::now();
        let mut node = Node::prepare(binaries, images)?;
        let plane = match ControlPlane::start_with(&PlaneOptions {
            address: Some(HOST_ADDRESS),
        }) {
            Ok(plane) => plane,
            Err(e) => {
                node.stop();
                return Err(e);
            }
        };
        if let Err(e) = node.boot(&plane) {
            node.stop();
            return Err(e);
        }
        let _ = fs::write(
            node.dir.join("started.txt"),
            format!(
                "control plane and node ready in {:.1}s\n",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(Cluster { node, plane })
    }

    /// One cluster for the whole test binary, started on a thread that lives
    /// as long as the process (the processes' parent-death signal fires when
    /// the starting thread ends). It is never dropped: when the test process
    /// exits, its processes die and the node's watchdog restores the host.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| crate::start_for_process("cluster", Cluster::start));
        match shared {
            Ok(cluster) => cluster,
            Err(e) => panic!("the cluster could not start: {e}"),
        }
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        self.plane.kubectl()
    }
}

/// The node: its processes, its run directory, and the machine lock.
#[derive(Debug)]
pub struct Node {
    /// Run directory: configuration, logs, containerd and kubelet state.
    pub dir: PathBuf,
    /// The node's binaries.
    pub binaries: NodeBinaries,
    /// The images imported at start.
    pub images: Images,
    kubectl: Kubectl,
    lock: PathBuf,
    processes: Vec<Process>,
    watchdog: Option<Child>,
    stopped: bool,
}

/// Sysctls that the node's parts change (kubelet, kube-proxy, the bridge
/// plugin, kube-router): recorded before and restored after a run.
const SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Paths outside the run directory that the node's parts create even when
/// told to keep their state elsewhere: removed after a run when they did not
/// exist before it and hold nothing but empty folders.
const CREATED_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/usr/libexec/kubernetes",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/run/containerd",
    "/var/run/netns",
    "/var/lib/kube-router",
    "/etc/kubernetes",
];

impl Node {
    fn base() -> PathBuf {
        std::env::var_os("EGRESS_E2E_NODE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("egress-e2e-node"))
    }

    /// Takes the machine's node lock, records the host state the run will
    /// change, makes the bridge, and starts the watchdog.
    fn prepare(binaries: NodeBinaries, images: Images) -> Result<Node, HarnessError> {
        let base = Node::base();
        fs::create_dir_all(&base).map_err(setup_error("node base directory"))?;
        let dir = base.join(format!("run-{}-{}", std::process::id(), unique()));
        let lock = PathBuf::from(LOCK);
        take_lock(&lock, &dir)?;
        let mut node = Node {
            dir,
            binaries,
            images,
            kubectl: Kubectl::default(),
            lock,
            processes: Vec::new(),
            watchdog: None,
            stopped: false,
        };
        if let Err(e) = node.record_and_make_bridge() {
            node.stop();
            return Err(e);
        }
        Ok(node)
    }

    fn record_and_make_bridge(&mut self) -> Result<(), HarnessError> {
        let dir = &self.dir;
        fs::create_dir_all(dir.join("pids")).map_err(setup_error("node run directory"))?;
        let write = |name: &str, text: String| {
            fs::write(dir.join(name), text).map_err(setup_error("node run directory"))
        };
        write("owner.pid", std::process::id().to_string())?;
        write("bin", self.binaries.dir.display().to_string())?;
        write("bridge", BRIDGE.to_owned())?;
        let mut before = String::new();
        for name in SYSCTLS {
            if let Ok(value) = fs::read_to_string(Path::new("/proc/sys").join(name)) {
                before.push_str(&format!("{}={}\n", name.replace('/', "."), value.trim()));
            }
        }
        write("sysctl.before", before)?;
        let absent: Vec<&str> = CREATED_PATHS
            .iter()
            .copied()
            .filter(|p| !Path::new(p).exists())
            .collect();
        write("absent.before", absent.join("\n") + "\n")?;
        let rules = output_of(&mut Command::new("iptables-save"));
        if rules.lines().any(|l| l.starts_with(":KUBE-")) {
            write("had-kube-chains", String::new())?;
        }
        write(
            "nft-tables.before",
            output_of(Command::new("nft").args(["list", "tables"])),
        )?;
        write(
            "ipsets.before",
            output_of(Command::new("ipset").args(["list", "-n"])),
        )?;

        // The watchdog restores the host if this process dies without
        // stopping the node (a shared cluster is never dropped; a test may be
        // killed). Its own process group keeps it out of a terminal's Ctrl-C.
        use std::os::unix::process::CommandExt as _;
        let watchdog_log =
            fs::File::create(dir.join("watchdog.log")).map_err(setup_error("watchdog log"))?;
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(
                r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
                   bash "$2" "$3" >>"$4" 2>&1
                   grep -qF " $3" /proc/self/mountinfo || [ -n "$5" ] || rm -rf "$3"
                   [ "$(sed -n 2p "$6" 2>/dev/null)" = "$3" ] && rm -f "$6""#,
            )
            .args([
                "watchdog".to_owned(),
                std::process::id().to_string(),
                tools_dir().join("teardown.sh").display().to_string(),
                dir.display().to_string(),
                Node::base().join("teardown.log").display().to_string(),
                std::env::var("EGRESS_E2E_KEEP").unwrap_or_default(),
                self.lock.display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(
                watchdog_log
                    .try_clone()
                    .map_err(setup_error("watchdog log"))?,
            )
            .stderr(watchdog_log)
            .process_group(0)
            .spawn()
            .map_err(setup_error("watchdog"))?;
        self.watchdog = Some(watchdog);

        // The bridge is made here, not by the CNI plugin at the first pod,
        // because the API server binds to its address before any pod exists.
        if Command::new("ip")
            .args(["link", "show", BRIDGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            run_checked(Command::new("ip").args(["link", "del", BRIDGE]))?;
        }
        run_checked(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
        run_checked(Command::new("ip").args([
            "addr",
            "add",
            &format!("{HOST_ADDRESS}/24"),
            "dev",
            BRIDGE,
        ]))?;
        run_checked(Command::new("ip").args([
            "addr",
            "add",
            &format!("{OUTSIDE_ADDRESS}/32"),
            "dev",
            BRIDGE,
        ]))?;
        run_checked(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
        Ok(())
    }

    /// Starts containerd, kubelet, kube-controller-manager, kube-scheduler,
    /// kube-proxy, kube-router and CoreDNS against `plane`, each waited for.
    fn boot(&mut self, plane: &ControlPlane) -> Result<(), HarnessError> {
        // The node's own copy: every node process names this run directory on
        // its command line, which is how the teardown knows them.
        let kubeconfig = self.dir.join("kubeconfig");
        fs::copy(&plane.kubeconfig, &kubeconfig).map_err(setup_error("node kubeconfig"))?;
        self.kubectl = Kubectl {
            binary: plane.binaries.path("kubectl"),
            kubeconfig: kubeconfig.clone(),
        };
        let kubectl = self.kubectl.clone();
        let kc = kubeconfig.display().to_string();
        let dir = self.dir.clone();
        let d = |path: &str| dir.join(path).display().to_string();

        // containerd, with its own root, state, socket and CNI configuration.
        let socket = self.dir.join("containerd.sock");
        fs::write(
            self.dir.join("containerd.sock.path"),
            socket.display().to_string(),
        )
        .map_err(setup_error("node run directory"))?;
        fs::create_dir_all(self.dir.join("cni")).map_err(setup_error("cni directory"))?;
        fs::write(
            self.dir.join("cni/10-egress-e2e.conflist"),
            self.cni_config(),
        )
        .map_err(setup_error("cni configuration"))?;
        fs::write(
            self.dir.join("containerd.toml"),
            self.containerd_config(&socket),
        )
        .map_err(setup_error("containerd configuration"))?;
        self.spawn(
            "containerd",
            Path::new("containerd"),
            &[format!("--config={}", d("containerd.toml"))],
        )?;
        let ctr = |args: &[&str]| {
            let mut command = Command::new("ctr");
            command
                .arg("--address")
                .arg(&socket)
                .args(["--namespace", "k8s.io"])
                .args(args);
            command
        };
        self.wait("containerd", || quiet_success(&mut ctr(&["version"])))?;
        for (tarball, name) in self.images.tarballs() {
            let mut import = ctr(&["images", "import", "--no-unpack=false"]);
            import.arg(&tarball);
            run_checked(&mut import).map_err(|e| {
                HarnessError::Setup(format!(
                    "importing {} into containerd: {e}",
                    tarball.display()
                ))
            })?;
            let listed = output_of(&mut ctr(&["images", "ls", "-q"]));
            if !listed.lines().any(|l| l == name) {
                return Err(HarnessError::Setup(format!(
                    "{} did not import as {name}; containerd has:\n{listed}",
                    tarball.display()
                )));
            }
        }

        // kubelet: registers the node; Ready once the runtime and CNI are.
        let healthz = free_port()?;
        fs::write(
            self.dir.join("resolv.conf"),
            "# No upstream resolver: pods resolve through the cluster DNS only.\n",
        )
        .map_err(setup_error("resolv.conf"))?;
        fs::write(
            self.dir.join("kubelet.json"),
            self.kubelet_config(&socket, healthz),
        )
        .map_err(setup_error("kubelet configuration"))?;
        self.spawn(
            "kubelet",
            &self.binaries.path("kubelet"),
            &[
                format!("--config={}", d("kubelet.json")),
                format!("--kubeconfig={kc}"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={HOST_ADDRESS}"),
                format!("--root-dir={}", d("kubelet")),
                format!("--cert-dir={}", d("kubelet-pki")),
            ],
        )?;
        self.wait("kubelet", || {
            kubectl.node_field("{.status.conditions[?(@.type==\"Ready\")].status}") == "True"
        })?;

        // kube-controller-manager: service accounts and their tokens, the
        // node's pod CIDR, ReplicaSets, EndpointSlices, garbage collection, and
        // the not-ready taint lifted.
        let pki = plane.dir.join("pki");
        self.spawn(
            "kube-controller-manager",
            &self.binaries.path("kube-controller-manager"),
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                format!(
                    "--service-account-private-key-file={}",
                    pki.join("sa.key").display()
                ),
                format!("--root-ca-file={}", pki.join("ca.crt").display()),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()?),
                "--allocate-node-cidrs=true".to_owned(),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
                "--node-cidr-mask-size=24".to_owned(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--use-service-account-credentials=false".to_owned(),
                format!("--cert-dir={}", d("kube-controller-manager-pki")),
            ],
        )?;
        self.wait("kube-controller-manager", || {
            kubectl.node_field("{.spec.podCIDR}") == POD_SUBNET
                && kubectl.node_field("{.spec.taints}").is_empty()
                && quiet_success(&mut kubectl.command(&["get", "serviceaccount", "default"]))
        })?;

        // kube-scheduler: pods without nodeName land on the node.
        let scheduler_port = free_port()?;
        self.spawn(
            "kube-scheduler",
            &self.binaries.path("kube-scheduler"),
            &[
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={scheduler_port}"),
                format!("--cert-dir={}", d("kube-scheduler-pki")),
            ],
        )?;
        self.wait("kube-scheduler", || {
            let url = format!("https://127.0.0.1:{scheduler_port}/healthz");
            output_of(Command::new("curl").args(["-ksf", url.as_str()])) == "ok"
        })?;

        // kube-proxy in nftables mode. Conntrack timeouts are left as they are
        // (0), so it changes no sysctl.
        let proxy_health = free_port()?;
        self.spawn(
            "kube-proxy",
            &self.binaries.path("kube-proxy"),
            &[
                format!("--kubeconfig={kc}"),
                format!("--hostname-override={NODE_NAME}"),
                "--proxy-mode=nftables".to_owned(),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
                "--conntrack-max-per-core=0".to_owned(),
                "--conntrack-tcp-timeout-established=0".to_owned(),
                "--conntrack-tcp-timeout-close-wait=0".to_owned(),
                format!("--healthz-bind-address=127.0.0.1:{proxy_health}"),
                format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
            ],
        )?;
        self.wait("kube-proxy", || crate::http_ok(proxy_health, "/healthz"))?;

        // kube-router's NetworkPolicy controller only: no routing, no
        // service proxy, no CNI of its own.
        let router_health = free_port()?;
        self.spawn(
            "kube-router",
            &self.binaries.path("kube-router"),
            &[
                format!("--kubeconfig={kc}"),
                format!("--hostname-override={NODE_NAME}"),
                "--run-firewall=true".to_owned(),
                "--run-router=false".to_owned(),
                "--run-service-proxy=false".to_owned(),
                "--run-loadbalancer=false".to_owned(),
                "--enable-cni=false".to_owned(),
                "--enable-ipv4=true".to_owned(),
                "--enable-ipv6=false".to_owned(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--health-port={router_health}"),
                "--metrics-port=0".to_owned(),
            ],
        )?;
        self.wait("kube-router", || crate::http_ok(router_health, "/healthz"))?;

        // CoreDNS on the host side of the pod network, behind the cluster DNS
        // Service (selector-less, with an EndpointSlice naming the host).
        let (dns_health, dns_ready) = (free_port()?, free_port()?);
        fs::write(
            self.dir.join("Corefile"),
            corefile(&kubeconfig, dns_health, dns_ready),
        )
        .map_err(setup_error("Corefile"))?;
        self.spawn(
            "coredns",
            &self.binaries.path("coredns"),
            &[format!("-conf={}", d("Corefile"))],
        )?;
        self.kubectl.apply(&dns_service())?;
        self.wait("coredns", || {
            crate::http_ok(dns_ready, "/ready")
                && resolve_a(DNS_SERVICE_IP, "kubernetes.default.svc.cluster.local")
                    == Some(Ipv4Addr::new(10, 0, 0, 1))
        })?;
        Ok(())
    }

    fn containerd_config(&self, socket: &Path) -> String {
        let d = |path: &str| self.dir.join(path).display().to_string();
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters and exporters this node does not use (they only log errors).
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root lacks CAP_SYS_RESOURCE here: a negative oom_score_adj fails runc's
  # sandbox start ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Network namespaces under the state dir, so the teardown finds them.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd: the cgroupfs driver, as kubelet's cgroupDriver says.
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = d("containerd/root"),
            state = d("containerd/state"),
            socket = socket.display(),
            opt = d("containerd/opt"),
            pause = images::PAUSE,
            runc = d("runc"),
            cni = d("cni"),
        )
    }

    fn cni_config(&self) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "egress-e2e",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                // No masquerade: pods reach the host and each other, and
                // nothing else (nothing leaves the machine).
                "ipMasq": false,
                // A pod reaching itself through its Service.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": HOST_ADDRESS.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.dir.join("cni-ipam").display().to_string(),
                },
            }],
        })
        .to_string()
    }

    fn kubelet_config(&self, socket: &Path, healthz: u16) -> String {
        let d = |path: &str| self.dir.join(path).display().to_string();
        serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            // cgroup v1 hosts are refused unless this is false.
            "failCgroupV1": false,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": true,
            "enforceNodeAllocatable": ["pods"],
            "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
            "failSwapOn": false,
            "address": HOST_ADDRESS.to_string(),
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            // The API server calls the kubelet without a client certificate
            // the kubelet knows; the kubelet serves only on the host side of
            // the pod network.
            "authentication": {"anonymous": {"enabled": true}, "webhook": {"enabled": false}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [DNS_SERVICE_IP.to_string()],
            "clusterDomain": "cluster.local",
            "resolvConf": d("resolv.conf"),
            // A shared development disk may be nearly full: disk pressure
            // would evict the test's pods and image GC delete its images.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
                "imagefs.inodesFree": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podLogsDir": d("pod-logs"),
            "volumePluginDir": d("volume-plugins"),
            "serializeImagePulls": false,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
        })
        .to_string()
    }

    fn spawn(
        &mut self,
        name: &'static str,
        binary: &Path,
        args: &[String],
    ) -> Result<(), HarnessError> {
        // kube-router and the CNI plugins look for iptables and ipset here.
        let path = (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        let process = Process::start(name, &self.dir, binary, args, &[path])?;
        fs::write(self.dir.join("pids").join(name), process.pid().to_string())
            .map_err(setup_error("pid file"))?;
        self.processes.push(process);
        Ok(())
    }

    /// Waits until `ready`, failing with the process's name and log tail if
    /// it exits or takes too long; notes the time taken in `started.log`.
    fn wait(&mut self, name: &'static str, ready: impl Fn() -> bool) -> Result<(), HarnessError> {
        let took = process::named(&mut self.processes, name)?.wait_ready(ready, READY_TIMEOUT)?;
        let _ = writeln!(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("started.log"))
                .map_err(setup_error("started.log"))?,
            "{name} ready after {:.1}s",
            took.as_secs_f64()
        );
        Ok(())
    }

    /// Process IDs and resident memory (MiB) of the node's processes.
    pub fn memory(&self) -> Vec<(&'static str, u32, f64)> {
        self.processes.iter().map(Process::memory).collect()
    }

    /// Stops the node's processes (last started first), runs the teardown
    /// (containers, rules, mounts, bridge, cgroups, sysctls), removes the run
    /// directory unless `$EGRESS_E2E_KEEP` is set, and releases the lock.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        while let Some(process) = self.processes.pop() {
            process.stop();
        }
        teardown(&self.dir);
        // Never into a file system still mounted there.
        if std::env::var_os("EGRESS_E2E_KEEP").is_none() && !mounted_under(&self.dir) {
            let _ = fs::remove_dir_all(&self.dir);
        }
        release_lock(&self.lock, &self.dir);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// kubectl with the node's kubeconfig, for the readiness checks.
#[derive(Clone, Debug, Default)]
struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    fn node_field(&self, jsonpath: &str) -> String {
        output_of(&mut self.command(&[
            "get",
            "node",
            NODE_NAME,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ]))
    }

    fn apply(&self, manifest: &str) -> Result<(), HarnessError> {
        let mut child = self
            .command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(setup_error("kubectl apply"))?;
        child
            .stdin
            .take()
            .ok_or_else(|| HarnessError::Setup("kubectl apply: no stdin".to_owned()))?
            .write_all(manifest.as_bytes())
            .map_err(setup_error("kubectl apply"))?;
        let output = child
            .wait_with_output()
            .map_err(setup_error("kubectl apply"))?;
        if !output.status.success() {
            return Err(HarnessError::Setup(format!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}

/// Resident memory of a process, in MiB (0 when it is gone).
/// Runs `tools/node/teardown.sh` on a run directory, appending to the base
/// directory's `teardown.log`.
fn teardown(dir: &Path) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Node::base().join("teardown.log"));
    let mut command = Command::new("bash");
    command.arg(tools_dir().join("teardown.sh")).arg(dir);
    if let Ok(log) = log {
        if let Ok(copy) = log.try_clone() {
            command.stdout(copy);
        }
        command.stderr(log);
    }
    let _ = command.status();
}

/// Takes the machine's node lock for `dir`: waits while a live process holds
/// it, and tears down the run of a holder that died.
fn take_lock(lock: &Path, dir: &Path) -> Result<(), HarnessError> {
    let started = Instant::now();
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(lock)
        {
            Ok(mut file) => {
                return writeln!(file, "{}\n{}", std::process::id(), dir.display())
                    .map_err(setup_error("node lock"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(HarnessError::Setup(format!(
                    "node lock {}: {e}",
                    lock.display()
                )));
            }
        }
        let text = fs::read_to_string(lock).unwrap_or_default();
        let mut lines = text.lines();
        let owner = lines.next().unwrap_or_default().trim().to_owned();
        let held_by = PathBuf::from(lines.next().unwrap_or_default().trim());
        if owner == std::process::id().to_string() {
            return Err(HarnessError::Setup(
                "this process already runs a node (one per machine; share it with Cluster::shared)"
                    .to_owned(),
            ));
        }
        let alive = !owner.is_empty() && Path::new("/proc").join(&owner).exists();
        // A dead holder's watchdog may still be restoring the host; it
        // releases the lock when done.
        let restoring = !held_by.as_os_str().is_empty() && process_naming(&held_by);
        if !alive && !restoring {
            // Its owner died and its watchdog did not finish: restore the host now.
            if held_by.is_dir() {
                teardown(&held_by);
                if !mounted_under(&held_by) {
                    let _ = fs::remove_dir_all(&held_by);
                }
            }
            let _ = fs::remove_file(lock);
            continue;
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err(HarnessError::Setup(format!(
                "another node run (pid {owner}, {}) has held {} for 15 minutes",
                held_by.display(),
                lock.display()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether anything is mounted at or under `dir`.
fn mounted_under(dir: &Path) -> bool {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount| mount == prefix || mount.starts_with(&format!("{prefix}/")))
}

/// Whether a live process names `dir` on its command line (a watchdog, or a
/// node process that outlived its run).
fn process_naming(dir: &Path) -> bool {
    let needle = dir.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(&needle))
    })
}

fn release_lock(lock: &Path, dir: &Path) {
    let text = fs::read_to_string(lock).unwrap_or_default();
    if text
        .lines()
        .nth(1)
        .is_some_and(|l| Path::new(l.trim()) == dir)
    {
        let _ = fs::remove_file(lock);
    }
}

fn corefile(kubeconfig: &Path, health: u16, ready: u16) -> String {
    format!(
        r#".:53 {{
    bind {HOST_ADDRESS}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    hosts {{
        {HOST_ADDRESS} {HOST_NAME}
        {OUTSIDE_ADDRESS} {OUTSIDE_NAME}
        fallthrough
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"#,
        kubeconfig = kubeconfig.display()
    )
}

/// The cluster DNS Service: a fixed ClusterIP and, with no selector, an
/// EndpointSlice that names CoreDNS on the host.
fn dns_service() -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "clusterIP": DNS_SERVICE_IP.to_string(),
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "egress-e2e",
                    }},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [HOST_ADDRESS.to_string()],
                    "conditions": {"ready": true}, "nodeName": NODE_NAME}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        ],
    })
    .to_string()
}

/// One DNS query over UDP for the A record of `name`: the first address
/// answered, if any.
pub fn resolve_a(server: Ipv4Addr, name: &str) -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // Header: id, flags (recursion desired), 1 question.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(u8::try_from(label.len()).ok()?);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    socket.send_to(&query, (server, 53)).ok()?;
    let mut buf = [0u8; 512];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    let answer = &buf[..len];
    let rcode = answer.get(3)? & 0x0f;
    let count = u16::from_be_bytes([*answer.get(6)?, *answer.get(7)?]);
    if answer.get(..2)? != [0x12, 0x34] || rcode != 0 || count == 0 {
        return None;
    }
    // Skip the question (same length as sent), then read answer records.
    let mut at = query.len();
    for _ in 0..count {
        // Name: a pointer (2 bytes) or labels.
        loop {
            let len = *answer.get(at)?;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let rtype = u16::from_be_bytes([*answer.get(at)?, *answer.get(at + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([
            *answer.get(at + 8)?,
            *answer.get(at + 9)?,
        ]));
        let data = answer.get(at + 10..at + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 {
            return Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlen;
    }
    None
}

fn quiet_success(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output_of(command: &mut Command) -> String {
    command
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn run_checked(command: &mut Command) -> Result<(), HarnessError> {
    let output = command
        .output()
        .map_err(|e| HarnessError::Setup(format!("{command:?}: {e}")))?;
    if !output.status.success() {
        return Err(HarnessError::Setup(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corefile_serves_the_host_name_and_the_cluster_domain() {
        let text = corefile(Path::new("/run/x/kubeconfig"), 1, 2);
        assert!(text.contains("bind 10.244.0.1"), "{text}");
        assert!(text.contains("10.244.0.1 host.e2e.test"), "{text}");
        assert!(text.contains("kubernetes cluster.local"), "{text}");
        assert!(text.contains("kubeconfig /run/x/kubeconfig e2e"), "{text}");
    }

    #[test]
    fn the_dns_service_points_at_the_host() {
        let list: serde_json::Value = serde_json::from_str(&dns_service()).expect("json");
        assert_eq!(list["items"][0]["spec"]["clusterIP"], "10.0.0.10");
        assert_eq!(
            list["items"][1]["endpoints"][0]["addresses"][0],
            "10.244.0.1"
        );
        assert_eq!(
            list["items"][1]["metadata"]["labels"]["kubernetes.io/service-name"],
            "kube-dns"
        );
    }
}
