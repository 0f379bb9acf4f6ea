//! The S3 API.
//!
//! The `s3s` crate is the protocol layer (HTTP routing of S3 operations, SigV4 header /
//! presigned / streaming verification, aws-chunked decoding with trailers, XML, error
//! rendering); this module holds what is ours: one handler module per group of operations,
//! authorization against our key and bucket tables, and the body ingestion that cuts
//! objects into chunks.
//!
//! | file | operations |
//! | --- | --- |
//! | `bucket` | ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, GetBucketVersioning |
//! | `put` | PutObject |
//! | `get` | GetObject, HeadObject (conditions, ranges, part numbers, checksums) |
//! | `delete` | DeleteObject, DeleteObjects |
//! | `copy` | CopyObject, UploadPartCopy |
//! | `list` | ListObjects, ListObjectsV2 |
//! | `multipart` | Create/UploadPart/Complete/Abort, ListParts, ListMultipartUploads |
//! | `writer` | streaming a body into inline bytes or chunks, with MD5 and flexible checksums |
//! | `checksum` | checksum algorithms, expected values from headers and trailers |
//! | `auth` | secret lookup for SigV4, per-bucket authorization |
//! | `error` | our errors → S3 error codes |

mod auth;
mod bucket;
mod checksum;
mod copy;
mod delete;
mod error;
mod get;
mod list;
mod multipart;
mod put;
mod writer;

use std::sync::Arc;

use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::config::Config;
use crate::model::Model;

/// Largest single PUT (AWS: 5 GiB).
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Smallest part but the last (AWS: 5 MiB).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Highest part number.
pub const MAX_PART_NUMBER: i32 = 10_000;
/// Bodies up to this size live inline in the object table: one metadata write, no chunk.
pub const INLINE_MAX: usize = 8 * 1024;

/// Our implementation of the `s3s::S3` trait.
#[derive(Clone)]
pub struct S3Api {
    model: Arc<Model>,
    region: String,
}

/// Builds the hyper-compatible S3 service for `model`.
pub fn service(model: Arc<Model>, config: &Config) -> Result<S3Service, crate::Error> {
    let api = S3Api {
        model: Arc::clone(&model),
        region: config.s3_api.s3_region.clone(),
    };
    let mut builder = S3ServiceBuilder::new(api);
    builder.set_auth(auth::KeyAuth { model });
    if let Some(domain) = &config.s3_api.root_domain {
        let domain = domain.trim_start_matches('.');
        let host = s3s::host::MultiDomain::new(&[domain])
            .map_err(|e| crate::Error::Config(format!("s3_api.root_domain: {e}")))?;
        builder.set_host(PortlessHost(host));
    }
    let mut s3_config = s3s::config::S3Config::default();
    s3_config.xml_max_body_size = 2 * 1024 * 1024;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        s3_config,
    ))));
    Ok(builder.build())
}

/// Virtual-hosted-style addressing that ignores the port of the Host header
/// (`bucket.s3.example:3900`).
struct PortlessHost(s3s::host::MultiDomain);

impl s3s::host::S3Host for PortlessHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let bare = match host.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        self.0.parse_host_header(bare)
    }
}

macro_rules! delegate {
    ($($method:ident($input:ty) -> $output:ty => $path:path;)*) => {
        #[async_trait::async_trait]
        impl S3 for S3Api {
            $(
                async fn $method(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    $path(self, req).await
                }
            )*
        }
    };
}

delegate! {
    list_buckets(ListBucketsInput) -> ListBucketsOutput => bucket::list_buckets;
    create_bucket(CreateBucketInput) -> CreateBucketOutput => bucket::create_bucket;
    head_bucket(HeadBucketInput) -> HeadBucketOutput => bucket::head_bucket;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput => bucket::delete_bucket;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput => bucket::get_bucket_location;
    get_bucket_versioning(GetBucketVersioningInput) -> GetBucketVersioningOutput => bucket::get_bucket_versioning;
    put_object(PutObjectInput) -> PutObjectOutput => put::put_object;
    get_object(GetObjectInput) -> GetObjectOutput => get::get_object;
    head_object(HeadObjectInput) -> HeadObjectOutput => get::head_object;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput => delete::delete_object;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput => delete::delete_objects;
    copy_object(CopyObjectInput) -> CopyObjectOutput => copy::copy_object;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput => copy::upload_part_copy;
    list_objects(ListObjectsInput) -> ListObjectsOutput => list::list_objects;
    list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output => list::list_objects_v2;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput => multipart::create;
    upload_part(UploadPartInput) -> UploadPartOutput => multipart::upload_part;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput => multipart::complete;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput => multipart::abort;
    list_parts(ListPartsInput) -> ListPartsOutput => multipart::list_parts;
    list_multipart_uploads(ListMultipartUploadsInput) -> ListMultipartUploadsOutput => multipart::list_uploads;
}
