//! [`ReplicatedTable`]: a [`Table`] whose writes and reads go to the partition's replicas.
//!
//! It wraps the local [`Table`] (which stays the storage and merge path, unchanged) with a
//! [`TableReplication`] (where entries live, what quorums apply) and the node's [`Rpc`]:
//!
//! - [`ReplicatedTable::insert_many`] groups entries by destination, sends each group once to
//!   every node of every write set (one set per live layout version), and succeeds when each
//!   set reached its write quorum; the other replicas still receive it in the background.
//! - [`ReplicatedTable::get`] and [`ReplicatedTable::get_range`] ask the read nodes, wait for
//!   the read quorum, and merge the answers with the entries' CRDT merge, so a read after an
//!   acknowledged write sees it; then, in the background, they wait for the slower replicas
//!   too and send the merged entries to every replica whose copy differed (read repair).
//!
//! Calls to this node go through [`Rpc::call`]'s in-process path: no encoding on the wire,
//! no network, the same handler ([`TableHandler`]) as for peers. Callers set timestamps
//! (`next_timestamp`) before inserting, as with the local table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::replication::{SetsProgress, SetsTracker, TableReplication, group_by_write_sets};
use super::sync_rpc::{TableHandler, TableReq, TableResp, TableRpc};
use super::{Entry, PartitionKey, RangeStart, SortKey, Table, TableSchema};
use crate::rpc::quorum::fmt_errors;
use crate::rpc::{NodeId, Rpc, RpcError};
use crate::util::crdt::Crdt;
use crate::util::encode::{EncodeError, decode, encode};
use crate::util::id::Hash;

/// Why one replica did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call itself failed (unreachable, timeout, no such service).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The replica answered that it could not do it.
    #[error("refused: {0}")]
    Refused(String),
    /// The replica answered with something that is not an answer to the request.
    #[error("unexpected response: {0}")]
    Unexpected(&'static str),
    /// The replica holds an entry that supersedes the one written (encoded here): see
    /// [`ReplicatedTable::insert_unless_superseded`].
    #[error("the replica holds a newer entry")]
    Superseded(Vec<u8>),
    /// The replica's entries could not be decoded (version skew or corruption).
    #[error(transparent)]
    Decode(#[from] EncodeError),
}

/// Errors of a replicated read or write.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// No node stores the partition (no layout applied yet).
    #[error("no node stores this partition (is a cluster layout applied?)")]
    NoNodes,
    /// Too few replicas answered. For a write, the entry may still have reached some
    /// replicas: a retry is safe (merges are idempotent).
    #[error(
        "quorum not reached: {got} of {needed} replicas answered{}",
        fmt_errors(errors)
    )]
    Quorum {
        /// Successes needed (per write set).
        needed: usize,
        /// Successes obtained (in the worst set).
        got: usize,
        /// The replicas that failed, and why.
        errors: Vec<(NodeId, CallError)>,
    },
    /// An entry could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Read repairs running at once per table, past which reads skip repairing: each one
/// waits up to the call timeout for slow replicas, and a read burst against a dying node
/// must not turn into an unbounded pile of tasks.
const MAX_REPAIRS_IN_FLIGHT: usize = 1024;

/// The results of calls to replicas, as they come: the node and what it did.
type Results<T> = mpsc::Receiver<(NodeId, Result<T, CallError>)>;

/// One replica's answer to a read, keyed by sort key, with how far it is complete.
struct Answer<E> {
    node: NodeId,
    entries: BTreeMap<Vec<u8>, E>,
    /// The greatest sort key this answer is complete up to (`None`: complete): a range read
    /// truncated at its limit says nothing about the keys after its last one.
    covered_up_to: Option<Vec<u8>>,
}

impl<E> Answer<E> {
    fn covers(&self, key: &[u8]) -> bool {
        self.covered_up_to.as_deref().is_none_or(|last| key <= last)
    }
}

/// A table replicated over the nodes that [`TableReplication`] names.
///
/// The local [`Table`] API is untouched and keeps serving single-node callers; this type is
/// the cluster-aware front that the model layer switches to once a layout is distributed.
pub struct ReplicatedTable<F: TableSchema> {
    local: Arc<Table<F>>,
    replication: Arc<dyn TableReplication>,
    rpc: Rpc,
    timeout: Duration,
    /// Background read repairs, so that shutdown and tests can wait for them.
    repairs: Mutex<JoinSet<()>>,
}

impl<F: TableSchema> ReplicatedTable<F> {
    /// Fronts `local` with `replication`, calling replicas through `rpc` (each call bounded
    /// by `timeout`), and registers this table's service on `rpc` so that peers can store
    /// and read their replicas here.
    #[must_use]
    pub fn new(
        local: Arc<Table<F>>,
        replication: Arc<dyn TableReplication>,
        rpc: Rpc,
        timeout: Duration,
    ) -> Arc<Self> {
        rpc.register::<TableRpc<F>>(TableHandler::new(
            Arc::clone(&local),
            Arc::clone(&replication),
        ));
        Arc::new(Self {
            local,
            replication,
            rpc,
            timeout,
            repairs: Mutex::new(JoinSet::new()),
        })
    }

    /// The local replica (for hooks, workers and listings that stay local).
    #[must_use]
    pub fn local(&self) -> &Arc<Table<F>> {
        &self.local
    }

    /// Where the partitions live (anti-entropy syncs with the same nodes writes reach).
    pub(super) fn replication(&self) -> &Arc<dyn TableReplication> {
        &self.replication
    }

    /// The RPC handle calls to replicas go through.
    pub(super) fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The bound on each call to a replica.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Inserts one entry at write quorum; see [`Self::insert_many`].
    ///
    /// # Errors
    /// As [`Self::insert_many`].
    pub async fn insert(&self, entry: &F::E) -> Result<(), ReplicationError> {
        self.insert_many(std::slice::from_ref(entry)).await
    }

    /// Merges `entries` into their replicas: every write set of every entry's partition
    /// must acknowledge with its write quorum. Groups with different destinations are sent
    /// concurrently; the write is one quorum round trip.
    ///
    /// # Errors
    /// [`ReplicationError::NoNodes`] without a layout, [`ReplicationError::Quorum`] when a
    /// set cannot reach its quorum (the entries may still be stored on some replicas).
    pub async fn insert_many(&self, entries: &[F::E]) -> Result<(), ReplicationError> {
        // Held until the write is decided: the layout transition barrier waits for it.
        let _lock = self.replication.lock_write();
        let mut items = Vec::with_capacity(entries.len());
        for e in entries {
            items.push((e.partition_key().hash(), encode(e)?));
        }
        let groups = group_by_write_sets(self.replication.as_ref(), items);
        let quorum = self.replication.quorums().write;
        let writes = groups.into_iter().map(|(sets, encoded)| async move {
            if sets.iter().all(Vec::is_empty) {
                return Err(ReplicationError::NoNodes);
            }
            let tracker = SetsTracker::new(sets, quorum);
            let nodes = tracker.nodes();
            let mut rx = self.spawn_calls(&nodes, TableReq::Update(encoded), |_, r| match r {
                TableResp::Updated => Ok(()),
                _ => Err(CallError::Unexpected("not an update acknowledgement")),
            });
            let acked = self.await_quorum(tracker, &mut rx).await?;
            self.await_own_copy(&nodes, &acked, &mut rx, quorum).await
        });
        futures::future::try_join_all(writes).await.map(|_| ())
    }

    /// Writes `entry` without reading it first: each replica merges it unless its own copy
    /// [`TableSchema::supersedes`] it. Stored at write quorum: `Ok(None)`, one round trip.
    /// Too many replicas refused for a quorum: `Ok(Some(newer))`, what they hold merged,
    /// for the caller to write again above it (some replicas may have merged `entry`: it
    /// must be one that the newer entries prune or outrank).
    ///
    /// Why this is enough: an acknowledged write is on a write quorum, which meets every
    /// write quorum (both are majorities; `dangerous` mode promises nothing here, as for its
    /// reads), so a quorum that accepted holds no acknowledged entry that supersedes
    /// `entry`. A replica that cannot judge (rebuilding, or an older daemon) refuses with an
    /// error, and the caller falls back to reading first.
    ///
    /// # Errors
    /// As [`Self::insert_many`].
    pub async fn insert_unless_superseded(
        &self,
        entry: &F::E,
    ) -> Result<Option<F::E>, ReplicationError> {
        let _lock = self.replication.lock_write();
        let partition = entry.partition_key().hash();
        let groups =
            group_by_write_sets(self.replication.as_ref(), vec![(partition, encode(entry)?)]);
        let quorum = self.replication.quorums().write;
        let Some((sets, mut encoded)) = groups.into_iter().next() else {
            return Err(ReplicationError::NoNodes);
        };
        if sets.iter().all(Vec::is_empty) || encoded.len() != 1 {
            return Err(ReplicationError::NoNodes);
        }
        let tracker = SetsTracker::new(sets, quorum);
        let nodes = tracker.nodes();
        let req = TableReq::UpdateUnlessSuperseded(encoded.remove(0));
        let mut rx = self.spawn_calls(&nodes, req, |_, r| match r {
            TableResp::Updated => Ok(()),
            TableResp::Superseded(stored) => Err(CallError::Superseded(stored)),
            _ => Err(CallError::Unexpected("not an update acknowledgement")),
        });
        match self.await_quorum(tracker, &mut rx).await {
            Ok(acked) => {
                self.await_own_copy(&nodes, &acked, &mut rx, quorum).await?;
                Ok(None)
            }
            Err(ReplicationError::Quorum {
                errors,
                needed,
                got,
            }) => {
                let mut newer: Option<F::E> = None;
                for (_, e) in &errors {
                    if let CallError::Superseded(bytes) = e {
                        let stored: F::E = decode(bytes)?;
                        match &mut newer {
                            Some(n) => n.merge(&stored),
                            None => newer = Some(stored),
                        }
                    }
                }
                match newer {
                    Some(n) => Ok(Some(n)),
                    None => Err(ReplicationError::Quorum {
                        needed,
                        got,
                        errors,
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The entry at (`partition`, `sort`), merged from a read quorum of its replicas, or
    /// `None` if none of them has it. Replicas found stale are repaired in the background.
    ///
    /// # Errors
    /// [`ReplicationError::NoNodes`] without a layout, [`ReplicationError::Quorum`] when too
    /// few replicas answer.
    pub async fn get(
        &self,
        partition: &F::P,
        sort: &F::S,
    ) -> Result<Option<F::E>, ReplicationError> {
        let (nodes, quorum) = self.read_set(&partition.hash());
        self.get_from(partition, sort, nodes, quorum).await
    }

    /// The nodes a read asks and how many must answer: the read nodes, or while this node
    /// rebuilds its metadata (its own copy answers nothing) a quorum that intersects every
    /// write without it (see `rebuild`).
    fn read_set(&self, partition: &Hash) -> (Vec<NodeId>, usize) {
        if self.local.db.rebuilding() {
            self.replication.quorum_read(partition)
        } else {
            (
                self.replication.read_nodes(partition),
                self.replication.quorums().read,
            )
        }
    }

    /// This node's own copy of the entry at (`partition`, `sort`): no call at all. For a
    /// table read locally ([`super::FullReplication`]) it is what [`Self::get`] returns; it
    /// can miss a write this node has not received yet (see [`Self::get_quorum`]).
    ///
    /// # Errors
    /// When the local store cannot be read.
    pub async fn get_local(&self, partition: &F::P, sort: &F::S) -> crate::Result<Option<F::E>> {
        self.local.get(partition, sort).await
    }

    /// The entry at (`partition`, `sort`) as [`super::TableReplication::quorum_read`] sees
    /// it: for a table read locally, a quorum of the nodes that store it, so every
    /// acknowledged write is in the answer even when this node stores nothing (a node
    /// without a role) or missed the write. Stale replicas are repaired in the background.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn get_quorum(
        &self,
        partition: &F::P,
        sort: &F::S,
    ) -> Result<Option<F::E>, ReplicationError> {
        let (nodes, quorum) = self.replication.quorum_read(&partition.hash());
        self.get_from(partition, sort, nodes, quorum).await
    }

    async fn get_from(
        &self,
        partition: &F::P,
        sort: &F::S,
        nodes: Vec<NodeId>,
        quorum: usize,
    ) -> Result<Option<F::E>, ReplicationError> {
        let hash = partition.hash();
        let key = sort.sort_key().into_owned();
        let req = TableReq::ReadEntry {
            partition: hash,
            sort: key.clone(),
        };
        let merged = self
            .read(nodes, quorum, req, move |node, resp| {
                let TableResp::Entry(bytes) = resp else {
                    return Err(CallError::Unexpected("not an entry"));
                };
                let mut entries = BTreeMap::new();
                if let Some(b) = bytes {
                    let e: F::E = decode(&b)?;
                    if e.sort_key().sort_key().as_ref() != key.as_slice() {
                        return Err(CallError::Unexpected("an entry of another key"));
                    }
                    entries.insert(key.clone(), e);
                }
                Ok(Answer {
                    node,
                    entries,
                    covered_up_to: None,
                })
            })
            .await?;
        Ok(merged.into_values().next())
    }

    /// Up to `limit` entries of `partition` in sort-key order from `start`, merged from a
    /// read quorum of its replicas (each entry merged across the replicas that have it).
    /// Stale replicas are repaired in the background.
    ///
    /// Filters are not sent to replicas yet (a schema's filter is not serializable): filter
    /// the result, and continue from the last sort key for more.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn get_range(
        &self,
        partition: &F::P,
        start: RangeStart,
        limit: usize,
    ) -> Result<Vec<F::E>, ReplicationError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let hash = partition.hash();
        let req = TableReq::ReadRange {
            partition: hash,
            start: match start {
                RangeStart::First => None,
                RangeStart::From(s) => Some(s),
            },
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        };
        let (nodes, quorum) = self.read_set(&hash);
        let merged = self
            .read(nodes, quorum, req, move |node, resp| {
                let TableResp::Entries(list) = resp else {
                    return Err(CallError::Unexpected("not a list of entries"));
                };
                if list.len() > limit {
                    return Err(CallError::Unexpected("more entries than asked for"));
                }
                let full = list.len() == limit;
                let mut entries = BTreeMap::new();
                for b in list {
                    let e: F::E = decode(&b)?;
                    if e.partition_key().hash() != hash {
                        return Err(CallError::Unexpected("an entry of another partition"));
                    }
                    entries.insert(e.sort_key().sort_key().into_owned(), e);
                }
                let covered_up_to = if full {
                    entries.keys().next_back().cloned()
                } else {
                    None
                };
                Ok(Answer {
                    node,
                    entries,
                    covered_up_to,
                })
            })
            .await?;
        // A replica that returned `limit` entries is complete up to its last key, and the
        // merge has `limit` keys up to there; one that returned fewer is complete. So the
        // first `limit` merged keys miss nothing any answering replica holds.
        Ok(merged.into_values().take(limit).collect())
    }

    /// Like [`Self::get_range`], keeping only the entries that match `filter`: reads pages
    /// of `limit` until `limit` entries matched or the partition ends.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn get_range_filtered(
        &self,
        partition: &F::P,
        mut start: RangeStart,
        filter: Option<F::Filter>,
        limit: usize,
    ) -> Result<Vec<F::E>, ReplicationError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let page = self.get_range(partition, start, limit).await?;
            let full = page.len() == limit;
            let Some(last) = page.last() else { break };
            let mut next = last.sort_key().sort_key().into_owned();
            next.push(0);
            start = RangeStart::From(next);
            out.extend(
                page.into_iter()
                    .filter(|e| filter.as_ref().is_none_or(|f| F::matches_filter(e, f))),
            );
            if !full {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Drains the local insert queue of this table (entries that hooks of other tables
    /// produced) into the replicas, until `shutdown` flips.
    pub async fn run_queue_worker(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let this = Arc::clone(&self);
        Arc::clone(&self.local)
            .drain_queue_into(shutdown, move |entries| {
                let this = Arc::clone(&this);
                async move {
                    this.insert_many(&entries)
                        .await
                        .map_err(|e| crate::Error::Unavailable(e.to_string()))
                }
            })
            .await;
    }

    /// Waits for the read repairs started so far (graceful shutdown, tests).
    pub async fn flush_repairs(&self) {
        let mut running =
            std::mem::take(&mut *self.repairs.lock().unwrap_or_else(PoisonError::into_inner));
        while running.join_next().await.is_some() {}
    }

    /// Sends `req` to `nodes`, waits for `quorum` `parse`d answers, merges them, and leaves
    /// the late answers and the repairs to a background task.
    async fn read(
        &self,
        nodes: Vec<NodeId>,
        quorum: usize,
        req: TableReq,
        parse: impl Fn(NodeId, TableResp) -> Result<Answer<F::E>, CallError> + Clone + Send + 'static,
    ) -> Result<BTreeMap<Vec<u8>, F::E>, ReplicationError> {
        if nodes.is_empty() {
            return Err(ReplicationError::NoNodes);
        }
        let tracker = SetsTracker::new(vec![nodes], quorum);
        // Parsed in the call tasks, so that a garbled answer counts as a failure.
        let mut rx = self.spawn_calls(&tracker.nodes(), req, parse);
        let answers = self.await_quorum(tracker, &mut rx).await?;
        let answers: Vec<Answer<F::E>> = answers.into_iter().map(|(_, a)| a).collect();
        let merged = merge_answers(&answers);
        self.spawn_repair(answers, rx);
        Ok(merged)
    }

    /// Waits, after a write reached its quorum, for this node's own copy when it is one of
    /// `nodes`: so that this node's local reads (full-replication tables read locally) see
    /// its own writes. The local call is in process: this costs no round trip.
    async fn await_own_copy(
        &self,
        nodes: &[NodeId],
        acked: &[(NodeId, ())],
        rx: &mut Results<()>,
        quorum: usize,
    ) -> Result<(), ReplicationError> {
        let me = self.rpc.node_id();
        if nodes.contains(&me) && !acked.iter().any(|(n, ())| *n == me) {
            while let Some((node, r)) = rx.recv().await {
                if node == me {
                    return r.map_err(|e| ReplicationError::Quorum {
                        needed: quorum,
                        got: acked.len(),
                        errors: vec![(me, e)],
                    });
                }
            }
        }
        Ok(())
    }

    /// Calls each of `nodes` with `req`, each in its own task bounded by the timeout,
    /// and returns their `check`ed results as they come. The tasks outlive the caller, so a
    /// write still reaches the slow replicas after the quorum answered.
    fn spawn_calls<T: Send + 'static>(
        &self,
        nodes: &[NodeId],
        req: TableReq,
        check: impl Fn(NodeId, TableResp) -> Result<T, CallError> + Clone + Send + 'static,
    ) -> Results<T> {
        let (tx, rx) = mpsc::channel(nodes.len().max(1));
        let req = Arc::new(req);
        for &node in nodes {
            let (rpc, req, tx, check) = (
                self.rpc.clone(),
                Arc::clone(&req),
                tx.clone(),
                check.clone(),
            );
            let timeout = self.timeout;
            tokio::spawn(async move {
                let r = match rpc.call::<TableRpc<F>>(node, &req, timeout).await {
                    Ok(TableResp::Error(e)) => Err(CallError::Refused(e)),
                    Ok(resp) => check(node, resp),
                    Err(e) => Err(CallError::Rpc(e)),
                };
                // Nobody listens once the outcome is decided and the late answers unwanted.
                let _ = tx.send((node, r)).await;
            });
        }
        rx
    }

    /// Feeds results from `rx` to `tracker` until it decides.
    async fn await_quorum<T>(
        &self,
        mut tracker: SetsTracker,
        rx: &mut Results<T>,
    ) -> Result<Vec<(NodeId, T)>, ReplicationError> {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        let mut progress = tracker.progress();
        while progress == SetsProgress::Pending {
            let Some((node, r)) = rx.recv().await else {
                break; // Every call task ended without a decision: they were cancelled.
            };
            progress = match r {
                Ok(v) => {
                    ok.push((node, v));
                    tracker.record(node, true)
                }
                Err(e) => {
                    tracing::debug!(table = F::TABLE_NAME, %node, error = %e, "replica call failed");
                    errors.push((node, e));
                    tracker.record(node, false)
                }
            };
        }
        if progress == SetsProgress::Reached {
            Ok(ok)
        } else {
            let (needed, got) = tracker.counts();
            Err(ReplicationError::Quorum {
                needed,
                got,
                errors,
            })
        }
    }

    /// In the background: waits for the late answers, merges them in, and sends every
    /// replica that answered the merged entries its copy lacked.
    fn spawn_repair(&self, mut answers: Vec<Answer<F::E>>, mut late: Results<Answer<F::E>>) {
        let rpc = self.rpc.clone();
        let timeout = self.timeout;
        let mut repairs = self.repairs.lock().unwrap_or_else(PoisonError::into_inner);
        while repairs.try_join_next().is_some() {}
        if repairs.len() >= MAX_REPAIRS_IN_FLIGHT {
            // Replicas this slow are anti-entropy's job; reads must not pile up tasks.
            tracing::debug!(
                table = F::TABLE_NAME,
                "too many read repairs in flight, skipping"
            );
            return;
        }
        repairs.spawn(async move {
            while let Some((_, r)) = late.recv().await {
                if let Ok(a) = r {
                    answers.push(a);
                }
            }
            let merged = merge_answers(&answers);
            let mut sends = JoinSet::new();
            for a in &answers {
                let stale: Vec<Vec<u8>> = merged
                    .iter()
                    .filter(|(k, e)| a.covers(k) && a.entries.get(*k) != Some(*e))
                    .filter_map(|(_, e)| encode(e).ok())
                    .collect();
                if stale.is_empty() {
                    continue;
                }
                let (rpc, node) = (rpc.clone(), a.node);
                sends.spawn(async move {
                    let n = stale.len();
                    let req = TableReq::Update(stale);
                    match rpc.call::<TableRpc<F>>(node, &req, timeout).await {
                        Ok(TableResp::Updated) => {
                            tracing::debug!(table = F::TABLE_NAME, %node, entries = n, "read repair");
                        }
                        Ok(other) => {
                            tracing::debug!(table = F::TABLE_NAME, %node, ?other, "read repair refused");
                        }
                        Err(e) => {
                            tracing::debug!(table = F::TABLE_NAME, %node, error = %e, "read repair failed");
                        }
                    }
                });
            }
            while sends.join_next().await.is_some() {}
        });
    }
}

/// The CRDT merge of every answer, by sort key.
fn merge_answers<E: Crdt + Clone>(answers: &[Answer<E>]) -> BTreeMap<Vec<u8>, E> {
    let mut merged: BTreeMap<Vec<u8>, E> = BTreeMap::new();
    for a in answers {
        for (k, e) in &a.entries {
            match merged.get_mut(k) {
                Some(m) => m.merge(e),
                None => {
                    merged.insert(k.clone(), e.clone());
                }
            }
        }
    }
    merged
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
#[path = "replicated_tests.rs"]
mod tests;
