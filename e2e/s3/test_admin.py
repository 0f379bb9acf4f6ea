"""The admin HTTP API and the `storaged` CLI, and their effect on S3 access."""

from __future__ import annotations

import re
import secrets
import string
import uuid

import pytest
import requests

from storaged_proc import boto3_client, unique_bucket_name, wait_until
from .helpers import expect_client_error

KEY_ID_RE = re.compile(r"^GK[0-9a-f]{24}$")
SECRET_RE = re.compile(r"^[0-9a-f]{64}$")
BUCKET_ID_RE = re.compile(r"^[0-9a-f]{64}$")
PERM_WAIT_S = 10  # permission changes must be visible to S3 within this


def admin(cfg, method: str, path: str, body=None, token: str | None = "default", **params):
    headers = {}
    token = cfg.admin_token if token == "default" else token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, cfg.admin_endpoint + path, json=body, headers=headers,
                            params=params or None, timeout=30)


def as_list(doc, *names: str) -> list:
    """A list answer, whether bare or wrapped in an object under one of `names`."""
    if isinstance(doc, list):
        return doc
    for n in names:
        if isinstance(doc, dict) and isinstance(doc.get(n), list):
            return doc[n]
    pytest.fail(f"expected a JSON list, got {doc!r}")


def s3_allows(client, fn: str, **kw) -> bool:
    """True if the call succeeds, False on AccessDenied (anything else fails the test)."""
    from botocore.exceptions import ClientError

    try:
        getattr(client, fn)(**kw)
        return True
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code in ("AccessDenied", "403"):
            return False
        raise


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# Health and authentication of the admin API
# --------------------------------------------------------------------------------------------


def test_health_and_ready_are_unauthenticated(dev_cfg):
    for path in ("/health", "/ready"):
        r = requests.get(dev_cfg.admin_endpoint + path, timeout=10)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"


@pytest.mark.parametrize("path", ["/v1/keys", "/v1/buckets", "/v1/status"])
def test_v1_requires_the_token(dev_cfg, path):
    for token in (None, "wrong-token", ""):
        r = admin(dev_cfg, "GET", path, token=token)
        assert r.status_code in (401, 403), f"{path} with token {token!r}: {r.status_code} {r.text}"
        err = r.json()
        assert err.get("code") and err.get("message"), f"error body must be {{code, message}}: {err}"
    r = admin(dev_cfg, "GET", path)
    assert r.status_code == 200, r.text


def test_unauthenticated_admin_cannot_create(dev_cfg):
    r = admin(dev_cfg, "POST", "/v1/keys", {"name": "intruder"}, token=None)
    assert r.status_code in (401, 403)
    keys = as_list(admin(dev_cfg, "GET", "/v1/keys").json(), "keys")
    assert "intruder" not in [k.get("name") for k in keys]


def test_status_lists_this_node(dev_cfg):
    st = admin(dev_cfg, "GET", "/v1/status").json()
    assert st["node_id"]
    assert any(n["node_id"] == st["node_id"] and n["is_up"] for n in st["nodes"]), st


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def test_key_lifecycle_cli(dev_cfg, cli):
    key_name = name("cli-key")
    created = cli.json(dev_cfg, "key", "create", "--name", key_name, "--json")
    kid, secret = created["access_key_id"], created["secret_access_key"]
    assert KEY_ID_RE.match(kid), kid
    assert SECRET_RE.match(secret), "secret must be 64 hex characters"

    listed = as_list(cli.json(dev_cfg, "key", "list", "--json"), "keys")
    assert any(k["access_key_id"] == kid and k["name"] == key_name for k in listed), listed

    info = cli.json(dev_cfg, "key", "info", kid, "--json")
    assert info["access_key_id"] == kid and info["name"] == key_name
    assert info["allow_create_bucket"] is False
    assert info.get("buckets") == []
    assert "secret_access_key" not in info or info["secret_access_key"] in (None, secret)

    client = boto3_client(dev_cfg.with_key(kid, secret))
    client.list_buckets()  # the key authenticates

    cli.run(dev_cfg, "key", "delete", kid)
    listed = as_list(cli.json(dev_cfg, "key", "list", "--json"), "keys")
    assert kid not in [k["access_key_id"] for k in listed]
    assert cli.run(dev_cfg, "key", "info", kid, "--json", check=False).returncode != 0

    def rejected():
        from botocore.exceptions import ClientError

        try:
            client.list_buckets()
            return False
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "InvalidAccessKeyId"

    wait_until(rejected, PERM_WAIT_S, "a deleted key to be refused with InvalidAccessKeyId")


def test_key_lookup_by_name_and_http_api(dev_cfg):
    key_name = name("http-key")
    r = admin(dev_cfg, "POST", "/v1/keys", {"name": key_name, "allow_create_bucket": True})
    assert r.status_code in (200, 201), r.text
    info = r.json()
    assert KEY_ID_RE.match(info["access_key_id"]) and SECRET_RE.match(info["secret_access_key"])
    assert info["allow_create_bucket"] is True

    found = admin(dev_cfg, "GET", "/v1/keys", name=key_name)
    assert found.status_code == 200, found.text
    doc = found.json()
    ids = [k["access_key_id"] for k in as_list(doc, "keys")] if isinstance(doc, list) else [
        doc["access_key_id"]]
    assert info["access_key_id"] in ids

    got = admin(dev_cfg, "GET", f"/v1/keys/{info['access_key_id']}")
    assert got.status_code == 200 and got.json()["name"] == key_name
    assert "secret_access_key" not in got.json() or got.json()["secret_access_key"] is None, \
        "key info shows the secret only when asked (show_secret=true)"
    shown = admin(dev_cfg, "GET", f"/v1/keys/{info['access_key_id']}", show_secret="true").json()
    assert shown.get("secret_access_key") == info["secret_access_key"]

    missing = admin(dev_cfg, "GET", "/v1/keys/GK" + "0" * 24)
    assert missing.status_code == 404 and missing.json().get("code"), missing.text

    assert admin(dev_cfg, "DELETE", f"/v1/keys/{info['access_key_id']}").status_code in (200, 204)
    assert admin(dev_cfg, "GET", f"/v1/keys/{info['access_key_id']}").status_code == 404


@pytest.mark.parametrize("shape", ["garage", "aws"])
def test_key_import(dev_cfg, s3, cli, bucket, shape):
    if shape == "garage":
        kid, secret = "GK" + secrets.token_hex(12), secrets.token_hex(32)
    else:
        alphabet = string.ascii_uppercase + string.digits
        kid = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
        secret = "".join(secrets.choice(string.ascii_letters + string.digits + "/+")
                         for _ in range(40))
    r = admin(dev_cfg, "POST", "/v1/keys/import",
              {"access_key_id": kid, "secret_access_key": secret, "name": f"imported-{shape}"})
    assert r.status_code in (200, 201), r.text
    assert r.json()["access_key_id"] == kid
    cli.run(dev_cfg, "bucket", "allow", bucket, "--key", kid, "--read", "--write")
    s3.put_object(Bucket=bucket, Key="k", Body=b"imported")
    client = boto3_client(dev_cfg.with_key(kid, secret))
    wait_until(lambda: s3_allows(client, "get_object", Bucket=bucket, Key="k"), PERM_WAIT_S,
               "the imported key to read")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"imported"
    # Importing the same id again must not silently change its secret.
    again = admin(dev_cfg, "POST", "/v1/keys/import",
                  {"access_key_id": kid, "secret_access_key": secrets.token_hex(32)})
    assert again.status_code in (200, 201, 409), again.text
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"imported"


# --------------------------------------------------------------------------------------------
# Buckets
# --------------------------------------------------------------------------------------------


def test_bucket_lifecycle_cli(dev_cfg, cli, s3):
    bname = unique_bucket_name("cli-bucket")
    created = cli.json(dev_cfg, "bucket", "create", bname, "--json")
    assert created["name"] == bname and BUCKET_ID_RE.match(created["id"]), created

    listed = as_list(cli.json(dev_cfg, "bucket", "list", "--json"), "buckets")
    assert any(b["name"] == bname and b["id"] == created["id"] for b in listed), listed

    info = cli.json(dev_cfg, "bucket", "info", bname, "--json")
    assert info["id"] == created["id"] and info["objects"] == 0 and info["bytes"] == 0
    assert info["keys"] == []

    cli.run(dev_cfg, "bucket", "allow", bname, "--key", dev_cfg.access_key, "--read", "--write")
    wait_until(lambda: s3_allows(s3, "put_object", Bucket=bname, Key="o", Body=b"12345"),
               PERM_WAIT_S, "the granted key to write")
    info = cli.json(dev_cfg, "bucket", "info", bname, "--json")
    assert info["objects"] == 1 and info["bytes"] == 5, info
    perms = {k["access_key_id"]: k["permissions"] for k in info["keys"]}
    assert perms.get(dev_cfg.access_key, {}).get("read") is True
    assert perms[dev_cfg.access_key].get("write") is True

    # Not empty: deletion is refused and the bucket stays.
    res = cli.run(dev_cfg, "bucket", "delete", bname, check=False)
    assert res.returncode != 0, "deleting a non-empty bucket must fail"
    assert bname in [b["name"] for b in as_list(cli.json(dev_cfg, "bucket", "list", "--json"),
                                                   "buckets")]
    s3.delete_object(Bucket=bname, Key="o")
    cli.run(dev_cfg, "bucket", "delete", bname)
    listed = as_list(cli.json(dev_cfg, "bucket", "list", "--json"), "buckets")
    assert bname not in [b["name"] for b in listed]
    expect_client_error(s3.head_bucket, 404, "404", Bucket=bname)


def test_bucket_lookup_by_name_and_errors(dev_cfg, bucket):
    r = admin(dev_cfg, "GET", "/v1/buckets", name=bucket)
    assert r.status_code == 200, r.text
    doc = r.json()
    found = doc if isinstance(doc, dict) and "id" in doc else next(
        (b for b in as_list(doc, "buckets") if b["name"] == bucket), None)
    assert found and found["name"] == bucket and BUCKET_ID_RE.match(found["id"])
    assert admin(dev_cfg, "GET", f"/v1/buckets/{'0' * 64}").status_code == 404
    bad = admin(dev_cfg, "POST", "/v1/buckets", {"name": "Invalid_Name"})
    assert bad.status_code == 400 and bad.json().get("code"), bad.text
    dup = admin(dev_cfg, "POST", "/v1/buckets", {"name": bucket, "owner_tag": "someone-else"})
    assert dup.status_code in (200, 409), dup.text  # idempotent or a conflict, never a 5xx


def test_allow_deny_takes_effect(dev_cfg, cli, s3):
    bname = unique_bucket_name("perm")
    cli.json(dev_cfg, "bucket", "create", bname, "--json")
    other_cfg = cli.create_key(dev_cfg, name("perm-key"))
    other = boto3_client(other_cfg)
    kid = other_cfg.access_key
    try:
        # No grant yet: AccessDenied.
        expect_client_error(other.put_object, 403, "AccessDenied", Bucket=bname, Key="a", Body=b"a")
        expect_client_error(other.list_objects_v2, 403, "AccessDenied", Bucket=bname)

        cli.run(dev_cfg, "bucket", "allow", bname, "--key", kid, "--read", "--write")
        wait_until(lambda: s3_allows(other, "put_object", Bucket=bname, Key="a", Body=b"a"),
                   PERM_WAIT_S, "write access after allow")
        assert other.get_object(Bucket=bname, Key="a")["Body"].read() == b"a"
        assert [o["Key"] for o in other.list_objects_v2(Bucket=bname)["Contents"]] == ["a"]
        info = cli.json(dev_cfg, "key", "info", kid, "--json")
        grant = [b for b in info["buckets"] if b.get("bucket_name") == bname]
        assert grant and grant[0]["permissions"]["read"] and grant[0]["permissions"]["write"]
        assert not grant[0]["permissions"]["owner"]
        # Read + write but not owner: bucket deletion is refused.
        other.delete_object(Bucket=bname, Key="a")
        expect_client_error(other.delete_bucket, 403, "AccessDenied", Bucket=bname)
        other.put_object(Bucket=bname, Key="a", Body=b"a")

        cli.run(dev_cfg, "bucket", "deny", bname, "--key", kid, "--write")
        wait_until(lambda: not s3_allows(other, "put_object", Bucket=bname, Key="b", Body=b"b"),
                   PERM_WAIT_S, "write access to be revoked")
        assert other.get_object(Bucket=bname, Key="a")["Body"].read() == b"a", "read is kept"

        cli.run(dev_cfg, "bucket", "deny", bname, "--key", kid, "--read")
        wait_until(lambda: not s3_allows(other, "get_object", Bucket=bname, Key="a"),
                   PERM_WAIT_S, "read access to be revoked")
        assert bname not in [b["Name"] for b in other.list_buckets().get("Buckets", [])]
    finally:
        cli.run(dev_cfg, "bucket", "allow", bname, "--key", dev_cfg.access_key, "--read",
                "--write", "--owner", check=False)
        from storaged_proc import empty_and_delete_bucket

        empty_and_delete_bucket(s3, bname)


def test_create_bucket_right(dev_cfg, cli):
    creator_cfg = cli.create_key(dev_cfg, name("creator"), create_bucket=True)
    plain_cfg = cli.create_key(dev_cfg, name("plain"))
    creator, plain = boto3_client(creator_cfg), boto3_client(plain_cfg)
    info = cli.json(dev_cfg, "key", "info", creator_cfg.access_key, "--json")
    assert info["allow_create_bucket"] is True

    expect_client_error(plain.create_bucket, 403, "AccessDenied",
                        Bucket=unique_bucket_name("plain"))

    bname = unique_bucket_name("created-by-s3")
    creator.create_bucket(Bucket=bname)
    creator.put_object(Bucket=bname, Key="k", Body=b"owned")
    assert creator.get_object(Bucket=bname, Key="k")["Body"].read() == b"owned"
    info = cli.json(dev_cfg, "key", "info", creator_cfg.access_key, "--json")
    grant = [b for b in info["buckets"] if b.get("bucket_name") == bname]
    assert grant, info
    assert grant[0]["permissions"] == {"read": True, "write": True, "owner": True}
    assert bname in [b["Name"] for b in creator.list_buckets()["Buckets"]]

    # Someone else's name is taken.
    expect_client_error(creator.create_bucket, 409, "BucketAlreadyExists", Bucket=dev_cfg.bucket)
    # The plain key sees nothing of it.
    expect_client_error(plain.get_object, 403, "AccessDenied", Bucket=bname, Key="k")

    creator.delete_object(Bucket=bname, Key="k")
    creator.delete_bucket(Bucket=bname)
    expect_client_error(creator.head_bucket, 404, "404", Bucket=bname)


# --------------------------------------------------------------------------------------------
# Quotas
# --------------------------------------------------------------------------------------------


def _bucket_with_quota(dev_cfg, cli, quotas: dict) -> str:
    bname = unique_bucket_name("quota")
    created = cli.json(dev_cfg, "bucket", "create", bname, "--json")
    cli.run(dev_cfg, "bucket", "allow", bname, "--key", dev_cfg.access_key, "--read", "--write",
            "--owner")
    r = admin(dev_cfg, "POST", f"/v1/buckets/{created['id']}", {"quotas": quotas})
    assert r.status_code == 200, r.text
    info = admin(dev_cfg, "GET", f"/v1/buckets/{created['id']}").json()
    for k, v in quotas.items():
        assert info["quotas"][k] == v, info
    return bname


def _quota_exceeded(exc) -> None:
    err = exc.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403, err
    assert err["Error"]["Code"] in ("QuotaExceeded", "AccessDenied"), err["Error"]


def test_quota_max_objects(dev_cfg, cli, s3):
    from botocore.exceptions import ClientError

    bname = _bucket_with_quota(dev_cfg, cli, {"max_objects": 2})
    try:
        wait_until(lambda: s3_allows(s3, "put_object", Bucket=bname, Key="1", Body=b"1"),
                   PERM_WAIT_S, "write access")
        s3.put_object(Bucket=bname, Key="2", Body=b"2")
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bname, Key="3", Body=b"3")
        _quota_exceeded(exc.value)
        expect_client_error(s3.head_object, 404, "404", Bucket=bname, Key="3")
        # Overwriting an existing key does not add an object.
        s3.put_object(Bucket=bname, Key="2", Body=b"2 again")
        s3.delete_object(Bucket=bname, Key="1")
        s3.put_object(Bucket=bname, Key="3", Body=b"3")
    finally:
        from storaged_proc import empty_and_delete_bucket

        empty_and_delete_bucket(s3, bname)


def test_quota_max_size(dev_cfg, cli, s3):
    from botocore.exceptions import ClientError

    bname = _bucket_with_quota(dev_cfg, cli, {"max_size": 1000})
    try:
        wait_until(lambda: s3_allows(s3, "put_object", Bucket=bname, Key="a", Body=b"a" * 600),
                   PERM_WAIT_S, "write access")
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bname, Key="b", Body=b"b" * 600)
        _quota_exceeded(exc.value)
        s3.put_object(Bucket=bname, Key="c", Body=b"c" * 300)
    finally:
        from storaged_proc import empty_and_delete_bucket

        empty_and_delete_bucket(s3, bname)


def test_force_delete_and_owner_tag_release(dev_cfg, cli, s3):
    """The operator's deletion policies: a non-empty bucket is only deleted with force, and
    an empty owner tag releases a bucket."""
    bname = unique_bucket_name("force")
    created = admin(dev_cfg, "POST", "/v1/buckets", {"name": bname, "owner_tag": "uid-1"}).json()
    assert created["owner_tag"] == "uid-1", created
    cli.run(dev_cfg, "bucket", "allow", bname, "--key", dev_cfg.access_key, "--read", "--write")
    s3.put_object(Bucket=bname, Key="small", Body=b"x")
    s3.put_object(Bucket=bname, Key="big", Body=b"y" * (200 * 1024))
    s3.create_multipart_upload(Bucket=bname, Key="pending")

    r = admin(dev_cfg, "POST", f"/v1/buckets/{created['id']}", {"owner_tag": ""})
    assert r.status_code == 200 and r.json().get("owner_tag") is None, r.text

    r = admin(dev_cfg, "DELETE", f"/v1/buckets/{created['id']}")
    assert r.status_code == 409 and r.json()["code"] == "BucketNotEmpty", r.text
    assert s3.get_object(Bucket=bname, Key="small")["Body"].read() == b"x", "refusal kept data"

    r = admin(dev_cfg, "DELETE", f"/v1/buckets/{created['id']}", force="true")
    assert r.status_code == 200, r.text
    assert admin(dev_cfg, "GET", "/v1/buckets", name=bname).status_code == 404
    expect_client_error(s3.head_bucket, 404, ("404", "NoSuchBucket"), Bucket=bname)
