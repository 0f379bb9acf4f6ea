//! Generic tables of CRDT entries stored in redb.
//!
//! Every piece of metadata (buckets, keys, objects, versions, block references, uploads) is
//! a [`TableSchema`]: a partition key that places it, a sort key that orders it inside its
//! partition, and an entry that merges as a CRDT. A [`Table`] stores entries under
//! `blake3(partition key) ++ sort key`, merges every insert with what is stored, and runs the
//! schema's `updated` hook in the same redb transaction. Hooks that must change *other*
//! tables write to a durable insert queue ([`UpdateTx::queue_insert`]) drained by a worker,
//! so that the cluster layer can later route those inserts to the nodes that own them.
//!
//! Today the daemon uses every table locally. The cluster layer sits beside it, without
//! changing the local API: [`replication`] says where a partition's entries live and which
//! quorums apply (sans-IO), [`sync_rpc`] is the per-table service through which nodes store
//! and read each other's replicas, and [`ReplicatedTable`] fronts a local [`Table`] with
//! quorum writes, quorum reads with CRDT merge, and read repair. Entries a schema calls
//! tombstones are recorded as GC candidates when stored, and [`gc`] removes them once every
//! replica holds the same one. A node that lost its store keeps its identity and
//! [`rebuild`]s it from its peers, answering no reads until then.

mod commit;
mod db;
pub mod gc;
mod offload;
pub mod rebuild;
mod replicated;
pub mod replication;
mod schema;
pub mod sync;
pub mod sync_rpc;

pub use db::{DB_FILE, Db, UpdateTx};
pub use gc::{GcError, GcReport, GcTable, run_tombstone_gc};
pub use replicated::{CallError, ReplicatedTable, ReplicationError};
pub use replication::{FullReplication, LayoutReplication, LocalOnly, Quorums, TableReplication};
pub use schema::{EmptyKey, Entry, PartitionKey, SortKey, TableSchema};
pub use sync::{NodeSync, SyncError, SyncReport, SyncTable, run_anti_entropy, sync_all};

use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableTable, TableDefinition};
use tokio::sync::watch;

use crate::error::Result;
use crate::util::crdt::Crdt;
use crate::util::encode::{decode, encode};
use crate::util::id::Hash;

/// Where a range read starts inside a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeStart {
    /// From the first entry.
    First,
    /// From this sort key, inclusive.
    From(Vec<u8>),
}

/// A replicated table of `F::E` entries.
pub struct Table<F: TableSchema> {
    /// The schema, with whatever handles its hooks need.
    pub schema: F,
    db: Db,
}

/// The redb table holding `F`'s entries.
fn definition<F: TableSchema>() -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(F::TABLE_NAME)
}

/// `blake3(partition) ++ sort`.
pub(crate) fn storage_key(partition: &Hash, sort: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + sort.len());
    k.extend_from_slice(partition.as_bytes());
    k.extend_from_slice(sort);
    k
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl<F: TableSchema> Table<F> {
    /// Opens (creating if needed) the table in `db`.
    pub fn open(schema: F, db: Db) -> Result<Arc<Self>> {
        db.create_table(definition::<F>())?;
        gc::create_todo::<F>(&db)?;
        Ok(Arc::new(Self { schema, db }))
    }

    /// Merges `entry` into the table.
    pub async fn insert(self: &Arc<Self>, entry: &F::E) -> Result<()> {
        self.insert_many(vec![entry.clone()]).await
    }

    /// Merges every entry, in one transaction (shared with other writes: see [`commit`]).
    pub async fn insert_many(self: &Arc<Self>, entries: Vec<F::E>) -> Result<()> {
        let this = Arc::clone(self);
        self.db
            .write(move |tx| this.apply_local(tx, &entries))
            .await
    }

    /// Merges `entry` unless the stored one [`TableSchema::supersedes`] it, in one
    /// transaction; returns the stored entry when it does (and nothing was written).
    pub async fn insert_unless_superseded(self: &Arc<Self>, entry: F::E) -> Result<Option<F::E>> {
        let this = Arc::clone(self);
        self.db
            .write(move |tx| {
                let key = storage_key(&entry.partition_key().hash(), &entry.sort_key().sort_key());
                let stored: Option<F::E> = match tx
                    .raw()
                    .open_table(definition::<F>())?
                    .get(key.as_slice())?
                {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                if let Some(stored) = stored.filter(|s| F::supersedes(s, &entry)) {
                    return Ok(Some(stored));
                }
                this.apply_local(tx, std::slice::from_ref(&entry))?;
                Ok(None)
            })
            .await
    }

    fn apply_local(&self, utx: &mut UpdateTx<'_>, entries: &[F::E]) -> Result<()> {
        let txn = utx.raw();
        let mut changes = Vec::new();
        let mut merged = Vec::with_capacity(entries.len());
        {
            let mut table = txn.open_table(definition::<F>())?;
            for entry in entries {
                let key = storage_key(&entry.partition_key().hash(), &entry.sort_key().sort_key());
                let old: Option<F::E> = match table.get(key.as_slice())? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                let mut new = old.clone().unwrap_or_else(|| entry.clone());
                new.merge(entry);
                merged.push((entry, new.clone()));
                if old.as_ref() != Some(&new) {
                    let bytes = encode(&new)?;
                    table.insert(key.as_slice(), bytes.as_slice())?;
                    if F::is_tombstone(&new) {
                        gc::record_candidate::<F>(txn, &key, &bytes)?;
                    }
                    changes.push((old, new));
                }
            }
        }
        for (incoming, new) in &merged {
            self.schema.merged(utx, incoming, new)?;
        }
        for (old, new) in &changes {
            self.schema.updated(utx, old.as_ref(), Some(new))?;
        }
        Ok(())
    }

    /// The entry at (`partition`, `sort`), if any.
    pub async fn get(self: &Arc<Self>, partition: &F::P, sort: &F::S) -> Result<Option<F::E>> {
        let key = storage_key(&partition.hash(), &sort.sort_key());
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || -> Result<Option<F::E>> {
            let txn = this.db.begin_read()?;
            let table = txn.open_table(definition::<F>())?;
            match table.get(key.as_slice())? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
        .await?
    }

    /// Up to `limit` entries of one partition in sort-key order from `start`, keeping those
    /// that match `filter`.
    pub async fn get_range(
        self: &Arc<Self>,
        partition: &F::P,
        start: RangeStart,
        filter: Option<F::Filter>,
        limit: usize,
    ) -> Result<Vec<F::E>> {
        let prefix = partition.hash();
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let begin = match &start {
                RangeStart::First => storage_key(&prefix, &[]),
                RangeStart::From(s) => storage_key(&prefix, s),
            };
            let end = prefix_end(prefix.as_bytes());
            this.scan(&begin, end.as_deref(), filter.as_ref(), limit)
        })
        .await?
    }

    /// Every entry of the table matching `filter` (admin listings; all partitions are local).
    pub async fn get_all(self: &Arc<Self>, filter: Option<F::Filter>) -> Result<Vec<F::E>> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.scan(&[], None, filter.as_ref(), usize::MAX))
            .await?
    }

    fn scan(
        &self,
        begin: &[u8],
        end: Option<&[u8]>,
        filter: Option<&F::Filter>,
        limit: usize,
    ) -> Result<Vec<F::E>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(definition::<F>())?;
        let iter = match end {
            Some(end) => table.range::<&[u8]>(begin..end)?,
            None => table.range::<&[u8]>(begin..)?,
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            let entry: F::E = decode(v.value())?;
            if filter.is_none_or(|f| F::matches_filter(&entry, f)) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Visits the stored (storage key, encoded entry) pairs in `[begin, end)` in key order
    /// (`end` `None`: to the last key) while `visit` returns `true`, in one read snapshot:
    /// anti-entropy digests and sub-range reads work on the raw bytes replicas exchange.
    /// Blocking: call from `spawn_blocking`.
    pub(crate) fn visit_raw(
        &self,
        begin: &[u8],
        end: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(definition::<F>())?;
        let iter = match end {
            Some(end) => table.range::<&[u8]>(begin..end)?,
            None => table.range::<&[u8]>(begin..)?,
        };
        for item in iter {
            let (k, v) = item?;
            if !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    /// Drains this table's part of the insert queue into the local table until `shutdown`
    /// flips (a single node; a replicated table drains through its replicas instead).
    pub async fn run_queue_worker(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let this = Arc::clone(&self);
        self.drain_queue_into(shutdown, move |entries| {
            let this = Arc::clone(&this);
            async move { this.insert_many(entries).await }
        })
        .await;
    }

    /// Drains this table's part of the insert queue through `insert` until `shutdown`
    /// flips; an entry leaves the queue only once `insert` succeeded.
    pub async fn drain_queue_into<Fut>(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
        insert: impl Fn(Vec<F::E>) -> Fut,
    ) where
        Fut: std::future::Future<Output = Result<()>>,
    {
        loop {
            let notified = self.db.queue_notified();
            match self.drain_queue_once(&insert).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(table = F::TABLE_NAME, error = %e, "insert queue"),
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Moves one batch of queued entries into the table; `true` if it did any work.
    async fn drain_queue_once<Fut>(
        self: &Arc<Self>,
        insert: &impl Fn(Vec<F::E>) -> Fut,
    ) -> Result<bool>
    where
        Fut: std::future::Future<Output = Result<()>>,
    {
        let db = self.db.clone();
        let batch =
            tokio::task::spawn_blocking(move || db.queue_batch(F::TABLE_NAME, 256)).await??;
        if batch.is_empty() {
            return Ok(false);
        }
        let entries = batch
            .iter()
            .map(|(_, v)| decode::<F::E>(v))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        insert(entries).await?;
        self.db.queue_remove(batch).await?;
        Ok(true)
    }
}
