//! [`LayoutManager`]: this node's copy of the [`ClusterLayout`], kept on disk and converged
//! with every peer's.
//!
//! The layout is a CRDT, so distribution is plain gossip: every change (an admin's stage,
//! apply or revert, a layout received from a peer, a node's progress through a transition)
//! is merged into the local copy, written to `metadata_dir/cluster_layout` (temp file +
//! rename) *before* it is published on the watch channel that tables and chunk placement
//! read, and then pushed to every peer that is up. A periodic pass also pulls from any peer
//! whose gossiped version is ahead and pushes to any peer behind (to every peer while a
//! transition runs, as the trackers change without the version), and a push answered with
//! a layout the receiver knows more of is merged back, so a node that was down, paused or
//! partitioned catches up.
//!
//! Transitions are a barrier (see [`super::trackers`]): [`LayoutManager::run_trackers`]
//! acks each new version once this node's writes that used older ones finished
//! ([`super::WriteLocks`]), and records when it saw the current version synced;
//! [`LayoutManager::run_sync_worker`] syncs this node's partitions only once every node
//! acked the current version, records it, and retires the older versions once every node
//! saw the sync. What "synced" means for this node is the callback given to the worker:
//! the tables and chunks of its partitions.
//!
//! Mixed clusters: an older daemon ignores the trackers (unknown fields) and drops them
//! when it rewrites the layout; it still retires after polling [`LayoutReq::SyncStatus`],
//! which this daemon answers. So the barrier only holds once every node runs a daemon that
//! has it; until then transitions behave as before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use super::{ClusterLayout, LayoutError, NodeId, WriteLocks};
use crate::error::{Error, Result};
use crate::membership::Membership;
use crate::rpc::{Handler, Rpc, Service};
use crate::util::crdt::Crdt;
use crate::util::encode::{decode, encode};

/// File name of the persisted layout inside `metadata_dir`.
pub const LAYOUT_FILE: &str = "cluster_layout";

/// How long one layout call to a peer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The layout service on the wire.
#[derive(Debug)]
pub struct LayoutRpc;

impl Service for LayoutRpc {
    const NAME: &'static str = "layout";
    type Req = LayoutReq;
    type Resp = LayoutResp;
}

/// Requests of the layout service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LayoutReq {
    /// Merge this layout into yours (answered with [`LayoutResp::Layout`] when the merge
    /// holds more than what was pushed, so the sender learns it too).
    Push(Box<ClusterLayout>),
    /// Send me your layout.
    Pull,
    /// Which layout version have you synced your partitions for? (Kept for daemons
    /// without the transition trackers, which carry this since.)
    SyncStatus,
}

/// Responses of the layout service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LayoutResp {
    /// Merged.
    Ok,
    /// The answering node's layout.
    Layout(Box<ClusterLayout>),
    /// The newest version whose partitions the answering node holds in full.
    Synced(u64),
    /// The request could not be handled; says why.
    Error(String),
}

/// What the node's sync procedure is given: the layout to sync for. Returns whether every
/// partition this node holds in that layout's current version is complete here.
pub type SyncFn = Arc<dyn Fn(Arc<ClusterLayout>) -> BoxFuture<'static, bool> + Send + Sync>;

struct Inner {
    tx: watch::Sender<Arc<ClusterLayout>>,
    path: PathBuf,
    /// Serialises read-modify-write of the layout (merge + persist + publish).
    lock: Mutex<()>,
    /// The newest layout version this node has synced its partitions for.
    synced: AtomicU64,
    /// This node's writes in flight, per layout version (the ack waits for them).
    locks: Arc<WriteLocks>,
    rpc: Rpc,
    membership: Membership,
}

/// This node's layout: the watch channel every placement decision reads. Cheap to clone.
#[derive(Clone)]
pub struct LayoutManager {
    inner: Arc<Inner>,
}

/// Reads the persisted layout, or a new one of `replication_factor` if there is none.
///
/// # Errors
/// An unreadable file, or a persisted layout of another replication factor (changing it
/// would silently re-place every partition: refused, naming the setting).
pub fn load(metadata_dir: &Path, replication_factor: usize) -> Result<ClusterLayout> {
    let path = metadata_dir.join(LAYOUT_FILE);
    let layout = match std::fs::read(&path) {
        Ok(bytes) => decode::<ClusterLayout>(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ClusterLayout::new(replication_factor));
        }
        Err(e) => return Err(e.into()),
    };
    let persisted = layout.current().replication_factor;
    if persisted != replication_factor && layout.version() > 0 {
        return Err(Error::Config(format!(
            "replication_factor = {replication_factor}, but this node's cluster layout was \
             made with replication_factor = {persisted}; it cannot change in place"
        )));
    }
    Ok(layout)
}

impl LayoutManager {
    /// Starts from `layout` (see [`load`]), registers the layout service on `rpc` and
    /// publishes this node's version in gossip.
    #[must_use]
    pub fn new(
        layout: ClusterLayout,
        metadata_dir: &Path,
        rpc: Rpc,
        membership: Membership,
    ) -> Self {
        membership.set_layout_version(layout.version());
        let (tx, _) = watch::channel(Arc::new(layout));
        let inner = Arc::new(Inner {
            tx,
            path: metadata_dir.join(LAYOUT_FILE),
            lock: Mutex::new(()),
            synced: AtomicU64::new(0),
            locks: Arc::new(WriteLocks::default()),
            rpc: rpc.clone(),
            membership,
        });
        rpc.register::<LayoutRpc>(Arc::new(LayoutHandler(Arc::clone(&inner))));
        Self { inner }
    }

    /// The layout now.
    #[must_use]
    pub fn layout(&self) -> Arc<ClusterLayout> {
        Arc::clone(&self.inner.tx.borrow())
    }

    /// A receiver that sees every new layout (tables and chunk placement read it).
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterLayout>> {
        self.inner.tx.subscribe()
    }

    /// The newest version this node has synced its partitions for.
    #[must_use]
    pub fn synced_version(&self) -> u64 {
        self.inner.synced.load(Ordering::Relaxed)
    }

    /// The in-flight write registry the tables lock (see [`WriteLocks`]).
    #[must_use]
    pub fn write_locks(&self) -> Arc<WriteLocks> {
        Arc::clone(&self.inner.locks)
    }

    /// Whether `node` is down as this node's failure detector sees it (or unknown).
    fn is_down(&self, node: &NodeId) -> bool {
        *node != self.inner.rpc.node_id()
            && !self.inner.membership.node(*node).is_some_and(|s| s.is_up)
    }

    /// Brings this node's own trackers up to date: the ack (the oldest version its
    /// in-flight writes use, or the current one), the sync of a version it has nothing to
    /// sync for, and the sync-ack once every storage node synced the current version.
    async fn refresh_trackers(&self) {
        let me = self.inner.rpc.node_id();
        let locks = Arc::clone(&self.inner.locks);
        let r = self
            .update_if(move |cur| {
                let mut next = cur.clone();
                let v = cur.version();
                let mut changed = next.record_ack(me, locks.ackable(cur));
                if !cur.in_transition() || !cur.current_storage_nodes().contains(&me) {
                    changed |= next.record_sync(me, v);
                }
                if next.current_synced() {
                    changed |= next.record_sync_ack(me, v);
                }
                changed.then_some(next)
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot persist the layout trackers");
        }
    }

    /// Like [`Self::update`] for changes that may be no-ops (`f` returns `None`): nothing
    /// is persisted or pushed then.
    async fn update_if(
        &self,
        f: impl FnOnce(&ClusterLayout) -> Option<ClusterLayout>,
    ) -> Result<bool> {
        let new = {
            let _guard = self.inner.lock.lock().await;
            let cur = self.layout();
            let Some(mut new) = f(&cur) else {
                return Ok(false);
            };
            new.merge(&cur);
            self.inner.install(new.clone()).await?;
            new
        };
        self.push_to_all(Arc::new(new));
        Ok(true)
    }

    /// Keeps this node's trackers current until `shutdown` flips: on every new layout,
    /// when writes of an older version drain, when membership changes, and every
    /// `interval` as a backstop.
    pub async fn run_trackers(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut layouts = self.watch();
        let mut members = self.inner.membership.watch();
        let locks = Arc::clone(&self.inner.locks);
        loop {
            self.refresh_trackers().await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = locks.released() => {}
                r = layouts.changed() => if r.is_err() { return },
                r = members.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Changes the layout with `f` (stage, apply, revert), persists and publishes the
    /// result, then pushes it to the peers. `f`'s error leaves everything unchanged.
    ///
    /// # Errors
    /// `f`'s error, or the layout could not be persisted.
    pub async fn update<T>(
        &self,
        f: impl FnOnce(&ClusterLayout) -> Result<(ClusterLayout, T), LayoutError>,
    ) -> Result<Result<T, LayoutError>> {
        let new = {
            let _guard = self.inner.lock.lock().await;
            let cur = self.layout();
            let (mut new, out) = match f(&cur) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            // A concurrent push may have merged meanwhile: keep both.
            new.merge(&cur);
            self.inner.install(new.clone()).await?;
            (new, out)
        };
        self.push_to_all(Arc::new(new.0));
        Ok(Ok(new.1))
    }

    /// Sends `layout` to every peer that is up, in the background.
    fn push_to_all(&self, layout: Arc<ClusterLayout>) {
        let me = self.inner.rpc.node_id();
        for n in self.inner.membership.nodes() {
            if n.id != me && n.is_up {
                Inner::push_to(&self.inner, n.id, &layout);
            }
        }
    }

    /// Pulls the layout from every peer that is up, waiting up to `deadline` for one to
    /// be: a node that was down learns what changed (a removal, say) before its workers
    /// act on a stale layout. `true` if some peer answered.
    pub async fn pull_from_peers(&self, deadline: Duration) -> bool {
        let me = self.inner.rpc.node_id();
        let mut members = self.inner.membership.watch();
        let sleep = tokio::time::sleep(deadline);
        tokio::pin!(sleep);
        loop {
            let up: Vec<NodeId> = (self.inner.membership.nodes().into_iter())
                .filter(|n| n.is_up && n.id != me)
                .map(|n| n.id)
                .collect();
            if !up.is_empty() {
                let pulls = up.iter().map(|&n| self.inner.pull_from(n));
                let answered = futures::future::join_all(pulls).await;
                if answered.into_iter().any(|ok| ok) {
                    return true;
                }
            }
            tokio::select! {
                () = &mut sleep => return false,
                r = members.changed() => if r.is_err() { return false },
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Pulls from peers ahead and pushes to peers behind, every `interval`, until
    /// `shutdown` flips: how a node that missed a push catches up.
    pub async fn run_gossip(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut members = self.inner.membership.watch();
        loop {
            let mine = self.layout();
            let me = self.inner.rpc.node_id();
            for n in self.inner.membership.nodes() {
                let Some(info) = n.info.as_ref().filter(|_| n.is_up && n.id != me) else {
                    continue;
                };
                if info.layout_version > mine.version() {
                    let inner = Arc::clone(&self.inner);
                    tokio::spawn(async move { inner.pull_from(n.id).await });
                } else if info.layout_version < mine.version() || mine.in_transition() {
                    // During a transition the trackers move without the version.
                    Inner::push_to(&self.inner, n.id, &mine);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                r = members.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs the transition protocol until `shutdown` flips: whenever older versions are
    /// still live and every node acked the current one, sync this node's partitions with
    /// `sync` (if it stores some in the current version) and record it; once the current
    /// version is synced and every node saw it, retire the older versions.
    pub async fn run_sync_worker(
        self,
        sync: SyncFn,
        retry: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut layouts = self.watch();
        let me = self.inner.rpc.node_id();
        let mut last_waiting: Option<(u64, Vec<String>)> = None;
        loop {
            let layout = self.layout();
            let v = layout.version();
            let mut done = true;
            if !layout.in_transition() {
                self.inner.synced.fetch_max(v, Ordering::Relaxed);
            } else if !layout.acked_by_all(|n| self.is_down(n)) {
                let waiting: Vec<String> = (layout.barrier_nodes(|n| self.is_down(n)).iter())
                    .filter(|n| super::trackers::get(&layout.trackers().ack, n) < v)
                    .map(|n| n.to_hex().chars().take(8).collect())
                    .collect();
                if last_waiting.as_ref() != Some(&(v, waiting.clone())) {
                    tracing::info!(version = v, ?waiting, "layout transition: waiting for acks");
                    last_waiting = Some((v, waiting));
                }
                done = false;
            } else {
                let mine = super::trackers::get(&layout.trackers().sync, &me);
                if layout.current_storage_nodes().contains(&me) && mine < v {
                    if sync(Arc::clone(&layout)).await {
                        self.inner.synced.fetch_max(v, Ordering::Relaxed);
                        tracing::info!(version = v, "this node synced its partitions");
                        if let Err(e) = self
                            .update_if(|cur| {
                                let mut next = cur.clone();
                                next.record_sync(me, v).then_some(next)
                            })
                            .await
                        {
                            tracing::warn!(error = %e, "cannot persist the layout trackers");
                        }
                    }
                    done = false; // look again: the sync-acks follow
                } else if !self.try_retire().await {
                    done = false;
                }
            }
            let wait = if done { Duration::MAX } else { retry };
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
                r = layouts.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Retires the versions before the current one if the barrier allows it
    /// ([`ClusterLayout::may_retire`]); `true` if nothing is left to wait for.
    async fn try_retire(&self) -> bool {
        let layout = self.layout();
        let v = layout.version();
        if !layout.in_transition() {
            return true;
        }
        if !layout.may_retire(|n| self.is_down(n)) {
            return false;
        }
        match self
            .update(|cur| {
                let mut next = cur.clone();
                next.retire_up_to(v)?;
                Ok((next, ()))
            })
            .await
        {
            Ok(Ok(())) => {
                tracing::info!(
                    version = v,
                    "every node acked, synced and saw the sync: older layout versions retired"
                );
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(version = v, error = %e, "cannot retire older layout versions");
                false
            }
            Err(e) => {
                tracing::warn!(version = v, error = %e, "cannot persist the layout");
                false
            }
        }
    }
}

impl Inner {
    /// Persists then publishes `layout` (the caller holds `lock`).
    async fn install(&self, layout: ClusterLayout) -> Result<()> {
        if **self.tx.borrow() == layout {
            return Ok(());
        }
        let bytes = encode(&layout)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            crate::util::fs::write_atomically(&path, &bytes, 0o600)
        })
        .await??;
        let old_version = self.tx.borrow().version();
        if layout.version() != old_version {
            tracing::info!(
                from = old_version,
                to = layout.version(),
                "cluster layout updated"
            );
        }
        self.membership.set_layout_version(layout.version());
        self.tx.send_replace(Arc::new(layout));
        Ok(())
    }

    /// Merges `other` into the local layout.
    async fn merge(&self, other: &ClusterLayout) -> Result<()> {
        let _guard = self.lock.lock().await;
        let mut merged = (**self.tx.borrow()).clone();
        merged.merge(other);
        self.install(merged).await
    }

    /// Pushes `layout` to `node` in the background, and merges what it answers back.
    fn push_to(this: &Arc<Self>, node: NodeId, layout: &Arc<ClusterLayout>) {
        let inner = Arc::clone(this);
        let req = LayoutReq::Push(Box::new((**layout).clone()));
        tokio::spawn(async move {
            match inner.rpc.call::<LayoutRpc>(node, &req, CALL_TIMEOUT).await {
                Ok(LayoutResp::Layout(l)) => {
                    if let Err(e) = inner.merge(&l).await {
                        tracing::warn!(%node, error = %e, "cannot store the layout a peer answered");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(%node, error = %e, "layout push failed"),
            }
        });
    }

    /// Pulls `node`'s layout and merges it; `true` if it answered with one.
    async fn pull_from(&self, node: NodeId) -> bool {
        match self
            .rpc
            .call::<LayoutRpc>(node, &LayoutReq::Pull, CALL_TIMEOUT)
            .await
        {
            Ok(LayoutResp::Layout(l)) => {
                if let Err(e) = self.merge(&l).await {
                    tracing::warn!(%node, error = %e, "cannot store the layout pulled from a peer");
                    return false;
                }
                true
            }
            Ok(other) => {
                tracing::debug!(%node, ?other, "unexpected layout answer");
                false
            }
            Err(e) => {
                tracing::debug!(%node, error = %e, "layout pull failed");
                false
            }
        }
    }
}

struct LayoutHandler(Arc<Inner>);

#[async_trait::async_trait]
impl Handler<LayoutRpc> for LayoutHandler {
    async fn handle(&self, _from: NodeId, req: LayoutReq) -> LayoutResp {
        match req {
            LayoutReq::Push(l) => match self.0.merge(&l).await {
                // The sender lacks something this node knows: tell it.
                Ok(()) if **self.0.tx.borrow() != *l => {
                    LayoutResp::Layout(Box::new((**self.0.tx.borrow()).clone()))
                }
                Ok(()) => LayoutResp::Ok,
                Err(e) => LayoutResp::Error(e.to_string()),
            },
            LayoutReq::Pull => LayoutResp::Layout(Box::new((**self.0.tx.borrow()).clone())),
            LayoutReq::SyncStatus => LayoutResp::Synced(self.0.synced.load(Ordering::Relaxed)),
        }
    }
}
