//! The schema trait every table implements in a few lines.

use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

use super::UpdateTx;
use crate::error::Result;
use crate::util::crdt::Crdt;
use crate::util::id::{Hash, Id32};

/// What places an entry: its hash picks the partition (and, in a cluster, the nodes).
pub trait PartitionKey: Clone + Send + Sync + 'static {
    /// A uniformly distributed 32-byte hash.
    fn hash(&self) -> Hash;
}

/// What orders entries inside a partition.
pub trait SortKey: Clone + Send + Sync + 'static {
    /// Bytes compared lexicographically.
    fn sort_key(&self) -> Cow<'_, [u8]>;
}

/// For tables with one entry per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmptyKey;

impl SortKey for EmptyKey {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&[])
    }
}

impl PartitionKey for String {
    fn hash(&self) -> Hash {
        Id32::hash_of(self.as_bytes())
    }
}

impl SortKey for String {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl PartitionKey for Id32 {
    /// Ids are random and block hashes are digests: already uniform.
    fn hash(&self) -> Hash {
        *self
    }
}

impl SortKey for Id32 {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

/// A table row: a CRDT that knows its own keys.
pub trait Entry<P: PartitionKey, S: SortKey>:
    Crdt + Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The partition key.
    fn partition_key(&self) -> &P;
    /// The sort key.
    fn sort_key(&self) -> &S;
}

/// A table: its name, key types, entry type, listing filter and update hook.
pub trait TableSchema: Send + Sync + 'static {
    /// redb table name; never change it once released.
    const TABLE_NAME: &'static str;
    /// Partition key type.
    type P: PartitionKey;
    /// Sort key type.
    type S: SortKey;
    /// Entry type.
    type E: Entry<Self::P, Self::S>;
    /// Filter for range reads.
    type Filter: Clone + Send + Sync + 'static;

    /// Whether `entry` passes `filter`.
    fn matches_filter(entry: &Self::E, filter: &Self::Filter) -> bool;

    /// Whether `entry` carries nothing any more but "this was deleted", so that once every
    /// replica holds exactly this value (and the tombstone GC delay passed) it can be
    /// removed without changing what any read returns ([`super::gc`]). Only say `true` when
    /// an absent entry means the same as this one to every reader, including the merge
    /// with a later write: the default keeps every entry forever.
    fn is_tombstone(_entry: &Self::E) -> bool {
        false
    }

    /// Whether a replica holding `stored` must refuse `incoming`, written without a read
    /// first ([`super::ReplicatedTable::insert_unless_superseded`]): e.g. an object version
    /// whose timestamp is not above the newest one stored, which a writer that read the
    /// entry first would never have issued. The default refuses nothing.
    fn supersedes(_stored: &Self::E, _incoming: &Self::E) -> bool {
        false
    }

    /// Runs in the transaction that merged `incoming` into the stored entry, giving `new`,
    /// for every merged entry, changed or not: what the merge itself discarded (a version
    /// that arrived already superseded, chunks added to a deleted version) is only visible
    /// here, and must still be released.
    fn merged(&self, _tx: &mut UpdateTx<'_>, _incoming: &Self::E, _new: &Self::E) -> Result<()> {
        Ok(())
    }

    /// Runs in the transaction that changed an entry from `old` to `new`, so derived state
    /// (counters, reference counts, queued inserts into other tables) never drifts.
    fn updated(
        &self,
        _tx: &mut UpdateTx<'_>,
        _old: Option<&Self::E>,
        _new: Option<&Self::E>,
    ) -> Result<()> {
        Ok(())
    }
}
