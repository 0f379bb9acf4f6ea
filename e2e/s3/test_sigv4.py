"""SigV4 negatives not covered by test_errors.py: a query parameter changed after signing,
required headers left out of SignedHeaders, a wrong access key in a raw signed request,
presigned URLs that are expired, future-dated, or whose signed parameters were changed.

Each request is refused with the status and error code AWS answers, and a control request
built the same way (our signer in helpers.py) succeeds, so a refusal is never the signer's
fault."""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from .helpers import (
    UNSIGNED,
    amz_now,
    assert_s3_error,
    key_path,
    presign_url,
    s3_error,
    sign,
    signed_request,
)


def _send(cfg, method: str, path: str, query: str, hdrs: dict[str, str], body: bytes = b""):
    url = cfg.endpoint + path + (f"?{query}" if query else "")
    return requests.request(method, url, headers=hdrs, data=body, timeout=30)


def _signed(cfg, method: str, path: str, query: str = "", headers=None, access_key=None,
            secret_key=None) -> dict[str, str]:
    from urllib.parse import urlsplit

    return sign(method, path, query, headers or {}, host=urlsplit(cfg.endpoint).netloc,
                access_key=access_key or cfg.access_key, secret_key=secret_key or cfg.secret_key,
                region=cfg.region, payload_hash=UNSIGNED)


@pytest.fixture
def obj(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"signed object")
    return key_path(bucket, "o")


def test_control_same_construction_succeeds(dev_cfg, bucket, obj):
    r = _send(dev_cfg, "GET", f"/{bucket}", "list-type=2&prefix=o",
              _signed(dev_cfg, "GET", f"/{bucket}", "list-type=2&prefix=o"))
    assert r.status_code == 200 and b"<Key>o</Key>" in r.content, r.text
    url = presign_url(dev_cfg, "GET", obj, expires=300)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and r.content == b"signed object", r.text


def test_query_parameter_changed_after_signing(dev_cfg, bucket, obj):
    hdrs = _signed(dev_cfg, "GET", f"/{bucket}", "list-type=2&prefix=o")
    r = _send(dev_cfg, "GET", f"/{bucket}", "list-type=2&prefix=other", hdrs)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")
    # A parameter added after signing.
    r = _send(dev_cfg, "GET", f"/{bucket}", "list-type=2&prefix=o&max-keys=1", hdrs)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")
    # A presigned URL whose response-content-type was changed after signing.
    url = presign_url(dev_cfg, "GET", obj, expires=300,
                      extra_query={"response-content-type": "text/plain"})
    assert requests.get(url, timeout=30).status_code == 200
    forged = url.replace("response-content-type=text%2Fplain", "response-content-type=text%2Fhtml")
    assert forged != url
    assert_s3_error(requests.get(forged, timeout=30), 403, "SignatureDoesNotMatch")
    # ... or whose X-Amz-Expires was raised after signing.
    url = presign_url(dev_cfg, "GET", obj, expires=60)
    forged = url.replace("X-Amz-Expires=60", "X-Amz-Expires=3600")
    assert forged != url
    assert_s3_error(requests.get(forged, timeout=30), 403, "SignatureDoesNotMatch")


def test_path_changed_after_signing(dev_cfg, s3, bucket, obj):
    s3.put_object(Bucket=bucket, Key="other", Body=b"not for you")
    hdrs = _signed(dev_cfg, "GET", obj)
    r = _send(dev_cfg, "GET", key_path(bucket, "other"), "", hdrs)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")


def test_method_changed_after_signing(dev_cfg, bucket, obj):
    hdrs = _signed(dev_cfg, "GET", obj)
    r = _send(dev_cfg, "DELETE", obj, "", hdrs)
    assert_s3_error(r, 403, "SignatureDoesNotMatch")
    r = signed_request(dev_cfg, "GET", obj)
    assert r.status_code == 200 and r.content == b"signed object", "the object survived"


def _drop_from_signed_headers(hdrs: dict[str, str], name: str) -> dict[str, str]:
    """Re-signs nothing: removes `name` from SignedHeaders, keeping the header itself."""
    out = dict(hdrs)
    out["authorization"] = re.sub(
        r"SignedHeaders=([^,]+)",
        lambda m: "SignedHeaders=" + ";".join(h for h in m.group(1).split(";") if h != name),
        hdrs["authorization"],
    )
    return out


def _sign_without(cfg, method: str, path: str, query: str, omit: str) -> dict[str, str]:
    """A request correctly signed over every header but `omit`, which is still sent."""
    import hashlib
    import hmac as hmac_mod
    from urllib.parse import urlsplit

    from .helpers import canonical_query, signing_key

    when = amz_now()
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    hdrs = {"host": urlsplit(cfg.endpoint).netloc, "x-amz-date": amz_date,
            "x-amz-content-sha256": UNSIGNED}
    signed = sorted(k for k in hdrs if k != omit)
    canon_headers = "".join(f"{k}:{hdrs[k]}\n" for k in signed)
    canonical = "\n".join([method, path, canonical_query(query), canon_headers, ";".join(signed),
                           UNSIGNED])
    scope = f"{amz_date[:8]}/{cfg.region}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canonical.encode()).hexdigest()])
    sig = hmac_mod.new(signing_key(cfg.secret_key, amz_date[:8], cfg.region), sts.encode(),
                       hashlib.sha256).hexdigest()
    hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={cfg.access_key}/{scope}, "
                             f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return hdrs


@pytest.mark.parametrize("header", ["host", "x-amz-date", "x-amz-content-sha256"])
def test_required_header_not_signed(dev_cfg, bucket, obj, header):
    """AWS requires host, x-amz-date (or date) and x-amz-content-sha256 to be signed."""
    # Removing the header from SignedHeaders of a valid signature breaks it...
    r = _send(dev_cfg, "GET", obj, "", _drop_from_signed_headers(_signed(dev_cfg, "GET", obj),
                                                                  header))
    assert_s3_error(r, (400, 403), ("SignatureDoesNotMatch", "AccessDenied",
                                    "AuthorizationHeaderMalformed"))
    # ... and a signature computed without it is refused too, though it is correct over
    # what it covers: the header could otherwise be changed by anyone on the way.
    r = _send(dev_cfg, "GET", obj, "", _sign_without(dev_cfg, "GET", obj, "", header))
    code, msg = s3_error(r.content)
    assert r.status_code in (400, 403) and code in (
        "SignatureDoesNotMatch", "AccessDenied", "AuthorizationHeaderMalformed"), (
        f"a request that does not sign {header} was answered HTTP {r.status_code} {code} "
        f"{msg}: {r.content[:300]!r}")
    assert r.content != b"signed object"


def test_wrong_access_key_in_raw_request(dev_cfg, bucket, obj):
    ghost = "GK" + uuid.uuid4().hex[:24]
    r = _send(dev_cfg, "GET", obj, "", _signed(dev_cfg, "GET", obj, access_key=ghost))
    assert_s3_error(r, 403, "InvalidAccessKeyId")
    # Presigned with an unknown key.
    import dataclasses

    url = presign_url(dataclasses.replace(dev_cfg, access_key=ghost), "GET", obj, expires=300)
    assert_s3_error(requests.get(url, timeout=30), 403, "InvalidAccessKeyId")


def test_wrong_secret_in_raw_request(dev_cfg, bucket, obj):
    r = _send(dev_cfg, "GET", obj, "", _signed(dev_cfg, "GET", obj, secret_key="0" * 64))
    assert_s3_error(r, 403, "SignatureDoesNotMatch")
    import dataclasses

    url = presign_url(dataclasses.replace(dev_cfg, secret_key="0" * 64), "GET", obj, expires=300)
    assert_s3_error(requests.get(url, timeout=30), 403, "SignatureDoesNotMatch")


def test_presigned_expired_says_so(dev_cfg, obj):
    url = presign_url(dev_cfg, "GET", obj, expires=60, when=amz_now(-120))
    r = requests.get(url, timeout=30)
    assert_s3_error(r, 403, "AccessDenied")
    assert s3_error(r.content)[1] == "Request has expired", r.text


def test_presigned_future_dated(dev_cfg, obj):
    """Signed more than 15 minutes ahead of the server's clock."""
    url = presign_url(dev_cfg, "GET", obj, expires=3600, when=amz_now(20 * 60))
    assert_s3_error(requests.get(url, timeout=30), 403, "RequestTimeTooSkewed")
    # Within the allowed skew it is fine.
    url = presign_url(dev_cfg, "GET", obj, expires=3600, when=amz_now(5 * 60))
    assert requests.get(url, timeout=30).status_code == 200


@pytest.mark.parametrize("expires", ["-1", "abc", str(7 * 24 * 3600 + 1)])
def test_presigned_bad_expires(dev_cfg, obj, expires):
    url = presign_url(dev_cfg, "GET", obj, expires=60)
    url = url.replace("X-Amz-Expires=60", f"X-Amz-Expires={expires}")
    r = requests.get(url, timeout=30)
    # AWS says AuthorizationQueryParametersError for an X-Amz-Expires that is not a number
    # in range; the s3s protocol layer refuses one that does not parse before our code sees
    # it, with 400 InvalidRequest ("missing presigned url v4 fields"). Either way: refused.
    assert_s3_error(r, (400, 403), ("AuthorizationQueryParametersError", "AccessDenied",
                                    "SignatureDoesNotMatch", "InvalidRequest"))
    assert r.content != b"signed object"


def test_header_auth_expired_and_future(dev_cfg, bucket, obj):
    """Header-signed requests 16 minutes off either way (test_errors.py checks 20)."""
    for skew in (-16 * 60, 16 * 60):
        r = signed_request(dev_cfg, "GET", obj, when=amz_now(skew))
        assert_s3_error(r, 403, "RequestTimeTooSkewed")
