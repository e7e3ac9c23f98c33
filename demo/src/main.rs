//! `egress-demo`: the whole product on this machine, until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use egress_demo::{Binaries, Demo, Ports};
use egress_e2e::ControlPlane;

/// Brings up egress-proxy on this machine: a real kube-apiserver and etcd,
/// the Helm chart, the operator and its injection webhook, the gateway fed
/// from the API server, the seed policy with TLS interception, a namespace
/// labelled for injection with a client pod, and a demo destination. Prints
/// what to try, and stops everything on Ctrl-C. The first run builds the
/// control plane from the Go module proxy (minutes); later runs start in
/// seconds.
#[derive(Debug, Parser)]
#[command(name = "egress-demo", version)]
struct Args {
    /// Use free ports instead of the standard ones (gateway 1080 and 8443,
    /// admin 9090, operator 9091, webhook 9444, destination 9443).
    #[arg(long)]
    free_ports: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let say = |step: &str| {
        eprintln!(
            "[egress-demo {:>5.1}s] {step}",
            started.elapsed().as_secs_f64()
        )
    };
    say("building egress-operator and egress-gateway");
    let binaries = build_binaries()?;
    say("starting the control plane (the first run builds it: several minutes)");
    let mut plane = ControlPlane::start()?;
    let ports = if args.free_ports {
        Ports::free()?
    } else {
        Ports::standard()
    };
    let demo = match Demo::start(&plane, &binaries, ports, &say) {
        Ok(demo) => demo,
        Err(error) => {
            plane.stop();
            return Err(error);
        }
    };
    say("ready");
    println!("{}", demo.guide(&plane));
    egress_e2e::wait_for_signal()?;
    eprintln!("stopping");
    drop(demo);
    plane.stop();
    Ok(())
}

/// The operator and gateway next to this binary, built (or brought up to
/// date) by cargo with the same profile when run through cargo.
fn build_binaries() -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe().context("this executable")?;
    let dir = exe.parent().context("its directory")?.to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = dir.file_name().is_some_and(|d| d == "release");
        let status = Command::new(cargo)
            .args(["build", "-p", "egress-operator", "-p", "egress-gateway"])
            .args(["--bin", "egress-operator", "--bin", "egress-gateway"])
            .args(release.then_some("--release"))
            .env("CARGO_TARGET_DIR", dir.parent().unwrap_or(&dir))
            .status()
            .context("cargo build")?;
        if !status.success() {
            bail!("cannot build the operator and the gateway ({status})");
        }
    }
    let binary = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        if Path::new(&path).exists() {
            Ok(path)
        } else {
            bail!(
                "{} is missing: run this through `cargo run -p egress-demo`",
                path.display()
            )
        }
    };
    Ok(Binaries {
        operator: binary("egress-operator")?,
        gateway: binary("egress-gateway")?,
    })
}
