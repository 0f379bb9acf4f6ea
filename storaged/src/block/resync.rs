//! The resync queue: chunks this node must re-check against the layout, kept in the
//! metadata database so that a restart forgets none of them.
//!
//! For each queued chunk the [`ResyncWorker`] asks its [`Placement`] which nodes should
//! store it, then:
//! - this node is one of them and lacks the chunk (or holds a corrupt copy, which is set
//!   aside first): fetch it from the nearest peer that has it, verify, store durably;
//! - this node is none of them and holds the chunk: ask the owners whether they have it,
//!   hand it to those that do not, and delete the local copy only once at least the write
//!   quorum of every write set confirmed it (a chunk nobody owns is kept);
//! - otherwise: nothing to do.
//!
//! A chunk that could not be settled is retried after an exponential back-off
//! ([`ResyncConfig::retry_min`] doubling up to [`ResyncConfig::retry_max`]).
//!
//! ## Tables
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `block_resync` | hash (32 bytes) | `encode(ResyncEntry { due_ms, attempts })` |
//! | `block_resync_due` | `due_ms` (`u64` big endian) ++ hash | `()` |
//!
//! Both change in one transaction; the second orders the work by due time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::BlockManager;
use super::replication::{BlockReplicator, Zones, preferred_order, zones_of};
use crate::error::{Error, Result};
use crate::membership::NodeStatus;
use crate::rpc::NodeId;
use crate::table::{Db, TableReplication};
use crate::util::encode::{decode, encode};
use crate::util::id::Hash;
use crate::util::time::now_ms;

/// Chunk hash → its [`ResyncEntry`].
const RESYNC: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("block_resync");
/// `due_ms (big endian) ++ hash` → (): the queue in due order.
const RESYNC_DUE: TableDefinition<'static, &'static [u8], ()> =
    TableDefinition::new("block_resync_due");

/// One queued chunk (versioned on disk by [`encode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ResyncEntry {
    /// When to (re)try, in ms since the epoch.
    pub(super) due_ms: u64,
    /// Failed attempts so far: sets the back-off.
    pub(super) attempts: u32,
}

fn due_key(due_ms: u64, hash: &Hash) -> Vec<u8> {
    let mut key = due_ms.to_be_bytes().to_vec();
    key.extend_from_slice(hash.as_bytes());
    key
}

/// The persistent queue of chunks to re-check. Cheap to clone.
#[derive(Clone)]
pub struct ResyncQueue {
    db: Db,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for ResyncQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResyncQueue").finish_non_exhaustive()
    }
}

impl ResyncQueue {
    /// Opens the queue in `db`, creating its tables.
    ///
    /// # Errors
    /// Database errors.
    pub fn open(db: Db) -> Result<Self> {
        db.create_table(RESYNC)?;
        db.create_table(RESYNC_DUE)?;
        Ok(Self {
            db,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Queues `hash` for a check now (a chunk already queued for later is brought
    /// forward; its back-off restarts), and wakes the worker.
    ///
    /// # Errors
    /// Database errors.
    pub fn enqueue(&self, hash: Hash) -> Result<()> {
        self.schedule(
            &hash,
            ResyncEntry {
                due_ms: now_ms(),
                attempts: 0,
            },
            true,
        )?;
        self.wake.notify_one();
        Ok(())
    }

    /// A hook for [`BlockManager::set_corrupt_hook`]: scrub (or a read) that finds a
    /// corrupt chunk queues it, so resync fetches a good copy from a peer.
    #[must_use]
    pub fn corrupt_hook(&self) -> Box<dyn Fn(Hash) + Send + Sync> {
        let queue = self.clone();
        Box::new(move |hash| {
            if let Err(e) = queue.enqueue(hash) {
                tracing::error!(block = %hash, error = %e, "cannot queue a corrupt chunk for resync");
            }
        })
    }

    /// Every chunk queued, due or not (a layout transition waits for those queued when it
    /// started, not for the ones that writes keep adding).
    ///
    /// # Errors
    /// Database errors.
    pub fn snapshot(&self) -> Result<HashSet<Hash>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RESYNC)?;
        let mut out = HashSet::new();
        for item in table.iter()? {
            let (k, _) = item?;
            if let Ok(b) = <[u8; 32]>::try_from(k.value()) {
                out.insert(Hash::from(b));
            }
        }
        Ok(out)
    }

    /// Queued chunks that no replica could serve in `min_attempts` tries or more: a chunk
    /// referenced but stored nowhere (a part whose upload was cut before its chunk was
    /// written, for one) that waiting will not bring back.
    ///
    /// # Errors
    /// Database errors.
    pub fn failing(&self, min_attempts: u32) -> Result<HashSet<Hash>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RESYNC)?;
        let mut out = HashSet::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let entry: ResyncEntry = decode(v.value())?;
            if entry.attempts >= min_attempts
                && let Ok(b) = <[u8; 32]>::try_from(k.value())
            {
                out.insert(Hash::from(b));
            }
        }
        Ok(out)
    }

    /// Chunks queued, due or not.
    ///
    /// # Errors
    /// Database errors.
    pub fn len(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(RESYNC)?.len()?)
    }

    /// Whether nothing is queued.
    ///
    /// # Errors
    /// Database errors.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether `hash` is queued.
    ///
    /// # Errors
    /// Database errors.
    pub fn contains(&self, hash: &Hash) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(RESYNC)?
            .get(hash.as_bytes().as_slice())?
            .is_some())
    }

    /// The entry of `hash`, if queued.
    pub(super) fn get(&self, hash: &Hash) -> Result<Option<ResyncEntry>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RESYNC)?;
        let Some(v) = table.get(hash.as_bytes().as_slice())? else {
            return Ok(None);
        };
        Ok(Some(decode(v.value())?))
    }

    /// Sets the entry of `hash`; with `earlier_only`, an entry already due sooner is kept.
    fn schedule(&self, hash: &Hash, entry: ResyncEntry, earlier_only: bool) -> Result<()> {
        let txn = self.db.begin_write()?;
        Self::schedule_in(&txn, hash, entry, earlier_only)?;
        txn.commit()?;
        Ok(())
    }

    /// Queues `hash` for a check after `delay` inside `txn` (a table hook's transaction: a
    /// block reference arriving for a chunk this node lacks, whose own put may still be on
    /// its way: the delay lets it land instead of racing it), and wakes the worker; the
    /// worker also polls, so a wake-up that comes before the commit is not lost.
    ///
    /// # Errors
    /// Database errors.
    pub fn enqueue_in(
        &self,
        txn: &redb::WriteTransaction,
        hash: &Hash,
        delay: Duration,
    ) -> Result<()> {
        let entry = ResyncEntry {
            due_ms: now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            attempts: 0,
        };
        Self::schedule_in(txn, hash, entry, true)?;
        self.wake.notify_one();
        Ok(())
    }

    fn schedule_in(
        txn: &redb::WriteTransaction,
        hash: &Hash,
        entry: ResyncEntry,
        earlier_only: bool,
    ) -> Result<()> {
        {
            let mut table = txn.open_table(RESYNC)?;
            let mut due = txn.open_table(RESYNC_DUE)?;
            let old: Option<ResyncEntry> = match table.get(hash.as_bytes().as_slice())? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            if let Some(old) = old {
                if earlier_only && old.due_ms <= entry.due_ms {
                    return Ok(());
                }
                due.remove(due_key(old.due_ms, hash).as_slice())?;
            }
            table.insert(hash.as_bytes().as_slice(), encode(&entry)?.as_slice())?;
            due.insert(due_key(entry.due_ms, hash).as_slice(), ())?;
        }
        Ok(())
    }

    /// Removes `hash` if its entry is still `expected` (an `enqueue` that came while the
    /// worker handled it stays queued).
    fn finish(&self, hash: &Hash, expected: ResyncEntry) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RESYNC)?;
            let current: Option<ResyncEntry> = match table.get(hash.as_bytes().as_slice())? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            if current == Some(expected) {
                table.remove(hash.as_bytes().as_slice())?;
                txn.open_table(RESYNC_DUE)?
                    .remove(due_key(expected.due_ms, hash).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Up to `max` chunks due at `now_ms`, soonest first.
    fn due(&self, now_ms: u64, max: usize) -> Result<Vec<(Hash, ResyncEntry)>> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(RESYNC_DUE)?;
        let end = now_ms.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in due.range::<&[u8]>(..end.as_slice())?.take(max) {
            let (k, _) = item?;
            let key = k.value();
            let (Some(when), Some(hash)) = (
                key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                key.get(8..).and_then(|b| <[u8; 32]>::try_from(b).ok()),
            ) else {
                continue;
            };
            out.push((
                Hash::from(hash),
                ResyncEntry {
                    due_ms: u64::from_be_bytes(when),
                    attempts: 0,
                },
            ));
        }
        drop(due);
        // The attempts count lives in the main table.
        for (hash, entry) in &mut out {
            if let Some(e) = self.get(hash)? {
                *entry = e;
            }
        }
        Ok(out)
    }

    /// When the soonest entry is due.
    fn next_due(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(RESYNC_DUE)?;
        let first = due.first()?;
        Ok(first.and_then(|(k, _)| {
            k.value()
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        }))
    }
}

/// Which nodes should store a chunk: the layout, seen by resync.
pub trait Placement: Send + Sync + 'static {
    /// The node sets that must hold `hash` now: one per live layout version (see
    /// `ClusterLayout::write_sets` of the chunk's partition). This node owns the chunk iff
    /// it is in one of them. Empty when no layout is applied.
    fn write_sets(&self, hash: &Hash) -> Vec<Vec<NodeId>>;
    /// Copies that each write set must confirm before a node outside them drops its own.
    fn write_quorum(&self) -> usize;
    /// The zone of each node, to fetch from the nearest one.
    fn zones(&self) -> Zones {
        Zones::new()
    }
}

/// [`Placement`] from the metadata tables' placement (normally
/// [`crate::table::LayoutReplication`]): a chunk lives in the partition of its own hash, on
/// the same nodes and with the same write quorum as table entries of that partition; zones
/// come from membership when given.
pub struct TablePlacement<R> {
    replication: R,
    members: Option<watch::Receiver<Vec<NodeStatus>>>,
}

impl<R: TableReplication> TablePlacement<R> {
    /// Placement by `replication`, with zones from `members` (`Membership::watch`), if any.
    #[must_use]
    pub fn new(replication: R, members: Option<watch::Receiver<Vec<NodeStatus>>>) -> Self {
        Self {
            replication,
            members,
        }
    }
}

impl<R: TableReplication> Placement for TablePlacement<R> {
    fn write_sets(&self, hash: &Hash) -> Vec<Vec<NodeId>> {
        self.replication.write_sets(hash)
    }

    fn write_quorum(&self) -> usize {
        self.replication.quorums().write
    }

    fn zones(&self) -> Zones {
        self.members
            .as_ref()
            .map(|m| zones_of(&m.borrow()))
            .unwrap_or_default()
    }
}

/// Intervals of the [`ResyncWorker`] (every background delay is configurable, so tests
/// run them in milliseconds).
#[derive(Clone, Debug)]
pub struct ResyncConfig {
    /// Back-off after the first failed attempt on a chunk; doubles on each failure.
    pub retry_min: Duration,
    /// The cap of that back-off.
    pub retry_max: Duration,
    /// Longest sleep of an idle worker before it looks at the queue again (an `enqueue`
    /// wakes it at once anyway).
    pub idle_poll: Duration,
    /// Chunks taken from the queue per pass.
    pub batch: usize,
}

impl Default for ResyncConfig {
    fn default() -> Self {
        Self {
            retry_min: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
            idle_poll: Duration::from_secs(60),
            batch: 64,
        }
    }
}

impl ResyncConfig {
    /// The back-off after `attempts` failed attempts.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_min
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// What handling one chunk did (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncOutcome {
    /// Nothing to do: present where needed, absent where not.
    InPlace,
    /// Fetched from a peer and stored here.
    Fetched,
    /// Its owners confirmed it; the local copy was deleted.
    Dropped,
}

/// Works through the [`ResyncQueue`] of this node.
pub struct ResyncWorker {
    queue: ResyncQueue,
    manager: Arc<BlockManager>,
    replicator: BlockReplicator,
    placement: Arc<dyn Placement>,
    cfg: ResyncConfig,
}

impl ResyncWorker {
    /// A worker settling `queue`'s chunks in `manager`, talking to peers through
    /// `replicator`, as `placement` says.
    #[must_use]
    pub fn new(
        queue: ResyncQueue,
        manager: Arc<BlockManager>,
        replicator: BlockReplicator,
        placement: Arc<dyn Placement>,
        cfg: ResyncConfig,
    ) -> Self {
        Self {
            queue,
            manager,
            replicator,
            placement,
            cfg,
        }
    }

    /// Handles every chunk due now; returns how many were taken (settled or rescheduled).
    ///
    /// # Errors
    /// Database errors of the queue (a chunk that cannot be settled is rescheduled, not
    /// an error).
    pub async fn resync_once(&self) -> Result<usize> {
        let due = self.queue.due(now_ms(), self.cfg.batch.max(1))?;
        for &(hash, entry) in &due {
            match self.resync_one(hash).await {
                Ok(outcome) => {
                    if outcome != ResyncOutcome::InPlace {
                        tracing::info!(block = %hash, ?outcome, "resync");
                    }
                    self.queue.finish(&hash, entry)?;
                }
                Err(why) => {
                    let attempts = entry.attempts.saturating_add(1);
                    let delay = self.cfg.backoff(attempts);
                    tracing::warn!(block = %hash, attempts, retry_in = ?delay, "resync failed: {why}");
                    let next = ResyncEntry {
                        due_ms: now_ms()
                            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                        attempts,
                    };
                    // Only if nobody re-queued it meanwhile (that entry is due sooner).
                    if self.queue.get(&hash)? == Some(entry) {
                        self.queue.schedule(&hash, next, false)?;
                    }
                }
            }
        }
        Ok(due.len())
    }

    /// Settles one chunk (see the [module doc](self)).
    ///
    /// # Errors
    /// Why it could not be settled now (retried later).
    pub async fn resync_one(&self, hash: Hash) -> Result<ResyncOutcome, String> {
        let sets = self.placement.write_sets(&hash);
        let me = self.replicator.node_id();
        if sets.iter().any(|s| s.contains(&me)) {
            self.fetch_if_missing(hash, &sets, me).await
        } else if sets.is_empty() {
            // No layout says who owns it: keeping it is the only safe choice.
            Ok(ResyncOutcome::InPlace)
        } else {
            self.offload(hash, &sets).await
        }
    }

    async fn fetch_if_missing(
        &self,
        hash: Hash,
        sets: &[Vec<NodeId>],
        me: NodeId,
    ) -> Result<ResyncOutcome, String> {
        match self.manager.read_block(hash).await {
            Ok(_) => return Ok(ResyncOutcome::InPlace),
            Err(Error::MissingBlock(_)) => {
                // Nothing here references it (deleted, or its reference has not arrived
                // yet: the reference's arrival queues it again).
                let refs = (self.manager.refcount(hash).await)
                    .map_err(|e| format!("cannot read the reference count: {e}"))?;
                if refs == 0 {
                    return Ok(ResyncOutcome::InPlace);
                }
            }
            Err(Error::CorruptBlock(_)) => self
                .manager
                .set_aside_corrupt(hash)
                .await
                .map_err(|e| format!("cannot set the corrupt copy aside: {e}"))?,
            Err(e) => return Err(format!("cannot read the local copy: {e}")),
        }
        let mut seen = HashSet::from([me]);
        let peers: Vec<NodeId> = sets
            .iter()
            .flatten()
            .copied()
            .filter(|n| seen.insert(*n))
            .collect();
        let ordered = preferred_order(me, &peers, &self.placement.zones());
        let (from, data) = self
            .replicator
            .get_ordered(hash, &ordered)
            .await
            .map_err(|e| e.to_string())?;
        self.manager
            .write_block(hash, data)
            .await
            .map_err(|e| format!("cannot store the chunk fetched from {from}: {e}"))?;
        Ok(ResyncOutcome::Fetched)
    }

    async fn offload(&self, hash: Hash, sets: &[Vec<NodeId>]) -> Result<ResyncOutcome, String> {
        if !self.manager.has_block(&hash) {
            return Ok(ResyncOutcome::InPlace);
        }
        let mut data = None;
        for set in sets {
            let needed = self.placement.write_quorum().clamp(1, set.len().max(1));
            let mut confirmed = 0;
            let mut errors = Vec::new();
            for (node, answer) in self.replicator.has_on(hash, set).await {
                match answer {
                    Ok(true) => confirmed += 1,
                    Ok(false) => {
                        // Hand our copy to the owner that lacks it (read once, on demand).
                        let bytes = match &data {
                            Some(d) => Bytes::clone(d),
                            None => {
                                let d = self
                                    .manager
                                    .read_block(hash)
                                    .await
                                    .map_err(|e| format!("cannot read the local copy: {e}"))?;
                                data = Some(d.clone());
                                d
                            }
                        };
                        match self.replicator.put_one(hash, bytes, node).await {
                            Ok(()) => confirmed += 1,
                            Err(e) => errors.push(format!("{node}: {e}")),
                        }
                    }
                    Err(e) => errors.push(format!("{node}: {e}")),
                }
            }
            if confirmed < needed {
                return Err(format!(
                    "only {confirmed} of {needed} owners confirmed a copy, keeping ours ({})",
                    errors.join("; ")
                ));
            }
        }
        let manager = Arc::clone(&self.manager);
        tokio::task::spawn_blocking(move || manager.delete_block_sync(&hash))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot delete the local copy: {e}"))?;
        Ok(ResyncOutcome::Dropped)
    }

    /// Runs until `shutdown` flips: handles due chunks, then sleeps until the next one is
    /// due, an `enqueue` wakes it, or [`ResyncConfig::idle_poll`] passes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let wait = match self.resync_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => match self.queue.next_due() {
                    Ok(Some(due)) => {
                        Duration::from_millis(due.saturating_sub(now_ms())).min(self.cfg.idle_poll)
                    }
                    Ok(None) => self.cfg.idle_poll,
                    Err(e) => {
                        tracing::warn!(error = %e, "resync queue");
                        self.cfg.retry_min
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "resync queue");
                    self.cfg.retry_min
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.queue.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl BlockManager {
    /// Moves a corrupt chunk file aside (`<name>.corrupted`, as scrub does), so that the
    /// chunk reads as missing and a good copy can take its place.
    async fn set_aside_corrupt(self: &Arc<Self>, hash: Hash) -> Result<()> {
        let (plain, zst) = self.paths(&hash);
        for file in [plain, zst] {
            let mut aside = file.clone().into_os_string();
            aside.push(".corrupted");
            match tokio::fs::rename(&file, &aside).await {
                Ok(()) => {
                    tracing::error!(block = %hash, file = %file.display(), "resync: corrupt chunk moved aside");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn queue_survives_a_reopen_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Hash::hash_of(b"a"), Hash::hash_of(b"b"));
        {
            let q = ResyncQueue::open(Db::open(dir.path()).unwrap()).unwrap();
            q.enqueue(a).unwrap();
            q.enqueue(b).unwrap();
            q.enqueue(a).unwrap();
            assert_eq!(q.len().unwrap(), 2);
        }
        let q = ResyncQueue::open(Db::open(dir.path()).unwrap()).unwrap();
        assert_eq!(q.len().unwrap(), 2, "persistent");
        let due = q.due(now_ms(), 10).unwrap();
        assert_eq!(due.len(), 2);
        // Rescheduled later: not due now; a fresh enqueue brings it forward again.
        let (h, e) = due[0];
        let later = ResyncEntry {
            due_ms: now_ms() + 60_000,
            attempts: 3,
        };
        q.schedule(&h, later, false).unwrap();
        assert_eq!(q.due(now_ms(), 10).unwrap().len(), 1);
        assert_eq!(q.next_due().unwrap().map(|d| d <= now_ms()), Some(true));
        q.finish(&h, e).unwrap();
        assert!(q.contains(&h).unwrap(), "finish of a stale entry keeps it");
        q.finish(&h, later).unwrap();
        assert!(!q.contains(&h).unwrap());
    }

    #[test]
    fn table_placement_follows_the_table_replication() {
        let me = NodeId::from([1; 32]);
        let p = TablePlacement::new(crate::table::LocalOnly { node: me }, None);
        assert_eq!(p.write_sets(&Hash::hash_of(b"x")), vec![vec![me]]);
        assert_eq!(p.write_quorum(), 1);
        assert!(p.zones().is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = ResyncConfig {
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            ..ResyncConfig::default()
        };
        let got: Vec<u128> = (1..=5).map(|a| cfg.backoff(a).as_millis()).collect();
        assert_eq!(got, vec![10, 20, 40, 50, 50]);
        assert_eq!(cfg.backoff(200), Duration::from_millis(50));
    }
}
