//! Typed messages over [`crate::net`]: services, handlers, calls with timeouts, quorum
//! calls.
//!
//! # Services
//!
//! A [`Service`] names one protocol between nodes (membership, a table, the block store)
//! and fixes its two message types: one request enum and one response enum (separate
//! types, no catch-all arm, so adding a message is a compile error wherever it is not
//! handled). A node answers a service by registering a [`Handler`] for it with
//! [`Rpc::register`]; it calls one with [`Rpc::call`] or, to reach a quorum of
//! replicas, [`Rpc::try_call_many`].
//!
//! # Wire format
//!
//! Each call is one [`crate::net::Peer::request`]: one frame each way on a fresh QUIC
//! stream. Every message body is encoded with [`crate::util::encode::encode`], so it
//! carries a format version byte and can evolve without a flag day. The frame payloads
//! ([`wire`] has the sans-IO codec):
//!
//! Request:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | service name length `L`, `1 ≤ L ≤` [`wire::MAX_SERVICE_NAME`] |
//! | 1 | `L` | service name, ASCII ([`Service::NAME`]) |
//! | 1 + `L` | .. | `encode(S::Req)` |
//!
//! Response:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | status: [`wire::STATUS_OK`] (0) or [`wire::STATUS_ERR`] (1) |
//! | 1 | .. | `encode(S::Resp)` if OK, `encode(`[`RemoteError`]`)` otherwise |
//!
//! Domain errors (a missing object, a refused write) belong in the service's response
//! enum; [`RemoteError`] only says the request never reached a handler.
//!
//! # Connections
//!
//! [`Rpc`] keeps at most one cached connection per node, made on first use from the
//! addresses it was given ([`Rpc::set_addrs`], normally by `membership`) and checked to
//! reach the expected node id. A failed connection attempt puts the node in exponential
//! back-off ([`Backoff`]): until it expires, calls fail at once with
//! [`RpcError::Backoff`] instead of piling timeouts on a dead node. A node that connects
//! to us is alive, so its back-off is cleared. Each side calls over the connection it
//! made (streams are served on accepted connections only). A call to this node itself
//! runs the handler in-process, without encoding or the network.
//!
//! # Server
//!
//! [`Rpc::serve`] accepts authenticated peers and runs each request in its own task,
//! with at most [`RpcConfig::max_concurrent_per_peer`] requests in flight per peer: past
//! that, the server stops taking the peer's new streams, so QUIC flow control pushes
//! back on the sender instead of us queueing without bound.

mod backoff;
mod conn;
mod helper;
pub mod quorum;
pub mod wire;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use backoff::Backoff;
pub use helper::{Encoded, Rpc, RpcServer};
pub use quorum::{Progress, QuorumError, QuorumTracker};

use crate::net::NetError;
use crate::util::budget::MemoryBudget;
use crate::util::encode::EncodeError;
use crate::util::id::Id32;

/// A node's identity: its public key (see [`crate::net`]).
pub type NodeId = Id32;

/// One protocol between nodes: a name on the wire and its request and response enums.
///
/// Implemented by a unit type per service (`struct MembershipRpc;`), so that a call
/// names its service in its type and cannot send the wrong message.
pub trait Service: Send + Sync + 'static {
    /// The service's name on the wire: short ASCII, stable forever (renaming it breaks
    /// mixed-version clusters), at most [`wire::MAX_SERVICE_NAME`] bytes.
    const NAME: &'static str;
    /// The request enum. `Clone` so that one request can go to several nodes and to the
    /// local handler.
    type Req: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// The response enum.
    type Resp: Serialize + DeserializeOwned + Send + 'static;
}

/// Answers the requests of service `S`: what a node registers to serve it.
///
/// Infallible by signature: a handler that can fail says so in `S::Resp`, where the
/// caller must match on it.
#[async_trait::async_trait]
pub trait Handler<S: Service>: Send + Sync + 'static {
    /// Handles `req` sent by node `from` (the verified id of the peer, or this node's own
    /// id for an in-process call).
    async fn handle(&self, from: NodeId, req: S::Req) -> S::Resp;
}

/// Tunables of [`Rpc`]: connection back-off and server limits.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Requests of one peer handled at once; more wait (QUIC flow control pushes back).
    pub max_concurrent_per_peer: usize,
    /// How long the server waits for a request frame on a stream it accepted, so that a
    /// slow or stuck peer cannot hold a request slot forever.
    pub request_read_timeout: Duration,
    /// How long one connection attempt to one address may take (QUIC handshake
    /// included): a dead address fails after this, and the node enters back-off.
    pub connect_timeout: Duration,
    /// The first back-off after a failed connection attempt to a node.
    pub backoff_min: Duration,
    /// The cap of the exponential back-off.
    pub backoff_max: Duration,
    /// The node's memory budget: frames from peers (requests and responses) hold their
    /// bytes from it while they are read and handled.
    pub budget: MemoryBudget,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            max_concurrent_per_peer: 64,
            request_read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            budget: MemoryBudget::default(),
        }
    }
}

/// Why a request was not handled by the remote node (sent back in place of a response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The node serves no such service (not registered yet, or an older daemon).
    #[error("the node serves no service named {0:?}")]
    UnknownService(String),
    /// The request could not be decoded (version skew or a bug).
    #[error("the node could not decode the request: {0}")]
    BadRequest(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The handler's response could not be encoded (a bug on the remote node).
    #[error("the node could not encode its response: {0}")]
    Internal(String),
}

/// Errors of a call to one node.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Connecting or talking to the node failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A message could not be encoded, or the response not decoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The call did not complete in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// We know no address for the node.
    #[error("no known address for node {0}")]
    NoAddress(NodeId),
    /// The last connection attempt failed; the node is not retried before the back-off
    /// expires.
    #[error("node {node} unreachable, retrying in {retry_in:?} (last error: {last_error})")]
    Backoff {
        /// The node.
        node: NodeId,
        /// Time left before the next attempt.
        retry_in: Duration,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// The failure detector has declared the node down: calls fail at once instead of
    /// waiting out their timeout on a link that went silent (membership's pings still
    /// probe it and lift this when it answers).
    #[error("node {0} is down")]
    Down(NodeId),
    /// The node answered that it could not handle the request.
    #[error("remote: {0}")]
    Remote(#[from] RemoteError),
    /// The response frame is malformed.
    #[error("malformed response: {0}")]
    Protocol(&'static str),
    /// The call was abandoned before it answered (its task panicked or the runtime is
    /// shutting down).
    #[error("the call was abandoned")]
    Aborted,
}
