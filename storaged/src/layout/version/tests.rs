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
    Ack(u8),
    Sync(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let role = prop::option::of((0u8..3, 1u64..=3));
    prop_oneof![
        4 => (1u8..=6, role).prop_map(|(n, r)| Op::Stage(n, r)),
        2 => Just(Op::Apply),
        1 => Just(Op::Revert),
        1 => Just(Op::Retire),
        1 => (1u8..=6).prop_map(Op::Ack),
        1 => (1u8..=6).prop_map(Op::Sync),
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
            Op::Ack(n) => {
                l.record_ack(id(*n), l.version());
            }
            Op::Sync(n) => {
                l.record_sync(id(*n), l.version());
                l.record_sync_ack(id(*n), l.version());
            }
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

/// Every node of `l` records what its own tracker refresh would at version `v`.
fn all_record(
    l: &mut ClusterLayout,
    nodes: &[u8],
    what: fn(&mut ClusterLayout, NodeId, u64) -> bool,
) {
    let v = l.version();
    for &i in nodes {
        what(l, id(i), v);
    }
}

#[test]
fn the_transition_is_a_barrier_ack_then_sync_then_sync_ack() {
    // Version 1 on nodes 1..=4, settled: every node acked, synced, sync-acked it.
    let mut l1 = applied(4, 4);
    for f in [
        ClusterLayout::record_ack,
        ClusterLayout::record_sync,
        ClusterLayout::record_sync_ack,
    ] {
        all_record(&mut l1, &[1, 2, 3, 4], f);
    }
    let none_down = |_: &NodeId| false;
    assert!(!l1.in_transition());
    assert!(l1.current_synced());

    // Version 2: node 5 joins, node 4 leaves.
    let mut staged = l1.clone();
    stage_role(&mut staged, 5, Some(NodeRole::storage("z0", GB)));
    stage_role(&mut staged, 4, None);
    let (mut l2, _) = staged.apply(2).unwrap();
    assert!(l2.in_transition());
    let barrier: Vec<NodeId> = l2.barrier_nodes(none_down).into_iter().collect();
    assert_eq!(
        barrier,
        [id(1), id(2), id(3), id(4), id(5)],
        "old and new nodes"
    );
    assert_eq!(l2.read_version().version, 1, "reads stay on version 1");

    // Node 3 is paused with the old layout: it never acked 2, so nothing may sync yet,
    // whether node 3 is seen up or down (it stays in the layout).
    all_record(&mut l2, &[1, 2, 4, 5], ClusterLayout::record_ack);
    assert!(!l2.acked_by_all(none_down));
    assert!(
        !l2.acked_by_all(|n| *n == id(3)),
        "a paused node is waited for"
    );
    // Even with (premature) syncs and sync-acks everywhere else, nothing retires.
    let mut premature = l2.clone();
    all_record(&mut premature, &[1, 2, 3, 5], ClusterLayout::record_sync);
    all_record(
        &mut premature,
        &[1, 2, 4, 5],
        ClusterLayout::record_sync_ack,
    );
    assert!(
        !premature.may_retire(none_down),
        "node 3 has not sync-acked"
    );

    // Node 3 resumes, learns version 2, its old writes drain: it acks.
    l2.record_ack(id(3), 2);
    assert!(l2.acked_by_all(none_down));
    assert!(!l2.current_synced());
    assert!(!l2.may_retire(none_down));
    // The storage nodes of version 2 sync (node 4 has nothing to sync in it).
    let storage: Vec<NodeId> = l2.current_storage_nodes().into_iter().collect();
    assert_eq!(storage, [id(1), id(2), id(3), id(5)]);
    all_record(&mut l2, &[1, 2, 3], ClusterLayout::record_sync);
    assert_eq!(l2.read_version().version, 1, "node 5 not synced yet");
    l2.record_sync(id(5), 2);
    assert!(l2.current_synced());
    assert_eq!(
        l2.read_version().version,
        2,
        "reads move to the synced version"
    );
    for p in 0..=255u16 {
        assert_eq!(l2.write_sets(p).last().copied(), Some(l2.nodes_of(p)));
    }
    // Writes still reach version 1 until every node saw the sync.
    all_record(&mut l2, &[1, 2, 3, 5], ClusterLayout::record_sync_ack);
    assert!(
        !l2.may_retire(none_down),
        "node 4 (up) still reads version 1"
    );
    assert!(
        l2.may_retire(|n| *n == id(4)),
        "a removed node that is down is not waited for"
    );
    l2.record_sync_ack(id(4), 2);
    assert!(l2.may_retire(none_down));
    l2.retire_up_to(2).unwrap();
    assert!(!l2.in_transition());
    assert!(!l2.may_retire(none_down));
    assert!(l2.current().partitions_of(&id(4)).is_empty());
}

#[test]
fn trackers_merge_and_never_exceed_the_version() {
    let l1 = applied(3, 3);
    let (mut a, mut b) = (l1.clone(), l1.clone());
    a.record_ack(id(1), 1);
    b.record_ack(id(2), 1);
    assert!(!a.record_ack(id(1), 9) || a.trackers().ack[&id(1)] == 1);
    assert_eq!(
        a.trackers().ack[&id(1)],
        1,
        "clamped to the current version"
    );
    a.merge(&b);
    assert_eq!(a.trackers().ack.len(), 2);
    b.merge(&a);
    assert_eq!(a, b);
}

#[test]
fn layouts_without_trackers_decode_and_old_daemons_ignore_them() {
    /// The layout as a daemon without the barrier wrote it.
    #[derive(Serialize, Deserialize)]
    struct Old {
        current: LayoutVersion,
        history: Vec<LayoutVersion>,
        synced: u64,
        staging: Staging,
    }
    let mut l = applied(3, 3);
    l.record_ack(id(1), 1);
    let old: Old = decode(&encode(&l).unwrap()).unwrap();
    assert_eq!(
        old.current,
        *l.current(),
        "an old daemon reads the new record"
    );
    let back: ClusterLayout = decode(&encode(&old).unwrap()).unwrap();
    assert!(back.trackers().ack.is_empty());
    assert_eq!(back.current(), l.current());
}
