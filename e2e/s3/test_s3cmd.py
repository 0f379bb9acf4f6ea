"""s3cmd put / get / ls / del (path-style, SigV4, plain HTTP) against the real daemon."""

from __future__ import annotations

import pytest

from .helpers import file_sha256, run, write_random_file

MiB = 1 << 20


@pytest.fixture
def s3cmd(tool, client_env, dev_cfg, tmp_path):
    exe = tool("s3cmd")
    host = dev_cfg.endpoint.split("://", 1)[1]
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = {dev_cfg.access_key}\n"
        f"secret_key = {dev_cfg.secret_key}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {dev_cfg.region}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "check_ssl_certificate = False\n"
        "multipart_chunk_size_mb = 5\n"
    )

    def call(*args: str, check: bool = True, timeout: float = 180):
        return run([exe, "-c", str(cfg), "--no-ssl", f"--host={host}", f"--host-bucket={host}",
                    "--access_key", dev_cfg.access_key, "--secret_key", dev_cfg.secret_key,
                    *args], client_env, timeout=timeout, check=check)

    return call


@pytest.mark.timeout(240)
def test_s3cmd_put_get_ls_del(s3cmd, bucket, tmp_path, s3):
    small = tmp_path / "small.txt"
    small.write_bytes(b"s3cmd small file\n")
    big = write_random_file(tmp_path / "big.bin", 12 * MiB + 1)  # multipart (5 MiB chunks)

    s3cmd("put", str(small), f"s3://{bucket}/dir/small.txt")
    s3cmd("put", str(big), f"s3://{bucket}/dir/big.bin")
    assert s3.head_object(Bucket=bucket, Key="dir/big.bin")["ETag"].endswith('-3"')

    listing = s3cmd("ls", f"s3://{bucket}/dir/").stdout
    assert f"s3://{bucket}/dir/small.txt" in listing and f"s3://{bucket}/dir/big.bin" in listing
    rec = s3cmd("ls", "--recursive", f"s3://{bucket}").stdout
    assert str(12 * MiB + 1) in rec

    assert bucket in s3cmd("ls").stdout

    out_small, out_big = tmp_path / "small.back", tmp_path / "big.back"
    s3cmd("get", f"s3://{bucket}/dir/small.txt", str(out_small))
    s3cmd("get", f"s3://{bucket}/dir/big.bin", str(out_big))
    assert out_small.read_bytes() == small.read_bytes()
    assert file_sha256(out_big) == file_sha256(big)

    info = s3cmd("info", f"s3://{bucket}/dir/small.txt").stdout
    assert "17" in info  # size

    s3cmd("del", f"s3://{bucket}/dir/small.txt")
    assert f"s3://{bucket}/dir/small.txt" not in s3cmd("ls", f"s3://{bucket}/dir/").stdout
