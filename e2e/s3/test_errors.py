"""Bad input gets the S3 error a client expects (status and error code), never a crash or a
hang. Requests real clients refuse to send are crafted with our SigV4 signer or raw sockets;
`test_control_*` checks that the same construction succeeds when nothing is wrong."""

from __future__ import annotations

import hashlib
import select
import socket
import time
import uuid

import pytest
import requests

from storaged_proc import boto3_client, unique_bucket_name
from .helpers import (
    UNSIGNED,
    amz_now,
    assert_s3_error,
    b64,
    crc32_b64,
    expect_client_error,
    key_path,
    md5_b64,
    presign_url,
    random_bytes,
    raw_request,
    read_http_response,
    s3_error,
    sha256_b64,
    signed_head_lines,
    signed_request,
)

MiB = 1 << 20
BOGUS_ETAG = '"0123456789abcdef0123456789abcdef"'


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


def test_control_raw_signed_requests_succeed(dev_cfg, bucket):
    body = b"raw signed body"
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "raw ü+x"), body=body)
    assert r.status_code == 200, r.text
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "raw-unsigned"), body=body,
                       payload_hash=UNSIGNED)
    assert r.status_code == 200, r.text
    r = signed_request(dev_cfg, "GET", key_path(bucket, "raw ü+x"))
    assert r.status_code == 200 and r.content == body, r.text
    r = signed_request(dev_cfg, "GET", f"/{bucket}", "list-type=2&prefix=raw")
    assert r.status_code == 200 and b"raw-unsigned" in r.content, r.text
    # Clock skew within the 15 minutes AWS allows is accepted.
    r = signed_request(dev_cfg, "GET", key_path(bucket, "raw ü+x"), when=amz_now(-600))
    assert r.status_code == 200, r.text


def test_wrong_signature(dev_cfg, bucket):
    def flip(h):
        sig = h["authorization"][-64:]
        h["authorization"] = h["authorization"][:-64] + ("0" if sig[0] != "0" else "1") + sig[1:]

    r = signed_request(dev_cfg, "GET", f"/{bucket}", "list-type=2", tamper=flip)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")

    # A header changed after signing.
    def change_meta(h):
        h["x-amz-meta-a"] = "changed"

    r = signed_request(dev_cfg, "PUT", key_path(bucket, "k"), headers={"x-amz-meta-a": "orig"},
                       body=b"x", tamper=change_meta)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")

    # A wrong secret through boto3.
    bad = boto3_client(dev_cfg.with_key(dev_cfg.access_key, "0" * 64))
    expect_client_error(bad.list_objects_v2, 403, "SignatureDoesNotMatch", Bucket=bucket)

    # A presigned URL with a tampered signature.
    url = presign_url(dev_cfg, "GET", key_path(bucket, "k"), expires=300)
    assert_s3_error(requests.get(url[:-1] + ("0" if url[-1] != "0" else "1"), timeout=30),
                    403, "SignatureDoesNotMatch")
    r = signed_request(dev_cfg, "GET", key_path(bucket, "k"))
    assert r.status_code == 404, "tampered PUT must not have stored anything"


def test_unknown_access_key(dev_cfg, bucket):
    ghost = boto3_client(dev_cfg.with_key("GK" + uuid.uuid4().hex[:24], "a" * 64))
    expect_client_error(ghost.list_objects_v2, 403, "InvalidAccessKeyId", Bucket=bucket)
    expect_client_error(ghost.put_object, 403, "InvalidAccessKeyId", Bucket=bucket, Key="k",
                        Body=b"x")


def test_no_auth_is_access_denied(dev_cfg, s3, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    base = f"{dev_cfg.endpoint}/{bucket}"
    assert_s3_error(requests.get(f"{base}/private", timeout=30), 403, "AccessDenied")
    assert_s3_error(requests.get(f"{base}?list-type=2", timeout=30), 403, "AccessDenied")
    assert_s3_error(requests.put(f"{base}/anon", data=b"x", timeout=30), 403, "AccessDenied")
    assert_s3_error(requests.delete(f"{base}/private", timeout=30), 403, "AccessDenied")
    assert s3.get_object(Bucket=bucket, Key="private")["Body"].read() == b"secret"
    expect_client_error(s3.head_object, 404, "404", Bucket=bucket, Key="anon")


@pytest.mark.parametrize("skew_s", [-20 * 60, 20 * 60], ids=["past", "future"])
def test_clock_skew(dev_cfg, bucket, skew_s):
    r = signed_request(dev_cfg, "GET", f"/{bucket}", "list-type=2", when=amz_now(skew_s))
    assert_s3_error(r, 403, "RequestTimeTooSkewed")


def test_wrong_region_in_credential_scope(dev_cfg, bucket):
    import dataclasses

    other = dataclasses.replace(dev_cfg, region="eu-west-3")
    r = signed_request(other, "GET", f"/{bucket}", "list-type=2")
    assert_s3_error(r, 400, "AuthorizationHeaderMalformed")


def test_presigned_expired(dev_cfg, s3, bucket):
    s3.put_object(Bucket=bucket, Key="p", Body=b"x")
    url = presign_url(dev_cfg, "GET", key_path(bucket, "p"), expires=900, when=amz_now(-3600))
    assert_s3_error(requests.get(url, timeout=30), 403, "AccessDenied")


def test_presigned_expiry_over_seven_days(dev_cfg, s3, bucket):
    s3.put_object(Bucket=bucket, Key="p", Body=b"x")
    url = presign_url(dev_cfg, "GET", key_path(bucket, "p"), expires=7 * 24 * 3600 + 1)
    assert_s3_error(requests.get(url, timeout=30), 400, "AuthorizationQueryParametersError")
    ok = presign_url(dev_cfg, "GET", key_path(bucket, "p"), expires=7 * 24 * 3600)
    r = requests.get(ok, timeout=30)
    assert r.status_code == 200 and r.content == b"x", r.text


def test_payload_hash_mismatch(dev_cfg, bucket):
    """x-amz-content-sha256 that does not match the body."""
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "h"), body=b"actual body",
                       payload_hash=hashlib.sha256(b"other body").hexdigest())
    assert_s3_error(r, 400, "XAmzContentSHA256Mismatch")
    assert signed_request(dev_cfg, "GET", key_path(bucket, "h")).status_code == 404


# --------------------------------------------------------------------------------------------
# Missing resources and names
# --------------------------------------------------------------------------------------------


def test_no_such_bucket(s3):
    missing = unique_bucket_name("missing")
    expect_client_error(s3.get_object, 404, "NoSuchBucket", Bucket=missing, Key="k")
    expect_client_error(s3.put_object, 404, "NoSuchBucket", Bucket=missing, Key="k", Body=b"x")
    expect_client_error(s3.list_objects_v2, 404, "NoSuchBucket", Bucket=missing)
    expect_client_error(s3.delete_bucket, 404, "NoSuchBucket", Bucket=missing)


def test_no_such_key(s3, bucket):
    expect_client_error(s3.get_object, 404, "NoSuchKey", Bucket=bucket, Key="nope")
    expect_client_error(s3.copy_object, 404, "NoSuchKey", Bucket=bucket, Key="d",
                        CopySource={"Bucket": bucket, "Key": "nope"})


def test_no_such_upload(s3, bucket):
    bogus = "bogus-" + uuid.uuid4().hex
    expect_client_error(s3.upload_part, 404, "NoSuchUpload", Bucket=bucket, Key="k",
                        UploadId=bogus, PartNumber=1, Body=b"x")
    expect_client_error(s3.list_parts, 404, "NoSuchUpload", Bucket=bucket, Key="k", UploadId=bogus)
    expect_client_error(s3.abort_multipart_upload, 404, "NoSuchUpload", Bucket=bucket, Key="k",
                        UploadId=bogus)
    expect_client_error(s3.complete_multipart_upload, 404, "NoSuchUpload", Bucket=bucket, Key="k",
                        UploadId=bogus,
                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": BOGUS_ETAG}]})
    # An upload id of another key is no upload of this key.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="real")["UploadId"]
    expect_client_error(s3.upload_part, 404, "NoSuchUpload", Bucket=bucket, Key="other",
                        UploadId=uid, PartNumber=1, Body=b"x")


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "UpperCase", "under_score", "-leading-dash", "trailing-dash-",
     "192.168.5.4", "double..dot", "dot.-dash"],
)
def test_invalid_bucket_name(dev_cfg, name):
    r = signed_request(dev_cfg, "PUT", f"/{name}")
    assert_s3_error(r, 400, "InvalidBucketName")


def test_key_too_long(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"x")  # the maximum is fine
    expect_client_error(s3.put_object, 400, "KeyTooLongError", Bucket=bucket, Key="k" * 1025,
                        Body=b"x")


def test_metadata_too_large(s3, bucket):
    s3.put_object(Bucket=bucket, Key="ok", Body=b"x", Metadata={"m": "v" * 1000})
    expect_client_error(s3.put_object, 400, "MetadataTooLarge", Bucket=bucket, Key="big",
                        Body=b"x", Metadata={"m": "v" * 3000})


# --------------------------------------------------------------------------------------------
# Integrity
# --------------------------------------------------------------------------------------------


def test_content_md5(dev_cfg, bucket):
    body = b"integrity matters"
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "bad"), body=body,
                       headers={"content-md5": md5_b64(b"something else")})
    assert_s3_error(r, 400, "BadDigest")
    for malformed in ("not-base64!!", b64(b"short")):
        r = signed_request(dev_cfg, "PUT", key_path(bucket, "bad"), body=body,
                           headers={"content-md5": malformed})
        assert_s3_error(r, 400, "InvalidDigest")
    assert signed_request(dev_cfg, "GET", key_path(bucket, "bad")).status_code == 404
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "good"), body=body,
                       headers={"content-md5": md5_b64(body)})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "header,value",
    [("x-amz-checksum-crc32", crc32_b64(b"other")),
     ("x-amz-checksum-sha256", sha256_b64(b"other"))],
)
def test_wrong_flexible_checksum(dev_cfg, bucket, header, value):
    body = b"checksummed body"
    for payload_hash in (None, UNSIGNED):
        r = signed_request(dev_cfg, "PUT", key_path(bucket, "ck"), body=body,
                           headers={header: value}, payload_hash=payload_hash)
        # AWS answers BadDigest ("The CRC32 you specified did not match the calculated checksum").
        assert_s3_error(r, 400, ("BadDigest", "XAmzContentChecksumMismatch"))
    assert signed_request(dev_cfg, "GET", key_path(bucket, "ck")).status_code == 404


# --------------------------------------------------------------------------------------------
# XML bodies and multipart rules
# --------------------------------------------------------------------------------------------


def test_malformed_xml_delete_objects(dev_cfg, bucket):
    for body in (b"<Delete><Object><Key>a</Key>", b"this is not xml", b"<Delete><Nope/></Delete>"):
        r = signed_request(dev_cfg, "POST", f"/{bucket}", "delete", body=body,
                           headers={"content-md5": md5_b64(body)})
        assert_s3_error(r, 400, "MalformedXML")


def test_malformed_xml_complete_multipart(dev_cfg, s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=1, Body=b"x")
    for body in (b"<CompleteMultipartUpload><Part>", b"garbage"):
        r = signed_request(dev_cfg, "POST", key_path(bucket, "m"), f"uploadId={uid}", body=body)
        assert_s3_error(r, 400, "MalformedXML")
    # The upload survived the bad requests.
    assert len(s3.list_parts(Bucket=bucket, Key="m", UploadId=uid)["Parts"]) == 1


def test_delete_objects_over_1000_keys(s3, bucket):
    expect_client_error(s3.delete_objects, 400, "MalformedXML", Bucket=bucket,
                        Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]})


def _upload(s3, bucket, key, parts):
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=p)["ETag"]
             for i, p in enumerate(parts, 1)]
    return uid, etags


def test_entity_too_small(s3, bucket):
    uid, etags = _upload(s3, bucket, "small", [b"a" * 1024, b"b" * 1024])
    expect_client_error(s3.complete_multipart_upload, 400, "EntityTooSmall", Bucket=bucket,
                        Key="small", UploadId=uid, MultipartUpload={"Parts": [
                            {"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    expect_client_error(s3.head_object, 404, "404", Bucket=bucket, Key="small")


def test_invalid_part(s3, bucket):
    uid, etags = _upload(s3, bucket, "ip", [b"a" * 1024])
    expect_client_error(s3.complete_multipart_upload, 400, "InvalidPart", Bucket=bucket, Key="ip",
                        UploadId=uid,
                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": BOGUS_ETAG}]})
    expect_client_error(s3.complete_multipart_upload, 400, "InvalidPart", Bucket=bucket, Key="ip",
                        UploadId=uid, MultipartUpload={"Parts": [
                            {"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[0]}]})
    # The upload is intact and can still complete.
    s3.complete_multipart_upload(Bucket=bucket, Key="ip", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etags[0]}]})
    assert s3.get_object(Bucket=bucket, Key="ip")["Body"].read() == b"a" * 1024


def test_invalid_part_order(s3, bucket):
    parts = [random_bytes(5 * MiB), random_bytes(5 * MiB)]
    uid, etags = _upload(s3, bucket, "order", parts)
    expect_client_error(s3.complete_multipart_upload, 400, "InvalidPartOrder", Bucket=bucket,
                        Key="order", UploadId=uid, MultipartUpload={"Parts": [
                            {"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})


@pytest.mark.parametrize("part_number", [0, 10001, -1])
def test_part_number_out_of_range(dev_cfg, s3, bucket, part_number):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="pn")["UploadId"]
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "pn"),
                       f"partNumber={part_number}&uploadId={uid}", body=b"x")
    assert_s3_error(r, 400, "InvalidArgument")
    r = signed_request(dev_cfg, "PUT", key_path(bucket, "pn"), f"partNumber=10000&uploadId={uid}",
                       body=b"x")
    assert r.status_code == 200, f"part 10000 is the last valid one: {r.text}"


# --------------------------------------------------------------------------------------------
# Authorisation across keys
# --------------------------------------------------------------------------------------------


def test_other_keys_bucket_is_access_denied(dev_cfg, s3, bucket, cli):
    s3.put_object(Bucket=bucket, Key="mine", Body=b"x")
    other_cfg = cli.create_key(dev_cfg, f"stranger-{uuid.uuid4().hex[:6]}")
    other = boto3_client(other_cfg)
    expect_client_error(other.get_object, 403, "AccessDenied", Bucket=bucket, Key="mine")
    expect_client_error(other.head_object, 403, "403", Bucket=bucket, Key="mine")
    expect_client_error(other.put_object, 403, "AccessDenied", Bucket=bucket, Key="theirs",
                        Body=b"x")
    expect_client_error(other.list_objects_v2, 403, "AccessDenied", Bucket=bucket)
    expect_client_error(other.delete_object, 403, "AccessDenied", Bucket=bucket, Key="mine")
    expect_client_error(other.delete_bucket, 403, "AccessDenied", Bucket=bucket)
    expect_client_error(other.create_multipart_upload, 403, "AccessDenied", Bucket=bucket, Key="m")
    assert bucket not in [b["Name"] for b in other.list_buckets().get("Buckets", [])]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["mine"]


# --------------------------------------------------------------------------------------------
# HTTP-level limits (raw sockets)
# --------------------------------------------------------------------------------------------


def test_put_without_content_length(dev_cfg, bucket):
    lines = signed_head_lines(dev_cfg, "PUT", key_path(bucket, "nolen"), {})
    try:
        resp = raw_request(dev_cfg, lines)
    except TimeoutError:
        pytest.fail("no answer within 15 s to a PUT without Content-Length")
    assert resp is not None, "connection closed without a response"
    assert_s3_error(resp, 411, "MissingContentLength")


def test_single_put_over_5gib(dev_cfg, bucket):
    """Only the headers are sent: the server must refuse before reading 5 GiB."""
    size = 5 * 1024**3 + 1
    lines = signed_head_lines(dev_cfg, "PUT", key_path(bucket, "huge"),
                              {"content-length": str(size)})
    try:
        resp = raw_request(dev_cfg, lines, timeout=20)
    except TimeoutError:
        pytest.fail("no answer within 20 s to the headers of a 5 GiB + 1 PUT: the server waits "
                    "for the body instead of refusing with EntityTooLarge")
    assert resp is not None, "connection closed without a response"
    assert_s3_error(resp, 400, "EntityTooLarge")


def test_oversized_headers(dev_cfg, bucket):
    host, port = dev_cfg.host_port
    big = [f"X-Amz-Meta-Big{i}: {'a' * 7000}" for i in range(16)]  # ~112 KB of headers
    head = "\r\n".join([f"GET /{bucket}/k HTTP/1.1", f"Host: {host}:{port}", *big,
                        "Connection: close"]) + "\r\n\r\n"
    with socket.create_connection((host, port), timeout=10) as s:
        try:
            s.sendall(head.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading early; its answer is what matters
        try:
            resp = read_http_response(s, 10)
        except ConnectionResetError:
            resp = None
    assert resp is not None, "connection dropped without an HTTP error response"
    assert resp.status_code in (400, 431), resp


@pytest.mark.timeout(180)
def test_stalled_clients_do_not_block_others(dev_cfg, s3, bucket):
    s3.put_object(Bucket=bucket, Key="live", Body=b"still served")
    host, port = dev_cfg.host_port
    stalled = []
    try:
        for i in range(50):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(f"GET /{bucket}/live HTTP/1.1\r\nHost: {host}:{port}\r\nX-Stall-{i}: ".encode())
            stalled.append(s)
        t0 = time.monotonic()
        r = signed_request(dev_cfg, "GET", key_path(bucket, "live"), timeout=10)
        assert r.status_code == 200 and r.content == b"still served"
        s3.put_object(Bucket=bucket, Key="live2", Body=b"new")
        assert s3.get_object(Bucket=bucket, Key="live2")["Body"].read() == b"new"
        elapsed = time.monotonic() - t0
        assert elapsed < 5, f"requests took {elapsed:.1f}s with 50 stalled connections open"

        # The server must eventually drop connections that never finish their headers.
        open_socks = {s.fileno(): s for s in stalled}
        deadline = time.monotonic() + 75
        while open_socks and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_socks.values()), [], [], 1.0)
            for s in ready:
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, OSError):
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 400"):
                    open_socks.pop(s.fileno(), None)
        assert not open_socks, (
            f"{len(open_socks)} of 50 connections with unfinished headers are still open after "
            f"75 s: the server needs a header read timeout"
        )
    finally:
        for s in stalled:
            s.close()


def test_error_responses_are_xml_with_request_id(dev_cfg, bucket):
    r = signed_request(dev_cfg, "GET", key_path(bucket, "absent"))
    code, message = s3_error(r.content)
    assert r.status_code == 404 and code == "NoSuchKey"
    assert message, "error XML carries a Message"
    assert r.headers.get("content-type", "").startswith(("application/xml", "text/xml"))
    assert r.headers.get("x-amz-request-id"), "responses carry x-amz-request-id"


# Runs last in this module: after all the abuse above, the daemon is still up.
def test_zz_daemon_still_healthy(dev, s3, bucket):
    assert dev.alive(), f"storaged died\n{dev.log_tail()}"
    r = requests.get(dev.cfg.admin_endpoint + "/health", timeout=10)
    assert r.status_code == 200
    s3.put_object(Bucket=bucket, Key="after", Body=b"ok")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"ok"
