//! The object writer: the one owner of an upload's crash-safety order, shared by PutObject,
//! CopyObject, UploadPart and CompleteMultipartUpload, so that the order is written once.
//!
//! The order, and why:
//!
//! 1. `begin` (chunked single PUTs): a durable in-flight marker on this node, then an
//!    invisible `Uploading` version in the object table. A crash from here on is cleaned up
//!    at the next start (the marker names the version to abort).
//! 2. `store_chunk`, per chunk: the version's chunk entry and the chunk's reference are
//!    durable (together, one round trip) before the chunk is stored, so that no crash leaves
//!    a chunk that nothing references; aborting the version releases every reference.
//! 3. `commit`: the `Complete` version; only now is the object visible (and acknowledged).
//!
//! A small body (inline: no chunks, so no step 1 or 2) is written without reading the
//! object first ([`ObjectWriter::unread`]): one quorum round trip. Its timestamp comes from
//! this node's own copy when it has one; a replica whose copy holds a version at least as
//! new refuses it, and the commit tries again above what the replicas hold (a second round
//! trip only for a lagging clock or a concurrent writer of the key), or after reading the
//! object when a replica cannot judge (see `ReplicatedTable::insert_unless_superseded`).
//!
//! Whatever ends an upload early releases its chunks without a restart: an error path calls
//! `abort`; a dropped writer (the client went away and the request future was dropped)
//! aborts in the background. A version superseded while it was still uploading, or on
//! arrival, is released by the object and version tables' `merged` hooks.

use std::sync::Arc;

use bytes::Bytes;

use super::object::{
    ChecksumAlgo, ObjectHeaders, ObjectVersion, ObjectVersionData, ObjectVersionState,
};
use super::version::{BlockPos, VersionBlock};
use super::{BlockRef, Model, Object, Version};
use crate::error::Result;
use crate::util::budget::BudgetPermit;
use crate::util::fault::{self, Fault};
use crate::util::id::{Hash, Uuid};
use crate::util::time::next_timestamp;

/// One object version being written to (bucket, key).
pub struct ObjectWriter {
    model: Arc<Model>,
    bucket: Uuid,
    key: String,
    uuid: Uuid,
    timestamp: u64,
    /// An `Uploading` version and an in-flight marker exist and must be closed.
    begun: bool,
    /// Committed or aborted: nothing left to clean up.
    finished: bool,
    /// The timestamp was not taken over a quorum read of the object (see the module docs).
    unread: bool,
}

/// Tries of an unread commit refused by the replicas before it reads the object first.
const UNREAD_TRIES: usize = 3;

impl ObjectWriter {
    /// A writer for a new version of (`bucket`, `key`) ordered at `timestamp` (which the
    /// caller takes from `util::time::next_timestamp` over the current object).
    #[must_use]
    pub fn new(model: &Arc<Model>, bucket: Uuid, key: &str, timestamp: u64) -> Self {
        Self::with_uuid(model, bucket, key, Uuid::random(), timestamp)
    }

    /// The same with a version id chosen beforehand (a small body read before its
    /// timestamp is known).
    #[must_use]
    pub fn with_uuid(
        model: &Arc<Model>,
        bucket: Uuid,
        key: &str,
        uuid: Uuid,
        timestamp: u64,
    ) -> Self {
        Self {
            model: Arc::clone(model),
            bucket,
            key: key.to_string(),
            uuid,
            timestamp,
            begun: false,
            finished: false,
            unread: false,
        }
    }

    /// A writer for a small (inline) new version of (`bucket`, `key`) whose timestamp is
    /// taken without a quorum read: above this node's own copy of the object, if any.
    pub async fn unread(model: &Arc<Model>, bucket: Uuid, key: &str) -> Self {
        // Only a hint: a missing or stale local copy costs a refusal, never a wrong order.
        let local = model.objects.get_local(&bucket, &key.to_string()).await;
        let last = local.ok().flatten().map_or(0, |o| o.last_timestamp());
        let mut w = Self::new(model, bucket, key, next_timestamp(last));
        w.unread = true;
        w
    }

    /// The version's id (its chunks are attached to it).
    #[must_use]
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The version's timestamp.
    #[must_use]
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Step 1 for a body that will be chunked: the in-flight marker, then the invisible
    /// `Uploading` version.
    pub async fn begin(
        &mut self,
        headers: ObjectHeaders,
        checksum_algo: Option<ChecksumAlgo>,
    ) -> Result<()> {
        let m = &self.model;
        m.begin_upload(self.uuid, self.bucket, &self.key, self.timestamp)
            .await?;
        self.begun = true;
        let v = ObjectVersion {
            uuid: self.uuid,
            timestamp: self.timestamp,
            state: ObjectVersionState::Uploading {
                multipart: false,
                headers,
                checksum_algo,
                checksum_kind: None,
            },
        };
        m.objects
            .insert(&Object::new(self.bucket, self.key.clone(), vec![v]))
            .await?;
        Ok(())
    }

    /// Step 3: makes the version visible, together with `also` (e.g. the multipart upload
    /// the completion closes), then forgets the in-flight marker.
    pub async fn commit(mut self, data: ObjectVersionData, also: Vec<ObjectVersion>) -> Result<()> {
        // Test-only: acknowledge every other write without its commit (see `util::fault`).
        let lose = fault::active(Fault::LoseAckedPuts) && self.uuid.as_bytes()[0].is_multiple_of(2);
        if !lose {
            let inline = matches!(data, ObjectVersionData::Inline(..));
            if self.unread && inline && also.is_empty() && !self.begun {
                self.commit_unread(data).await?;
            } else {
                if self.unread {
                    // Not a small body after all: order it over a read, as any other.
                    self.order_over_a_read().await?;
                }
                let mut versions = also;
                versions.push(self.version(data));
                self.model
                    .objects
                    .insert(&Object::new(self.bucket, self.key.clone(), versions))
                    .await?;
            }
        }
        self.finished = true;
        if self.begun {
            self.model.end_upload(self.uuid).await?;
        }
        Ok(())
    }

    fn version(&self, data: ObjectVersionData) -> ObjectVersion {
        ObjectVersion {
            uuid: self.uuid,
            timestamp: self.timestamp,
            state: ObjectVersionState::Complete(data),
        }
    }

    /// Orders the version after every one a quorum read of the object finds.
    async fn order_over_a_read(&mut self) -> Result<()> {
        let existing = self.model.objects.get(&self.bucket, &self.key).await?;
        let last = existing.as_ref().map_or(0, Object::last_timestamp);
        self.timestamp = next_timestamp(last.max(self.timestamp));
        Ok(())
    }

    /// The commit of an [`Self::unread`] writer (see the module docs).
    async fn commit_unread(&mut self, data: ObjectVersionData) -> Result<()> {
        for _ in 0..UNREAD_TRIES {
            let entry = Object::new(
                self.bucket,
                self.key.clone(),
                vec![self.version(data.clone())],
            );
            match self.model.objects.insert_unless_superseded(&entry).await {
                Ok(None) => return Ok(()),
                Ok(Some(newer)) => {
                    // Below what the replicas hold: again above it, as a new version (the
                    // refused one, where it was merged, is pruned by the newer ones).
                    self.timestamp = next_timestamp(newer.last_timestamp().max(self.timestamp));
                    self.uuid = Uuid::random();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "unread commit refused: reading the object first");
                    break;
                }
            }
        }
        self.order_over_a_read().await?;
        self.uuid = Uuid::random();
        let entry = Object::new(self.bucket, self.key.clone(), vec![self.version(data)]);
        self.model.objects.insert(&entry).await?;
        Ok(())
    }

    /// Gives the upload up, releasing whatever chunks it stored.
    pub async fn abort(mut self) {
        self.finished = true;
        if self.begun {
            abort_version(
                &self.model,
                self.bucket,
                &self.key,
                self.uuid,
                self.timestamp,
            )
            .await;
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.finished || !self.begun {
            return;
        }
        // The request was dropped mid-upload (the client disconnected): abort now rather
        // than at the next start.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (model, bucket, key) = (Arc::clone(&self.model), self.bucket, self.key.clone());
            let (uuid, timestamp) = (self.uuid, self.timestamp);
            rt.spawn(async move {
                tracing::info!(%uuid, "upload dropped before its commit: aborting it");
                abort_version(&model, bucket, &key, uuid, timestamp).await;
            });
        }
    }
}

/// Marks a version aborted, which releases its chunks, and forgets its in-flight marker.
async fn abort_version(model: &Model, bucket: Uuid, key: &str, uuid: Uuid, timestamp: u64) {
    let v = ObjectVersion {
        uuid,
        timestamp,
        state: ObjectVersionState::Aborted,
    };
    if let Err(e) = model
        .objects
        .insert(&Object::new(bucket, key.to_string(), vec![v]))
        .await
    {
        // The marker stays: the next start retries the abort.
        tracing::warn!(error = %e, %uuid, "could not abort an unfinished upload");
        return;
    }
    if let Err(e) = model.end_upload(uuid).await {
        tracing::warn!(error = %e, %uuid, "could not clear an in-flight marker");
    }
}

/// Step 2: stores `data` as the chunk at `pos` of `version` (an object version, or a part's
/// version). `held` is the chunk's share of the memory budget; it is given back once every
/// replica has it (or was left to resync).
pub async fn store_chunk(
    model: &Model,
    version: Uuid,
    pos: BlockPos,
    data: Bytes,
    held: BudgetPermit,
) -> Result<VersionBlock> {
    let hash = Hash::hash_of(&data);
    let block = VersionBlock {
        hash,
        size: data.len() as u64,
    };
    let mut v = Version::new(version);
    v.blocks.insert(pos, block);
    // The version entry and the chunk's reference are durable before the chunk is stored
    // (together, one round trip); chunks are pipelined by the caller, so the second round
    // trip overlaps the next chunks' transfers.
    attach_chunks(model, &v).await?;
    model.put_chunk(hash, data, held).await?;
    Ok(block)
}

/// Attaches existing chunks (`blocks`, e.g. a copy source's or the parts of a completed
/// multipart upload) to a new `version`: its chunk list and a reference per chunk, in one
/// round trip, before the version is committed.
pub async fn attach_chunks(model: &Model, version: &Version) -> Result<()> {
    let refs: Vec<BlockRef> = version
        .blocks
        .values()
        .map(|b| BlockRef::new(b.hash, version.uuid))
        .collect();
    let (a, b) = tokio::join!(
        model.versions.insert(version),
        model.block_refs.insert_many(&refs),
    );
    a?;
    b?;
    Ok(())
}
