//! Where a table's entries live and how many replicas must answer: sans-IO.
//!
//! A [`TableReplication`] maps a partition key hash to the nodes that store it, for writes
//! ([`TableReplication::write_sets`]: one set per live layout version, so that a write during
//! a layout transition reaches both the old owners, who serve reads, and the new ones, who
//! are being filled) and for reads ([`TableReplication::read_nodes`]: the oldest live
//! version, which holds every acknowledged write), with the quorums that the consistency
//! mode asks for ([`Quorums`]).
//!
//! Nothing here touches a socket or a disk: the decisions (quorum arithmetic, grouping a
//! batch of entries by destination, deciding when a write to several sets succeeded,
//! [`SetsTracker`]) are plain functions and state machines, unit-tested below, and
//! [`super::ReplicatedTable`] only drives them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ConsistencyMode;
use crate::layout::{ClusterLayout, WriteLock, WriteLocks, partition_of};
use crate::rpc::NodeId;
use crate::util::id::Hash;

/// How many replicas of one set must answer a write, and how many a read.
///
/// With `consistent`, `write + read > replication_factor`, so every read quorum intersects
/// every write quorum: a read after an acknowledged write sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// Successes needed in each write set.
    pub write: usize,
    /// Successes needed among the read nodes.
    pub read: usize,
}

impl Quorums {
    /// The quorums of `mode` for `replication_factor` copies: a majority for writes (one in
    /// `dangerous` mode), a majority for reads in `consistent` mode and one otherwise.
    #[must_use]
    pub fn new(replication_factor: usize, mode: ConsistencyMode) -> Self {
        let majority = replication_factor / 2 + 1;
        match mode {
            ConsistencyMode::Consistent => Self {
                write: majority,
                read: majority,
            },
            ConsistencyMode::Degraded => Self {
                write: majority,
                read: 1,
            },
            ConsistencyMode::Dangerous => Self { write: 1, read: 1 },
        }
    }
}

/// Where the entries of a partition live and how many of their nodes must answer.
///
/// Sans-IO by design (no calls, no clock): the replicated table asks it for each request, so
/// the answer follows layout changes, and tests can pin it.
pub trait TableReplication: Send + Sync + 'static {
    /// The node sets a write of `partition` must reach: one per live layout version, in
    /// version order, each to be acknowledged by [`Quorums::write`] of its nodes. Empty
    /// when no layout is applied (writes then fail rather than succeed vacuously).
    fn write_sets(&self, partition: &Hash) -> Vec<Vec<NodeId>>;

    /// The nodes to read `partition` from (the ones that hold every acknowledged write);
    /// [`Quorums::read`] of them must answer.
    fn read_nodes(&self, partition: &Hash) -> Vec<NodeId>;

    /// The quorums of the current replication factor and consistency mode.
    fn quorums(&self) -> Quorums;

    /// The nodes, and how many of them must answer, of a read that sees every acknowledged
    /// write even where [`Self::read_nodes`] is only this node's copy (full replication):
    /// the fallback of a local read that missed. By default [`Self::read_nodes`] with the
    /// read quorum, which already intersects every write quorum.
    fn quorum_read(&self, partition: &Hash) -> (Vec<NodeId>, usize) {
        (self.read_nodes(partition), self.quorums().read)
    }

    /// Registers a write about to be coordinated (before [`Self::write_sets`] is read),
    /// so that this node does not acknowledge a newer layout version while it runs (the
    /// layout transition barrier); held until the write is decided. `None`: no layout.
    fn lock_write(&self) -> Option<WriteLock> {
        None
    }

    /// Whether `node` stores `partition` in some live layout version: a receiver accepts
    /// anti-entropy pushes only from such a node, so that a node removed from the layout
    /// while it was down cannot push back entries its old partitions held.
    fn is_replica(&self, node: &NodeId, partition: &Hash) -> bool {
        self.write_sets(partition).iter().any(|s| s.contains(node))
    }
}

/// Every partition on this node alone, quorum 1: the single-node daemon as it runs today,
/// and the way to use the replicated API before a layout exists.
#[derive(Clone, Copy, Debug)]
pub struct LocalOnly {
    /// This node.
    pub node: NodeId,
}

impl TableReplication for LocalOnly {
    fn write_sets(&self, _: &Hash) -> Vec<Vec<NodeId>> {
        vec![vec![self.node]]
    }

    fn read_nodes(&self, _: &Hash) -> Vec<NodeId> {
        vec![self.node]
    }

    fn quorums(&self) -> Quorums {
        Quorums { write: 1, read: 1 }
    }
}

/// Placement from the cluster layout, which is shared through a watch channel so that the
/// layout gossip can publish a new version and every table follows it at its next request.
#[derive(Clone, Debug)]
pub struct LayoutReplication {
    layout: watch::Receiver<Arc<ClusterLayout>>,
    mode: ConsistencyMode,
    locks: Option<Arc<WriteLocks>>,
}

impl LayoutReplication {
    /// Placement from the layouts published on `layout`, with the quorums of `mode`.
    #[must_use]
    pub fn new(layout: watch::Receiver<Arc<ClusterLayout>>, mode: ConsistencyMode) -> Self {
        Self {
            layout,
            mode,
            locks: None,
        }
    }

    /// Registers every write in `locks` (the layout manager's), for the transition barrier.
    #[must_use]
    pub fn with_locks(mut self, locks: Arc<WriteLocks>) -> Self {
        self.locks = Some(locks);
        self
    }

    fn current(&self) -> Arc<ClusterLayout> {
        Arc::clone(&self.layout.borrow())
    }
}

impl TableReplication for LayoutReplication {
    fn write_sets(&self, partition: &Hash) -> Vec<Vec<NodeId>> {
        self.current()
            .write_sets(partition_of(partition))
            .into_iter()
            .map(<[NodeId]>::to_vec)
            .collect()
    }

    fn read_nodes(&self, partition: &Hash) -> Vec<NodeId> {
        self.current().read_nodes(partition_of(partition)).to_vec()
    }

    fn quorums(&self) -> Quorums {
        // The replication factor is fixed when the cluster is created: every version has it.
        Quorums::new(self.current().current().replication_factor, self.mode)
    }

    fn lock_write(&self) -> Option<WriteLock> {
        self.locks.as_ref().map(|l| l.lock(&self.layout))
    }
}

/// Every node of the layout stores every entry: for the small tables that each request
/// reads (access keys, buckets, bucket names), so that authorising a request costs no
/// network round trip. Writes go to every node with a role in each live version and
/// succeed when all but the replication factor's tolerated faults stored them; reads are
/// local (a write is seen everywhere once its last copies land, which the write sends at
/// once and anti-entropy completes), as in Garage.
///
/// A local read can therefore miss a write that a quorum acknowledged (this node was
/// down or slow when it was sent, or has no role and stores nothing): callers that must
/// see it fall back to [`TableReplication::quorum_read`], which reads enough role holders
/// of the oldest live version that every write quorum of that version is intersected.
#[derive(Clone, Debug)]
pub struct FullReplication {
    layout: watch::Receiver<Arc<ClusterLayout>>,
    me: NodeId,
    mode: ConsistencyMode,
    locks: Option<Arc<WriteLocks>>,
}

impl FullReplication {
    /// Every node of the layouts on `layout`; this node is `me`.
    #[must_use]
    pub fn new(
        layout: watch::Receiver<Arc<ClusterLayout>>,
        me: NodeId,
        mode: ConsistencyMode,
    ) -> Self {
        Self {
            layout,
            me,
            mode,
            locks: None,
        }
    }

    /// Registers every write in `locks` (the layout manager's), for the transition barrier.
    #[must_use]
    pub fn with_locks(mut self, locks: Arc<WriteLocks>) -> Self {
        self.locks = Some(locks);
        self
    }
}

impl TableReplication for FullReplication {
    fn write_sets(&self, _: &Hash) -> Vec<Vec<NodeId>> {
        let layout = Arc::clone(&self.layout.borrow());
        let mut sets: Vec<Vec<NodeId>> = Vec::new();
        for v in layout.versions().filter(|v| v.is_assigned()) {
            let nodes: Vec<NodeId> = v.roles.keys().copied().collect();
            if sets.last() != Some(&nodes) {
                sets.push(nodes);
            }
        }
        sets
    }

    fn read_nodes(&self, _: &Hash) -> Vec<NodeId> {
        vec![self.me]
    }

    fn quorum_read(&self, _: &Hash) -> (Vec<NodeId>, usize) {
        let layout = Arc::clone(&self.layout.borrow());
        // The oldest live version holds every acknowledged write (newer ones may still be
        // syncing), as for partitioned tables.
        let Some(oldest) = layout.versions().find(|v| v.is_assigned()) else {
            return (Vec::new(), 1);
        };
        let nodes: Vec<NodeId> = oldest.roles.keys().copied().collect();
        let quorum = match self.mode {
            // A write reached `write` of these nodes: any `len - write + 1` include one.
            ConsistencyMode::Consistent => (nodes.len() + 1)
                .saturating_sub(self.quorums().write)
                .clamp(1, nodes.len().max(1)),
            ConsistencyMode::Degraded | ConsistencyMode::Dangerous => 1,
        };
        (nodes, quorum)
    }

    fn quorums(&self) -> Quorums {
        let layout = Arc::clone(&self.layout.borrow());
        let rf = layout.current().replication_factor;
        let tolerated = rf - Quorums::new(rf, self.mode).write.min(rf);
        let smallest = (layout.versions().filter(|v| v.is_assigned()))
            .map(|v| v.roles.len())
            .min()
            .unwrap_or(1);
        Quorums {
            write: smallest.saturating_sub(tolerated).max(1),
            read: 1,
        }
    }

    fn lock_write(&self) -> Option<WriteLock> {
        self.locks.as_ref().map(|l| l.lock(&self.layout))
    }
}

/// Groups `items` by the write sets of their partition hash, so that one request per
/// destination carries every entry it must store (entries of different partitions that
/// share nodes travel together). Deterministic order, for reproducible tests.
pub fn group_by_write_sets<T>(
    replication: &dyn TableReplication,
    items: impl IntoIterator<Item = (Hash, T)>,
) -> BTreeMap<Vec<Vec<NodeId>>, Vec<T>> {
    let mut groups: BTreeMap<Vec<Vec<NodeId>>, Vec<T>> = BTreeMap::new();
    for (hash, item) in items {
        groups
            .entry(replication.write_sets(&hash))
            .or_default()
            .push(item);
    }
    groups
}

/// Where a call to several node sets stands (see [`SetsTracker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetsProgress {
    /// Some set has neither reached its quorum nor lost it yet.
    Pending,
    /// Every set reached its quorum.
    Reached,
    /// Some set can no longer reach its quorum.
    Failed,
}

/// The state of one request sent once to each node of several sets (a write during a
/// layout transition; a read is the one-set case): it succeeds when *every* set has
/// `quorum` successes, and fails as soon as one set has lost more than `len - quorum`
/// nodes. A node in several sets is asked once and counts in each.
///
/// Invariant: a node is recorded at most once (later results for it are ignored).
#[derive(Debug)]
pub struct SetsTracker {
    sets: Vec<Vec<NodeId>>,
    quorum: usize,
    ok: HashSet<NodeId>,
    failed: HashSet<NodeId>,
}

impl SetsTracker {
    /// A request to `sets`, each needing `quorum` successes. No set at all is
    /// [`SetsProgress::Failed`]: there is nowhere to store the data.
    #[must_use]
    pub fn new(sets: Vec<Vec<NodeId>>, quorum: usize) -> Self {
        let sets = sets
            .into_iter()
            .map(|mut s| {
                let mut seen = HashSet::new();
                s.retain(|n| seen.insert(*n));
                s
            })
            .collect();
        Self {
            sets,
            quorum,
            ok: HashSet::new(),
            failed: HashSet::new(),
        }
    }

    /// The distinct nodes to call, in set order.
    #[must_use]
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut seen = HashSet::new();
        self.sets
            .iter()
            .flatten()
            .copied()
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// Records whether `node` succeeded, and says where the request stands.
    pub fn record(&mut self, node: NodeId, success: bool) -> SetsProgress {
        if !self.ok.contains(&node) && !self.failed.contains(&node) {
            if success {
                self.ok.insert(node);
            } else {
                self.failed.insert(node);
            }
        }
        debug_assert!(self.ok.is_disjoint(&self.failed));
        self.progress()
    }

    /// Where the request stands.
    #[must_use]
    pub fn progress(&self) -> SetsProgress {
        if self.sets.is_empty() {
            return SetsProgress::Failed;
        }
        let mut all_reached = true;
        for set in &self.sets {
            let ok = set.iter().filter(|n| self.ok.contains(n)).count();
            let failed = set.iter().filter(|n| self.failed.contains(n)).count();
            if set.len() - failed < self.quorum {
                return SetsProgress::Failed;
            }
            all_reached &= ok >= self.quorum;
        }
        if all_reached {
            SetsProgress::Reached
        } else {
            SetsProgress::Pending
        }
    }

    /// Successes needed per set and the fewest obtained in any set, for error messages.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        let got = self
            .sets
            .iter()
            .map(|s| s.iter().filter(|n| self.ok.contains(n)).count())
            .min()
            .unwrap_or(0);
        (self.quorum, got)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use crate::layout::{LayoutChange, NodeRole};

    fn n(i: u8) -> NodeId {
        NodeId::from([i; 32])
    }

    #[test]
    fn quorums_follow_the_consistency_mode() {
        use ConsistencyMode::{Consistent, Dangerous, Degraded};
        assert_eq!(Quorums::new(3, Consistent), Quorums { write: 2, read: 2 });
        assert_eq!(Quorums::new(3, Degraded), Quorums { write: 2, read: 1 });
        assert_eq!(Quorums::new(3, Dangerous), Quorums { write: 1, read: 1 });
        assert_eq!(Quorums::new(1, Consistent), Quorums { write: 1, read: 1 });
        assert_eq!(Quorums::new(2, Consistent), Quorums { write: 2, read: 2 });
        assert_eq!(Quorums::new(5, Consistent), Quorums { write: 3, read: 3 });
        for rf in 1..8 {
            let q = Quorums::new(rf, Consistent);
            assert!(
                q.write + q.read > rf,
                "rf {rf}: read and write quorums intersect"
            );
            assert!(
                q.write <= rf && q.read <= rf,
                "rf {rf}: reachable with all up"
            );
        }
    }

    #[test]
    fn local_only_is_this_node_with_quorum_one() {
        let r = LocalOnly { node: n(1) };
        let h = Hash::random();
        assert_eq!(r.write_sets(&h), vec![vec![n(1)]]);
        assert_eq!(r.read_nodes(&h), vec![n(1)]);
        assert_eq!(r.quorums(), Quorums { write: 1, read: 1 });
    }

    fn layout_of(nodes: &[NodeId]) -> ClusterLayout {
        let mut l = ClusterLayout::new(3);
        stage(&mut l, nodes);
        l.apply(1).unwrap().0
    }

    fn stage(l: &mut ClusterLayout, nodes: &[NodeId]) {
        for (i, node) in nodes.iter().enumerate() {
            l.stage(LayoutChange::Role {
                node: *node,
                role: Some(NodeRole::storage(format!("z{i}"), 1 << 30)),
            })
            .unwrap();
        }
    }

    #[test]
    fn layout_replication_writes_to_every_live_version() {
        let l1 = layout_of(&[n(1), n(2), n(3)]);
        let (tx, rx) = watch::channel(Arc::new(l1.clone()));
        let r = LayoutReplication::new(rx, ConsistencyMode::Consistent);
        let h = Hash::random();
        let mut all = r.write_sets(&h);
        assert_eq!(all.len(), 1, "one live version");
        all[0].sort();
        assert_eq!(all[0], vec![n(1), n(2), n(3)]);
        assert_eq!(r.read_nodes(&h).len(), 3);
        assert_eq!(r.quorums(), Quorums { write: 2, read: 2 });

        // Replace node 3 by node 4: until the new owners are synced, writes go to both
        // versions' nodes and reads stay on the old owners.
        let mut l2 = l1.clone();
        l2.stage(LayoutChange::Role {
            node: n(3),
            role: None,
        })
        .unwrap();
        stage(&mut l2, &[n(4)]);
        let (l2, _) = l2.apply(2).unwrap();
        tx.send(Arc::new(l2.clone())).unwrap();
        let p = partition_of(&h);
        let sets = r.write_sets(&h);
        assert_eq!(sets.len(), 2, "old and new version are live");
        assert_eq!(sets[0], l1.nodes_of(p));
        assert_eq!(sets[1], l2.nodes_of(p));
        assert!(sets[1].contains(&n(4)) && !sets[1].contains(&n(3)));
        assert_eq!(
            r.read_nodes(&h),
            l1.nodes_of(p),
            "reads on the synced version"
        );

        // Once synced, the old version retires.
        let mut l3 = l2;
        l3.retire_up_to(2).unwrap();
        tx.send(Arc::new(l3.clone())).unwrap();
        assert_eq!(r.write_sets(&h), vec![l3.nodes_of(p).to_vec()]);
        assert_eq!(r.read_nodes(&h), l3.nodes_of(p));
    }

    #[test]
    fn no_layout_means_nowhere_to_write() {
        let (_tx, rx) = watch::channel(Arc::new(ClusterLayout::new(3)));
        let r = LayoutReplication::new(rx, ConsistencyMode::Consistent);
        let h = Hash::random();
        assert!(r.write_sets(&h).is_empty());
        assert!(r.read_nodes(&h).is_empty());
        assert_eq!(
            SetsTracker::new(r.write_sets(&h), 2).progress(),
            SetsProgress::Failed
        );
    }

    #[test]
    fn full_replication_falls_back_to_a_quorum_that_meets_every_write() {
        let me = n(4); // no role: stores nothing, reads locally nothing
        let (tx, rx) = watch::channel(Arc::new(ClusterLayout::new(3)));
        let r = FullReplication::new(rx, me, ConsistencyMode::Consistent);
        let h = Hash::random();
        assert_eq!(
            r.quorum_read(&h).0,
            Vec::<NodeId>::new(),
            "no layout, no nodes"
        );

        let l1 = layout_of(&[n(1), n(2), n(3)]);
        tx.send(Arc::new(l1.clone())).unwrap();
        assert_eq!(r.read_nodes(&h), vec![me], "the hot path stays local");
        let (nodes, quorum) = r.quorum_read(&h);
        assert_eq!(nodes, vec![n(1), n(2), n(3)]);
        assert_eq!(r.quorums().write, 2);
        assert_eq!(
            quorum, 2,
            "3 nodes, writes on 2: any 2 include one that has it"
        );
        assert!(quorum + r.quorums().write > nodes.len());

        // Five nodes, rf 3 (one fault tolerated): writes need 4, a read 2.
        let (_tx5, rx5) = watch::channel(Arc::new(layout_of(&[n(1), n(2), n(3), n(5), n(6)])));
        let r5 = FullReplication::new(rx5, me, ConsistencyMode::Consistent);
        let (nodes, quorum) = r5.quorum_read(&h);
        assert_eq!((nodes.len(), r5.quorums().write, quorum), (5, 4, 2));

        // During a transition the fallback reads the oldest version, which holds every
        // acknowledged write.
        let mut l2 = l1.clone();
        stage(&mut l2, &[n(7)]);
        let (l2, _) = l2.apply(2).unwrap();
        tx.send(Arc::new(l2)).unwrap();
        let (nodes, quorum) = r.quorum_read(&h);
        assert_eq!(nodes, vec![n(1), n(2), n(3)]);
        assert_eq!(quorum, 2);

        // Weaker modes read one node, as they do for partitioned tables.
        let (_tx1, rx1) = watch::channel(Arc::new(l1));
        let degraded = FullReplication::new(rx1, me, ConsistencyMode::Degraded);
        assert_eq!(degraded.quorum_read(&h).1, 1);
    }

    #[test]
    fn partitioned_tables_fall_back_to_their_own_read_quorum() {
        let (_tx, rx) = watch::channel(Arc::new(layout_of(&[n(1), n(2), n(3)])));
        let r = LayoutReplication::new(rx, ConsistencyMode::Consistent);
        let h = Hash::random();
        assert_eq!(r.quorum_read(&h), (r.read_nodes(&h), 2));
    }

    #[test]
    fn grouping_sends_one_batch_per_destination() {
        let l = layout_of(&[n(1), n(2), n(3)]);
        let (_tx, rx) = watch::channel(Arc::new(l));
        let r = LayoutReplication::new(rx, ConsistencyMode::Consistent);
        let items: Vec<(Hash, u32)> = (0..50u32)
            .map(|i| (Hash::hash_of(&i.to_le_bytes()), i))
            .collect();
        let groups = group_by_write_sets(&r, items.clone());
        let total: usize = groups.values().map(Vec::len).sum();
        assert_eq!(total, 50, "every item in exactly one group");
        for (sets, group) in &groups {
            for i in group {
                let (h, _) = items[usize::try_from(*i).unwrap()];
                assert_eq!(&r.write_sets(&h), sets);
            }
        }
        let local = group_by_write_sets(&LocalOnly { node: n(1) }, items);
        assert_eq!(local.len(), 1, "one node: one batch");
    }

    #[test]
    fn tracker_needs_a_quorum_in_every_set() {
        // A transition from {1,2,3} to {1,2,4}: node 1 and 2 count in both sets.
        let sets = vec![vec![n(1), n(2), n(3)], vec![n(1), n(2), n(4)]];
        let mut t = SetsTracker::new(sets.clone(), 2);
        assert_eq!(
            t.nodes(),
            vec![n(1), n(2), n(3), n(4)],
            "each node asked once"
        );
        assert_eq!(t.record(n(1), true), SetsProgress::Pending);
        assert_eq!(t.record(n(2), true), SetsProgress::Reached);

        // Node 1 down: the old set reaches 2 with {2,3}, the new one must wait for 4.
        let mut t = SetsTracker::new(sets.clone(), 2);
        assert_eq!(t.record(n(1), false), SetsProgress::Pending);
        assert_eq!(t.record(n(2), true), SetsProgress::Pending);
        assert_eq!(
            t.record(n(3), true),
            SetsProgress::Pending,
            "new set has 1 of 2"
        );
        assert_eq!(t.record(n(4), true), SetsProgress::Reached);
        assert_eq!(t.counts(), (2, 2));

        // Losing two nodes of the new set fails the write even if the old set is fine.
        let mut t = SetsTracker::new(sets, 2);
        assert_eq!(t.record(n(3), true), SetsProgress::Pending);
        assert_eq!(t.record(n(2), false), SetsProgress::Pending);
        assert_eq!(t.record(n(4), false), SetsProgress::Failed);
        assert_eq!(t.record(n(1), true), SetsProgress::Failed, "stays failed");
        assert_eq!(t.counts(), (2, 1));
    }

    #[test]
    fn tracker_edge_cases() {
        let mut t = SetsTracker::new(vec![vec![n(1), n(1), n(2)]], 2);
        assert_eq!(t.nodes(), vec![n(1), n(2)], "duplicates count once");
        assert_eq!(t.record(n(1), true), SetsProgress::Pending);
        assert_eq!(
            t.record(n(1), true),
            SetsProgress::Pending,
            "same node twice"
        );
        assert_eq!(t.record(n(2), true), SetsProgress::Reached);
        assert_eq!(
            SetsTracker::new(vec![vec![n(1)]], 2).progress(),
            SetsProgress::Failed,
            "quorum larger than the set"
        );
        assert_eq!(
            SetsTracker::new(vec![vec![n(1)]], 0).progress(),
            SetsProgress::Reached
        );
        let mut t = SetsTracker::new(vec![vec![n(1), n(2), n(3)]], 2);
        t.record(n(1), false);
        assert_eq!(
            t.record(n(1), true),
            SetsProgress::Pending,
            "first result sticks"
        );
        assert_eq!(t.record(n(2), false), SetsProgress::Failed);
    }
}
