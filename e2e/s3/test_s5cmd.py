"""s5cmd cp / ls / rm (and its multipart uploads) against the real daemon."""

from __future__ import annotations

import pytest

from .helpers import file_sha256, run, write_random_file

MiB = 1 << 20


@pytest.fixture
def s5cmd(tool, client_env, dev_cfg):
    exe = tool("s5cmd")

    def call(*args: str, check: bool = True, timeout: float = 180):
        return run([exe, "--endpoint-url", dev_cfg.endpoint, "-r", "1", *args], client_env,
                   timeout=timeout, check=check)

    return call


@pytest.mark.timeout(240)
def test_s5cmd_cp_ls_rm(s5cmd, bucket, tmp_path, s3):
    small = tmp_path / "small.txt"
    small.write_bytes(b"s5cmd\n")
    big = write_random_file(tmp_path / "big.bin", 12 * MiB + 9)

    s5cmd("cp", str(small), f"s3://{bucket}/d/small.txt")
    s5cmd("cp", "--part-size", "5", str(big), f"s3://{bucket}/d/big.bin")
    assert s3.head_object(Bucket=bucket, Key="d/big.bin")["ETag"].endswith('-3"')

    listing = s5cmd("ls", f"s3://{bucket}/d/*").stdout
    assert "small.txt" in listing and "big.bin" in listing and str(12 * MiB + 9) in listing

    out = tmp_path / "out"
    out.mkdir()
    s5cmd("cp", f"s3://{bucket}/d/*", f"{out}/")
    assert (out / "small.txt").read_bytes() == small.read_bytes()
    assert file_sha256(out / "big.bin") == file_sha256(big)

    s5cmd("rm", f"s3://{bucket}/d/small.txt")
    listing = s5cmd("ls", f"s3://{bucket}/d/*").stdout
    assert "small.txt" not in listing and "big.bin" in listing
    s5cmd("rm", f"s3://{bucket}/d/*")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_s5cmd_many_small_files(s5cmd, bucket, tmp_path, s3):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(60):
        (src / f"f{i:03d}.txt").write_bytes(f"file {i}".encode())
    s5cmd("cp", f"{src}/*", f"s3://{bucket}/many/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="many/")["Contents"]]
    assert keys == [f"many/f{i:03d}.txt" for i in range(60)]
