//! What the harness's own tests share: a bin dir with one part broken, the
//! start-up that fails on it, and the processes a run may have left.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of `real` (a bin dir) as symlinks, except `broken`: a script that
/// fails the way a misconfigured process does (an unknown flag, exit 3).
pub fn bin_dir_with_broken(real: &Path, broken: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("egress-e2e-broken-{broken}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for entry in std::fs::read_dir(real).expect("bin dir").flatten() {
        let name = entry.file_name();
        if name == broken {
            let script = dir.join(broken);
            std::fs::write(&script, "#!/bin/sh\necho \"starting $0\"\necho 'Error: unknown flag: --pretend-misconfiguration' >&2\nexit 3\n")
                .expect("script");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        } else {
            symlink(entry.path(), dir.join(&name)).expect("symlink");
        }
    }
    dir
}

/// Runs `egress-e2e up` (with `args` and `env`) over a bin dir made by
/// [`bin_dir_with_broken`] and asserts that start-up fails naming `broken`
/// with the end of its log.
pub fn assert_start_up_fails_naming(broken: &str, args: &[&str], env: &[(&str, &Path)]) {
    let output = Command::new(env!("CARGO_BIN_EXE_egress-e2e"))
        .arg("up")
        .args(args)
        .envs(env.iter().copied())
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
}

/// Asserts that no process whose command line contains `pattern` runs.
pub fn assert_no_process_matching(pattern: &str) {
    let leftovers = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep");
    assert!(
        leftovers.stdout.is_empty(),
        "processes matching {pattern} left: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}
