//! The node's one redb database, its transactions and the durable insert queue.

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::Notify;

use super::{TableSchema, storage_key};
use crate::error::Result;
use crate::util::crdt::Crdt;
use crate::util::encode::{decode, encode};

/// Queued inserts into other tables: `table name ++ 0x00 ++ storage key` → encoded entry.
const INSERT_QUEUE: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("insert_queue");

/// Handle on the metadata database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Database>,
    queue_notify: Arc<Notify>,
}

impl Db {
    /// Opens or creates `dir/db.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("db.redb"))?;
        let this = Self {
            inner: Arc::new(db),
            queue_notify: Arc::new(Notify::new()),
        };
        this.create_table(INSERT_QUEUE)?;
        Ok(this)
    }

    /// Ensures a table exists so that read transactions can open it.
    pub fn create_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<()> {
        let txn = self.inner.begin_write()?;
        txn.open_table(def)?;
        txn.commit()?;
        Ok(())
    }

    /// A durable write transaction (committed with fsync).
    pub fn begin_write(&self) -> Result<WriteTransaction> {
        Ok(self.inner.begin_write()?)
    }

    /// A snapshot read transaction.
    pub fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.inner.begin_read()?)
    }

    pub(super) fn notify_queue(&self) {
        self.queue_notify.notify_waiters();
    }

    pub(super) fn queue_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.queue_notify.notified()
    }

    /// Up to `max` queued entries for `table`.
    pub(super) fn queue_batch(&self, table: &str, max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = queue_prefix(table);
        let txn = self.begin_read()?;
        let q = txn.open_table(INSERT_QUEUE)?;
        let end = super::prefix_end(&prefix);
        let iter = match &end {
            Some(end) => q.range::<&[u8]>(prefix.as_slice()..end.as_slice())?,
            None => q.range::<&[u8]>(prefix.as_slice()..)?,
        };
        let mut out = Vec::new();
        for item in iter.take(max) {
            let (k, v) = item?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes queue items that still hold the values in `done` (a newer merge stays queued).
    pub(super) fn queue_remove(&self, done: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut q = txn.open_table(INSERT_QUEUE)?;
            for (k, v) in done {
                let unchanged = q
                    .get(k.as_slice())?
                    .is_some_and(|cur| cur.value() == v.as_slice());
                if unchanged {
                    q.remove(k.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn queue_prefix(table: &str) -> Vec<u8> {
    let mut p = table.as_bytes().to_vec();
    p.push(0);
    p
}

/// The transaction an `updated` hook runs in.
pub struct UpdateTx<'a> {
    txn: &'a WriteTransaction,
    queued: bool,
}

impl<'a> UpdateTx<'a> {
    pub(super) fn new(txn: &'a WriteTransaction) -> Self {
        Self { txn, queued: false }
    }

    pub(super) fn queued(&self) -> bool {
        self.queued
    }

    /// The raw transaction, for derived state owned by another module (block refcounts).
    #[must_use]
    pub fn raw(&self) -> &WriteTransaction {
        self.txn
    }

    /// Durably queues `entry` for insertion into table `T` once this transaction commits.
    pub fn queue_insert<T: TableSchema>(&mut self, entry: &T::E) -> Result<()> {
        use super::schema::{Entry, PartitionKey, SortKey};
        let mut key = queue_prefix(T::TABLE_NAME);
        key.extend(storage_key(
            &entry.partition_key().hash(),
            &entry.sort_key().sort_key(),
        ));
        let mut q = self.txn.open_table(INSERT_QUEUE)?;
        let merged = match q.get(key.as_slice())? {
            Some(prev) => {
                let mut prev: T::E = decode(prev.value())?;
                prev.merge(entry);
                prev
            }
            None => entry.clone(),
        };
        q.insert(key.as_slice(), encode(&merged)?.as_slice())?;
        self.queued = true;
        Ok(())
    }
}
