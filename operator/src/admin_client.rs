//! Typed client for storaged's admin API.
//!
//! Every request and response body is a type of the `storaged-api` crate, so that the
//! daemon and the operator cannot disagree on a field. The HTTP transport is a boxed tower
//! service: hyper in production, an in-process fake daemon in tests.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde::de::DeserializeOwned;
use storaged_api::{
    ApplyLayoutResponse, BucketInfo, ClusterHealth, ClusterStatus, CreateBucketRequest,
    CreateKeyRequest, ErrorResponse, ImportKeyRequest, KeyInfo, KeySummary, LayoutInfo,
    LayoutVersionRequest, PermissionRequest, StageLayoutRequest, UpdateBucketRequest,
    UpdateKeyRequest, paths,
};
use tower::{Service, ServiceExt, util::BoxCloneSyncService};

/// Boxed error of a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP transport: a request with a full body in, a response with a collected body out.
pub type Transport = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

/// How long one admin call may take before the reconcile gives up and requeues.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The daemon could not be reached (DNS, connection, timeout).
    #[error("transport: {0}")]
    Transport(String),
    /// The daemon answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// storaged's error code, e.g. `NoSuchBucket`.
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// The answer was not the JSON the contract promises.
    #[error("decoding {path}: {source}")]
    Decode {
        /// Route that answered.
        path: String,
        /// Parse error.
        source: serde_json::Error,
    },
    /// The request could not be built (bad endpoint).
    #[error("bad request: {0}")]
    Request(String),
}

impl AdminError {
    /// HTTP status of an API error.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the resource does not exist (404).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the daemon does not implement the route yet (501).
    #[must_use]
    pub fn is_not_implemented(&self) -> bool {
        self.status() == Some(501)
    }
}

/// A client for one cluster's admin endpoint.
#[derive(Clone)]
pub struct AdminClient {
    endpoint: String,
    token: String,
    transport: Transport,
    timeout: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("AdminClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The production transport: a pooled hyper HTTP/1 client with a per-call timeout.
#[must_use]
pub fn http_transport() -> Transport {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http::<Full<Bytes>>();
    let svc = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let resp = client.request(req).await.map_err(BoxError::from)?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(BoxError::from)?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(parts, bytes))
        }
    });
    BoxCloneSyncService::new(svc)
}

impl AdminClient {
    /// A client for `endpoint` (e.g. `http://c-peers.ns.svc.cluster.local:3903`).
    #[must_use]
    pub fn new(
        endpoint: impl Into<String>,
        token: impl Into<String>,
        transport: Transport,
    ) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            transport,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The endpoint this client talks to.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let bytes = self.call_raw(method, path, body).await?;
        // An empty 2xx body stands for `null` (e.g. DELETE answering 204).
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|source| AdminError::Decode {
            path: path.to_owned(),
            source,
        })
    }

    async fn call_raw<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Bytes, AdminError> {
        let payload = match body {
            Some(b) => {
                Bytes::from(serde_json::to_vec(b).map_err(|e| AdminError::Request(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.endpoint, path))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| AdminError::Request(e.to_string()))?;
        let mut svc = self.transport.clone();
        let fut = async {
            let svc = svc
                .ready()
                .await
                .map_err(|e| AdminError::Transport(e.to_string()))?;
            svc.call(req)
                .await
                .map_err(|e| AdminError::Transport(e.to_string()))
        };
        let resp = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| AdminError::Transport(format!("timed out after {:?}", self.timeout)))??;
        let status = resp.status();
        let body = resp.into_body();
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status, &body))
    }

    /// `GET /v1/status`: the nodes and the layout version.
    pub async fn status(&self) -> Result<ClusterStatus, AdminError> {
        self.call::<(), _>(Method::GET, paths::STATUS, None).await
    }

    /// `GET /v1/health`: replication health, including partitions not fully replicated.
    pub async fn health(&self) -> Result<ClusterHealth, AdminError> {
        self.call::<(), _>(Method::GET, paths::HEALTH_V1, None)
            .await
    }

    /// `GET /v1/layout`.
    pub async fn layout(&self) -> Result<LayoutInfo, AdminError> {
        self.call::<(), _>(Method::GET, paths::LAYOUT, None).await
    }

    /// `POST /v1/layout/stage`.
    pub async fn stage_layout(&self, req: &StageLayoutRequest) -> Result<LayoutInfo, AdminError> {
        self.call(Method::POST, paths::LAYOUT_STAGE, Some(req))
            .await
    }

    /// `POST /v1/layout/apply` with the expected next version.
    pub async fn apply_layout(&self, version: u64) -> Result<ApplyLayoutResponse, AdminError> {
        self.call(
            Method::POST,
            paths::LAYOUT_APPLY,
            Some(&LayoutVersionRequest { version }),
        )
        .await
    }

    /// `POST /v1/layout/revert` of the staged changes on top of `version`.
    pub async fn revert_layout(&self, version: u64) -> Result<LayoutInfo, AdminError> {
        self.call(
            Method::POST,
            paths::LAYOUT_REVERT,
            Some(&LayoutVersionRequest { version }),
        )
        .await
    }

    /// `GET /v1/keys?name=`: keys with that friendly name.
    pub async fn keys_by_name(&self, name: &str) -> Result<Vec<KeySummary>, AdminError> {
        let path = format!("{}?name={}", paths::KEYS, encode_query(name));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// `GET /v1/keys/{id}`, with the secret when `show_secret`; `None` when absent.
    pub async fn key(&self, id: &str, show_secret: bool) -> Result<Option<KeyInfo>, AdminError> {
        let mut path = paths::key(&encode_query(id));
        if show_secret {
            path.push_str("?show_secret=true");
        }
        not_found_as_none(self.call::<(), _>(Method::GET, &path, None).await)
    }

    /// `POST /v1/keys`: a new key, with its secret.
    pub async fn create_key(&self, req: &CreateKeyRequest) -> Result<KeyInfo, AdminError> {
        self.call(Method::POST, paths::KEYS, Some(req)).await
    }

    /// `POST /v1/keys/import`: recreate a key whose id and secret are known.
    pub async fn import_key(&self, req: &ImportKeyRequest) -> Result<KeyInfo, AdminError> {
        self.call(Method::POST, paths::KEYS_IMPORT, Some(req)).await
    }

    /// `POST /v1/keys/{id}`: rename or change the bucket-creation right.
    pub async fn update_key(
        &self,
        id: &str,
        req: &UpdateKeyRequest,
    ) -> Result<KeyInfo, AdminError> {
        self.call(Method::POST, &paths::key(&encode_query(id)), Some(req))
            .await
    }

    /// `DELETE /v1/keys/{id}`; absent keys count as deleted.
    pub async fn delete_key(&self, id: &str) -> Result<(), AdminError> {
        let path = paths::key(&encode_query(id));
        match self.call_raw::<()>(Method::DELETE, &path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/buckets?name=`: the bucket with that global name, `None` when absent (the
    /// daemon answers one `BucketInfo`, or 404 `NoSuchBucket`).
    pub async fn bucket_by_name(&self, name: &str) -> Result<Option<BucketInfo>, AdminError> {
        let path = format!("{}?name={}", paths::BUCKETS, encode_query(name));
        not_found_as_none(self.call::<(), _>(Method::GET, &path, None).await)
    }

    /// `GET /v1/buckets/{id}`; `None` when absent.
    pub async fn bucket(&self, id: &str) -> Result<Option<BucketInfo>, AdminError> {
        let path = paths::bucket(&encode_query(id));
        not_found_as_none(self.call::<(), _>(Method::GET, &path, None).await)
    }

    /// `POST /v1/buckets`.
    pub async fn create_bucket(&self, req: &CreateBucketRequest) -> Result<BucketInfo, AdminError> {
        self.call(Method::POST, paths::BUCKETS, Some(req)).await
    }

    /// `POST /v1/buckets/{id}`: quotas, owner tag.
    pub async fn update_bucket(
        &self,
        id: &str,
        req: &UpdateBucketRequest,
    ) -> Result<BucketInfo, AdminError> {
        self.call(Method::POST, &paths::bucket(&encode_query(id)), Some(req))
            .await
    }

    /// `DELETE /v1/buckets/{id}` (`?force=true` also deletes its objects); absent buckets
    /// count as deleted.
    pub async fn delete_bucket(&self, id: &str, force: bool) -> Result<(), AdminError> {
        let mut path = paths::bucket(&encode_query(id));
        if force {
            path.push_str("?force=true");
        }
        match self.call_raw::<()>(Method::DELETE, &path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/permissions/allow`.
    pub async fn allow(&self, req: &PermissionRequest) -> Result<(), AdminError> {
        self.call_raw(Method::POST, paths::PERMISSIONS_ALLOW, Some(req))
            .await
            .map(drop)
    }

    /// `POST /v1/permissions/deny`.
    pub async fn deny(&self, req: &PermissionRequest) -> Result<(), AdminError> {
        self.call_raw(Method::POST, paths::PERMISSIONS_DENY, Some(req))
            .await
            .map(drop)
    }
}

fn not_found_as_none<T>(r: Result<T, AdminError>) -> Result<Option<T>, AdminError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> AdminError {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(ErrorResponse { code, message }) => AdminError::Api {
            status: status.as_u16(),
            code,
            message,
        },
        Err(_) => AdminError::Api {
            status: status.as_u16(),
            code: status.canonical_reason().unwrap_or("Unknown").to_owned(),
            // Bounded: a proxy's HTML error page must not flood logs and conditions.
            message: String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
        },
    }
}

/// Percent-encodes a query or path value (names are user input).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(status: u16, body: &'static str) -> Transport {
        BoxCloneSyncService::new(tower::service_fn(
            move |req: Request<Full<Bytes>>| async move {
                assert_eq!(
                    req.headers()
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                    Some(&b"Bearer tok"[..])
                );
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(status)
                        .body(Bytes::from_static(body.as_bytes()))
                        .expect("response"),
                )
            },
        ))
    }

    #[tokio::test]
    async fn api_errors_keep_code_and_status() {
        let c = AdminClient::new(
            "http://x:3903/",
            "tok",
            fixed(
                501,
                r#"{"code":"NotImplemented","message":"layout not yet"}"#,
            ),
        );
        let err = c.layout().await.expect_err("501");
        assert!(err.is_not_implemented(), "{err}");
        assert!(err.to_string().contains("NotImplemented"));
    }

    #[tokio::test]
    async fn missing_bucket_is_none() {
        let c = AdminClient::new(
            "http://x:3903",
            "tok",
            fixed(404, r#"{"code":"NoSuchBucket","message":"no"}"#),
        );
        assert_eq!(c.bucket("abc").await.expect("ok"), None);
        c.delete_bucket("abc", false)
            .await
            .expect("absent is deleted");
    }

    #[tokio::test]
    async fn non_json_errors_are_bounded() {
        let c = AdminClient::new(
            "http://x:3903",
            "tok",
            fixed(502, "<html>bad gateway</html>"),
        );
        let err = c.health().await.expect_err("502");
        assert_eq!(err.status(), Some(502));
    }

    #[test]
    fn debug_hides_token() {
        let c = AdminClient::new("http://x:3903", "s3cr3t", fixed(200, "{}"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("ns/name a"), "ns%2Fname%20a");
    }
}
