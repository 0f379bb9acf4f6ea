//! ListObjects (v1) and ListObjectsV2: one walk over the bucket's sorted keys, grouping
//! common prefixes and skipping over them in one seek.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for};
use super::error::OrS3;
use super::get::ms_to_timestamp;
use crate::model::object::ObjectMeta;
use crate::model::{Model, ObjectFilter};
use crate::table::{RangeStart, prefix_end};
use crate::util::id::Uuid;

/// One listed key.
pub(super) struct Listed {
    pub(super) key: String,
    pub(super) meta: ObjectMeta,
    pub(super) timestamp: u64,
}

/// Result of a walk.
pub(super) struct Page {
    pub(super) objects: Vec<Listed>,
    pub(super) prefixes: Vec<String>,
    pub(super) truncated: bool,
    /// Where the next page starts (inclusive), when truncated.
    pub(super) next: Option<Vec<u8>>,
    /// Last key or prefix returned (v1 NextMarker).
    pub(super) last: Option<String>,
}

/// Most entries one range read of a listing asks each replica for.
const LIST_BATCH_MAX: usize = 1001;

/// Lists up to `max` keys and prefixes of `bucket` under `prefix`, from `start` (inclusive).
pub(super) async fn walk(
    model: &Model,
    bucket: Uuid,
    prefix: &str,
    delimiter: Option<&str>,
    start: Vec<u8>,
    max: usize,
) -> S3Result<Page> {
    let mut page = Page {
        objects: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        next: None,
        last: None,
    };
    let mut cursor = start.max(prefix.as_bytes().to_vec());
    let delimiter = delimiter.filter(|d| !d.is_empty());
    // One range read for a page without common prefixes (the extra entry tells whether it
    // is truncated); bounded so that a reply stays small.
    let batch_size = max.saturating_add(1).clamp(16, LIST_BATCH_MAX);
    'outer: loop {
        let batch = model
            .objects
            .get_range_filtered(
                &bucket,
                RangeStart::From(cursor.clone()),
                Some(ObjectFilter::IsData),
                batch_size,
            )
            .await
            .s3()?;
        if batch.is_empty() {
            break;
        }
        for obj in &batch {
            if obj.key.as_bytes() < cursor.as_slice() {
                continue; // inside the common prefix just rolled up
            }
            if !obj.key.starts_with(prefix) {
                if obj.key.as_str() > prefix {
                    break 'outer;
                }
                continue;
            }
            if page.objects.len() + page.prefixes.len() >= max {
                page.truncated = true;
                page.next = Some(cursor.clone());
                break 'outer;
            }
            if let Some(d) = delimiter
                && let Some(i) = obj.key[prefix.len()..].find(d)
            {
                let cp = obj.key[..prefix.len() + i + d.len()].to_string();
                let Some(after) = prefix_end(cp.as_bytes()) else {
                    break 'outer;
                };
                page.last = Some(cp.clone());
                page.prefixes.push(cp);
                // Past the prefix: on through this batch, or a read from there once it is
                // used up (a large common prefix is skipped, not read).
                cursor = after;
                continue;
            }
            if let (Some(v), Some(meta)) = (obj.current(), obj.current().and_then(|v| v.meta())) {
                page.objects.push(Listed {
                    key: obj.key.clone(),
                    meta: meta.clone(),
                    timestamp: v.timestamp,
                });
            }
            page.last = Some(obj.key.clone());
            cursor = after_key(&obj.key);
        }
        if batch.len() < batch_size {
            break;
        }
    }
    Ok(page)
}

/// A page of a listing with what both list versions render from it.
struct Listing {
    url: bool,
    max: usize,
    prefix: String,
    page: Page,
    objects: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
}

/// The arguments both list versions share.
struct ListArgs<'a> {
    bucket: &'a str,
    encoding: Option<&'a EncodingType>,
    max_keys: Option<i32>,
    prefix: Option<&'a str>,
    delimiter: Option<&'a str>,
}

/// Checks read access and the encoding / max-keys arguments, then walks the bucket from the
/// start that `start` computes (v1 marker or v2 token / start-after).
async fn listing<T>(
    api: &S3Api,
    req: &S3Request<T>,
    args: ListArgs<'_>,
    start: impl FnOnce() -> S3Result<Vec<u8>>,
) -> S3Result<Listing> {
    let (bucket, _) = bucket_for(api, req, args.bucket, Need::Read).await?;
    let url = url_encoding(args.encoding)?;
    let max = max_keys(args.max_keys)?;
    let prefix = args.prefix.unwrap_or_default().to_string();
    let page = walk(
        &api.model,
        bucket.id,
        &prefix,
        args.delimiter,
        start()?,
        max,
    )
    .await?;
    let objects = contents(&page, url);
    let prefixes = common_prefixes(&page, url);
    Ok(Listing {
        url,
        max,
        prefix,
        page,
        objects,
        prefixes,
    })
}

/// The smallest key strictly after `key`.
fn after_key(key: &str) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0);
    k
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(m) if m < 0 => Err(s3_error!(
            InvalidArgument,
            "max-keys must be a non-negative integer"
        )),
        Some(m) => Ok(usize::try_from(m).unwrap_or(0).min(1000)),
    }
}

/// Applies `encoding-type=url` to a response string.
fn enc(url: bool, s: &str) -> String {
    if url {
        urlencoding::encode(s).replace("%2F", "/")
    } else {
        s.to_string()
    }
}

fn url_encoding(e: Option<&EncodingType>) -> S3Result<bool> {
    match e.map(EncodingType::as_str) {
        None => Ok(false),
        Some(s) if s.eq_ignore_ascii_case("url") => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request"
        )),
    }
}

fn contents(page: &Page, url: bool) -> Vec<Object> {
    page.objects
        .iter()
        .map(|o| Object {
            key: Some(enc(url, &o.key)),
            size: i64::try_from(o.meta.size).ok(),
            e_tag: Some(ETag::Strong(o.meta.etag.clone())),
            last_modified: Some(ms_to_timestamp(o.timestamp)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            checksum_algorithm: o.meta.checksum.as_ref().map(|c| {
                vec![ChecksumAlgorithm::from_static(super::checksum::algo_name(
                    c.algo,
                ))]
            }),
            checksum_type: o
                .meta
                .checksum
                .as_ref()
                .map(|c| ChecksumType::from_static(super::checksum::Fields::kind_name(c))),
            ..Default::default()
        })
        .collect()
}

fn common_prefixes(page: &Page, url: bool) -> Vec<CommonPrefix> {
    page.prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(url, p)),
        })
        .collect()
}

pub(super) async fn list_objects_v2(
    api: &S3Api,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = &req.input;
    let start = || match (&i.continuation_token, &i.start_after) {
        (Some(t), _) => B64URL.decode(t).map_err(|_| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        }),
        (None, Some(sa)) => Ok(after_key(sa)),
        (None, None) => Ok(Vec::new()),
    };
    let args = ListArgs {
        bucket: &i.bucket,
        encoding: i.encoding_type.as_ref(),
        max_keys: i.max_keys,
        prefix: i.prefix.as_deref(),
        delimiter: i.delimiter.as_deref(),
    };
    let l = listing(api, &req, args, start).await?;
    let url = l.url;
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket.clone()),
        prefix: Some(enc(url, &l.prefix)),
        delimiter: i.delimiter.as_deref().map(|d| enc(url, d)),
        max_keys: i32::try_from(l.max).ok(),
        key_count: i32::try_from(l.objects.len() + l.prefixes.len()).ok(),
        continuation_token: i.continuation_token.clone(),
        next_continuation_token: l.page.next.as_ref().map(|n| B64URL.encode(n)),
        is_truncated: Some(l.page.truncated),
        start_after: i.start_after.as_deref().map(|s| enc(url, s)),
        encoding_type: i.encoding_type.clone(),
        contents: (!l.objects.is_empty()).then_some(l.objects),
        common_prefixes: (!l.prefixes.is_empty()).then_some(l.prefixes),
        ..Default::default()
    }))
}

pub(super) async fn list_objects(
    api: &S3Api,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let i = &req.input;
    let start = || {
        Ok(match &i.marker {
            // A marker that is a common prefix skips everything under it.
            Some(m)
                if i.delimiter
                    .as_deref()
                    .is_some_and(|d| !d.is_empty() && m.ends_with(d)) =>
            {
                prefix_end(m.as_bytes()).unwrap_or_else(|| after_key(m))
            }
            Some(m) => after_key(m),
            None => Vec::new(),
        })
    };
    let args = ListArgs {
        bucket: &i.bucket,
        encoding: i.encoding_type.as_ref(),
        max_keys: i.max_keys,
        prefix: i.prefix.as_deref(),
        delimiter: i.delimiter.as_deref(),
    };
    let l = listing(api, &req, args, start).await?;
    let url = l.url;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket.clone()),
        prefix: Some(enc(url, &l.prefix)),
        marker: Some(i.marker.as_deref().map(|m| enc(url, m)).unwrap_or_default()),
        next_marker: if l.page.truncated {
            l.page.last.as_deref().map(|x| enc(url, x))
        } else {
            None
        },
        delimiter: i.delimiter.as_deref().map(|d| enc(url, d)),
        max_keys: i32::try_from(l.max).ok(),
        is_truncated: Some(l.page.truncated),
        encoding_type: i.encoding_type.clone(),
        contents: (!l.objects.is_empty()).then_some(l.objects),
        common_prefixes: (!l.prefixes.is_empty()).then_some(l.prefixes),
        ..Default::default()
    }))
}
