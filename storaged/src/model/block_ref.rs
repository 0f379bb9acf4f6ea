//! The block reference table: (chunk hash, version uuid) → live or deleted. Its hook keeps
//! the chunk reference counts of `block` in step, in the same transaction.

use serde::{Deserialize, Serialize};

use crate::block;
use crate::error::Result;
use crate::table::{Entry, TableSchema, UpdateTx};
use crate::util::crdt::{Bool, Crdt};
use crate::util::id::{Hash, Uuid};
use crate::util::time::now_ms;

/// One version's use of one chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    /// Chunk hash (the partition: a chunk's references live with the chunk).
    pub block: Hash,
    /// Version using it.
    pub version: Uuid,
    /// Tombstone.
    pub deleted: Bool,
}

impl BlockRef {
    /// A live reference.
    #[must_use]
    pub fn new(block: Hash, version: Uuid) -> Self {
        Self {
            block,
            version,
            deleted: Bool(false),
        }
    }

    /// A released reference.
    #[must_use]
    pub fn deleted(block: Hash, version: Uuid) -> Self {
        Self {
            block,
            version,
            deleted: Bool(true),
        }
    }
}

impl Crdt for BlockRef {
    fn merge(&mut self, other: &Self) {
        self.deleted.merge(&other.deleted);
    }
}

impl Entry<Hash, Uuid> for BlockRef {
    fn partition_key(&self) -> &Hash {
        &self.block
    }
    fn sort_key(&self) -> &Uuid {
        &self.version
    }
}

/// How long a reference to a missing chunk waits before resync looks for the chunk: the
/// chunk's own put runs concurrently with its reference's and usually lands within it.
const RESYNC_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Schema of the block reference table.
pub struct BlockRefTable {
    /// How long a chunk outlives its last reference.
    pub gc_delay_ms: u64,
    /// Where a reference to a chunk this node lacks queues it for fetching (a replica
    /// that missed the chunk's write, or a new owner after a layout change).
    pub resync: Option<(block::ResyncQueue, std::sync::Arc<block::BlockManager>)>,
}

impl TableSchema for BlockRefTable {
    const TABLE_NAME: &'static str = "block_ref_v1";
    type P = Hash;
    type S = Uuid;
    type E = BlockRef;
    type Filter = ();

    fn matches_filter(e: &BlockRef, (): &()) -> bool {
        !e.deleted.0
    }

    /// A released reference was already counted down when it was stored; only the
    /// "deleted" flag is left.
    fn is_tombstone(entry: &BlockRef) -> bool {
        entry.deleted.0
    }

    fn updated(
        &self,
        tx: &mut UpdateTx<'_>,
        old: Option<&BlockRef>,
        new: Option<&BlockRef>,
    ) -> Result<()> {
        let was_live = old.is_some_and(|o| !o.deleted.0);
        let is_live = new.is_some_and(|n| !n.deleted.0);
        match (was_live, is_live, new.or(old)) {
            (false, true, Some(r)) => {
                block::incref(tx.raw(), &r.block)?;
                match &self.resync {
                    Some((queue, blocks)) if !blocks.has_block(&r.block) => {
                        queue.enqueue_in(tx.raw(), &r.block, RESYNC_GRACE)
                    }
                    _ => Ok(()),
                }
            }
            (true, false, Some(r)) => {
                block::decref(tx.raw(), &r.block, now_ms() + self.gc_delay_ms)
            }
            // Released before it was ever live here (the release of a superseded upload's
            // chunk can overtake its reference): the chunk may still arrive, so GC checks it.
            (false, false, Some(r)) if old.is_none() => {
                block::schedule_gc(tx.raw(), &r.block, now_ms() + self.gc_delay_ms)
            }
            _ => Ok(()),
        }
    }
}
