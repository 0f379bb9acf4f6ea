//! A node rebuilding its metadata from its peers after its store was lost.
//!
//! A node that starts with a new, empty store while it kept its identity (its `node_key`:
//! the damaged store was set aside by `storaged repair`, or deleted) still owns its
//! partitions in the layout but holds none of their entries, so it must not answer for
//! them: a read quorum counting its empty answer could miss an acknowledged write that it
//! was one of the replicas of. Such a store is marked *rebuilding* (in the store itself, so
//! that a restart resumes the rebuild). While it is:
//!
//! - this node's table service refuses reads and sync digests, so that peers' quorums and
//!   anti-entropy use the other replicas; it still stores writes;
//! - its own reads of fully replicated tables ask a quorum instead of its local copy;
//! - a sync does not count this node as a replica that holds every acknowledged write;
//! - the rebuild worker (`server::cluster`) syncs every partition it holds from its peers,
//!   then [`Db::finish_rebuild`] clears the mark.

use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, TableDefinition};

use super::Db;
use crate::error::Result;

/// Per-node flags: name → value.
const NODE_STATE: TableDefinition<'static, &'static str, u64> = TableDefinition::new("node_state");

/// Set (to 1) while the node's entries are being rebuilt from its peers.
const REBUILD_PENDING: &str = "rebuild_pending";

/// What a refused read says.
pub const REBUILDING: &str =
    "this node is rebuilding its metadata from its peers and answers no reads yet";

impl Db {
    /// Whether this node's entries are being rebuilt from its peers (see the module docs).
    #[must_use]
    pub fn rebuilding(&self) -> bool {
        self.state.rebuilding.load(Ordering::Acquire)
    }

    /// Clears the rebuilding mark: every partition this node holds was synced from a
    /// quorum of its other replicas.
    ///
    /// # Errors
    /// Database errors.
    pub fn finish_rebuild(&self) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(NODE_STATE)?.remove(REBUILD_PENDING)?;
        txn.commit()?;
        self.state.rebuilding.store(false, Ordering::Release);
        Ok(())
    }

    /// At open: marks a new store as rebuilding when `mark`, and loads the mark.
    pub(super) fn load_rebuild_state(&self, mark: bool) -> Result<()> {
        if mark {
            let txn = self.begin_write()?;
            txn.open_table(NODE_STATE)?.insert(REBUILD_PENDING, 1)?;
            txn.commit()?;
        } else {
            self.create_table(NODE_STATE)?;
        }
        let txn = self.inner.begin_read()?;
        let pending = txn.open_table(NODE_STATE)?.get(REBUILD_PENDING)?.is_some();
        self.state.rebuilding.store(pending, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_of_a_known_node_rebuilds_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Db::open_for_node(dir.path(), false).unwrap().rebuilding());
        std::fs::remove_file(dir.path().join(super::super::db::DB_FILE)).unwrap();

        let db = Db::open_for_node(dir.path(), true).unwrap();
        assert!(db.rebuilding());
        drop(db);
        // A restart before the rebuild finished resumes it.
        let db = Db::open_for_node(dir.path(), true).unwrap();
        assert!(db.rebuilding());
        db.finish_rebuild().unwrap();
        assert!(!db.rebuilding());
        drop(db);
        assert!(!Db::open_for_node(dir.path(), true).unwrap().rebuilding());
    }
}
