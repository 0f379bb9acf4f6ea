"""Restarts under a write load.

1. SIGTERM of the node the clients write through: requests in flight finish (a 200 means
   stored; an upload a third sent when the signal comes completes) or fail with a connection
   error, the daemon exits 0 within a deadline, and every
   acknowledged object reads back through the other nodes and, once it is back, through it.
2. kill -9 of a node, 5 times in a row, under load: it is ready again within a deadline each
   time, and at the end it holds every chunk it should and reads every acknowledged object.
3. A rolling restart, one node at a time under load, from the binary `STORAGED_OLD_BIN` names
   to the one under test (`STORAGED_BIN`): old and new nodes run side by side. Without
   `STORAGED_OLD_BIN` every node runs the binary under test (a plain rolling restart).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from storaged_proc import wait_until

from .harness import MiB, Ledger, Load, wait_chunks_everywhere

# Exit deadline after SIGTERM: requests in flight are short (a few MiB at most).
SIGTERM_EXIT_S = 15
KILL_CYCLES = 5


def connection_error(exc: BaseException) -> bool:
    from botocore.exceptions import (ConnectionClosedError, ConnectTimeoutError,
                                     EndpointConnectionError, ReadTimeoutError)

    return isinstance(exc, (ConnectionClosedError, EndpointConnectionError,
                            ConnectTimeoutError, ReadTimeoutError))


class TerminatingBody:
    """A request body of `blocks` that SIGTERMs `node` once `term_at` bytes were read, then
    goes on sending the rest: the request is in flight when the daemon is told to stop."""

    def __init__(self, blocks: list[bytes], term_at: int, node):
        self.blocks, self.term_at, self.node = blocks, term_at, node
        self.sent = 0
        self.termed_at: float | None = None
        self.total = sum(map(len, blocks))

    def __len__(self) -> int:
        return self.total

    def read(self, _n: int = -1) -> bytes:
        if self.sent >= self.term_at and self.termed_at is None:
            self.termed_at = time.monotonic()
            self.node.proc.terminate()
        idx = self.sent // MiB
        if idx >= len(self.blocks):
            return b""
        self.sent += len(self.blocks[idx])
        return self.blocks[idx]


def signed_put(node, bucket: str, key: str, body: TerminatingBody):
    from s3.helpers import UNSIGNED, key_path, sign

    cfg = node.key
    path = key_path(bucket, key)
    host = cfg.endpoint.split("://", 1)[1]
    headers = sign("PUT", path, "", {"content-length": str(len(body))}, host=host,
                   access_key=cfg.access_key, secret_key=cfg.secret_key, region=cfg.region,
                   payload_hash=UNSIGNED)
    return requests.put(cfg.endpoint + path, data=body, headers=headers, timeout=60)


@pytest.mark.timeout(120)
def test_sigterm_under_load_drains_and_loses_nothing(make_cluster):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    # Every writer goes through node 1 only, so SIGTERM catches requests in flight there.
    load = Load(ledger, [(n1.name, n1.s3(read_timeout=30))], cluster.bucket, threads=4,
                prefix="term").start()
    wait_until(lambda: load.acked() >= 12 or ledger.errors, 60, "the load to get going")
    assert not ledger.errors, ledger.errors
    assert n1.proc
    # A 12 MiB upload whose body is a third sent when SIGTERM arrives: it must complete.
    blocks = [os.urandom(MiB) for _ in range(12)]
    body = TerminatingBody(blocks, 4 * MiB, n1)
    resp = signed_put(n1, cluster.bucket, "in-flight", body)
    assert body.termed_at is not None
    assert resp.status_code == 200, f"the upload in flight at SIGTERM: {resp.status_code} {resp.text}"
    ledger.acked["in-flight"] = b"".join(blocks)
    try:
        rc = n1.proc.wait(timeout=SIGTERM_EXIT_S)
    except Exception:  # noqa: BLE001 - reported below with the log
        rc = None
    took = time.monotonic() - body.termed_at
    load.stop()
    assert rc == 0, f"exit code {rc} {took:.1f}s after SIGTERM\n{n1.log_tail()}"
    unclean = [f"PUT {k} via {v}: {e!r}" for k, v, e in ledger.failures
               if not connection_error(e)]
    assert not unclean, "writes failed other than by a closed connection:\n" + "\n".join(unclean)
    assert ledger.failures, "the load should have seen the node go away"
    ledger.verify({n.name: n.s3() for n in (n2, n3)}, cluster.bucket)
    cluster.restart(n1)
    ledger.verify({n1.name: n1.s3()}, cluster.bucket)


@pytest.mark.timeout(180)
def test_kill9_loop_under_load_restarts_and_catches_up(make_cluster):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    load = Load(ledger, [(n.name, n.s3(read_timeout=20)) for n in (n1, n2)], cluster.bucket,
                threads=3, prefix="loop").start()
    try:
        for cycle in range(KILL_CYCLES):
            before = load.acked()
            wait_until(lambda: load.acked() >= before + 3 or ledger.errors, 60,
                       f"writes before kill #{cycle + 1}")
            cluster.kill9(n3)
            t0 = time.monotonic()
            cluster.restart(n3)  # ready (health + S3 port) within READY_TIMEOUT_S, same id
            assert time.monotonic() - t0 < 30, f"restart #{cycle + 1} took too long"
            # Through the restarted node too, before the next kill.
            assert ledger.put(n3.s3(), cluster.bucket, f"via-n3/{cycle}", os.urandom(300_000),
                              via=n3.name), ledger.errors[-1:]
    finally:
        load.stop()
    assert not ledger.errors, "writes failed:\n" + "\n".join(ledger.errors)
    assert n3.starts == KILL_CYCLES + 1
    cluster.wait_all_up(cluster.nodes)
    wait_chunks_everywhere(cluster.nodes, ledger.expected_chunks(), timeout=90)
    cluster.wait_fully_replicated(60)
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)


@pytest.mark.timeout(180)
def test_rolling_restart_old_and_new_binaries(make_cluster, storaged_bin):
    old = os.environ.get("STORAGED_OLD_BIN")
    old_bin = Path(old) if old else storaged_bin
    assert old_bin.is_file(), f"STORAGED_OLD_BIN={old} is not a file"
    cluster = make_cluster(nodes=3, zones=3, start=False)
    for n in cluster.nodes:
        n.binary = old_bin
    cluster.start()
    ledger = Ledger()
    Load(ledger, [(n.name, n.s3()) for n in cluster.nodes], cluster.bucket, threads=2,
         per_thread=3, prefix="old").start().join()
    assert not ledger.errors, ledger.errors

    for i, node in enumerate(cluster.nodes):
        others = [n for n in cluster.nodes if n is not node]
        load = Load(ledger, [(n.name, n.s3(read_timeout=20)) for n in others], cluster.bucket,
                    threads=2, prefix=f"roll{i}").start()
        try:
            wait_until(lambda: load.acked() >= 2 or ledger.errors, 60, "the load to get going")
            cluster.stop(node)  # SIGTERM: exit 0 asserted
            node.binary = storaged_bin
            cluster.restart(node)
            cluster.wait_all_up(cluster.nodes)
            # Writes through the upgraded node, read back through a node still on the old
            # binary (or the other way round), while both run.
            key = f"mixed/{i}"
            assert ledger.put(node.s3(), cluster.bucket, key, os.urandom(1_500_000),
                              via=node.name), ledger.errors[-1:]
            for n in others:
                got = n.s3().get_object(Bucket=cluster.bucket, Key=key)["Body"].read()
                assert got == ledger.acked[key], f"{key} read through {n.name}"
            at = load.acked()
            wait_until(lambda: load.acked() >= at + 2 or ledger.errors, 60,
                       "writes after the restart")
        finally:
            load.stop()
        assert not ledger.errors, f"writes failed while {node.name} restarted:\n" + "\n".join(
            ledger.errors)
    cluster.wait_fully_replicated(60)
    wait_chunks_everywhere(cluster.nodes, ledger.expected_chunks(), timeout=60)
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
    print(f"rolling restart from {old_bin} to {storaged_bin}")
