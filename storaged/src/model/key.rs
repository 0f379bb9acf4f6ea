//! The access key table.

use serde::{Deserialize, Serialize};

use super::perm::BucketPerm;
use crate::table::{EmptyKey, Entry, TableSchema};
use crate::util::crdt::{Bool, Crdt, Lww, LwwMap};
use crate::util::id::Uuid;

/// An S3 access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// Access key id (`GK…` or AWS-shaped when imported).
    pub key_id: String,
    /// Secret access key; never logged, only returned on creation or explicit request.
    pub secret: String,
    /// Creation time (ms).
    pub created: u64,
    /// Tombstone.
    pub deleted: Bool,
    /// Friendly name.
    pub name: Lww<String>,
    /// May create buckets through S3.
    pub allow_create_bucket: Lww<bool>,
    /// Bucket id → rights (mirror of `Bucket::authorized_keys`).
    pub authorized_buckets: LwwMap<Uuid, BucketPerm>,
}

impl Key {
    /// A new live key.
    #[must_use]
    pub fn new(key_id: String, secret: String, name: String, now: u64) -> Self {
        Self {
            key_id,
            secret,
            created: now,
            deleted: Bool(false),
            name: Lww::new(now, name),
            allow_create_bucket: Lww::new(now, false),
            authorized_buckets: LwwMap::default(),
        }
    }

    /// Whether the key is usable.
    #[must_use]
    pub fn is_live(&self) -> bool {
        !self.deleted.0
    }
}

impl Crdt for Key {
    fn merge(&mut self, other: &Self) {
        if other.secret > self.secret {
            self.secret.clone_from(&other.secret);
        }
        self.created = self.created.min(other.created);
        self.deleted.merge(&other.deleted);
        self.name.merge(&other.name);
        self.allow_create_bucket.merge(&other.allow_create_bucket);
        self.authorized_buckets.merge(&other.authorized_buckets);
    }
}

impl Entry<String, EmptyKey> for Key {
    fn partition_key(&self) -> &String {
        &self.key_id
    }
    fn sort_key(&self) -> &EmptyKey {
        &EmptyKey
    }
}

/// Schema of the key table.
pub struct KeyTable;

impl TableSchema for KeyTable {
    const TABLE_NAME: &'static str = "key_v1";
    type P = String;
    type S = EmptyKey;
    type E = Key;
    /// `true`: live keys only.
    type Filter = bool;

    fn matches_filter(entry: &Key, live_only: &bool) -> bool {
        !live_only || entry.is_live()
    }

    /// Never: a deleted key still holds its secret (the merge keeps it), its tombstone is
    /// what makes `import_key` refuse to reuse the id, and a late write of the live key
    /// after a collection would make a revoked credential valid again. Keys are few; their
    /// tombstones stay.
    fn is_tombstone(_: &Key) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::crdt::laws;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Key> {
        (any::<bool>(), 0u64..3, "[ab]", any::<bool>()).prop_map(|(del, ts, s, allow)| {
            let mut k = Key::new("GK1".into(), s.clone(), s, ts);
            k.deleted = Bool(del);
            k.allow_create_bucket = Lww::new(ts, allow);
            k
        })
    }

    proptest! {
        #[test]
        fn key_laws(a in key(), b in key(), c in key()) {
            laws::check(&a, &b, &c);
        }
    }
}
