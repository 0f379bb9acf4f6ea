//! [`LayoutManager`]: this node's copy of the [`ClusterLayout`], kept on disk and converged
//! with every peer's.
//!
//! The layout is a CRDT, so distribution is plain gossip: every change (an admin's stage,
//! apply or revert, a layout received from a peer) is merged into the local copy, written
//! to `metadata_dir/cluster_layout` (temp file + rename) *before* it is published on the
//! watch channel that tables and chunk placement read, and then pushed to every peer that
//! is up. A periodic pass also pulls from any peer whose gossiped version is ahead and
//! pushes to any peer behind, so a node that was down or partitioned catches up.
//!
//! Transitions: after an apply, older versions stay live until every storage node of the
//! new version reports (through [`LayoutReq::SyncStatus`]) that it synced its partitions;
//! only then does a node call [`ClusterLayout::retire_up_to`] (a max in the CRDT, so any
//! node may do it and all converge). What "synced" means for this node is the callback
//! given to [`LayoutManager::run_sync_worker`]: the tables and chunks of its partitions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use super::{ClusterLayout, LayoutError, NodeId};
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
    /// Merge this layout into yours.
    Push(Box<ClusterLayout>),
    /// Send me your layout.
    Pull,
    /// Which layout version have you synced your partitions for?
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
                self.inner.push_to(n.id, &layout);
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
                } else if info.layout_version < mine.version() {
                    self.inner.push_to(n.id, &mine);
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
    /// still live, sync this node's partitions with `sync`, then, once every storage node
    /// of the current version reports it synced, retire the older versions.
    pub async fn run_sync_worker(
        self,
        sync: SyncFn,
        retry: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut layouts = self.watch();
        loop {
            let layout = self.layout();
            let in_transition = layout.versions().count() > 1;
            let v = layout.version();
            let mut done = true;
            if in_transition {
                if self.synced_version() < v {
                    if sync(Arc::clone(&layout)).await {
                        self.inner.synced.fetch_max(v, Ordering::Relaxed);
                        tracing::info!(version = v, "this node synced its partitions");
                    } else {
                        done = false;
                    }
                }
                if done && !self.try_retire(&layout).await {
                    done = false;
                }
            } else {
                self.inner.synced.fetch_max(v, Ordering::Relaxed);
            }
            let wait = if done { Duration::MAX } else { retry };
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
                r = layouts.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Retires the versions before the current one if every storage node of the current
    /// version synced it; `true` if nothing is left to wait for.
    async fn try_retire(&self, layout: &ClusterLayout) -> bool {
        let v = layout.version();
        let nodes: BTreeSet<NodeId> = layout
            .current()
            .partitions
            .iter()
            .flatten()
            .copied()
            .collect();
        let calls = nodes.iter().map(|&n| {
            let rpc = self.inner.rpc.clone();
            async move {
                let r = rpc
                    .call::<LayoutRpc>(n, &LayoutReq::SyncStatus, CALL_TIMEOUT)
                    .await;
                matches!(r, Ok(LayoutResp::Synced(s)) if s >= v)
            }
        });
        let all = futures::future::join_all(calls).await;
        if !all.iter().all(|ok| *ok) {
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
                    "every node synced: older layout versions retired"
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

    fn push_to(&self, node: NodeId, layout: &Arc<ClusterLayout>) {
        let rpc = self.rpc.clone();
        let req = LayoutReq::Push(Box::new((**layout).clone()));
        tokio::spawn(async move {
            if let Err(e) = rpc.call::<LayoutRpc>(node, &req, CALL_TIMEOUT).await {
                tracing::debug!(%node, error = %e, "layout push failed");
            }
        });
    }

    async fn pull_from(&self, node: NodeId) {
        match self
            .rpc
            .call::<LayoutRpc>(node, &LayoutReq::Pull, CALL_TIMEOUT)
            .await
        {
            Ok(LayoutResp::Layout(l)) => {
                if let Err(e) = self.merge(&l).await {
                    tracing::warn!(%node, error = %e, "cannot store the layout pulled from a peer");
                }
            }
            Ok(other) => tracing::debug!(%node, ?other, "unexpected layout answer"),
            Err(e) => tracing::debug!(%node, error = %e, "layout pull failed"),
        }
    }
}

struct LayoutHandler(Arc<Inner>);

#[async_trait::async_trait]
impl Handler<LayoutRpc> for LayoutHandler {
    async fn handle(&self, _from: NodeId, req: LayoutReq) -> LayoutResp {
        match req {
            LayoutReq::Push(l) => match self.0.merge(&l).await {
                Ok(()) => LayoutResp::Ok,
                Err(e) => LayoutResp::Error(e.to_string()),
            },
            LayoutReq::Pull => LayoutResp::Layout(Box::new((**self.0.tx.borrow()).clone())),
            LayoutReq::SyncStatus => LayoutResp::Synced(self.0.synced.load(Ordering::Relaxed)),
        }
    }
}
