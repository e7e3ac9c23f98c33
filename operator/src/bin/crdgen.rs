//! `crdgen`: writes the CRDs the operator's types generate into `crds/` and
//! the chart's `crds/`, and their field tables into the reference
//! (`--check` only compares, for CI and tests).

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
    /// The reference whose field tables are generated.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md"))]
    docs: PathBuf,
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
    let document = std::fs::read_to_string(&args.docs).unwrap_or_default();
    match egress_operator::crd_reference::update(&document, &crds) {
        Err(e) => {
            eprintln!("error: {}: {e}", args.docs.display());
            return ExitCode::FAILURE;
        }
        Ok(updated) if updated == document => {}
        Ok(_) if args.check => stale.push(args.docs.display().to_string()),
        Ok(updated) => {
            if let Err(e) = std::fs::write(&args.docs, updated) {
                eprintln!("error: cannot write {}: {e}", args.docs.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", args.docs.display());
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
