"""`storaged dev` as a local cluster: N node processes over Z zones, one dev.env that names
every node, a supervisor that outlives a node's kill -9 and takes its nodes down on SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from storaged_proc import S3Config, boto3_client, wait_until

from .harness import MiB, Ledger, random_body


def _pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # zombie: dead, not yet reaped


def node_cfg(dev, i: int) -> S3Config:
    assert dev.cfg
    return S3Config(endpoint=dev.env[f"NODE{i}_ENDPOINT"], access_key=dev.cfg.access_key,
                    secret_key=dev.cfg.secret_key, bucket=dev.cfg.bucket)


@pytest.mark.timeout(180)
def test_dev_three_nodes_three_zones(instances):
    dev = instances.dev("dev3")  # the defaults: --nodes 3 --zones 3
    assert dev.node_count() == 3, dev.env
    assert [dev.env[f"NODE{i}_ZONE"] for i in (1, 2, 3)] == ["dc1", "dc2", "dc3"]
    assert dev.env["AWS_ENDPOINT_URL"] == dev.env["NODE1_ENDPOINT"]
    endpoints = {dev.env[f"NODE{i}_ENDPOINT"] for i in (1, 2, 3)}
    assert len(endpoints) == 3, endpoints
    pids = [int(dev.env[f"NODE{i}_PID"]) for i in (1, 2, 3)]
    assert not any(_pid_gone(p) for p in pids), "a NODE<i>_PID is not a running process"

    # The layout gives every node a storage role in its zone, and the cluster is healthy.
    import requests

    headers = {"Authorization": f"Bearer {dev.cfg.admin_token}"}
    status = requests.get(dev.cfg.admin_endpoint + "/v1/status", headers=headers, timeout=10)
    status.raise_for_status()
    nodes = status.json()["nodes"]
    assert sorted((n["role"] or {}).get("zone", "-") for n in nodes) == ["dc1", "dc2", "dc3"], nodes
    assert all(n["is_up"] for n in nodes), nodes

    # Written through node 1, read through nodes 2 and 3.
    ledger = Ledger()
    for size in (10, 2 * MiB + 1):
        assert ledger.put(boto3_client(dev.cfg), dev.cfg.bucket, f"o{size}", random_body(size))
    ledger.verify({f"node{i}": boto3_client(node_cfg(dev, i)) for i in (2, 3)}, dev.cfg.bucket)

    # kill -9 of node 2: the supervisor keeps running, nodes 1 and 3 keep serving.
    os.kill(pids[1], signal.SIGKILL)
    wait_until(lambda: _pid_gone(pids[1]), 20, "node 2 to die")
    wait_until(lambda: f"node2 (pid {pids[1]}) exited" in dev.log_path.read_text(errors="replace"),
               20, "the supervisor to report node 2's exit")
    assert dev.alive(), "the dev supervisor died with a node\n" + dev.log_tail()
    assert ledger.put(boto3_client(node_cfg(dev, 3)), dev.cfg.bucket, "after-kill",
                      random_body(100_000), via="node3")
    ledger.verify({f"node{i}": boto3_client(node_cfg(dev, i)) for i in (1, 3)}, dev.cfg.bucket)

    # SIGTERM: the supervisor stops every node and exits cleanly.
    rc = dev.stop(kill_leftovers=False)
    assert rc == 0, f"dev exits cleanly on SIGTERM, got {rc}\n{dev.log_tail()}"
    for p in (pids[0], pids[2]):
        wait_until(lambda p=p: _pid_gone(p), 20, f"node process {p} to die with dev")


@pytest.mark.timeout(120)
def test_dev_single_node(instances):
    dev = instances.dev("dev1", nodes=1)
    assert dev.node_count() == 1, dev.env
    assert dev.env["NODE1_ZONE"] == "dc1"
    client = boto3_client(dev.cfg)
    client.put_object(Bucket=dev.cfg.bucket, Key="k", Body=b"v")
    assert client.get_object(Bucket=dev.cfg.bucket, Key="k")["Body"].read() == b"v"
