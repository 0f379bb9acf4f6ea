"""Crash and restart: kill -9 in the middle of a large PUT never leaves a partial object, and
acknowledged writes survive. Also the `storaged dev` process contract (side by side, SIGTERM)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from storaged_proc import boto3_client, wait_until
from .helpers import UNSIGNED, expect_client_error, key_path, random_bytes, sign

MiB = 1 << 20
BIG = 64 * MiB


class KillingBody:
    """A 64 MiB request body read in 1 MiB pieces that kill -9s the server after `kill_at`
    bytes have been handed to the socket (deterministic: no timing involved)."""

    def __init__(self, blocks: list[bytes], kill_at: int, kill):
        self.blocks = blocks
        self.kill_at = kill_at
        self.kill = kill
        self.sent = 0
        self.killed = False
        self.total = sum(map(len, blocks))

    def __len__(self) -> int:
        return self.total

    def read(self, _n: int = -1) -> bytes:
        if self.sent >= self.kill_at and not self.killed:
            self.killed = True
            self.kill()
        idx = self.sent // MiB
        if idx >= len(self.blocks):
            return b""
        block = self.blocks[idx]
        self.sent += len(block)
        return block


def setup_server(instances, cli, name: str, **overrides):
    srv = instances.server(name, **overrides)
    cfg = cli.create_key(srv.cfg, "crash", create_bucket=True)
    cfg.bucket = "crash-bucket"
    client = boto3_client(cfg)
    client.create_bucket(Bucket=cfg.bucket)
    return srv, cfg, client


def put_previous_objects(client, bucket: str) -> dict[str, bytes]:
    objs = {"prev/small": b"small and inline", "prev/big": random_bytes(3 * MiB + 1),
            "prev/empty": b""}
    for k, v in objs.items():
        client.put_object(Bucket=bucket, Key=k, Body=v)
    return objs


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kill_at_mib", [8, 40, 64], ids=["early", "late", "after-body"])
def test_kill9_during_large_put(instances, cli, kill_at_mib):
    # Unreferenced chunks are collected at once, so the test can see the crashed upload's
    # chunks released after the restart.
    srv, cfg, client = setup_server(instances, cli, f"crash{kill_at_mib}",
                                    **{"background.block_gc_delay_secs": 0,
                                       "background.gc_interval_secs": 1})
    previous = put_previous_objects(client, cfg.bucket)

    blocks = [random_bytes(MiB) for _ in range(BIG // MiB)]
    path = key_path(cfg.bucket, "victim")
    host = cfg.endpoint.split("://", 1)[1]
    headers = sign("PUT", path, "", {"content-length": str(BIG)}, host=host,
                   access_key=cfg.access_key, secret_key=cfg.secret_key, region=cfg.region,
                   payload_hash=UNSIGNED)
    body = KillingBody(blocks, kill_at_mib * MiB, srv.kill9)
    try:
        resp = requests.put(cfg.endpoint + path, data=body, headers=headers, timeout=60)
        outcome = f"HTTP {resp.status_code}"
    except requests.RequestException as exc:
        outcome = f"connection error {type(exc).__name__}"
    if not body.killed:  # the server answered before asking for the rest: kill it now
        srv.kill9()
    assert not srv.alive()

    srv.start()
    client = boto3_client(cfg)
    from botocore.exceptions import ClientError

    victim_whole = False
    try:
        got = client.get_object(Bucket=cfg.bucket, Key="victim")
        data = got["Body"].read()
        victim_whole = True
        assert len(data) == BIG and hashlib.sha256(data).digest() == hashlib.sha256(
            b"".join(blocks)).digest(), (
            f"a partial object is visible after a crash ({len(data)} of {BIG} bytes; "
            f"client saw {outcome})"
        )
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchKey", exc.response
        listed = client.list_objects_v2(Bucket=cfg.bucket, Prefix="victim").get("Contents", [])
        assert listed == [], f"listed but not readable: {listed}"

    for k, v in previous.items():
        assert client.get_object(Bucket=cfg.bucket, Key=k)["Body"].read() == v, k
    # No chunk leaks: the interrupted upload is aborted at restart and its chunks collected;
    # only prev/big's 4 chunks (and the victim's 64 if it completed) remain.
    expected_chunks = 4 + (BIG // MiB if victim_whole else 0)
    data_dir = srv.root / "data"

    def chunk_files() -> int:
        return sum(1 for p in data_dir.rglob("*") if p.is_file() and ".tmp." not in p.name)

    wait_until(lambda: chunk_files() == expected_chunks, 30,
               f"chunk files to settle at {expected_chunks}")
    # And the node still takes writes, including the key that was being written.
    client.put_object(Bucket=cfg.bucket, Key="victim", Body=b"rewritten")
    assert client.get_object(Bucket=cfg.bucket, Key="victim")["Body"].read() == b"rewritten"


@pytest.mark.timeout(180)
def test_acknowledged_writes_survive_kill9(instances, cli):
    srv, cfg, client = setup_server(instances, cli, "acked")
    objs = put_previous_objects(client, cfg.bucket)
    client.put_object(Bucket=cfg.bucket, Key="to-delete", Body=b"gone soon")
    client.delete_object(Bucket=cfg.bucket, Key="to-delete")
    parts = [random_bytes(5 * MiB), random_bytes(1000)]
    uid = client.create_multipart_upload(Bucket=cfg.bucket, Key="mp")["UploadId"]
    etags = [client.upload_part(Bucket=cfg.bucket, Key="mp", UploadId=uid, PartNumber=i,
                                Body=p)["ETag"] for i, p in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=cfg.bucket, Key="mp", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    pending = client.create_multipart_upload(Bucket=cfg.bucket, Key="pending")["UploadId"]
    client.upload_part(Bucket=cfg.bucket, Key="pending", UploadId=pending, PartNumber=1,
                       Body=parts[0])

    srv.kill9()
    srv.start()
    client = boto3_client(cfg)
    for k, v in objs.items():
        assert client.get_object(Bucket=cfg.bucket, Key=k)["Body"].read() == v, k
    assert client.get_object(Bucket=cfg.bucket, Key="mp")["Body"].read() == b"".join(parts)
    expect_client_error(client.get_object, 404, "NoSuchKey", Bucket=cfg.bucket, Key="to-delete")
    ups = client.list_multipart_uploads(Bucket=cfg.bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in ups] == [("pending", pending)]
    lp = client.list_parts(Bucket=cfg.bucket, Key="pending", UploadId=pending)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in lp] == [(1, 5 * MiB)]
    # The key and its rights survived too (they live in the metadata tables).
    assert cfg.bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]


@pytest.mark.timeout(180)
def test_server_graceful_restart_keeps_data(instances, cli):
    srv, cfg, client = setup_server(instances, cli, "graceful")
    objs = put_previous_objects(client, cfg.bucket)
    rc = srv.stop()
    assert rc == 0, f"SIGTERM should be a clean shutdown, exit code {rc}\n{srv.log_tail()}"
    srv.start()
    client = boto3_client(cfg)
    for k, v in objs.items():
        assert client.get_object(Bucket=cfg.bucket, Key=k)["Body"].read() == v, k


# --------------------------------------------------------------------------------------------
# storaged dev as a process
# --------------------------------------------------------------------------------------------


def _pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # zombie: dead, not yet reaped


@pytest.mark.timeout(180)
def test_dev_instances_side_by_side_and_sigterm(dev, instances):
    second = instances.dev("second")
    assert second.cfg.endpoint != dev.cfg.endpoint
    assert second.cfg.admin_endpoint != dev.cfg.admin_endpoint
    for key in ("NODE1_ENDPOINT", "NODE1_ZONE", "NODE1_PID"):
        assert second.env.get(key), f"dev.env lacks {key}"
    a, b = boto3_client(dev.cfg), boto3_client(second.cfg)
    b.put_object(Bucket=second.cfg.bucket, Key="only-in-second", Body=b"2")
    assert b.get_object(Bucket=second.cfg.bucket, Key="only-in-second")["Body"].read() == b"2"
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        a.get_object(Bucket=second.cfg.bucket, Key="only-in-second")
    node_pid = int(second.env["NODE1_PID"])
    assert not _pid_gone(node_pid), "NODE1_PID is not a running process"

    rc = second.stop(kill_leftovers=False)
    assert rc == 0, f"dev exits cleanly on SIGTERM, got {rc}\n{second.log_tail()}"
    wait_until(lambda: _pid_gone(node_pid), 20, f"node process {node_pid} to die with dev")
    assert dev.alive(), "stopping one dev instance must not affect another"


@pytest.mark.timeout(180)
def test_dev_restart_keeps_data(instances):
    first = instances.dev("restart")
    client = boto3_client(first.cfg)
    body = random_bytes(2 * MiB + 3)
    client.put_object(Bucket=first.cfg.bucket, Key="persisted", Body=body)
    first_bucket = first.cfg.bucket
    first.stop()
    again = first.start()  # same --data-dir
    assert again.cfg.bucket == first_bucket, "dev keeps its bucket across restarts"
    client = boto3_client(again.cfg)
    assert client.get_object(Bucket=again.cfg.bucket, Key="persisted")["Body"].read() == body


def test_dev_env_file_contract(dev):
    text = dev.dev_env_path.read_text()
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.startswith("export "), f"dev.env line is not `export NAME=value`: {line!r}"
    assert dev.cfg.region == "us-east-1"
    assert dev.cfg.endpoint.startswith("http://127.0.0.1:")
    leftovers = [p.name for p in dev.data_dir.iterdir() if p.name.startswith("dev.env") and
                 p.name != "dev.env"]
    assert not leftovers, f"temp files of the atomic dev.env write were left behind: {leftovers}"
    assert os.stat(dev.dev_env_path).st_size > 0
