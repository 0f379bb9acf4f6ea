//! Entry points of the fuzz targets (`fuzz/`) and of the corpus replay test
//! (`tests/fuzz_corpus.rs`): not part of the daemon's API.
//!
//! Each function feeds arbitrary bytes to our code the way a client, a peer or an operator
//! would, and panics only on a finding: a panic inside our code, a hang, a 500, or a decoded
//! value that does not survive re-encoding or merges differently in another order. They
//! live in the library so that `cargo test` replays the committed corpus through exactly
//! the code the fuzzer ran.

#![allow(clippy::missing_panics_doc)] // panicking on a finding is the point of this module

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::AsyncWriteExt as _;

use crate::config::Config;
use crate::layout::manager::{LayoutReq, LayoutRpc};
use crate::layout::{ClusterLayout, LayoutChange, NodeRole};
use crate::model::{
    BlockRefTable, BucketAliasTable, BucketTable, KeyTable, MpuTable, ObjectTable, QuotaSpec,
    VersionTable,
};
use crate::rpc::{Service, wire};
use crate::table::sync_rpc::{TableReq, TableResp, TableRpc};
use crate::table::{Entry as _, PartitionKey as _, SortKey as _, TableSchema};
use crate::util::crdt::Crdt;
use crate::util::encode;
use crate::util::id::Id32;

/// Access key id of the key the S3 harness signs with.
pub const FUZZ_KEY_ID: &str = "GK0123456789abcdef01234567";
/// Its secret.
pub const FUZZ_SECRET: &str = "f00df00df00df00df00df00df00df00df00df00df00df00df00df00df00df00d";
/// A bucket the key owns.
pub const FUZZ_BUCKET: &str = "fuzz-bucket";
/// `Host` of path-style requests; `<bucket>.s3.fuzz.test` is virtual-hosted style.
pub const FUZZ_HOST: &str = "s3.fuzz.test";
/// Region the harness signs for (the default one).
const REGION: &str = "us-east-1";
/// How long one input may take before the harness calls it a hang.
const DEADLINE: Duration = Duration::from_secs(20);

// --------------------------------------------------------------------------------------------
// S3 over HTTP, in process
// --------------------------------------------------------------------------------------------

/// A single-node storaged (model, QUIC endpoint, layout) in a temporary directory whose S3
/// service answers raw HTTP/1.1 bytes through hyper, in process: no listener, no workers.
pub struct S3Harness {
    rt: tokio::runtime::Runtime,
    node: crate::server::Standalone,
    dir: PathBuf,
}

impl S3Harness {
    /// Starts the node in a fresh directory under the system's temporary directory (removed
    /// on drop), imports [`FUZZ_KEY_ID`] (allowed to create buckets) and creates
    /// [`FUZZ_BUCKET`].
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "storaged-fuzz-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let toml = format!(
            "metadata_dir = {meta:?}\ndata_dir = {data:?}\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:0\"\nrpc_secret = \"{secret}\"\n\
             [s3_api]\napi_bind_addr = \"127.0.0.1:0\"\nroot_domain = \".{FUZZ_HOST}\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:0\"\n",
            meta = dir.join("meta").display().to_string(),
            data = dir.join("data").display().to_string(),
            secret = "ab".repeat(32),
        );
        let config = Config::from_toml_and_env(&toml, []).expect("harness config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let node = rt.block_on(async {
            let node = crate::server::Standalone::start(&config)
                .await
                .expect("single node");
            let model = &node.model;
            model
                .import_key(FUZZ_KEY_ID, FUZZ_SECRET, "fuzz")
                .await
                .expect("import the fuzz key");
            let mut key = model.key(FUZZ_KEY_ID).await.ok().flatten().expect("key");
            key.allow_create_bucket.update(true);
            model.keys.insert(&key).await.expect("key update");
            model
                .create_bucket(FUZZ_BUCKET, Some(FUZZ_KEY_ID), QuotaSpec::default(), None)
                .await
                .expect("create the fuzz bucket");
            node
        });
        Self { rt, node, dir }
    }

    /// Feeds one input: a flags byte, then raw HTTP/1.1 bytes (one or more requests) read
    /// by hyper as from a client's connection. Returns how many requests got a 2xx.
    ///
    /// Flags bit 0: each request is SigV4-signed with [`FUZZ_SECRET`] before the S3 service
    /// sees it (any `Authorization` is replaced), so that the fuzzer gets past authentication.
    ///
    /// Asserts that the service neither panics nor hangs, never answers 500, streams every
    /// response body to its end, and gives every error an S3 XML error body.
    pub fn request(&self, data: &[u8]) -> usize {
        let Some((&flags, raw)) = data.split_first() else {
            return 0;
        };
        let ok = AtomicUsize::new(0);
        self.rt.block_on(async {
            let (client, server) = tokio::io::duplex(1 << 16);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            // Half-close: the input's end is not a client leaving before its answer.
            let conn = (hyper::server::conn::http1::Builder::new().half_close(true))
                .serve_connection(
                    hyper_util::rt::TokioIo::new(server),
                    hyper::service::service_fn(|req| self.answer(req, flags & 1 == 1, &ok)),
                );
            let client = async {
                let _ = to_server.write_all(raw).await;
                let _ = to_server.shutdown().await;
                let _ = tokio::io::copy(&mut from_server, &mut tokio::io::sink()).await;
            };
            // A connection error (a malformed request) is hyper's answer, not a finding.
            let (_, ()) = tokio::time::timeout(DEADLINE, futures::future::join(conn, client))
                .await
                .unwrap_or_else(|_| panic!("no answer within {DEADLINE:?}"));
        });
        ok.into_inner()
    }

    async fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        sign_it: bool,
        ok: &AtomicUsize,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await else {
            // The input ended inside the body: no client is left to answer.
            return Ok(hyper::Response::new(Full::default()));
        };
        let mut req = http::Request::from_parts(parts, body.to_bytes());
        if sign_it {
            sign(&mut req);
        }
        let what = format!("{} {}", req.method(), req.uri());
        let head = req.method() == http::Method::HEAD;
        let streaming = (req.headers().get("x-amz-content-sha256"))
            .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
        let resp = (self.node.s3.call(req.map(s3s::Body::from)).await)
            .unwrap_or_else(|e| panic!("{what}: the S3 service failed (a 500): {e:?}"));
        let status = resp.status();
        let body = (resp.into_body().collect().await)
            .unwrap_or_else(|e| panic!("{what}: HTTP {status}, the body broke off: {e}"))
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        // s3s 0.14 reads the XML body of an operation itself and calls any error of its
        // aws-chunked decoder (a malformed chunk or trailer) an InternalError, without the
        // message ours always carry: a wrong status in the dependency, not a finding here.
        let s3s_chunked = streaming && !text.contains("<Message>");
        assert!(
            status != http::StatusCode::INTERNAL_SERVER_ERROR || s3s_chunked,
            "{what}: 500: {text:?}"
        );
        if status.is_success() {
            ok.fetch_add(1, Ordering::Relaxed);
        } else if !head && (status.is_client_error() || status.is_server_error()) {
            assert!(
                text.contains("<Error>") && text.contains("<Code>"),
                "{what}: HTTP {status} without an S3 error body: {text:?}"
            );
        }
        let mut out = hyper::Response::new(Full::new(body));
        *out.status_mut() = status;
        Ok(out)
    }
}

impl Default for S3Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for S3Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// AWS URI encoding: unreserved characters kept, `/` kept unless `slash`.
fn aws_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'~' | b'.' => {
                out.push(char::from(b));
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `aws_encode` of the decoded form, as the server canonicalises what it received.
fn canonical(s: &str, slash: bool) -> String {
    let s = s.replace('+', " ");
    let decoded = urlencoding::decode(&s).map_or(s.clone(), |d| d.into_owned());
    aws_encode(&decoded, slash)
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, msg.as_bytes()).as_ref().to_vec()
}

/// Signs `req` as a client would (SigV4 header auth over every header, now, with the fuzz
/// key); `x-amz-content-sha256` is the body's hash unless the input set it.
fn sign(req: &mut http::Request<Bytes>) {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let Ok(amz_date) = time::OffsetDateTime::now_utc().format(&fmt) else {
        return;
    };
    let date = amz_date.get(..8).unwrap_or_default().to_owned();
    let body_hash = hex_sha256(req.body());
    let h = req.headers_mut();
    h.remove(http::header::AUTHORIZATION);
    if !h.contains_key(http::header::HOST) {
        h.insert(
            http::header::HOST,
            http::HeaderValue::from_static(FUZZ_HOST),
        );
    }
    if let Ok(v) = http::HeaderValue::from_str(&amz_date) {
        h.insert("x-amz-date", v);
    }
    if !h.contains_key("x-amz-content-sha256")
        && let Ok(v) = http::HeaderValue::from_str(&body_hash)
    {
        h.insert("x-amz-content-sha256", v);
    }
    let mut names: Vec<&str> = h.keys().map(http::HeaderName::as_str).collect();
    names.sort_unstable();
    let mut headers = String::new();
    for n in &names {
        let values: Vec<String> = (h.get_all(*n).iter())
            .map(|v| {
                let v = String::from_utf8_lossy(v.as_bytes());
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        headers.push_str(&format!("{n}:{}\n", values.join(",")));
    }
    let signed = names.join(";");
    let payload = (h.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()))
        .unwrap_or(&body_hash)
        .to_owned();
    let mut query: Vec<(String, String)> = (req.uri().query().unwrap_or_default().split('&'))
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (canonical(k, true), canonical(v, true))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let request = format!(
        "{}\n{}\n{}\n{headers}\n{signed}\n{payload}",
        req.method(),
        canonical(req.uri().path(), false),
        query.join("&")
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(request.as_bytes())
    );
    let mut k = hmac(format!("AWS4{FUZZ_SECRET}").as_bytes(), &date);
    for part in [REGION, "s3", "aws4_request"] {
        k = hmac(&k, part);
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={FUZZ_KEY_ID}/{scope}, SignedHeaders={signed}, Signature={}",
        hex::encode(hmac(&k, &to_sign))
    );
    if let Ok(v) = http::HeaderValue::from_str(&auth) {
        req.headers_mut().insert(http::header::AUTHORIZATION, v);
    }
}

// --------------------------------------------------------------------------------------------
// RPC frames and messages, records
// --------------------------------------------------------------------------------------------

/// Decodes `bytes` as `T`; a decoded value must re-encode to bytes that decode to the same
/// encoding again.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let v: T = encode::decode(bytes).ok()?;
    let once = encode::encode(&v).expect("a decoded value encodes");
    let again: T = encode::decode(&once).expect("an encoded value decodes");
    let twice = encode::encode(&again).expect("encodes");
    assert!(once == twice, "re-encoding is not stable");
    Some(v)
}

/// The request of service `S`, if the payload names it.
fn request_of<S: Service>(name: &str, body: &[u8]) -> Option<S::Req> {
    (name == S::NAME)
        .then(|| round_trip::<S::Req>(body))
        .flatten()
}

/// The entries of a table request, decoded as a node decodes them before merging.
fn table_request<F: TableSchema>(name: &str, body: &[u8]) {
    if let Some(TableReq::Update(entries) | TableReq::Push(entries)) =
        request_of::<TableRpc<F>>(name, body)
    {
        for e in entries {
            entry::<F>(&e);
        }
    }
}

/// An RPC stream as a peer sends it: frames (length prefix + payload) one after the other,
/// each payload a request (service name + encoded message) decoded as its service's type,
/// and also tried as a response of every service. The whole input is also tried as one
/// payload, so that the fuzzer need not learn the length prefix first.
pub fn rpc(data: &[u8]) {
    let mut buf = data;
    while let Ok((payload, used)) = crate::net::frame::parse(buf) {
        rpc_payload(payload);
        buf = buf.get(used..).unwrap_or_default();
    }
    rpc_payload(data);
}

fn rpc_payload(payload: &[u8]) {
    if let Ok((name, body)) = wire::split_request(payload) {
        request_of::<crate::membership::MembershipRpc>(name, body);
        request_of::<crate::block::BlockRpc>(name, body);
        request_of::<crate::model::counters::CountersRpc>(name, body);
        if let Some(LayoutReq::Push(theirs)) = request_of::<LayoutRpc>(name, body) {
            use_layout(&theirs);
        }
        table_request::<ObjectTable>(name, body);
        table_request::<VersionTable>(name, body);
        table_request::<BlockRefTable>(name, body);
        table_request::<MpuTable>(name, body);
        table_request::<KeyTable>(name, body);
        table_request::<BucketTable>(name, body);
        table_request::<BucketAliasTable>(name, body);
    }
    let _ = wire::decode_response::<<crate::membership::MembershipRpc as Service>::Resp>(payload);
    let _ = wire::decode_response::<<LayoutRpc as Service>::Resp>(payload);
    let _ = wire::decode_response::<<crate::block::BlockRpc as Service>::Resp>(payload);
    let _ =
        wire::decode_response::<<crate::model::counters::CountersRpc as Service>::Resp>(payload);
    let _ = wire::decode_response::<TableResp>(payload);
}

/// A table entry as read back from redb or received from a peer; then the input split in
/// two (at the offset its first byte gives) as two entries: if they have the same key,
/// merging must be idempotent and commute, or replicas diverge.
fn entry<F: TableSchema>(data: &[u8]) {
    round_trip::<F::E>(data);
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = rest.split_at(usize::from(cut).min(rest.len()));
    let (Some(a), Some(b)) = (round_trip::<F::E>(a), round_trip::<F::E>(b)) else {
        return;
    };
    if a.partition_key().hash() != b.partition_key().hash()
        || a.sort_key().sort_key() != b.sort_key().sort_key()
    {
        return;
    }
    let merged = |x: &F::E, y: &F::E| {
        let mut m = x.clone();
        m.merge(y);
        m
    };
    assert_eq!(merged(&a, &a), a, "merge is not idempotent");
    assert_eq!(merged(&a, &b), merged(&b, &a), "merge does not commute");
}

/// Uses a layout a peer pushed as a node does: merged into its own (empty, or with a role
/// staged), asked for the nodes of partitions, previewed, applied and retired.
fn use_layout(theirs: &ClusterLayout) {
    let node = Id32::hash_of(b"fuzz node");
    let mut staged = ClusterLayout::new(3);
    let _ = staged.stage(LayoutChange::Role {
        node,
        role: Some(NodeRole::storage("dc1", 1 << 40)),
    });
    for mut ours in [ClusterLayout::new(1), staged] {
        ours.merge(theirs);
        for p in [0, 1, 255, 256, u16::MAX] {
            let _ = ours.write_sets(p);
            let _ = ours.read_nodes(p);
        }
        let _ = ours.current().partitions_of(&node);
        let _ = ours.preview();
        let v = ours.version();
        let _ = ours.apply(v + 1);
        let _ = ours.retire_up_to(v);
    }
}

/// A persisted or replicated record: a selector byte picks the type (each table's entry, or
/// the cluster layout), the rest is its encoding.
pub fn record(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => entry::<ObjectTable>(rest),
        1 => entry::<VersionTable>(rest),
        2 => entry::<BlockRefTable>(rest),
        3 => entry::<MpuTable>(rest),
        4 => entry::<KeyTable>(rest),
        5 => entry::<BucketTable>(rest),
        6 => entry::<BucketAliasTable>(rest),
        _ => {
            if let Some(l) = round_trip::<ClusterLayout>(rest) {
                use_layout(&l);
            }
        }
    }
}

// --------------------------------------------------------------------------------------------
// Config
// --------------------------------------------------------------------------------------------

/// `storaged.toml` text, then after a NUL byte `STORAGED_*` overrides as `NAME=value` lines.
/// A refused config must say why.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (toml, env) = text.split_once('\0').unwrap_or((&text, ""));
    // `*_file` keys read this machine's files: not what this target is about.
    if toml.contains("_file") || env.contains("_FILE") {
        return;
    }
    let env =
        (env.lines().filter_map(|l| l.split_once('='))).map(|(k, v)| (k.to_owned(), v.to_owned()));
    match Config::from_toml_and_env(toml, env) {
        Ok(c) => {
            let _ = c.rpc_secret_bytes();
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an empty config error"),
    }
}
