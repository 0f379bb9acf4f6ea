//! The cluster side of a node: its QUIC endpoint, RPC server, membership and layout, and
//! the background work that keeps replicas complete (chunk resync, the layout transition
//! protocol, the chunk re-check after a layout change).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::watch;

use crate::block::{ResyncConfig, ResyncWorker};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::manager::{LayoutManager, SyncFn};
use crate::layout::{ClusterLayout, LayoutChange, N_PARTITIONS, NodeId, NodeRole};
use crate::membership::{Membership, MembershipConfig};
use crate::model::{ClusterHandles, Model};
use crate::net::{Endpoint, NetConfig};
use crate::rpc::{Rpc, RpcConfig, RpcServer};
use crate::table::{run_anti_entropy, run_tombstone_gc, sync_all};
use crate::util::id::Hash;

/// Failed resync attempts after which a layout transition stops waiting for a chunk.
const TRANSITION_GIVES_UP_AFTER: u32 = 3;

/// How often the layout is compared with the peers' (pull if behind, push if ahead).
const LAYOUT_GOSSIP_INTERVAL: Duration = Duration::from_secs(2);
/// How soon a layout transition that could not complete is retried.
const TRANSITION_RETRY: Duration = Duration::from_secs(5);
/// How often this node's transition trackers are re-checked when nothing woke them.
const TRACKERS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a starting node with peers waits to learn their layout before its workers
/// start (a node removed while it was down must know it before it syncs anything).
const LAYOUT_PULL_AT_START: Duration = Duration::from_secs(10);
/// Zone of a single node that did not name one.
const DEFAULT_ZONE: &str = "dc1";

/// The cluster side of the node.
pub(super) struct ClusterSide {
    pub(super) endpoint: Endpoint,
    pub(super) rpc: Rpc,
    pub(super) rpc_server: RpcServer,
    pub(super) membership: Membership,
    pub(super) layout: LayoutManager,
}

impl ClusterSide {
    /// What the model needs to place and reach replicas.
    pub(super) fn handles(&self) -> ClusterHandles {
        ClusterHandles {
            rpc: self.rpc.clone(),
            layout: self.layout.watch(),
            members: Some(self.membership.watch()),
            write_locks: self.layout.write_locks(),
        }
    }

    /// Stops membership, the RPC server and the endpoint, in that order.
    pub(super) async fn shutdown(self) {
        self.membership.shutdown().await;
        self.rpc_server.shutdown().await;
        self.endpoint.close("node stopping");
    }
}

/// Binds the QUIC endpoint (node identity + cluster-secret TLS), starts membership and
/// loads the layout.
pub(super) async fn start(config: &Config) -> Result<ClusterSide> {
    let layout = crate::layout::manager::load(&config.metadata_dir, config.replication_factor)?;
    let key_file = config.metadata_dir.join(crate::net::NODE_KEY_FILE);
    let new_identity = !key_file.exists();
    let net_cfg = NetConfig::new(config.rpc_bind_addr, config.rpc_secret_bytes(), key_file);
    let endpoint = Endpoint::bind(net_cfg)
        .await
        .map_err(|e| Error::Config(format!("rpc_bind_addr {}: {e}", config.rpc_bind_addr)))?;
    if new_identity && !config.bootstrap_peers.is_empty() {
        tracing::info!(
            node = %endpoint.node_id().to_hex(),
            "this node has a new identity (no node_key in metadata_dir): it joins as a new \
             node, without a role. If it replaces a node whose disks were lost, give it that \
             node's role and remove the old one: `storaged layout assign <new id> --zone <zone> \
             --capacity <size>`, `storaged layout remove <old id>`, `storaged layout apply \
             --version <current + 1>`"
        );
    }
    let rpc_cfg = RpcConfig {
        budget: crate::util::budget::MemoryBudget::new(config.limits.memory_budget_bytes),
        ..RpcConfig::default()
    };
    let rpc = Rpc::new(endpoint.clone(), rpc_cfg);
    let rpc_server = rpc.serve();
    let b = &config.background;
    let mut mc = MembershipConfig::new(config.metadata_dir.clone());
    mc.bootstrap_peers = config.bootstrap_peers.clone();
    mc.default_port = config.rpc_bind_addr.port();
    mc.zone = config.zone.clone();
    mc.public_addr = public_addr(config).await;
    mc.ping_interval = Duration::from_millis(b.ping_interval_ms);
    mc.ping_timeout = Duration::from_millis(b.ping_timeout_ms);
    mc.failures_before_down = b.failures_before_down;
    mc.dns_refresh = Duration::from_secs(b.dns_refresh_secs.max(1));
    let membership = Membership::start(rpc.clone(), mc).await?;
    let layout = LayoutManager::new(
        layout,
        &config.metadata_dir,
        rpc.clone(),
        membership.clone(),
    );
    if layout.layout().version() > 0 && !config.bootstrap_peers.is_empty() {
        // A node back from an outage may have been removed from the layout meanwhile: it
        // learns that before anti-entropy could push its stale partitions around.
        if !layout.pull_from_peers(LAYOUT_PULL_AT_START).await {
            tracing::warn!("no peer answered with its layout yet; starting with the stored one");
        }
    }
    Ok(ClusterSide {
        endpoint,
        rpc,
        rpc_server,
        membership,
        layout,
    })
}

/// `rpc_public_addr` resolved (it may be a DNS name, like a pod's headless Service entry,
/// which may not resolve yet at start: then peers learn our address when we dial them).
async fn public_addr(config: &Config) -> Option<SocketAddr> {
    let addr = config.rpc_public_addr.as_deref()?;
    match tokio::net::lookup_host(addr).await {
        Ok(mut it) => it.next(),
        Err(e) => {
            tracing::warn!(rpc_public_addr = addr, error = %e, "cannot resolve rpc_public_addr yet");
            None
        }
    }
}

/// Single-node mode: a node with `replication_factor = 1`, no `bootstrap_peers` and no
/// layout yet gives itself the whole layout (its zone, its disk's size), so that
/// `storaged server` alone serves at once. Any other node waits for an admin's layout.
pub(super) async fn assign_self_if_alone(config: &Config, side: &ClusterSide) -> Result<()> {
    let layout = side.layout.layout();
    if layout.version() > 0 || config.replication_factor != 1 || !config.bootstrap_peers.is_empty()
    {
        return Ok(());
    }
    let me = side.rpc.node_id();
    let zone = config
        .zone
        .clone()
        .unwrap_or_else(|| DEFAULT_ZONE.to_owned());
    let capacity = disk_size(&config.data_dir).unwrap_or(1 << 40);
    let applied = side
        .layout
        .update(|cur: &ClusterLayout| {
            let mut next = cur.clone();
            next.stage(LayoutChange::Role {
                node: me,
                role: Some(NodeRole::storage(zone, capacity)),
            })?;
            next.apply(cur.version() + 1)
        })
        .await?;
    match applied {
        Ok(_) => {
            tracing::info!("single node: assigned itself the whole layout");
            Ok(())
        }
        Err(e) => Err(Error::Config(format!(
            "cannot assign the single-node layout: {e}"
        ))),
    }
}

/// Size of the filesystem holding `dir`, the default capacity of a lone node.
fn disk_size(dir: &Path) -> Option<u64> {
    std::fs::create_dir_all(dir).ok()?;
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    st.blocks().checked_mul(st.fragment_size())
}

/// Starts the replication workers of the node.
pub(super) fn spawn_workers(
    side: &ClusterSide,
    model: &Arc<Model>,
    config: &Config,
    shutdown: &watch::Receiver<bool>,
) {
    tokio::spawn(
        side.layout
            .clone()
            .run_gossip(LAYOUT_GOSSIP_INTERVAL, shutdown.clone()),
    );
    let b = &config.background;
    let resync_cfg = ResyncConfig {
        retry_min: Duration::from_secs(b.resync_retry_secs.max(1)),
        idle_poll: Duration::from_secs(b.resync_retry_secs.max(1)),
        ..ResyncConfig::default()
    };
    let worker = ResyncWorker::new(
        model.resync.clone(),
        Arc::clone(&model.blocks),
        model.replicator.clone(),
        Arc::clone(&model.placement),
        resync_cfg,
    );
    tokio::spawn(worker.run(shutdown.clone()));
    tokio::spawn(super::rebuild::run(
        Arc::clone(model),
        side.layout.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(recheck_chunks_on_layout_change(
        Arc::clone(model),
        side.layout.watch(),
        shutdown.clone(),
    ));
    let sync: SyncFn = {
        let model = Arc::clone(model);
        let pending = Arc::new(std::sync::Mutex::new(None));
        Arc::new(move |layout| {
            let (model, pending) = (Arc::clone(&model), Arc::clone(&pending));
            async move { node_synced(&model, &layout, &pending).await }.boxed()
        })
    };
    tokio::spawn(
        side.layout
            .clone()
            .run_sync_worker(sync, TRANSITION_RETRY, shutdown.clone()),
    );
    tokio::spawn(
        side.layout
            .clone()
            .run_trackers(TRACKERS_INTERVAL, shutdown.clone()),
    );
    let me = side.rpc.node_id();
    let interval = b.anti_entropy_interval();
    let layout = side.layout.clone();
    tokio::spawn(run_anti_entropy(
        model.sharded_tables(),
        move || held_partitions(&layout.layout(), me, true),
        interval,
        shutdown.clone(),
    ));
    tokio::spawn(run_tombstone_gc(
        model.gc_tables(),
        b.tombstone_gc_delay(),
        Duration::from_secs(b.gc_interval_secs.max(1)),
        shutdown.clone(),
    ));
    let layout = side.layout.clone();
    tokio::spawn(run_anti_entropy(
        model.full_tables(),
        move || all_partitions_if_member(&layout.layout(), me),
        interval,
        shutdown.clone(),
    ));
}

/// The partitions `me` holds in some live version (`any_version`) or in the current one.
pub(super) fn held_partitions(layout: &ClusterLayout, me: NodeId, any_version: bool) -> Vec<u16> {
    (0..N_PARTITIONS)
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|&p| {
            if any_version {
                layout.write_sets(p).iter().any(|s| s.contains(&me))
            } else {
                layout.nodes_of(p).contains(&me)
            }
        })
        .collect()
}

/// Every partition if `me` has a role in some live version (full-replication tables).
pub(super) fn all_partitions_if_member(layout: &ClusterLayout, me: NodeId) -> Vec<u16> {
    if layout.versions().any(|v| v.roles.contains_key(&me)) {
        (0..N_PARTITIONS)
            .filter_map(|p| u16::try_from(p).ok())
            .collect()
    } else {
        Vec::new()
    }
}

/// The chunks a transition to a layout version waits for: those queued for resync once
/// the metadata was synced (later ones come from writes, which reached the new owners).
type PendingChunks = std::sync::Mutex<Option<(u64, HashSet<Hash>)>>;

/// Whether this node holds everything its partitions of `layout`'s current version need:
/// the metadata synced from the replicas of every live version (a read quorum of each,
/// so every acknowledged write), and the chunks that sync found missing fetched.
async fn node_synced(model: &Arc<Model>, layout: &ClusterLayout, pending: &PendingChunks) -> bool {
    let version = layout.version();
    let metadata_synced = pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .is_some_and(|(v, _)| *v == version);
    // The metadata is synced once per version (writes since then reach the new owners
    // directly); a retry only waits for the chunks that sync found missing.
    if !metadata_synced {
        let me = model.replicator.node_id();
        let sharded = held_partitions(layout, me, false);
        if let Err(e) = sync_all(&model.sharded_tables(), &sharded).await {
            tracing::info!(error = %e, "layout transition: metadata not synced yet");
            return false;
        }
        let full = all_partitions_if_member(layout, me);
        if let Err(e) = sync_all(&model.full_tables(), &full).await {
            tracing::info!(error = %e, "layout transition: metadata not synced yet");
            return false;
        }
    }
    let queued = match model.resync.snapshot() {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the resync queue");
            return false;
        }
    };
    let mut guard = pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let waiting = match guard.take() {
        Some((v, set)) if v == version => set,
        _ => queued.clone(),
    };
    // A chunk no replica could serve after a few tries is not waited for: waiting cannot
    // make it more available, and it is safe to go on, since a node only deletes a chunk it
    // no longer owns once the new owners confirm they hold it (resync keeps trying).
    let failing = match model.resync.failing(TRANSITION_GIVES_UP_AFTER) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the resync queue");
            return false;
        }
    };
    let left: HashSet<Hash> = waiting
        .intersection(&queued)
        .filter(|h| !failing.contains(h))
        .copied()
        .collect();
    if left.is_empty() {
        let skipped = waiting.intersection(&failing).count();
        if skipped > 0 {
            tracing::warn!(
                chunks = skipped,
                "layout transition: not waiting for chunks that no replica could serve"
            );
        }
        return true;
    }
    tracing::info!(
        chunks = left.len(),
        "layout transition: chunks still to resync"
    );
    *guard = Some((version, left));
    false
}

/// Once a layout change is complete (one live version), drops the table entries of the
/// partitions this node no longer stores: their owners are synced, and keeping them would
/// let stale entries come back if the node became an owner again.
async fn drop_partitions_left(model: &Arc<Model>, layouts: &watch::Receiver<Arc<ClusterLayout>>) {
    let me = model.replicator.node_id();
    for p in 0..N_PARTITIONS {
        let Ok(p) = u8::try_from(p) else { continue };
        // Looked up again for each partition: a new layout may arrive meanwhile.
        let layout = Arc::clone(&layouts.borrow());
        if layout.versions().count() != 1 || !layout.current().is_assigned() {
            return;
        }
        if layout.nodes_of(u16::from(p)).contains(&me) {
            continue;
        }
        match model.drop_partition(p).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                partition = p,
                entries = n,
                "dropped a partition this node no longer stores"
            ),
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot drop a partition this node no longer stores")
            }
        }
    }
}

/// After every layout change, queues every local chunk for a resync check: the ones this
/// node no longer owns are handed to their owners and dropped, and nothing owned is lost.
async fn recheck_chunks_on_layout_change(
    model: Arc<Model>,
    mut layouts: watch::Receiver<Arc<ClusterLayout>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = layouts.borrow_and_update().clone();
    drop_partitions_left(&model, &layouts).await;
    loop {
        tokio::select! {
            r = layouts.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let now = layouts.borrow_and_update().clone();
        let placement_changed =
            now.version() != seen.version() || now.versions().count() != seen.versions().count();
        seen = now;
        if !placement_changed {
            continue;
        }
        drop_partitions_left(&model, &layouts).await;
        match model.blocks.local_chunks().await {
            Ok(chunks) => {
                let n = chunks.len();
                for h in chunks {
                    if let Err(e) = model.resync.enqueue(h) {
                        tracing::warn!(error = %e, "cannot queue a chunk for resync");
                        break;
                    }
                }
                tracing::info!(
                    chunks = n,
                    "layout changed: local chunks queued for a resync check"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot list local chunks"),
        }
    }
}
