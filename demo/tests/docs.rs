//! The user guide shows the files the suite runs: each code block marked
//! `<!-- file: PATH -->` is that file, byte for byte.

use egress_demo::repository;

#[test]
fn the_guides_snippets_are_the_files_the_suite_runs() {
    let guide = std::fs::read_to_string(repository().join("docs/user-guide.md")).expect("guide");
    let mut checked = Vec::new();
    for (at, _) in guide.match_indices("<!-- file: ") {
        let rest = &guide[at + "<!-- file: ".len()..];
        let (file, rest) = rest.split_once(" -->").expect("marker closed");
        let block = rest
            .trim_start()
            .split_once('\n')
            .and_then(|(fence, body)| {
                assert!(
                    fence.starts_with("```"),
                    "{file}: a code block follows its marker"
                );
                body.split_once("\n```")
            })
            .map(|(body, _)| format!("{body}\n"))
            .unwrap_or_else(|| panic!("{file}: no code block after its marker"));
        let content = std::fs::read_to_string(repository().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(block, content, "docs/user-guide.md shows an old {file}");
        checked.push(file.to_owned());
    }
    assert!(
        checked.contains(&"examples/cluster/ca.sh".to_owned()),
        "{checked:?}"
    );
}

#[test]
fn the_cert_manager_ca_fills_the_secret_the_seed_proxy_names() {
    let yaml = std::fs::read_to_string(repository().join("examples/cluster/cert-manager-ca.yaml"))
        .expect("file");
    let seed =
        std::fs::read_to_string(repository().join("examples/seed-policy.yaml")).expect("seed");
    assert!(
        seed.contains("caSecretRef:\n      name: egress-ca"),
        "the seed proxy names egress-ca"
    );
    let intermediate = yaml
        .split("\n---\n")
        .find(|doc| doc.contains("name: egress-ca\n"))
        .expect("the intermediate Certificate");
    assert!(intermediate.contains("kind: Certificate"));
    assert!(
        intermediate.contains("isCA: true"),
        "it must be a CA to sign the sub-CA"
    );
    assert!(intermediate.contains("secretName: egress-ca"));
    assert!(
        intermediate.contains("issuerRef: {name: egress-root, kind: Issuer}"),
        "signed by the root"
    );
}
