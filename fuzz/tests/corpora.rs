//! Every target over its checked-in corpus (`fuzz/corpus/<target>/`): the
//! seeds drawn from the suite's own cases and every input a fuzzing run
//! found worth keeping, regressions included. Runs on stable, in the
//! ordinary suite; `fuzz/README.md` says how to fuzz for longer.

use std::path::Path;

#[test]
fn every_target_keeps_its_properties_over_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in egress_fuzz::TARGETS {
        let folder = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
            .map(|entry| entry.expect("an entry").path())
            .collect();
        inputs.sort();
        assert!(
            !inputs.is_empty(),
            "{name}: no seeds in {}",
            folder.display()
        );
        for input in &inputs {
            let data = std::fs::read(input).expect("an input");
            let replayed = std::panic::catch_unwind(|| target(&data));
            assert!(replayed.is_ok(), "{name}: {} fails", input.display());
        }
        println!("{name}: {} inputs", inputs.len());
    }
}
