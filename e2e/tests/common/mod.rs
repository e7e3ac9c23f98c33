//! What the harness's own tests share: a bin dir with one part broken, and
//! the processes a run may have left.

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
