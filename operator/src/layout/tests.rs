#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use storaged_api::{HealthStatus, NodeRoleAssignment};

use super::*;

fn node(id: &str, host: &str, up: bool) -> NodeInfo {
    NodeInfo {
        node_id: id.into(),
        hostname: host.into(),
        zone: None,
        rpc_addr: None,
        is_up: up,
        role: None,
        version: "test".into(),
    }
}

fn status(nodes: Vec<NodeInfo>) -> ClusterStatus {
    ClusterStatus {
        node_id: "n0".into(),
        layout_version: 0,
        nodes,
    }
}

fn health(not_replicated: u64) -> ClusterHealth {
    ClusterHealth {
        status: HealthStatus::Healthy,
        known_nodes: 0,
        connected_nodes: 0,
        storage_nodes: 0,
        storage_nodes_up: 0,
        partitions: 256,
        partitions_quorum: 256,
        partitions_all_ok: 256 - not_replicated,
        partitions_not_fully_replicated: not_replicated,
    }
}

fn layout(version: u64, roles: &[(&str, &str)]) -> LayoutInfo {
    LayoutInfo {
        version,
        roles: roles
            .iter()
            .map(|(id, zone)| NodeRoleAssignment {
                node_id: (*id).into(),
                role: NodeRole {
                    zone: (*zone).into(),
                    capacity: Some(100),
                    tags: vec![],
                },
            })
            .collect(),
        staged: vec![],
        staged_partition_moves: 0,
        zone_redundancy: None,
    }
}

fn target(name: &str, replicas: i32) -> ZoneTarget {
    ZoneTarget {
        name: name.into(),
        replicas,
        capacity: 100,
    }
}

#[test]
fn hostnames_map_to_zone_and_ordinal() {
    let zones = vec!["a-b".to_owned(), "a".to_owned()];
    assert_eq!(parse_pod("c", &zones, "c-a-b-0"), Some(("a-b", 0)));
    assert_eq!(parse_pod("c", &zones, "c-a-12"), Some(("a", 12)));
    assert_eq!(parse_pod("c", &zones, "c-a-x"), None);
    assert_eq!(parse_pod("c", &zones, "other-a-0"), None);
    assert_eq!(parse_pod("c", &zones, "c-a-"), None);
}

#[test]
fn first_layout_waits_for_every_node() {
    let st = status(vec![node("n1", "g-x-0", true)]);
    let p = plan("g", &[target("x", 2)], &[], &st, &layout(0, &[]));
    assert!(p.waiting_for_first_layout);
    assert!(p.changes.is_empty());
    assert_eq!(p.missing, ["g-x-1"]);
}

#[test]
fn new_nodes_get_a_role_with_zone_and_capacity() {
    let st = status(vec![node("n1", "g-x-0", true), node("n2", "g-x-1", true)]);
    let p = plan("g", &[target("x", 2)], &[], &st, &layout(0, &[]));
    assert_eq!(p.changes.len(), 2);
    let role = p.changes[0].role.as_ref().unwrap();
    assert_eq!((role.zone.as_str(), role.capacity), ("x", Some(100)));
    assert!(p.draining.is_empty());
}

#[test]
fn steady_state_plans_nothing() {
    let st = status(vec![node("n1", "g-x-0", true)]);
    let mut l = layout(3, &[("n1", "x")]);
    l.roles[0].role.tags = vec!["g-x-0".into()];
    let p = plan("g", &[target("x", 1)], &[], &st, &l);
    assert_eq!(p, LayoutPlan::default());
}

#[test]
fn scale_down_removes_roles_of_high_ordinals_and_drains() {
    let st = status(vec![node("n1", "g-x-0", true), node("n2", "g-x-1", true)]);
    let mut l = layout(2, &[("n1", "x"), ("n2", "x")]);
    for r in &mut l.roles {
        r.role.tags = vec![if r.node_id == "n1" { "g-x-0" } else { "g-x-1" }.into()];
    }
    let p = plan("g", &[target("x", 1)], &[], &st, &l);
    assert_eq!(
        p.changes,
        [StagedRoleChange {
            node_id: "n2".into(),
            role: None
        }]
    );
    assert!(p.draining.contains("x"));
    assert!(!drain_complete(&p, "x", &health(0)));

    // Once applied, the zone still waits for replication to finish.
    let l2 = LayoutInfo {
        version: 3,
        roles: l.roles[..1].to_vec(),
        ..l
    };
    let p2 = plan("g", &[target("x", 1)], &[], &st, &l2);
    assert!(p2.changes.is_empty());
    assert!(
        !drain_complete(&p2, "x", &health(17)),
        "partitions still syncing"
    );
    assert!(drain_complete(&p2, "x", &health(0)));
}

#[test]
fn removed_zone_drains_all_its_nodes() {
    let st = status(vec![node("n1", "g-x-0", true), node("n9", "g-old-0", true)]);
    let l = layout(2, &[("n1", "x"), ("n9", "old")]);
    let p = plan("g", &[target("x", 1)], &["old".into()], &st, &l);
    assert!(
        p.changes
            .iter()
            .any(|c| c.node_id == "n9" && c.role.is_none())
    );
    assert!(p.draining.contains("old"));
}

#[test]
fn replaced_pod_ghost_loses_its_role_without_draining() {
    let st = status(vec![
        node("old-id", "g-x-0", false),
        node("new-id", "g-x-0", true),
    ]);
    let l = layout(2, &[("old-id", "x")]);
    let p = plan("g", &[target("x", 1)], &[], &st, &l);
    assert!(
        p.changes
            .iter()
            .any(|c| c.node_id == "old-id" && c.role.is_none())
    );
    assert!(
        p.changes
            .iter()
            .any(|c| c.node_id == "new-id" && c.role.is_some())
    );
    assert!(p.draining.is_empty());
}

#[test]
fn foreign_nodes_are_left_alone() {
    let st = status(vec![
        node("n1", "g-x-0", true),
        node("gw", "gateway-1", true),
    ]);
    let l = layout(1, &[("gw", "x")]);
    let p = plan("g", &[target("x", 1)], &[], &st, &l);
    assert!(p.changes.iter().all(|c| c.node_id != "gw"));
}

#[test]
fn down_wanted_node_keeps_its_role() {
    let st = status(vec![node("n1", "g-x-0", false)]);
    let mut l = layout(1, &[("n1", "x")]);
    l.roles[0].role.tags = vec!["g-x-0".into()];
    let p = plan("g", &[target("x", 1)], &[], &st, &l);
    assert!(p.changes.is_empty());
}
