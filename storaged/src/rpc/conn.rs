//! The per-node connection cache in front of [`Endpoint`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::FutureExt;

use super::{Backoff, NodeId, RpcConfig, RpcError};
use crate::net::{Endpoint, Peer};

/// Most addresses remembered per node: a node has a handful (IPv4, IPv6, public), and a
/// peer's gossip must not grow this without bound.
pub(super) const MAX_ADDRS: usize = 8;

/// One connection per node, made on demand, checked to reach the expected node id, with
/// exponential back-off after failed attempts.
#[derive(Debug)]
pub(super) struct ConnCache {
    endpoint: Endpoint,
    cfg: RpcConfig,
    slots: Mutex<HashMap<NodeId, Arc<Slot>>>,
}

#[derive(Debug)]
struct Slot {
    /// Known addresses, the last one that worked first.
    addrs: Mutex<Vec<SocketAddr>>,
    /// The connection and the back-off; an async lock so that concurrent callers wait
    /// for one connection attempt instead of each making their own. Shared (`Arc`) so a
    /// connection attempt can hold it from its own task.
    conn: Arc<tokio::sync::Mutex<ConnState>>,
}

#[derive(Debug)]
struct ConnState {
    peer: Option<Peer>,
    backoff: Backoff,
    last_error: String,
}

/// A connection handed out by the cache; `fresh` if it was just made (so a failure on it
/// is not a stale-connection failure worth one retry).
pub(super) struct Lease {
    pub(super) peer: Peer,
    pub(super) fresh: bool,
}

pub(super) fn is_closed(peer: &Peer) -> bool {
    peer.closed().now_or_never().is_some()
}

impl ConnCache {
    pub(super) fn new(endpoint: Endpoint, cfg: RpcConfig) -> Self {
        Self {
            endpoint,
            cfg,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn slot(&self, node: NodeId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry(node)
            .or_insert_with(|| {
                Arc::new(Slot {
                    addrs: Mutex::new(Vec::new()),
                    conn: Arc::new(tokio::sync::Mutex::new(ConnState {
                        peer: None,
                        backoff: Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max),
                        last_error: String::new(),
                    })),
                })
            })
            .clone()
    }

    /// Replaces the addresses of `node` (at most [`MAX_ADDRS`] are kept, in order).
    pub(super) fn set_addrs(&self, node: NodeId, addrs: &[SocketAddr]) {
        let slot = self.slot(node);
        let mut known = slot.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut new: Vec<SocketAddr> = Vec::with_capacity(addrs.len().min(MAX_ADDRS));
        for a in addrs {
            if !new.contains(a) && new.len() < MAX_ADDRS {
                new.push(*a);
            }
        }
        if *known != new {
            *known = new;
        }
    }

    /// The addresses known for `node`.
    pub(super) fn addrs(&self, node: NodeId) -> Vec<SocketAddr> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(&node).map_or_else(Vec::new, |s| {
            s.addrs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// Records that `node` just connected to us: it is alive, so its back-off is
    /// cleared and our next call tries it at once. (Its connection is not reused for our
    /// calls: each side calls over the connection it made, see the module doc.)
    pub(super) fn alive(&self, node: NodeId) {
        let slot = self.slot(node);
        // Never wait here: a connection attempt in progress will find out by itself.
        if let Ok(mut state) = slot.conn.try_lock() {
            state.backoff.success();
        }
    }

    /// A live connection to `node`: the cached one, or a new one to the first of its
    /// addresses that answers as `node`.
    pub(super) async fn get(&self, node: NodeId) -> Result<Lease, RpcError> {
        let slot = self.slot(node);
        let mut state = slot.conn.clone().lock_owned().await;
        if let Some(peer) = &state.peer {
            if !is_closed(peer) {
                return Ok(Lease {
                    peer: peer.clone(),
                    fresh: false,
                });
            }
            state.peer = None;
        }
        let now = Instant::now();
        if let Some(retry_in) = state.backoff.wait_at(now) {
            return Err(RpcError::Backoff {
                node,
                retry_in,
                last_error: state.last_error.clone(),
            });
        }
        let addrs = slot
            .addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if addrs.is_empty() {
            return Err(RpcError::NoAddress(node));
        }
        // The attempt runs in its own task, holding the slot: a caller that gives up
        // (its own timeout) does not cancel it, so its outcome always reaches the
        // back-off, and callers queued on the slot see it.
        let endpoint = self.endpoint.clone();
        let timeout = self.cfg.connect_timeout;
        let attempt = tokio::spawn(async move {
            let mut last = None;
            for addr in addrs {
                let result = tokio::time::timeout(timeout, endpoint.connect_to(addr, node)).await;
                match result {
                    Ok(Ok(peer)) => {
                        state.backoff.success();
                        state.peer = Some(peer.clone());
                        promote(&slot, addr);
                        return Ok(peer);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%node, %addr, "connection failed: {e}");
                        last = Some(RpcError::Net(e));
                    }
                    Err(_) => {
                        tracing::debug!(%node, %addr, "connection timed out");
                        last = Some(RpcError::Timeout(timeout));
                    }
                }
            }
            let delay = state.backoff.failure(Instant::now());
            let err = last.unwrap_or(RpcError::NoAddress(node));
            state.last_error = err.to_string();
            tracing::debug!(%node, retry_in = ?delay, "node unreachable: {err}");
            Err(err)
        });
        let peer = attempt.await.map_err(|_| RpcError::Aborted)??;
        Ok(Lease { peer, fresh: true })
    }

    /// Connects to `addr` whoever answers there (bootstrap: the node id is not known
    /// yet), caches the connection under the id the peer proved, and returns the id.
    pub(super) async fn connect_addr(&self, addr: SocketAddr) -> Result<NodeId, RpcError> {
        let peer = self.endpoint.connect(addr).await?;
        let node = peer.node_id();
        if node == self.endpoint.node_id() {
            peer.close("connected to self");
            return Ok(node);
        }
        let slot = self.slot(node);
        {
            let mut addrs = slot.addrs.lock().unwrap_or_else(PoisonError::into_inner);
            if !addrs.contains(&addr) {
                addrs.insert(0, addr);
                addrs.truncate(MAX_ADDRS);
            }
        }
        let mut state = slot.conn.lock().await;
        if state.peer.as_ref().is_none_or(is_closed) {
            state.peer = Some(peer);
        } else {
            // Keep the connection in use; this one only told us who lives at `addr`.
            peer.close("duplicate connection");
        }
        state.backoff.success();
        Ok(node)
    }

    /// Drops every cached connection (shutdown).
    pub(super) fn clear(&self) {
        let slots = std::mem::take(&mut *self.slots.lock().unwrap_or_else(PoisonError::into_inner));
        for slot in slots.into_values() {
            if let Ok(state) = slot.conn.try_lock()
                && let Some(p) = &state.peer
            {
                p.close("shutting down");
            }
        }
    }
}

/// Moves `addr` to the front of the slot's addresses: the next attempt starts there.
fn promote(slot: &Slot, addr: SocketAddr) {
    let mut addrs = slot.addrs.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(i) = addrs.iter().position(|a| *a == addr) {
        addrs[..=i].rotate_right(1);
    }
}
