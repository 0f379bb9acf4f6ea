"""Helpers for the S3 e2e tests: a small SigV4 signer (to craft requests real clients refuse
to send), raw HTTP over sockets, S3 error parsing, checksums and test data."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import socket
import subprocess
import time
import zlib
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit
from xml.etree import ElementTree

import pytest
import requests

UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------------------------
# SigV4
# --------------------------------------------------------------------------------------------


def amz_now(offset_s: float = 0) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_s)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def uri_encode(s: str, safe: str = "-_.~") -> str:
    return quote(s, safe=safe)


def canonical_query(query: str | Iterable[tuple[str, str]]) -> str:
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    enc = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def key_path(bucket: str, key: str = "") -> str:
    """Path-style request path with AWS URI encoding (slashes kept)."""
    return "/" + bucket + ("/" + uri_encode(key, safe="/-_.~") if key else "")


def sign(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    *,
    host: str,
    access_key: str,
    secret_key: str,
    region: str,
    payload_hash: str = UNSIGNED,
    when: dt.datetime | None = None,
) -> dict[str, str]:
    """Returns `headers` plus host, x-amz-date, x-amz-content-sha256 and Authorization.

    `path` must already be URI-encoded (it is used verbatim as the canonical URI)."""
    when = when or amz_now()
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    hdrs = {k.lower(): str(v) for k, v in headers.items()}
    hdrs["host"] = host
    hdrs["x-amz-date"] = amz_date
    hdrs.setdefault("x-amz-content-sha256", payload_hash)
    signed = sorted(hdrs)
    canon_headers = "".join(f"{k}:{' '.join(hdrs[k].split())}\n" for k in signed)
    canonical = "\n".join(
        [method, path, canonical_query(query), canon_headers, ";".join(signed),
         hdrs["x-amz-content-sha256"]]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    sig = hmac.new(signing_key(secret_key, date, region), sts.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return hdrs


def presign_url(
    cfg,
    method: str,
    path: str,
    *,
    expires: int,
    when: dt.datetime | None = None,
    extra_query: Mapping[str, str] | None = None,
) -> str:
    """A presigned (query-auth) URL, with a chosen signing time and expiry."""
    when = when or amz_now()
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{cfg.region}/s3/aws4_request"
    host = urlsplit(cfg.endpoint).netloc
    q = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{cfg.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    q.update(extra_query or {})
    cq = canonical_query(q.items())
    canonical = "\n".join([method, path, cq, f"host:{host}\n", "host", UNSIGNED])
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    sig = hmac.new(signing_key(cfg.secret_key, date, cfg.region), sts.encode(),
                   hashlib.sha256).hexdigest()
    return f"{cfg.endpoint}{path}?{cq}&X-Amz-Signature={sig}"


def signed_request(
    cfg,
    method: str,
    path: str,
    query: str = "",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    payload_hash: str | None = None,
    when: dt.datetime | None = None,
    host: str | None = None,
    tamper=None,
    timeout: float = 30,
) -> requests.Response:
    """Send a SigV4-signed request with `requests` (body hash signed unless told otherwise).

    `tamper(headers)` may alter the signed headers before sending (to break the signature)."""
    if payload_hash is None:
        payload_hash = hashlib.sha256(body).hexdigest()
    host = host or urlsplit(cfg.endpoint).netloc
    hdrs = sign(method, path, query, headers or {}, host=host, access_key=cfg.access_key,
                secret_key=cfg.secret_key, region=cfg.region, payload_hash=payload_hash,
                when=when)
    if tamper:
        tamper(hdrs)
    url = cfg.endpoint + path + (f"?{canonical_query(query)}" if query else "")
    return requests.request(method, url, headers=hdrs, data=body, timeout=timeout)


# --------------------------------------------------------------------------------------------
# S3 errors
# --------------------------------------------------------------------------------------------


def s3_error(body: bytes | str) -> tuple[str | None, str | None]:
    """(Code, Message) of an S3 error XML body, (None, None) if it is not one."""
    if isinstance(body, str):
        body = body.encode()
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None, None
    def find(tag: str) -> str | None:
        for el in root.iter():
            if el.tag.split("}")[-1] == tag:
                return el.text
        return None
    return find("Code"), find("Message")


def assert_s3_error(resp: requests.Response, status: int | Iterable[int], code: str | Iterable[str]) -> None:
    statuses = {status} if isinstance(status, int) else set(status)
    codes = {code} if isinstance(code, str) else set(code)
    got_code, msg = s3_error(resp.content)
    assert resp.status_code in statuses and got_code in codes, (
        f"expected HTTP {sorted(statuses)} with S3 error code {sorted(codes)}, "
        f"got HTTP {resp.status_code} code {got_code!r} message {msg!r} "
        f"body {resp.content[:500]!r}"
    )


def client_error(excinfo) -> tuple[str, int]:
    """(code, HTTP status) of a botocore ClientError captured by pytest.raises."""
    err = excinfo.value.response
    return err.get("Error", {}).get("Code"), err.get("ResponseMetadata", {}).get("HTTPStatusCode")


def expect_client_error(fn, status: int | Iterable[int], code: str | Iterable[str], *a, **kw):
    from botocore.exceptions import ClientError

    statuses = {status} if isinstance(status, int) else set(status)
    codes = {code} if isinstance(code, str) else set(code)
    try:
        fn(*a, **kw)
    except ClientError as exc:
        got_code = exc.response.get("Error", {}).get("Code")
        got_status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        assert got_code in codes and got_status in statuses, (
            f"expected HTTP {sorted(statuses)} {sorted(codes)}, got HTTP {got_status} {got_code!r}: "
            f"{exc.response.get('Error')}"
        )
        return exc
    pytest.fail(f"expected HTTP {sorted(statuses)} {sorted(codes)}, but the call succeeded")


# --------------------------------------------------------------------------------------------
# Raw sockets (requests the HTTP libraries will not send)
# --------------------------------------------------------------------------------------------


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw: bytes):
        self.status_code = status
        self.headers = headers
        self.content = body
        self.raw = raw

    def __repr__(self) -> str:
        return f"RawResponse({self.status_code}, {self.headers}, {self.content[:300]!r})"


def read_http_response(sock: socket.socket, timeout: float) -> RawResponse | None:
    """Read one HTTP/1.1 response (or None when the peer closes without one)."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete response headers within {timeout}s: {buf[:300]!r}")
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None if not buf else RawResponse(0, {}, b"", buf)
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(body) < want and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            body += chunk
        body = dechunk(body)
    return RawResponse(status, headers, body, buf)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def raw_request(cfg, head_lines: list[str], body: bytes = b"", timeout: float = 15) -> RawResponse | None:
    """Send raw request head lines (without the final blank line) and an optional body."""
    host, port = cfg.host_port
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + body)
        return read_http_response(s, timeout)


def signed_head_lines(cfg, method: str, path: str, headers: Mapping[str, str],
                      payload_hash: str = UNSIGNED, query: str = "") -> list[str]:
    host = urlsplit(cfg.endpoint).netloc
    hdrs = sign(method, path, query, headers, host=host, access_key=cfg.access_key,
                secret_key=cfg.secret_key, region=cfg.region, payload_hash=payload_hash)
    target = path + (f"?{canonical_query(query)}" if query else "")
    return [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in hdrs.items()] + [
        "connection: close"
    ]


# --------------------------------------------------------------------------------------------
# Checksums and data
# --------------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def crc32c_b64(data: bytes) -> str:
    from awscrt import checksums

    return b64(checksums.crc32c(data).to_bytes(4, "big"))


def crc64nvme_b64(data: bytes) -> str:
    from awscrt import checksums

    return b64(checksums.crc64nvme(data).to_bytes(8, "big"))


def sha1_b64(data: bytes) -> str:
    return b64(hashlib.sha1(data).digest())


def sha256_b64(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_b64(data: bytes) -> str:
    return b64(hashlib.md5(data).digest())


def multipart_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def random_bytes(n: int, seed: int | None = None) -> bytes:
    if seed is None:
        return os.urandom(n)
    import random

    return random.Random(seed).randbytes(n)


def write_random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_tree(root: Path, files: Mapping[str, int | bytes]) -> dict[str, str]:
    """Create files under root; returns {relative path: sha256}."""
    out = {}
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else os.urandom(content)
        p.write_bytes(data)
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def run(cmd: list[str], env: Mapping[str, str], timeout: float = 120, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a client command; on failure, fail the test with its output."""
    res = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, cwd=cwd)
    if check and res.returncode != 0:
        pytest.fail(
            f"command failed ({res.returncode}): {' '.join(cmd)}\n"
            f"stdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}"
        )
    return res
