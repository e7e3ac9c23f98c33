//! The node harness's own failure handling: a part that dies during start-up
//! is named with the end of its log, and what the run changed on the machine
//! is undone.

use std::process::Command;

use common::{assert_no_process_matching, assert_start_up_fails_naming, bin_dir_with_broken};
use egress_e2e::node::NodeBinaries;

mod common;

fn bridge_exists() -> bool {
    Command::new("ip")
        .args(["link", "show", "egress-e2e0"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The KUBE-* chains of iptables (kubelet's canaries, kube-router's chains).
fn kube_chains() -> Vec<String> {
    let output = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with(":KUBE-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_node_part_that_dies_is_named_and_the_host_is_restored() {
    // kube-proxy starts after containerd, kubelet and the controllers: its
    // failure leaves the most to undo.
    let real = NodeBinaries::ensure().expect("node binaries").dir;
    let bin = bin_dir_with_broken(&real, "kube-proxy");
    // A node run that just ended (another test binary) may still be
    // restoring the host through its watchdog: compare against the host as it
    // is once that is done.
    let lock = std::path::Path::new("/run/egress-e2e-node.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let chains_before = kube_chains();
    let kubepods_before = std::path::Path::new("/sys/fs/cgroup/memory/kubepods").exists();
    let base = std::env::temp_dir().join(format!("egress-e2e-node-test-{}", std::process::id()));
    assert_start_up_fails_naming(
        "kube-proxy",
        &["--node"],
        &[
            ("EGRESS_E2E_NODE_BIN_DIR", &bin),
            ("EGRESS_E2E_NODE_DIR", &base),
        ],
    );

    // Everything started before the failure was stopped and undone.
    assert!(!bridge_exists(), "the bridge was removed");
    let lock = std::fs::read_to_string("/run/egress-e2e-node.lock").unwrap_or_default();
    assert!(
        !lock.contains(&base.display().to_string()),
        "the node lock was released: {lock}"
    );
    let runs: Vec<_> = std::fs::read_dir(&base)
        .expect("node base dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .collect();
    assert!(runs.is_empty(), "run directories left: {runs:?}");
    assert_no_process_matching(&base.display().to_string());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&base.display().to_string()),
        "mounts left:\n{mounts}"
    );
    assert_eq!(
        kube_chains(),
        chains_before,
        "kubelet's iptables chains are gone"
    );
    assert_eq!(
        std::path::Path::new("/sys/fs/cgroup/memory/kubepods").exists(),
        kubepods_before,
        "kubelet's cgroups are gone"
    );
    let _ = std::fs::remove_dir_all(&bin);
    let _ = std::fs::remove_dir_all(&base);
}
