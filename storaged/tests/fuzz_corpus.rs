//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the entry points the
//! fuzz targets call (`storaged::fuzzing`), then runs each target on a few hundred inputs
//! proptest makes (random bytes, and corpus files with bytes changed or cut off), so that
//! CI catches a regression of anything the fuzzer once found without building `fuzz/`.
//!
//! `STORAGED_WRITE_SEEDS=1 cargo test -p storaged --test fuzz_corpus` (re)writes the
//! `seed-*` files from [`seeds`] first.

#![allow(clippy::unwrap_used)] // in tests a panic is the failure report

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use storaged::fuzzing::{self, FUZZ_BUCKET, FUZZ_HOST, FUZZ_KEY_ID, FUZZ_SECRET, S3Harness};

/// The corpus files of `target`, sorted by name, after (re)writing the seeds if asked to.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    if std::env::var_os("STORAGED_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds(target) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: {} files", dir.display(), files.len());
    files
}

/// Runs every corpus file of `target` through `run`, naming the file that fails.
fn replay(target: &str, run: impl Fn(&[u8])) -> Vec<Vec<u8>> {
    let files = corpus(target);
    for (name, data) in &files {
        let r = catch_unwind(AssertUnwindSafe(|| run(data)));
        assert!(
            r.is_ok(),
            "fuzz/corpus/{target}/{name} fails its fuzz target"
        );
    }
    files.into_iter().map(|(_, d)| d).collect()
}

/// Corpus files with a few bytes changed and sometimes cut off, or random bytes.
fn inputs(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edited = (
        proptest::sample::select(corpus),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        proptest::option::weighted(0.25, any::<prop::sample::Index>()),
    )
        .prop_map(|(mut v, edits, cut)| {
            if !v.is_empty() {
                for (at, byte) in edits {
                    let i = at.index(v.len());
                    v[i] = byte;
                }
                if let Some(cut) = cut {
                    v.truncate(cut.index(v.len()));
                }
            }
            v
        });
    prop_oneof![3 => edited, 1 => proptest::collection::vec(any::<u8>(), 0..512)]
}

fn drive(cases: u32, corpus: Vec<Vec<u8>>, run: impl Fn(&[u8])) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&inputs(corpus), |data| {
            run(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn rpc() {
    drive(512, replay("rpc", fuzzing::rpc), fuzzing::rpc);
}

#[test]
fn record() {
    drive(512, replay("record", fuzzing::record), fuzzing::record);
}

#[test]
fn config() {
    drive(512, replay("config", fuzzing::config), fuzzing::config);
}

#[test]
fn s3_http() {
    let harness = S3Harness::new();
    let corpus = replay("s3_http", |d| {
        harness.request(d);
    });
    // The signed seeds must get real answers, or the corpus only exercises the refusals.
    let ok: usize = corpus.iter().map(|d| harness.request(d)).sum();
    assert!(ok >= 30, "only {ok} corpus requests succeeded");
    drive(64, corpus, |d| {
        harness.request(d);
    });
}

// --------------------------------------------------------------------------------------------
// Seeds
// --------------------------------------------------------------------------------------------

fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "s3_http" => s3_seeds(),
        "rpc" => rpc_seeds(),
        "record" => record_seeds(),
        "config" => config_seeds(),
        _ => Vec::new(),
    }
}

/// One request: `head` with `\n` line ends, a `content-length` for `body`, then `body`.
fn req(head: &str, body: &str) -> String {
    format!("{head}content-length: {}\n\n", body.len()).replace('\n', "\r\n") + body
}

/// Signed inputs (flags byte 1) covering the S3 surface: bucket and object operations,
/// Range and conditional headers, XML bodies, aws-chunked and chunked transfer bodies,
/// multipart uploads, virtual-hosted style; several requests per input where one needs
/// another's object. Then unsigned ones (flags 0) for the SigV4 / SigV2 parsers themselves.
fn s3_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (b, h) = (FUZZ_BUCKET, FUZZ_HOST);
    let put = |key: &str, body: &str| req(&format!("PUT /{b}/{key} HTTP/1.1\nhost: {h}\n"), body);
    let get =
        |key: &str, extra: &str| req(&format!("GET /{b}/{key} HTTP/1.1\nhost: {h}\n{extra}"), "");
    let etag = "\"5d41402abc4b2a76b9719d911017c592\""; // md5("hello")
    let big = "0123456789abcdef".repeat(400);
    let signed: Vec<(&'static str, String)> = vec![
        ("list_buckets", req(&format!("GET / HTTP/1.1\nhost: {h}\n"), "")),
        ("bucket_lifecycle", [
            req(&format!("PUT /new-bucket HTTP/1.1\nhost: {h}\n"), "<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>"),
            req(&format!("HEAD /new-bucket HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("GET /new-bucket?location HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("GET /new-bucket?versioning HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("DELETE /new-bucket HTTP/1.1\nhost: {h}\n"), ""),
        ].concat()),
        ("put_get", [
            req(&format!("PUT /{b}/small HTTP/1.1\nhost: {h}\ncontent-type: text/plain\nx-amz-meta-a: b\ncontent-md5: XUFAKrxLKna5cZ2REBfFkg==\n"), "hello"),
            get("small", ""),
            req(&format!("HEAD /{b}/small HTTP/1.1\nhost: {h}\n"), ""),
            get("small?response-content-type=text%2Fhtml&response-cache-control=no-cache", ""),
        ].concat()),
        ("ranges", [
            put("big", &big),
            get("big", "range: bytes=1-3\n"),
            get("big", "range: bytes=-100\n"),
            get("big", "range: bytes=6000-\n"),
            get("big", "range: bytes=9999-10000\n"),
            get("big?partNumber=1", ""),
        ].concat()),
        ("conditionals", [
            put("cond", "hello"),
            get("cond", &format!("if-match: {etag}\n")),
            get("cond", &format!("if-none-match: {etag}\n")),
            get("cond", "if-modified-since: Sat, 01 Jan 2000 00:00:00 GMT\nif-unmodified-since: Fri, 01 Jan 2100 00:00:00 GMT\n"),
            req(&format!("PUT /{b}/cond HTTP/1.1\nhost: {h}\nif-none-match: *\n"), "again"),
        ].concat()),
        ("checksums", [
            req(&format!("PUT /{b}/crc HTTP/1.1\nhost: {h}\nx-amz-checksum-crc32: NhCmhg==\n"), "hello"),
            get("crc", "x-amz-checksum-mode: ENABLED\n"),
        ].concat()),
        ("aws_chunked", req(
            &format!("PUT /{b}/chunked HTTP/1.1\nhost: {h}\ncontent-encoding: aws-chunked\nx-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\nx-amz-decoded-content-length: 5\nx-amz-trailer: x-amz-checksum-crc32\n"),
            "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
        )),
        ("transfer_chunked", format!(
            "PUT /{b}/te HTTP/1.1\r\nhost: {h}\r\ntransfer-encoding: chunked\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )),
        ("delete", [
            put("d1", "x"),
            req(&format!("DELETE /{b}/d1 HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("POST /{b}?delete HTTP/1.1\nhost: {h}\ncontent-md5: S8DljGKWnbYw6VLAUbfvIA==\n"),
                "<Delete><Object><Key>small</Key></Object><Object><Key>nope</Key></Object></Delete>"),
        ].concat()),
        ("copy", [
            put("src", "hello"),
            req(&format!("PUT /{b}/copy HTTP/1.1\nhost: {h}\nx-amz-copy-source: /{b}/src\nx-amz-metadata-directive: REPLACE\n"), ""),
            req(&format!("PUT /{b}/copy2 HTTP/1.1\nhost: {h}\nx-amz-copy-source: {b}/src\nx-amz-copy-source-if-match: {etag}\n"), ""),
        ].concat()),
        ("list", [
            put("a/b", "x"),
            req(&format!("GET /{b}?prefix=a&delimiter=/&marker=a&max-keys=2 HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("GET /{b}?list-type=2&prefix=&delimiter=%2F&start-after=a&max-keys=1&fetch-owner=true HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("GET /{b}?list-type=2&continuation-token=c21hbGw%3D&encoding-type=url HTTP/1.1\nhost: {h}\n"), ""),
        ].concat()),
        ("multipart", [
            req(&format!("POST /{b}/mpu?uploads HTTP/1.1\nhost: {h}\nx-amz-checksum-algorithm: CRC32\n"), ""),
            req(&format!("PUT /{b}/mpu?partNumber=1&uploadId=00 HTTP/1.1\nhost: {h}\n"), "hello"),
            req(&format!("PUT /{b}/mpu?partNumber=2&uploadId=00 HTTP/1.1\nhost: {h}\nx-amz-copy-source: /{b}/src\nx-amz-copy-source-range: bytes=0-3\n"), ""),
            req(&format!("GET /{b}/mpu?uploadId=00&max-parts=1&part-number-marker=0 HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("GET /{b}?uploads&prefix=m&key-marker=a&upload-id-marker=b HTTP/1.1\nhost: {h}\n"), ""),
            req(&format!("POST /{b}/mpu?uploadId=00 HTTP/1.1\nhost: {h}\n"),
                &format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>")),
            req(&format!("DELETE /{b}/mpu?uploadId=00 HTTP/1.1\nhost: {h}\n"), ""),
        ].concat()),
        ("virtual_host", [
            req(&format!("PUT /vh HTTP/1.1\nhost: {b}.{h}:3900\n"), "hello"),
            req(&format!("GET /vh HTTP/1.1\nhost: {b}.{h}:3900\n"), ""),
        ].concat()),
    ];
    let auth = format!(
        "authorization: AWS4-HMAC-SHA256 Credential={FUZZ_KEY_ID}/20250101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}\nx-amz-date: 20250101T000000Z\nx-amz-content-sha256: UNSIGNED-PAYLOAD\n",
        "0".repeat(64)
    );
    let unsigned: Vec<(&'static str, String)> = vec![
        ("anonymous", get("small", "")),
        ("header_auth", get("small", &auth)),
        (
            "presigned",
            get(
                &format!(
                    "small?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={FUZZ_KEY_ID}%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
                ),
                "",
            ),
        ),
        (
            "sigv2",
            get(
                "small",
                &format!(
                    "date: Tue, 27 Mar 2007 19:36:42 +0000\nauthorization: AWS {FUZZ_KEY_ID}:bWq2s1WEIj+Ydj0vQ697zp+IXMU=\n"
                ),
            ),
        ),
    ];
    let flagged = |flag: u8, list: Vec<(&'static str, String)>| {
        list.into_iter()
            .map(move |(n, s)| (n, [&[flag][..], s.as_bytes()].concat()))
    };
    flagged(1, signed).chain(flagged(0, unsigned)).collect()
}

fn framed(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    storaged::net::frame::encode(&payload, &mut out).unwrap();
    out
}

fn sample_layout() -> storaged::layout::ClusterLayout {
    use storaged::layout::{ClusterLayout, LayoutChange, NodeRole};
    let mut l = ClusterLayout::new(1);
    l.stage(LayoutChange::Role {
        node: storaged::util::id::Id32::hash_of(b"seed node"),
        role: Some(NodeRole::storage("dc1", 1 << 30)),
    })
    .unwrap();
    l.apply(1).unwrap().0
}

fn rpc_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use storaged::block::{BlockReq, BlockRpc};
    use storaged::layout::manager::{LayoutReq, LayoutRpc};
    use storaged::model::counters::CountersRpc;
    use storaged::model::{
        BucketAliasTable, BucketTable, KeyTable, MpuTable, ObjectTable, VersionTable,
    };
    use storaged::rpc::wire::{encode_request, encode_response};
    use storaged::rpc::{RemoteError, Service};
    use storaged::table::sync_rpc::{TableReq, TableRpc};
    fn r<S: Service>(req: S::Req) -> Vec<u8> {
        framed(encode_request::<S>(&req).unwrap())
    }
    let h = storaged::util::id::Id32::hash_of(b"chunk");
    let key = storaged::model::Key::new(FUZZ_KEY_ID.into(), FUZZ_SECRET.into(), "k".into(), 1);
    let key = storaged::util::encode::encode(&key).unwrap();
    let layout_pull = r::<LayoutRpc>(LayoutReq::Pull);
    let block_get = r::<BlockRpc>(BlockReq::Get { hash: h });
    vec![
        (
            "two_frames",
            [layout_pull.clone(), block_get.clone()].concat(),
        ),
        ("layout_pull", layout_pull),
        ("layout_sync", r::<LayoutRpc>(LayoutReq::SyncStatus)),
        (
            "layout_push",
            r::<LayoutRpc>(LayoutReq::Push(Box::new(sample_layout()))),
        ),
        ("block_get", block_get),
        ("block_has", r::<BlockRpc>(BlockReq::Has { hash: h })),
        (
            "block_put",
            r::<BlockRpc>(BlockReq::Put {
                hash: h,
                data: bytes::Bytes::from_static(b"chunk"),
            }),
        ),
        ("counters", r::<CountersRpc>(h)),
        (
            "table_update",
            r::<TableRpc<KeyTable>>(TableReq::Update(vec![key.clone()])),
        ),
        (
            "table_push",
            r::<TableRpc<KeyTable>>(TableReq::Push(vec![key])),
        ),
        (
            "table_read",
            r::<TableRpc<ObjectTable>>(TableReq::ReadEntry {
                partition: h,
                sort: b"k".to_vec(),
            }),
        ),
        (
            "table_range",
            r::<TableRpc<VersionTable>>(TableReq::ReadRange {
                partition: h,
                start: Some(vec![1]),
                limit: 10,
            }),
        ),
        (
            "table_digest",
            r::<TableRpc<BucketTable>>(TableReq::PartitionDigest { partition: 7 }),
        ),
        (
            "table_sub",
            r::<TableRpc<MpuTable>>(TableReq::ReadSubRange {
                partition: 7,
                sub: 3,
                start: None,
            }),
        ),
        (
            "table_hashes",
            r::<TableRpc<BucketTable>>(TableReq::EntryHashes {
                keys: vec![vec![0, 1]],
            }),
        ),
        (
            "table_delete",
            r::<TableRpc<BucketAliasTable>>(TableReq::DeleteIfEqual {
                items: vec![(vec![0, 1], h)],
            }),
        ),
        ("resp_ok", framed(encode_response::<u64>(&Ok(7)).unwrap())),
        (
            "resp_err",
            framed(encode_response::<u64>(&Err(RemoteError::BadRequest("x".into()))).unwrap()),
        ),
    ]
}

fn record_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use storaged::model::{BlockRef, Bucket, BucketAlias, Key, MultipartUpload, Object, Version};
    use storaged::util::encode::encode;
    let id = storaged::util::id::Id32::hash_of(b"id");
    // [selector][record]; for a merge, [selector][length of the first][first][second].
    let one = |which: u8, rec: Vec<u8>| [vec![which], rec].concat();
    let two = |which: u8, a: Vec<u8>, b: Vec<u8>| {
        [vec![which, u8::try_from(a.len()).unwrap()], a, b].concat()
    };
    let key1 = Key::new(FUZZ_KEY_ID.into(), FUZZ_SECRET.into(), "a".into(), 1);
    let mut key2 = key1.clone();
    key2.name.update("b".into());
    let alias = BucketAlias {
        name: "b".into(),
        bucket_id: storaged::util::crdt::Lww::new(1, Some(id)),
    };
    vec![
        (
            "object",
            one(0, encode(&Object::new(id, "k".into(), Vec::new())).unwrap()),
        ),
        (
            "version_pair",
            two(
                1,
                encode(&Version::new(id)).unwrap(),
                encode(&Version::deleted(id)).unwrap(),
            ),
        ),
        (
            "block_ref_pair",
            two(
                2,
                encode(&BlockRef::new(id, id)).unwrap(),
                encode(&BlockRef::deleted(id, id)).unwrap(),
            ),
        ),
        (
            "mpu",
            one(
                3,
                encode(&MultipartUpload::new(id, 1, id, "k".into())).unwrap(),
            ),
        ),
        (
            "key_pair",
            two(4, encode(&key1).unwrap(), encode(&key2).unwrap()),
        ),
        (
            "bucket",
            one(5, encode(&Bucket::new(id, "b".into(), 1)).unwrap()),
        ),
        ("alias", one(6, encode(&alias).unwrap())),
        ("layout", one(7, encode(&sample_layout()).unwrap())),
    ]
}

fn config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let base = format!(
        "metadata_dir = \"/tmp/m\"\ndata_dir = \"/tmp/d\"\nrpc_secret = \"{}\"\n",
        "ab".repeat(32)
    );
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/storaged.toml"),
    )
    .unwrap();
    vec![
        ("minimal", base.clone()),
        ("example", example),
        ("sections", format!("{base}replication_factor = 3\nconsistency_mode = \"degraded\"\nbootstrap_peers = [\"a:3901\", \"b\"]\n[s3_api]\nroot_domain = \".s3\"\n[admin]\nadmin_token = \"t\"\n[background]\nping_interval_ms = 5\n[limits]\nmax_connections = 3\n")),
        ("env", format!("{base}\0STORAGED_REPLICATION_FACTOR=2\nSTORAGED_S3_API_S3_REGION=eu\nSTORAGED_BOOTSTRAP_PEERS=a:1,b:2\n")),
        ("bad_secret", "metadata_dir = \"/m\"\ndata_dir = \"/d\"\nrpc_secret = \"zz\"\n".to_owned()),
        ("bad_type", format!("{base}block_size = \"big\"\n")),
        ("unknown_key", format!("{base}nope = 1\n")),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.into_bytes()))
    .collect()
}
