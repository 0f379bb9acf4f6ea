//! Node-to-node transport: QUIC endpoints (quinn) with a persistent node identity,
//! authentication by the cluster secret, framed requests and streamed bodies.
//!
//! The `rpc` layer builds typed messages on top of this; nothing here knows what a
//! message means.
//!
//! # Identity
//!
//! Each node owns an ed25519 key pair, generated on first start and kept in
//! `metadata_dir/node_key` (PKCS#8 PEM, mode 0600, written atomically: see
//! [`NodeKey`]). The **node id** is the 32-byte public key ([`Id32`]).
//!
//! # Authentication by the cluster secret
//!
//! Mutual TLS 1.3 under a CA that only holders of `rpc_secret` can derive:
//!
//! 1. **Cluster CA.** `seed = blake3::derive_key("storaged net … cluster CA ed25519 seed
//!    v1", rpc_secret)`; the CA key is the ed25519 key with that seed, and its
//!    certificate (CN `storaged cluster CA`, CA with path length 0) is self-signed with
//!    fixed parameters. Every node holding the secret derives the same CA; nobody else can
//!    sign with it, and the secret cannot be recovered from the CA's public key.
//! 2. **Node certificate.** At bind, each node issues itself a certificate for its own
//!    node key, signed by the cluster CA (SAN `storaged`, EKU server + client auth).
//! 3. **Handshake.** Both sides run rustls with the `ring` provider chosen explicitly
//!    (DESIGN.md "TLS and crypto"), TLS 1.3 only, ALPN [`ALPN`] (`storaged/1`). The
//!    server requires a client certificate chaining to the cluster CA
//!    (`WebPkiClientVerifier`), the client requires the same of the server (WebPKI with
//!    the CA as the only root). Session tickets, resumption and 0-RTT are off, so every
//!    connection proves possession of a CA-signed key afresh.
//! 4. **Peer id.** After the handshake the remote node id is read from the public key of
//!    the peer's *verified* end-entity certificate, never from anything the peer sends.
//!
//! So a peer without the secret fails the handshake in either role, and since
//! [`Endpoint::accept`] yields a [`Peer`] only after a complete handshake, such a peer
//! never reaches a stream, let alone an RPC. The accepting side logs each refusal at
//! `warn` with the reason (which side refused which certificate), mentioning the cluster
//! secret. Rotating the secret rotates the CA: nodes must share the same secret.
//!
//! # Connections
//!
//! Incoming handshakes run in the background, at most 256 at once (more are refused
//! before any crypto); a server calls [`Endpoint::accept`] in a loop to take the peers
//! that authenticated. Connections are cheap to re-open (one round trip plus the TLS handshake); keep-alive
//! (default 5 s) keeps idle ones open through NATs and conntrack, and the idle timeout
//! (default 30 s) detects dead peers. A dropped [`Peer`] is re-made with
//! [`Endpoint::connect`].
//!
//! # Wire format
//!
//! Each request uses its own bidirectional stream ([`Peer::open`] / [`Peer::accept`]).
//! A stream carries, in each direction, a sequence of frames and bodies; the layer above
//! decides which comes when (typically: a header frame, optionally a body, then
//! `finish`). [`Peer::request`] is the common case: one frame each way.
//!
//! A **frame** (bounded, read whole):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | payload length `N`, `u32` big-endian, `N ≤` [`MAX_FRAME_LEN`] (64 MiB) |
//! | 4 | `N` | payload |
//!
//! A **body** (unbounded, read in pieces of at most [`BODY_PIECE`] bytes):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | body length `L`, `u64` big-endian |
//! | 8 | `L` | raw bytes |
//!
//! The length is validated before anything is allocated for it: an oversized frame is
//! [`FrameError::TooLarge`], a stream that ends early is [`FrameError::Incomplete`];
//! neither panics. [`frame`] has the sans-IO codec (`check` before `parse`).

mod endpoint;
pub mod frame;
mod identity;
mod stream;
mod tls;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use endpoint::{BiStream, Endpoint, Peer};
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use identity::NodeKey;
pub use stream::{BODY_PIECE, BodyReader, FrameRecv, FrameSend};
pub use tls::CLUSTER_SERVER_NAME;

use crate::util::id::Id32;

/// The ALPN protocol id of storaged's node-to-node protocol, version 1. A peer speaking
/// anything else fails the handshake.
pub const ALPN: &[u8] = b"storaged/1";

/// Name of the node key file in the metadata directory.
pub const NODE_KEY_FILE: &str = "node_key";

/// Default keep-alive interval: frequent enough to hold NAT and conntrack entries open.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Default idle timeout: a peer silent this long (through several keep-alives) is dead.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What an [`Endpoint`] needs: where to listen, the cluster secret, where the node key
/// lives, and the liveness timers.
#[derive(Clone)]
pub struct NetConfig {
    /// UDP address to listen on (`rpc_bind_addr`); port 0 picks one (tests).
    pub bind: SocketAddr,
    /// The cluster secret (`rpc_secret`): only nodes sharing it can talk.
    pub secret: [u8; 32],
    /// The node key file, normally `metadata_dir/`[`NODE_KEY_FILE`].
    pub key_path: PathBuf,
    /// Keep-alive interval on every connection.
    pub keep_alive: Duration,
    /// Idle timeout after which a silent connection is closed.
    pub idle_timeout: Duration,
}

impl NetConfig {
    /// A configuration with the default keep-alive and idle timeout.
    #[must_use]
    pub fn new(bind: SocketAddr, secret: [u8; 32], key_path: PathBuf) -> Self {
        Self {
            bind,
            secret,
            key_path,
            keep_alive: DEFAULT_KEEP_ALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("NetConfig")
            .field("bind", &self.bind)
            .field("secret", &"<redacted>")
            .field("key_path", &self.key_path)
            .field("keep_alive", &self.keep_alive)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The node key file could not be read or written.
    #[error("node key file {}: {source}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node key file exists but does not hold a usable key (never overwritten:
    /// that would change the node's identity).
    #[error("node key file {}: {why}", path.display())]
    NodeKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A [`NetConfig`] value is out of range.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// Issuing the cluster CA or the node certificate failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// rustls refused a configuration value.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The connection could not even be attempted (bad address, endpoint closed).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The TLS handshake failed: one side's certificate was refused, which means the two
    /// nodes do not share the cluster secret (or the peer is not a storaged node).
    #[error("handshake refused, the peer does not hold this cluster secret: {reason}")]
    NotInCluster {
        /// Which side refused what, as rustls or the peer's alert said.
        reason: String,
    },
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer's verified certificate does not carry a usable node key.
    #[error("peer certificate: {0}")]
    PeerCertificate(String),
    /// The peer is a cluster member, but not the node we meant to reach (its address
    /// now belongs to another node).
    #[error("expected node {expected}, reached node {got}")]
    UnexpectedPeer {
        /// The node we dialled for.
        expected: Id32,
        /// The node that answered.
        got: Id32,
    },
    /// Writing to a stream failed.
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream was already finished or reset.
    #[error("stream closed: {0}")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// A frame could not be read or sent.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The local source of a body ended before its announced length.
    #[error("body source ended after {got} of {expected} bytes")]
    BodyTooShort {
        /// The announced length.
        expected: u64,
        /// What the source gave.
        got: u64,
    },
    /// The local source or sink of a body failed.
    #[error("body I/O: {0}")]
    BodyIo(std::io::Error),
    /// The stream broke an invariant of the wire format.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A blocking task (key file I/O) panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Test helper: binds an endpoint, retrying while the port is still held by an endpoint
/// that was just closed (a node restarting on the same address), until `within`.
#[cfg(test)]
pub(crate) async fn bind_retrying(cfg: NetConfig, within: std::time::Duration) -> Endpoint {
    let end = tokio::time::Instant::now() + within;
    loop {
        match Endpoint::bind(cfg.clone()).await {
            Ok(e) => return e,
            Err(NetError::Bind { .. }) if tokio::time::Instant::now() < end => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind: {e}"),
        }
    }
}
