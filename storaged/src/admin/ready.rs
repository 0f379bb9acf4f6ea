//! `/ready`: whether this node can serve S3 requests now, as a readiness probe needs.
//!
//! Kubernetes sends S3 traffic only to ready pods (the S3 Service), while the peers Service
//! publishes pods that are not ready yet (they must find each other first) and the liveness
//! and startup probes use `/health`: a pod that is not ready keeps running and is not
//! restarted. So `/ready` answers 200 only when this node can do its job:
//!
//! - a layout is applied and gives this node a role in its current version (storage or
//!   gateway): a node without one is not a member (it would serve as a gateway, reading keys
//!   and buckets from their owners, but nobody asked it to);
//! - a quorum is reachable: for a storage node, in each of its partitions every write set has
//!   a write quorum, and the read nodes a read quorum, of nodes it sees up; a gateway stores no
//!   partition and serves them all, so it needs that for every partition.
//!
//! [`readiness`] decides from the layout, the nodes seen up and the quorums, without I/O.

use std::collections::HashSet;
use std::fmt;

use crate::layout::{ClusterLayout, N_PARTITIONS, NodeId};
use crate::table::Quorums;

/// Why a node is not ready, said in the probe's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// No layout has been applied yet.
    NoLayout,
    /// The current layout gives this node no role.
    NoRole,
    /// Some partitions this node serves lack a quorum of nodes seen up.
    NoQuorum {
        /// How many partitions lack one.
        partitions: usize,
        /// How many partitions this node serves.
        of: usize,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLayout => write!(f, "no cluster layout is applied yet"),
            Self::NoRole => write!(
                f,
                "this node has no role in the cluster layout (give it a storage or gateway role)"
            ),
            Self::NoQuorum { partitions, of } => write!(
                f,
                "{partitions} of the {of} partitions this node serves cannot reach a quorum of \
                 nodes that are up"
            ),
        }
    }
}

/// Whether node `me` is ready, given `layout`, the nodes it sees `up` (itself included or
/// not: it counts as up) and the table `quorums`.
///
/// # Errors
/// The first reason it is not, in the order a new cluster meets them.
pub fn readiness(
    layout: &ClusterLayout,
    me: NodeId,
    up: &HashSet<NodeId>,
    quorums: Quorums,
) -> Result<(), NotReady> {
    let current = layout.current();
    if !current.is_assigned() {
        return Err(NotReady::NoLayout);
    }
    let Some(role) = current.roles.get(&me) else {
        return Err(NotReady::NoRole);
    };
    let is_up = |n: &NodeId| *n == me || up.contains(n);
    let count_up = |nodes: &[NodeId]| nodes.iter().filter(|n| is_up(n)).count();
    let gateway = role.capacity.is_none();
    let mut served = 0;
    let mut lacking = 0;
    for p in (0..N_PARTITIONS).filter_map(|p| u16::try_from(p).ok()) {
        let sets = layout.write_sets(p);
        if !gateway && !sets.iter().any(|s| s.contains(&me)) {
            continue;
        }
        served += 1;
        let writable = sets.iter().all(|s| count_up(s) >= quorums.write);
        let readable = count_up(layout.read_nodes(p)) >= quorums.read;
        if !(writable && readable) {
            lacking += 1;
        }
    }
    if lacking > 0 {
        return Err(NotReady::NoQuorum {
            partitions: lacking,
            of: served,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use crate::config::ConsistencyMode;
    use crate::layout::{LayoutChange, NodeRole};

    fn n(i: u8) -> NodeId {
        NodeId::from([i; 32])
    }

    fn layout(storage: &[NodeId], gateways: &[NodeId], rf: usize) -> ClusterLayout {
        let mut l = ClusterLayout::new(rf);
        for (i, node) in storage.iter().enumerate() {
            let role = NodeRole::storage(format!("z{i}"), 1 << 30);
            (l.stage(LayoutChange::Role {
                node: *node,
                role: Some(role),
            }))
            .unwrap();
        }
        for node in gateways {
            (l.stage(LayoutChange::Role {
                node: *node,
                role: Some(NodeRole::gateway("z0")),
            }))
            .unwrap();
        }
        l.apply(1).unwrap().0
    }

    fn up(nodes: &[NodeId]) -> HashSet<NodeId> {
        nodes.iter().copied().collect()
    }

    const Q3: Quorums = Quorums { write: 2, read: 2 };

    #[test]
    fn a_lone_node_without_a_layout_is_not_ready() {
        let l = ClusterLayout::new(3);
        assert_eq!(readiness(&l, n(1), &up(&[]), Q3), Err(NotReady::NoLayout));
        let why = NotReady::NoLayout.to_string();
        assert!(why.contains("layout"), "{why}");
    }

    #[test]
    fn a_single_node_cluster_is_ready_alone() {
        let l = layout(&[n(1)], &[], 1);
        let q = Quorums::new(1, ConsistencyMode::Consistent);
        assert_eq!(readiness(&l, n(1), &up(&[]), q), Ok(()));
    }

    #[test]
    fn a_node_without_a_role_is_not_ready() {
        let l = layout(&[n(1), n(2), n(3)], &[], 3);
        let all = up(&[n(1), n(2), n(3), n(4)]);
        assert_eq!(readiness(&l, n(4), &all, Q3), Err(NotReady::NoRole));
        assert_eq!(readiness(&l, n(1), &all, Q3), Ok(()));
    }

    #[test]
    fn storage_nodes_need_a_quorum_of_their_partitions() {
        let l = layout(&[n(1), n(2), n(3)], &[], 3);
        // One peer down: every partition still has 2 of 3.
        assert_eq!(readiness(&l, n(1), &up(&[n(1), n(2)]), Q3), Ok(()));
        // Alone: no partition has a quorum.
        assert_eq!(
            readiness(&l, n(1), &up(&[]), Q3),
            Err(NotReady::NoQuorum {
                partitions: N_PARTITIONS,
                of: N_PARTITIONS
            })
        );
        // Degraded reads need one node, writes still a majority.
        let degraded = Quorums::new(3, ConsistencyMode::Degraded);
        assert!(readiness(&l, n(1), &up(&[]), degraded).is_err());
        let dangerous = Quorums::new(3, ConsistencyMode::Dangerous);
        assert_eq!(readiness(&l, n(1), &up(&[]), dangerous), Ok(()));
    }

    #[test]
    fn a_storage_node_counts_only_its_own_partitions() {
        // Four nodes, rf 3: node 1 holds some partitions; with nodes 2 and 3 down, only
        // partitions on {1, 2, 3} or with two of {1, 4} lose their quorum.
        let l = layout(&[n(1), n(2), n(3), n(4)], &[], 3);
        let mine = l.current().partitions_of(&n(1)).len();
        assert!(mine < N_PARTITIONS, "node 1 holds a part only");
        match readiness(&l, n(1), &up(&[n(4)]), Q3) {
            Err(NotReady::NoQuorum { of, .. }) => assert_eq!(of, mine),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_gateway_needs_a_quorum_of_every_partition() {
        let l = layout(&[n(1), n(2), n(3)], &[n(9)], 3);
        assert_eq!(readiness(&l, n(9), &up(&[n(1), n(2)]), Q3), Ok(()));
        assert_eq!(
            readiness(&l, n(9), &up(&[n(1)]), Q3),
            Err(NotReady::NoQuorum {
                partitions: N_PARTITIONS,
                of: N_PARTITIONS
            })
        );
    }
}
