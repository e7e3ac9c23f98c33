//! `egress-e2e`: the test control plane from a shell.

use clap::{Parser, Subcommand};
use egress_e2e::node::Cluster;
use egress_e2e::{Binaries, ControlPlane};

/// A real kube-apiserver and etcd on 127.0.0.1 for development and tests.
#[derive(Debug, Parser)]
#[command(name = "egress-e2e", version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build (if needed) and print the directory of etcd, kube-apiserver, kubectl and helm.
    Binaries,
    /// Start a control plane, print how to use it, and keep it running until
    /// Ctrl-C or SIGTERM (then stop it and remove its files).
    Up {
        /// Start a node too (containerd, kubelet, kube-proxy, CoreDNS,
        /// kube-controller-manager, kube-scheduler, kube-router; needs root).
        #[arg(long)]
        node: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Binaries => println!("{}", Binaries::ensure()?.dir.display()),
        Cmd::Up { node: with_node } => {
            let started = std::time::Instant::now();
            // The node, when there is one, stops before the control plane
            // (declared after it, it is also dropped first).
            let (mut plane, mut node) = if with_node {
                let Cluster { node, plane } = Cluster::start()?;
                (plane, Some(node))
            } else {
                (ControlPlane::start()?, None)
            };
            let what = if node.is_some() {
                "control plane and node"
            } else {
                "control plane"
            };
            println!(
                "{what} ready in {:.1}s at {}",
                started.elapsed().as_secs_f64(),
                plane.server
            );
            let node_memory = node.iter().flat_map(|node| node.memory());
            for (name, pid, rss) in plane.memory().into_iter().chain(node_memory) {
                println!("  {name}: pid {pid}, {rss:.0} MiB resident");
            }
            println!("  logs and certificates: {}", plane.dir.display());
            if let Some(node) = &node {
                println!("  node: {}", node.dir.display());
            }
            println!();
            println!("export KUBECONFIG={}", plane.kubeconfig.display());
            println!("export PATH={}:$PATH", plane.binaries.dir.display());
            if node.is_none() {
                println!(
                    "export EGRESS_E2E_KUBECONFIG={}",
                    plane.kubeconfig.display()
                );
                println!();
                println!(
                    "Run one test against it:  cargo test -p egress-e2e --test control_plane <name>"
                );
            }
            egress_e2e::wait_for_signal()?;
            println!("stopping");
            if let Some(node) = &mut node {
                node.stop();
            }
            plane.stop();
        }
    }
    Ok(())
}
