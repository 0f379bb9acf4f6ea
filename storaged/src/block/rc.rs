//! Chunk reference counts and the GC schedule, stored in the metadata database.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::Result;
use crate::table::Db;
use crate::util::id::Hash;

/// Chunk hash → number of live block references.
const RC: TableDefinition<'static, &'static [u8], u64> = TableDefinition::new("block_rc");
/// `deadline_ms (big endian) ++ hash` → (): chunks that reached zero references.
const GC_TODO: TableDefinition<'static, &'static [u8], ()> = TableDefinition::new("block_gc_todo");

pub(super) fn create_tables(db: &Db) -> Result<()> {
    db.create_table(RC)?;
    db.create_table(GC_TODO)
}

/// Live references to `hash` recorded on this node.
pub(super) fn refcount(db: &Db, hash: &Hash) -> Result<u64> {
    let txn = db.begin_read()?;
    let rc = txn.open_table(RC)?;
    Ok(rc.get(hash.as_bytes().as_slice())?.map_or(0, |v| v.value()))
}

/// One more reference to `hash`; runs inside the block-reference transaction.
pub fn incref(txn: &WriteTransaction, hash: &Hash) -> Result<()> {
    let mut rc = txn.open_table(RC)?;
    let n = rc.get(hash.as_bytes().as_slice())?.map_or(0, |v| v.value());
    rc.insert(hash.as_bytes().as_slice(), n + 1)?;
    Ok(())
}

/// Schedules a GC check of `hash` at `gc_at_ms` without changing its count: for a chunk
/// whose only reference was released before it was ever counted (the release reached this
/// node first), so its file, if one is written, is still collected. GC deletes it only if
/// the count is still zero then.
pub fn schedule_gc(txn: &WriteTransaction, hash: &Hash, gc_at_ms: u64) -> Result<()> {
    let mut todo = txn.open_table(GC_TODO)?;
    let mut key = gc_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(hash.as_bytes());
    todo.insert(key.as_slice(), ())?;
    Ok(())
}

/// One reference fewer; at zero the chunk is scheduled for deletion at `gc_at_ms`.
pub fn decref(txn: &WriteTransaction, hash: &Hash, gc_at_ms: u64) -> Result<()> {
    let mut rc = txn.open_table(RC)?;
    let n = rc.get(hash.as_bytes().as_slice())?.map_or(0, |v| v.value());
    if n > 1 {
        rc.insert(hash.as_bytes().as_slice(), n - 1)?;
        return Ok(());
    }
    rc.remove(hash.as_bytes().as_slice())?;
    schedule_gc(txn, hash, gc_at_ms)
}

/// Deletes (through `delete`) every chunk whose deadline is before `now_ms` and whose count
/// is still zero, in one write transaction so that no `incref` can interleave.
pub(super) fn collect_expired(
    db: &Db,
    now_ms: u64,
    mut delete: impl FnMut(&Hash) -> Result<()>,
) -> Result<usize> {
    let txn = db.begin_write()?;
    let mut deleted = 0;
    {
        let rc = txn.open_table(RC)?;
        let mut todo = txn.open_table(GC_TODO)?;
        let end = now_ms.to_be_bytes();
        let due: Vec<Vec<u8>> = todo
            .range::<&[u8]>(..end.as_slice())?
            .take(1000)
            .map(|item| item.map(|(k, _)| k.value().to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        for key in due {
            if let Some(hash) = key.get(8..).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                let hash = Hash::from(hash);
                if rc.get(hash.as_bytes().as_slice())?.is_none() {
                    delete(&hash)?;
                    deleted += 1;
                }
            }
            todo.remove(key.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(deleted)
}
