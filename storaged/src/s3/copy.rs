//! CopyObject and UploadPartCopy. A whole-object copy shares the source's chunks (new
//! references, no bytes copied); a part copy re-reads the source range into new chunks.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for, bucket_for_then};
use super::checksum::{self, Expected, Fields};
use super::error::OrS3;
use super::get::{Conditions, Current, body_stream, current};
use super::multipart::{check_part_number, open_upload, store_part};
use super::put::check_quotas;
use crate::model::object::{ObjectVersionData, ObjectVersionState};
use crate::model::{Object, ObjectWriter, Version, writer};
use crate::util::id::Uuid;
use crate::util::time::next_timestamp;

/// Resolves `x-amz-copy-source` to its current version, checking read access and the
/// `x-amz-copy-source-if-*` conditions (all failures are 412 for copies).
async fn source<T>(
    api: &S3Api,
    req: &S3Request<T>,
    src: &CopySource,
    conds: Conditions<'_>,
) -> S3Result<(Uuid, String, Current)> {
    let CopySource::Bucket { bucket, key, .. } = src else {
        return Err(s3_error!(
            NotImplemented,
            "Access point copy sources are not supported"
        ));
    };
    let model = &api.model;
    let (b, _, cur) =
        bucket_for_then(api, req, bucket, Need::Read, |b| current(model, b.id, key)).await?;
    conds.check(&cur, || {
        s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        )
    })?;
    Ok((b.id, key.to_string(), cur))
}

pub(super) async fn copy_object(
    api: &S3Api,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let model = &api.model;
    let i = &req.input;
    let conds = Conditions {
        if_match: i.copy_source_if_match.as_ref(),
        if_none_match: i.copy_source_if_none_match.as_ref(),
        if_modified_since: i.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
    };
    let (src_bucket, src_key, cur) = source(api, &req, &i.copy_source, conds).await?;
    let (dst, _) = bucket_for(api, &req, &i.bucket, Need::Write).await?;
    let replace = match i.metadata_directive.as_ref().map(MetadataDirective::as_str) {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return Err(s3_error!(InvalidArgument, "Unknown metadata directive.")),
    };
    if !replace && src_bucket == dst.id && src_key == i.key {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    let replacing = super::get::current(model, dst.id, &i.key)
        .await
        .ok()
        .map(|c| c.meta.size);
    check_quotas(model, &dst, cur.meta.size, replacing).await?;
    let mut meta = cur.meta.clone();
    if replace {
        meta.headers = super::put::headers_of!(i, &req.headers)?;
    }
    let uuid = Uuid::random();
    let (data, existing) = match &cur.version.state {
        ObjectVersionState::Complete(ObjectVersionData::Inline(_, bytes)) => (
            ObjectVersionData::Inline(meta.clone(), bytes.clone()),
            model.objects.get(&dst.id, &i.key).await.s3()?,
        ),
        ObjectVersionState::Complete(ObjectVersionData::FirstBlock(_, first)) => {
            let src_version = model
                .versions
                .get(&cur.version.uuid, &crate::table::EmptyKey)
                .await
                .s3()?
                .ok_or_else(|| s3s::S3Error::internal_error(crate::Error::MissingBlock(*first)))?;
            let mut v = Version::new(uuid);
            v.blocks = src_version.blocks.clone();
            // One round trip: the chunks are attached while the target is read.
            let (attached, existing) = tokio::join!(
                writer::attach_chunks(model, &v),
                model.objects.get(&dst.id, &i.key)
            );
            attached.s3()?;
            (
                ObjectVersionData::FirstBlock(meta.clone(), *first),
                existing.s3()?,
            )
        }
        _ => return Err(s3_error!(NoSuchKey)),
    };
    let timestamp = next_timestamp(existing.as_ref().map_or(0, Object::last_timestamp));
    ObjectWriter::with_uuid(model, dst.id, &i.key, uuid, timestamp)
        .commit(data, Vec::new())
        .await
        .s3()?;
    let f = meta.checksum.as_ref().map(Fields::of).unwrap_or_default();
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(checksum::with_checksums!(
            CopyObjectResult {
                e_tag: Some(ETag::Strong(meta.etag.clone())),
                last_modified: Some(super::get::ms_to_timestamp(timestamp)),
                checksum_type: meta
                    .checksum
                    .as_ref()
                    .map(|c| ChecksumType::from_static(Fields::kind_name(c))),
            },
            f
        )),
        ..Default::default()
    }))
}

/// Parses `x-amz-copy-source-range: bytes=first-last` against the source size.
fn copy_range(range: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> {
    let Some(r) = range else { return Ok(0..size) };
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let spec = r.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    if b >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok(a..b + 1)
}

pub(super) async fn upload_part_copy(
    api: &S3Api,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let model = &api.model;
    let i = &req.input;
    let part_number = check_part_number(i.part_number)?;
    let conds = Conditions {
        if_match: i.copy_source_if_match.as_ref(),
        if_none_match: i.copy_source_if_none_match.as_ref(),
        if_modified_since: i.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
    };
    let (_, _, cur) = source(api, &req, &i.copy_source, conds).await?;
    let (dst, _) = bucket_for(api, &req, &i.bucket, Need::Write).await?;
    let mpu = open_upload(model, &dst, &i.key, &i.upload_id).await?;
    let range = copy_range(i.copy_source_range.as_deref(), cur.meta.size)?;
    check_quotas(model, &dst, range.end - range.start, None).await?;
    let body = body_stream(model, &cur, range).await?;
    let (part, pk) = store_part(
        model,
        &mpu,
        part_number,
        Some(body),
        Expected::default(),
        None,
        None,
    )
    .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: part.etag.map(ETag::Strong),
            last_modified: Some(super::get::ms_to_timestamp(pk.timestamp)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::copy_range;

    #[test]
    fn copy_ranges() {
        assert_eq!(copy_range(None, 10).expect("whole"), 0..10);
        assert_eq!(copy_range(Some("bytes=2-5"), 10).expect("range"), 2..6);
        assert!(copy_range(Some("bytes=5-2"), 10).is_err());
        assert!(copy_range(Some("bytes=0-10"), 10).is_err());
        assert!(copy_range(Some("2-5"), 10).is_err());
    }
}
