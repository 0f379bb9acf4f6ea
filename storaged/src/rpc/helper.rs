//! [`Rpc`]: typed calls, quorum calls, handler registry and the server loop.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::conn::{ConnCache, is_closed};
use super::quorum::{QuorumError, call_quorum};
use super::wire;
use super::{Handler, NodeId, RemoteError, RpcConfig, RpcError, Service};
use crate::net::{BiStream, Endpoint, Peer};
use crate::util::budget::MemoryBudget;
use crate::util::encode::{self, EncodeError};

/// This node's RPC system: calls other nodes' services and serves its own.
///
/// Cheap to clone (an `Arc`); every subsystem that talks to peers holds a clone.
#[derive(Clone, Debug)]
pub struct Rpc {
    inner: Arc<Inner>,
}

struct Inner {
    /// Nodes the failure detector declared down (see [`RpcError::Down`]).
    down: RwLock<std::collections::HashSet<NodeId>>,
    cache: ConnCache,
    cfg: RpcConfig,
    handlers: RwLock<HashMap<&'static str, Entry>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<&str> = self
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        f.debug_struct("Rpc")
            .field("node", &self.cache.endpoint().node_id())
            .field("services", &services)
            .finish_non_exhaustive()
    }
}

/// A registered handler, reachable two ways: type-erased for requests off the wire, and
/// typed (an `Arc<dyn Handler<S>>` behind `Any`) for in-process calls.
#[derive(Clone)]
struct Entry {
    dispatch: Arc<dyn Dispatch>,
    typed: Arc<dyn Any + Send + Sync>,
}

/// A handler seen through the wire format: payload in, payload out.
#[async_trait::async_trait]
trait Dispatch: Send + Sync {
    async fn dispatch(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, EncodeError>;
}

struct Typed<S: Service>(Arc<dyn Handler<S>>, PhantomData<fn() -> S>);

#[async_trait::async_trait]
impl<S: Service> Dispatch for Typed<S> {
    async fn dispatch(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let resp = match encode::decode::<S::Req>(body) {
            Ok(req) => Ok(self.0.handle(from, req).await),
            Err(e) => Err(RemoteError::BadRequest(e.to_string())),
        };
        wire::encode_response(&resp)
    }
}

impl Rpc {
    /// The RPC system of the node owning `endpoint`. Serves nothing until
    /// [`Rpc::serve`]; calls nobody until given addresses ([`Rpc::set_addrs`] or
    /// [`Rpc::connect_addr`]).
    #[must_use]
    pub fn new(endpoint: Endpoint, cfg: RpcConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                down: RwLock::new(std::collections::HashSet::new()),
                cache: ConnCache::new(endpoint, cfg.clone()),
                cfg,
                handlers: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// This node's id: calls to it run in-process.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.inner.cache.endpoint().node_id()
    }

    /// The endpoint underneath, for streamed transfers that do not fit one frame.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        self.inner.cache.endpoint()
    }

    /// Serves service `S` with `handler`, replacing any previous handler of `S`.
    pub fn register<S: Service>(&self, handler: Arc<dyn Handler<S>>) {
        let entry = Entry {
            dispatch: Arc::new(Typed::<S>(handler.clone(), PhantomData)),
            typed: Arc::new(handler),
        };
        self.inner
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(S::NAME, entry);
    }

    /// Stops serving service `S` (its requests then get [`RemoteError::UnknownService`]).
    pub fn unregister<S: Service>(&self) {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(S::NAME);
    }

    fn entry(&self, name: &str) -> Option<Entry> {
        self.inner
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Tells where `node` can be reached (membership keeps this current). The first
    /// address is tried first; the one that works moves to the front.
    pub fn set_addrs(&self, node: NodeId, addrs: &[SocketAddr]) {
        self.inner.cache.set_addrs(node, addrs);
    }

    /// The addresses known for `node`.
    #[must_use]
    pub fn addrs(&self, node: NodeId) -> Vec<SocketAddr> {
        self.inner.cache.addrs(node)
    }

    /// Connects to whoever answers at `addr` (a bootstrap address: the node id is not
    /// known yet) and returns its proven node id; the connection and the address are
    /// kept for later calls. Returns this node's own id if `addr` is our own.
    ///
    /// # Errors
    /// Connection errors (including [`crate::net::NetError::NotInCluster`] for a peer
    /// without the cluster secret), or [`RpcError::Timeout`].
    pub async fn connect_addr(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<NodeId, RpcError> {
        tokio::time::timeout(timeout, self.inner.cache.connect_addr(addr))
            .await
            .map_err(|_| RpcError::Timeout(timeout))?
    }

    /// Records the failure detector's verdict on `node`: while it is down, [`Self::call`]
    /// fails at once with [`RpcError::Down`], so a quorum call gives up on a silent peer
    /// without waiting for its timeout.
    pub fn set_down(&self, node: NodeId, down: bool) {
        let mut set = self
            .inner
            .down
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if down {
            set.insert(node);
        } else {
            set.remove(&node);
        }
    }

    /// Sends `req` to `node` and waits at most `timeout` for its response. A call to this
    /// node runs the local handler directly; a call to a node declared down fails at once.
    ///
    /// # Errors
    /// [`RpcError::Down`], connection, timeout, encoding or remote errors.
    pub async fn call<S: Service>(
        &self,
        node: NodeId,
        req: &S::Req,
        timeout: Duration,
    ) -> Result<S::Resp, RpcError> {
        if self.is_down(node) {
            return Err(RpcError::Down(node));
        }
        self.probe::<S>(node, req, timeout).await
    }

    /// [`Self::call`] even to a node declared down: the failure detector's own probes.
    ///
    /// # Errors
    /// Connection, timeout, encoding or remote errors.
    pub async fn probe<S: Service>(
        &self,
        node: NodeId,
        req: &S::Req,
        timeout: Duration,
    ) -> Result<S::Resp, RpcError> {
        let call = async {
            if node == self.node_id() {
                return self.call_local::<S>(req.clone()).await;
            }
            let payload = wire::encode_request::<S>(req)?;
            self.call_remote::<S>(node, &payload).await
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| RpcError::Timeout(timeout))?
    }

    /// [`Self::call`] with a request encoded beforehand: a request sent to several nodes
    /// (a chunk to its replicas) is encoded, and held in memory, once.
    ///
    /// # Errors
    /// As [`Self::call`].
    pub async fn call_encoded<S: Service>(
        &self,
        node: NodeId,
        req: &Encoded<S>,
        timeout: Duration,
    ) -> Result<S::Resp, RpcError> {
        if self.is_down(node) {
            return Err(RpcError::Down(node));
        }
        let call = async {
            if node == self.node_id() {
                return self.call_local::<S>(S::Req::clone(&req.req)).await;
            }
            match &req.payload {
                Ok(p) => self.call_remote::<S>(node, p).await,
                Err(e) => Err(RpcError::Protocol(encode_failure(e))),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| RpcError::Timeout(timeout))?
    }

    /// Sends `req` to every node in `nodes` at once and returns as soon as `quorum` of
    /// them answered, with their responses; the other calls finish in the background
    /// (so a write still reaches every replica) and their responses are dropped. Each
    /// call is bounded by `timeout`. Duplicate nodes count once.
    ///
    /// # Errors
    /// [`QuorumError`] as soon as too many nodes failed for `quorum` to be reached, with
    /// each failure.
    pub async fn try_call_many<S: Service>(
        &self,
        nodes: &[NodeId],
        req: &S::Req,
        quorum: usize,
        timeout: Duration,
    ) -> Result<Vec<(NodeId, S::Resp)>, QuorumError> {
        // Encoded once for all remote nodes; an encoding failure fails every call alike.
        let req = Encoded::<S>::new(req.clone());
        call_quorum(nodes, quorum, timeout, |node| {
            let rpc = self.clone();
            let req = req.clone();
            async move { rpc.call_encoded::<S>(node, &req, timeout).await }
        })
        .await
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.inner
            .down
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&node)
    }

    /// The node's memory budget (shared by everything that holds object data).
    #[must_use]
    pub fn budget(&self) -> &MemoryBudget {
        &self.inner.cfg.budget
    }

    async fn call_local<S: Service>(&self, req: S::Req) -> Result<S::Resp, RpcError> {
        let handler = self
            .entry(S::NAME)
            .and_then(|e| e.typed.downcast::<Arc<dyn Handler<S>>>().ok())
            .ok_or_else(|| RemoteError::UnknownService(S::NAME.to_owned()))?;
        Ok(handler.handle(self.node_id(), req).await)
    }

    async fn call_remote<S: Service>(
        &self,
        node: NodeId,
        payload: &[u8],
    ) -> Result<S::Resp, RpcError> {
        let budget = &self.inner.cfg.budget;
        let lease = self.inner.cache.get(node).await?;
        // The answer's bytes are held from the budget until it is decoded.
        match lease.peer.request_counted(payload, budget).await {
            Ok((resp, _held)) => wire::decode_response(&resp),
            // A cached connection that died since its last use (the peer restarted):
            // one retry on a new connection, which `get` makes since this one is closed.
            Err(e) if !lease.fresh && is_closed(&lease.peer) => {
                tracing::debug!(%node, "cached connection was dead ({e}), reconnecting");
                let lease = self.inner.cache.get(node).await?;
                let (resp, _held) = lease.peer.request_counted(payload, budget).await?;
                wire::decode_response(&resp)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the server loop: accepts authenticated peers and dispatches their requests
    /// to the registered handlers, at most [`RpcConfig::max_concurrent_per_peer`] at once
    /// per peer. Runs until [`RpcServer::shutdown`] or the endpoint closes.
    #[must_use]
    pub fn serve(&self) -> RpcServer {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.clone(), stop_rx));
        RpcServer {
            stop: stop_tx,
            task,
        }
    }

    /// Answers one request payload (what the server does with each frame it receives).
    async fn dispatch(&self, from: NodeId, payload: &[u8]) -> Vec<u8> {
        let result = match wire::split_request(payload) {
            Ok((name, body)) => match self.entry(name) {
                Some(entry) => entry.dispatch.dispatch(from, body).await,
                None => {
                    wire::encode_response::<()>(&Err(RemoteError::UnknownService(name.to_owned())))
                }
            },
            Err(e) => wire::encode_response::<()>(&Err(e)),
        };
        result.unwrap_or_else(|e| {
            tracing::error!("cannot encode an RPC response: {e}");
            // Encoding a plain error enum into a Vec cannot fail; an empty payload would
            // still be reported to the caller as a protocol error.
            wire::encode_response::<()>(&Err(RemoteError::Internal(e.to_string())))
                .unwrap_or_default()
        })
    }

    /// Closes every cached connection (on shutdown, after [`RpcServer::shutdown`]).
    pub fn close_connections(&self) {
        self.inner.cache.clear();
    }
}

fn encode_failure(_: &EncodeError) -> &'static str {
    "the request could not be encoded"
}

/// A request encoded once for calls to several nodes ([`Rpc::call_encoded`]). Cheap to
/// clone: clones share the payload.
pub struct Encoded<S: Service> {
    req: Arc<S::Req>,
    /// An encoding failure fails every remote call alike.
    payload: Result<Arc<[u8]>, Arc<EncodeError>>,
}

impl<S: Service> Encoded<S> {
    /// Encodes `req` for the wire (and keeps it for a call to this node itself).
    #[must_use]
    pub fn new(req: S::Req) -> Self {
        let payload = wire::encode_request::<S>(&req)
            .map(Arc::from)
            .map_err(Arc::new);
        Self {
            req: Arc::new(req),
            payload,
        }
    }
}

impl<S: Service> Clone for Encoded<S> {
    fn clone(&self) -> Self {
        Self {
            req: Arc::clone(&self.req),
            payload: self.payload.clone(),
        }
    }
}

/// The running server loop of [`Rpc::serve`].
#[derive(Debug)]
pub struct RpcServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcServer {
    /// Stops taking new peers and requests, and waits for the requests in flight to be
    /// answered, so that nothing a peer was told is lost on the way down.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!("RPC server task failed: {e}");
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept_loop(rpc: Rpc, mut stop: watch::Receiver<bool>) {
    let mut peers = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            peer = rpc.endpoint().accept() => match peer {
                Some(peer) => {
                    rpc.inner.cache.alive(peer.node_id());
                    peers.spawn(serve_peer(rpc.clone(), peer, stop.clone()));
                }
                None => break,
            },
            Some(_) = peers.join_next(), if !peers.is_empty() => {}
        }
    }
    while peers.join_next().await.is_some() {}
}

async fn serve_peer(rpc: Rpc, peer: Peer, mut stop: watch::Receiver<bool>) {
    let from = peer.node_id();
    let slots = Arc::new(Semaphore::new(rpc.inner.cfg.max_concurrent_per_peer.max(1)));
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        // Take a slot before the stream: while none is free, the peer's streams wait in
        // QUIC, whose stream limit then stops the peer from opening more.
        let permit = tokio::select! {
            () = stopped(&mut stop) => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = stopped(&mut stop) => break,
            s = peer.accept() => s,
        };
        match stream {
            Ok(Some(stream)) => {
                let rpc = rpc.clone();
                in_flight.spawn(async move {
                    handle_stream(&rpc, from, stream).await;
                    drop(permit);
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer = %from, "connection lost: {e}");
                break;
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

async fn handle_stream(rpc: &Rpc, from: NodeId, mut s: BiStream) {
    let timeout = rpc.inner.cfg.request_read_timeout;
    let budget = &rpc.inner.cfg.budget;
    // The request's bytes stay held from the budget until its answer is sent.
    let (payload, _held) =
        match tokio::time::timeout(timeout, s.recv.recv_frame_counted(budget)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(peer = %from, "bad request stream: {e}");
                s.send.reset(1);
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %from, "no request within {timeout:?}");
                s.recv.stop(1);
                s.send.reset(1);
                return;
            }
        };
    let resp = rpc.dispatch(from, &payload).await;
    let sent = match s.send.send_frame(&resp).await {
        Ok(()) => s.send.finish(),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        tracing::debug!(peer = %from, "cannot send response: {e}");
    }
}
