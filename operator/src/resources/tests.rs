//! Unit tests of the desired-state functions.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::*;
use crate::fixtures::cluster;

fn render(c: &GarageCluster) -> DesiredObjects {
    desired(c, &RenderOptions::default(), &BTreeMap::new()).expect("render")
}

#[test]
fn one_statefulset_per_zone_named_cluster_zone() {
    let objs = render(&cluster());
    let names: Vec<_> = objs
        .stateful_sets
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["garage-paris", "garage-lyon", "garage-berlin"]);
    for s in &objs.stateful_sets {
        let spec = &s.spec;
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("garage-peers"));
        let claims: Vec<_> = spec
            .volume_claim_templates
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(claims, ["data", "metadata"]);
    }
}

#[test]
fn zone_pods_are_pinned_to_zone_nodes_and_spread_over_hosts() {
    let mut c = cluster();
    c.spec.zone_label_key = "example.com/site".into();
    c.spec.zones[1].label_value = Some("LYON-1".into());
    let objs = render(&c);
    let lyon = &objs.stateful_sets[1];
    let pod = lyon.spec.template.spec.as_ref().unwrap();
    let affinity = pod.affinity.as_ref().unwrap();
    let term = &affinity
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    let req = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(req.key, "example.com/site");
    assert_eq!(req.values.as_deref(), Some(&["LYON-1".to_owned()][..]));
    let anti = affinity
        .pod_anti_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(anti[0].topology_key, "kubernetes.io/hostname");
    let env = pod.containers[0].env.as_ref().unwrap();
    let zone = env.iter().find(|e| e.name == "STORAGED_ZONE").unwrap();
    assert_eq!(zone.value.as_deref(), Some("lyon"));
    let labels = lyon.spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(
        labels.get(names::ZONE_LABEL).map(String::as_str),
        Some("lyon")
    );
}

#[test]
fn pods_run_non_root_with_probes_on_admin_port() {
    let objs = render(&cluster());
    let pod = objs.stateful_sets[0].spec.template.spec.clone().unwrap();
    let sc = pod.security_context.unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert!(sc.run_as_user.unwrap() > 0);
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_ref().unwrap(),
        &["server", "-c", "/etc/storaged/storaged.toml"]
    );
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/ready"));
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/health"));
    let csc = c.security_context.as_ref().unwrap();
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    let ports: Vec<_> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.container_port, p.protocol.clone().unwrap()))
        .collect();
    assert_eq!(
        ports,
        [
            (3900, "TCP".into()),
            (3901, "UDP".into()),
            (3902, "TCP".into()),
            (3903, "TCP".into())
        ]
    );
}

#[test]
fn replica_override_keeps_draining_nodes() {
    let c = cluster();
    let objs = desired(
        &c,
        &RenderOptions::default(),
        &BTreeMap::from([("lyon".into(), 3)]),
    )
    .unwrap();
    let replicas: Vec<_> = objs
        .stateful_sets
        .iter()
        .map(|s| s.spec.replicas.unwrap())
        .collect();
    assert_eq!(replicas, [2, 3, 2]);
}

#[test]
fn headless_service_publishes_not_ready_pods() {
    let objs = render(&cluster());
    let spec = objs.peers_service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let rpc = &spec.ports.unwrap()[0];
    assert_eq!((rpc.port, rpc.protocol.as_deref()), (3901, Some("UDP")));
    let s3 = objs.s3_service.spec.unwrap();
    assert_eq!(s3.ports.unwrap()[0].port, 3900);
    assert!(objs.web_service.is_none());
}

#[test]
fn config_uses_design_keys_and_secret_files() {
    let mut c = cluster();
    c.spec.s3.root_domain = Some(".s3.example.com".into());
    let toml = config::render(&c, &RenderOptions::default()).unwrap();
    for line in [
        "metadata_dir = \"/var/lib/storaged/meta\"",
        "data_dir = \"/var/lib/storaged/data\"",
        "replication_factor = 3",
        "consistency_mode = \"consistent\"",
        "rpc_bind_addr = \"[::]:3901\"",
        "rpc_secret_file = \"/run/secrets/storaged/rpc_secret\"",
        "bootstrap_peers = [\"garage-peers.storage.svc.cluster.local:3901\"]",
        "[s3_api]",
        "api_bind_addr = \"[::]:3900\"",
        "s3_region = \"garage\"",
        "root_domain = \".s3.example.com\"",
        "[admin]",
        "api_bind_addr = \"[::]:3903\"",
        "admin_token_file = \"/run/secrets/storaged/admin_token\"",
    ] {
        assert!(
            toml.lines().any(|l| l == line),
            "missing {line:?} in\n{toml}"
        );
    }
    assert!(!toml.contains("rpc_secret ="), "secrets only by file");
    assert!(!toml.contains("admin_token ="), "secrets only by file");
}

#[test]
fn config_change_changes_pod_template_hash() {
    let a = render(&cluster());
    let mut c = cluster();
    c.spec.s3.region = "eu-west".into();
    let b = render(&c);
    let hash = |o: &DesiredObjects| {
        o.stateful_sets[0]
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
    };
    assert_ne!(hash(&a), hash(&b));
    assert_eq!(hash(&a), hash(&render(&cluster())), "stable across renders");
}

#[test]
fn one_pdb_for_the_whole_cluster() {
    let pdb = render(&cluster()).pdb;
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    let sel = spec.selector.unwrap().match_labels.unwrap();
    assert!(!sel.contains_key(names::ZONE_LABEL), "not per zone");
    assert_eq!(
        sel.get("app.kubernetes.io/instance").map(String::as_str),
        Some("garage")
    );
}

#[test]
fn every_object_is_owned_by_the_cluster() {
    let objs = render(&cluster());
    let metas = [
        &objs.config_map.metadata,
        &objs.peers_service.metadata,
        &objs.s3_service.metadata,
        &objs.pdb.metadata,
        &objs.stateful_sets[0].metadata,
    ];
    for m in metas {
        let o = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str()),
            ("GarageCluster", "garage")
        );
        assert_eq!(o.controller, Some(true));
        assert_eq!(m.namespace.as_deref(), Some("storage"));
    }
}

#[test]
fn generated_secrets_are_created_once_never_regenerated() {
    let c = cluster();
    let first = secrets::to_create(&c, secrets::ClusterSecret::Rpc, None, || "aa".repeat(32))
        .unwrap()
        .expect("created when absent");
    assert_eq!(first.metadata.name.as_deref(), Some("garage-rpc-secret"));
    assert_eq!(first.immutable, Some(true));
    let existing = Secret::default();
    let again = secrets::to_create(&c, secrets::ClusterSecret::Rpc, Some(&existing), || {
        panic!("must not generate a value for an existing secret")
    })
    .unwrap();
    assert!(again.is_none());
}

#[test]
fn user_secrets_are_mounted_and_never_generated() {
    let mut c = cluster();
    c.spec.secrets.admin_token = Some(crate::crd::SecretKeyRef {
        name: "mine".into(),
        key: "token".into(),
    });
    let created =
        secrets::to_create(&c, secrets::ClusterSecret::AdminToken, None, || "x".into()).unwrap();
    assert!(created.is_none());
    let objs = render(&c);
    let vols = objs.stateful_sets[0]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap();
    let projected = vols
        .iter()
        .find(|v| v.name == "secrets")
        .unwrap()
        .projected
        .clone()
        .unwrap();
    let names: Vec<_> = projected
        .sources
        .unwrap()
        .into_iter()
        .map(|s| s.secret.unwrap().name)
        .collect();
    assert_eq!(names, ["garage-rpc-secret", "mine"]);
}

#[test]
fn generated_values_are_64_hex_and_distinct() {
    let a = secrets::ClusterSecret::Rpc.new_value();
    let b = secrets::ClusterSecret::Rpc.new_value();
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn web_service_only_when_enabled() {
    let mut c = cluster();
    c.spec.web = Some(crate::crd::WebSpec {
        enabled: true,
        root_domain: Some(".web.example.com".into()),
        service_type: crate::crd::ServiceType::LoadBalancer,
    });
    let objs = render(&c);
    let web = objs.web_service.unwrap();
    assert_eq!(web.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
    let toml = config::render(&c, &RenderOptions::default()).unwrap();
    assert!(
        toml.contains("[s3_web]\nbind_addr = \"[::]:3902\""),
        "{toml}"
    );
}

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
