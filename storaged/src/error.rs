//! The crate's one error type (`anyhow` lives only in `main`).

use std::path::PathBuf;

use crate::util::encode::EncodeError;
use crate::util::id::Hash;

/// Errors of storaged's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Db(#[from] redb::Error),
    /// A file operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A stored or received record is not decodable.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The configuration is invalid; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A chunk's bytes do not hash to its address.
    #[error("corrupt block {0}")]
    CorruptBlock(Hash),
    /// A chunk is referenced but not stored here.
    #[error("block {0} not found")]
    MissingBlock(Hash),
    /// No bucket by that name or id.
    #[error("no such bucket: {0}")]
    NoSuchBucket(String),
    /// The bucket name is taken.
    #[error("bucket name already in use: {0}")]
    BucketAlreadyExists(String),
    /// The bucket still holds objects.
    #[error("bucket is not empty: {0}")]
    BucketNotEmpty(String),
    /// The name breaks the S3 bucket naming rules.
    #[error("invalid bucket name `{0}`: {1}")]
    InvalidBucketName(String, &'static str),
    /// No access key with that id.
    #[error("no such access key: {0}")]
    NoSuchAccessKey(String),
    /// An access key with that id exists already.
    #[error("access key already exists: {0}")]
    AccessKeyExists(String),
    /// A key id or secret of the wrong shape.
    #[error("invalid access key: {0}")]
    InvalidAccessKey(&'static str),
    /// Too few replicas answered, or no layout says where the data lives: retry later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The metadata store's file cannot be read as a database: `storaged repair` sets it
    /// aside so that the node rebuilds its metadata from its peers.
    #[error("metadata store {} is damaged ({why})", path.display())]
    MetadataDamaged {
        /// The redb file.
        path: PathBuf,
        /// What redb found wrong.
        why: String,
    },
    /// The metadata store cannot be opened or stopped working (an I/O error, another
    /// process holding it); the message says what to do.
    #[error("metadata store {}: {why}", path.display())]
    MetadataUnavailable {
        /// The redb file.
        path: PathBuf,
        /// What happened.
        why: String,
    },
    /// A filesystem of this node is (nearly) full: the write was refused before it began,
    /// nothing was changed. Retry, or write through another node.
    #[error(
        "the {what} filesystem of {} is full ({free} bytes free, {reserve} kept in reserve)",
        path.display()
    )]
    DiskFull {
        /// `metadata` or `data`.
        what: &'static str,
        /// The directory written to.
        path: PathBuf,
        /// Free bytes left.
        free: u64,
        /// Free bytes this kind of write must leave.
        reserve: u64,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<crate::table::ReplicationError> for Error {
    fn from(e: crate::table::ReplicationError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<crate::block::ReplicationError> for Error {
    fn from(e: crate::block::ReplicationError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl Error {
    /// A short label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Db(_) => "db",
            Error::Io(_) => "io",
            Error::Encode(_) => "encode",
            Error::Config(_) => "config",
            Error::CorruptBlock(_) => "corrupt_block",
            Error::MissingBlock(_) => "missing_block",
            Error::Join(_) => "join",
            Error::MetadataDamaged { .. } => "metadata_damaged",
            Error::MetadataUnavailable { .. } => "metadata_unavailable",
            Error::DiskFull { .. } => "disk_full",
            Error::Unavailable(_) => "unavailable",
            Error::NoSuchBucket(_) => "no_such_bucket",
            Error::BucketAlreadyExists(_) => "bucket_exists",
            Error::BucketNotEmpty(_) => "bucket_not_empty",
            Error::InvalidBucketName(..) => "invalid_bucket_name",
            Error::NoSuchAccessKey(_) => "no_such_access_key",
            Error::AccessKeyExists(_) => "access_key_exists",
            Error::InvalidAccessKey(_) => "invalid_access_key",
        }
    }
}
