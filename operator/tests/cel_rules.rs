//! The CRDs' CEL rules, checked offline with kube-cel: every rule compiles, stays within
//! the cost budget given the schema bounds, accepts the examples, and rejects the changes
//! it exists to reject. (kube-cel is not the API server's CEL: the real admission check
//! still happens at install time.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use kube::CustomResourceExt;
use kube_cel::{CompiledSchema, Validator, compile_schema, estimate_rule_cost};
use operator::crd::{AccessKey, Bucket, GarageCluster};
use serde_json::{Value, json};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

/// Every schema node carrying rules, with its rules: a rule's `self` is that node, so its
/// cost is estimated against that node's bounds.
fn rule_nodes<'a>(schema: &'a Value, out: &mut Vec<(&'a Value, Vec<String>)>) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::Array(v)) = m.get("x-kubernetes-validations") {
                out.push((
                    schema,
                    v.iter()
                        .filter_map(|r| r["rule"].as_str().map(str::to_owned))
                        .collect(),
                ));
            }
            m.values().for_each(|v| rule_nodes(v, out));
        }
        Value::Array(v) => v.iter().for_each(|v| rule_nodes(v, out)),
        _ => {}
    }
}

fn errors(c: &CompiledSchema, out: &mut Vec<String>) {
    out.extend(c.compilation_errors().iter().map(|e| format!("{e:?}")));
    c.properties.values().for_each(|p| errors(p, out));
    if let Some(i) = &c.items {
        errors(i, out);
    }
}

fn example(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn check(schema: &Value, obj: &Value, old: Option<&Value>) -> Result<(), String> {
    Validator::new()
        .validate(schema, obj, old)
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn every_rule_compiles_within_budget() {
    for s in [
        schema::<GarageCluster>(),
        schema::<Bucket>(),
        schema::<AccessKey>(),
    ] {
        let compiled = compile_schema(&s);
        let mut errs = Vec::new();
        errors(&compiled, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut nodes = Vec::new();
        rule_nodes(&s, &mut nodes);
        assert!(!nodes.is_empty());
        for (node, rules) in nodes {
            let local = compile_schema(node);
            for r in &rules {
                let warnings = estimate_rule_cost(r, &local);
                assert!(warnings.is_empty(), "{r}: {warnings:?}");
            }
        }
    }
}

#[test]
fn examples_pass_their_rules() {
    check(
        &schema::<GarageCluster>(),
        &example("garagecluster.yaml"),
        None,
    )
    .unwrap();
    check(&schema::<Bucket>(), &example("bucket.yaml"), None).unwrap();
    check(&schema::<AccessKey>(), &example("accesskey.yaml"), None).unwrap();
}

#[test]
fn cluster_rules_reject_what_they_should() {
    let s = schema::<GarageCluster>();
    let ok = example("garagecluster.yaml");

    let mut too_few = ok.clone();
    too_few["spec"]["zones"] = json!([ok["spec"]["zones"][0].clone()]);
    too_few["spec"]["zones"][0]["replicas"] = json!(1);
    let e = check(&s, &too_few, None).unwrap_err();
    assert!(e.contains("fewer nodes than replicationFactor"), "{e}");

    let mut rf = ok.clone();
    rf["spec"]["replicationFactor"] = json!(2);
    let e = check(&s, &rf, Some(&ok)).unwrap_err();
    assert!(e.contains("replicationFactor is immutable"), "{e}");

    let mut storage = ok.clone();
    storage["spec"]["zones"][1]["storage"]["data"]["size"] = json!("200Gi");
    let e = check(&s, &storage, Some(&ok)).unwrap_err();
    assert!(e.contains("zone storage is immutable"), "{e}");

    let mut long = ok.clone();
    long["metadata"]["name"] = json!("a".repeat(40));
    long["spec"]["zones"][0]["name"] = json!("z".repeat(12));
    let e = check(&s, &long, None).unwrap_err();
    assert!(e.contains("must not exceed 51"), "{e}");

    // Scaling a zone is allowed.
    let mut scaled = ok.clone();
    scaled["spec"]["zones"][0]["replicas"] = json!(3);
    check(&s, &scaled, Some(&ok)).unwrap();
}

#[test]
fn bucket_and_key_rules_reject_what_they_should() {
    let s = schema::<Bucket>();
    let ok = example("bucket.yaml");
    let mut moved = ok.clone();
    moved["spec"]["clusterRef"]["name"] = json!("other");
    assert!(
        check(&s, &moved, Some(&ok))
            .unwrap_err()
            .contains("clusterRef is immutable")
    );
    let mut renamed = ok.clone();
    renamed["spec"]["bucketName"] = json!("other-name");
    assert!(
        check(&s, &renamed, Some(&ok))
            .unwrap_err()
            .contains("bucketName is immutable")
    );
    let mut force = ok.clone();
    force["spec"]["forceDelete"] = json!(true);
    assert!(
        check(&s, &force, None)
            .unwrap_err()
            .contains("forceDelete only makes sense")
    );

    let s = schema::<AccessKey>();
    let ok = example("accesskey.yaml");
    let mut none = ok.clone();
    none["spec"]["permissions"][0] = json!({"bucketRef": {"name": "media"}});
    assert!(
        check(&s, &none, None)
            .unwrap_err()
            .contains("grant at least one")
    );
    let mut dup = ok.clone();
    dup["spec"]["permissions"] = json!([
        ok["spec"]["permissions"][0].clone(),
        ok["spec"]["permissions"][0].clone()
    ]);
    assert!(check(&s, &dup, None).unwrap_err().contains("listed once"));
}
