//! `/v1/` routes.
//!
//! Handlers return `Result<Reply, Reply>`: the error side is the finished HTTP answer, so
//! its size is that of a response by design.
#![allow(
    clippy::result_large_err,
    reason = "the Err variant is the HTTP reply itself"
)]

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use storaged_api as api;

use super::{AdminState, Reply, error, json};
use crate::Error;
use crate::model::{Bucket, BucketPerm, Key, QuotaSpec};
use crate::util::id::Uuid;
use crate::util::time::rfc3339;

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("invalid JSON body: {e}"),
        )
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            urlencoding::decode(v)
                .map(|s| s.into_owned())
                .unwrap_or_default()
        })
    })
}

fn from_error(e: &Error) -> Reply {
    let (status, code) = match e {
        Error::NoSuchBucket(_) => (StatusCode::NOT_FOUND, "NoSuchBucket"),
        Error::NoSuchAccessKey(_) => (StatusCode::NOT_FOUND, "NoSuchAccessKey"),
        Error::BucketAlreadyExists(_) => (StatusCode::CONFLICT, "BucketAlreadyExists"),
        Error::AccessKeyExists(_) => (StatusCode::CONFLICT, "AccessKeyAlreadyExists"),
        Error::BucketNotEmpty(_) => (StatusCode::CONFLICT, "BucketNotEmpty"),
        Error::InvalidBucketName(..) => (StatusCode::BAD_REQUEST, "InvalidBucketName"),
        Error::InvalidAccessKey(_) => (StatusCode::BAD_REQUEST, "InvalidAccessKey"),
        _ => {
            tracing::error!(error = %e, "admin API internal error");
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
    };
    error(status, code, e.to_string())
}

/// Routes one authenticated `/v1/` request.
pub(super) async fn route(
    state: &AdminState,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    match dispatch(state, method, path, query, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn dispatch(
    state: &AdminState,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Reply, Reply> {
    let m = &state.model;
    let e = |e: Error| from_error(&e);
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["status"]) => Ok(json(StatusCode::OK, &super::layout::status(state))),
        (&Method::GET, ["health"]) => Ok(json(StatusCode::OK, &super::layout::health(state))),
        (_, ["layout", rest @ ..]) => super::layout::route(state, method, rest, body).await,
        (&Method::GET, ["keys"]) => {
            let name = query_param(query, "name");
            let keys = m.keys.local().get_all(Some(true)).await.map_err(e)?;
            let list: Vec<api::KeySummary> = keys
                .iter()
                .filter(|k| name.as_ref().is_none_or(|n| *n == k.name.v))
                .map(|k| api::KeySummary {
                    access_key_id: k.key_id.clone(),
                    name: k.name.v.clone(),
                })
                .collect();
            Ok(json(StatusCode::OK, &list))
        }
        (&Method::POST, ["keys"]) => {
            let req: api::CreateKeyRequest = parse(body)?;
            let key = m
                .create_key(
                    req.name.as_deref().unwrap_or_default(),
                    req.allow_create_bucket,
                )
                .await
                .map_err(e)?;
            Ok(json(
                StatusCode::OK,
                &key_info(state, &key, true).await.map_err(e)?,
            ))
        }
        (&Method::POST, ["keys", "import"]) => {
            let req: api::ImportKeyRequest = parse(body)?;
            let key = m
                .import_key(
                    &req.access_key_id,
                    &req.secret_access_key,
                    req.name.as_deref().unwrap_or_default(),
                )
                .await
                .map_err(e)?;
            Ok(json(
                StatusCode::OK,
                &key_info(state, &key, true).await.map_err(e)?,
            ))
        }
        (&Method::GET, ["keys", id]) => {
            let key = find_key(state, id).await?;
            let show = query_param(query, "show_secret").is_some_and(|v| v == "true");
            Ok(json(
                StatusCode::OK,
                &key_info(state, &key, show).await.map_err(e)?,
            ))
        }
        (&Method::POST, ["keys", id]) => {
            let req: api::UpdateKeyRequest = parse(body)?;
            let mut key = find_key(state, id).await?;
            if let Some(n) = req.name {
                key.name.update(n);
            }
            if let Some(a) = req.allow_create_bucket {
                key.allow_create_bucket.update(a);
            }
            m.keys.insert(&key).await.map_err(|x| e(x.into()))?;
            Ok(json(
                StatusCode::OK,
                &key_info(state, &key, false).await.map_err(e)?,
            ))
        }
        (&Method::DELETE, ["keys", id]) => {
            let key = find_key(state, id).await?;
            m.delete_key(&key).await.map_err(e)?;
            Ok(json(StatusCode::OK, &serde_json::json!({})))
        }
        (&Method::GET, ["buckets"]) => {
            if let Some(name) = query_param(query, "name") {
                let b = m
                    .bucket_by_name(&name)
                    .await
                    .map_err(e)?
                    .ok_or_else(|| from_error(&Error::NoSuchBucket(name)))?;
                return Ok(json(
                    StatusCode::OK,
                    &bucket_info(state, &b).await.map_err(e)?,
                ));
            }
            let buckets = m.buckets.local().get_all(Some(true)).await.map_err(e)?;
            let list: Vec<api::BucketSummary> = buckets
                .iter()
                .map(|b| api::BucketSummary {
                    id: b.id.to_hex(),
                    name: b.name.v.clone(),
                })
                .collect();
            Ok(json(StatusCode::OK, &list))
        }
        (&Method::POST, ["buckets"]) => {
            let req: api::CreateBucketRequest = parse(body)?;
            let quotas = req.quotas.map(quota_spec).unwrap_or_default();
            let b = m
                .create_bucket(&req.name, None, quotas, req.owner_tag)
                .await
                .map_err(e)?;
            Ok(json(
                StatusCode::OK,
                &bucket_info(state, &b).await.map_err(e)?,
            ))
        }
        (&Method::GET, ["buckets", id]) => {
            let b = find_bucket(state, id).await?;
            Ok(json(
                StatusCode::OK,
                &bucket_info(state, &b).await.map_err(e)?,
            ))
        }
        (&Method::POST, ["buckets", id]) => {
            let req: api::UpdateBucketRequest = parse(body)?;
            let mut b = find_bucket(state, id).await?;
            if let Some(q) = req.quotas {
                b.quotas.update(quota_spec(q));
            }
            if let Some(t) = req.owner_tag {
                // An empty tag releases the bucket.
                b.owner_tag.update(Some(t).filter(|t| !t.is_empty()));
            }
            m.buckets.insert(&b).await.map_err(|x| e(x.into()))?;
            Ok(json(
                StatusCode::OK,
                &bucket_info(state, &b).await.map_err(e)?,
            ))
        }
        (&Method::DELETE, ["buckets", id]) => {
            let b = find_bucket(state, id).await?;
            if query_param(query, "force").is_some_and(|v| v == "true") {
                m.empty_bucket(&b).await.map_err(e)?;
            }
            m.delete_bucket(&b).await.map_err(e)?;
            Ok(json(StatusCode::OK, &serde_json::json!({})))
        }
        (&Method::POST, ["permissions", action @ ("allow" | "deny")]) => {
            let req: api::PermissionRequest = parse(body)?;
            let b = find_bucket(state, &req.bucket_id).await?;
            let cur = b.perm_of(&req.access_key_id);
            let p = req.permissions;
            let new = if *action == "allow" {
                BucketPerm {
                    read: cur.read || p.read,
                    write: cur.write || p.write,
                    owner: cur.owner || p.owner,
                }
            } else {
                BucketPerm {
                    read: cur.read && !p.read,
                    write: cur.write && !p.write,
                    owner: cur.owner && !p.owner,
                }
            };
            let b = m
                .set_permission(&b.id, &req.access_key_id, new)
                .await
                .map_err(e)?;
            Ok(json(
                StatusCode::OK,
                &bucket_info(state, &b).await.map_err(e)?,
            ))
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route for {method} {path}"),
        )),
    }
}

fn quota_spec(q: api::Quotas) -> QuotaSpec {
    QuotaSpec {
        max_size: q.max_size,
        max_objects: q.max_objects,
    }
}

async fn find_key(state: &AdminState, id: &str) -> Result<Key, Reply> {
    state
        .model
        .key(id)
        .await
        .map_err(|e| from_error(&e))?
        .ok_or_else(|| from_error(&Error::NoSuchAccessKey(id.to_string())))
}

/// A bucket by id, or by name when `id` is not a known id.
async fn find_bucket(state: &AdminState, id: &str) -> Result<Bucket, Reply> {
    let m = &state.model;
    if let Some(uuid) = Uuid::from_hex(id)
        && let Some(b) = m.bucket_by_id(&uuid).await.map_err(|e| from_error(&e))?
    {
        return Ok(b);
    }
    m.bucket_by_name(id)
        .await
        .map_err(|e| from_error(&e))?
        .ok_or_else(|| from_error(&Error::NoSuchBucket(id.to_string())))
}

async fn key_info(state: &AdminState, key: &Key, show_secret: bool) -> crate::Result<api::KeyInfo> {
    let mut buckets = Vec::new();
    for (id, perm) in key.authorized_buckets.iter() {
        if perm.is_none() {
            continue;
        }
        let name = state.model.bucket_by_id(id).await?.map(|b| b.name.v);
        if name.is_some() {
            buckets.push(api::KeyBucketPermission {
                bucket_id: id.to_hex(),
                bucket_name: name,
                permissions: (*perm).into(),
            });
        }
    }
    Ok(api::KeyInfo {
        access_key_id: key.key_id.clone(),
        name: key.name.v.clone(),
        secret_access_key: show_secret.then(|| key.secret.clone()),
        allow_create_bucket: key.allow_create_bucket.v,
        buckets,
    })
}

async fn bucket_info(state: &AdminState, b: &Bucket) -> crate::Result<api::BucketInfo> {
    let mut keys = Vec::new();
    for (key_id, perm) in b.authorized_keys.iter() {
        if perm.is_none() {
            continue;
        }
        if let Some(k) = state.model.key(key_id).await? {
            keys.push(api::BucketKeyPermission {
                access_key_id: key_id.clone(),
                name: k.name.v,
                permissions: (*perm).into(),
            });
        }
    }
    let c = state.model.counts(&b.id).await?;
    Ok(api::BucketInfo {
        id: b.id.to_hex(),
        name: b.name.v.clone(),
        created: rfc3339(b.created),
        quotas: api::Quotas {
            max_size: b.quotas.v.max_size,
            max_objects: b.quotas.v.max_objects,
        },
        owner_tag: b.owner_tag.v.clone(),
        keys,
        objects: u64::try_from(c.objects).unwrap_or(0),
        bytes: u64::try_from(c.bytes).unwrap_or(0),
        unfinished_uploads: u64::try_from(c.uploads).unwrap_or(0),
    })
}
