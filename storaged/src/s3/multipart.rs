//! Multipart uploads.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for};
use super::checksum::{self, Expected, Fields};
use super::error::OrS3;
use super::get::ms_to_timestamp;
use super::put::{check_quotas, require_content_length};
use super::writer::{Target, store_body};
use crate::model::mpu::{CompletedAs, MpuPart, PartKey};
use crate::model::object::{
    ChecksumAlgo, ChecksumKind, ObjectMeta, ObjectVersion, ObjectVersionData, ObjectVersionState,
    StoredChecksum,
};
use crate::model::{
    Bucket, Model, MultipartUpload, Object, ObjectFilter, ObjectWriter, Version, writer,
};
use crate::table::{EmptyKey, RangeStart};
use crate::util::id::Uuid;
use crate::util::time::{next_timestamp, now_ms};

fn no_such_upload() -> s3s::S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

/// The open upload `upload_id` of `bucket`/`key`.
pub(super) async fn open_upload(
    model: &Model,
    bucket: &Bucket,
    key: &str,
    upload_id: &str,
) -> S3Result<MultipartUpload> {
    let id = Uuid::from_hex(upload_id).ok_or_else(no_such_upload)?;
    model
        .mpus
        .get(&id, &EmptyKey)
        .await
        .s3()?
        .filter(|m| !m.deleted.0 && m.bucket_id == bucket.id && m.key == key)
        .ok_or_else(no_such_upload)
}

pub(super) fn check_part_number(n: i32) -> S3Result<u32> {
    if (1..=super::MAX_PART_NUMBER).contains(&n) {
        Ok(u32::try_from(n).unwrap_or(1))
    } else {
        Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ))
    }
}

pub(super) async fn create(
    api: &S3Api,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let model = &api.model;
    let i = &req.input;
    let (bucket, _) = bucket_for(api, &req, &i.bucket, Need::Write).await?;
    let algo = match &i.checksum_algorithm {
        Some(a) => Some(
            checksum::algo_from_name(a.as_str())
                .ok_or_else(|| s3_error!(InvalidRequest, "unsupported checksum algorithm"))?,
        ),
        None => None,
    };
    let kind = match i.checksum_type.as_ref().map(ChecksumType::as_str) {
        Some("FULL_OBJECT") => Some(ChecksumKind::FullObject),
        Some("COMPOSITE") => Some(ChecksumKind::Composite),
        Some(_) => {
            return Err(s3_error!(
                InvalidRequest,
                "Value for x-amz-checksum-type header is invalid."
            ));
        }
        None => algo.map(|a| {
            if a == ChecksumAlgo::Crc64Nvme {
                ChecksumKind::FullObject
            } else {
                ChecksumKind::Composite
            }
        }),
    };
    if kind == Some(ChecksumKind::FullObject)
        && matches!(algo, Some(ChecksumAlgo::Sha1 | ChecksumAlgo::Sha256))
    {
        return Err(s3_error!(
            InvalidRequest,
            "The FULL_OBJECT checksum type cannot be used with the SHA1 or SHA256 algorithms."
        ));
    }
    let headers = super::put::headers_of!(i, &req.headers)?;
    let existing = model.objects.get(&bucket.id, &i.key).await.s3()?;
    let timestamp = next_timestamp(existing.as_ref().map_or(0, Object::last_timestamp));
    let upload_id = Uuid::random();
    let mut mpu = MultipartUpload::new(upload_id, timestamp, bucket.id, i.key.clone());
    mpu.checksum = algo.zip(kind);
    model.mpus.insert(&mpu).await.s3()?;
    let v = ObjectVersion {
        uuid: upload_id,
        timestamp,
        state: ObjectVersionState::Uploading {
            multipart: true,
            headers,
            checksum_algo: algo,
            checksum_kind: kind,
        },
    };
    model
        .objects
        .insert(&Object::new(bucket.id, i.key.clone(), vec![v]))
        .await
        .s3()?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(upload_id.to_hex()),
        checksum_algorithm: algo.map(|a| ChecksumAlgorithm::from_static(checksum::algo_name(a))),
        checksum_type: mpu.checksum.map(|(a, k)| {
            ChecksumType::from_static(Fields::kind_name(&StoredChecksum {
                algo: a,
                value: String::new(),
                kind: k,
            }))
        }),
        ..Default::default()
    }))
}

/// Stores a part body under a fresh part version, recording it in the upload first so
/// that an abort releases its chunks even if the upload is interrupted.
pub(super) async fn store_part(
    model: &std::sync::Arc<Model>,
    mpu: &MultipartUpload,
    part_number: u32,
    body: Option<StreamingBlob>,
    mut expected: Expected,
    trailers: Option<&s3s::TrailingHeaders>,
    content_md5: Option<&str>,
) -> S3Result<(MpuPart, PartKey)> {
    if expected.algo.is_none() {
        expected.algo = mpu.checksum.map(|(a, _)| a);
    }
    let version = Uuid::random();
    let pk = PartKey {
        part_number,
        timestamp: now_ms(),
    };
    let mut reg = mpu.clone();
    reg.parts.clear();
    reg.parts.insert(
        pk,
        MpuPart {
            version,
            etag: None,
            size: None,
            checksum: None,
        },
    );
    model.mpus.insert(&reg).await.s3()?;
    let target = Target {
        model,
        version,
        part: part_number,
        allow_inline: false,
        algo: expected.algo,
        max_size: super::MAX_PUT_SIZE,
    };
    let stored = store_body(target, body).await?;
    let trailers = trailers.and_then(s3s::TrailingHeaders::take);
    expected.verify(stored.checksum.as_deref(), trailers.as_ref())?;
    checksum::verify_content_md5(content_md5, &stored.md5)?;
    let part = MpuPart {
        version,
        etag: Some(hex::encode(stored.md5)),
        size: Some(stored.size),
        checksum: expected
            .algo
            .zip(stored.checksum.as_ref())
            .map(|(algo, raw)| StoredChecksum {
                algo,
                value: checksum::b64(raw),
                kind: ChecksumKind::FullObject,
            }),
    };
    reg.parts.insert(pk, part.clone());
    model.mpus.insert(&reg).await.s3()?;
    Ok((part, pk))
}

pub(super) async fn upload_part(
    api: &S3Api,
    mut req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let model = &api.model;
    let part_number = check_part_number(req.input.part_number)?;
    let (bucket, _) = bucket_for(api, &req, &req.input.bucket, Need::Write).await?;
    let mpu = open_upload(model, &bucket, &req.input.key, &req.input.upload_id).await?;
    require_content_length(&req.headers)?;
    if req
        .input
        .content_length
        .is_some_and(|l| u64::try_from(l).unwrap_or(0) > super::MAX_PUT_SIZE)
    {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size"
        ));
    }
    checksum::check_content_md5_shape(req.input.content_md5.as_deref())?;
    check_quotas(
        model,
        &bucket,
        u64::try_from(req.input.content_length.unwrap_or(0)).unwrap_or(0),
        None,
    )
    .await?;
    let i = &req.input;
    let fields = checksum::fields_of!(i);
    let expected = Expected::from_request(
        &req.headers,
        &fields,
        i.checksum_algorithm.as_ref().map(ChecksumAlgorithm::as_str),
    )?;
    let md5 = req.input.content_md5.clone();
    let body = req.input.body.take();
    let (part, _) = store_part(
        model,
        &mpu,
        part_number,
        body,
        expected,
        req.trailing_headers.as_ref(),
        md5.as_deref(),
    )
    .await?;
    let f = part.checksum.as_ref().map(Fields::of).unwrap_or_default();
    Ok(S3Response::new(checksum::with_checksums!(
        UploadPartOutput {
            e_tag: part.etag.map(ETag::Strong),
        },
        f
    )))
}

fn part_checksum_given(p: &CompletedPart) -> Option<String> {
    checksum::fields_of!(p)
        .single()
        .ok()
        .flatten()
        .map(|(_, v)| v)
}

pub(super) async fn complete(
    api: &S3Api,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let model = &api.model;
    let i = &req.input;
    let (bucket, _) = bucket_for(api, &req, &i.bucket, Need::Write).await?;
    let mpu = match open_upload(model, &bucket, &i.key, &i.upload_id).await {
        Ok(mpu) => mpu,
        Err(e) => match completed_before(model, &bucket, &i.key, &i.upload_id).await? {
            Some(done) => return Ok(completion_answer(i, &done)),
            None => return Err(e),
        },
    };
    let listed = i
        .multipart_upload
        .as_ref()
        .and_then(|m| m.parts.as_ref())
        .cloned()
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "You must specify at least one part"
        ));
    }
    let have = mpu.completed_parts();
    let mut chosen = Vec::with_capacity(listed.len());
    let mut last = 0;
    for p in &listed {
        let n = p
            .part_number
            .ok_or_else(|| s3_error!(MalformedXML, "PartNumber is required"))?;
        let n = check_part_number(n)?;
        if n <= last {
            return Err(s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order. Parts must be ordered by part number."
            ));
        }
        last = n;
        let invalid = || {
            s3_error!(
                InvalidPart,
                "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."
            )
        };
        let (_, part) = have.get(&n).ok_or_else(invalid)?;
        let given = p
            .e_tag
            .as_ref()
            .map(|e| e.value().trim_matches('"').to_string());
        if given.is_none() || given.as_deref() != part.etag.as_deref() {
            return Err(invalid());
        }
        if let (Some(g), Some(c)) = (part_checksum_given(p), &part.checksum)
            && g != c.value
        {
            return Err(invalid());
        }
        chosen.push((n, (*part).clone()));
    }
    for (idx, (_, part)) in chosen.iter().enumerate() {
        if idx + 1 < chosen.len() && part.size.unwrap_or(0) < super::MIN_PART_SIZE {
            return Err(s3_error!(
                EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size."
            ));
        }
    }

    // ETag: MD5 of the concatenated binary part MD5s, then "-N".
    let mut md5_concat = Vec::with_capacity(16 * chosen.len());
    for (_, p) in &chosen {
        md5_concat.extend(hex::decode(p.etag.as_deref().unwrap_or_default()).unwrap_or_default());
    }
    let etag = {
        use s3s::crypto::Checksum as _;
        let mut h = s3s::crypto::Md5::new();
        h.update(&md5_concat);
        format!("{}-{}", hex::encode(h.finalize()), chosen.len())
    };
    let checksum = mpu.checksum.and_then(|(algo, kind)| {
        let values: Option<Vec<(String, u64)>> = chosen
            .iter()
            .map(|(_, p)| {
                p.checksum
                    .as_ref()
                    .map(|c| (c.value.clone(), p.size.unwrap_or(0)))
            })
            .collect();
        let values = values?;
        let value = match kind {
            ChecksumKind::FullObject => checksum::combine_crc(algo, &values)?,
            ChecksumKind::Composite => checksum::composite(
                algo,
                &values.into_iter().map(|(v, _)| v).collect::<Vec<_>>(),
            )?,
        };
        Some(StoredChecksum { algo, value, kind })
    });
    let given_full = checksum::fields_of!(i).single()?;
    if let (Some((_, given)), Some(c)) = (&given_full, &checksum)
        && *given != c.value
        && c.kind == ChecksumKind::FullObject
    {
        return Err(s3_error!(
            BadDigest,
            "The checksum you specified did not match the calculated checksum"
        ));
    }

    // The final version lists the chosen parts' chunks and takes its own references.
    let final_uuid = Uuid::random();
    let mut version = Version::new(final_uuid);
    let mut size = 0;
    // The parts' chunk lists, read concurrently (one round trip, not one per part).
    let part_versions = futures::future::try_join_all(
        chosen
            .iter()
            .map(|(_, p)| model.versions.get(&p.version, &EmptyKey)),
    )
    .await
    .s3()?;
    for ((_, p), pv) in chosen.iter().zip(part_versions) {
        let pv = pv.unwrap_or_else(|| Version::new(p.version));
        version
            .blocks
            .extend(pv.blocks.iter().map(|(k, v)| (*k, *v)));
        size += p.size.unwrap_or(0);
    }
    // One round trip: the parts' chunks are attached while the object is read.
    let (attached, existing) = tokio::join!(
        writer::attach_chunks(model, &version),
        model.objects.get(&bucket.id, &i.key),
    );
    attached.s3()?;
    let existing = existing.s3()?;
    let headers = existing
        .as_ref()
        .and_then(|o| o.versions().iter().find(|v| v.uuid == mpu.upload_id))
        .and_then(|v| match &v.state {
            ObjectVersionState::Uploading { headers, .. } => Some(headers.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let meta = ObjectMeta {
        size,
        etag: etag.clone(),
        headers,
        checksum: checksum.clone(),
        parts: u32::try_from(chosen.len()).unwrap_or(u32::MAX),
    };
    let first = version.blocks.values().next().map(|b| b.hash);
    let data = match first {
        Some(h) => ObjectVersionData::FirstBlock(meta, h),
        None => ObjectVersionData::Inline(meta, Vec::new()),
    };
    let timestamp = next_timestamp(existing.as_ref().map_or(0, Object::last_timestamp));
    let closed = ObjectVersion {
        uuid: mpu.upload_id,
        timestamp: mpu.timestamp,
        state: ObjectVersionState::Aborted,
    };
    ObjectWriter::with_uuid(model, bucket.id, &i.key, final_uuid, timestamp)
        .commit(data, vec![closed])
        .await
        .s3()?;
    let done = CompletedAs { etag, checksum };
    let mut finished = mpu.clone();
    finished.deleted.0 = true;
    finished.completed = Some(done.clone());
    model.mpus.insert(&finished).await.s3()?;
    Ok(completion_answer(i, &done))
}

/// The answer already given for `upload_id`, if it completed into `bucket`/`key` (a
/// client retrying a completion whose answer it lost, as SDKs do after a timeout).
async fn completed_before(
    model: &Model,
    bucket: &Bucket,
    key: &str,
    upload_id: &str,
) -> S3Result<Option<CompletedAs>> {
    let Some(id) = Uuid::from_hex(upload_id) else {
        return Ok(None);
    };
    Ok(model
        .mpus
        .get(&id, &EmptyKey)
        .await
        .s3()?
        .filter(|m| m.bucket_id == bucket.id && m.key == key)
        .and_then(|m| m.completed))
}

fn completion_answer(
    i: &CompleteMultipartUploadInput,
    done: &CompletedAs,
) -> S3Response<CompleteMultipartUploadOutput> {
    let checksum = &done.checksum;
    let f = checksum.as_ref().map(Fields::of).unwrap_or_default();
    S3Response::new(checksum::with_checksums!(
        CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(ETag::Strong(done.etag.clone())),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            checksum_type: checksum
                .as_ref()
                .map(|c| ChecksumType::from_static(Fields::kind_name(c))),
        },
        f
    ))
}

pub(super) async fn abort(
    api: &S3Api,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let model = &api.model;
    let i = &req.input;
    let (bucket, _) = bucket_for(api, &req, &i.bucket, Need::Write).await?;
    let mpu = open_upload(model, &bucket, &i.key, &i.upload_id).await?;
    let v = ObjectVersion {
        uuid: mpu.upload_id,
        timestamp: mpu.timestamp,
        state: ObjectVersionState::Aborted,
    };
    model
        .objects
        .insert(&Object::new(bucket.id, i.key.clone(), vec![v]))
        .await
        .s3()?;
    let mut gone = mpu;
    gone.deleted.0 = true;
    model.mpus.insert(&gone).await.s3()?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    api: &S3Api,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let model = &api.model;
    let i = &req.input;
    let (bucket, _) = bucket_for(api, &req, &i.bucket, Need::Read).await?;
    let mpu = open_upload(model, &bucket, &i.key, &i.upload_id).await?;
    let marker = i
        .part_number_marker
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0);
    let max = usize::try_from(i.max_parts.unwrap_or(1000).clamp(0, 1000)).unwrap_or(1000);
    let all: Vec<_> = mpu
        .completed_parts()
        .into_iter()
        .filter(|(n, _)| *n > marker)
        .collect();
    let truncated = all.len() > max;
    let parts: Vec<Part> = all
        .iter()
        .take(max)
        .map(|(n, (pk, p))| {
            let f = p.checksum.as_ref().map(Fields::of).unwrap_or_default();
            checksum::with_checksums!(
                Part {
                    part_number: i32::try_from(*n).ok(),
                    e_tag: p.etag.clone().map(ETag::Strong),
                    size: p.size.and_then(|s| i64::try_from(s).ok()),
                    last_modified: Some(ms_to_timestamp(pk.timestamp)),
                },
                f
            )
        })
        .collect();
    let next = if truncated {
        parts.last().and_then(|p| p.part_number)
    } else {
        None
    };
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(i.upload_id.clone()),
        max_parts: i32::try_from(max).ok(),
        is_truncated: Some(truncated),
        part_number_marker: i.part_number_marker,
        next_part_number_marker: next,
        checksum_algorithm: mpu
            .checksum
            .map(|(a, _)| ChecksumAlgorithm::from_static(checksum::algo_name(a))),
        parts: Some(parts),
        ..Default::default()
    }))
}

pub(super) async fn list_uploads(
    api: &S3Api,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let model = &api.model;
    let i = &req.input;
    let (bucket, _) = bucket_for(api, &req, &i.bucket, Need::Read).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let max = usize::try_from(i.max_uploads.unwrap_or(1000).clamp(0, 1000)).unwrap_or(1000);
    let start = i.key_marker.clone().unwrap_or_default().max(prefix.clone());
    let objs = model
        .objects
        .get_range_filtered(
            &bucket.id,
            RangeStart::From(start.into_bytes()),
            Some(ObjectFilter::IsUploading),
            max + 1,
        )
        .await
        .s3()?;
    let mut uploads = Vec::new();
    let mut truncated = false;
    for o in objs.iter().filter(|o| o.key.starts_with(&prefix)) {
        if i.key_marker.as_deref().is_some_and(|m| o.key.as_str() <= m) {
            continue;
        }
        for v in o.versions().iter().filter(|v| v.is_open_multipart()) {
            if uploads.len() >= max {
                truncated = true;
                break;
            }
            uploads.push(s3s::dto::MultipartUpload {
                key: Some(o.key.clone()),
                upload_id: Some(v.uuid.to_hex()),
                initiated: Some(ms_to_timestamp(v.timestamp)),
                ..Default::default()
            });
        }
    }
    let next_key = if truncated {
        uploads.last().and_then(|u| u.key.clone())
    } else {
        None
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket.clone()),
        prefix: i.prefix.clone(),
        key_marker: i.key_marker.clone(),
        max_uploads: i32::try_from(max).ok(),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        uploads: Some(uploads),
        ..Default::default()
    }))
}
