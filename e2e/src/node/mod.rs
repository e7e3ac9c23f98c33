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
//! installs; `e2e/README.md` says why each setting is what it is.

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod artifacts;
mod config;
mod dns;
mod host;

pub use self::artifacts::{Images, NodeBinaries, ReleaseBinaries};
use self::config::{corefile, dns_service};
pub use self::dns::resolve_a;
use self::host::{mounted_under, release_lock, take_lock, teardown};
use crate::error::{HarnessError, setup_error};
use crate::process::{self, Process};
use crate::{ControlPlane, PlaneOptions, free_port, unique};

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
    /// The same gateway under the name of a next release, for an upgrade
    /// with `helm upgrade --set image.gateway=...` (tagged at import).
    pub const GATEWAY_NEXT: &str = concat!(
        "docker.io/library/egress-gateway:",
        env!("CARGO_PKG_VERSION"),
        "-next"
    );
    /// This workspace's release `egress-operator`.
    pub const OPERATOR: &str = concat!(
        "docker.io/library/egress-operator:",
        env!("CARGO_PKG_VERSION")
    );
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
        run_checked(&mut ctr(&[
            "images",
            "tag",
            images::GATEWAY,
            images::GATEWAY_NEXT,
        ]))?;

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
