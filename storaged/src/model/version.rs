//! The version table: the chunks of one object version (or of one multipart part).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::block_ref::{BlockRef, BlockRefTable};
use crate::error::Result;
use crate::table::{EmptyKey, Entry, TableSchema, UpdateTx};
use crate::util::crdt::{Bool, Crdt};
use crate::util::id::{Hash, Uuid};

/// Position of a chunk: (part number, byte offset inside the part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockPos {
    /// Multipart part number (1 for single PUTs).
    pub part: u32,
    /// Offset of the chunk inside its part.
    pub offset: u64,
}

/// A chunk of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VersionBlock {
    /// Content address.
    pub hash: Hash,
    /// Plain size.
    pub size: u64,
}

/// The chunks of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Same uuid as the object version (or the part upload).
    pub uuid: Uuid,
    /// Tombstone: its chunks are released.
    pub deleted: Bool,
    /// Chunks by position.
    pub blocks: BTreeMap<BlockPos, VersionBlock>,
}

impl Version {
    /// A live version with no chunk yet.
    #[must_use]
    pub fn new(uuid: Uuid) -> Self {
        Self {
            uuid,
            deleted: Bool(false),
            blocks: BTreeMap::new(),
        }
    }

    /// The tombstone of `uuid`.
    #[must_use]
    pub fn deleted(uuid: Uuid) -> Self {
        Self {
            uuid,
            deleted: Bool(true),
            blocks: BTreeMap::new(),
        }
    }
}

impl Crdt for Version {
    fn merge(&mut self, other: &Self) {
        self.deleted.merge(&other.deleted);
        if self.deleted.0 {
            self.blocks.clear();
        } else {
            for (k, v) in &other.blocks {
                let e = self.blocks.entry(*k).or_insert(*v);
                if v > e {
                    *e = *v;
                }
            }
        }
    }
}

impl Entry<Uuid, EmptyKey> for Version {
    fn partition_key(&self) -> &Uuid {
        &self.uuid
    }
    fn sort_key(&self) -> &EmptyKey {
        &EmptyKey
    }
}

/// Schema of the version table.
pub struct VersionTable;

impl TableSchema for VersionTable {
    const TABLE_NAME: &'static str = "version_v1";
    type P = Uuid;
    type S = EmptyKey;
    type E = Version;
    type Filter = ();

    fn matches_filter(_: &Version, (): &()) -> bool {
        true
    }

    /// A deleted version has released its chunks and can hold no more (the merge clears
    /// them): it only says "deleted", and an absent version means the same to readers.
    fn is_tombstone(entry: &Version) -> bool {
        entry.deleted.0
    }

    /// Chunks added to a version that is already deleted (an upload still streaming when a
    /// newer write superseded it, or whose client went away) are dropped by the merge; their
    /// references, written beside them, are released here.
    fn merged(&self, tx: &mut UpdateTx<'_>, incoming: &Version, new: &Version) -> Result<()> {
        if new.deleted.0 {
            for b in incoming.blocks.values() {
                tx.queue_insert::<BlockRefTable>(&BlockRef::deleted(b.hash, incoming.uuid))?;
            }
        }
        Ok(())
    }

    fn updated(
        &self,
        tx: &mut UpdateTx<'_>,
        old: Option<&Version>,
        new: Option<&Version>,
    ) -> Result<()> {
        let Some(old) = old else { return Ok(()) };
        for (pos, b) in &old.blocks {
            if new.is_none_or(|n| !n.blocks.contains_key(pos)) {
                tx.queue_insert::<BlockRefTable>(&BlockRef::deleted(b.hash, old.uuid))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::crdt::laws;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = Version> {
        (
            any::<bool>(),
            proptest::collection::btree_map(0u32..3, 0u8..3, 0..3),
        )
            .prop_map(|(d, m)| {
                let mut v = Version::new(Uuid::default());
                v.deleted = Bool(d);
                if !d {
                    for (part, h) in m {
                        v.blocks.insert(
                            BlockPos { part, offset: 0 },
                            VersionBlock {
                                hash: Hash::from([h; 32]),
                                size: 1,
                            },
                        );
                    }
                }
                v
            })
    }

    proptest! {
        #[test]
        fn version_laws(a in version(), b in version(), c in version()) {
            laws::check(&a, &b, &c);
        }
    }
}
