//! `operator render`: the objects the reconciler would apply for a GarageCluster manifest,
//! as YAML, without a cluster. Used by the offline validation in `e2e/operator/`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;

use crate::crd::GarageCluster;
use crate::resources::secrets::{self, ClusterSecret};
use crate::resources::{self, RenderOptions};
use crate::{Error, Result};

/// UID given to a manifest that has none, so owner references render as they will live.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Every object for the GarageCluster documents of `manifest` (other kinds are skipped),
/// as a multi-document YAML stream. Generated Secrets carry a placeholder value.
pub fn render_manifest(manifest: &str, opts: &RenderOptions) -> Result<String> {
    let mut out = String::new();
    for doc in split_documents(manifest) {
        let value: serde_json::Value =
            serde_saphyr::from_str(doc).map_err(|e| Error::InvalidSpec(format!("YAML: {e}")))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("GarageCluster") {
            continue;
        }
        let mut cluster: GarageCluster = serde_json::from_value(value)?;
        cluster
            .metadata
            .namespace
            .get_or_insert_with(|| "default".to_owned());
        cluster
            .metadata
            .uid
            .get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
        let objs = resources::desired(&cluster, opts, &BTreeMap::new())?;
        push(&mut out, &objs.config_map)?;
        push(&mut out, &objs.peers_service)?;
        push(&mut out, &objs.s3_service)?;
        if let Some(w) = &objs.web_service {
            push(&mut out, w)?;
        }
        push(&mut out, &objs.pdb)?;
        for s in &objs.stateful_sets {
            push(&mut out, s)?;
        }
        for which in ClusterSecret::ALL {
            let secret: Option<Secret> =
                secrets::to_create(&cluster, which, None, || "0".repeat(64))?;
            if let Some(s) = secret {
                push(&mut out, &s)?;
            }
        }
    }
    Ok(out)
}

fn push<T: Serialize>(out: &mut String, obj: &T) -> Result<()> {
    let yaml =
        serde_saphyr::to_string(obj).map_err(|e| Error::InvalidSpec(format!("YAML: {e}")))?;
    out.push_str("---\n");
    out.push_str(&yaml);
    Ok(())
}

/// Splits a multi-document YAML stream on `---` lines.
#[must_use]
pub fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}
