//! The harness's own failure reporting: which process failed, and why.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::process::Command;

/// A bin dir with the real binaries except `broken`, a script that fails the
/// way a misconfigured process does.
fn bin_dir_with_broken(broken: &str) -> PathBuf {
    let build = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/build.sh"))
        .output()
        .expect("build.sh runs");
    assert!(build.status.success());
    let real = PathBuf::from(String::from_utf8_lossy(&build.stdout).trim());
    let dir =
        std::env::temp_dir().join(format!("egress-e2e-broken-{broken}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["etcd", "kube-apiserver", "kubectl", "helm"] {
        if name == broken {
            let script = dir.join(name);
            std::fs::write(&script, "#!/bin/sh\necho \"starting $0\"\necho 'Error: unknown flag: --pretend-misconfiguration' >&2\nexit 3\n")
                .expect("script");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        } else {
            symlink(real.join(name), dir.join(name)).expect("symlink");
        }
    }
    dir
}

#[test]
fn a_process_that_dies_is_named_with_the_end_of_its_log() {
    for broken in ["etcd", "kube-apiserver"] {
        let bin = bin_dir_with_broken(broken);
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
    let leftovers = Command::new("pgrep")
        .args(["-f", "egress-e2e-broken"])
        .output()
        .expect("pgrep");
    assert!(
        leftovers.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}
