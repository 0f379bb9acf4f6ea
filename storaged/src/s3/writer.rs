//! Streams a request body into storage: inline bytes for small bodies, otherwise chunks of
//! `block_size` written while the rest of the body is still arriving (16 MiB in flight), with
//! MD5 and the requested flexible checksum computed on the way.
//!
//! Each chunk holds its share of the node's memory budget from before its bytes are read
//! until its replicas have it, so memory stays bounded whatever the clients and peers do.
//!
//! The order of each chunk's writes (and why) is `model::writer`'s.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::StreamingBlob;
use s3s::stream::ByteStream as _;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::checksum::Hasher;
use super::error::OrS3;
use crate::model::object::ChecksumAlgo;
use crate::model::version::{BlockPos, VersionBlock};
use crate::model::{Model, writer};
use crate::util::budget::BudgetPermit;
use crate::util::id::{Hash, Uuid};

/// Bytes of chunk writes in flight per request: enough to keep the replicas' disks and
/// links busy while the next chunks arrive; the node-wide memory budget bounds the total.
const IN_FLIGHT_BYTES: usize = 16 << 20;

/// Chunk writes in flight per request for chunks of `block_size`.
fn in_flight_chunks(block_size: usize) -> usize {
    (IN_FLIGHT_BYTES / block_size.max(1)).max(2)
}

/// Where the body goes.
pub(super) struct Target<'a> {
    pub(super) model: &'a Arc<Model>,
    /// Version (object version or part version) the chunks belong to.
    pub(super) version: Uuid,
    /// Part number (1 for single PUTs).
    pub(super) part: u32,
    /// Whether a small body may be returned inline instead of chunked.
    pub(super) allow_inline: bool,
    /// Flexible checksum to compute.
    pub(super) algo: Option<ChecksumAlgo>,
    /// Size limit (EntityTooLarge beyond).
    pub(super) max_size: u64,
}

/// What was stored.
pub(super) struct Stored {
    pub(super) size: u64,
    pub(super) md5: [u8; 16],
    /// Raw checksum bytes of `Target::algo`.
    pub(super) checksum: Option<Vec<u8>>,
    /// The whole body, when small enough to live inline.
    pub(super) inline: Option<Vec<u8>>,
    /// First chunk, when chunked.
    pub(super) first_block: Option<Hash>,
}

fn md5_bytes(md5: Md5) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(md5.finalize().as_ref());
    out
}

fn body_error(e: s3s::StdError) -> S3Error {
    match e.downcast::<S3Error>() {
        Ok(e) => *e,
        Err(e) => {
            let text = e.to_string();
            if text.contains("SignatureMismatch") {
                s3_error!(
                    SignatureDoesNotMatch,
                    "The chunk signature does not match the signing key and payload"
                )
            } else if text.contains("Sha256Mismatch") {
                let mut e = S3Error::with_message(
                    S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                );
                e.set_status_code(http::StatusCode::BAD_REQUEST);
                e
            } else {
                S3Error::with_message(
                    S3ErrorCode::IncompleteBody,
                    format!("could not read the request body: {text}"),
                )
            }
        }
    }
}

/// Stores one chunk in the model writer's order, as a task of its own.
async fn store_chunk(
    model: Arc<Model>,
    version: Uuid,
    pos: BlockPos,
    data: Bytes,
    held: BudgetPermit,
) -> S3Result<(BlockPos, VersionBlock)> {
    let block = writer::store_chunk(&model, version, pos, data, held)
        .await
        .s3()?;
    Ok((pos, block))
}

/// The budget share of a chunk of `len` bytes (at most `block_size`): its bytes, and their
/// one encoding for the replicas.
fn chunk_share(len: usize, block_size: usize) -> usize {
    len.clamp(1, block_size).saturating_mul(2)
}

/// Reads `body` to the end into `target`.
pub(super) async fn store_body(
    target: Target<'_>,
    body: Option<StreamingBlob>,
) -> S3Result<Stored> {
    let block_size = target.model.block_size;
    let max_in_flight = in_flight_chunks(block_size);
    let mut md5 = Md5::new();
    let mut hasher = target.algo.map(Hasher::new);
    let mut buf = BytesMut::new();
    let mut size: u64 = 0;
    let mut offset: u64 = 0;
    let mut in_flight = FuturesOrdered::new();
    let mut blocks = Vec::new();
    let budget = target.model.budget().clone();
    // The budget share of the chunk being filled: taken before its bytes are read, so
    // that a node out of budget stops reading bodies (TCP pushes back on the clients).
    let mut held: Option<BudgetPermit> = None;

    let mut body = body;
    loop {
        if held.is_none() {
            let left = body
                .as_ref()
                .and_then(|b| b.remaining_length().exact())
                .unwrap_or(block_size);
            held = Some(
                budget
                    .acquire(chunk_share(buf.len() + left, block_size))
                    .await,
            );
        }
        let next = match body.as_mut() {
            Some(b) => b.next().await,
            None => None,
        };
        let chunk_done = next.is_none();
        if let Some(item) = next {
            let bytes = item.map_err(body_error)?;
            size += bytes.len() as u64;
            if size > target.max_size {
                return Err(s3_error!(
                    EntityTooLarge,
                    "Your proposed upload exceeds the maximum allowed object size"
                ));
            }
            md5.update(&bytes);
            if let Some(h) = hasher.as_mut() {
                h.update(&bytes);
            }
            buf.extend_from_slice(&bytes);
        }
        // Inline: the whole body fit under the threshold.
        if chunk_done && target.allow_inline && offset == 0 && buf.len() <= super::INLINE_MAX {
            return Ok(Stored {
                size,
                md5: md5_bytes(md5),
                checksum: hasher.map(Hasher::finalize),
                inline: Some(buf.to_vec()),
                first_block: None,
            });
        }
        while buf.len() >= block_size || (chunk_done && !buf.is_empty()) {
            let take = buf.len().min(block_size);
            let data = buf.split_to(take).freeze();
            let pos = BlockPos {
                part: target.part,
                offset,
            };
            offset += data.len() as u64;
            let share = match held.take() {
                Some(p) => p,
                None => budget.acquire(chunk_share(data.len(), block_size)).await,
            };
            in_flight.push_back(tokio::spawn(store_chunk(
                Arc::clone(target.model),
                target.version,
                pos,
                data,
                share,
            )));
            if in_flight.len() >= max_in_flight
                && let Some(done) = in_flight.next().await
            {
                blocks.push(done.map_err(S3Error::internal_error)??);
            }
        }
        if chunk_done {
            break;
        }
    }
    while let Some(done) = in_flight.next().await {
        blocks.push(done.map_err(S3Error::internal_error)??);
    }
    Ok(Stored {
        size,
        md5: md5_bytes(md5),
        checksum: hasher.map(Hasher::finalize),
        inline: None,
        first_block: blocks
            .iter()
            .min_by_key(|(pos, _)| *pos)
            .map(|(_, b): &(BlockPos, VersionBlock)| b.hash),
    })
}
