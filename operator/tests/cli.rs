//! `egress-operator --help` explains itself, and bad flags say what is wrong.

use std::process::Command;

#[test]
fn help_explains_the_operator_and_its_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_egress-operator"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for word in [
        "reconciles ProxyRuleGroup, ProxyConfiguration and",
        "--gateway-image",
        "EGRESS_GATEWAY_IMAGE",
        "--leader-election",
        "--lease-duration",
        "--kubeconfig",
        "--admin-listen",
    ] {
        assert!(help.contains(word), "{word} in:\n{help}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_egress-operator"))
        .args(["--admin-listen", "nowhere"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--admin-listen"));
}

#[test]
fn without_a_cluster_it_says_how_to_point_it_at_one() {
    let output = Command::new(env!("CARGO_BIN_EXE_egress-operator"))
        .args([
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("cannot read kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
}
