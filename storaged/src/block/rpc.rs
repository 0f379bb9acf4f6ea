//! The block service: how nodes put, get and probe chunks on each other.
//!
//! # Transport: one frame per message, not a streamed body
//!
//! The RPC server ([`crate::rpc`]) reads exactly one request frame per QUIC stream and
//! hands the handler the decoded request only; the handler never sees the stream, so a
//! body following the header frame could not reach it without changing `rpc` (a module
//! this one builds on, owned elsewhere). Chunks are bounded ([`MAX_BLOCK_LEN`], well under
//! the 64 MiB [`crate::net::MAX_FRAME_LEN`]; 1 MiB by default), so a chunk travels as the
//! payload of its request or response frame: at most one chunk (plus its encoding) is held
//! per transfer, never a whole object. `Put` carries `hash` and the bytes (the size is the
//! byte string's length, checked against [`MAX_BLOCK_LEN`] before anything is hashed).
//! When `rpc` grows streamed handlers, `Put`/`Get` can switch to a header frame plus
//! [`crate::net::FrameSend::send_body`] without changing [`BlockReq`]'s callers.
//!
//! Every message is encoded with [`crate::util::encode`] (a version byte, then named
//! MessagePack fields), so the service can evolve without a flag day.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::BlockManager;
use crate::error::Error;
use crate::rpc::{Handler, NodeId, Rpc, Service};
use crate::util::id::Hash;

/// The largest chunk a node accepts from a peer (32 MiB): a bound on what a peer can make
/// us hash and store in one request, far above the 1 MiB default `block_size`.
pub const MAX_BLOCK_LEN: usize = 32 * 1024 * 1024;

// A chunk plus its encoding must fit one frame.
const _: () = assert!(MAX_BLOCK_LEN + 1024 <= crate::net::MAX_FRAME_LEN);
// Every chunk a node may cut (config validation bounds `block_size`) is accepted by its peers.
const _: () = assert!(crate::config::MAX_BLOCK_SIZE <= MAX_BLOCK_LEN);

/// The block service on the wire (name `block`).
#[derive(Debug)]
pub struct BlockRpc;

impl Service for BlockRpc {
    const NAME: &'static str = "block";
    type Req = BlockReq;
    type Resp = BlockResp;
}

/// A request of the block service. Cheap to clone (the bytes are shared), so one `Put`
/// can go to every replica at once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BlockReq {
    /// Store this chunk. The receiver verifies that `data` hashes to `hash` before it
    /// writes anything, so a sender bug or a damaged transfer never lands on disk.
    Put {
        /// The chunk's content address.
        hash: Hash,
        /// The chunk's plain bytes.
        #[serde(with = "serde_shared_bytes")]
        data: Bytes,
    },
    /// Send back this chunk's bytes.
    Get {
        /// The chunk's content address.
        hash: Hash,
    },
    /// Say whether this chunk is stored (resync asks before it drops a copy).
    Has {
        /// The chunk's content address.
        hash: Hash,
    },
}

/// The answer to a [`BlockReq`]. Domain outcomes are variants, so a caller must match
/// on a refusal instead of mistaking it for success.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockResp {
    /// `Put`: the chunk is durably stored (it was, or it now is).
    Stored,
    /// `Get`: the chunk's bytes, verified against their hash by the sender (the receiver
    /// verifies again: the network and the peer are not trusted).
    Data(#[serde(with = "serde_shared_bytes")] Bytes),
    /// `Has`: whether the chunk is stored.
    Has(bool),
    /// `Get`: the chunk is not stored here.
    NotFound,
    /// `Get`: the stored copy fails hash verification (it is left for scrub/resync).
    Corrupt,
    /// `Put`: the chunk was refused and nothing was stored.
    Refused(Refusal),
    /// The node could not do it (disk error, …); the message is for logs.
    Failed(String),
}

/// Why a `Put` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The bytes do not hash to the announced address.
    #[error("the bytes hash to {got}, not to the announced {announced}")]
    HashMismatch {
        /// The address the sender announced.
        announced: Hash,
        /// What the received bytes hash to.
        got: Hash,
    },
    /// The chunk is larger than [`MAX_BLOCK_LEN`].
    #[error("chunk of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The chunk's length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// Serves [`BlockRpc`] from this node's [`BlockManager`].
pub struct BlockRpcHandler {
    manager: Arc<BlockManager>,
}

impl BlockRpcHandler {
    /// A handler storing into and reading from `manager`.
    #[must_use]
    pub fn new(manager: Arc<BlockManager>) -> Self {
        Self { manager }
    }

    /// Registers a handler for `manager` with `rpc`, so peers (and this node's own
    /// in-process calls) can reach its chunks.
    pub fn register(rpc: &Rpc, manager: Arc<BlockManager>) {
        rpc.register::<BlockRpc>(Arc::new(Self::new(manager)));
    }

    async fn put(&self, from: NodeId, hash: Hash, data: Bytes) -> BlockResp {
        if data.len() > MAX_BLOCK_LEN {
            tracing::warn!(peer = %from, block = %hash, len = data.len(), "refused an oversized chunk");
            return BlockResp::Refused(Refusal::TooLarge {
                len: data.len() as u64,
                max: MAX_BLOCK_LEN as u64,
            });
        }
        // Hashing a few MiB takes milliseconds: off the async threads all the same.
        let verify = data.clone();
        let got = match tokio::task::spawn_blocking(move || Hash::hash_of(&verify)).await {
            Ok(h) => h,
            Err(e) => return BlockResp::Failed(e.to_string()),
        };
        if got != hash {
            tracing::warn!(peer = %from, block = %hash, %got, "refused a chunk that does not match its hash");
            return BlockResp::Refused(Refusal::HashMismatch {
                announced: hash,
                got,
            });
        }
        match self.manager.write_block(hash, data).await {
            Ok(()) => BlockResp::Stored,
            Err(e) => {
                tracing::error!(peer = %from, block = %hash, error = %e, "cannot store a replicated chunk");
                BlockResp::Failed(e.to_string())
            }
        }
    }
}

#[async_trait::async_trait]
impl Handler<BlockRpc> for BlockRpcHandler {
    async fn handle(&self, from: NodeId, req: BlockReq) -> BlockResp {
        match req {
            BlockReq::Put { hash, data } => self.put(from, hash, data).await,
            BlockReq::Get { hash } => match self.manager.read_block(hash).await {
                Ok(data) => BlockResp::Data(data),
                Err(Error::MissingBlock(_)) => BlockResp::NotFound,
                Err(Error::CorruptBlock(_)) => {
                    self.manager.report_corrupt(hash);
                    BlockResp::Corrupt
                }
                Err(e) => BlockResp::Failed(e.to_string()),
            },
            BlockReq::Has { hash } => BlockResp::Has(self.manager.has_block(&hash)),
        }
    }
}

/// Serde for [`Bytes`] as a MessagePack byte string (not an array of integers), decoded
/// without an extra copy.
mod serde_shared_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Bytes::from(b.into_vec()))
    }
}
