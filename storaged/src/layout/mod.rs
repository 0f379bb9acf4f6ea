//! The cluster layout: which nodes store which partition.
//!
//! Every key (a table entry's partition key hash, a chunk's blake3 hash) falls in one of
//! [`N_PARTITIONS`] partitions ([`partition_of`]); the layout maps each partition to
//! `replication_factor` storage nodes spread over as many zones as possible. It is:
//!
//! - **computed** by [`assign::assign`]: a pure function of the node roles, the parameters and
//!   the previous assignment, that maximises usable capacity, then moves as few replicas as
//!   possible, then balances nodes in proportion to their capacity (see its docs);
//! - **versioned** by [`ClusterLayout`]: an admin stages role changes, previews them, and
//!   applies them with the expected next version number; the layout is a CRDT
//!   ([`crate::util::crdt::Crdt`]) so that nodes can gossip it and converge;
//! - **transitional**: after a change, the old and the new versions both stay live until the
//!   new owners are synced ([`ClusterLayout::retire_up_to`]); writes go to every live version
//!   ([`ClusterLayout::write_sets`]), reads to the oldest live one, which is always synced
//!   ([`ClusterLayout::read_nodes`]).
//!
//! Apart from [`manager`], which keeps the layout on disk and gossips it, the module is sans-IO: no sockets, no disk, no clock except the timestamps of staged
//! changes (last-writer-wins between admins), so every decision is unit- and property-tested.

pub mod assign;
mod flow;
pub mod locks;
pub mod manager;
pub mod trackers;
pub mod version;

pub use assign::{AssignParams, Assignment, assign};
pub use locks::{WriteLock, WriteLocks};
pub use trackers::Trackers;
pub use version::{ClusterLayout, LayoutChange, LayoutVersion, Preview, Staging};

use serde::{Deserialize, Serialize};

use crate::util::id::Id32;

/// A node's identity (derived from its public key), the key of every layout map.
pub type NodeId = Id32;

/// Bits of a hash that select its partition.
pub const PARTITION_BITS: u32 = 8;

/// Number of partitions: fixed, so that a key's partition never changes; only the nodes of a
/// partition do.
pub const N_PARTITIONS: usize = 1 << PARTITION_BITS;

/// The partition of a hash: its top [`PARTITION_BITS`] bits. blake3 digests and random ids
/// are uniform, so partitions are equally loaded.
#[must_use]
pub fn partition_of(hash: &Id32) -> u16 {
    let top = u16::from_be_bytes([hash.0[0], hash.0[1]]);
    top >> (16 - PARTITION_BITS)
}

/// What a node does in the cluster: where it is, and how much it stores.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRole {
    /// Zone name (a site, a city; the Kubernetes topology label value). Replicas of a
    /// partition are spread over distinct zones so that a zone can go dark.
    pub zone: String,
    /// Bytes offered for data; `None` makes a gateway, which serves requests and stores
    /// nothing. `Some(0)` is refused: it is almost always a typo for a gateway.
    pub capacity: Option<u64>,
    /// Free-form labels for operators (disk type, rack); ignored by the assignment.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl NodeRole {
    /// A storage role.
    #[must_use]
    pub fn storage(zone: impl Into<String>, capacity: u64) -> Self {
        Self {
            zone: zone.into(),
            capacity: Some(capacity),
            tags: Vec::new(),
        }
    }

    /// A gateway role: in the layout (so it knows where data lives) but storing nothing.
    #[must_use]
    pub fn gateway(zone: impl Into<String>) -> Self {
        Self {
            zone: zone.into(),
            capacity: None,
            tags: Vec::new(),
        }
    }
}

/// The admin API carries roles in its own wire type; the two convert losslessly.
impl From<storaged_api::NodeRole> for NodeRole {
    fn from(r: storaged_api::NodeRole) -> Self {
        Self {
            zone: r.zone,
            capacity: r.capacity,
            tags: r.tags,
        }
    }
}

/// The admin API carries roles in its own wire type; the two convert losslessly.
impl From<NodeRole> for storaged_api::NodeRole {
    fn from(r: NodeRole) -> Self {
        Self {
            zone: r.zone,
            capacity: r.capacity,
            tags: r.tags,
        }
    }
}

/// Why a layout cannot be computed or changed; every variant names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The replication factor is zero.
    #[error("replication factor {0} is invalid: it must be at least 1")]
    InvalidReplicationFactor(usize),
    /// Fewer storage nodes than copies of each partition.
    #[error(
        "not enough storage nodes: replication factor {needed} needs {needed} nodes with a \
         capacity, the layout has {have}"
    )]
    NotEnoughStorageNodes {
        /// The replication factor.
        needed: usize,
        /// Storage nodes (gateways excluded).
        have: usize,
    },
    /// A role with capacity 0 (use no capacity for a gateway).
    #[error("node {0} has capacity 0; give it a capacity, or no capacity to make it a gateway")]
    ZeroCapacity(NodeId),
    /// The requested zone redundancy cannot be met.
    #[error(
        "zone redundancy {requested} is impossible: it must be between 1 and the replication \
         factor ({replication_factor}) and at most the number of zones with storage ({zones})"
    )]
    ZoneRedundancyImpossible {
        /// Zones each partition must span.
        requested: usize,
        /// Zones that have storage nodes.
        zones: usize,
        /// The replication factor.
        replication_factor: usize,
    },
    /// Capacities so small that not even one byte per partition fits.
    #[error("capacities are too small to store {N_PARTITIONS} partitions with this replication")]
    CapacityTooSmall,
    /// `apply` / `revert` called with a version that is not the one expected, so a second
    /// admin acting on a stale view cannot overwrite the first one's change.
    #[error("layout version mismatch: the request says {given}, expected {expected}")]
    VersionMismatch {
        /// Version in the request.
        given: u64,
        /// Version the request must name.
        expected: u64,
    },
    /// `retire_up_to` named a version that does not exist yet.
    #[error("layout version {given} is newer than the current version {current}")]
    UnknownVersion {
        /// Version in the request.
        given: u64,
        /// The newest applied version.
        current: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_the_first_byte() {
        let mut id = Id32([0u8; 32]);
        assert_eq!(partition_of(&id), 0);
        id.0[0] = 0xab;
        id.0[1] = 0xff;
        assert_eq!(partition_of(&id), 0xab);
        id.0[0] = 0xff;
        assert_eq!(usize::from(partition_of(&id)), N_PARTITIONS - 1);
    }

    #[test]
    fn roles_convert_to_and_from_the_api_type() {
        let role = NodeRole {
            zone: "paris".into(),
            capacity: Some(7),
            tags: vec!["ssd".into()],
        };
        let api: storaged_api::NodeRole = role.clone().into();
        assert_eq!(NodeRole::from(api), role);
    }
}
