//! GetObject and HeadObject: conditional requests, byte ranges, part numbers, checksums,
//! and a body streamed chunk by chunk with the next chunk prefetched.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use s3s::dto::{
    ChecksumMode, ETag, ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput,
    HeadObjectOutput, StreamingBlob, Timestamp,
};
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for_then};
use super::checksum::Fields;
use super::error::OrS3;
use crate::model::object::{ObjectMeta, ObjectVersion, ObjectVersionData};
use crate::model::{Model, Version};
use crate::util::id::Uuid;

/// The current version of an object, with its metadata.
pub(super) struct Current {
    pub(super) version: ObjectVersion,
    pub(super) meta: ObjectMeta,
}

impl Current {
    pub(super) fn last_modified(&self) -> Timestamp {
        ms_to_timestamp(self.version.timestamp)
    }
}

pub(super) fn ms_to_timestamp(ms: u64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// The current version of `key` in bucket `bucket_id`, or NoSuchKey.
pub(super) async fn current(model: &Model, bucket_id: Uuid, key: &str) -> S3Result<Current> {
    let obj = model.objects.get(&bucket_id, &key.to_string()).await.s3()?;
    let version = obj
        .as_ref()
        .and_then(|o| o.current())
        .cloned()
        .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))?;
    let meta = version
        .meta()
        .cloned()
        .ok_or_else(|| s3_error!(NoSuchKey))?;
    Ok(Current { version, meta })
}

/// The condition headers of a read (or of a copy source).
pub(super) struct Conditions<'a> {
    pub(super) if_match: Option<&'a ETagCondition>,
    pub(super) if_none_match: Option<&'a ETagCondition>,
    pub(super) if_modified_since: Option<&'a Timestamp>,
    pub(super) if_unmodified_since: Option<&'a Timestamp>,
}

fn secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

impl Conditions<'_> {
    /// RFC 9110 §13.2.2 evaluation order, with S3's codes: 412 PreconditionFailed, or
    /// `not_modified` (304 for reads, 412 for copy sources).
    pub(super) fn check(&self, cur: &Current, not_modified: fn() -> s3s::S3Error) -> S3Result<()> {
        let lm = secs(&cur.last_modified());
        if let Some(c) = self.if_match {
            if !etag_matches(c, &cur.meta.etag) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        } else if let Some(t) = self.if_unmodified_since
            && lm > secs(t)
        {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
        if let Some(c) = self.if_none_match {
            if etag_matches(c, &cur.meta.etag) {
                return Err(not_modified());
            }
        } else if let Some(t) = self.if_modified_since
            && lm <= secs(t)
        {
            return Err(not_modified());
        }
        Ok(())
    }
}

pub(super) fn not_modified() -> s3s::S3Error {
    s3_error!(NotModified)
}

/// Chunks of a version with their offsets in the object: (start offset, hash, size).
pub(super) async fn chunk_list(
    model: &Model,
    uuid: Uuid,
) -> S3Result<Vec<(u64, crate::util::id::Hash, u64, u32)>> {
    let version: Version = model
        .versions
        .get(&uuid, &crate::table::EmptyKey)
        .await
        .s3()?
        .filter(|v| !v.deleted.0)
        .ok_or_else(|| s3s::S3Error::internal_error(crate::Error::MissingBlock(uuid)))?;
    let mut out = Vec::with_capacity(version.blocks.len());
    let mut off = 0;
    for (pos, b) in &version.blocks {
        out.push((off, b.hash, b.size, pos.part));
        off += b.size;
    }
    Ok(out)
}

/// The byte range of part `n` of an object.
async fn part_range(model: &Model, cur: &Current, n: i32) -> S3Result<(Range<u64>, i32)> {
    let invalid = || {
        let mut e = s3s::S3Error::with_message(
            s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    let n = u32::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(invalid)?;
    if cur.meta.parts == 0 {
        return if n == 1 {
            Ok((0..cur.meta.size, 1))
        } else {
            Err(invalid())
        };
    }
    let ObjectVersionData::FirstBlock(..) = data_of(cur) else {
        return Err(invalid());
    };
    let chunks = chunk_list(model, cur.version.uuid).await?;
    let mut range: Option<Range<u64>> = None;
    for (off, _, size, part) in chunks {
        if part == n {
            range = Some(match range {
                None => off..off + size,
                Some(r) => r.start..off + size,
            });
        }
    }
    let parts = i32::try_from(cur.meta.parts).unwrap_or(i32::MAX);
    range.map(|r| (r, parts)).ok_or_else(invalid)
}

fn data_of(cur: &Current) -> &ObjectVersionData {
    match &cur.version.state {
        crate::model::object::ObjectVersionState::Complete(d) => d,
        _ => &ObjectVersionData::DeleteMarker,
    }
}

/// Streams `range` of the current version.
pub(super) async fn body_stream(
    model: &Arc<Model>,
    cur: &Current,
    range: Range<u64>,
) -> S3Result<StreamingBlob> {
    match data_of(cur) {
        ObjectVersionData::Inline(_, bytes) => {
            let start = usize::try_from(range.start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = usize::try_from(range.end)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let data = Bytes::copy_from_slice(&bytes[start..end]);
            Ok(StreamingBlob::wrap(stream::once(async move {
                Ok::<_, crate::Error>(data)
            })))
        }
        ObjectVersionData::FirstBlock(..) => {
            let chunks: Vec<_> = chunk_list(model, cur.version.uuid)
                .await?
                .into_iter()
                .filter(|(off, _, size, _)| *off < range.end && off + size > range.start)
                .collect();
            let model = Arc::clone(model);
            let s = stream::iter(chunks)
                .map(move |(off, hash, size, _)| {
                    let model = Arc::clone(&model);
                    let range = range.clone();
                    // A task per chunk: the fetch runs while earlier chunks stream out,
                    // and the stream stays `Sync` whatever the RPC future is.
                    tokio::spawn(async move {
                        // Held until the chunk is handed to the response body.
                        let held = model
                            .budget()
                            .acquire(usize::try_from(size).unwrap_or(usize::MAX))
                            .await;
                        let data = model.get_chunk(hash).await?;
                        let from = range.start.saturating_sub(off).min(size);
                        let to = (range.end - off).min(size);
                        let (from, to) = (
                            usize::try_from(from).unwrap_or(0),
                            usize::try_from(to).unwrap_or(0),
                        );
                        Ok::<_, crate::Error>((data.slice(from..to.min(data.len())), held))
                    })
                })
                .buffered(3)
                .map(|joined| {
                    joined
                        .map_err(crate::Error::from)
                        .and_then(|r| r.map(|(data, _held)| data))
                });
            Ok(StreamingBlob::wrap(s))
        }
        ObjectVersionData::DeleteMarker => Err(s3_error!(NoSuchKey)),
    }
}

/// Headers common to GET and HEAD.
struct Common {
    range: Range<u64>,
    content_range: Option<String>,
    parts_count: Option<i32>,
    checksum: Option<Fields>,
    checksum_type: Option<String>,
}

async fn resolve_range(
    model: &Model,
    cur: &Current,
    range: Option<&s3s::dto::Range>,
    part_number: Option<i32>,
    checksum_mode: Option<&ChecksumMode>,
) -> S3Result<Common> {
    let total = cur.meta.size;
    let (r, partial, parts_count) = if let Some(n) = part_number {
        if range.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter"
            ));
        }
        let (r, count) = part_range(model, cur, n).await?;
        (r, cur.meta.parts > 0, Some(count))
    } else if let Some(range) = range {
        let r = range
            .check(total)
            .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
        (r, true, None)
    } else {
        (0..total, false, None)
    };
    let content_range =
        partial.then(|| format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), total));
    let want_checksum = checksum_mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case("ENABLED"));
    let checksum = cur
        .meta
        .checksum
        .as_ref()
        .filter(|_| want_checksum && !partial);
    Ok(Common {
        range: r,
        content_range,
        parts_count,
        checksum: checksum.map(Fields::of),
        checksum_type: checksum.map(|c| Fields::kind_name(c).to_string()),
    })
}

/// S3's default for objects stored without a type.
fn content_type(meta: &ObjectMeta) -> String {
    meta.headers
        .content_type
        .clone()
        .unwrap_or_else(|| "binary/octet-stream".to_string())
}

fn metadata_of(meta: &ObjectMeta) -> Option<s3s::dto::Metadata> {
    (!meta.headers.user_meta.is_empty())
        .then(|| meta.headers.user_meta.clone().into_iter().collect())
}

fn expires_of(meta: &ObjectMeta) -> Option<Timestamp> {
    meta.headers
        .expires
        .as_deref()
        .and_then(|e| Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, e).ok())
}

/// What GET and HEAD share: read access, the current version, its conditions, and the
/// range or part asked for.
macro_rules! resolve_read {
    ($api:expr, $req:expr) => {{
        let input = &$req.input;
        let model = &$api.model;
        // A second look at a grant not seen here yet overlaps the metadata read.
        let (_, _, cur) = bucket_for_then($api, &$req, &input.bucket, Need::Read, |b| {
            current(model, b.id, &input.key)
        })
        .await?;
        Conditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(&cur, not_modified)?;
        let c = resolve_range(
            &$api.model,
            &cur,
            input.range.as_ref(),
            input.part_number,
            input.checksum_mode.as_ref(),
        )
        .await?;
        (cur, c)
    }};
}

/// The headers GET and HEAD return, in either output type.
macro_rules! object_output {
    ($ty:ident, $cur:expr, $c:expr $(, $field:ident : $value:expr)*) => {{
        let m = &$cur.meta;
        super::checksum::with_checksums!(
            $ty {
                $($field: $value,)*
                accept_ranges: Some("bytes".into()),
                content_length: i64::try_from($c.range.end - $c.range.start).ok(),
                content_range: $c.content_range,
                parts_count: $c.parts_count,
                e_tag: Some(ETag::Strong(m.etag.clone())),
                last_modified: Some($cur.last_modified()),
                content_type: Some(content_type(m)),
                content_encoding: m.headers.content_encoding.clone(),
                content_disposition: m.headers.content_disposition.clone(),
                content_language: m.headers.content_language.clone(),
                cache_control: m.headers.cache_control.clone(),
                expires: expires_of(m),
                metadata: metadata_of(m),
                checksum_type: $c.checksum_type.map(s3s::dto::ChecksumType::from),
            },
            $c.checksum.unwrap_or_default()
        )
    }};
}

pub(super) async fn get_object(
    api: &S3Api,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let (cur, c) = resolve_read!(api, req);
    let body = body_stream(&api.model, &cur, c.range.clone()).await?;
    Ok(S3Response::new(
        object_output!(GetObjectOutput, cur, c, body: Some(body)),
    ))
}

pub(super) async fn head_object(
    api: &S3Api,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let (cur, c) = resolve_read!(api, req);
    Ok(S3Response::new(object_output!(HeadObjectOutput, cur, c)))
}
