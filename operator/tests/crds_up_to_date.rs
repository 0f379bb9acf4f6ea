//! `crds/` and the chart's `crds/` must be exactly what `crdgen` prints from the Rust types.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::Path;

const REGENERATE: &str = "cargo run --release -p operator --bin crdgen -- --out-dir crds --out-dir charts/garage-operator/crds";

#[test]
fn crd_files_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = operator::crd::yaml_files().expect("serialize");
    assert_eq!(files.len(), 3);
    for dir in ["crds", "charts/garage-operator/crds"] {
        let dir = root.join(dir);
        for (name, want) in &files {
            let path = dir.join(name);
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == *want,
                "{} is stale or missing; run `{REGENERATE}`",
                path.display()
            );
        }
        let extra: Vec<_> = std::fs::read_dir(&dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") && !files.iter().any(|(f, _)| f == n))
            .collect();
        assert!(
            extra.is_empty(),
            "stale CRD files in {}: {extra:?}",
            dir.display()
        );
    }
}
