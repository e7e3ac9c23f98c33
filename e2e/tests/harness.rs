//! The harness's own failure reporting: which process failed, and why.

use common::{assert_no_process_matching, assert_start_up_fails_naming, bin_dir_with_broken};
use egress_e2e::Binaries;

mod common;

#[test]
fn a_process_that_dies_is_named_with_the_end_of_its_log() {
    for broken in ["etcd", "kube-apiserver"] {
        let real = Binaries::ensure().expect("control plane binaries").dir;
        let bin = bin_dir_with_broken(&real, broken);
        assert_start_up_fails_naming(broken, &[], &[("EGRESS_E2E_BIN_DIR", &bin)]);
        let _ = std::fs::remove_dir_all(&bin);
    }
    // Whatever started before the failure was stopped.
    assert_no_process_matching("egress-e2e-broken");
}
