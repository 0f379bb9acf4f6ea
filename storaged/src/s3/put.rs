//! PutObject.

use s3s::dto::{PutObjectInput, PutObjectOutput};
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for};
use super::checksum::{self, Expected, Fields};
use super::error::{OrS3, quota_exceeded};
use super::writer::{Stored, Target, store_body};
use crate::model::object::{
    ChecksumKind, ObjectHeaders, ObjectMeta, ObjectVersionData, StoredChecksum,
};
use crate::model::{Bucket, Model, Object, ObjectWriter};
use crate::util::id::Uuid;
use crate::util::time::next_timestamp;

/// [`headers_from`] applied to any input with the usual header fields.
macro_rules! headers_of {
    ($i:expr, $req_headers:expr) => {
        $crate::s3::put::headers_from(
            $i.content_type.as_deref(),
            $i.content_encoding.as_deref(),
            $i.content_disposition.as_deref(),
            $i.content_language.as_deref(),
            $i.cache_control.as_deref(),
            $req_headers,
            $i.metadata.as_ref(),
        )
    };
}
pub(super) use headers_of;

/// Most bytes of user metadata (names and values), as in S3.
const MAX_USER_META: usize = 2048;

/// Headers of a PUT / CreateMultipartUpload / CopyObject(REPLACE); fails with
/// MetadataTooLarge beyond 2 KB of user metadata.
pub(super) fn headers_from(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    content_disposition: Option<&str>,
    content_language: Option<&str>,
    cache_control: Option<&str>,
    req_headers: &http::HeaderMap,
    metadata: Option<&s3s::dto::Metadata>,
) -> S3Result<ObjectHeaders> {
    let meta_size: usize = metadata.map_or(0, |m| m.iter().map(|(k, v)| k.len() + v.len()).sum());
    if meta_size > MAX_USER_META {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size"
        ));
    }
    // `aws-chunked` describes the transfer, not the object: S3 does not store it.
    let content_encoding = content_encoding
        .map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|c| !c.eq_ignore_ascii_case("aws-chunked"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|e| !e.is_empty());
    Ok(ObjectHeaders {
        content_type: content_type.map(str::to_string),
        content_encoding,
        content_disposition: content_disposition.map(str::to_string),
        content_language: content_language.map(str::to_string),
        cache_control: cache_control.map(str::to_string),
        // Kept as sent: S3 returns Expires verbatim even when it is not a valid date.
        expires: req_headers
            .get(http::header::EXPIRES)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        user_meta: metadata
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Refuses an upload of `adding` bytes that would break the bucket's quotas; `replacing`
/// is the size of the current version it overwrites (which frees its object and bytes).
pub(super) async fn check_quotas(
    model: &Model,
    bucket: &Bucket,
    adding: u64,
    replacing: Option<u64>,
) -> S3Result<()> {
    let q = bucket.quotas.v;
    if q.max_size.is_none() && q.max_objects.is_none() {
        return Ok(());
    }
    let c = model.counts(&bucket.id).await.s3()?;
    if let Some(max) = q.max_objects
        && replacing.is_none()
        && u64::try_from(c.objects).unwrap_or(0) >= max
    {
        return Err(quota_exceeded("Object quota is reached for this bucket"));
    }
    if let Some(max) = q.max_size {
        let used = u64::try_from(c.bytes)
            .unwrap_or(0)
            .saturating_sub(replacing.unwrap_or(0));
        if used.saturating_add(adding) > max {
            return Err(quota_exceeded("Size quota is reached for this bucket"));
        }
    }
    Ok(())
}

/// The stored object metadata for a finished body.
pub(super) fn meta_of(stored: &Stored, headers: ObjectHeaders, expected: &Expected) -> ObjectMeta {
    ObjectMeta {
        size: stored.size,
        etag: hex::encode(stored.md5),
        headers,
        checksum: expected
            .algo
            .zip(stored.checksum.as_ref())
            .map(|(algo, raw)| StoredChecksum {
                algo,
                value: checksum::b64(raw),
                kind: ChecksumKind::FullObject,
            }),
        parts: 0,
    }
}

/// Fails with 411 when a body-carrying request has no Content-Length.
pub(super) fn require_content_length(headers: &http::HeaderMap) -> S3Result<()> {
    if headers.contains_key(http::header::CONTENT_LENGTH) {
        Ok(())
    } else {
        let mut e = s3_error!(
            MissingContentLength,
            "You must provide the Content-Length HTTP header."
        );
        e.set_status_code(http::StatusCode::LENGTH_REQUIRED);
        Err(e)
    }
}

/// The size of the object a PUT replaces, if any (quotas count the difference).
fn replacing_size(existing: Option<&Object>) -> Option<u64> {
    existing
        .and_then(Object::current)
        .and_then(|v| v.meta())
        .map(|m| m.size)
}

pub(super) async fn put_object(
    api: &S3Api,
    mut req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let model = &api.model;
    let (bucket, _) = bucket_for(api, &req, &req.input.bucket, Need::Write).await?;
    require_content_length(&req.headers)?;
    let declared = req
        .input
        .content_length
        .and_then(|l| u64::try_from(l).ok())
        .unwrap_or(0);
    if declared > super::MAX_PUT_SIZE {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size"
        ));
    }
    checksum::check_content_md5_shape(req.input.content_md5.as_deref())?;
    let key = req.input.key.clone();
    let input = &req.input;
    let fields = checksum::fields_of!(input);
    let mut expected = Expected::from_request(
        &req.headers,
        &fields,
        input.checksum_algorithm.as_ref().map(|a| a.as_str()),
    )?;
    let headers = super::put::headers_of!(input, &req.headers)?;
    let small = declared <= super::INLINE_MAX as u64;
    let body = req.input.body.take();
    let trailing = req.trailing_headers.take();
    let content_md5 = req.input.content_md5.clone();
    let algo = expected.algo;
    let read_body = async |version: Uuid| {
        let target = Target {
            model,
            version,
            part: 1,
            allow_inline: small,
            algo,
            max_size: super::MAX_PUT_SIZE,
        };
        let stored = store_body(target, body).await?;
        let trailers = trailing.as_ref().and_then(s3s::TrailingHeaders::take);
        expected.verify(stored.checksum.as_deref(), trailers.as_ref())?;
        checksum::verify_content_md5(content_md5.as_deref(), &stored.md5)?;
        Ok::<_, s3s::S3Error>((stored, expected))
    };
    let quotas = bucket.quotas.v;
    let (writer, result) = if small && quotas.max_size.is_none() && quotas.max_objects.is_none() {
        // A small body without quotas to check: written without reading the object first,
        // one round trip (see `model::writer`).
        let writer = ObjectWriter::unread(model, bucket.id, &key).await;
        let stored = read_body(writer.uuid()).await;
        (writer, stored)
    } else if small {
        // A small body is read while the current object is (one round trip, not two): its
        // timestamp and the quota check only need both at the end. It has no chunks, so
        // its version id is only needed at the commit.
        let version = Uuid::random();
        let (existing, stored) =
            tokio::join!(model.objects.get(&bucket.id, &key), read_body(version));
        let existing = existing.s3()?;
        let timestamp = next_timestamp(existing.as_ref().map_or(0, Object::last_timestamp));
        if stored.is_ok() {
            check_quotas(model, &bucket, declared, replacing_size(existing.as_ref())).await?;
        }
        let writer = ObjectWriter::with_uuid(model, bucket.id, &key, version, timestamp);
        (writer, stored)
    } else {
        let existing = model.objects.get(&bucket.id, &key).await.s3()?;
        check_quotas(model, &bucket, declared, replacing_size(existing.as_ref())).await?;
        let timestamp = next_timestamp(existing.as_ref().map_or(0, Object::last_timestamp));
        // Chunked upload: an invisible Uploading version first (see `model::writer`).
        let mut writer = ObjectWriter::new(model, bucket.id, &key, timestamp);
        writer.begin(headers.clone(), algo).await.s3()?;
        let stored = read_body(writer.uuid()).await;
        (writer, stored)
    };
    let (stored, expected) = match result {
        Ok(s) => s,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    let meta = meta_of(&stored, headers, &expected);
    let etag = meta.etag.clone();
    let checksum = meta.checksum.clone();
    let data = match stored.inline {
        Some(bytes) => ObjectVersionData::Inline(meta, bytes),
        None => match stored.first_block {
            Some(first) => ObjectVersionData::FirstBlock(meta, first),
            None => ObjectVersionData::Inline(meta, Vec::new()),
        },
    };
    writer.commit(data, Vec::new()).await.s3()?;

    let out = checksum::with_checksums!(
        PutObjectOutput {
            e_tag: Some(s3s::dto::ETag::Strong(etag)),
            checksum_type: checksum
                .as_ref()
                .map(|c| s3s::dto::ChecksumType::from_static(Fields::kind_name(c))),
        },
        checksum.as_ref().map(Fields::of).unwrap_or_default()
    );
    Ok(S3Response::new(out))
}
