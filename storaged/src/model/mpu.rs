//! The multipart upload table: an upload's parts, each a version of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::object::{ChecksumAlgo, ChecksumKind, StoredChecksum};
use super::version::{Version, VersionTable};
use crate::error::Result;
use crate::table::{EmptyKey, Entry, TableSchema, UpdateTx};
use crate::util::crdt::{Bool, Crdt};
use crate::util::id::Uuid;

/// A part upload: (part number, timestamp), so a re-uploaded part supersedes the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartKey {
    /// 1..=10000.
    pub part_number: u32,
    /// When the upload of this part started.
    pub timestamp: u64,
}

/// One uploaded (or uploading) part.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MpuPart {
    /// Version holding the part's chunks.
    pub version: Uuid,
    /// MD5 hex, once the part is complete.
    pub etag: Option<String>,
    /// Size, once complete.
    pub size: Option<u64>,
    /// Flexible checksum of the part, if any.
    pub checksum: Option<StoredChecksum>,
}

/// A multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartUpload {
    /// Upload id (= the uuid of the object's uploading version).
    pub upload_id: Uuid,
    /// Creation time.
    pub timestamp: u64,
    /// Tombstone (completed or aborted).
    pub deleted: Bool,
    /// Parts.
    pub parts: BTreeMap<PartKey, MpuPart>,
    /// Bucket.
    pub bucket_id: Uuid,
    /// Object key.
    pub key: String,
    /// Checksum algorithm and type chosen at creation.
    pub checksum: Option<(ChecksumAlgo, ChecksumKind)>,
    /// What the completion answered, kept with the tombstone: a client that retries a
    /// CompleteMultipartUpload whose answer it lost gets the same answer, not
    /// NoSuchUpload for an upload that did complete.
    #[serde(default)]
    pub completed: Option<CompletedAs>,
}

/// The answer of a completed upload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CompletedAs {
    /// The object's ETag (`<md5>-<parts>`).
    pub etag: String,
    /// Its checksum, if the upload had one.
    pub checksum: Option<StoredChecksum>,
}

impl MultipartUpload {
    /// A new upload.
    #[must_use]
    pub fn new(upload_id: Uuid, timestamp: u64, bucket_id: Uuid, key: String) -> Self {
        Self {
            upload_id,
            timestamp,
            deleted: Bool(false),
            parts: BTreeMap::new(),
            bucket_id,
            key,
            checksum: None,
            completed: None,
        }
    }

    /// The latest complete upload of every part number, in part order.
    #[must_use]
    pub fn completed_parts(&self) -> BTreeMap<u32, (PartKey, &MpuPart)> {
        let mut out = BTreeMap::new();
        for (k, p) in &self.parts {
            if p.etag.is_some() {
                out.insert(k.part_number, (*k, p));
            }
        }
        out
    }
}

impl Crdt for MultipartUpload {
    fn merge(&mut self, other: &Self) {
        self.deleted.merge(&other.deleted);
        self.timestamp = self.timestamp.min(other.timestamp);
        self.checksum = self.checksum.max(other.checksum);
        if self.completed < other.completed {
            self.completed.clone_from(&other.completed);
        }
        if self.deleted.0 {
            self.parts.clear();
        } else {
            for (k, p) in &other.parts {
                let e = self.parts.entry(*k).or_insert_with(|| p.clone());
                if p > e {
                    *e = p.clone();
                }
            }
        }
    }
}

impl Entry<Uuid, EmptyKey> for MultipartUpload {
    fn partition_key(&self) -> &Uuid {
        &self.upload_id
    }
    fn sort_key(&self) -> &EmptyKey {
        &EmptyKey
    }
}

/// Schema of the multipart upload table.
pub struct MpuTable;

impl TableSchema for MpuTable {
    const TABLE_NAME: &'static str = "mpu_v1";
    type P = Uuid;
    type S = EmptyKey;
    type E = MultipartUpload;
    type Filter = ();

    fn matches_filter(e: &MultipartUpload, (): &()) -> bool {
        !e.deleted.0
    }

    /// A completed or aborted upload has no parts left (the merge clears them and its hook
    /// released their versions); every reader treats it as absent (`NoSuchUpload`).
    fn is_tombstone(entry: &MultipartUpload) -> bool {
        entry.deleted.0
    }

    /// Releases the part versions once the upload is completed or aborted.
    fn updated(
        &self,
        tx: &mut UpdateTx<'_>,
        old: Option<&MultipartUpload>,
        new: Option<&MultipartUpload>,
    ) -> Result<()> {
        let Some(old) = old else { return Ok(()) };
        for (k, p) in &old.parts {
            if new.is_none_or(|n| !n.parts.contains_key(k)) {
                tx.queue_insert::<VersionTable>(&Version::deleted(p.version))?;
            }
        }
        Ok(())
    }
}
