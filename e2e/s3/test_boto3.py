"""boto3 against the real daemon: objects, presigned URLs, ranges, conditionals, listing,
checksums, metadata, multipart, copy and bucket operations, with AWS semantics."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import gzip
import hashlib
from urllib.parse import unquote_plus, urlsplit
from xml.etree import ElementTree

import pytest
import requests

from storaged_proc import boto3_client, empty_and_delete_bucket, unique_bucket_name
from .helpers import (
    amz_now,
    assert_s3_error,
    b64,
    crc32_b64,
    crc32c_b64,
    crc64nvme_b64,
    expect_client_error,
    key_path,
    md5_hex,
    multipart_etag,
    presign_url,
    random_bytes,
    sha1_b64,
    sha256_b64,
    signed_request,
)

MiB = 1 << 20


def capture_headers(client, event: str) -> list[dict[str, str]]:
    """Record the headers of every request `client` sends for `event` (e.g. 'PutObject')."""
    seen: list[dict[str, str]] = []

    def hook(request, **_kw):
        seen.append({k.lower(): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in request.headers.items()})

    client.meta.events.register(f"before-send.s3.{event}", hook)
    return seen


# --------------------------------------------------------------------------------------------
# Basic object round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * MiB + 7], ids=["empty", "1B", "4KiB", "3MiB+7"])
def test_put_get_head_delete_roundtrip(s3, bucket, size):
    body = random_bytes(size)
    key = f"dir/obj-{size}.bin"
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert put["ETag"] == f'"{md5_hex(body)}"', "single-part ETag must be the MD5 of the body"

    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]

    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    assert head["ETag"] == put["ETag"]
    assert isinstance(head["LastModified"], dt.datetime)
    age = abs((dt.datetime.now(dt.timezone.utc) - head["LastModified"]).total_seconds())
    assert age < 300, f"LastModified {head['LastModified']} is not now"

    s3.delete_object(Bucket=bucket, Key=key)
    expect_client_error(s3.get_object, 404, "NoSuchKey", Bucket=bucket, Key=key)
    expect_client_error(s3.head_object, 404, "404", Bucket=bucket, Key=key)
    # Deleting a missing key is a success in S3.
    s3.delete_object(Bucket=bucket, Key=key)


def test_overwrite_replaces_content(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first version")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second"
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("k", 6)]


def test_identical_content_under_many_keys(s3, bucket):
    """Deduplicated chunks must not tie objects together: deleting one keeps the others."""
    body = random_bytes(2 * MiB + 5)
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"dup{i}", Body=body)
    s3.delete_object(Bucket=bucket, Key="dup0")
    for i in (1, 2):
        assert s3.get_object(Bucket=bucket, Key=f"dup{i}")["Body"].read() == body


def test_list_buckets_shows_created_bucket(s3, bucket, dev_cfg):
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert bucket in names
    assert dev_cfg.bucket in names, "the dev bucket from dev.env must be listed for its key"


def test_dev_bucket_is_usable(s3, dev_cfg):
    key = f"dev-bucket-check-{unique_bucket_name()}"
    s3.put_object(Bucket=dev_cfg.bucket, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=dev_cfg.bucket, Key=key)["Body"].read() == b"hello"
    s3.delete_object(Bucket=dev_cfg.bucket, Key=key)


# --------------------------------------------------------------------------------------------
# Presigned URLs
# --------------------------------------------------------------------------------------------


def test_presigned_get_and_put(s3, bucket):
    body = random_bytes(10_000)
    s3.put_object(Bucket=bucket, Key="pre/get.bin", Body=body)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "pre/get.bin"}, ExpiresIn=300
    )
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == body

    put_url = s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": "pre/put ü.txt", "ContentType": "text/plain"},
        ExpiresIn=300,
    )
    payload = b"uploaded through a presigned URL"
    r = requests.put(put_url, data=payload, headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="pre/put ü.txt")
    assert got["Body"].read() == payload
    assert got["ContentType"] == "text/plain"
    assert r.headers.get("ETag") == f'"{md5_hex(payload)}"'


def test_empty_put_with_expect_closes_its_connection(s3, bucket):
    """An empty body with `Expect: 100-continue` is answered without `100 Continue` (there is
    no body to wait for); botocore then mis-parses the next response on that connection
    (boto/botocore#3010: aws-cli multipart uploads failed with KeyError 'ETag' right after
    syncing an empty file), so the server must not keep that connection."""
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "expect/empty"}, ExpiresIn=300
    )
    r = requests.put(url, data=b"", headers={"Expect": "100-continue"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers.get("Connection", "").lower() == "close", r.headers
    # A non-empty body keeps its connection (100 Continue, then the answer).
    r = requests.put(url, data=b"x", headers={"Expect": "100-continue"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers.get("Connection", "").lower() != "close", r.headers


def test_presigned_get_with_response_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ContentType="application/octet-stream")
    url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "o", "ResponseContentType": "text/csv",
                "ResponseContentDisposition": 'attachment; filename="o.csv"'},
        ExpiresIn=300,
    )
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/csv"
    assert r.headers["Content-Disposition"] == 'attachment; filename="o.csv"'


def test_presigned_expired_is_access_denied(s3, bucket, dev_cfg):
    s3.put_object(Bucket=bucket, Key="old", Body=b"x")
    # Signed an hour ago, valid for 60 s: expired for 59 minutes.
    url = presign_url(dev_cfg, "GET", key_path(bucket, "old"), expires=60, when=amz_now(-3600))
    assert_s3_error(requests.get(url, timeout=30), 403, "AccessDenied")
    # Control: the same construction, signed now, works.
    ok = presign_url(dev_cfg, "GET", key_path(bucket, "old"), expires=60)
    r = requests.get(ok, timeout=30)
    assert r.status_code == 200 and r.content == b"x", r.text


# --------------------------------------------------------------------------------------------
# Ranged and conditional GET
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 3 * MiB + 11], ids=["inline", "multi-chunk"])
def test_ranged_get(s3, bucket, size):
    body = random_bytes(size)
    s3.put_object(Bucket=bucket, Key="r", Body=body)

    def rng(spec: str):
        r = s3.get_object(Bucket=bucket, Key="r", Range=spec)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206, spec
        return r, r["Body"].read()

    r, data = rng("bytes=10-19")
    assert data == body[10:20]
    assert r["ContentRange"] == f"bytes 10-19/{size}"
    assert r["ContentLength"] == 10

    r, data = rng("bytes=-100")  # suffix
    assert data == body[-100:]
    assert r["ContentRange"] == f"bytes {size - 100}-{size - 1}/{size}"

    r, data = rng(f"bytes={size - 300}-")  # open-ended
    assert data == body[size - 300 :]

    r, data = rng(f"bytes={size - 5}-{size + 1000}")  # end past the object: clipped
    assert data == body[size - 5 :]
    assert r["ContentRange"] == f"bytes {size - 5}-{size - 1}/{size}"

    if size > MiB:  # a range across a chunk boundary
        r, data = rng(f"bytes={MiB - 7}-{2 * MiB + 3}")
        assert data == body[MiB - 7 : 2 * MiB + 4]

    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        exc = expect_client_error(s3.get_object, 416, "InvalidRange", Bucket=bucket, Key="r",
                                  Range=bad)
        assert exc is not None


def test_conditional_get(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    lm = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    before, after = lm - dt.timedelta(hours=1), lm + dt.timedelta(hours=1)

    def get(**kw):
        return s3.get_object(Bucket=bucket, Key="c", **kw)

    # If-None-Match
    expect_client_error(get, 304, "304", IfNoneMatch=etag)
    expect_client_error(get, 304, "304", IfNoneMatch="*")
    assert get(IfNoneMatch='"0123456789abcdef0123456789abcdef"')["Body"].read() == b"conditional"
    # If-Match
    expect_client_error(get, 412, "PreconditionFailed", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert get(IfMatch=etag)["Body"].read() == b"conditional"
    assert get(IfMatch="*")["Body"].read() == b"conditional"
    # If-Modified-Since / If-Unmodified-Since
    expect_client_error(get, 304, "304", IfModifiedSince=after)
    assert get(IfModifiedSince=before)["Body"].read() == b"conditional"
    expect_client_error(get, 412, "PreconditionFailed", IfUnmodifiedSince=before)
    assert get(IfUnmodifiedSince=after)["Body"].read() == b"conditional"
    # RFC 7232 / S3 precedence: If-Match true wins over If-Unmodified-Since false ...
    assert get(IfMatch=etag, IfUnmodifiedSince=before)["Body"].read() == b"conditional"
    # ... and If-None-Match false wins over If-Modified-Since true.
    expect_client_error(get, 304, "304", IfNoneMatch=etag, IfModifiedSince=before)
    # HEAD obeys the same rules.
    expect_client_error(s3.head_object, 304, "304", Bucket=bucket, Key="c", IfNoneMatch=etag)
    expect_client_error(s3.head_object, 412, "412", Bucket=bucket, Key="c",
                        IfMatch='"0123456789abcdef0123456789abcdef"')


def test_response_header_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"data", ContentType="application/octet-stream")
    exp = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    r = s3.get_object(
        Bucket=bucket,
        Key="o",
        ResponseContentType="text/x-override",
        ResponseContentLanguage="de-CH",
        ResponseContentDisposition='attachment; filename="over.txt"',
        ResponseCacheControl="no-store",
        ResponseContentEncoding="identity",
        ResponseExpires=exp,
    )
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert h["content-type"] == "text/x-override"
    assert h["content-language"] == "de-CH"
    assert h["content-disposition"] == 'attachment; filename="over.txt"'
    assert h["cache-control"] == "no-store"
    assert h["content-encoding"] == "identity"
    assert "2031" in h["expires"] and "Feb" in h["expires"], h["expires"]
    assert r["Body"].read() == b"data"


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def test_user_metadata_and_standard_headers_round_trip(s3, bucket):
    raw = b"hello " * 100
    body = gzip.compress(raw)
    expires = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    s3.put_object(
        Bucket=bucket,
        Key="meta",
        Body=body,
        Metadata={"Color": "blue", "owner-id": "42", "empty": ""},
        ContentType="application/x-test; charset=utf-8",
        ContentEncoding="gzip",
        ContentDisposition='attachment; filename="meta.txt.gz"',
        ContentLanguage="fr",
        CacheControl="max-age=60, public",
        Expires=expires,
    )
    for resp in (s3.head_object(Bucket=bucket, Key="meta"), s3.get_object(Bucket=bucket, Key="meta")):
        assert resp["Metadata"] == {"color": "blue", "owner-id": "42", "empty": ""}
        assert resp["ContentType"] == "application/x-test; charset=utf-8"
        assert resp["ContentEncoding"] == "gzip"
        assert resp["ContentDisposition"] == 'attachment; filename="meta.txt.gz"'
        assert resp["ContentLanguage"] == "fr"
        assert resp["CacheControl"] == "max-age=60, public"
        hdr = resp["ResponseMetadata"]["HTTPHeaders"]["expires"]
        assert hdr in ("Tue, 01 Jan 2030 12:00:00 GMT",), hdr
    got = s3.get_object(Bucket=bucket, Key="meta")["Body"].read()
    assert got == body, "content-encoding is metadata: the stored bytes come back untouched"


def test_default_content_type(s3, bucket):
    s3.put_object(Bucket=bucket, Key="noct", Body=b"x")
    ct = s3.head_object(Bucket=bucket, Key="noct")["ContentType"]
    assert ct in ("binary/octet-stream", "application/octet-stream"), ct


# --------------------------------------------------------------------------------------------
# DeleteObjects
# --------------------------------------------------------------------------------------------


def test_delete_objects(s3, bucket):
    keys = [f"d/{i}" for i in range(5)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    resp = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k} for k in keys[:3]] + [{"Key": "d/missing"}]},
    )
    assert sorted(d["Key"] for d in resp.get("Deleted", [])) == sorted(keys[:3] + ["d/missing"])
    assert not resp.get("Errors")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert left == keys[3:]


def test_delete_objects_quiet(s3, bucket):
    for k in ("q1", "q2"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    resp = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "q1"}, {"Key": "q2"}], "Quiet": True}
    )
    assert not resp.get("Deleted"), f"quiet mode must not list deleted keys: {resp.get('Deleted')}"
    assert not resp.get("Errors")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# --------------------------------------------------------------------------------------------
# ListObjectsV2 over 1,500 keys
# --------------------------------------------------------------------------------------------

SPECIAL_KEYS = [
    "special/with space.txt",
    "special/ünïcödé-€.txt",
    "special/日本語/ファイル",
    "special/plus+sign",
    "special/amp&and=eq?q",
    "special/percent%20literal",
    "special/tilde~and'quote",
    "root key with space",
    "root-ünïcödé",
]
N_KEYS = 1500


def regular_keys() -> list[str]:
    return [f"p{i % 3}/sub{i % 5}/k{i:05d}" for i in range(N_KEYS)]


@pytest.fixture(scope="module")
def listing_bucket(dev):
    client = boto3_client(dev.cfg)
    name = unique_bucket_name("listing")
    client.create_bucket(Bucket=name)
    keys = regular_keys() + SPECIAL_KEYS

    def put(k: str) -> None:
        client.put_object(Bucket=name, Key=k, Body=k.encode())

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))
    yield name, sorted(keys, key=lambda k: k.encode())
    empty_and_delete_bucket(client, name)


@pytest.mark.timeout(300)
def test_list_v2_pagination_default_page(s3, listing_bucket):
    name, all_keys = listing_bucket
    first = s3.list_objects_v2(Bucket=name)
    assert first["KeyCount"] == 1000 and len(first["Contents"]) == 1000
    assert first["IsTruncated"] is True
    token = first["NextContinuationToken"]
    second = s3.list_objects_v2(Bucket=name, ContinuationToken=token)
    assert second["IsTruncated"] is False
    assert "NextContinuationToken" not in second
    assert second["ContinuationToken"] == token
    got = [o["Key"] for o in first["Contents"] + second["Contents"]]
    assert got == all_keys, "every key exactly once, in UTF-8 binary order"


@pytest.mark.timeout(300)
def test_list_v2_pagination_max_keys(s3, listing_bucket):
    name, all_keys = listing_bucket
    got: list[str] = []
    token = None
    pages = 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=name, MaxKeys=123, **kw)
        pages += 1
        contents = page.get("Contents", [])
        assert len(contents) == page["KeyCount"] <= 123
        assert page["MaxKeys"] == 123
        got += [o["Key"] for o in contents]
        if not page["IsTruncated"]:
            break
        assert len(contents) == 123
        token = page["NextContinuationToken"]
        assert pages < 100, "pagination does not terminate"
    assert got == all_keys
    assert len(set(got)) == len(got)
    assert pages == -(-len(all_keys) // 123)


def test_list_v2_start_after_and_prefix(s3, listing_bucket):
    name, all_keys = listing_bucket
    start = "p1/sub2/k00500"
    expected = [k for k in all_keys if k.startswith("p1/") and k.encode() > start.encode()]
    got = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=name, Prefix="p1/", StartAfter=start, PaginationConfig={"PageSize": 77}
    ):
        got += [o["Key"] for o in page.get("Contents", [])]
    assert got == expected
    assert s3.list_objects_v2(Bucket=name, MaxKeys=0)["KeyCount"] == 0


def test_list_v2_delimiter_common_prefixes(s3, listing_bucket):
    name, all_keys = listing_bucket
    root = s3.list_objects_v2(Bucket=name, Delimiter="/")
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["p0/", "p1/", "p2/", "special/"]
    assert sorted(o["Key"] for o in root.get("Contents", [])) == sorted(
        ["root key with space", "root-ünïcödé"]
    )
    assert root["KeyCount"] == 6, "KeyCount counts keys and common prefixes"

    sub = s3.list_objects_v2(Bucket=name, Delimiter="/", Prefix="p1/")
    assert [p["Prefix"] for p in sub["CommonPrefixes"]] == [f"p1/sub{i}/" for i in range(5)]
    assert not sub.get("Contents")

    # Common prefixes count towards MaxKeys and paginate without repeating.
    seen = []
    token = None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=name, Delimiter="/", Prefix="p1/", MaxKeys=2, **kw)
        prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert len(prefixes) + len(page.get("Contents", [])) <= 2
        seen += prefixes
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == [f"p1/sub{i}/" for i in range(5)]


def test_list_v2_encoding_type_url_raw(dev_cfg, listing_bucket):
    """With encoding-type=url the keys in the XML are URL-encoded (decoded they round-trip)."""
    name, all_keys = listing_bucket
    r = signed_request(dev_cfg, "GET", f"/{name}",
                       "list-type=2&encoding-type=url&prefix=special/&max-keys=1000")
    assert r.status_code == 200, r.text
    root = ElementTree.fromstring(r.content)
    ns = {"s3": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    find = (lambda el, tag: el.findall(f"s3:{tag}", ns)) if ns else (lambda el, tag: el.findall(tag))
    assert find(root, "EncodingType")[0].text == "url"
    raw_keys = [c.find("s3:Key", ns).text if ns else c.find("Key").text for c in find(root, "Contents")]
    for k in raw_keys:
        assert " " not in k and all(ord(ch) < 128 for ch in k), f"key not URL-encoded: {k!r}"
    decoded = [unquote_plus(k) for k in raw_keys]
    assert decoded == [k for k in all_keys if k.startswith("special/")]
    assert unquote_plus(find(root, "Prefix")[0].text) == "special/"


def test_list_v2_special_keys_via_boto3(s3, listing_bucket):
    name, _ = listing_bucket
    got = [o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="special/")["Contents"]]
    assert got == sorted([k for k in SPECIAL_KEYS if k.startswith("special/")], key=str.encode)
    for k in SPECIAL_KEYS:
        assert s3.get_object(Bucket=name, Key=k)["Body"].read() == k.encode()


def test_list_objects_v1_marker_pagination(s3, listing_bucket):
    name, all_keys = listing_bucket
    got: list[str] = []
    marker = ""
    while True:
        page = s3.list_objects(Bucket=name, Marker=marker, MaxKeys=400)
        keys = [o["Key"] for o in page.get("Contents", [])]
        got += keys
        if not page["IsTruncated"]:
            break
        marker = page.get("NextMarker") or keys[-1]
    assert got == all_keys
    page = s3.list_objects(Bucket=name, Delimiter="/", MaxKeys=2)
    assert page["IsTruncated"] is True
    assert page["NextMarker"], "with a delimiter, a truncated V1 listing returns NextMarker"


# --------------------------------------------------------------------------------------------
# Flexible checksums
# --------------------------------------------------------------------------------------------


def test_default_crc32_checksum(dev_cfg, bucket):
    """boto3's default: PutObject carries a CRC32; the server stores and returns it."""
    s3 = boto3_client(dev_cfg)
    sent = capture_headers(s3, "PutObject")
    body = random_bytes(200_000)
    s3.put_object(Bucket=bucket, Key="crc", Body=body)
    assert sent, "hook did not run"
    h = sent[-1]
    assert "x-amz-checksum-crc32" in h or "crc32" in h.get("x-amz-trailer", ""), (
        f"boto3 no longer sends a default CRC32? headers: {h}"
    )
    head = s3.head_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == crc32_b64(body)
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got.get("ChecksumCRC32") == crc32_b64(body)
    assert got["Body"].read() == body  # botocore validates the CRC32 while reading


@pytest.mark.parametrize(
    "alg,fn,field",
    [
        ("CRC32", crc32_b64, "ChecksumCRC32"),
        ("CRC32C", crc32c_b64, "ChecksumCRC32C"),
        ("SHA1", sha1_b64, "ChecksumSHA1"),
        ("SHA256", sha256_b64, "ChecksumSHA256"),
        ("CRC64NVME", crc64nvme_b64, "ChecksumCRC64NVME"),
    ],
)
def test_explicit_checksum_algorithms(s3, bucket, alg, fn, field):
    body = random_bytes(1_500_000)
    put = s3.put_object(Bucket=bucket, Key=f"ck-{alg}", Body=body, ChecksumAlgorithm=alg)
    assert put.get(field) == fn(body), f"PutObject response lacks/mismatches {field}: {put}"
    head = s3.head_object(Bucket=bucket, Key=f"ck-{alg}", ChecksumMode="ENABLED")
    assert head.get(field) == fn(body)
    assert head.get("ChecksumType") == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key=f"ck-{alg}", ChecksumMode="ENABLED")
    assert got.get(field) == fn(body)
    assert got["Body"].read() == body


def test_put_with_explicit_checksum_value(s3, bucket):
    body = b"checksum supplied by the caller"
    put = s3.put_object(Bucket=bucket, Key="given", Body=body, ChecksumSHA256=sha256_b64(body))
    assert put.get("ChecksumSHA256") == sha256_b64(body)
    expect_client_error(
        s3.put_object, 400, ("BadDigest", "XAmzContentChecksumMismatch", "InvalidRequest"),
        Bucket=bucket, Key="given2", Body=body, ChecksumSHA256=sha256_b64(b"other"),
    )
    expect_client_error(s3.head_object, 404, "404", Bucket=bucket, Key="given2")


def test_multipart_composite_sha256_checksum(s3, bucket):
    parts = [random_bytes(5 * MiB), random_bytes(123_456)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mpc", ChecksumAlgorithm="SHA256")
    uid = up["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="mpc", UploadId=uid, PartNumber=i, Body=p,
                           ChecksumAlgorithm="SHA256")
        assert r.get("ChecksumSHA256") == sha256_b64(p)
        done.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    lp = s3.list_parts(Bucket=bucket, Key="mpc", UploadId=uid)
    assert [p.get("ChecksumSHA256") for p in lp["Parts"]] == [sha256_b64(p) for p in parts]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpc", UploadId=uid,
                                 MultipartUpload={"Parts": done})
    composite = b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
    head = s3.head_object(Bucket=bucket, Key="mpc", ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256") == f"{composite}-2"
    assert head.get("ChecksumType") == "COMPOSITE"
    got = s3.get_object(Bucket=bucket, Key="mpc", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)


def test_multipart_full_object_crc32_checksum(s3, bucket):
    parts = [random_bytes(5 * MiB), random_bytes(1 * MiB + 3)]
    whole = b"".join(parts)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mpf", ChecksumAlgorithm="CRC32",
                                    ChecksumType="FULL_OBJECT")
    uid = up["UploadId"]
    done = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="mpf", UploadId=uid, PartNumber=i, Body=p,
                           ChecksumAlgorithm="CRC32")
        done.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="mpf", UploadId=uid,
                                 MultipartUpload={"Parts": done},
                                 ChecksumCRC32=crc32_b64(whole), ChecksumType="FULL_OBJECT")
    head = s3.head_object(Bucket=bucket, Key="mpf", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == crc32_b64(whole)
    assert head.get("ChecksumType") == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="mpf", ChecksumMode="ENABLED")
    assert got["Body"].read() == whole


# --------------------------------------------------------------------------------------------
# Multipart
# --------------------------------------------------------------------------------------------


def test_multipart_upload_lifecycle(s3, bucket):
    parts = [random_bytes(5 * MiB), random_bytes(5 * MiB), random_bytes(1024)]
    key = "multi/part ü.bin"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-mp",
                                     Metadata={"m": "v"})["UploadId"]
    ups = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in ups.get("Uploads", [])] == [(key, uid)]

    etags = []
    for i, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=p)
        assert r["ETag"] == f'"{md5_hex(p)}"'
        etags.append(r["ETag"])
    lp = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in lp["Parts"]] == [
        (i, e, len(p)) for i, (e, p) in enumerate(zip(etags, parts), 1)
    ]
    lp1 = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid, MaxParts=2)
    assert lp1["IsTruncated"] and len(lp1["Parts"]) == 2
    lp2 = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid,
                        PartNumberMarker=lp1["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in lp2["Parts"]] == [3]

    # The object is not visible before completion.
    expect_client_error(s3.head_object, 404, "404", Bucket=bucket, Key=key)

    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]},
    )
    assert done["ETag"] == multipart_etag(parts)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"] == multipart_etag(parts)
    assert head["ContentLength"] == sum(map(len, parts))
    assert head["ContentType"] == "application/x-mp"
    assert head["Metadata"] == {"m": "v"}
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(parts)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

    # GetObject / HeadObject with PartNumber
    p2 = s3.get_object(Bucket=bucket, Key=key, PartNumber=2)
    assert p2["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert p2["Body"].read() == parts[1]
    assert p2["ContentRange"] == f"bytes {5 * MiB}-{10 * MiB - 1}/{sum(map(len, parts))}"
    assert p2["PartsCount"] == 3
    h1 = s3.head_object(Bucket=bucket, Key=key, PartNumber=1)
    assert h1["ContentLength"] == 5 * MiB
    assert h1["PartsCount"] == 3
    # A part number past the last part is InvalidPartNumber (416).
    expect_client_error(s3.get_object, 416, "InvalidPartNumber", Bucket=bucket, Key=key,
                        PartNumber=4)


def test_multipart_complete_with_part_subset_and_reupload(s3, bucket):
    """Re-uploading a part replaces it; completing with a subset drops the others."""
    a, b, c = random_bytes(5 * MiB), random_bytes(5 * MiB), random_bytes(100)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="sub")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="sub", UploadId=uid, PartNumber=1, Body=random_bytes(5 * MiB))
    e1 = s3.upload_part(Bucket=bucket, Key="sub", UploadId=uid, PartNumber=1, Body=a)["ETag"]
    s3.upload_part(Bucket=bucket, Key="sub", UploadId=uid, PartNumber=2, Body=b)
    e3 = s3.upload_part(Bucket=bucket, Key="sub", UploadId=uid, PartNumber=3, Body=c)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="sub", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]})
    assert s3.get_object(Bucket=bucket, Key="sub")["Body"].read() == a + c
    assert s3.head_object(Bucket=bucket, Key="sub")["ETag"] == multipart_etag([a, c])


def test_multipart_complete_retried_after_a_lost_answer(s3, bucket):
    """An SDK that lost the answer of a completion (a timeout) sends it again: the retry
    gets the same 200 and ETag, not NoSuchUpload for an upload that did complete. An
    aborted upload, or the id on another key, is still NoSuchUpload."""
    a, b = random_bytes(5 * MiB), random_bytes(2000)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="retry")["UploadId"]
    parts = [{"PartNumber": i, "ETag": s3.upload_part(Bucket=bucket, Key="retry", UploadId=uid,
                                                      PartNumber=i, Body=p)["ETag"]}
             for i, p in enumerate([a, b], 1)]
    first = s3.complete_multipart_upload(Bucket=bucket, Key="retry", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
    again = s3.complete_multipart_upload(Bucket=bucket, Key="retry", UploadId=uid,
                                         MultipartUpload={"Parts": parts})
    assert first["ETag"] == again["ETag"] == multipart_etag([a, b])
    assert s3.get_object(Bucket=bucket, Key="retry")["Body"].read() == a + b
    expect_client_error(s3.complete_multipart_upload, 404, "NoSuchUpload", Bucket=bucket,
                        Key="elsewhere", UploadId=uid, MultipartUpload={"Parts": parts})
    ab = s3.create_multipart_upload(Bucket=bucket, Key="retry-ab")["UploadId"]
    e = s3.upload_part(Bucket=bucket, Key="retry-ab", UploadId=ab, PartNumber=1, Body=b)["ETag"]
    s3.abort_multipart_upload(Bucket=bucket, Key="retry-ab", UploadId=ab)
    expect_client_error(s3.complete_multipart_upload, 404, "NoSuchUpload", Bucket=bucket,
                        Key="retry-ab", UploadId=ab,
                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})


def test_multipart_abort(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
    s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=uid)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    expect_client_error(s3.list_parts, 404, "NoSuchUpload", Bucket=bucket, Key="ab", UploadId=uid)
    expect_client_error(s3.head_object, 404, "404", Bucket=bucket, Key="ab")


def test_upload_part_copy(s3, bucket):
    src = random_bytes(6 * MiB)
    s3.put_object(Bucket=bucket, Key="src ü", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src ü"})
    assert r1["CopyPartResult"]["ETag"] == f'"{md5_hex(src)}"'
    r2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src ü"},
                             CopySourceRange="bytes=1000-2023")
    assert r2["CopyPartResult"]["ETag"] == f'"{md5_hex(src[1000:2024])}"'
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == src + src[1000:2024]
    assert got["ETag"] == multipart_etag([src, src[1000:2024]])


def test_transfer_manager_multipart_roundtrip(s3, bucket, tmp_path):
    """boto3's upload_file / download_file (s3transfer, 8 MiB multipart threshold)."""
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "big.bin"
    data = random_bytes(20 * MiB + 17)
    src.write_bytes(data)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_file(str(src), bucket, "tm/big.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="tm/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"'), head["ETag"]
    dst = tmp_path / "back.bin"
    s3.download_file(bucket, "tm/big.bin", str(dst), Config=cfg)
    assert dst.read_bytes() == data


# --------------------------------------------------------------------------------------------
# CopyObject
# --------------------------------------------------------------------------------------------


def test_copy_object_metadata_directives(s3, bucket_factory):
    b1, b2 = bucket_factory("copy-src"), bucket_factory("copy-dst")
    body = random_bytes(300_000)
    s3.put_object(Bucket=b1, Key="src/ü x", Body=body, ContentType="text/x-src",
                  Metadata={"a": "1"}, CacheControl="max-age=5")

    # COPY (default): content and metadata copied.
    r = s3.copy_object(Bucket=b2, Key="copy", CopySource={"Bucket": b1, "Key": "src/ü x"})
    assert r["CopyObjectResult"]["ETag"] == f'"{md5_hex(body)}"'
    h = s3.head_object(Bucket=b2, Key="copy")
    assert h["Metadata"] == {"a": "1"} and h["ContentType"] == "text/x-src"
    assert h["CacheControl"] == "max-age=5"
    assert s3.get_object(Bucket=b2, Key="copy")["Body"].read() == body

    # REPLACE: the request's metadata only.
    s3.copy_object(Bucket=b2, Key="replaced", CopySource={"Bucket": b1, "Key": "src/ü x"},
                   MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/x-new")
    h = s3.head_object(Bucket=b2, Key="replaced")
    assert h["Metadata"] == {"b": "2"} and h["ContentType"] == "text/x-new"
    assert "CacheControl" not in h
    assert s3.get_object(Bucket=b2, Key="replaced")["Body"].read() == body

    # COPY ignores metadata given in the request.
    s3.copy_object(Bucket=b2, Key="copy2", CopySource={"Bucket": b1, "Key": "src/ü x"},
                   MetadataDirective="COPY", Metadata={"ignored": "yes"})
    assert s3.head_object(Bucket=b2, Key="copy2")["Metadata"] == {"a": "1"}

    # Copying onto itself without changing anything is illegal in S3 ...
    expect_client_error(s3.copy_object, 400, "InvalidRequest", Bucket=b1, Key="src/ü x",
                        CopySource={"Bucket": b1, "Key": "src/ü x"})
    # ... but with REPLACE it rewrites the metadata in place.
    s3.copy_object(Bucket=b1, Key="src/ü x", CopySource={"Bucket": b1, "Key": "src/ü x"},
                   MetadataDirective="REPLACE", Metadata={"c": "3"})
    assert s3.head_object(Bucket=b1, Key="src/ü x")["Metadata"] == {"c": "3"}
    assert s3.get_object(Bucket=b1, Key="src/ü x")["Body"].read() == body


def test_copy_object_conditions(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="s", Body=b"source")["ETag"]
    src = {"Bucket": bucket, "Key": "s"}
    lm = s3.head_object(Bucket=bucket, Key="s")["LastModified"]
    expect_client_error(s3.copy_object, 412, "PreconditionFailed", Bucket=bucket, Key="d1",
                        CopySource=src, CopySourceIfMatch='"0123456789abcdef0123456789abcdef"')
    expect_client_error(s3.copy_object, 412, "PreconditionFailed", Bucket=bucket, Key="d2",
                        CopySource=src, CopySourceIfNoneMatch=etag)
    expect_client_error(s3.copy_object, 412, "PreconditionFailed", Bucket=bucket, Key="d3",
                        CopySource=src, CopySourceIfUnmodifiedSince=lm - dt.timedelta(hours=1))
    expect_client_error(s3.copy_object, 412, "PreconditionFailed", Bucket=bucket, Key="d4",
                        CopySource=src, CopySourceIfModifiedSince=lm + dt.timedelta(hours=1))
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == ["s"], "failed conditional copies must not create objects"
    s3.copy_object(Bucket=bucket, Key="ok", CopySource=src, CopySourceIfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="ok")["Body"].read() == b"source"


def test_copy_missing_source(s3, bucket):
    expect_client_error(s3.copy_object, 404, "NoSuchKey", Bucket=bucket, Key="d",
                        CopySource={"Bucket": bucket, "Key": "nope"})


# --------------------------------------------------------------------------------------------
# Buckets
# --------------------------------------------------------------------------------------------


def test_bucket_location_and_versioning(s3, bucket):
    loc = s3.get_bucket_location(Bucket=bucket)
    assert loc.get("LocationConstraint") in (None, ""), loc  # us-east-1 is reported as empty
    ver = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in ver, f"versioning was never enabled: {ver}"


def test_head_bucket(s3, bucket):
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    expect_client_error(s3.head_bucket, 404, "404", Bucket=unique_bucket_name("missing"))


def test_delete_bucket_rules(s3, bucket_factory):
    name = bucket_factory("nonempty")
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    expect_client_error(s3.delete_bucket, 409, "BucketNotEmpty", Bucket=name)
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    expect_client_error(s3.head_bucket, 404, "404", Bucket=name)
    expect_client_error(s3.delete_bucket, 404, "NoSuchBucket", Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_create_existing_bucket(s3, bucket):
    expect_client_error(s3.create_bucket, 409, ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"),
                        Bucket=bucket)


# --------------------------------------------------------------------------------------------
# Virtual-hosted-style addressing (server -c with root_domain = ".s3.local")
# --------------------------------------------------------------------------------------------


def redirect_to_loopback(client, port: int) -> None:
    """Send requests for *.s3.local:PORT to 127.0.0.1:PORT, keeping the Host header (the
    signature was computed over it)."""

    def hook(request, **_kw):
        u = urlsplit(request.url)
        request.headers["Host"] = u.netloc
        request.url = request.url.replace(f"//{u.netloc}", f"//127.0.0.1:{port}", 1)

    client.meta.events.register_last("before-send.s3", hook)


@pytest.mark.timeout(180)
def test_virtual_hosted_style(instances, cli):
    srv = instances.server("vhost")
    key_cfg = cli.create_key(srv.cfg, "vhost", create_bucket=True)
    vh = boto3_client(key_cfg, endpoint_url=f"http://s3.local:{srv.s3_port}",
                      s3={"addressing_style": "virtual"})
    sent_hosts = []
    vh.meta.events.register("before-send.s3", lambda request, **_: sent_hosts.append(
        urlsplit(request.url).netloc))
    redirect_to_loopback(vh, srv.s3_port)

    vh.create_bucket(Bucket="vhost-bucket")
    vh.put_object(Bucket="vhost-bucket", Key="dir/a b.txt", Body=b"virtual")
    assert f"vhost-bucket.s3.local:{srv.s3_port}" in sent_hosts, sent_hosts
    assert vh.get_object(Bucket="vhost-bucket", Key="dir/a b.txt")["Body"].read() == b"virtual"
    keys = [o["Key"] for o in vh.list_objects_v2(Bucket="vhost-bucket")["Contents"]]
    assert keys == ["dir/a b.txt"]

    # The same object through path-style on the IP and on the root domain.
    path = boto3_client(key_cfg)
    assert path.get_object(Bucket="vhost-bucket", Key="dir/a b.txt")["Body"].read() == b"virtual"
    r = signed_request(key_cfg, "GET", "/vhost-bucket/dir/a%20b.txt",
                       host=f"s3.local:{srv.s3_port}")
    assert r.status_code == 200 and r.content == b"virtual", r.text
    # Raw virtual-hosted request: the bucket comes from the Host header only.
    r = signed_request(key_cfg, "GET", "/dir/a%20b.txt", host=f"vhost-bucket.s3.local:{srv.s3_port}")
    assert r.status_code == 200 and r.content == b"virtual", r.text
