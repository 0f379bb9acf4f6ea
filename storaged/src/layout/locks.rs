//! [`WriteLocks`]: which layout versions this node's in-flight writes were coordinated
//! with, so that it acknowledges a new version (`ack` in [`super::trackers`]) only once
//! every write that used an older one has finished.
//!
//! A writer takes a [`WriteLock`] *before* it reads the write sets, which records the
//! version of the layout published at that moment; the write sets it then reads come from
//! that version or a newer one. The layout manager computes this node's ack as the oldest
//! version still locked (or the current one), under the same mutex, after it published a
//! new layout: so either the writer registered first and holds the ack back, or it read
//! the new layout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, watch};

use super::ClusterLayout;

/// In-flight writes per layout version. Shared by the tables and the layout manager.
#[derive(Debug, Default)]
pub struct WriteLocks {
    counts: Mutex<BTreeMap<u64, usize>>,
    /// Woken when the last write of a version finishes (the ack may move up).
    released: Notify,
}

/// One write in flight, coordinated with `version` or newer; released on drop.
#[derive(Debug)]
pub struct WriteLock {
    locks: Arc<WriteLocks>,
    version: u64,
}

impl WriteLocks {
    /// Registers a write coordinated with the layout published on `layout` now.
    #[must_use]
    pub fn lock(self: &Arc<Self>, layout: &watch::Receiver<Arc<ClusterLayout>>) -> WriteLock {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let version = layout.borrow().version();
        *counts.entry(version).or_insert(0) += 1;
        WriteLock {
            locks: Arc::clone(self),
            version,
        }
    }

    /// The version this node may acknowledge given `layout` (its current layout): the
    /// oldest version an in-flight write was coordinated with, or the current one.
    #[must_use]
    pub fn ackable(&self, layout: &ClusterLayout) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .keys()
            .next()
            .map_or(layout.version(), |&oldest| oldest.min(layout.version()))
    }

    /// Resolves when some version's last in-flight write finished.
    pub async fn released(&self) {
        self.released.notified().await;
    }
}

impl WriteLock {
    /// The layout version this write was coordinated with (at least).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let mut counts = self
            .locks
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = match counts.get_mut(&self.version) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                counts.remove(&self.version);
                true
            }
        };
        drop(counts);
        if last {
            self.locks.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{LayoutChange, NodeRole};
    use crate::util::id::Id32;

    fn layout(version: u64) -> ClusterLayout {
        let mut l = ClusterLayout::new(1);
        for v in 1..=version {
            l.stage(LayoutChange::Role {
                node: Id32([1; 32]),
                role: Some(NodeRole::storage("z", 1 << 30 | v)),
            })
            .unwrap_or_else(|e| panic!("{e}"));
            l = l.apply(v).unwrap_or_else(|e| panic!("{e}")).0;
        }
        l
    }

    #[test]
    fn the_ack_waits_for_writes_of_older_versions() {
        let locks = Arc::new(WriteLocks::default());
        let (tx, rx) = watch::channel(Arc::new(layout(1)));
        let w1 = locks.lock(&rx);
        assert_eq!(w1.version(), 1);
        let l2 = Arc::new(layout(2));
        tx.send_replace(Arc::clone(&l2));
        // A write that started with version 1 still runs: this node cannot ack 2.
        assert_eq!(locks.ackable(&l2), 1);
        let w2 = locks.lock(&rx);
        assert_eq!(w2.version(), 2);
        assert_eq!(locks.ackable(&l2), 1);
        drop(w1);
        assert_eq!(locks.ackable(&l2), 2, "only writes with version 2 are left");
        drop(w2);
        assert_eq!(locks.ackable(&l2), 2);
    }
}
