"""A node whose metadata store is damaged, or whose disks were wiped.

1. Damaged redb (truncated, or its header overwritten) while the node is stopped: `storaged
   server` refuses to start with one line on stderr naming the file and the repair command;
   `storaged repair -c <config>` sets the file aside; the node starts again with its identity
   and rebuilds its partitions from its peers (it answers no reads from its own tables until
   then). Checked in `degraded` mode (reads from one replica) with both peers paused: every
   acknowledged object, including the ones written while it was down, reads back through it
   alone, from its own tables and chunk files.
2. Wiped disks (metadata_dir and data_dir emptied): the node comes back as a new node (a new
   identity, no role) and says so; the documented way forward, giving it the old node's role
   and removing the old node (`storaged layout assign` / `remove` / `apply`), rebuilds its
   data from its peers, and nothing acknowledged is lost.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from storaged_proc import clean_env, wait_until

from .harness import Ledger, Load, list_keys, wait_chunks_everywhere


def run_storaged(node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `storaged <args>` with the environment the nodes get (RUST_BACKTRACE=1 too)."""
    env = clean_env()
    env.update(RUST_LOG="info", RUST_BACKTRACE="1", NO_COLOR="1")
    return subprocess.run([str(node.binary), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def damage(db: Path, how: str) -> None:
    size = db.stat().st_size
    assert size > 4096, f"{db} is only {size} bytes"
    if how == "truncated":
        with open(db, "r+b") as f:
            f.truncate(size // 2 + 123)
    else:  # the header: the first page, where redb's magic number and root pointers live
        with open(db, "r+b") as f:
            f.write(b"\x5a" * 512)


def metric(node, name: str) -> float | None:
    assert node.cfg and node.cfg.admin_endpoint
    text = requests.get(node.cfg.admin_endpoint + "/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def pause(nodes) -> None:
    for n in nodes:
        n._killpg(signal.SIGSTOP)


def resume(nodes) -> None:
    for n in nodes:
        n._killpg(signal.SIGCONT)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["truncated", "header"])
def test_damaged_metadata_store_refused_then_repaired_from_peers(make_cluster, how):
    cluster = make_cluster(nodes=3, zones=3, consistency_mode="degraded")
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    Load(ledger, [(n.name, n.s3()) for n in cluster.nodes], cluster.bucket, threads=2,
         per_thread=4, prefix="before").start().join()
    assert not ledger.errors, ledger.errors

    cluster.stop(n1)
    db = Path(str(n1.settings["metadata_dir"])) / "db.redb"
    damage(db, how)
    res = run_storaged(n1, "server", "-c", str(n1.config_path), timeout=30)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0, f"started on a damaged store:\n{res.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    line = lines[0]
    assert str(db) in line and "damaged" in line, line
    assert f"storaged repair -c {n1.config_path}" in line, line
    assert "panicked" not in res.stderr and "backtrace" not in res.stderr.lower(), res.stderr

    # Writes go on without it; it must get these from its peers.
    Load(ledger, [(n.name, n.s3()) for n in (n2, n3)], cluster.bucket, threads=2,
         per_thread=3, prefix="while-down").start().join()
    assert not ledger.errors, ledger.errors

    res = run_storaged(n1, "repair", "-c", str(n1.config_path))
    assert res.returncode == 0, f"repair failed:\n{res.stdout}\n{res.stderr}"
    aside = list(db.parent.glob("db.redb.damaged-*"))
    assert len(aside) == 1 and not db.exists(), (aside, res.stdout, res.stderr)
    assert str(aside[0]) in res.stdout + res.stderr, res.stdout + res.stderr

    cluster.restart(n1)  # asserts it kept its node id
    wait_until(lambda: metric(n1, "storaged_metadata_rebuilding") == 0, 60,
               "node 1 to rebuild its metadata from its peers", on_timeout=n1.log_tail)
    # The chunks of the writes it missed arrive by resync, once their references did.
    wait_chunks_everywhere([n1], ledger.expected_chunks(), timeout=60)

    # Alone (both peers frozen), with one-replica reads: everything is on node 1 itself.
    pause([n2, n3])
    try:
        ledger.verify({n1.name: n1.s3(read_timeout=20)}, cluster.bucket)
        listed = {k for k, _, _ in list_keys(n1.s3(read_timeout=20), cluster.bucket)}
        assert listed == set(ledger.acked), set(ledger.acked) ^ listed
    finally:
        resume([n2, n3])
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)


@pytest.mark.timeout(150)
def test_wiped_node_rejoins_as_new_node_and_rebuilds(make_cluster, cli):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    Load(ledger, [(n.name, n.s3()) for n in cluster.nodes], cluster.bucket, threads=2,
         per_thread=4, prefix="before").start().join()
    assert not ledger.errors, ledger.errors
    old_id = n3.node_id

    cluster.stop(n3)
    for d in (Path(str(n3.settings["metadata_dir"])), n3.data_dir):
        for child in d.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    load = Load(ledger, [(n.name, n.s3()) for n in (n1, n2)], cluster.bucket, threads=2,
                prefix="during").start()
    try:
        cluster.start_nodes([n3])
        assert n3.node_id != old_id, "a wiped node cannot have kept its key"
        assert "new identity" in n3.log_path.read_text(errors="replace"), n3.log_tail()
        cluster.wait_all_up([n1, n2, n3])
        r = requests.get(n3.cfg.admin_endpoint + "/ready", timeout=5)
        assert r.status_code == 503 and "no role" in r.text, (r.status_code, r.text)

        # The documented way forward: the new node takes the old one's role.
        version = n1.layout()["version"]
        cli.run(n1.cfg, "layout", "assign", n3.node_id[:16], "--zone", n3.zone,
                "--capacity", "1G")
        cli.run(n1.cfg, "layout", "remove", old_id[:16])
        cli.run(n1.cfg, "layout", "apply", "--version", str(version + 1))
        cluster.wait_layout_version(version + 1)
        at_apply = load.acked()
        wait_until(lambda: load.acked() >= at_apply + 4, 60, "writes to go on after the change")
    finally:
        load.stop()
    assert not ledger.errors, "writes failed:\n" + "\n".join(ledger.errors)
    cluster.wait_fully_replicated(90)
    wait_chunks_everywhere(cluster.nodes, ledger.expected_chunks(), timeout=60)
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
