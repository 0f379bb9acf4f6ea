//! The bucket table: one entry per bucket id, with its name, grants and quotas.

use serde::{Deserialize, Serialize};

use super::perm::BucketPerm;
use crate::table::{EmptyKey, Entry, TableSchema};
use crate::util::crdt::{Bool, Crdt, Lww, LwwMap};
use crate::util::id::Uuid;

/// Quotas as stored; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaSpec {
    /// Bytes.
    pub max_size: Option<u64>,
    /// Objects.
    pub max_objects: Option<u64>,
}

/// A bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Random id; the name lives in the alias table and here.
    pub id: Uuid,
    /// Creation time (ms).
    pub created: u64,
    /// Tombstone.
    pub deleted: Bool,
    /// Global name.
    pub name: Lww<String>,
    /// Access key id → rights.
    pub authorized_keys: LwwMap<String, BucketPerm>,
    /// Limits.
    pub quotas: Lww<QuotaSpec>,
    /// Tag of the controller that owns the bucket (operator CR UID).
    pub owner_tag: Lww<Option<String>>,
}

impl Bucket {
    /// A new live bucket.
    #[must_use]
    pub fn new(id: Uuid, name: String, now: u64) -> Self {
        Self {
            id,
            created: now,
            deleted: Bool(false),
            name: Lww::new(now, name),
            authorized_keys: LwwMap::default(),
            quotas: Lww::new(0, QuotaSpec::default()),
            owner_tag: Lww::new(0, None),
        }
    }

    /// Whether the bucket is live.
    #[must_use]
    pub fn is_live(&self) -> bool {
        !self.deleted.0
    }

    /// The rights of `key_id` (none when not granted).
    #[must_use]
    pub fn perm_of(&self, key_id: &str) -> BucketPerm {
        self.authorized_keys
            .get(&key_id.to_string())
            .copied()
            .unwrap_or_default()
    }
}

impl Crdt for Bucket {
    fn merge(&mut self, other: &Self) {
        self.created = self.created.min(other.created);
        self.deleted.merge(&other.deleted);
        self.name.merge(&other.name);
        self.authorized_keys.merge(&other.authorized_keys);
        self.quotas.merge(&other.quotas);
        self.owner_tag.merge(&other.owner_tag);
    }
}

impl Entry<Uuid, EmptyKey> for Bucket {
    fn partition_key(&self) -> &Uuid {
        &self.id
    }
    fn sort_key(&self) -> &EmptyKey {
        &EmptyKey
    }
}

/// Schema of the bucket table.
pub struct BucketTable;

impl TableSchema for BucketTable {
    const TABLE_NAME: &'static str = "bucket_v1";
    type P = Uuid;
    type S = EmptyKey;
    type E = Bucket;
    /// `true`: live buckets only.
    type Filter = bool;

    fn matches_filter(entry: &Bucket, live_only: &bool) -> bool {
        !live_only || entry.is_live()
    }

    /// Never: a deleted bucket's tombstone is what makes a late alias write that points its
    /// name at the old id resolve to nothing ([`super::Model::bucket_by_name`] checks the
    /// bucket is live), and what keeps a stale write of the bucket (name, grants) from
    /// bringing it back. Buckets are few; their tombstones stay.
    fn is_tombstone(_: &Bucket) -> bool {
        false
    }
}

/// Global bucket name → bucket id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketAlias {
    /// The name.
    pub name: String,
    /// The bucket it points to, `None` once the bucket is deleted.
    pub bucket_id: Lww<Option<Uuid>>,
}

impl Crdt for BucketAlias {
    fn merge(&mut self, other: &Self) {
        self.bucket_id.merge(&other.bucket_id);
    }
}

impl Entry<String, EmptyKey> for BucketAlias {
    fn partition_key(&self) -> &String {
        &self.name
    }
    fn sort_key(&self) -> &EmptyKey {
        &EmptyKey
    }
}

/// Schema of the bucket alias table.
pub struct BucketAliasTable;

impl TableSchema for BucketAliasTable {
    const TABLE_NAME: &'static str = "bucket_alias_v1";
    type P = String;
    type S = EmptyKey;
    type E = BucketAlias;
    type Filter = ();

    fn matches_filter(entry: &BucketAlias, (): &()) -> bool {
        entry.bucket_id.v.is_some()
    }

    /// A name pointing nowhere. Safe to remove only because bucket tombstones are never
    /// collected: should a late write point the name back at the deleted bucket's id, the
    /// lookup finds that bucket deleted and the name free, and the next `create_bucket`
    /// writes a newer timestamp over it.
    fn is_tombstone(entry: &BucketAlias) -> bool {
        entry.bucket_id.v.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::crdt::laws;
    use proptest::prelude::*;

    fn bucket() -> impl Strategy<Value = Bucket> {
        (any::<bool>(), 0u64..3, "[ab]", 0u64..3, any::<bool>()).prop_map(
            |(del, ts, name, qts, r)| {
                let mut b = Bucket::new(Uuid::default(), name.clone(), ts);
                b.deleted = Bool(del);
                b.quotas = Lww::new(
                    qts,
                    QuotaSpec {
                        max_size: Some(qts),
                        max_objects: None,
                    },
                );
                b.authorized_keys.0.insert(
                    name,
                    Lww::new(
                        ts,
                        BucketPerm {
                            read: r,
                            write: !r,
                            owner: false,
                        },
                    ),
                );
                b
            },
        )
    }

    proptest! {
        #[test]
        fn bucket_laws(a in bucket(), b in bucket(), c in bucket()) {
            laws::check(&a, &b, &c);
        }
    }
}
