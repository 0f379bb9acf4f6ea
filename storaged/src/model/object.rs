//! The object table: per (bucket, key), the list of versions ordered by (timestamp, uuid).
//!
//! An unversioned bucket keeps the versions from the newest complete one onwards (older ones
//! are pruned by the merge itself), plus multipart uploads still in progress, which S3 lets
//! outlive newer PUTs of the same key. Versioned buckets will keep more, with delete
//! markers; the shape is already the one they need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::counters;
use super::version::{Version, VersionTable};
use crate::error::Result;
use crate::table::{Entry, TableSchema, UpdateTx};
use crate::util::crdt::Crdt;
use crate::util::id::{Hash, Uuid};

/// Headers stored with an object and returned on GET/HEAD.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Expires`, as sent.
    pub expires: Option<String>,
    /// `x-amz-meta-*` (names lower-cased, without the prefix).
    pub user_meta: BTreeMap<String, String>,
}

/// Checksum algorithms of the S3 flexible checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChecksumAlgo {
    /// CRC-32 (ISO-HDLC).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// Whether a checksum covers the whole object or is a checksum of part checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChecksumKind {
    /// Of the whole body.
    FullObject,
    /// Of the concatenated part checksums, rendered `value-N`.
    Composite,
}

/// A stored checksum.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredChecksum {
    /// Algorithm.
    pub algo: ChecksumAlgo,
    /// Base64 value (with `-N` for composite).
    pub value: String,
    /// Full-object or composite.
    pub kind: ChecksumKind,
}

/// Metadata of a complete object version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Body size in bytes.
    pub size: u64,
    /// ETag without quotes: MD5 hex, or `md5-of-md5s-N` for multipart.
    pub etag: String,
    /// Stored headers.
    pub headers: ObjectHeaders,
    /// Flexible checksum, when the client sent or asked for one.
    pub checksum: Option<StoredChecksum>,
    /// Number of parts for multipart objects (0 otherwise).
    pub parts: u32,
}

/// The data of a complete version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectVersionData {
    /// A DELETE happened here.
    DeleteMarker,
    /// Small body kept in the metadata itself (one write, no chunk).
    Inline(ObjectMeta, #[serde(with = "serde_bytes")] Vec<u8>),
    /// Body in chunks listed by the version table entry of the same uuid.
    FirstBlock(ObjectMeta, Hash),
}

/// Life cycle of a version. A version uuid serves one purpose: a single PUT (`Uploading`
/// without multipart, then `Complete` or `Aborted`), a multipart upload (`Uploading` with
/// multipart, then `Aborted` when completed or aborted: its completion is a new version), or
/// a delete marker / copy (`Complete` at once). The merge laws hold on such histories.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectVersionState {
    /// Body still arriving (single PUT) or multipart upload open.
    Uploading {
        /// Multipart upload (listed by ListMultipartUploads).
        multipart: bool,
        /// Headers given at creation.
        headers: ObjectHeaders,
        /// Checksum algorithm requested at creation (multipart).
        checksum_algo: Option<ChecksumAlgo>,
        /// Checksum type requested at creation (multipart).
        checksum_kind: Option<ChecksumKind>,
    },
    /// Visible.
    Complete(ObjectVersionData),
    /// Given up; its data is released.
    Aborted,
}

impl Crdt for ObjectVersionState {
    /// Complete beats Aborted beats Uploading: an upload can be given up while it is in
    /// progress, but nothing can take back a version once it completed (so a stray abort
    /// can never lose acknowledged data, and a version pruned as superseded stays so).
    fn merge(&mut self, other: &Self) {
        use ObjectVersionState as S;
        match (&*self, other) {
            (S::Complete(a), S::Complete(b)) => {
                if b > a {
                    *self = other.clone();
                }
            }
            (S::Complete(_), _) => {}
            (_, S::Complete(_)) => *self = other.clone(),
            (S::Aborted, _) => {}
            (_, S::Aborted) => *self = S::Aborted,
            (S::Uploading { .. }, S::Uploading { .. }) => {
                if other > self {
                    *self = other.clone();
                }
            }
        }
    }
}

/// One version of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    /// Unique id (also the version table key and the multipart upload id).
    pub uuid: Uuid,
    /// Milliseconds; with `uuid`, the version order.
    pub timestamp: u64,
    /// State.
    pub state: ObjectVersionState,
}

impl ObjectVersion {
    fn order(&self) -> (u64, Uuid) {
        (self.timestamp, self.uuid)
    }

    /// Whether the version is complete (data or delete marker).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        matches!(self.state, ObjectVersionState::Complete(_))
    }

    /// Whether it is an open multipart upload.
    #[must_use]
    pub fn is_open_multipart(&self) -> bool {
        matches!(
            self.state,
            ObjectVersionState::Uploading {
                multipart: true,
                ..
            }
        )
    }

    /// Metadata when the version holds data.
    #[must_use]
    pub fn meta(&self) -> Option<&ObjectMeta> {
        match &self.state {
            ObjectVersionState::Complete(
                ObjectVersionData::Inline(m, _) | ObjectVersionData::FirstBlock(m, _),
            ) => Some(m),
            _ => None,
        }
    }

    /// Whether chunks may be attached to this version in the version table.
    fn may_have_blocks(&self) -> bool {
        matches!(
            self.state,
            ObjectVersionState::Uploading {
                multipart: false,
                ..
            } | ObjectVersionState::Complete(ObjectVersionData::FirstBlock(..))
        )
    }
}

/// An object key of a bucket with its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Bucket id.
    pub bucket_id: Uuid,
    /// Object key.
    pub key: String,
    versions: Vec<ObjectVersion>,
}

impl Object {
    /// An object entry holding `versions`, as an update to merge into the table. Not pruned
    /// here: a version it closes (an aborted upload) must reach the stored entry to close it
    /// there; the merge on insert prunes.
    #[must_use]
    pub fn new(bucket_id: Uuid, key: String, versions: Vec<ObjectVersion>) -> Self {
        let mut o = Self {
            bucket_id,
            key,
            versions: Vec::new(),
        };
        for v in versions {
            o.merge_version(&v);
        }
        o
    }

    /// Versions, oldest first.
    #[must_use]
    pub fn versions(&self) -> &[ObjectVersion] {
        &self.versions
    }

    /// The newest complete version, if it holds data (not a delete marker).
    #[must_use]
    pub fn current(&self) -> Option<&ObjectVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.is_complete())
            .filter(|v| v.meta().is_some())
    }

    /// The newest timestamp of any version (for `next_timestamp`).
    #[must_use]
    pub fn last_timestamp(&self) -> u64 {
        self.versions.iter().map(|v| v.timestamp).max().unwrap_or(0)
    }

    fn merge_version(&mut self, v: &ObjectVersion) {
        match self
            .versions
            .binary_search_by(|x| x.order().cmp(&v.order()))
        {
            Ok(i) => self.versions[i].state.merge(&v.state),
            Err(i) => self.versions.insert(i, v.clone()),
        }
    }

    /// Drops the data versions (complete, or single PUTs still uploading) older than the
    /// newest complete version. `Aborted` versions stay as tombstones so that an abort
    /// reaches every copy that still holds the upload open, whatever the merge order; they
    /// are dropped once the newest complete version is [`ABORTED_TOMBSTONE_TTL_MS`] newer.
    /// Open multipart uploads stay: S3 lets them outlive newer PUTs of the same key.
    /// A function of the merged set only (it reads no clock), so merging stays a CRDT.
    fn prune(&mut self) {
        let Some(last) = self.versions.iter().rposition(ObjectVersion::is_complete) else {
            return;
        };
        let newest = self.versions[last].timestamp;
        let mut i = 0;
        self.versions.retain(|v| {
            let older = i < last;
            i += 1;
            match v.state {
                _ if !older => true,
                ObjectVersionState::Uploading { multipart, .. } => multipart,
                ObjectVersionState::Aborted => {
                    v.timestamp.saturating_add(ABORTED_TOMBSTONE_TTL_MS) >= newest
                }
                ObjectVersionState::Complete(_) => false,
            }
        });
    }
}

/// How much newer (in version timestamps) the current version must be before an aborted
/// version's tombstone is forgotten: far longer than any abort takes to reach all copies.
pub const ABORTED_TOMBSTONE_TTL_MS: u64 = 24 * 3600 * 1000;

impl Crdt for Object {
    fn merge(&mut self, other: &Self) {
        for v in &other.versions {
            self.merge_version(v);
        }
        self.prune();
    }
}

impl Entry<Uuid, String> for Object {
    fn partition_key(&self) -> &Uuid {
        &self.bucket_id
    }
    fn sort_key(&self) -> &String {
        &self.key
    }
}

/// Filters for object listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFilter {
    /// Objects with a current data version.
    IsData,
    /// Objects with an open multipart upload.
    IsUploading,
}

/// Schema of the object table.
pub struct ObjectTable;

impl TableSchema for ObjectTable {
    const TABLE_NAME: &'static str = "object_v1";
    type P = Uuid;
    type S = String;
    type E = Object;
    type Filter = ObjectFilter;

    /// Only delete markers and aborted uploads left: no data version, no upload or PUT in
    /// progress, so no listing, read, counter or chunk depends on the entry. The prune
    /// keeps aborted versions so that an abort reaches every copy still holding the upload
    /// open; the GC removes the entry only once every replica holds this same value and the
    /// GC delay (a day by default, as [`ABORTED_TOMBSTONE_TTL_MS`]) passed, which gives the
    /// same guarantee. (Versioned buckets, whose delete markers are listed versions, will
    /// have to keep them.)
    fn is_tombstone(entry: &Object) -> bool {
        entry.versions.iter().all(|v| {
            matches!(
                v.state,
                ObjectVersionState::Aborted
                    | ObjectVersionState::Complete(ObjectVersionData::DeleteMarker)
            )
        })
    }

    /// A version written without reading the object first (a small PUT) must order after
    /// every version the replica holds, as `next_timestamp` over a read would have made it.
    fn supersedes(stored: &Object, incoming: &Object) -> bool {
        stored.last_timestamp() >= incoming.last_timestamp()
    }

    fn matches_filter(entry: &Object, filter: &ObjectFilter) -> bool {
        match filter {
            ObjectFilter::IsData => entry.current().is_some(),
            ObjectFilter::IsUploading => {
                entry.versions.iter().any(ObjectVersion::is_open_multipart)
            }
        }
    }

    /// A data version that arrives already superseded (a PUT, copy or multipart completion
    /// that lost the race to a newer write, or an upload begun after one) is pruned by the
    /// merge before it is ever stored: its chunks are released here.
    fn merged(&self, tx: &mut UpdateTx<'_>, incoming: &Object, new: &Object) -> Result<()> {
        for v in incoming.versions.iter().filter(|v| v.may_have_blocks()) {
            let kept = new
                .versions
                .iter()
                .any(|nv| nv.uuid == v.uuid && nv.may_have_blocks());
            if !kept {
                tx.queue_insert::<VersionTable>(&Version::deleted(v.uuid))?;
            }
        }
        Ok(())
    }

    fn updated(
        &self,
        tx: &mut UpdateTx<'_>,
        old: Option<&Object>,
        new: Option<&Object>,
    ) -> Result<()> {
        counters::apply_object_delta(tx, old, new)?;
        // Release the chunks of versions that were pruned or aborted.
        let Some(old) = old else { return Ok(()) };
        for v in old.versions.iter().filter(|v| v.may_have_blocks()) {
            let alive = new.is_some_and(|n| {
                n.versions
                    .iter()
                    .any(|nv| nv.uuid == v.uuid && nv.may_have_blocks())
            });
            if !alive {
                tx.queue_insert::<VersionTable>(&Version::deleted(v.uuid))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::crdt::laws;
    use proptest::prelude::*;

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: "e".into(),
            headers: ObjectHeaders::default(),
            checksum: None,
            parts: 0,
        }
    }

    fn uploading(multipart: bool) -> ObjectVersionState {
        ObjectVersionState::Uploading {
            multipart,
            headers: ObjectHeaders::default(),
            checksum_algo: None,
            checksum_kind: None,
        }
    }

    /// Versions of valid histories: a version uuid serves one purpose. Id 0 is a single PUT
    /// that completes, id 1 one that is aborted, ids 2-3 multipart uploads (open → aborted;
    /// completion is a new version), ids 4-5 delete markers or inline data.
    fn version() -> impl Strategy<Value = ObjectVersion> {
        (0u64..4, 0u8..6, any::<bool>()).prop_map(|(ts, id, later)| {
            let state = match (id, later) {
                (0 | 1, false) => uploading(false),
                (0, true) => {
                    ObjectVersionState::Complete(ObjectVersionData::Inline(meta(1), vec![id]))
                }
                (2 | 3, false) => uploading(true),
                (4, _) => ObjectVersionState::Complete(ObjectVersionData::DeleteMarker),
                (5, _) => {
                    ObjectVersionState::Complete(ObjectVersionData::Inline(meta(2), vec![id]))
                }
                _ => ObjectVersionState::Aborted,
            };
            ObjectVersion {
                uuid: Uuid::from([id; 32]),
                timestamp: ts,
                state,
            }
        })
    }

    fn object() -> impl Strategy<Value = Object> {
        proptest::collection::vec(version(), 0..4).prop_map(|vs| {
            // Stored entries are always merged, hence pruned.
            let mut o = Object::new(Uuid::default(), "k".into(), vs);
            o.merge(&o.clone());
            o
        })
    }

    proptest! {
        #[test]
        fn object_laws(a in object(), b in object(), c in object()) {
            laws::check(&a, &b, &c);
        }
    }

    #[test]
    fn newer_complete_version_prunes_older_but_keeps_open_uploads() {
        let up = ObjectVersion {
            uuid: Uuid::from([1; 32]),
            timestamp: 1,
            state: ObjectVersionState::Uploading {
                multipart: true,
                headers: ObjectHeaders::default(),
                checksum_algo: None,
                checksum_kind: None,
            },
        };
        let old = ObjectVersion {
            uuid: Uuid::from([2; 32]),
            timestamp: 2,
            state: ObjectVersionState::Complete(ObjectVersionData::Inline(meta(1), vec![1])),
        };
        let new = ObjectVersion {
            uuid: Uuid::from([3; 32]),
            timestamp: 3,
            state: ObjectVersionState::Complete(ObjectVersionData::Inline(meta(2), vec![1, 2])),
        };
        let mut o = Object::new(Uuid::default(), "k".into(), vec![up.clone(), old.clone()]);
        o.merge(&Object::new(Uuid::default(), "k".into(), vec![new.clone()]));
        assert_eq!(o.versions(), &[up.clone(), new.clone()]);
        // Closing the upload through a merge closes it (a tombstone remains).
        let closed = ObjectVersion {
            state: ObjectVersionState::Aborted,
            ..up
        };
        o.merge(&Object::new(
            Uuid::default(),
            "k".into(),
            vec![closed.clone(), old],
        ));
        assert_eq!(o.versions(), &[closed, new.clone()]);
        assert!(!o.versions().iter().any(ObjectVersion::is_open_multipart));
        assert_eq!(o.current(), Some(&new));
        // Once the current version is a day newer, the tombstone is forgotten.
        let later = ObjectVersion {
            uuid: Uuid::from([4; 32]),
            timestamp: 4 + ABORTED_TOMBSTONE_TTL_MS,
            ..new
        };
        o.merge(&Object::new(
            Uuid::default(),
            "k".into(),
            vec![later.clone()],
        ));
        assert_eq!(o.versions(), &[later]);
    }
}
