//! A key's rights on a bucket, as stored (ordered, so it can sit in an LWW register).

use serde::{Deserialize, Serialize};

/// Read / write / owner flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketPerm {
    /// Read objects and list.
    pub read: bool,
    /// Write and delete objects.
    pub write: bool,
    /// Configure and delete the bucket.
    pub owner: bool,
}

impl BucketPerm {
    /// No right at all.
    #[must_use]
    pub fn is_none(&self) -> bool {
        !self.read && !self.write && !self.owner
    }
}

impl From<storaged_api::Permissions> for BucketPerm {
    fn from(p: storaged_api::Permissions) -> Self {
        Self {
            read: p.read,
            write: p.write,
            owner: p.owner,
        }
    }
}

impl From<BucketPerm> for storaged_api::Permissions {
    fn from(p: BucketPerm) -> Self {
        Self {
            read: p.read,
            write: p.write,
            owner: p.owner,
        }
    }
}
