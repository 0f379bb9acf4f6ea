//! DeleteObject and DeleteObjects (unversioned buckets: a delete marker prunes the data).

use s3s::dto::{
    DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject,
};
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for};
use super::error::OrS3;
use crate::model::object::{ObjectVersion, ObjectVersionData, ObjectVersionState};
use crate::model::{Model, Object};
use crate::util::id::Uuid;
use crate::util::time::next_timestamp;

/// Most keys in one DeleteObjects request.
const MAX_DELETE_KEYS: usize = 1000;

/// Object reads in flight for one DeleteObjects request.
const READS_IN_FLIGHT: usize = 64;

/// Deletes each of `keys` that has data (deleting a missing key succeeds, as in S3): the
/// objects are read concurrently, then every delete marker is written in one batched write
/// (the keys of a bucket share their replicas): two round trips for a whole DeleteObjects.
async fn delete_keys(model: &Model, bucket: Uuid, keys: &[String]) -> Vec<crate::Result<()>> {
    let mut found: Vec<crate::Result<Option<Object>>> = Vec::with_capacity(keys.len());
    for group in keys.chunks(READS_IN_FLIGHT) {
        let reads = group.iter().map(|key| model.objects.get(&bucket, key));
        for r in futures::future::join_all(reads).await {
            found.push(r.map_err(crate::Error::from));
        }
    }
    let mut markers = Vec::new();
    let mut results: Vec<crate::Result<bool>> = Vec::with_capacity(keys.len());
    for (key, obj) in keys.iter().zip(found) {
        results.push(obj.map(|obj| match obj {
            Some(obj) if obj.current().is_some() => {
                let marker = ObjectVersion {
                    uuid: Uuid::random(),
                    timestamp: next_timestamp(obj.last_timestamp()),
                    state: ObjectVersionState::Complete(ObjectVersionData::DeleteMarker),
                };
                markers.push(Object::new(bucket, key.clone(), vec![marker]));
                true
            }
            _ => false,
        }));
    }
    let written = if markers.is_empty() {
        Ok(())
    } else {
        model
            .objects
            .insert_many(&markers)
            .await
            .map_err(|e| e.to_string())
    };
    results
        .into_iter()
        .map(|r| match (r, &written) {
            (Ok(true), Err(e)) => Err(crate::Error::Unavailable(e.clone())),
            (r, _) => r.map(|_| ()),
        })
        .collect()
}

pub(super) async fn delete_object(
    api: &S3Api,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let (bucket, _) = bucket_for(api, &req, &req.input.bucket, Need::Write).await?;
    let key = std::slice::from_ref(&req.input.key);
    for r in delete_keys(&api.model, bucket.id, key).await {
        r.s3()?;
    }
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_objects(
    api: &S3Api,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let (bucket, _) = bucket_for(api, &req, &req.input.bucket, Need::Write).await?;
    let objects = &req.input.delete.objects;
    if objects.len() > MAX_DELETE_KEYS {
        return Err(s3_error!(
            MalformedXML,
            "The request must contain no more than 1000 keys"
        ));
    }
    if objects.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "The request must contain at least one key"
        ));
    }
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    for (key, r) in keys
        .iter()
        .zip(delete_keys(&api.model, bucket.id, &keys).await)
    {
        match r {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(key.clone()),
                ..Default::default()
            }),
            Err(e) => {
                tracing::error!(error = %e, %key, "delete failed");
                errors.push(s3s::dto::Error {
                    key: Some(key.clone()),
                    code: Some("InternalError".into()),
                    message: Some("internal error".into()),
                    ..Default::default()
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}
