//! Local-first lookups of access keys and buckets, with a quorum fallback.
//!
//! Keys, buckets and bucket names are fully replicated ([`crate::table::FullReplication`]):
//! every node with a role (gateways included) stores them, and a write succeeds once all but
//! the tolerated faults stored it. So this node's copy may lack a write that was acknowledged
//! elsewhere: this node was down, paused or cut off when it was sent, it has just joined, or
//! it has no role and stores nothing at all. Every lookup here therefore reads the local copy
//! first, which costs no round trip, and asks a quorum of the storing nodes
//! ([`crate::table::ReplicatedTable::get_quorum`], which intersects every write quorum) only
//! when the local copy cannot answer:
//!
//! - a **miss**: no local entry (a key or bucket created elsewhere; a node that stores
//!   nothing), or a name that does not resolve here to a live bucket (a name created,
//!   deleted or re-created elsewhere);
//! - a **denial**: the locally read bucket does not grant the right a request needs (a grant
//!   made elsewhere), see [`retry_denial`]; the caller decides, since only it knows the right.
//!
//! What the local copy *does* answer is final: an entry found locally is used as it is.
//! Hence:
//!
//! # How long a revoked right may still be honoured
//!
//! A revocation (a grant set to no rights, a key or bucket deleted) is a write like any
//! other: it is sent to every storing node at once and acknowledged by a quorum. A node that
//! received it refuses at once. A node that did not (down, paused, partitioned, or its copy
//! of the call failed or timed out after 10 s) still holds the
//! old grant locally and honours it until the revocation reaches it: at the latest at the
//! first anti-entropy round of the full tables after it can reach a node that has it,
//! i.e. within `background.anti_entropy_interval_secs` (default 600 s) plus one round's
//! duration once it is reachable; each node also runs a round when it starts. While it stays
//! cut off the bound does not run, but such a node can rarely serve: in `consistent` mode an
//! object read or write also needs a quorum of the object's replicas.

use crate::error::Result;
use crate::table::{EmptyKey, ReplicatedTable, TableSchema};
use crate::util::id::Uuid;

use super::{Bucket, BucketAlias, Key, Model};

/// Where a looked-up entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This node's own copy, which may miss writes acknowledged elsewhere.
    Local,
    /// A quorum of the storing nodes: every acknowledged write is in it.
    Quorum,
}

/// A bucket and where it was read from (a denial by a local copy deserves a second look).
#[derive(Clone, Debug)]
pub struct FoundBucket {
    /// The bucket, live.
    pub bucket: Bucket,
    /// Where it was read.
    pub source: Source,
}

/// Whether a local key entry answers a lookup of its id: any entry does, live or deleted,
/// since ids are never reused, a secret never changes and a deletion always wins the merge.
#[must_use]
pub fn key_answers(local: Option<&Key>) -> bool {
    local.is_some()
}

/// The bucket a local alias resolves the name to, if that answers the lookup: a name that
/// has no alias here, or whose alias is cleared, may have been (re)created elsewhere.
#[must_use]
pub fn name_answers(local: Option<&BucketAlias>) -> Option<Uuid> {
    local.and_then(|a| a.bucket_id.v)
}

/// Whether a local bucket entry answers a lookup by id: any entry does, live or deleted
/// (ids are never reused and a deletion always wins the merge).
#[must_use]
pub fn bucket_answers(local: Option<&Bucket>) -> bool {
    local.is_some()
}

/// Whether a request refused by a bucket read from `source` must be checked again against
/// a quorum's copy: yes for a local copy (the grant may have been made elsewhere), no for a
/// quorum's (it holds every acknowledged grant).
#[must_use]
pub fn retry_denial(source: Source) -> bool {
    source == Source::Local
}

/// The entry at (`partition`, `sort`): the local copy if `answers` accepts it, else a
/// quorum's, with where it came from.
async fn local_first<F: TableSchema>(
    table: &ReplicatedTable<F>,
    partition: &F::P,
    sort: &F::S,
    answers: impl Fn(Option<&F::E>) -> bool,
) -> Result<(Option<F::E>, Source)> {
    let local = table.get_local(partition, sort).await?;
    if answers(local.as_ref()) {
        return Ok((local, Source::Local));
    }
    Ok((table.get_quorum(partition, sort).await?, Source::Quorum))
}

impl Model {
    /// The access key `key_id`, live or deleted, local first (see the module docs).
    pub async fn key_entry(&self, key_id: &str) -> Result<Option<Key>> {
        let id = key_id.to_string();
        Ok(local_first(&self.keys, &id, &EmptyKey, key_answers)
            .await?
            .0)
    }

    /// The live access key `key_id`, local first (see the module docs).
    pub async fn key(&self, key_id: &str) -> Result<Option<Key>> {
        Ok(self.key_entry(key_id).await?.filter(Key::is_live))
    }

    /// The bucket `id`, live or deleted, local first, with where it was read.
    async fn bucket_entry(&self, id: &Uuid) -> Result<(Option<Bucket>, Source)> {
        local_first(&self.buckets, id, &EmptyKey, bucket_answers).await
    }

    /// The live bucket with this id, local first (see the module docs).
    pub async fn bucket_by_id(&self, id: &Uuid) -> Result<Option<Bucket>> {
        Ok(self.bucket_entry(id).await?.0.filter(Bucket::is_live))
    }

    /// The live bucket with this id as a quorum of the storing nodes has it: the second
    /// look after a local copy denied a request ([`retry_denial`]).
    pub async fn bucket_by_id_quorum(&self, id: &Uuid) -> Result<Option<Bucket>> {
        Ok(self
            .buckets
            .get_quorum(id, &EmptyKey)
            .await?
            .filter(Bucket::is_live))
    }

    /// The alias of `name`, live or cleared, local first.
    pub(super) async fn alias_entry(&self, name: &str) -> Result<Option<BucketAlias>> {
        let name = name.to_string();
        Ok(local_first(&self.aliases, &name, &EmptyKey, |a| {
            name_answers(a).is_some()
        })
        .await?
        .0)
    }

    /// The live bucket called `name` and where it was read, local first: a name that does
    /// not resolve here to a live bucket is resolved again by a quorum.
    pub async fn find_bucket(&self, name: &str) -> Result<Option<FoundBucket>> {
        let key = name.to_string();
        if let Some(id) = name_answers(self.aliases.get_local(&key, &EmptyKey).await?.as_ref())
            && let (Some(bucket), source) = self.bucket_entry(&id).await?
            && bucket.is_live()
        {
            return Ok(Some(FoundBucket { bucket, source }));
        }
        let alias = self.aliases.get_quorum(&key, &EmptyKey).await?;
        let Some(id) = alias.and_then(|a| a.bucket_id.v) else {
            return Ok(None);
        };
        let (bucket, source) = self.bucket_entry(&id).await?;
        Ok(bucket
            .filter(Bucket::is_live)
            .map(|bucket| FoundBucket { bucket, source }))
    }

    /// The live bucket called `name`, local first (see the module docs).
    pub async fn bucket_by_name(&self, name: &str) -> Result<Option<Bucket>> {
        Ok(self.find_bucket(name).await?.map(|f| f.bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::crdt::Lww;

    #[test]
    fn any_local_key_or_bucket_entry_is_final_and_a_miss_asks_a_quorum() {
        let key = Key::new("GK1".into(), "s".into(), "k".into(), 1);
        assert!(key_answers(Some(&key)));
        let mut deleted = key.clone();
        deleted.deleted.0 = true;
        assert!(key_answers(Some(&deleted)), "a deletion only ever wins");
        assert!(
            !key_answers(None),
            "created elsewhere, or a node storing nothing"
        );

        let bucket = Bucket::new(Uuid::random(), "b".into(), 1);
        assert!(bucket_answers(Some(&bucket)));
        assert!(!bucket_answers(None));
    }

    #[test]
    fn only_a_name_resolved_here_answers() {
        let id = Uuid::random();
        let alias = |v| BucketAlias {
            name: "b".into(),
            bucket_id: Lww::new(1, v),
        };
        assert_eq!(name_answers(Some(&alias(Some(id)))), Some(id));
        assert_eq!(
            name_answers(Some(&alias(None))),
            None,
            "a cleared name may have been re-created elsewhere"
        );
        assert_eq!(name_answers(None), None);
    }

    #[test]
    fn only_a_local_denial_is_retried() {
        assert!(retry_denial(Source::Local));
        assert!(!retry_denial(Source::Quorum));
    }
}
