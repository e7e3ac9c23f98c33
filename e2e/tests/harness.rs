//! The harness's own failure reporting: which process failed, and why.

use std::process::Command;

use common::{assert_no_process_matching, bin_dir_with_broken};
use egress_e2e::Binaries;

mod common;

#[test]
fn a_process_that_dies_is_named_with_the_end_of_its_log() {
    for broken in ["etcd", "kube-apiserver"] {
        let real = Binaries::ensure().expect("control plane binaries").dir;
        let bin = bin_dir_with_broken(&real, broken);
        let output = Command::new(env!("CARGO_BIN_EXE_egress-e2e"))
            .arg("up")
            .env("EGRESS_E2E_BIN_DIR", &bin)
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{broken}: start-up must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{broken} exited during start-up (exit status: 3)")),
            "{stderr}"
        );
        assert!(
            stderr.contains("unknown flag: --pretend-misconfiguration"),
            "the log tail is shown: {stderr}"
        );
        let _ = std::fs::remove_dir_all(&bin);
    }
    // Whatever started before the failure was stopped.
    assert_no_process_matching("egress-e2e-broken");
}
