//! Tombstone GC: removing entries that only say "deleted", without letting them come back.
//!
//! A CRDT deletion is a tombstone (a `deleted` flag, a register set to nothing) that must
//! win the merge against every older live copy. Dropping it on one replica while another
//! replica, or a message in flight, still holds an older live value would resurrect the
//! entry at the next read repair or anti-entropy pass. So, as in Garage:
//!
//! 1. When [`super::Table`] stores an entry its schema calls a tombstone
//!    ([`TableSchema::is_tombstone`]), it records a *candidate* in the same redb
//!    transaction: storage key → (hash of the stored bytes, time recorded), in the
//!    `<table>_gc_todo` redb table.
//! 2. [`ReplicatedTable::collect_tombstones`] takes the candidates older than the GC delay
//!    whose local value is still that tombstone, and asks every node of every live write set
//!    of the entry's partition for the hash of its copy ([`TableReq::EntryHashes`]).
//! 3. Only when *all* of them answered with exactly the same bytes does it send
//!    [`TableReq::DeleteIfEqual`] to all of them (each deletes only if its copy still has
//!    that hash and is a tombstone, in one transaction, without running hooks), then deletes
//!    the local copy likewise and drops the candidate. A node down or holding another value
//!    keeps the candidate for the next pass (another value means a merge is pending:
//!    anti-entropy brings the replicas together, then the GC collects).
//!
//! After a collection no replica of any live layout version holds an older live value, and
//! the delay bounds how late a write older than the deletion may still arrive (a retried
//! request, a slow insert queue) without bringing it back. What stays out of reach: a node
//! that held the partition in a layout version already retired and joins its set again
//! later, with a copy older than the deletion (ex-owners keep their data today).
//!
//! Deletes run no `updated` hook: a tombstone's hook effects (releasing chunks, counters)
//! happened when it was stored, and an absent entry means the same as the tombstone.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::watch;

use super::replicated::CallError;
use super::replication::group_by_write_sets;
use super::sync_rpc::{TableReq, TableResp, TableRpc};
use super::{Db, ReplicatedTable, Table, TableSchema, definition};
use crate::rpc::NodeId;
use crate::util::encode::decode;
use crate::util::id::Hash;
use crate::util::time::now_ms;

/// Most candidates checked together (one request to each replica carries this many keys).
const BATCH: usize = 512;

/// Most candidates read in one snapshot while looking for due ones.
const SCAN_PAGE: usize = 10_000;

/// Most keys a peer may ask about, or ask to delete, in one request.
pub(super) const MAX_ITEMS: usize = 4096;

/// Bytes of a candidate's value: the entry hash, then the time recorded (ms, big-endian).
const CANDIDATE_LEN: usize = 40;

/// The name of `F`'s candidate table.
fn todo_name<F: TableSchema>() -> String {
    format!("{}_gc_todo", F::TABLE_NAME)
}

/// The redb table of candidates named `name`: storage key → [`CANDIDATE_LEN`] bytes.
fn todo_def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Creates `F`'s candidate table (so that read transactions can open it).
pub(super) fn create_todo<F: TableSchema>(db: &Db) -> crate::error::Result<()> {
    db.create_table(todo_def(&todo_name::<F>()))
}

/// The hash that identifies one stored value of an entry.
fn value_hash(bytes: &[u8]) -> Hash {
    Hash::hash_of(bytes)
}

fn encode_candidate(hash: &Hash, recorded_ms: u64) -> [u8; CANDIDATE_LEN] {
    let mut out = [0; CANDIDATE_LEN];
    out[..32].copy_from_slice(hash.as_bytes());
    out[32..].copy_from_slice(&recorded_ms.to_be_bytes());
    out
}

fn decode_candidate(v: &[u8]) -> Option<(Hash, u64)> {
    let hash: [u8; 32] = v.get(..32)?.try_into().ok()?;
    let ms: [u8; 8] = v.get(32..CANDIDATE_LEN)?.try_into().ok()?;
    Some((Hash::from(hash), u64::from_be_bytes(ms)))
}

/// Records that `value`, just stored under `key` in `txn`, is a tombstone: called by
/// [`Table`]'s insert path, so a tombstone is never stored without its candidate.
pub(super) fn record_candidate<F: TableSchema>(
    txn: &WriteTransaction,
    key: &[u8],
    value: &[u8],
) -> crate::error::Result<()> {
    let name = todo_name::<F>();
    let mut todo = txn.open_table(todo_def(&name))?;
    todo.insert(
        key,
        encode_candidate(&value_hash(value), now_ms()).as_slice(),
    )?;
    Ok(())
}

/// What [`Table::delete_if_equal`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Deletion {
    /// Tombstones this call removed.
    pub removed: u64,
    /// Entries already gone: another replica's pass over the same candidate (every node
    /// runs one) collected them first.
    pub absent: u64,
}

/// What [`Table::check_local`] found in a batch of due candidates.
struct LocalCheck {
    /// Still that tombstone here: to check with the other replicas.
    keep: Vec<Candidate>,
    /// Live again (written since), so no longer candidates.
    dropped: usize,
    /// Entry and candidate already removed, by another replica's pass.
    gone: usize,
}

/// One candidate read from the table.
#[derive(Clone, Debug)]
struct Candidate {
    /// Storage key of the entry.
    key: Vec<u8>,
    /// The candidate's raw value, to remove it only if nobody re-recorded it meanwhile.
    raw: Vec<u8>,
    /// Hash of the tombstone's bytes.
    hash: Hash,
}

/// Why a GC pass stopped. Replicas that do not answer are no error: their candidates wait
/// for the next pass ([`GcReport::unreachable`]).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The local database failed.
    #[error("local replica: {0}")]
    Local(#[from] crate::error::Error),
}

/// What one pass over a table's candidates did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// The table.
    pub table: &'static str,
    /// Candidates past the delay that the pass looked at.
    pub due: usize,
    /// Tombstones now gone from every replica (removed by this pass, or by another
    /// replica's pass over the same entries that ran alongside it).
    pub collected: usize,
    /// Candidates dropped because the local entry is gone or no longer that tombstone
    /// (written again since: it is not deleted).
    pub dropped: usize,
    /// Candidates kept because some replica did not answer (down, or no layout yet).
    pub unreachable: usize,
    /// Candidates kept because some replica holds another value (a merge pending that
    /// anti-entropy will bring everywhere).
    pub different: usize,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} due, {} collected, {} dropped (live again), {} waiting for a replica, {} waiting for a merge",
            self.table, self.due, self.collected, self.dropped, self.unreachable, self.different
        )
    }
}

impl<F: TableSchema> Table<F> {
    /// From `start` (inclusive), up to [`BATCH`] candidates recorded at or before
    /// `due_ms`, reading at most [`SCAN_PAGE`] candidates; and where to continue (`None`:
    /// the scan reached the end). Blocking.
    fn due_candidates(
        &self,
        start: Option<&[u8]>,
        due_ms: u64,
    ) -> crate::error::Result<(Vec<Candidate>, Option<Vec<u8>>)> {
        let name = todo_name::<F>();
        let txn = self.db.begin_read()?;
        let todo = txn.open_table(todo_def(&name))?;
        let mut due = Vec::new();
        for (scanned, item) in todo
            .range::<&[u8]>(start.unwrap_or_default()..)?
            .enumerate()
        {
            let (k, v) = item?;
            if due.len() >= BATCH || scanned >= SCAN_PAGE {
                return Ok((due, Some(k.value().to_vec())));
            }
            let (hash, recorded) = decode_candidate(v.value()).unwrap_or((Hash::default(), 0));
            // An undecodable candidate is due at once: the local check drops it.
            if recorded <= due_ms {
                due.push(Candidate {
                    key: k.value().to_vec(),
                    raw: v.value().to_vec(),
                    hash,
                });
            }
        }
        Ok((due, None))
    }

    /// Splits `candidates` into those whose local entry still is that tombstone, and
    /// removes the others from the candidate table (unless re-recorded meanwhile).
    /// Blocking.
    fn check_local(&self, candidates: Vec<Candidate>) -> crate::error::Result<LocalCheck> {
        let name = todo_name::<F>();
        let txn = self.db.begin_write()?;
        let mut keep = Vec::new();
        let mut dropped = 0;
        let mut gone = 0;
        {
            let table = txn.open_table(definition::<F>())?;
            let mut todo = txn.open_table(todo_def(&name))?;
            for c in candidates {
                let current = todo.get(c.key.as_slice())?.map(|v| v.value().to_vec());
                if current.as_ref() != Some(&c.raw) {
                    // Re-recorded (a newer tombstone), or removed since the scan: by
                    // another replica's pass when the entry went with it.
                    if current.is_none() && table.get(c.key.as_slice())?.is_none() {
                        gone += 1;
                    }
                    continue;
                }
                let still = table.get(c.key.as_slice())?.is_some_and(|v| {
                    value_hash(v.value()) == c.hash
                        && decode::<F::E>(v.value()).is_ok_and(|e| F::is_tombstone(&e))
                });
                if still {
                    keep.push(c);
                } else {
                    todo.remove(c.key.as_slice())?;
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(LocalCheck {
            keep,
            dropped,
            gone,
        })
    }

    /// The hash of the local copy of each of `keys` (`None`: no such entry). Blocking.
    pub(super) fn entry_hashes(&self, keys: &[Vec<u8>]) -> crate::error::Result<Vec<Option<Hash>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(definition::<F>())?;
        keys.iter()
            .map(|k| Ok(table.get(k.as_slice())?.map(|v| value_hash(v.value()))))
            .collect()
    }

    /// In one transaction and without running hooks, removes each entry of `items` whose
    /// stored bytes still hash to the given hash and decode to a tombstone (a newer value,
    /// or a live one a confused peer named, stays), with its candidate. Candidates of
    /// entries already gone are removed too. Blocking.
    pub(super) fn delete_if_equal(
        &self,
        items: &[(Vec<u8>, Hash)],
    ) -> crate::error::Result<Deletion> {
        let name = todo_name::<F>();
        let txn = self.db.begin_write()?;
        let mut out = Deletion::default();
        {
            let mut table = txn.open_table(definition::<F>())?;
            let mut todo = txn.open_table(todo_def(&name))?;
            for (key, hash) in items {
                let verdict = table.get(key.as_slice())?.map(|v| {
                    value_hash(v.value()) == *hash
                        && decode::<F::E>(v.value()).is_ok_and(|e| F::is_tombstone(&e))
                });
                match verdict {
                    Some(true) => {
                        table.remove(key.as_slice())?;
                        todo.remove(key.as_slice())?;
                        out.removed += 1;
                    }
                    Some(false) => {}
                    None => {
                        todo.remove(key.as_slice())?;
                        out.absent += 1;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(out)
    }

    /// The candidates of this table: (storage key, tombstone hash, time recorded).
    #[cfg(test)]
    pub(super) fn gc_candidates(&self) -> crate::error::Result<Vec<(Vec<u8>, Hash, u64)>> {
        let name = todo_name::<F>();
        let txn = self.db.begin_read()?;
        let todo = txn.open_table(todo_def(&name))?;
        let mut out = Vec::new();
        for item in todo.range::<&[u8]>(..)? {
            let (k, v) = item?;
            if let Some((h, ms)) = decode_candidate(v.value()) {
                out.push((k.value().to_vec(), h, ms));
            }
        }
        Ok(out)
    }
}

/// The partition hash of a storage key (its first 32 bytes).
fn partition_of_key(key: &[u8]) -> Option<Hash> {
    let bytes: [u8; 32] = key.get(..32)?.try_into().ok()?;
    Some(Hash::from(bytes))
}

impl<F: TableSchema> ReplicatedTable<F> {
    /// One GC pass over this node's candidates (see the module docs): collects, from every
    /// replica, the tombstones recorded at least `delay` ago that every node of every live
    /// write set of their partition holds as the same bytes.
    ///
    /// # Errors
    /// [`GcError::Local`] when the local database fails; unreachable or diverging replicas
    /// only keep their candidates ([`GcReport`]).
    pub async fn collect_tombstones(&self, delay: Duration) -> Result<GcReport, GcError> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let due_ms = now_ms().saturating_sub(delay_ms);
        let mut report = GcReport {
            table: F::TABLE_NAME,
            ..GcReport::default()
        };
        let mut start: Option<Vec<u8>> = None;
        loop {
            let local = Arc::clone(self.local());
            let from = start.take();
            let (batch, next) =
                tokio::task::spawn_blocking(move || local.due_candidates(from.as_deref(), due_ms))
                    .await
                    .map_err(crate::error::Error::from)??;
            if !batch.is_empty() {
                report.due += batch.len();
                self.collect_batch(batch, &mut report).await?;
            }
            match next {
                Some(n) => start = Some(n),
                None => return Ok(report),
            }
        }
    }

    /// Steps 2 and 3 of the module docs for one batch of due candidates.
    async fn collect_batch(
        &self,
        batch: Vec<Candidate>,
        report: &mut GcReport,
    ) -> Result<(), GcError> {
        let local = Arc::clone(self.local());
        let checked = tokio::task::spawn_blocking(move || local.check_local(batch))
            .await
            .map_err(crate::error::Error::from)??;
        report.dropped += checked.dropped;
        report.collected += checked.gone;
        let mut items = Vec::with_capacity(checked.keep.len());
        for c in checked.keep {
            match partition_of_key(&c.key) {
                Some(p) => items.push((p, c)),
                // Storage keys start with the partition hash; a shorter one is not ours.
                None => report.unreachable += 1,
            }
        }
        let me = self.rpc().node_id();
        for (sets, group) in group_by_write_sets(self.replication().as_ref(), items) {
            if sets.iter().all(Vec::is_empty) {
                report.unreachable += group.len();
                continue;
            }
            let mut seen = HashSet::new();
            let nodes: Vec<NodeId> = sets
                .iter()
                .flatten()
                .copied()
                .filter(|n| *n != me && seen.insert(*n))
                .collect();
            self.collect_group(&nodes, group, report).await?;
        }
        Ok(())
    }

    /// Collects the candidates of `group`, whose other replicas are `nodes`.
    async fn collect_group(
        &self,
        nodes: &[NodeId],
        group: Vec<Candidate>,
        report: &mut GcReport,
    ) -> Result<(), GcError> {
        let keys: Vec<Vec<u8>> = group.iter().map(|c| c.key.clone()).collect();
        let req = TableReq::EntryHashes { keys };
        let answers = futures::future::join_all(nodes.iter().map(|&n| self.gc_call(n, &req))).await;
        let mut agree = vec![true; group.len()];
        for (node, answer) in nodes.iter().zip(answers) {
            let hashes = match answer {
                Ok(TableResp::EntryHashes(h)) if h.len() == group.len() => h,
                Ok(_) => {
                    tracing::debug!(table = F::TABLE_NAME, %node, "tombstone gc: not an answer to entry hashes");
                    report.unreachable += group.len();
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(table = F::TABLE_NAME, %node, error = %e, "tombstone gc: replica unreachable");
                    report.unreachable += group.len();
                    return Ok(());
                }
            };
            for ((ok, c), h) in agree.iter_mut().zip(&group).zip(hashes) {
                *ok &= h == Some(c.hash);
            }
        }
        let (equal, differ): (Vec<_>, Vec<_>) =
            group.into_iter().zip(agree).partition(|(_, ok)| *ok);
        report.different += differ.len();
        if equal.is_empty() {
            return Ok(());
        }
        let items: Vec<(Vec<u8>, Hash)> = equal.into_iter().map(|(c, _)| (c.key, c.hash)).collect();
        let req = TableReq::DeleteIfEqual {
            items: items.clone(),
        };
        let deletes = futures::future::join_all(nodes.iter().map(|&n| self.gc_call(n, &req))).await;
        for (node, r) in nodes.iter().zip(deletes) {
            match r {
                Ok(TableResp::Deleted(_)) => {}
                Ok(_) => {
                    tracing::debug!(table = F::TABLE_NAME, %node, "tombstone gc: not a delete acknowledgement");
                    report.unreachable += items.len();
                    return Ok(());
                }
                Err(e) => {
                    // Some replicas may have deleted: this one still holds the tombstone,
                    // which anti-entropy spreads again before a later pass collects it.
                    tracing::debug!(table = F::TABLE_NAME, %node, error = %e, "tombstone gc: delete failed");
                    report.unreachable += items.len();
                    return Ok(());
                }
            }
        }
        let local = Arc::clone(self.local());
        let d = tokio::task::spawn_blocking(move || local.delete_if_equal(&items))
            .await
            .map_err(crate::error::Error::from)??;
        // Gone everywhere either way: the pass of another replica may have removed the
        // local copy between this pass's checks and its delete.
        report.collected += usize::try_from(d.removed + d.absent).unwrap_or(usize::MAX);
        Ok(())
    }

    /// Calls `node` with the table's timeout; a refusal is an error.
    async fn gc_call(&self, node: NodeId, req: &TableReq) -> Result<TableResp, CallError> {
        match self
            .rpc()
            .call::<TableRpc<F>>(node, req, self.timeout())
            .await
        {
            Ok(TableResp::Error(e)) => Err(CallError::Refused(e)),
            Ok(resp) => Ok(resp),
            Err(e) => Err(CallError::Rpc(e)),
        }
    }
}

/// A table the tombstone GC can drive without knowing its schema, so that one worker
/// handles every table alike (as [`super::SyncTable`] does for anti-entropy).
pub trait GcTable: Send + Sync {
    /// The table's name, for logs.
    fn gc_table_name(&self) -> &'static str;

    /// [`ReplicatedTable::collect_tombstones`].
    fn collect_tombstones(&self, delay: Duration) -> BoxFuture<'_, Result<GcReport, GcError>>;
}

impl<F: TableSchema> GcTable for ReplicatedTable<F> {
    fn gc_table_name(&self) -> &'static str {
        F::TABLE_NAME
    }

    fn collect_tombstones(&self, delay: Duration) -> BoxFuture<'_, Result<GcReport, GcError>> {
        Box::pin(ReplicatedTable::collect_tombstones(self, delay))
    }
}

/// One pass over one table, logged.
async fn collect_one(table: &dyn GcTable, delay: Duration) {
    match table.collect_tombstones(delay).await {
        Ok(r) if r.collected > 0 || r.unreachable > 0 || r.different > 0 => {
            tracing::info!(table = r.table, "tombstone gc: {r}");
        }
        Ok(r) => tracing::debug!(table = r.table, "tombstone gc: {r}"),
        Err(e) => {
            tracing::warn!(table = table.gc_table_name(), error = %e, "tombstone gc failed");
        }
    }
}

/// The tombstone GC worker: about every `interval` (the first pass at once), one pass over each
/// table's candidates recorded at least `delay` ago, one table at a time so that it stays
/// a background load. Every node runs it for its own candidates; passes of several nodes
/// over the same entry are harmless (deletes are conditional and idempotent). Returns when
/// `shutdown` flips or its sender is dropped.
pub async fn run_tombstone_gc(
    tables: Vec<Arc<dyn GcTable>>,
    delay: Duration,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        for table in &tables {
            tokio::select! {
                () = collect_one(table.as_ref(), delay) => {}
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(jittered(interval)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// `interval` ± 25%, so that nodes started together do not run their passes in lockstep
/// (each would check, and try to delete, the same candidates as the others).
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.75..1.25))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
#[path = "gc_tests.rs"]
mod tests;
