//! Prints the operator's CRDs as YAML, from the Rust types.
//!
//! `crdgen` prints every CRD as one multi-document stream; `crdgen --out-dir crds` writes
//! one file per CRD (what `crds/` and the chart's `crds/` hold, checked by a test).

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out_dirs = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out-dir" => out_dirs.push(PathBuf::from(
                args.next().context("--out-dir needs a directory")?,
            )),
            "-h" | "--help" => {
                println!("usage: crdgen [--out-dir DIR]...");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let files = operator::crd::yaml_files().context("serializing CRDs")?;
    if out_dirs.is_empty() {
        for (_, yaml) in &files {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    for dir in out_dirs {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, yaml) in &files {
            let path = dir.join(name);
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
