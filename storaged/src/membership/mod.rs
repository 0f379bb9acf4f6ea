//! The peer list and its life: bootstrap and discovery, a persisted peer list, gossip of
//! node status, failure detection, reconnection.
//!
//! # How nodes find each other
//!
//! 1. **Persisted peers.** At start, the nodes known before the restart are read from
//!    `metadata_dir/`[`PEERS_FILE`] (see [`persist`](self::persist) for why it is only a
//!    cache), so a restarted node finds the cluster even with no `bootstrap_peers`.
//! 2. **Bootstrap.** Each `bootstrap_peers` entry is an address or a DNS name
//!    ([`parse_bootstrap`]); names are resolved at start and every
//!    [`MembershipConfig::dns_refresh`], and **every** address they yield is dialled (a
//!    Kubernetes headless Service yields one per pod, and pod addresses change when pods
//!    restart). Dialling an address tells us which node lives there (its id is proven by
//!    the TLS handshake, see [`crate::net`]); failed dials back off exponentially.
//! 3. **Gossip.** Every [`MembershipConfig::ping_interval`], each known node is pinged
//!    with a [`Gossip`]: this node's [`NodeInfo`] (id, hostname, zone, addresses, layout
//!    version, free space) and the nodes it sees up, with their addresses; the pong
//!    carries the same from the other side. So one bootstrap address is enough: the
//!    first peer tells us about all the others, and tells them about us.
//!
//! A node without the cluster secret never completes a handshake, so it can neither be
//! dialled nor ping us: it never enters the peer list.
//!
//! # Failure detection
//!
//! Each ping is bounded by [`MembershipConfig::ping_timeout`]. A node is **down** after
//! [`MembershipConfig::failures_before_down`] consecutive failed pings, so within about
//! `failures_before_down × ping_interval + ping_timeout`, and **up** again on the next
//! successful ping either way (its pings to us count). Reconnection to a down node backs
//! off exponentially ([`crate::rpc::RpcConfig`] for known nodes,
//! [`MembershipConfig::dial_backoff_min`]/`max` for bootstrap addresses); a node that
//! connects to us is retried at once.
//!
//! [`Membership::nodes`] is the current view, [`Membership::watch`] a channel that
//! changes whenever a node appears, goes up or down, or changes its status.

mod bootstrap;
mod detector;
mod persist;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bootstrap::{Target, parse as parse_bootstrap};
pub use detector::FailureDetector;

use self::bootstrap::{Resolve, SystemResolver};
use crate::net::NetError;
use crate::rpc::{Backoff, Handler, NodeId, Rpc, RpcError, Service};
use crate::{Error, Result};

/// Name of the persisted peer list in the metadata directory.
pub const PEERS_FILE: &str = "peers";

/// The RPC port a bootstrap entry without one is dialled on (DESIGN.md: `3901/udp`).
pub const DEFAULT_RPC_PORT: u16 = 3901;

/// Most peers taken from one gossip message: a peer cannot grow our list without bound.
const MAX_GOSSIP_PEERS: usize = 1024;

/// Most addresses kept per node.
const MAX_ADDRS: usize = 8;

/// Longest hostname or zone kept from a peer (a DNS name's limit).
const MAX_NAME: usize = 253;

/// What membership needs, with defaults for every interval. The daemon fills it from
/// `storaged.toml` (`bootstrap_peers`, `zone`, `rpc_public_addr`, `metadata_dir`);
/// tests shrink the intervals to milliseconds.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Where the peer list is persisted ([`PEERS_FILE`]).
    pub metadata_dir: PathBuf,
    /// `bootstrap_peers`: addresses or DNS names, with or without a port.
    pub bootstrap_peers: Vec<String>,
    /// The port of bootstrap entries that name none.
    pub default_port: u16,
    /// This node's zone, reported to peers (and by them to the admin API).
    pub zone: Option<String>,
    /// This node's host name, reported to peers.
    pub hostname: String,
    /// The address peers should dial (`rpc_public_addr`); by default the endpoint's own
    /// address, unless it is a wildcard (then peers use the address they dialled).
    pub public_addr: Option<SocketAddr>,
    /// How often every known node is pinged.
    pub ping_interval: Duration,
    /// How long a ping (or a dial) may take before it counts as failed.
    pub ping_timeout: Duration,
    /// Consecutive failed pings after which a node is down.
    pub failures_before_down: u32,
    /// How often DNS names of `bootstrap_peers` are resolved again.
    pub dns_refresh: Duration,
    /// How long one DNS resolution may take.
    pub dns_timeout: Duration,
    /// First back-off after a failed dial of a bootstrap address.
    pub dial_backoff_min: Duration,
    /// Cap of the bootstrap dial back-off.
    pub dial_backoff_max: Duration,
}

impl MembershipConfig {
    /// Defaults for a node whose metadata lives in `metadata_dir`: ping every 5 s, a ping
    /// times out after 5 s, down after 3 misses (~20 s), DNS every 60 s, dial back-off
    /// from 1 s to 60 s, host name from the system.
    #[must_use]
    pub fn new(metadata_dir: PathBuf) -> Self {
        Self {
            metadata_dir,
            bootstrap_peers: Vec::new(),
            default_port: DEFAULT_RPC_PORT,
            zone: None,
            hostname: system_hostname(),
            public_addr: None,
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            failures_before_down: 3,
            dns_refresh: Duration::from_secs(60),
            dns_timeout: Duration::from_secs(5),
            dial_backoff_min: Duration::from_secs(1),
            dial_backoff_max: Duration::from_secs(60),
        }
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a node says about itself in gossip (versioned on the wire and on disk like every
/// message: see [`crate::util::encode`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (must be the id its TLS certificate proves; anything else is
    /// ignored).
    pub id: NodeId,
    /// Its host name, for humans.
    pub hostname: String,
    /// Its zone from its config, for the admin API (roles come from the layout).
    pub zone: Option<String>,
    /// Where it can be dialled.
    pub addresses: Vec<SocketAddr>,
    /// The layout version it has applied: a peer behind is sent the newer layout.
    pub layout_version: u64,
    /// Free bytes in its data directory, if it reports them.
    pub free_space: Option<u64>,
}

impl NodeInfo {
    /// Clamps what a peer sent to our limits: it is input, not trusted to be small.
    fn sanitized(mut self) -> Self {
        truncate(&mut self.hostname);
        if let Some(z) = &mut self.zone {
            truncate(z);
        }
        self.addresses = usable_addrs(&self.addresses);
        self
    }
}

fn truncate(s: &mut String) {
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Addresses one can dial (no wildcard, no port 0), deduplicated, at most [`MAX_ADDRS`].
fn usable_addrs(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for a in addrs {
        if !a.ip().is_unspecified() && a.port() != 0 && !out.contains(a) && out.len() < MAX_ADDRS {
            out.push(*a);
        }
    }
    out
}

/// This node's view of one node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// What it last told us about itself (`None` if we only heard of it from others).
    pub info: Option<NodeInfo>,
    /// The addresses we dial it on.
    pub addresses: Vec<SocketAddr>,
    /// Whether it answers (always true for this node).
    pub is_up: bool,
    /// Whether it is this node.
    pub is_self: bool,
}

/// The state of one bootstrap address, for status views and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialStatus {
    /// The address.
    pub addr: SocketAddr,
    /// The node found there, once dialled.
    pub node: Option<NodeId>,
    /// Consecutive failed dials.
    pub failures: u32,
    /// Why the last dial failed (e.g. the peer does not hold the cluster secret).
    pub last_error: Option<String>,
}

/// The membership service on the wire.
#[derive(Debug)]
pub struct MembershipRpc;

impl Service for MembershipRpc {
    const NAME: &'static str = "membership";
    type Req = MembershipReq;
    type Resp = MembershipResp;
}

/// Requests of the membership service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipReq {
    /// "I am alive, here is what I know"; answered by [`MembershipResp::Pong`].
    Ping(Gossip),
}

/// Responses of the membership service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipResp {
    /// "So am I, here is what I know."
    Pong(Gossip),
}

/// What nodes exchange on every ping: their own status and the nodes they see up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    /// The sender's status.
    pub info: NodeInfo,
    /// The nodes the sender sees up, so that the receiver can reach them too.
    pub peers: Vec<PeerAddrs>,
}

/// A node and where to reach it, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddrs {
    /// The node.
    pub id: NodeId,
    /// Its addresses.
    pub addrs: Vec<SocketAddr>,
}

/// This node's membership: the peer list, kept alive by background tasks until
/// [`Membership::shutdown`] (or drop).
#[derive(Clone, Debug)]
pub struct Membership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // The handler holds `shared`, which holds the rpc: break the cycle.
        self.shared.rpc.unregister::<MembershipRpc>();
    }
}

struct Shared {
    rpc: Rpc,
    cfg: MembershipConfig,
    targets: Vec<Target>,
    resolver: Arc<dyn Resolve>,
    state: Mutex<State>,
    view: watch::Sender<Vec<NodeStatus>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node", &self.rpc.node_id())
            .finish_non_exhaustive()
    }
}

struct State {
    me: NodeInfo,
    nodes: BTreeMap<NodeId, Known>,
    dials: BTreeMap<SocketAddr, Dial>,
    /// Addresses added by [`Membership::add_peer_addr`]: kept across DNS refreshes.
    manual: BTreeSet<SocketAddr>,
    /// The bytes of the last peer list written, to skip identical writes.
    persisted: Option<Vec<u8>>,
}

struct Known {
    info: Option<NodeInfo>,
    addrs: Vec<SocketAddr>,
    detector: FailureDetector,
    pinging: bool,
}

struct Dial {
    backoff: Backoff,
    in_flight: bool,
    node: Option<NodeId>,
    last_error: Option<String>,
}

impl Membership {
    /// Starts membership for the node of `rpc`: loads the persisted peers, resolves the
    /// bootstrap entries, registers the membership service on `rpc` (whose server must
    /// run, see [`Rpc::serve`]) and starts pinging, dialling and re-resolving.
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed bootstrap entry.
    pub async fn start(rpc: Rpc, cfg: MembershipConfig) -> Result<Self> {
        Self::start_with(rpc, cfg, Arc::new(SystemResolver)).await
    }

    async fn start_with(
        rpc: Rpc,
        cfg: MembershipConfig,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self> {
        let targets = cfg
            .bootstrap_peers
            .iter()
            .map(|e| parse_bootstrap(e, cfg.default_port))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("bootstrap_peers: {e}")))?;
        let own = cfg.public_addr.or_else(|| rpc.endpoint().local_addr().ok());
        let me = NodeInfo {
            id: rpc.node_id(),
            hostname: cfg.hostname.clone(),
            zone: cfg.zone.clone(),
            addresses: usable_addrs(&own.into_iter().collect::<Vec<_>>()),
            layout_version: 0,
            free_space: None,
        };
        let path = cfg.metadata_dir.join(PEERS_FILE);
        let saved = tokio::task::spawn_blocking(move || persist::load(&path)).await?;
        let mut nodes = BTreeMap::new();
        for p in saved.peers {
            if p.id == me.id {
                continue;
            }
            let addrs = usable_addrs(&p.addrs);
            rpc.set_addrs(p.id, &addrs);
            nodes.insert(
                p.id,
                Known {
                    info: p.info.map(NodeInfo::sanitized),
                    addrs,
                    detector: FailureDetector::new(cfg.failures_before_down),
                    pinging: false,
                },
            );
        }
        tracing::info!(node = %me.id, known = nodes.len(), "membership starting");
        let (view, _) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            rpc: rpc.clone(),
            targets,
            resolver,
            state: Mutex::new(State {
                me,
                nodes,
                dials: BTreeMap::new(),
                manual: BTreeSet::new(),
                persisted: None,
            }),
            view,
            cfg,
        });
        shared.publish();
        let first =
            bootstrap::resolve_all(&*shared.resolver, &shared.targets, shared.cfg.dns_timeout)
                .await;
        shared.set_bootstrap(&first);
        rpc.register::<MembershipRpc>(Arc::new(PingHandler(shared.clone())));
        let tasks = vec![
            tokio::spawn(ping_loop(shared.clone())),
            tokio::spawn(dns_loop(shared.clone())),
        ];
        Ok(Self {
            inner: Arc::new(Inner { shared, tasks }),
        })
    }

    /// Every node known, this one included, sorted by id.
    #[must_use]
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.inner.shared.view.borrow().clone()
    }

    /// The view of one node, if known.
    #[must_use]
    pub fn node(&self, id: NodeId) -> Option<NodeStatus> {
        self.inner
            .shared
            .view
            .borrow()
            .iter()
            .find(|n| n.id == id)
            .cloned()
    }

    /// A channel whose value is [`Membership::nodes`], marked changed whenever a node
    /// appears, goes up or down, or changes its status.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<Vec<NodeStatus>> {
        self.inner.shared.view.subscribe()
    }

    /// The bootstrap addresses and what became of them.
    #[must_use]
    pub fn dial_status(&self) -> Vec<DialStatus> {
        let state = self.inner.shared.lock();
        state
            .dials
            .iter()
            .map(|(addr, d)| DialStatus {
                addr: *addr,
                node: d.node,
                failures: d.backoff.failures(),
                last_error: d.last_error.clone(),
            })
            .collect()
    }

    /// Gossips the layout version this node has applied (the layout owner calls this).
    pub fn set_layout_version(&self, version: u64) {
        self.inner.shared.lock().me.layout_version = version;
        self.inner.shared.publish();
    }

    /// Gossips the free space of this node's data directory.
    pub fn set_free_space(&self, bytes: Option<u64>) {
        self.inner.shared.lock().me.free_space = bytes;
        self.inner.shared.publish();
    }

    /// Dials `addr` like a bootstrap address from the next round on (an admin's
    /// "connect to this node"); kept across DNS refreshes.
    pub fn add_peer_addr(&self, addr: SocketAddr) {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        state.manual.insert(addr);
        let dial = shared.new_dial();
        state.dials.entry(addr).or_insert(dial);
    }

    /// Stops the background tasks and the membership service, and writes the peer list
    /// one last time.
    pub async fn shutdown(self) {
        for t in &self.inner.tasks {
            t.abort();
        }
        self.inner.shared.rpc.unregister::<MembershipRpc>();
        self.inner.shared.persist().await;
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_dial(&self) -> Dial {
        Dial {
            backoff: Backoff::new(self.cfg.dial_backoff_min, self.cfg.dial_backoff_max),
            in_flight: false,
            node: None,
            last_error: None,
        }
    }

    fn new_known(&self, addrs: Vec<SocketAddr>) -> Known {
        Known {
            info: None,
            addrs,
            detector: FailureDetector::new(self.cfg.failures_before_down),
            pinging: false,
        }
    }

    /// Recomputes the view and notifies watchers if it changed.
    fn publish(&self) {
        let view = {
            let state = self.lock();
            let mut view: Vec<NodeStatus> = state
                .nodes
                .iter()
                .map(|(id, k)| NodeStatus {
                    id: *id,
                    info: k.info.clone(),
                    addresses: k.addrs.clone(),
                    is_up: k.detector.is_up(),
                    is_self: false,
                })
                .collect();
            view.push(NodeStatus {
                id: state.me.id,
                info: Some(state.me.clone()),
                addresses: state.me.addresses.clone(),
                is_up: true,
                is_self: true,
            });
            view.sort_by_key(|n| n.id);
            view
        };
        self.view.send_if_modified(|old| {
            if *old == view {
                false
            } else {
                *old = view;
                true
            }
        });
    }

    /// Replaces the resolved bootstrap addresses (keeping the state of those that stay,
    /// and the manual ones).
    fn set_bootstrap(&self, addrs: &[SocketAddr]) {
        let mut state = self.lock();
        let manual = state.manual.clone();
        state
            .dials
            .retain(|a, _| addrs.contains(a) || manual.contains(a));
        for a in addrs {
            if !state.dials.contains_key(a) {
                let dial = self.new_dial();
                state.dials.insert(*a, dial);
            }
        }
    }

    /// This node's gossip: its status and the nodes it sees up.
    fn gossip(&self) -> Gossip {
        let state = self.lock();
        Gossip {
            info: state.me.clone(),
            peers: state
                .nodes
                .iter()
                .filter(|(_, k)| k.detector.is_up())
                .map(|(id, k)| PeerAddrs {
                    id: *id,
                    addrs: k.addrs.clone(),
                })
                .collect(),
        }
    }

    /// Takes in what `from` (a verified id) told us.
    fn on_gossip(&self, from: NodeId, gossip: Gossip) {
        let mut changed_addrs = Vec::new();
        {
            let mut state = self.lock();
            let me = state.me.id;
            if from == me {
                return;
            }
            if gossip.info.id == from {
                let info = gossip.info.sanitized();
                let known = state
                    .nodes
                    .entry(from)
                    .or_insert_with(|| self.new_known(Vec::new()));
                // The node's own addresses first, then those we knew, newest first.
                let mut addrs = info.addresses.clone();
                addrs.extend(known.addrs.iter().copied());
                let addrs = usable_addrs(&addrs);
                if addrs != known.addrs {
                    known.addrs.clone_from(&addrs);
                    changed_addrs.push((from, addrs));
                }
                known.info = Some(info);
            } else {
                tracing::warn!(peer = %from, claimed = %gossip.info.id, "ignoring gossip about another node's status");
            }
            for p in gossip.peers.into_iter().take(MAX_GOSSIP_PEERS) {
                if p.id == me || p.id == from {
                    continue;
                }
                let addrs = usable_addrs(&p.addrs);
                let known = state
                    .nodes
                    .entry(p.id)
                    .or_insert_with(|| self.new_known(Vec::new()));
                // Third parties only teach us how to reach a node we cannot reach yet;
                // the node itself is the authority on its addresses.
                if known.addrs.is_empty() && !addrs.is_empty() {
                    known.addrs.clone_from(&addrs);
                    changed_addrs.push((p.id, addrs));
                }
            }
        }
        for (id, addrs) in changed_addrs {
            self.rpc.set_addrs(id, &addrs);
        }
        self.publish();
    }

    /// Records the outcome of a ping to or from `node`.
    fn on_result(&self, node: NodeId, ok: bool) {
        let changed = {
            let mut state = self.lock();
            match state.nodes.get_mut(&node) {
                Some(k) if ok => k.detector.success(),
                Some(k) => k.detector.failure(),
                None => false,
            }
        };
        if changed {
            self.rpc.set_down(node, !ok);
            tracing::info!(%node, up = ok, "node is {}", if ok { "up" } else { "down" });
            self.publish();
        }
    }

    /// One round: ping every known node and dial every due bootstrap address, each in
    /// its own task, then persist the peer list if it changed.
    async fn round(self: &Arc<Self>) {
        let now = Instant::now();
        let (pings, dials) = {
            let mut state = self.lock();
            let me = state.me.id;
            let own = state.me.addresses.clone();
            let mut pings = Vec::new();
            for (id, k) in &mut state.nodes {
                if !k.pinging {
                    k.pinging = true;
                    pings.push(*id);
                }
            }
            let up: BTreeSet<NodeId> = state
                .nodes
                .iter()
                .filter(|(_, k)| k.detector.is_up())
                .map(|(id, _)| *id)
                .collect();
            let mut dials = Vec::new();
            for (addr, d) in &mut state.dials {
                let settled = d.node.is_some_and(|n| n == me || up.contains(&n));
                if !settled
                    && !own.contains(addr)
                    && !d.in_flight
                    && d.backoff.wait_at(now).is_none()
                {
                    d.in_flight = true;
                    dials.push(*addr);
                }
            }
            (pings, dials)
        };
        for id in pings {
            tokio::spawn(ping(self.clone(), id));
        }
        for addr in dials {
            tokio::spawn(dial(self.clone(), addr));
        }
        self.persist().await;
    }

    /// Writes the peer list if it changed since the last write.
    async fn persist(&self) {
        let bytes = {
            let state = self.lock();
            let list = persist::PeerList {
                peers: state
                    .nodes
                    .iter()
                    .filter(|(_, k)| !k.addrs.is_empty())
                    .map(|(id, k)| persist::PersistedPeer {
                        id: *id,
                        addrs: k.addrs.clone(),
                        info: k.info.clone(),
                    })
                    .collect(),
            };
            match persist::to_bytes(&list) {
                Ok(b) if state.persisted.as_ref() != Some(&b) => b,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!("cannot encode the peer list: {e}");
                    return;
                }
            }
        };
        let path = self.cfg.metadata_dir.join(PEERS_FILE);
        let data = bytes.clone();
        let written =
            tokio::task::spawn_blocking(move || persist::write_atomically(&path, &data)).await;
        match written {
            Ok(Ok(())) => self.lock().persisted = Some(bytes),
            Ok(Err(e)) => tracing::warn!("cannot write the peer list: {e}"),
            Err(e) => tracing::warn!("peer list writer failed: {e}"),
        }
    }
}

async fn ping_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.round().await;
    }
}

async fn dns_loop(shared: Arc<Shared>) {
    if !shared.targets.iter().any(|t| matches!(t, Target::Name(..))) {
        return; // Only literal addresses: resolved once at start.
    }
    let mut tick = tokio::time::interval(shared.cfg.dns_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // The first tick is immediate: start resolved already.
    loop {
        tick.tick().await;
        let addrs =
            bootstrap::resolve_all(&*shared.resolver, &shared.targets, shared.cfg.dns_timeout)
                .await;
        shared.set_bootstrap(&addrs);
    }
}

async fn ping(shared: Arc<Shared>, node: NodeId) {
    let req = MembershipReq::Ping(shared.gossip());
    let result = shared
        .rpc
        .probe::<MembershipRpc>(node, &req, shared.cfg.ping_timeout)
        .await;
    let ok = match result {
        Ok(MembershipResp::Pong(gossip)) => {
            shared.on_gossip(node, gossip);
            true
        }
        Err(e) => {
            tracing::debug!(%node, "ping failed: {e}");
            false
        }
    };
    if let Some(k) = shared.lock().nodes.get_mut(&node) {
        k.pinging = false;
    }
    shared.on_result(node, ok);
}

async fn dial(shared: Arc<Shared>, addr: SocketAddr) {
    let result = shared.rpc.connect_addr(addr, shared.cfg.ping_timeout).await;
    let mut ping_now = None;
    {
        let mut state = shared.lock();
        let me = state.me.id;
        if let Ok(node) = &result
            && *node != me
        {
            let known = state
                .nodes
                .entry(*node)
                .or_insert_with(|| shared.new_known(Vec::new()));
            if !known.addrs.contains(&addr) {
                known.addrs.push(addr);
                known.addrs = usable_addrs(&known.addrs);
            }
            if !known.pinging {
                known.pinging = true;
                ping_now = Some(*node);
            }
        }
        if let Some(d) = state.dials.get_mut(&addr) {
            d.in_flight = false;
            match &result {
                Ok(node) => {
                    d.backoff.success();
                    d.node = Some(*node);
                    d.last_error = None;
                }
                Err(e) => {
                    let retry_in = d.backoff.failure(Instant::now());
                    d.last_error = Some(e.to_string());
                    if matches!(e, RpcError::Net(NetError::NotInCluster { .. })) {
                        tracing::warn!(%addr, ?retry_in, "bootstrap peer refused: {e}");
                    } else {
                        tracing::debug!(%addr, ?retry_in, "bootstrap peer unreachable: {e}");
                    }
                }
            }
        }
    }
    if let Some(node) = ping_now {
        shared.publish();
        ping(shared, node).await;
    }
}

/// Answers pings: takes in the peer's gossip, counts the ping as proof of life, answers
/// with ours.
struct PingHandler(Arc<Shared>);

#[async_trait::async_trait]
impl Handler<MembershipRpc> for PingHandler {
    async fn handle(&self, from: NodeId, req: MembershipReq) -> MembershipResp {
        match req {
            MembershipReq::Ping(gossip) => {
                self.0.on_gossip(from, gossip);
                self.0.on_result(from, true);
                MembershipResp::Pong(self.0.gossip())
            }
        }
    }
}
