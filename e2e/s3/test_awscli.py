"""aws-cli (`aws s3` and `aws s3api`) against the real daemon, configured only through the
environment that `storaged dev` writes to dev.env (AWS_ENDPOINT_URL and friends)."""

from __future__ import annotations

import json
import pytest

from storaged_proc import unique_bucket_name
from .helpers import file_sha256, make_tree, md5_hex, multipart_etag, run, tree_digest, write_random_file

MiB = 1 << 20


@pytest.fixture
def aws(tool, client_env):
    exe = tool("aws")

    def call(*args: str, check: bool = True, timeout: float = 180):
        return run([exe, *args], client_env, timeout=timeout, check=check)

    def api(*args: str):
        res = call("s3api", *args, "--output", "json")
        return json.loads(res.stdout) if res.stdout.strip() else {}

    call.api = api  # type: ignore[attr-defined]
    return call


def test_mb_ls_rb(aws, s3):
    name = unique_bucket_name("awscli-mb")
    aws("s3", "mb", f"s3://{name}")
    try:
        assert name in aws("s3", "ls").stdout
        s3.head_bucket(Bucket=name)
    finally:
        aws("s3", "rb", f"s3://{name}", check=False)
    assert name not in aws("s3", "ls").stdout
    assert aws("s3", "ls", f"s3://{name}", check=False).returncode != 0


def test_cp_up_down_ls_rm(aws, bucket, tmp_path):
    src = tmp_path / "small file.txt"
    src.write_bytes(b"hello from aws-cli\n" * 100)
    aws("s3", "cp", str(src), f"s3://{bucket}/docs/small file.txt")
    listing = aws("s3", "ls", f"s3://{bucket}/docs/").stdout
    assert "small file.txt" in listing and str(src.stat().st_size) in listing
    dst = tmp_path / "back.txt"
    aws("s3", "cp", f"s3://{bucket}/docs/small file.txt", str(dst))
    assert dst.read_bytes() == src.read_bytes()
    # stdin / stdout streaming
    res = aws("s3", "cp", f"s3://{bucket}/docs/small file.txt", "-")
    assert res.stdout.encode() == src.read_bytes()
    aws("s3", "rm", f"s3://{bucket}/docs/small file.txt")
    assert "small file.txt" not in aws("s3", "ls", f"s3://{bucket}/docs/", check=False).stdout


@pytest.mark.timeout(300)
def test_cp_40mib_multipart(aws, bucket, tmp_path, s3):
    src = write_random_file(tmp_path / "big.bin", 40 * MiB)
    aws("s3", "cp", str(src), f"s3://{bucket}/big.bin")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == 40 * MiB
    data = src.read_bytes()
    parts = [data[i : i + 8 * MiB] for i in range(0, len(data), 8 * MiB)]
    assert head["ETag"] == multipart_etag(parts), "aws-cli uploads 40 MiB as 5 parts of 8 MiB"
    dst = tmp_path / "big.back"
    aws("s3", "cp", f"s3://{bucket}/big.bin", str(dst))
    assert file_sha256(dst) == file_sha256(src)


@pytest.mark.timeout(300)
def test_sync_both_ways(aws, bucket, tmp_path, s3):
    up = tmp_path / "up"
    digests = make_tree(up, {
        "a.txt": b"alpha",
        "dir/b.bin": 100_000,
        "dir/sub/c.bin": 9 * MiB + 3,  # multipart
        "dir/sub/deeper/d with space.txt": b"delta",
        "ünïcödé/e.txt": b"epsilon",
        "empty.txt": b"",
    })
    aws("s3", "sync", str(up), f"s3://{bucket}/tree")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tree/")["Contents"])
    assert keys == sorted(f"tree/{k}" for k in digests)

    # A second sync transfers nothing.
    again = aws("s3", "sync", str(up), f"s3://{bucket}/tree").stdout
    assert "upload:" not in again, again

    down = tmp_path / "down"
    aws("s3", "sync", f"s3://{bucket}/tree", str(down))
    assert tree_digest(down) == digests

    # Changes and deletions propagate with --delete.
    (up / "a.txt").write_bytes(b"alpha, changed and longer")
    (up / "dir/b.bin").unlink()
    (up / "new.txt").write_bytes(b"new")
    aws("s3", "sync", "--delete", str(up), f"s3://{bucket}/tree")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tree/")["Contents"])
    assert "tree/dir/b.bin" not in keys and "tree/new.txt" in keys
    assert s3.get_object(Bucket=bucket, Key="tree/a.txt")["Body"].read() == b"alpha, changed and longer"
    aws("s3", "sync", "--delete", f"s3://{bucket}/tree", str(down))
    assert tree_digest(down) == tree_digest(up)


def test_s3api_objects(aws, bucket, tmp_path):
    body = tmp_path / "body.bin"
    body.write_bytes(b"s3api body " * 1000)
    put = aws.api("put-object", "--bucket", bucket, "--key", "api/obj", "--body", str(body),
                  "--content-type", "text/x-api", "--metadata", "k1=v1,k2=v2")
    assert put["ETag"] == f'"{md5_hex(body.read_bytes())}"'

    head = aws.api("head-object", "--bucket", bucket, "--key", "api/obj")
    assert head["ContentLength"] == body.stat().st_size
    assert head["ContentType"] == "text/x-api"
    assert head["Metadata"] == {"k1": "v1", "k2": "v2"}

    out = tmp_path / "out.bin"
    got = aws.api("get-object", "--bucket", bucket, "--key", "api/obj", str(out))
    assert out.read_bytes() == body.read_bytes()
    assert got["ETag"] == put["ETag"]

    out2 = tmp_path / "range.bin"
    aws.api("get-object", "--bucket", bucket, "--key", "api/obj", "--range", "bytes=0-9", str(out2))
    assert out2.read_bytes() == body.read_bytes()[:10]

    lst = aws.api("list-objects-v2", "--bucket", bucket, "--prefix", "api/")
    assert [o["Key"] for o in lst["Contents"]] == ["api/obj"]

    # copy-object: COPY keeps metadata, REPLACE swaps it.
    aws.api("copy-object", "--bucket", bucket, "--key", "api/copy",
            "--copy-source", f"{bucket}/api/obj", "--metadata-directive", "COPY")
    h = aws.api("head-object", "--bucket", bucket, "--key", "api/copy")
    assert h["Metadata"] == {"k1": "v1", "k2": "v2"} and h["ContentType"] == "text/x-api"
    aws.api("copy-object", "--bucket", bucket, "--key", "api/replaced",
            "--copy-source", f"{bucket}/api/obj", "--metadata-directive", "REPLACE",
            "--metadata", "k3=v3", "--content-type", "text/x-replaced")
    h = aws.api("head-object", "--bucket", bucket, "--key", "api/replaced")
    assert h["Metadata"] == {"k3": "v3"} and h["ContentType"] == "text/x-replaced"

    deleted = aws.api("delete-objects", "--bucket", bucket, "--delete", json.dumps(
        {"Objects": [{"Key": "api/copy"}, {"Key": "api/replaced"}]}))
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["api/copy", "api/replaced"]
    lst = aws.api("list-objects-v2", "--bucket", bucket, "--prefix", "api/")
    assert [o["Key"] for o in lst["Contents"]] == ["api/obj"]


def test_s3api_multipart(aws, bucket, tmp_path, s3):
    parts = [tmp_path / "p1", tmp_path / "p2"]
    write_random_file(parts[0], 5 * MiB)
    write_random_file(parts[1], 1234)
    up = aws.api("create-multipart-upload", "--bucket", bucket, "--key", "mp/obj")
    uid = up["UploadId"]
    listed = aws.api("list-multipart-uploads", "--bucket", bucket)
    assert [u["UploadId"] for u in listed["Uploads"]] == [uid]
    etags = []
    for i, p in enumerate(parts, 1):
        r = aws.api("upload-part", "--bucket", bucket, "--key", "mp/obj", "--upload-id", uid,
                    "--part-number", str(i), "--body", str(p))
        etags.append(r["ETag"])
    lp = aws.api("list-parts", "--bucket", bucket, "--key", "mp/obj", "--upload-id", uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in lp["Parts"]] == [
        (1, etags[0], 5 * MiB), (2, etags[1], 1234)]
    spec = tmp_path / "parts.json"
    spec.write_text(json.dumps({"Parts": [{"PartNumber": i, "ETag": e}
                                          for i, e in enumerate(etags, 1)]}))
    done = aws.api("complete-multipart-upload", "--bucket", bucket, "--key", "mp/obj",
                   "--upload-id", uid, "--multipart-upload", f"file://{spec}")
    datas = [p.read_bytes() for p in parts]
    assert done["ETag"] == multipart_etag(datas)
    assert s3.get_object(Bucket=bucket, Key="mp/obj")["Body"].read() == b"".join(datas)

    # abort
    up2 = aws.api("create-multipart-upload", "--bucket", bucket, "--key", "mp/aborted")
    aws.api("upload-part", "--bucket", bucket, "--key", "mp/aborted", "--upload-id",
            up2["UploadId"], "--part-number", "1", "--body", str(parts[1]))
    aws.api("abort-multipart-upload", "--bucket", bucket, "--key", "mp/aborted", "--upload-id",
            up2["UploadId"])
    assert not aws.api("list-multipart-uploads", "--bucket", bucket).get("Uploads")
