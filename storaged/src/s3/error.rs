//! Mapping of our errors to S3 error codes.

use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::error::Error;

impl From<Error> for S3Error {
    fn from(e: Error) -> Self {
        match e {
            Error::NoSuchBucket(b) => S3Error::with_message(
                S3ErrorCode::NoSuchBucket,
                format!("bucket {b} does not exist"),
            ),
            Error::BucketAlreadyExists(b) => S3Error::with_message(
                S3ErrorCode::BucketAlreadyExists,
                format!("bucket name {b} is taken"),
            ),
            Error::BucketNotEmpty(b) => S3Error::with_message(
                S3ErrorCode::BucketNotEmpty,
                format!("bucket {b} is not empty"),
            ),
            Error::InvalidBucketName(_, why) => {
                S3Error::with_message(S3ErrorCode::InvalidBucketName, why)
            }
            Error::NoSuchAccessKey(_) => s3_error!(InvalidAccessKeyId),
            Error::Unavailable(why) => {
                tracing::warn!(error = %why, "request refused: replicas unavailable");
                S3Error::with_message(
                    S3ErrorCode::ServiceUnavailable,
                    format!("not enough replicas reachable, retry later: {why}"),
                )
            }
            full @ (Error::DiskFull { .. } | Error::MetadataUnavailable { .. }) => {
                tracing::warn!(error = %full, "request refused: this node cannot write");
                S3Error::with_message(
                    S3ErrorCode::ServiceUnavailable,
                    "this node's disk is full or failing: retry later, or through another node",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                S3Error::with_message(
                    S3ErrorCode::InternalError,
                    "internal error, see the server log",
                )
            }
        }
    }
}

/// Shorthand: our `Result` into an S3 result.
pub(super) trait OrS3<T> {
    fn s3(self) -> s3s::S3Result<T>;
}

impl<T, E: Into<Error>> OrS3<T> for Result<T, E> {
    fn s3(self) -> s3s::S3Result<T> {
        self.map_err(|e| S3Error::from(e.into()))
    }
}

/// `403 QuotaExceeded` (Garage's code for quota refusals).
pub(super) fn quota_exceeded(msg: &'static str) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), msg);
    e.set_status_code(http::StatusCode::FORBIDDEN);
    e
}
