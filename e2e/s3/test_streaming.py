"""aws-chunked uploads (SigV4 streaming): STREAMING-AWS4-HMAC-SHA256-PAYLOAD (signed chunks) and
STREAMING-UNSIGNED-PAYLOAD-TRAILER (checksum trailer), which AWS SDKs send by default over HTTPS.
Over plain HTTP boto3 and aws-cli put the checksum in a header instead, so these bodies are
built here byte by byte."""

from __future__ import annotations

import hashlib
import hmac

import requests

from .helpers import (
    EMPTY_SHA256,
    assert_s3_error,
    crc32_b64,
    crc32c_b64,
    key_path,
    random_bytes,
    sign,
    signing_key,
)

CHUNK = 64 * 1024


def _chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def signed_streaming_put(cfg, bucket: str, key: str, data: bytes, tamper_chunk: int | None = None):
    host = cfg.endpoint.split("://", 1)[1]
    chunks = _chunks(data) + [b""]
    # Encoded length: every chunk is `hex;chunk-signature=<64>\r\n<data>\r\n`.
    enc_len = sum(len(f"{len(c):x};chunk-signature=".encode()) + 64 + 2 + len(c) + 2 for c in chunks)
    headers = sign(
        "PUT", key_path(bucket, key), "",
        {"content-encoding": "aws-chunked", "content-length": str(enc_len),
         "x-amz-decoded-content-length": str(len(data))},
        host=host, access_key=cfg.access_key, secret_key=cfg.secret_key, region=cfg.region,
        payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    )
    amz_date = headers["x-amz-date"]
    scope = f"{amz_date[:8]}/{cfg.region}/s3/aws4_request"
    skey = signing_key(cfg.secret_key, amz_date[:8], cfg.region)
    prev = headers["authorization"][-64:]
    body = b""
    for i, c in enumerate(chunks):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256,
                         hashlib.sha256(c).hexdigest()])
        sig = hmac.new(skey, sts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        if tamper_chunk == i:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
    assert len(body) == enc_len
    return requests.put(cfg.endpoint + key_path(bucket, key), data=body, headers=headers, timeout=60)


def trailer_put(cfg, bucket: str, key: str, data: bytes, trailer_name: str, trailer_value: str):
    host = cfg.endpoint.split("://", 1)[1]
    body = b""
    for c in _chunks(data):
        body += f"{len(c):x}\r\n".encode() + c + b"\r\n"
    body += b"0\r\n" + f"{trailer_name}:{trailer_value}\r\n".encode() + b"\r\n"
    headers = sign(
        "PUT", key_path(bucket, key), "",
        {"content-encoding": "aws-chunked", "content-length": str(len(body)),
         "x-amz-decoded-content-length": str(len(data)), "x-amz-trailer": trailer_name,
         "x-amz-sdk-checksum-algorithm": trailer_name.rsplit("-", 1)[1].upper()},
        host=host, access_key=cfg.access_key, secret_key=cfg.secret_key, region=cfg.region,
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    return requests.put(cfg.endpoint + key_path(bucket, key), data=body, headers=headers, timeout=60)


def test_signed_streaming_payload(dev_cfg, s3, bucket):
    data = random_bytes(3 * CHUNK + 12345)
    r = signed_streaming_put(dev_cfg, bucket, "streamed", data)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="streamed")
    assert got["Body"].read() == data, "the aws-chunked framing must be stripped"
    assert got["ContentLength"] == len(data)
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert got.get("ContentEncoding") in (None, ""), "aws-chunked is not a stored encoding"


def test_signed_streaming_payload_bad_chunk_signature(dev_cfg, s3, bucket):
    data = random_bytes(3 * CHUNK + 10)
    r = signed_streaming_put(dev_cfg, bucket, "tampered", data, tamper_chunk=1)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed == [], "a PUT whose chunk signature failed must not leave an object"


def test_unsigned_payload_with_checksum_trailer(dev_cfg, s3, bucket):
    data = random_bytes(2 * CHUNK + 777)
    r = trailer_put(dev_cfg, bucket, "trailer", data, "x-amz-checksum-crc32", crc32_b64(data))
    assert r.status_code == 200, r.text
    assert r.headers.get("x-amz-checksum-crc32") == crc32_b64(data)
    got = s3.get_object(Bucket=bucket, Key="trailer", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got.get("ChecksumCRC32") == crc32_b64(data)

    r = trailer_put(dev_cfg, bucket, "trailer-c", data, "x-amz-checksum-crc32c", crc32c_b64(data))
    assert r.status_code == 200, r.text
    head = s3.head_object(Bucket=bucket, Key="trailer-c", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32C") == crc32c_b64(data)


def test_unsigned_payload_with_wrong_checksum_trailer(dev_cfg, s3, bucket):
    data = random_bytes(CHUNK + 1)
    r = trailer_put(dev_cfg, bucket, "bad-trailer", data, "x-amz-checksum-crc32",
                    crc32_b64(b"something else"))
    assert_s3_error(r, 400, ("BadDigest", "XAmzContentChecksumMismatch"))
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
