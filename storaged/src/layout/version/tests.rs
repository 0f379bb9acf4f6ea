//! Tests of the versioned layout: staging, apply/revert checks, transitions, CRDT laws.

use super::*;
use crate::util::crdt::laws;
use crate::util::encode::{decode, encode};
use crate::util::id::Id32;
use proptest::prelude::*;

const GB: u64 = 1 << 30;

fn id(i: u8) -> NodeId {
    Id32([i; 32])
}

fn stage_role(l: &mut ClusterLayout, i: u8, role: Option<NodeRole>) {
    l.stage(LayoutChange::Role { node: id(i), role }).unwrap();
}

/// A cluster with nodes 1..=n in zones round-robin over `zones`, applied as version 1.
fn applied(n: u8, zones: u8) -> ClusterLayout {
    let mut l = ClusterLayout::new(3);
    for i in 1..=n {
        stage_role(
            &mut l,
            i,
            Some(NodeRole::storage(format!("z{}", i % zones), GB)),
        );
    }
    l.apply(1).unwrap().0
}

#[test]
fn apply_and_revert_check_the_version() {
    let mut l = ClusterLayout::new(3);
    assert_eq!(l.version(), 0);
    assert!(l.nodes_of(7).is_empty());
    for i in 1..=3 {
        stage_role(&mut l, i, Some(NodeRole::storage(format!("z{i}"), GB)));
    }
    stage_role(&mut l, 9, Some(NodeRole::gateway("z1")));
    assert_eq!(
        l.apply(0).unwrap_err(),
        LayoutError::VersionMismatch {
            given: 0,
            expected: 1
        }
    );
    assert_eq!(
        l.apply(2).unwrap_err(),
        LayoutError::VersionMismatch {
            given: 2,
            expected: 1
        }
    );
    let (l1, messages) = l.apply(1).unwrap();
    assert_eq!(l1.version(), 1);
    assert!(l1.staging().is_empty());
    assert_eq!(l1.roles().len(), 4);
    assert!(
        messages.iter().any(|m| m.contains("256 partitions move")),
        "{messages:?}"
    );
    for p in 0..=255u16 {
        let mut nodes = l1.nodes_of(p).to_vec();
        nodes.sort();
        assert_eq!(nodes, vec![id(1), id(2), id(3)]);
    }
    // version 0 held nothing: nothing to sync, one live version
    assert_eq!(l1.versions().count(), 1);

    let mut l1b = l1.clone();
    stage_role(&mut l1b, 4, Some(NodeRole::storage("z1", GB)));
    assert!(matches!(
        l1b.revert(2),
        Err(LayoutError::VersionMismatch { .. })
    ));
    l1b.revert(1).unwrap();
    assert!(l1b.staging().is_empty());
    assert_eq!(l1b.version(), 1);
}

#[test]
fn impossible_changes_are_refused() {
    let mut l = ClusterLayout::new(3);
    assert_eq!(
        l.stage(LayoutChange::Role {
            node: id(1),
            role: Some(NodeRole::storage("a", 0))
        }),
        Err(LayoutError::ZeroCapacity(id(1)))
    );
    assert!(l.stage(LayoutChange::ZoneRedundancy(Some(0))).is_err());
    stage_role(&mut l, 1, Some(NodeRole::storage("a", GB)));
    stage_role(&mut l, 2, Some(NodeRole::storage("b", GB)));
    assert_eq!(
        l.apply(1).unwrap_err(),
        LayoutError::NotEnoughStorageNodes { needed: 3, have: 2 }
    );
    stage_role(&mut l, 3, Some(NodeRole::storage("b", GB)));
    l.stage(LayoutChange::ZoneRedundancy(Some(3))).unwrap();
    assert!(matches!(
        l.apply(1),
        Err(LayoutError::ZoneRedundancyImpossible { requested: 3, .. })
    ));
    l.stage(LayoutChange::ZoneRedundancy(None)).unwrap();
    assert!(l.apply(1).is_ok());
}

#[test]
fn transitions_write_to_every_live_version_and_read_from_the_synced_one() {
    let l1 = applied(4, 4);
    let mut staged = l1.clone();
    stage_role(&mut staged, 5, Some(NodeRole::storage("z0", GB)));
    let preview = staged.preview().unwrap();
    let (mut l2, _) = staged.apply(2).unwrap();
    assert_eq!(preview.version, *l2.current());
    assert!(preview.partitions_moved > 0);
    assert_eq!(l2.versions().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    let mut changed = 0;
    for p in 0..=255u16 {
        let sets = l2.write_sets(p);
        assert_eq!(
            l2.read_nodes(p),
            l1.nodes_of(p),
            "reads stay on the synced version"
        );
        if l1.nodes_of(p) == l2.nodes_of(p) {
            assert_eq!(sets, vec![l2.nodes_of(p)]);
        } else {
            changed += 1;
            assert_eq!(sets, vec![l1.nodes_of(p), l2.nodes_of(p)]);
        }
    }
    assert_eq!(changed, preview.partitions_moved);
    assert_eq!(
        l2.retire_up_to(3),
        Err(LayoutError::UnknownVersion {
            given: 3,
            current: 2
        })
    );
    l2.retire_up_to(2).unwrap();
    assert_eq!(l2.versions().count(), 1);
    for p in 0..=255u16 {
        assert_eq!(l2.write_sets(p), vec![l2.nodes_of(p)]);
        assert_eq!(l2.read_nodes(p), l2.nodes_of(p));
    }
}

#[test]
fn removed_node_keeps_its_partitions_until_retired() {
    let l1 = applied(5, 5);
    let gone = id(2);
    let mut staged = l1.clone();
    stage_role(&mut staged, 2, None);
    let (l2, _) = staged.apply(2).unwrap();
    assert!(l2.current().partitions_of(&gone).is_empty());
    assert!(!l2.roles().contains_key(&gone));
    let held = l1.current().partitions_of(&gone);
    assert!(!held.is_empty());
    for p in held {
        assert!(l2.write_sets(p).iter().any(|s| s.contains(&gone)));
        assert!(l2.read_nodes(p).contains(&gone));
    }
}

#[test]
fn merge_keeps_the_newer_version_and_drops_stale_staging() {
    let l1 = applied(3, 3);
    let mut behind = l1.clone();
    stage_role(&mut behind, 7, Some(NodeRole::gateway("z0")));
    let mut ahead = l1.clone();
    stage_role(&mut ahead, 4, Some(NodeRole::storage("z1", GB)));
    let (ahead, _) = ahead.apply(2).unwrap();
    let mut m = behind.clone();
    m.merge(&ahead);
    assert_eq!(m, ahead);

    // at the same version, staged changes of both admins merge
    let mut a = l1.clone();
    stage_role(&mut a, 4, Some(NodeRole::storage("z1", GB)));
    let mut b = l1.clone();
    stage_role(&mut b, 5, Some(NodeRole::storage("z2", GB)));
    a.merge(&b);
    assert_eq!(a.staging().roles.0.len(), 2);
    // and a revert wins over the changes it discarded
    let mut r = l1.clone();
    r.revert(1).unwrap();
    a.merge(&r);
    assert!(a.staging().is_empty());
}

#[test]
fn encodes_and_decodes() {
    let mut l = applied(4, 2);
    stage_role(&mut l, 9, Some(NodeRole::gateway("z1")));
    l.stage(LayoutChange::ZoneRedundancy(Some(2))).unwrap();
    let bytes = encode(&l).unwrap();
    assert_eq!(decode::<ClusterLayout>(&bytes).unwrap(), l);
}

/// An operation on a layout, for the CRDT law tests.
#[derive(Clone, Debug)]
enum Op {
    Stage(u8, Option<(u8, u64)>),
    Apply,
    Revert,
    Retire,
}

fn op() -> impl Strategy<Value = Op> {
    let role = prop::option::of((0u8..3, 1u64..=3));
    prop_oneof![
        4 => (1u8..=6, role).prop_map(|(n, r)| Op::Stage(n, r)),
        2 => Just(Op::Apply),
        1 => Just(Op::Revert),
        1 => Just(Op::Retire),
    ]
}

/// Runs `ops`, skipping those that fail (an apply of an impossible layout, say).
fn run(mut l: ClusterLayout, ops: &[Op]) -> ClusterLayout {
    for op in ops {
        match op {
            Op::Stage(n, role) => {
                let role = role.map(|(z, c)| NodeRole::storage(format!("z{z}"), c * GB));
                stage_role(&mut l, *n, role);
            }
            Op::Apply => {
                if let Ok((next, _)) = l.apply(l.version() + 1) {
                    l = next;
                }
            }
            Op::Revert => l.revert(l.version()).unwrap(),
            Op::Retire => l.retire_up_to(l.version()).unwrap(),
        }
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Layouts that diverged from a common one (concurrent stages, applies, reverts,
    /// retirements on different nodes) merge commutatively, associatively, idempotently.
    #[test]
    fn merge_is_a_crdt(
        base in prop::collection::vec(op(), 0..4),
        a in prop::collection::vec(op(), 0..4),
        b in prop::collection::vec(op(), 0..4),
        c in prop::collection::vec(op(), 0..4),
    ) {
        let base = run(applied(3, 3), &base);
        let (a, b, c) = (run(base.clone(), &a), run(base.clone(), &b), run(base, &c));
        laws::check(&a, &b, &c);
        // the merge holds the newest version of all three
        let mut m = a.clone();
        m.merge(&b);
        m.merge(&c);
        prop_assert_eq!(m.version(), a.version().max(b.version()).max(c.version()));
    }
}
