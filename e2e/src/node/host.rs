//! What a node changes on the machine, and how it is undone: the machine
//! lock (one node at a time), the record of the host's state before a run,
//! the bridge, the watchdog, and the teardown (`tools/node/teardown.sh`).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::artifacts::tools_dir;
use super::{BRIDGE, HOST_ADDRESS, Node, OUTSIDE_ADDRESS, output_of, run_checked};
use crate::error::{HarnessError, setup_error};

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
    pub(super) fn record_and_make_bridge(&mut self) -> Result<(), HarnessError> {
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
}

/// Runs `tools/node/teardown.sh` on a run directory, appending to the base
/// directory's `teardown.log`.
pub(super) fn teardown(dir: &Path) {
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
pub(super) fn take_lock(lock: &Path, dir: &Path) -> Result<(), HarnessError> {
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
pub(super) fn mounted_under(dir: &Path) -> bool {
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

pub(super) fn release_lock(lock: &Path, dir: &Path) {
    let text = fs::read_to_string(lock).unwrap_or_default();
    if text
        .lines()
        .nth(1)
        .is_some_and(|l| Path::new(l.trim()) == dir)
    {
        let _ = fs::remove_file(lock);
    }
}
