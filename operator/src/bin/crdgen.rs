//! `crdgen`: writes the CRDs the operator's types generate into `crds/` and
//! the chart's `crds/` (`--check` only compares, for CI and tests).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes crds/*.yaml (and the chart's copy) from the operator's resource types.
#[derive(Debug, Parser)]
#[command(name = "crdgen", version, about)]
struct Args {
    /// Directories to write to (repeatable).
    #[arg(long, default_values = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../crds"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/egress-proxy/crds"),
    ])]
    out: Vec<PathBuf>,
    /// Compare instead of writing; exit 1 and name the files that differ.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut stale = Vec::new();
    let crds = egress_operator::crd::all();
    let files = args
        .out
        .iter()
        .flat_map(|dir| crds.iter().map(move |(file, crd)| (dir.join(file), crd)));
    for (path, crd) in files {
        let yaml = egress_operator::crd::yaml(crd);
        if args.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path.display().to_string());
            }
        } else if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "these files differ from what the code generates (run `cargo run -p egress-operator --bin crdgen`):\n  {}",
            stale.join("\n  ")
        );
        ExitCode::FAILURE
    }
}
