//! Bucket operations.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Api;
use super::auth::{Need, bucket_for, signed_key};
use super::error::OrS3;
use super::get::ms_to_timestamp;
use crate::model::QuotaSpec;

pub(super) async fn list_buckets(
    api: &S3Api,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let key = signed_key(&api.model, &api.region, &req).await?;
    // The grants as a quorum has them: this node's copy may miss one made elsewhere (a
    // listing is no hot path, so it pays the round trip).
    let key = (api.model.keys)
        .get_quorum(&key.key_id, &crate::table::EmptyKey)
        .await
        .s3()?
        .filter(crate::model::Key::is_live)
        .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
    let mut buckets = Vec::new();
    for (id, perm) in key.authorized_buckets.iter() {
        if perm.is_none() {
            continue;
        }
        if let Some(b) = api.model.bucket_by_id(id).await.s3()? {
            buckets.push(s3s::dto::Bucket {
                name: Some(b.name.v.clone()),
                creation_date: Some(ms_to_timestamp(b.created)),
                bucket_region: Some(api.region.clone()),
            });
        }
    }
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            id: Some(key.key_id.clone()),
            display_name: Some(key.name.v.clone()),
        }),
        ..Default::default()
    }))
}

pub(super) async fn create_bucket(
    api: &S3Api,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let key = signed_key(&api.model, &api.region, &req).await?;
    let name = &req.input.bucket;
    if let Some(existing) = api.model.bucket_by_name(name).await.s3()? {
        return Err(if existing.perm_of(&key.key_id).owner {
            s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            )
        } else {
            s3_error!(
                BucketAlreadyExists,
                "The requested bucket name is not available."
            )
        });
    }
    if !key.allow_create_bucket.v {
        return Err(s3_error!(
            AccessDenied,
            "This key is not allowed to create buckets"
        ));
    }
    if let Some(loc) = req
        .input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        && !loc.as_str().is_empty()
        && loc.as_str() != api.region
    {
        return Err(s3_error!(
            InvalidLocationConstraint,
            "The specified location-constraint is not valid for this endpoint"
        ));
    }
    api.model
        .create_bucket(name, Some(&key.key_id), QuotaSpec::default(), None)
        .await
        .s3()?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

pub(super) async fn head_bucket(
    api: &S3Api,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    bucket_for(api, &req, &req.input.bucket, Need::Any).await?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(api.region.clone()),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket(
    api: &S3Api,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let (bucket, _) = bucket_for(api, &req, &req.input.bucket, Need::Owner).await?;
    api.model.delete_bucket(&bucket).await.s3()?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    api: &S3Api,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    bucket_for(api, &req, &req.input.bucket, Need::Any).await?;
    // S3 reports us-east-1 as an empty constraint.
    let loc =
        (api.region != "us-east-1").then(|| BucketLocationConstraint::from(api.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint: loc,
    }))
}

pub(super) async fn get_bucket_versioning(
    api: &S3Api,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    bucket_for(api, &req, &req.input.bucket, Need::Any).await?;
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}
