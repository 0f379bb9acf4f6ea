//! The RPC service through which nodes store and read each other's replicas of a table.
//!
//! One service per table ([`TableRpc<F>`], named `table/` + [`TableSchema::TABLE_NAME`]), so
//! that a node serves exactly the tables it has opened and a message for one table can never
//! be applied to another. Entries travel encoded ([`crate::util::encode`]): the handler
//! stores and returns the bytes that redb holds, and the version byte of every entry lets
//! mixed-version clusters decode what they can.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Entry, PartitionKey, Table, TableReplication, TableSchema};
use super::{definition, prefix_end, storage_key};
use crate::error::Result;
use crate::rpc::wire::MAX_SERVICE_NAME;
use crate::rpc::{Handler, NodeId, Service};
use crate::util::encode::{decode, encode};
use crate::util::id::Hash;

/// The table service of table `F` (a marker type: the service is named by its type).
pub struct TableRpc<F>(PhantomData<fn() -> F>);

/// `table/` + the table name, built at compile time (a table name too long for the wire
/// format fails the build, not a node at run time).
const fn service_name(table: &str) -> ([u8; MAX_SERVICE_NAME], usize) {
    let prefix = b"table/";
    let name = table.as_bytes();
    assert!(
        prefix.len() + name.len() <= MAX_SERVICE_NAME,
        "table name too long for an RPC service name"
    );
    let mut out = [0u8; MAX_SERVICE_NAME];
    let mut i = 0;
    while i < prefix.len() {
        out[i] = prefix[i];
        i += 1;
    }
    let mut j = 0;
    while j < name.len() {
        out[i] = name[j];
        i += 1;
        j += 1;
    }
    (out, i)
}

impl<F: TableSchema> TableRpc<F> {
    const NAME_BUF: ([u8; MAX_SERVICE_NAME], usize) = service_name(F::TABLE_NAME);
    const NAME_STR: &'static str =
        match std::str::from_utf8(Self::NAME_BUF.0.split_at(Self::NAME_BUF.1).0) {
            Ok(s) => s,
            Err(_) => panic!("table names are UTF-8"),
        };
}

impl<F: TableSchema> Service for TableRpc<F> {
    const NAME: &'static str = Self::NAME_STR;
    type Req = TableReq;
    type Resp = TableResp;
}

/// Requests of a table service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TableReq {
    /// Merge these encoded entries into the local replica (a write, or a read repair).
    Update(Vec<Vec<u8>>),
    /// Merge these encoded entries, sent by anti-entropy: accepted only if the sender
    /// stores each entry's partition in a live layout version of the receiver (a node
    /// removed from the layout while it was down must not push back stale or deleted
    /// entries). An older daemon does not know this request and refuses it: then its own
    /// anti-entropy pulls the entries instead.
    Push(Vec<Vec<u8>>),
    /// The local copy of one entry.
    ReadEntry {
        /// Hash of the partition key.
        partition: Hash,
        /// Sort key bytes.
        sort: Vec<u8>,
    },
    /// Up to `limit` local entries of one partition in sort-key order, from `start`
    /// (inclusive; `None`: from the first).
    ReadRange {
        /// Hash of the partition key.
        partition: Hash,
        /// First sort key, inclusive.
        start: Option<Vec<u8>>,
        /// Most entries returned.
        limit: u64,
    },
    /// The digests of the [`super::sync::SUB_RANGES`] sub-ranges of one layout partition
    /// on the local replica (anti-entropy compares them before moving any entry).
    PartitionDigest {
        /// The layout partition (first byte of the storage keys).
        partition: u16,
    },
    /// One page of the local entries of a sub-range of a partition (anti-entropy copies
    /// the sub-ranges whose digests differ).
    ReadSubRange {
        /// The layout partition (first byte of the storage keys).
        partition: u16,
        /// The sub-range (second byte of the storage keys).
        sub: u8,
        /// The storage key to start from, inclusive (a previous page's `next`); `None`:
        /// from the first.
        start: Option<Vec<u8>>,
    },
    /// The hash of the local copy of each entry (the tombstone GC checks that every
    /// replica holds exactly the same tombstone before removing it; hashes, not entries,
    /// since only equality matters).
    EntryHashes {
        /// Storage keys, at most [`super::gc::MAX_ITEMS`].
        keys: Vec<Vec<u8>>,
    },
    /// Remove each entry whose local copy still hashes to the given hash and is a
    /// tombstone, in one transaction, without running hooks (the last step of the
    /// tombstone GC, once every replica was seen holding that same tombstone).
    DeleteIfEqual {
        /// (storage key, hash of the tombstone's bytes), at most
        /// [`super::gc::MAX_ITEMS`].
        items: Vec<(Vec<u8>, Hash)>,
    },
    /// Merge this encoded entry unless the local copy supersedes it
    /// ([`TableSchema::supersedes`]): a write sent without reading the entry first. A node
    /// rebuilding its metadata refuses it (its copy proves nothing), as does an older daemon
    /// that does not know it; the writer then reads first.
    UpdateUnlessSuperseded(Vec<u8>),
}

/// Responses of a table service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TableResp {
    /// The update is durably merged.
    Updated,
    /// The encoded local copy of the entry, if any.
    Entry(Option<Vec<u8>>),
    /// Encoded local entries, in sort-key order.
    Entries(Vec<Vec<u8>>),
    /// The node could not do it (undecodable entry, database error); says why.
    Error(String),
    /// The digests of a partition's sub-ranges, in sub-range order (all zero: empty).
    Digest(Vec<[u8; 32]>),
    /// One page of a sub-range's encoded entries, in storage-key order, and the storage
    /// key of the next page (`None`: this was the last one). Pages are capped in entries and
    /// bytes so that neither side holds a whole sub-range in memory.
    SubRange {
        /// Encoded entries.
        entries: Vec<Vec<u8>>,
        /// Where the next page starts.
        next: Option<Vec<u8>>,
    },
    /// The hash of each asked entry's local bytes, in request order (`None`: not stored).
    EntryHashes(Vec<Option<Hash>>),
    /// The conditional delete is committed; how many entries it removed (the others
    /// changed since, or were gone).
    Deleted(u64),
    /// The update was refused: the local copy (encoded here) supersedes it.
    Superseded(Vec<u8>),
}

/// Serves [`TableRpc<F>`] from the local replica.
pub struct TableHandler<F: TableSchema> {
    table: Arc<Table<F>>,
    replication: Arc<dyn TableReplication>,
}

impl<F: TableSchema> TableHandler<F> {
    /// A handler answering from `table`, placed as `replication` says.
    #[must_use]
    pub fn new(table: Arc<Table<F>>, replication: Arc<dyn TableReplication>) -> Arc<Self> {
        Arc::new(Self { table, replication })
    }

    /// [`TableReq::Push`]: refused whole if `from` does not store one of the entries'
    /// partitions in a live version (as this node knows the layout).
    async fn push(&self, from: NodeId, encoded: Vec<Vec<u8>>) -> Result<TableResp> {
        let entries = encoded
            .iter()
            .map(|e| decode::<F::E>(e))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(e) = entries.iter().find(|e| {
            !self
                .replication
                .is_replica(&from, &e.partition_key().hash())
        }) {
            let p = crate::layout::partition_of(&e.partition_key().hash());
            tracing::info!(
                table = F::TABLE_NAME,
                peer = %from,
                partition = p,
                "refused an anti-entropy push from a node that does not store the partition"
            );
            return Ok(TableResp::Error(format!(
                "sender does not store partition {p} in a live layout version"
            )));
        }
        self.table.insert_many(entries).await?;
        Ok(TableResp::Updated)
    }

    async fn update(&self, encoded: Vec<Vec<u8>>) -> Result<TableResp> {
        let entries = encoded
            .iter()
            .map(|e| decode::<F::E>(e))
            .collect::<Result<Vec<_>, _>>()?;
        // The same merge path as a local insert: hooks run in the same transaction.
        self.table.insert_many(entries).await?;
        Ok(TableResp::Updated)
    }

    async fn update_unless_superseded(&self, encoded: &[u8]) -> Result<TableResp> {
        let entry = decode::<F::E>(encoded)?;
        Ok(match self.table.insert_unless_superseded(entry).await? {
            None => TableResp::Updated,
            Some(stored) => TableResp::Superseded(encode(&stored)?),
        })
    }

    async fn read_entry(&self, partition: Hash, sort: Vec<u8>) -> Result<TableResp> {
        let table = Arc::clone(&self.table);
        tokio::task::spawn_blocking(move || {
            let key = storage_key(&partition, &sort);
            let txn = table.db.begin_read()?;
            let t = txn.open_table(definition::<F>())?;
            let v = t.get(key.as_slice())?.map(|v| v.value().to_vec());
            Ok(TableResp::Entry(v))
        })
        .await?
    }

    async fn read_range(
        &self,
        partition: Hash,
        start: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<TableResp> {
        let table = Arc::clone(&self.table);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        tokio::task::spawn_blocking(move || {
            let begin = storage_key(&partition, start.as_deref().unwrap_or_default());
            let end = prefix_end(partition.as_bytes());
            let txn = table.db.begin_read()?;
            let t = txn.open_table(definition::<F>())?;
            let iter = match &end {
                Some(end) => t.range::<&[u8]>(begin.as_slice()..end.as_slice())?,
                None => t.range::<&[u8]>(begin.as_slice()..)?,
            };
            let mut out = Vec::new();
            for item in iter.take(limit) {
                let (_, v) = item?;
                out.push(v.value().to_vec());
            }
            Ok(TableResp::Entries(out))
        })
        .await?
    }

    async fn entry_hashes(&self, keys: Vec<Vec<u8>>) -> Result<TableResp> {
        if keys.len() > super::gc::MAX_ITEMS {
            return Ok(TableResp::Error(format!(
                "{} keys in one request",
                keys.len()
            )));
        }
        let table = Arc::clone(&self.table);
        tokio::task::spawn_blocking(move || table.entry_hashes(&keys).map(TableResp::EntryHashes))
            .await?
    }

    async fn delete_if_equal(&self, items: Vec<(Vec<u8>, Hash)>) -> Result<TableResp> {
        if items.len() > super::gc::MAX_ITEMS {
            return Ok(TableResp::Error(format!(
                "{} items in one request",
                items.len()
            )));
        }
        let table = Arc::clone(&self.table);
        tokio::task::spawn_blocking(move || {
            table
                .delete_if_equal(&items)
                .map(|d| TableResp::Deleted(d.removed))
        })
        .await?
    }
}

#[async_trait::async_trait]
impl<F: TableSchema> Handler<TableRpc<F>> for TableHandler<F> {
    async fn handle(&self, from: NodeId, req: TableReq) -> TableResp {
        let reads = !matches!(
            req,
            TableReq::Update(_) | TableReq::Push(_) | TableReq::DeleteIfEqual { .. }
        );
        if reads && self.table.db.rebuilding() {
            // Its entries are incomplete: quorums and syncs must use the other replicas.
            return TableResp::Error(super::rebuild::REBUILDING.into());
        }
        let result = match req {
            TableReq::Update(entries) => self.update(entries).await,
            TableReq::Push(entries) => self.push(from, entries).await,
            TableReq::ReadEntry { partition, sort } => self.read_entry(partition, sort).await,
            TableReq::ReadRange {
                partition,
                start,
                limit,
            } => self.read_range(partition, start, limit).await,
            TableReq::PartitionDigest { partition } => match super::sync::partition_byte(partition)
            {
                Some(p) => super::sync::partition_digest(&self.table, p)
                    .await
                    .map(TableResp::Digest),
                None => Ok(TableResp::Error(format!("no partition {partition}"))),
            },
            TableReq::ReadSubRange {
                partition,
                sub,
                start,
            } => match super::sync::partition_byte(partition) {
                Some(p) => super::sync::read_sub_range(&self.table, p, sub, start)
                    .await
                    .map(|page| TableResp::SubRange {
                        entries: page.entries.into_iter().map(|(_, v)| v).collect(),
                        next: page.next,
                    }),
                None => Ok(TableResp::Error(format!("no partition {partition}"))),
            },
            TableReq::EntryHashes { keys } => self.entry_hashes(keys).await,
            TableReq::DeleteIfEqual { items } => self.delete_if_equal(items).await,
            TableReq::UpdateUnlessSuperseded(entry) => self.update_unless_superseded(&entry).await,
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(table = F::TABLE_NAME, peer = %from, error = %e, "table request failed");
            TableResp::Error(e.to_string())
        })
    }
}
