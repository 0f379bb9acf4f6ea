//! Anti-entropy: bringing every replica of a partition up to date, whether or not anyone
//! reads its keys.
//!
//! Quorum writes leave the slow or absent replicas behind, and read repair only fixes the
//! keys that are read. This module is the backstop, and also how a node that a new layout
//! version made owner of a partition gets its data before the old version retires.
//!
//! A partition's storage keys all start with the partition number (the first byte of
//! `blake3(partition key)`), and split into [`SUB_RANGES`] sub-ranges by their second byte.
//! Replicas compare one digest per sub-range (one round trip, 8 KiB), and only the
//! sub-ranges that differ move entries, paged so that memory stays bounded: this node
//! pulls the peer's entries and merges them through the normal insert path (hooks run),
//! then pushes back what the peer lacks, so both sides converge in one pass.
//!
//! A sync is a success when it reached enough replicas of every live layout version that
//! this node now holds every acknowledged write (see [`SyncReport::is_synced`]): that is
//! what the layout coordinator needs to know before it retires an old version.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::replicated::CallError;
use super::sync_rpc::{TableReq, TableResp, TableRpc};
use super::{Entry, PartitionKey, ReplicatedTable, SortKey, Table, TableSchema};
use super::{prefix_end, storage_key};
use crate::layout::{N_PARTITIONS, NodeId, PARTITION_BITS};
use crate::util::encode::decode;
use crate::util::id::Hash;

// The partition number is the first byte of a storage key only with 8 partition bits.
const _: () = assert!(
    PARTITION_BITS == 8,
    "anti-entropy assumes one-byte partitions"
);

/// Sub-ranges per partition: one per value of a storage key's second byte.
pub const SUB_RANGES: usize = 256;

/// Most entries in one sub-range page (one RPC answer).
const PAGE_ENTRIES: usize = 10_000;

/// Most encoded bytes in one page (past its first entry): well under the 64 MiB frame.
const PAGE_BYTES: usize = 16 << 20;

/// The digest of an empty sub-range.
const EMPTY: [u8; 32] = [0; 32];

/// What happened with one other replica of the partition.
#[derive(Debug)]
pub struct NodeSync {
    /// The replica.
    pub node: NodeId,
    /// Sub-ranges whose digests differed from this node's.
    pub differing: usize,
    /// Entries received from it that this node did not hold as such (merged locally).
    pub received: usize,
    /// Entries sent to it that it did not hold as such.
    pub sent: usize,
    /// Why the sync with it stopped; `None`: it is synced. The counts say how far it got.
    pub error: Option<CallError>,
}

/// The outcome of syncing one partition of one table, for logs and for deciding whether
/// this node is synced.
#[derive(Debug)]
pub struct SyncReport {
    /// The table.
    pub table: &'static str,
    /// The layout partition.
    pub partition: u16,
    /// One line per other replica, in layout order.
    pub nodes: Vec<NodeSync>,
    /// Synced nodes needed in each live layout version's set (this node counting if it is
    /// in the set).
    pub needed: usize,
    /// Synced nodes in the worst set.
    pub got: usize,
}

impl SyncReport {
    /// Whether anything moved (worth an info log line).
    #[must_use]
    pub fn repaired(&self) -> bool {
        self.nodes.iter().any(|n| n.received > 0 || n.sent > 0)
    }

    /// Whether this node now holds every write acknowledged in any live layout version:
    /// every version's set has `needed` synced nodes, so each of its write quorums shares
    /// a node with them.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.got >= self.needed
    }

    /// Entries received and sent in all.
    #[must_use]
    pub fn totals(&self) -> (usize, usize) {
        self.nodes
            .iter()
            .fold((0, 0), |(r, s), n| (r + n.received, s + n.sent))
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (received, sent) = self.totals();
        write!(
            f,
            "{} partition {}: {} of {} nodes synced in the worst set, {received} entries received, {sent} sent",
            self.table, self.partition, self.got, self.needed
        )?;
        for n in &self.nodes {
            if let Some(e) = &n.error {
                let hex = n.node.to_hex();
                write!(f, "; {}: {e}", hex.get(..8).unwrap_or(&hex))?;
            }
        }
        Ok(())
    }
}

/// Why a partition (or a whole node) is not synced.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The partition number is out of range.
    #[error("no partition {0}")]
    NoSuchPartition(u16),
    /// No node stores the partition (no layout applied yet).
    #[error("no node stores partition {0} (is a cluster layout applied?)")]
    NoNodes(u16),
    /// This node is in no live layout version's set for the partition: syncing would fill
    /// it with data it has no business storing.
    #[error("this node does not store partition {0} in any live layout version")]
    NotAReplica(u16),
    /// The local replica failed (reading, or merging what peers sent).
    #[error("local replica: {0}")]
    Local(#[from] crate::error::Error),
    /// Too few replicas of some live layout version were synced with; what did move is
    /// in the report.
    #[error("not synced: {0}")]
    NotSynced(Box<SyncReport>),
    /// [`sync_all`]: some partitions did not sync (each logged); the first error.
    #[error("{failed} of {total} table partitions not synced; first: {first}")]
    Incomplete {
        /// Table partitions that failed.
        failed: usize,
        /// Table partitions tried.
        total: usize,
        /// The first failure.
        first: Box<SyncError>,
    },
}

/// The first storage-key byte of `partition`, if it exists.
pub(super) fn partition_byte(partition: u16) -> Option<u8> {
    if usize::from(partition) < N_PARTITIONS {
        u8::try_from(partition).ok()
    } else {
        None
    }
}

/// A hash in `partition`, to ask [`super::TableReplication`] about it (placement only looks
/// at the partition bits).
fn partition_probe(partition: u8) -> Hash {
    let mut bytes = [0; 32];
    bytes[0] = partition;
    Hash::from(bytes)
}

/// `(key length, key, value length, value)` into `h`: lengths first, so that no two
/// different entry lists hash the same bytes.
fn hash_entry(h: &mut blake3::Hasher, key: &[u8], value: &[u8]) {
    h.update(&u64::try_from(key.len()).unwrap_or(u64::MAX).to_le_bytes());
    h.update(key);
    h.update(&u64::try_from(value.len()).unwrap_or(u64::MAX).to_le_bytes());
    h.update(value);
}

/// The identity of one stored entry version (so that entries both sides hold as such are
/// neither merged nor sent again).
fn entry_id(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    hash_entry(&mut h, key, value);
    *h.finalize().as_bytes()
}

/// The digests of the sub-ranges of `partition` on the local replica, in one snapshot.
pub(super) async fn partition_digest<F: TableSchema>(
    table: &Arc<Table<F>>,
    partition: u8,
) -> crate::error::Result<Vec<[u8; 32]>> {
    let table = Arc::clone(table);
    tokio::task::spawn_blocking(move || {
        let mut hashers: Vec<Option<blake3::Hasher>> = vec![None; SUB_RANGES];
        let begin = [partition];
        let end = prefix_end(&begin);
        table.visit_raw(&begin, end.as_deref(), |k, v| {
            // Storage keys are 32 bytes of hash and more: they all have a second byte.
            if let Some(&sub) = k.get(1) {
                let h = hashers[usize::from(sub)].get_or_insert_with(blake3::Hasher::new);
                hash_entry(h, k, v);
            }
            true
        })?;
        Ok(hashers
            .into_iter()
            .map(|h| h.map_or(EMPTY, |h| *h.finalize().as_bytes()))
            .collect())
    })
    .await?
}

/// One page of raw local entries of a sub-range.
pub(super) struct Page {
    /// (storage key, encoded entry), in key order.
    pub(super) entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The storage key the next page starts at; `None`: this was the last one.
    pub(super) next: Option<Vec<u8>>,
}

/// The local entries of sub-range `sub` of `partition` from storage key `start` (clamped to
/// the sub-range), one page of at most [`PAGE_ENTRIES`] entries and about [`PAGE_BYTES`].
pub(super) async fn read_sub_range<F: TableSchema>(
    table: &Arc<Table<F>>,
    partition: u8,
    sub: u8,
    start: Option<Vec<u8>>,
) -> crate::error::Result<Page> {
    let table = Arc::clone(table);
    tokio::task::spawn_blocking(move || {
        let prefix = [partition, sub];
        let end = prefix_end(&prefix);
        let begin = match start {
            Some(s) if s.as_slice() > prefix.as_slice() => s,
            _ => prefix.to_vec(),
        };
        let mut page = Page {
            entries: Vec::new(),
            next: None,
        };
        if end.as_ref().is_some_and(|e| begin >= *e) {
            return Ok(page);
        }
        let mut bytes = 0usize;
        table.visit_raw(&begin, end.as_deref(), |k, v| {
            if page.entries.len() >= PAGE_ENTRIES || bytes >= PAGE_BYTES {
                page.next = Some(k.to_vec());
                return false;
            }
            bytes = bytes.saturating_add(k.len() + v.len());
            page.entries.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(page)
    })
    .await?
}

/// A failure that ends the sync with one replica, or the whole sync if it is local.
enum StepError {
    Peer(CallError),
    Local(crate::error::Error),
}

impl From<CallError> for StepError {
    fn from(e: CallError) -> Self {
        Self::Peer(e)
    }
}

impl From<crate::error::Error> for StepError {
    fn from(e: crate::error::Error) -> Self {
        Self::Local(e)
    }
}

/// The sync state of one other replica.
struct Peer {
    line: NodeSync,
    digest: Vec<[u8; 32]>,
}

impl Peer {
    fn alive(&self) -> bool {
        self.line.error.is_none()
    }
}

impl<F: TableSchema> ReplicatedTable<F> {
    /// Makes this node's replica of `partition` and those of the other nodes of every live
    /// layout version converge (see the module docs), and says whether this node is now
    /// synced ([`SyncReport::is_synced`]).
    ///
    /// Memory stays bounded by one sub-range: its entry identities (32 bytes each, for this
    /// node and each peer) and one page at a time. Each call is bounded by the table's
    /// timeout; a peer that fails one is left out for the rest of this pass.
    ///
    /// # Errors
    /// [`SyncError::NotSynced`] when too few replicas of some live version were synced with
    /// (whatever moved did move), [`SyncError::NoNodes`] without a layout,
    /// [`SyncError::NotAReplica`] when this node does not hold the partition,
    /// [`SyncError::Local`] when the local database fails.
    pub async fn sync_partition(&self, partition: u16) -> Result<SyncReport, SyncError> {
        let p = partition_byte(partition).ok_or(SyncError::NoSuchPartition(partition))?;
        let sets = self.replication().write_sets(&partition_probe(p));
        if sets.iter().all(Vec::is_empty) {
            return Err(SyncError::NoNodes(partition));
        }
        let me = self.rpc().node_id();
        if !sets.iter().flatten().any(|n| *n == me) {
            return Err(SyncError::NotAReplica(partition));
        }
        let mut others: Vec<NodeId> = Vec::new();
        for n in sets.iter().flatten() {
            if *n != me && !others.contains(n) {
                others.push(*n);
            }
        }

        let local = partition_digest(self.local(), p).await?;
        let digests = futures::future::join_all(
            others
                .iter()
                .map(|&node| self.call(node, TableReq::PartitionDigest { partition })),
        )
        .await;
        let mut peers: Vec<Peer> = others
            .iter()
            .zip(digests)
            .map(|(&node, r)| {
                let r = r.and_then(|resp| match resp {
                    TableResp::Digest(d) if d.len() == SUB_RANGES => Ok(d),
                    _ => Err(CallError::Unexpected("not a partition digest")),
                });
                let (digest, error) = match r {
                    Ok(d) => (d, None),
                    Err(e) => (Vec::new(), Some(e)),
                };
                Peer {
                    line: NodeSync {
                        node,
                        differing: 0,
                        received: 0,
                        sent: 0,
                        error,
                    },
                    digest,
                }
            })
            .collect();

        for sub in 0..=u8::MAX {
            let s = usize::from(sub);
            if !peers.iter().any(|x| x.alive() && x.digest[s] != local[s]) {
                continue;
            }
            self.sync_sub_range(p, sub, &local[s], &mut peers).await?;
        }

        let report = self.report(partition, &sets, me, peers);
        if report.is_synced() {
            Ok(report)
        } else {
            Err(SyncError::NotSynced(Box::new(report)))
        }
    }

    /// Pulls sub-range `sub` from the live peers whose digest differs from `ours`, merges it
    /// locally, then pushes to every live peer what it lacks of the result.
    async fn sync_sub_range(
        &self,
        p: u8,
        sub: u8,
        ours: &[u8; 32],
        peers: &mut [Peer],
    ) -> Result<(), SyncError> {
        let s = usize::from(sub);
        // What this node held before: peers with the same digest hold exactly that.
        let before = self.local_ids(p, sub).await?;
        let pulls = futures::future::join_all(peers.iter().map(|x| async {
            if x.alive() && x.digest[s] != *ours {
                Some(self.pull(x.line.node, p, sub, &before).await)
            } else {
                None
            }
        }))
        .await;
        let mut known: Vec<Option<HashSet<[u8; 32]>>> = Vec::with_capacity(peers.len());
        let mut changed = false;
        for (x, pulled) in peers.iter_mut().zip(pulls) {
            match pulled {
                None => known.push(None),
                Some(Ok((ids, received))) => {
                    x.line.differing += 1;
                    x.line.received += received;
                    changed |= received > 0;
                    known.push(Some(ids));
                }
                Some(Err(StepError::Local(e))) => return Err(SyncError::Local(e)),
                Some(Err(StepError::Peer(e))) => {
                    x.line.differing += 1;
                    x.line.error = Some(e);
                    known.push(None);
                }
            }
        }
        // Push to the peers pulled from, and to those equal to the old local copy if it
        // changed (it may now hold what another peer had).
        let targets: Vec<(usize, &HashSet<[u8; 32]>)> = peers
            .iter()
            .enumerate()
            .filter(|(_, x)| x.alive())
            .filter_map(|(i, x)| match &known[i] {
                Some(ids) => Some((i, ids)),
                None if changed && x.digest[s] == *ours => Some((i, &before)),
                None => None,
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let mut sent = vec![0usize; peers.len()];
        let mut failed: Vec<Option<CallError>> = (0..peers.len()).map(|_| None).collect();
        let mut start = None;
        loop {
            let page = read_sub_range(self.local(), p, sub, start).await?;
            let sends = futures::future::join_all(
                targets
                    .iter()
                    .filter(|(i, _)| failed[*i].is_none())
                    .map(|&(i, ids)| {
                        let missing: Vec<Vec<u8>> = page
                            .entries
                            .iter()
                            .filter(|(k, v)| !ids.contains(&entry_id(k, v)))
                            .map(|(_, v)| v.clone())
                            .collect();
                        let node = peers[i].line.node;
                        async move {
                            let n = missing.len();
                            if n == 0 {
                                return (i, Ok(0));
                            }
                            let r = self.call(node, TableReq::Push(missing)).await;
                            let r = r.and_then(|resp| match resp {
                                TableResp::Updated => Ok(n),
                                _ => Err(CallError::Unexpected("not an update acknowledgement")),
                            });
                            (i, r)
                        }
                    }),
            )
            .await;
            for (i, r) in sends {
                match r {
                    Ok(n) => sent[i] += n,
                    Err(e) => failed[i] = Some(e),
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        for (i, x) in peers.iter_mut().enumerate() {
            x.line.sent += sent[i];
            if let Some(e) = failed[i].take() {
                x.line.error = Some(e);
            }
        }
        Ok(())
    }

    /// The identities of the local entries of a sub-range.
    async fn local_ids(&self, p: u8, sub: u8) -> Result<HashSet<[u8; 32]>, SyncError> {
        let mut ids = HashSet::new();
        let mut start = None;
        loop {
            let page = read_sub_range(self.local(), p, sub, start).await?;
            ids.extend(page.entries.iter().map(|(k, v)| entry_id(k, v)));
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(ids),
            }
        }
    }

    /// Fetches `node`'s entries of a sub-range page by page, merging locally those not in
    /// `before`; returns the identities of all its entries and how many were merged.
    async fn pull(
        &self,
        node: NodeId,
        p: u8,
        sub: u8,
        before: &HashSet<[u8; 32]>,
    ) -> Result<(HashSet<[u8; 32]>, usize), StepError> {
        let prefix = [p, sub];
        let mut ids = HashSet::new();
        let mut received = 0;
        let mut start: Option<Vec<u8>> = None;
        loop {
            let req = TableReq::ReadSubRange {
                partition: u16::from(p),
                sub,
                start: start.clone(),
            };
            let TableResp::SubRange { entries, next } = self.call(node, req).await? else {
                return Err(CallError::Unexpected("not a sub-range page").into());
            };
            let mut merge = Vec::new();
            for raw in &entries {
                let e: F::E = decode(raw).map_err(CallError::from)?;
                let key = storage_key(&e.partition_key().hash(), &e.sort_key().sort_key());
                if !key.starts_with(&prefix) || start.as_ref().is_some_and(|s| key < *s) {
                    return Err(CallError::Unexpected("an entry outside the sub-range").into());
                }
                let id = entry_id(&key, raw);
                if !before.contains(&id) {
                    merge.push(e);
                }
                ids.insert(id);
            }
            received += merge.len();
            if !merge.is_empty() {
                // The normal insert path: merged with the local copy, hooks run.
                self.local().insert_many(merge).await?;
            }
            match next {
                // Each page must move forward, or a confused peer would loop us forever.
                Some(n)
                    if !entries.is_empty()
                        && n.starts_with(&prefix)
                        && start.as_ref().is_none_or(|s| n > *s) =>
                {
                    start = Some(n);
                }
                Some(_) => {
                    return Err(CallError::Unexpected("a page that does not move forward").into());
                }
                None => return Ok((ids, received)),
            }
        }
    }

    /// Calls `node` with the table's timeout; a refusal is an error.
    async fn call(&self, node: NodeId, req: TableReq) -> Result<TableResp, CallError> {
        match self
            .rpc()
            .call::<TableRpc<F>>(node, &req, self.timeout())
            .await
        {
            Ok(TableResp::Error(e)) => Err(CallError::Refused(e)),
            Ok(resp) => Ok(resp),
            Err(e) => Err(CallError::Rpc(e)),
        }
    }

    /// The report, with the quorum condition evaluated over every live version's set.
    fn report(
        &self,
        partition: u16,
        sets: &[Vec<NodeId>],
        me: NodeId,
        peers: Vec<Peer>,
    ) -> SyncReport {
        let nodes: Vec<NodeSync> = peers.into_iter().map(|x| x.line).collect();
        // A node rebuilding its metadata does not hold what it acknowledged before.
        let me_holds = !self.local().db.rebuilding();
        let synced = |n: &NodeId| {
            (*n == me && me_holds) || nodes.iter().any(|l| l.node == *n && l.error.is_none())
        };
        let q = self.replication().quorums();
        // The worst set (least margin over what it needs) decides; report its numbers.
        let mut worst: Option<(usize, usize)> = None;
        for set in sets.iter().filter(|s| !s.is_empty()) {
            let mut distinct = set.clone();
            distinct.sort();
            distinct.dedup();
            let needed = needed_in_set(distinct.len(), q);
            let got = distinct.iter().filter(|x| synced(x)).count();
            if worst.is_none_or(|(wn, wg)| got + wn < wg + needed) {
                worst = Some((needed, got));
            }
        }
        let (needed, got) = worst.unwrap_or((1, 0));
        SyncReport {
            table: F::TABLE_NAME,
            partition,
            nodes,
            needed,
            got,
        }
    }
}

/// Synced nodes needed in a set of `len` nodes so that they share a node with every write
/// quorum of it (`len - write + 1`), and at least a read quorum (what a read would ask);
/// never more than the whole set, which holds every write it acknowledged.
fn needed_in_set(len: usize, q: super::Quorums) -> usize {
    let intersect = len.saturating_sub(q.write) + 1;
    intersect.max(q.read).min(len)
}

/// A table that anti-entropy can drive without knowing its schema, so that one worker and
/// the layout coordinator handle every table alike.
pub trait SyncTable: Send + Sync {
    /// The table's name, for logs.
    fn table_name(&self) -> &'static str;

    /// [`ReplicatedTable::sync_partition`].
    fn sync_partition(&self, partition: u16) -> BoxFuture<'_, Result<SyncReport, SyncError>>;
}

impl<F: TableSchema> SyncTable for ReplicatedTable<F> {
    fn table_name(&self) -> &'static str {
        F::TABLE_NAME
    }

    fn sync_partition(&self, partition: u16) -> BoxFuture<'_, Result<SyncReport, SyncError>> {
        Box::pin(ReplicatedTable::sync_partition(self, partition))
    }
}

/// Syncs every partition in `partitions` of every table, one at a time, and says whether
/// all synced: the layout coordinator's test for "this node holds every acknowledged
/// write of the live versions", before it reports the node synced. Failures do not stop
/// the pass (the rest still gets repaired); each is logged.
///
/// # Errors
/// [`SyncError::Incomplete`] when some table partition did not sync.
pub async fn sync_all(tables: &[Arc<dyn SyncTable>], partitions: &[u16]) -> Result<(), SyncError> {
    let mut failed = 0;
    let mut first = None;
    for table in tables {
        for &p in partitions {
            if let Err(e) = sync_one(table.as_ref(), p).await {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(SyncError::Incomplete {
            failed,
            total: tables.len() * partitions.len(),
            first: Box::new(first),
        }),
    }
}

/// One partition of one table, logged.
async fn sync_one(table: &dyn SyncTable, partition: u16) -> Result<SyncReport, SyncError> {
    let name = table.table_name();
    match table.sync_partition(partition).await {
        Ok(report) => {
            if report.repaired() {
                tracing::info!(table = name, partition, "anti-entropy repaired: {report}");
            } else {
                tracing::debug!(table = name, partition, "anti-entropy: in sync");
            }
            Ok(report)
        }
        Err(SyncError::NoNodes(p)) => {
            // Before the first layout there is nothing to sync with: not worth a warning.
            tracing::debug!(table = name, partition, "anti-entropy: no layout yet");
            Err(SyncError::NoNodes(p))
        }
        Err(e) => {
            tracing::warn!(table = name, partition, error = %e, "anti-entropy failed");
            Err(e)
        }
    }
}

/// The anti-entropy worker: every `interval` (and once at start, so that a node back from
/// an outage catches up at once), syncs each partition `partitions` returns (those this
/// node holds in any live layout version, asked afresh each pass so layout changes apply)
/// of each table, one at a time so that it stays a background load. Returns when
/// `shutdown` flips or its sender is dropped.
pub async fn run_anti_entropy(
    tables: Vec<Arc<dyn SyncTable>>,
    partitions: impl Fn() -> Vec<u16> + Send + Sync,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        for table in &tables {
            for p in partitions() {
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    _ = sync_one(table.as_ref(), p) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
#[path = "sync_tests.rs"]
mod tests;
