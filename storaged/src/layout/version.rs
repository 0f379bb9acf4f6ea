//! The versioned cluster layout: staged changes, applied versions, transitions, as a CRDT.
//!
//! An admin [`stage`](ClusterLayout::stage)s role changes, [`preview`](ClusterLayout::preview)s
//! them, then [`apply`](ClusterLayout::apply)s them naming the next version number (so that
//! two admins acting on the same view cannot both apply), or
//! [`revert`](ClusterLayout::revert)s them naming the current one.
//!
//! Applying does not drop the previous version: data still lives on its nodes until the new
//! owners have copied it. Every version from the newest *synced* one to the current one is
//! live: writes go to the nodes of all of them ([`ClusterLayout::write_sets`]), reads to the
//! oldest, which holds everything acknowledged ([`ClusterLayout::read_nodes`]). The sync
//! machinery calls [`ClusterLayout::retire_up_to`] once a version's owners hold their data.
//!
//! # Merge
//!
//! Nodes gossip layouts and [`Crdt::merge`] them. The layout is a product of three lattices,
//! so the merge is commutative, associative and idempotent (property-tested):
//! - the live versions: the union by version number (for one number, two different contents
//!   can only come from two admins applying concurrently; the greater one wins everywhere),
//!   pruned below the sync marker;
//! - the sync marker: the maximum;
//! - the staging area: the one based on the newest version wins, ties on the revert epoch,
//!   then last-writer-wins per node. Changes staged on an older version are dropped when a
//!   newer version arrives, as they were staged against a layout that no longer exists.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use super::assign::{AssignParams, assign, partitions_moved, replicas_moved};
use super::trackers::{self, Trackers};
use super::{LayoutError, N_PARTITIONS, NodeId, NodeRole};
use crate::util::crdt::{Crdt, Lww, LwwMap};

/// One applied version of the layout: the roles and the assignment computed from them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayoutVersion {
    /// Version number; 0 is the empty layout of a new cluster.
    pub version: u64,
    /// Copies of each partition (fixed when the cluster is created).
    pub replication_factor: usize,
    /// Zones each partition must span; `None` means as many as possible.
    pub zone_redundancy: Option<usize>,
    /// Roles of the nodes in this version (gateways included).
    pub roles: BTreeMap<NodeId, NodeRole>,
    /// Bytes each partition may hold on each of its nodes.
    pub partition_size: u64,
    /// `partitions[p]`: the nodes of partition `p`; empty in version 0.
    pub partitions: Vec<Vec<NodeId>>,
}

impl LayoutVersion {
    /// Version 0: no node has a role, no partition has a node.
    fn empty(replication_factor: usize) -> Self {
        Self {
            version: 0,
            replication_factor,
            zone_redundancy: None,
            roles: BTreeMap::new(),
            partition_size: 0,
            partitions: Vec::new(),
        }
    }

    /// The nodes storing `partition` (none before the first layout is applied).
    #[must_use]
    pub fn nodes_of(&self, partition: u16) -> &[NodeId] {
        self.partitions
            .get(usize::from(partition))
            .map_or(&[], Vec::as_slice)
    }

    /// The partitions `node` stores, so that it knows what to sync and what to drop.
    #[must_use]
    pub fn partitions_of(&self, node: &NodeId) -> Vec<u16> {
        (0..N_PARTITIONS)
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|&p| self.nodes_of(p).contains(node))
            .collect()
    }

    /// Bytes of data the cluster can hold in this version.
    #[must_use]
    pub fn usable_capacity(&self) -> u64 {
        self.partition_size.saturating_mul(N_PARTITIONS as u64)
    }

    /// Whether any partition has nodes (false only for version 0).
    #[must_use]
    pub fn is_assigned(&self) -> bool {
        !self.partitions.is_empty()
    }
}

/// A change an admin stages for the next version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutChange {
    /// Give `node` a role, or remove it from the layout with `None`.
    Role {
        /// The node.
        node: NodeId,
        /// Its new role; `None` removes it.
        role: Option<NodeRole>,
    },
    /// Change the zone redundancy (`None`: as many zones as possible).
    ZoneRedundancy(Option<usize>),
}

/// Changes staged on top of a version, merged between admins last-writer-wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    /// The version these changes apply to.
    pub base_version: u64,
    /// Bumped by each revert, so that a revert wins over the changes it discarded.
    pub epoch: u64,
    /// Per node: the staged role (`None`: remove the node).
    pub roles: LwwMap<NodeId, Option<NodeRole>>,
    /// A staged zone redundancy, if any.
    pub zone_redundancy: Option<Lww<Option<usize>>>,
}

impl Staging {
    /// Nothing staged on `base_version`, in `epoch`.
    fn new(base_version: u64, epoch: u64) -> Self {
        Self {
            base_version,
            epoch,
            roles: LwwMap::default(),
            zone_redundancy: None,
        }
    }

    /// Whether nothing is staged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.roles.0.is_empty() && self.zone_redundancy.is_none()
    }
}

impl Crdt for Staging {
    fn merge(&mut self, other: &Self) {
        let (mine, theirs) = (
            (self.base_version, self.epoch),
            (other.base_version, other.epoch),
        );
        if theirs > mine {
            *self = other.clone();
        } else if theirs == mine {
            self.roles.merge(&other.roles);
            match (&mut self.zone_redundancy, &other.zone_redundancy) {
                (Some(a), Some(b)) => a.merge(b),
                (a @ None, Some(b)) => *a = Some(b.clone()),
                (_, None) => {}
            }
        }
    }
}

/// What applying the staged changes would do, for `layout show` and the admin's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The version that applying would create.
    pub version: LayoutVersion,
    /// Partitions whose set of nodes changes.
    pub partitions_moved: usize,
    /// Replica copies to transfer (a partition that changes two nodes counts twice).
    pub replicas_moved: usize,
    /// A human-readable account, line by line.
    pub messages: Vec<String>,
}

/// The cluster layout as every node holds and gossips it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLayout {
    /// The newest applied version.
    current: LayoutVersion,
    /// Older versions still live (their data not yet synced to the newer owners), oldest
    /// first. Invariant: every version number here is `>= min(synced, current.version)` and
    /// `< current.version`.
    history: Vec<LayoutVersion>,
    /// The newest version known to be fully synced: older ones are retired.
    synced: u64,
    /// Changes staged for the next version.
    staging: Staging,
    /// Each node's progress through the transition barrier (absent in layouts written
    /// before the barrier existed: every node then acks afresh).
    #[serde(default)]
    trackers: Trackers,
}

impl ClusterLayout {
    /// The layout of a new cluster: version 0, no roles.
    #[must_use]
    pub fn new(replication_factor: usize) -> Self {
        Self {
            current: LayoutVersion::empty(replication_factor),
            history: Vec::new(),
            synced: 0,
            staging: Staging::new(0, 0),
            trackers: Trackers::default(),
        }
    }

    /// The newest applied version number.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.current.version
    }

    /// The newest applied version.
    #[must_use]
    pub fn current(&self) -> &LayoutVersion {
        &self.current
    }

    /// Every live version, oldest first; the last one is [`Self::current`].
    pub fn versions(&self) -> impl Iterator<Item = &LayoutVersion> {
        self.history.iter().chain(std::iter::once(&self.current))
    }

    /// The changes staged for the next version.
    #[must_use]
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Roles in the newest version.
    #[must_use]
    pub fn roles(&self) -> &BTreeMap<NodeId, NodeRole> {
        &self.current.roles
    }

    /// The nodes of `partition` in the newest version: where its data is going.
    #[must_use]
    pub fn nodes_of(&self, partition: u16) -> &[NodeId] {
        self.current.nodes_of(partition)
    }

    /// The sets of nodes a write to `partition` must reach a quorum of: one per live version
    /// (identical consecutive sets once), so that no version misses an acknowledged write.
    #[must_use]
    pub fn write_sets(&self, partition: u16) -> Vec<&[NodeId]> {
        let mut sets: Vec<&[NodeId]> = Vec::new();
        for v in self.versions().filter(|v| v.is_assigned()) {
            let nodes = v.nodes_of(partition);
            if sets.last() != Some(&nodes) {
                sets.push(nodes);
            }
        }
        sets
    }

    /// The nodes to read `partition` from: those of [`Self::read_version`], which hold
    /// every acknowledged write (newer ones may still be copying).
    #[must_use]
    pub fn read_nodes(&self, partition: u16) -> &[NodeId] {
        self.read_version().nodes_of(partition)
    }

    /// The version reads are served from: the current one once every one of its storage
    /// nodes synced it ([`Self::current_synced`]), else the oldest live one (synced before
    /// the versions older than it retired).
    #[must_use]
    pub fn read_version(&self) -> &LayoutVersion {
        if self.current.is_assigned() && self.current_synced() {
            return &self.current;
        }
        self.versions()
            .find(|v| v.is_assigned())
            .unwrap_or(&self.current)
    }

    /// The transition barrier's state, as gossiped.
    #[must_use]
    pub fn trackers(&self) -> &Trackers {
        &self.trackers
    }

    /// Records that `node` coordinates writes with every live version `>= v` (its older
    /// writes drained); `true` if that is news.
    pub fn record_ack(&mut self, node: NodeId, v: u64) -> bool {
        let v = v.min(self.version());
        trackers::set_max(&mut self.trackers.ack, node, v)
    }

    /// Records that `node` synced its partitions of version `v`; `true` if that is news.
    pub fn record_sync(&mut self, node: NodeId, v: u64) -> bool {
        let v = v.min(self.version());
        trackers::set_max(&mut self.trackers.sync, node, v)
    }

    /// Records that `node` reads from version `v` on; `true` if that is news.
    pub fn record_sync_ack(&mut self, node: NodeId, v: u64) -> bool {
        let v = v.min(self.version());
        trackers::set_max(&mut self.trackers.sync_ack, node, v)
    }

    /// Whether an older version is still live (a transition is under way).
    #[must_use]
    pub fn in_transition(&self) -> bool {
        self.history.iter().any(LayoutVersion::is_assigned)
    }

    /// The nodes the barrier waits for: every node with a role (storage or gateway) in a
    /// live version, since any of them may coordinate writes, whether it is up or down
    /// (a paused node looks down and still has writes in flight), except the nodes that
    /// `is_down` says are down *and* that have no role in the current version: a node that
    /// is being removed and is gone must not block the transition forever. Such a node,
    /// when it comes back, finds it owns nothing and drops its copy; receivers refuse what
    /// it still pushes (see `table::sync_rpc`).
    #[must_use]
    pub fn barrier_nodes(&self, is_down: impl Fn(&NodeId) -> bool) -> BTreeSet<NodeId> {
        self.versions()
            .flat_map(|v| v.roles.keys())
            .filter(|n| self.current.roles.contains_key(n) || !is_down(n))
            .copied()
            .collect()
    }

    /// The storage nodes of the current version: those that must sync it.
    #[must_use]
    pub fn current_storage_nodes(&self) -> BTreeSet<NodeId> {
        self.current.partitions.iter().flatten().copied().collect()
    }

    /// Whether every barrier node acked the current version: from then on every write
    /// anywhere reaches the current version's nodes, so their sync may start.
    #[must_use]
    pub fn acked_by_all(&self, is_down: impl Fn(&NodeId) -> bool) -> bool {
        let v = self.version();
        (self.barrier_nodes(is_down).iter()).all(|n| trackers::get(&self.trackers.ack, n) >= v)
    }

    /// Whether every storage node of the current version synced it (reads may use it).
    #[must_use]
    pub fn current_synced(&self) -> bool {
        let v = self.version();
        (self.current_storage_nodes().iter()).all(|n| trackers::get(&self.trackers.sync, n) >= v)
    }

    /// Whether the older versions may retire: the current one is synced and every barrier
    /// node saw it so (reads nowhere use an older version any more).
    #[must_use]
    pub fn may_retire(&self, is_down: impl Fn(&NodeId) -> bool) -> bool {
        let v = self.version();
        self.in_transition()
            && self.current_synced()
            && (self.barrier_nodes(is_down).iter())
                .all(|n| trackers::get(&self.trackers.sync_ack, n) >= v)
    }

    /// Stages a change for the next version.
    ///
    /// # Errors
    /// [`LayoutError::ZeroCapacity`] for a role of capacity 0,
    /// [`LayoutError::ZoneRedundancyImpossible`] for a zone redundancy of 0.
    pub fn stage(&mut self, change: LayoutChange) -> Result<(), LayoutError> {
        match change {
            LayoutChange::Role { node, role } => {
                if role.as_ref().is_some_and(|r| r.capacity == Some(0)) {
                    return Err(LayoutError::ZeroCapacity(node));
                }
                self.staging.roles.set(node, role);
            }
            LayoutChange::ZoneRedundancy(zr) => {
                if zr == Some(0) {
                    let zones: std::collections::BTreeSet<&str> = (self.current.roles.values())
                        .filter(|r| r.capacity.is_some())
                        .map(|r| r.zone.as_str())
                        .collect();
                    return Err(LayoutError::ZoneRedundancyImpossible {
                        requested: 0,
                        zones: zones.len(),
                        replication_factor: self.current.replication_factor,
                    });
                }
                let prev = self.staging.zone_redundancy.as_ref().map_or(0, |l| l.ts);
                let mut reg = Lww::new(prev, zr);
                reg.update(zr);
                self.staging.zone_redundancy = Some(reg);
            }
        }
        Ok(())
    }

    /// Discards the staged changes. `expected_version` must be the current version.
    ///
    /// # Errors
    /// [`LayoutError::VersionMismatch`].
    pub fn revert(&mut self, expected_version: u64) -> Result<(), LayoutError> {
        self.check_version(expected_version, self.version())?;
        self.staging = Staging::new(self.version(), self.staging.epoch + 1);
        Ok(())
    }

    /// The version that applying the staged changes would create, with what would move.
    ///
    /// # Errors
    /// Those of [`assign`]: the staged roles cannot make a valid layout.
    pub fn preview(&self) -> Result<Preview, LayoutError> {
        let mut roles = self.current.roles.clone();
        for (node, role) in self.staging.roles.iter() {
            match role {
                Some(r) => roles.insert(*node, r.clone()),
                None => roles.remove(node),
            };
        }
        let zone_redundancy = self
            .staging
            .zone_redundancy
            .as_ref()
            .map_or(self.current.zone_redundancy, |l| l.v);
        let params = AssignParams {
            replication_factor: self.current.replication_factor,
            zone_redundancy,
        };
        let old = &self.current.partitions;
        let a = assign(&roles, params, Some(old))?;
        let version = LayoutVersion {
            version: self.version() + 1,
            replication_factor: params.replication_factor,
            zone_redundancy,
            roles,
            partition_size: a.partition_size,
            partitions: a.partitions,
        };
        let partitions_moved = partitions_moved(old, &version.partitions);
        let replicas_moved = replicas_moved(old, &version.partitions);
        let messages = describe(
            &version,
            a.zone_redundancy,
            partitions_moved,
            replicas_moved,
        );
        Ok(Preview {
            version,
            partitions_moved,
            replicas_moved,
            messages,
        })
    }

    /// Applies the staged changes as a new version. `expected_version` must be the current
    /// version + 1. Returns the new layout and what the assignment did; `self` is unchanged.
    ///
    /// # Errors
    /// [`LayoutError::VersionMismatch`], and those of [`assign`].
    pub fn apply(&self, expected_version: u64) -> Result<(Self, Vec<String>), LayoutError> {
        self.check_version(expected_version, self.version() + 1)?;
        let preview = self.preview()?;
        let mut next = self.clone();
        let old = std::mem::replace(&mut next.current, preview.version);
        if !old.is_assigned() {
            // Version 0 held no data: the first real version has nothing to wait for.
            next.synced = next.current.version;
        }
        next.history.push(old);
        next.staging = Staging::new(next.current.version, 0);
        next.prune();
        Ok((next, preview.messages))
    }

    /// Records that the owners of `synced_version` hold all their data, which retires every
    /// older version: writes stop going to their nodes, reads move to the synced version.
    ///
    /// # Errors
    /// [`LayoutError::UnknownVersion`] if `synced_version` is newer than the current version.
    pub fn retire_up_to(&mut self, synced_version: u64) -> Result<(), LayoutError> {
        if synced_version > self.version() {
            return Err(LayoutError::UnknownVersion {
                given: synced_version,
                current: self.version(),
            });
        }
        self.synced = self.synced.max(synced_version);
        self.prune();
        Ok(())
    }

    /// Drops the versions older than the sync marker.
    fn prune(&mut self) {
        let keep_from = self.synced.min(self.current.version);
        self.history
            .retain(|v| v.version >= keep_from && v.version < self.current.version);
    }

    /// `given` must equal `expected`.
    fn check_version(&self, given: u64, expected: u64) -> Result<(), LayoutError> {
        if given == expected {
            Ok(())
        } else {
            Err(LayoutError::VersionMismatch { given, expected })
        }
    }
}

impl Crdt for ClusterLayout {
    fn merge(&mut self, other: &Self) {
        let mut all: BTreeMap<u64, LayoutVersion> = BTreeMap::new();
        let theirs = other.history.iter().chain(std::iter::once(&other.current));
        let mine = self.history.iter().chain(std::iter::once(&self.current));
        for v in mine.chain(theirs) {
            match all.entry(v.version) {
                Entry::Vacant(e) => {
                    e.insert(v.clone());
                }
                Entry::Occupied(mut e) => {
                    if v > e.get() {
                        e.insert(v.clone());
                    }
                }
            }
        }
        if let Some((_, current)) = all.pop_last() {
            self.current = current;
        }
        self.history = all.into_values().collect();
        self.synced = self.synced.max(other.synced);
        self.staging.merge(&other.staging);
        self.trackers.merge(&other.trackers);
        self.prune();
    }
}

/// The lines an admin reads after a preview or an apply.
fn describe(v: &LayoutVersion, zone_redundancy: usize, moved: usize, copies: usize) -> Vec<String> {
    let storage: Vec<(&NodeId, &NodeRole, u64)> = v
        .roles
        .iter()
        .filter_map(|(n, r)| r.capacity.map(|c| (n, r, c)))
        .collect();
    let zones: std::collections::BTreeSet<&str> =
        storage.iter().map(|(_, r, _)| r.zone.as_str()).collect();
    let offered: u64 = storage
        .iter()
        .map(|(_, _, c)| *c)
        .fold(0, u64::saturating_add);
    let mut counts: BTreeMap<&NodeId, u64> = BTreeMap::new();
    for n in v.partitions.iter().flatten() {
        *counts.entry(n).or_insert(0) += 1;
    }
    let mut lines = vec![
        format!(
            "version {}: {} storage nodes in {} zones, {} gateways; replication factor {}, \
             each partition in at least {zone_redundancy} zones",
            v.version,
            storage.len(),
            zones.len(),
            v.roles.len() - storage.len(),
            v.replication_factor,
        ),
        format!(
            "partition size {} bytes: usable capacity {} bytes of {} offered ({}%)",
            v.partition_size,
            v.usable_capacity(),
            offered,
            percent(
                v.usable_capacity()
                    .saturating_mul(v.replication_factor as u64),
                offered
            ),
        ),
        format!("{moved} partitions move ({copies} replica copies to transfer)"),
    ];
    for (node, role, capacity) in storage {
        let held = counts.get(node).copied().unwrap_or(0);
        let used = held.saturating_mul(v.partition_size);
        lines.push(format!(
            "node {node:?} zone {}: {held} partitions, {used} of {capacity} bytes ({}%)",
            role.zone,
            percent(used, capacity),
        ));
    }
    lines
}

/// `part / whole` in whole percent, 0 for an empty whole.
fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        u64::try_from(u128::from(part) * 100 / u128::from(whole)).unwrap_or(100)
    }
}

#[cfg(test)]
mod tests;
