//! Who may do what: SigV4 secrets come from the key table, rights from the bucket's grants.

use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Request, S3Result, s3_error};

use super::error::OrS3;
use crate::model::lookup::retry_denial;
use crate::model::{Bucket, FoundBucket, Key, Model};

/// Looks up secrets for `s3s`'s signature verification.
pub(super) struct KeyAuth {
    pub(super) model: Arc<Model>,
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.model.key(access_key).await.s3()? {
            Some(k) => Ok(SecretKey::from(k.secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// The right an operation needs on its bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    Read,
    Write,
    Owner,
    /// Any right at all (HeadBucket, GetBucketLocation).
    Any,
}

/// Longest validity of a presigned URL (AWS: 7 days).
const MAX_PRESIGNED_SECS: u64 = 7 * 24 * 3600;

/// The signed-in key of a request, after the checks `s3s` leaves to us: the region of the
/// credential scope and the presigned URL validity bound.
pub(super) async fn signed_key<T>(
    model: &Model,
    region: &str,
    req: &S3Request<T>,
) -> S3Result<Key> {
    let Some(creds) = &req.credentials else {
        return Err(s3_error!(AccessDenied, "anonymous access is not allowed"));
    };
    if let Some(r) = &req.region
        && r.as_str() != region
    {
        return Err(s3_error!(
            AuthorizationHeaderMalformed,
            "The authorization header is malformed; the region '{}' is wrong; expecting '{}'",
            r.as_str(),
            region
        ));
    }
    check_required_headers_signed(req)?;
    let expires = req.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Expires="))
            .and_then(|v| v.parse::<u64>().ok())
    });
    if expires.is_some_and(|e| e > MAX_PRESIGNED_SECS) {
        return Err(s3_error!(
            AuthorizationQueryParametersError,
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        ));
    }
    model
        .key(&creds.access_key)
        .await
        .s3()?
        .ok_or_else(|| s3_error!(InvalidAccessKeyId))
}

/// Refuses a signature that does not cover `host`, `x-amz-date` and `x-amz-content-sha256`
/// (when sent): `s3s` checks the signature over the headers it names, but a header left out
/// could be changed on the way, so AWS requires these (403 AccessDenied, as AWS answers).
fn check_required_headers_signed<T>(req: &S3Request<T>) -> S3Result<()> {
    let from_header = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("AWS4-HMAC-SHA256"))
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("SignedHeaders="))
                .map(str::to_string)
        });
    let from_query = || {
        req.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("X-Amz-SignedHeaders="))
                .map(|v| urlencoding::decode(v).map_or_else(|_| v.to_string(), |d| d.into_owned()))
        })
    };
    let (signed, presigned) = match from_header {
        Some(h) => (h, false),
        None => match from_query() {
            Some(q) => (q, true),
            None => return Ok(()), // anonymous, or SigV2 (checked by s3s)
        },
    };
    let signed: Vec<&str> = signed.split(';').map(str::trim).collect();
    let mut required = vec!["host"];
    if !presigned {
        for h in ["x-amz-date", "x-amz-content-sha256"] {
            if req.headers.contains_key(h) {
                required.push(h);
            }
        }
    }
    let missing: Vec<&str> = required
        .into_iter()
        .filter(|h| !signed.iter().any(|s| s.eq_ignore_ascii_case(h)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(s3_error!(
            AccessDenied,
            "There were headers present in the request which were not signed: {}",
            missing.join(", ")
        ))
    }
}

/// The bucket `name` if the request's key has `need` on it.
///
/// The key and the bucket are read at once, each from this node's copy first (no round trip
/// on a hit) and from a quorum of the nodes that store them on a miss; a denial by a
/// locally read bucket is checked again against a quorum's copy, so a grant made through
/// another node a moment ago is honoured (see [`crate::model::lookup`], which also says how
/// long a revoked right may still be honoured). For reads, [`bucket_for_then`] overlaps that
/// second look with the read itself.
pub(super) async fn bucket_for<T>(
    api: &super::S3Api,
    req: &S3Request<T>,
    name: &str,
    need: Need,
) -> S3Result<(Bucket, Key)> {
    let (found, key) = lookup(api, req, name).await?;
    if check(&found.bucket, &key, need).is_ok() {
        return Ok((found.bucket, key));
    }
    let bucket = second_look(api, found, &key, need).await?;
    Ok((bucket, key))
}

/// [`bucket_for`], then `read` of the bucket's id: on a local hit one after the other (the
/// hit cost nothing), and when a locally read bucket denies the request, `read` runs while
/// a quorum's copy of the bucket is read for the second look, so a grant not yet seen here
/// costs no extra round trip. `read` must have no effect: its result is dropped when the
/// second look denies too.
pub(super) async fn bucket_for_then<T, R, Fut>(
    api: &super::S3Api,
    req: &S3Request<T>,
    name: &str,
    need: Need,
    read: impl FnOnce(Bucket) -> Fut,
) -> S3Result<(Bucket, Key, R)>
where
    Fut: std::future::Future<Output = S3Result<R>>,
{
    let (found, key) = lookup(api, req, name).await?;
    if check(&found.bucket, &key, need).is_ok() {
        let r = read(found.bucket.clone()).await?;
        return Ok((found.bucket, key, r));
    }
    let local = found.bucket.clone();
    let (bucket, r) = tokio::join!(second_look(api, found, &key, need), read(local));
    let bucket = bucket?;
    Ok((bucket, key, r?))
}

/// The signed-in key and the live bucket `name`, read concurrently.
async fn lookup<T>(
    api: &super::S3Api,
    req: &S3Request<T>,
    name: &str,
) -> S3Result<(FoundBucket, Key)> {
    let (key, bucket) = tokio::join!(
        signed_key(&api.model, &api.region, req),
        api.model.find_bucket(name)
    );
    // S3 reports a bad key before a missing bucket.
    let key = key?;
    let found = bucket
        .s3()?
        .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))?;
    Ok((found, key))
}

/// After `found` denied `key` `need`: the verdict of a quorum's copy of the bucket when
/// `found` was only this node's copy (the grant may be newer than it), else the denial.
async fn second_look(
    api: &super::S3Api,
    found: FoundBucket,
    key: &Key,
    need: Need,
) -> S3Result<Bucket> {
    if !retry_denial(found.source) {
        check(&found.bucket, key, need)?;
        return Ok(found.bucket);
    }
    let fresh = api
        .model
        .bucket_by_id_quorum(&found.bucket.id)
        .await
        .s3()?
        .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))?;
    check(&fresh, key, need)?;
    Ok(fresh)
}

/// Fails with AccessDenied unless `key` has `need` on `bucket`.
pub(super) fn check(bucket: &Bucket, key: &Key, need: Need) -> S3Result<()> {
    let p = bucket.perm_of(&key.key_id);
    let ok = match need {
        Need::Read => p.read,
        Need::Write => p.write,
        Need::Owner => p.owner,
        Need::Any => !p.is_none(),
    };
    if ok {
        Ok(())
    } else {
        Err(s3_error!(AccessDenied))
    }
}
