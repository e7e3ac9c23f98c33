//! The committed `crds/*.yaml`, and the chart's copy, are what the code
//! generates: a change to a spec type without running `crdgen` fails here.

#[test]
fn committed_crds_match_the_code() {
    for dir in ["crds", "charts/egress-proxy/crds"] {
        let path = format!("{}/../{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut stale = Vec::new();
        for (file, crd) in egress_operator::crd::all() {
            let committed = std::fs::read_to_string(format!("{path}/{file}")).unwrap_or_default();
            if committed != egress_operator::crd::yaml(&crd) {
                stale.push(file);
            }
        }
        assert!(
            stale.is_empty(),
            "{dir}/{stale:?} differ from the code: run `cargo run -p egress-operator --bin crdgen` and commit the result"
        );
        let files = std::fs::read_dir(&path).expect("crds dir").count();
        assert_eq!(
            files,
            egress_operator::crd::all().len(),
            "no stray files in {dir}/"
        );
    }
}

#[test]
fn crdgen_check_reports_drift() {
    let dir = std::env::temp_dir().join(format!("crdgen-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let crdgen = env!("CARGO_BIN_EXE_crdgen");
    let out = dir.display().to_string();
    let wrote = std::process::Command::new(crdgen)
        .args(["--out", &out])
        .status()
        .expect("crdgen");
    assert!(wrote.success());
    let clean = std::process::Command::new(crdgen)
        .args(["--out", &out, "--check"])
        .output()
        .expect("crdgen");
    assert!(clean.status.success());
    std::fs::write(dir.join("egressproxies.yaml"), "edited").expect("write");
    let drift = std::process::Command::new(crdgen)
        .args(["--out", &out, "--check"])
        .output()
        .expect("crdgen");
    assert_eq!(drift.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&drift.stderr).contains("egressproxies.yaml"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_references_field_tables_match_the_crds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md");
    let document = std::fs::read_to_string(path).expect("reference");
    let updated = egress_operator::crd_reference::update(&document, &egress_operator::crd::all())
        .expect("every kind has its markers");
    assert!(
        updated == document,
        "docs/reference.md's field tables differ from the CRDs: run `cargo run -p egress-operator --bin crdgen` and commit the result"
    );
}
