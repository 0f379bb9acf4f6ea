//! How far each node has gone through the layout transitions: the state of the transition
//! barrier, gossiped inside the [`super::ClusterLayout`] so that every node can decide
//! alone, and the same way, when a transition may move on.
//!
//! Three max-registers per node, in the way of Garage's layout update trackers:
//!
//! - `ack[n] = v`: node `n` coordinates writes with every live version `>= v`, and every
//!   write it started with an older layout has finished (see [`super::locks`]);
//! - `sync[n] = v`: node `n`, a storage node of version `v`, holds every write acknowledged
//!   before the cluster acked `v` (its sync ran after that barrier);
//! - `sync_ack[n] = v`: node `n` has seen every storage node of `v` synced, and so reads
//!   from `v` (no longer from older versions).
//!
//! The transition to `v`: every node acks `v`, then the storage nodes of `v` sync, then
//! reads move to `v`, then once every node acknowledged that (`sync_ack`), the older
//! versions retire and their nodes may drop what they no longer own. Each register only
//! grows, so the trackers merge by taking the maximum per node: a CRDT.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::util::crdt::Crdt;

/// One max-register per node.
pub type Tracker = BTreeMap<NodeId, u64>;

/// The three trackers of the transition barrier (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trackers {
    /// Highest version each node coordinates writes with (older writes drained).
    #[serde(default)]
    pub ack: Tracker,
    /// Highest version each storage node synced its partitions for.
    #[serde(default)]
    pub sync: Tracker,
    /// Highest version each node saw synced by all its storage nodes (reads from it).
    #[serde(default)]
    pub sync_ack: Tracker,
}

/// Raises `node`'s register in `t` to `v`; `true` if it changed.
pub fn set_max(t: &mut Tracker, node: NodeId, v: u64) -> bool {
    let cur = t.entry(node).or_insert(0);
    if v > *cur {
        *cur = v;
        true
    } else {
        false
    }
}

/// `node`'s register (0 if it never reported).
#[must_use]
pub fn get(t: &Tracker, node: &NodeId) -> u64 {
    t.get(node).copied().unwrap_or(0)
}

fn merge_max(a: &mut Tracker, b: &Tracker) {
    for (n, v) in b {
        set_max(a, *n, *v);
    }
}

impl Crdt for Trackers {
    fn merge(&mut self, other: &Self) {
        merge_max(&mut self.ack, &other.ack);
        merge_max(&mut self.sync, &other.sync);
        merge_max(&mut self.sync_ack, &other.sync_ack);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::crdt::laws;
    use crate::util::id::Id32;
    use proptest::prelude::*;

    fn tracker() -> impl Strategy<Value = Tracker> {
        prop::collection::btree_map((0u8..4).prop_map(|i| Id32([i; 32])), 0u64..5, 0..4)
    }

    fn trackers() -> impl Strategy<Value = Trackers> {
        (tracker(), tracker(), tracker()).prop_map(|(ack, sync, sync_ack)| Trackers {
            ack,
            sync,
            sync_ack,
        })
    }

    proptest! {
        #[test]
        fn merge_is_a_crdt(a in trackers(), b in trackers(), c in trackers()) {
            laws::check(&a, &b, &c);
        }
    }

    #[test]
    fn registers_only_grow() {
        let mut t = Tracker::new();
        let n = Id32([1; 32]);
        assert_eq!(get(&t, &n), 0);
        assert!(set_max(&mut t, n, 3));
        assert!(!set_max(&mut t, n, 2));
        assert!(!set_max(&mut t, n, 3));
        assert_eq!(get(&t, &n), 3);
    }
}
