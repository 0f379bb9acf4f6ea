//! Dropping the local entries of a partition this node no longer stores.
//!
//! Once a layout change is complete (its new owners synced, the older versions retired), a
//! node that left a partition's set must not keep that partition's entries: they would go
//! stale, and if the node became an owner again its stale copies (a live entry whose
//! tombstone was since collected elsewhere) would be merged back and resurrect deletes.

use std::sync::Arc;

use redb::ReadableTable;

use super::{Table, TableSchema, definition};
use crate::error::Result;

/// Entries deleted per transaction, so a large partition does not hold the writer long.
const BATCH: usize = 1000;

impl<F: TableSchema> Table<F> {
    /// Deletes every local entry of layout partition `partition` (the first byte of their
    /// storage keys), without running hooks: the data lives on, on its owners. Returns how
    /// many entries were dropped.
    pub async fn drop_partition(self: &Arc<Self>, partition: u8) -> Result<usize> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut total = 0;
            loop {
                let txn = this.db.begin_write()?;
                let n = {
                    let mut table = txn.open_table(definition::<F>())?;
                    let begin = [partition];
                    let keys: Vec<Vec<u8>> = match partition.checked_add(1) {
                        Some(next) => table.range::<&[u8]>(&begin[..]..&[next][..])?,
                        None => table.range::<&[u8]>(&begin[..]..)?,
                    }
                    .take(BATCH)
                    .map(|item| item.map(|(k, _)| k.value().to_vec()))
                    .collect::<std::result::Result<_, _>>()?;
                    for k in &keys {
                        table.remove(k.as_slice())?;
                    }
                    keys.len()
                };
                txn.commit()?;
                total += n;
                if n < BATCH {
                    return Ok(total);
                }
            }
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Version, VersionTable};
    use crate::table::{Db, EmptyKey, Table};
    use crate::util::id::Uuid;

    fn uuid(first: u8, n: u8) -> Uuid {
        let mut b = [n; 32];
        b[0] = first;
        Uuid::from(b)
    }

    #[tokio::test]
    async fn only_the_named_partition_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Table::open(VersionTable, Db::open(dir.path()).expect("db")).expect("table");
        let entries: Vec<Version> = (0..2500u32)
            .map(|i| {
                let first = if i % 2 == 0 { 7 } else { 8 };
                let mut id = uuid(first, 0);
                id.0[1..5].copy_from_slice(&i.to_be_bytes());
                Version::new(id)
            })
            .collect();
        t.insert_many(entries).await.expect("insert");
        // More than one batch of deletions.
        assert_eq!(t.drop_partition(7).await.expect("drop"), 1250);
        assert_eq!(t.drop_partition(7).await.expect("again"), 0);
        let mut id = uuid(8, 0);
        id.0[1..5].copy_from_slice(&1u32.to_be_bytes());
        assert!(t.get(&id, &EmptyKey).await.expect("get").is_some());
        assert_eq!(t.get_all(None).await.expect("all").len(), 1250);
        assert_eq!(t.drop_partition(255).await.expect("last partition"), 0);
    }
}
