//! What a node is made of, built or found once per test binary: the node's
//! binaries (Debian packages and the Go module proxy), this workspace's
//! release binaries, and the image tarballs made of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::images;
use crate::error::{HarnessError, setup_error};
use crate::run_tool;

pub(super) fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/node")
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
            run_tool("node/install-packages.sh", &[])?;
            if let Some(dir) = std::env::var_os("EGRESS_E2E_NODE_BIN_DIR") {
                return Ok(PathBuf::from(dir));
            }
            run_tool("node/build.sh", &[]).map(PathBuf::from)
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
            let dir = run_tool(
                "node/images.sh",
                &[&release.gateway, &release.operator, tag],
            )?;
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
            let clients = run_tool("node/clients-image.sh", &args)?;
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
