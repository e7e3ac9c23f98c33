//! `crdgen`: writes the CRDs the operator's types generate into `crds/`
//! (`--check` only compares, for CI and tests).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes crds/*.yaml from the operator's resource types.
#[derive(Debug, Parser)]
#[command(name = "crdgen", version, about)]
struct Args {
    /// Directory to write to.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds"))]
    out: PathBuf,
    /// Compare instead of writing; exit 1 and name the files that differ.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut stale = Vec::new();
    for (file, crd) in egress_operator::crd::all() {
        let path = args.out.join(file);
        let yaml = egress_operator::crd::yaml(&crd);
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
