//! A lean S3 client: hyper's pooled HTTP/1.1 client and the AWS SigV4 signer, nothing else,
//! so that on two shared cores the client costs less than the server it measures.
//!
//! Bodies are sent with `x-amz-content-sha256: UNSIGNED-PAYLOAD` (as s5cmd and the AWS SDKs do
//! over TLS), so hashing the payload is not part of the measurement.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Where and as whom to send requests.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region the server expects in signatures.
    pub region: String,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The server answered with an error status.
    #[error("{status}: {body}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The start of the error body (S3 XML).
        body: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("transport: {0}")]
    Transport(String),
    /// The request could not be signed (bad credentials or URL).
    #[error("signing: {0}")]
    Sign(String),
}

/// A cheap-to-clone client (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct S3Client {
    http: Client<HttpConnector, Full<Bytes>>,
    target: Target,
    identity: Identity,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    /// Keys on the page.
    pub keys: usize,
    /// Token of the next page, if the listing is truncated.
    pub next: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteResult {
    #[serde(default)]
    deleted: Vec<serde::de::IgnoredAny>,
    #[serde(default, rename = "Error")]
    errors: Vec<DeleteError>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteError {
    #[serde(default)]
    key: String,
    #[serde(default)]
    code: String,
}

/// Escapes the five XML special characters of a key for a request body.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    common_prefixes: Vec<serde::de::IgnoredAny>,
    next_continuation_token: Option<String>,
}

/// Characters of a key that stay as they are in a URL path (RFC 3986 unreserved and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query-string value: every byte but the RFC 3986 unreserved ones percent-encoded.
fn query_encode(v: &str) -> String {
    encode_key(v).replace('/', "%2F")
}

impl S3Client {
    /// A client for `target` keeping up to `pool` idle connections per host.
    #[must_use]
    pub fn new(target: Target, pool: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let identity = Credentials::new(
            &target.access_key,
            &target.secret_key,
            None,
            None,
            "s3bench",
        )
        .into();
        Self {
            http,
            target,
            identity,
        }
    }

    /// Sends a signed request; returns the status and the whole body.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), S3Error> {
        self.send_with(method, path_and_query, body, &[]).await
    }

    /// [`Self::send`] with extra (signed) headers.
    async fn send_with(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        extra: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), S3Error> {
        let url = format!("{}{path_and_query}", self.target.endpoint);
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.target.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into();
        let len = body.len().to_string();
        let mut headers = vec![
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("content-length", len.as_str()),
        ];
        headers.extend_from_slice(extra);
        let signable = SignableRequest::new(
            method.as_str(),
            &url,
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| S3Error::Sign(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into_parts();
        let mut req = Request::builder().method(method).uri(&url);
        for &(name, value) in &headers {
            req = req.header(name, value);
        }
        let mut req = req
            .body(Full::new(body))
            .map_err(|e| S3Error::Sign(e.to_string()))?;
        instructions.apply_to_request_http1x(&mut req);
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| S3Error::Transport(format!("{e:?}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| S3Error::Transport(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            Ok((status, bytes))
        } else {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            Err(S3Error::Status { status, body: text })
        }
    }

    /// CreateBucket (an existing bucket of ours is fine).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        match self
            .send(Method::PUT, &format!("/{bucket}"), Bytes::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(S3Error::Status { body, .. }) if body.contains("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// PutObject.
    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), S3Error> {
        let path = format!("/{bucket}/{}", encode_key(key));
        self.send(Method::PUT, &path, body).await.map(|_| ())
    }

    /// GetObject; returns the body's length.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<usize, S3Error> {
        let path = format!("/{bucket}/{}", encode_key(key));
        Ok(self.send(Method::GET, &path, Bytes::new()).await?.1.len())
    }

    /// HeadObject.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        let path = format!("/{bucket}/{}", encode_key(key));
        self.send(Method::HEAD, &path, Bytes::new())
            .await
            .map(|_| ())
    }

    /// DeleteObject.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        let path = format!("/{bucket}/{}", encode_key(key));
        self.send(Method::DELETE, &path, Bytes::new())
            .await
            .map(|_| ())
    }

    /// One page of ListObjectsV2 under `prefix`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        self.list_delimited(bucket, prefix, None, token).await
    }

    /// DeleteObjects (quiet) of `keys` in one request; returns how many the server reported
    /// deleted or failed: a quiet answer lists only failures, which are an error here.
    pub async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<usize, S3Error> {
        use base64::Engine as _;
        use md5::Digest as _;
        let mut xml = String::from("<Delete><Quiet>true</Quiet>");
        for k in keys {
            xml.push_str("<Object><Key>");
            xml.push_str(&xml_escape(k));
            xml.push_str("</Key></Object>");
        }
        xml.push_str("</Delete>");
        // S3 requires an integrity header on DeleteObjects; Content-MD5 is the one every
        // implementation accepts.
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&xml));
        let (_, body) = self
            .send_with(
                Method::POST,
                &format!("/{bucket}?delete="),
                Bytes::from(xml),
                &[("content-md5", md5.as_str())],
            )
            .await?;
        let text = std::str::from_utf8(&body).map_err(|e| S3Error::Transport(e.to_string()))?;
        let result: DeleteResult =
            quick_xml::de::from_str(text).map_err(|e| S3Error::Transport(e.to_string()))?;
        if let Some(e) = result.errors.first() {
            return Err(S3Error::Transport(format!(
                "{} of {} keys not deleted (first: {} {})",
                result.errors.len(),
                keys.len(),
                e.key,
                e.code
            )));
        }
        Ok(keys.len().max(result.deleted.len()))
    }

    /// A presigned GET URL of `key`, valid for `expires` (for plain HTTP load tools).
    pub fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires: Duration,
    ) -> Result<String, S3Error> {
        use aws_sigv4::http_request::SignatureLocation;
        let url = format!("{}/{bucket}/{}", self.target.endpoint, encode_key(key));
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.target.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            "GET",
            &url,
            std::iter::empty(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| S3Error::Sign(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into_parts();
        let mut out = url;
        for (i, (name, value)) in instructions.params().iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&query_encode(value));
        }
        Ok(out)
    }

    /// One page of ListObjectsV2 under `prefix`, grouped by `delimiter` when given.
    pub async fn list_delimited(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        let mut query = format!("list-type=2&max-keys=1000&prefix={}", query_encode(prefix));
        if let Some(d) = delimiter {
            query.push_str("&delimiter=");
            query.push_str(&query_encode(d));
        }
        if let Some(t) = token {
            query.push_str("&continuation-token=");
            query.push_str(&query_encode(t));
        }
        let (_, body) = self
            .send(Method::GET, &format!("/{bucket}?{query}"), Bytes::new())
            .await?;
        let text = std::str::from_utf8(&body).map_err(|e| S3Error::Transport(e.to_string()))?;
        let page: ListBucketResult =
            quick_xml::de::from_str(text).map_err(|e| S3Error::Transport(e.to_string()))?;
        Ok(ListPage {
            keys: page.contents.len() + page.common_prefixes.len(),
            next: page.next_continuation_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{encode_key, query_encode, xml_escape};

    #[test]
    fn keys_are_path_encoded() {
        assert_eq!(encode_key("a/b c+d"), "a/b%20c%2Bd");
        assert_eq!(encode_key("é"), "%C3%A9");
        assert_eq!(query_encode("a/b="), "a%2Fb%3D");
        assert_eq!(xml_escape("a<&>'\""), "a&lt;&amp;&gt;&apos;&quot;");
    }
}
