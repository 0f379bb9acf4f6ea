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

/// Deletes `key` if it has data; deleting a missing key succeeds, as in S3.
async fn delete_key(model: &Model, bucket: Uuid, key: &str) -> crate::Result<()> {
    let Some(obj) = model.objects.get(&bucket, &key.to_string()).await? else {
        return Ok(());
    };
    if obj.current().is_none() {
        return Ok(());
    }
    let marker = ObjectVersion {
        uuid: Uuid::random(),
        timestamp: next_timestamp(obj.last_timestamp()),
        state: ObjectVersionState::Complete(ObjectVersionData::DeleteMarker),
    };
    Ok(model
        .objects
        .insert(&Object::new(bucket, key.to_string(), vec![marker]))
        .await?)
}

pub(super) async fn delete_object(
    api: &S3Api,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let (bucket, _) = bucket_for(api, &req, &req.input.bucket, Need::Write).await?;
    delete_key(&api.model, bucket.id, &req.input.key)
        .await
        .s3()?;
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
    for o in objects {
        match delete_key(&api.model, bucket.id, &o.key).await {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(o.key.clone()),
                ..Default::default()
            }),
            Err(e) => {
                tracing::error!(error = %e, key = %o.key, "delete failed");
                errors.push(s3s::dto::Error {
                    key: Some(o.key.clone()),
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
