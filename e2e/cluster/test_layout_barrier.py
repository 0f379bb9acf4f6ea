"""Layout transitions are a barrier, and a node removed while it was down pushes nothing back.

1. A node paused with SIGSTOP during a layout change (a node added, another removed) holds
   the transition back: the older version is not retired until it resumed, learned the new
   version and acknowledged it; writes go on through its peers while it is paused and through
   it once it resumed, and every acknowledged write reads back through every node after.
2. A node stopped, removed from the layout, and restarted after its objects were overwritten
   and deleted (tombstones collected) resurrects nothing: listings agree on every node.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from storaged_proc import wait_until

from .harness import Ledger, Load, list_keys


def log_lines(node, pattern: str) -> list[str]:
    try:
        text = node.log_path.read_text(errors="replace")
    except OSError:
        return []
    rx = re.compile(pattern)
    return [line for line in text.splitlines() if rx.search(line)]


RETIRED = "older layout versions retired"


@pytest.mark.timeout(300)
def test_paused_node_holds_the_transition_back(make_cluster):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    n4 = cluster.new_node("dc1", start=True)
    cluster.wait_all_up(cluster.nodes)
    retired_before = {n.name: len(log_lines(n, RETIRED)) for n in cluster.nodes}

    ledger = Ledger()
    # Node 4 has no role yet (it learns the keys once in the layout): peers are 1 and 2.
    peers = [(n1.name, n1.s3()), (n2.name, n2.s3())]
    load = Load(ledger, peers, cluster.bucket, threads=2, prefix="peers").start()
    resumed_load = None
    try:
        wait_until(lambda: load.acked() >= 4 or ledger.errors, 60, "the load to get going")
        # Node 3 (staying in the layout) freezes with the old layout and writes in flight.
        n3._killpg(signal.SIGSTOP)
        paused = True
        try:
            wait_until(lambda: n3.node_id not in n2.up_node_ids(), 30, "node 3 seen down")
            version = n2.layout()["version"] + 1
            n2.admin("POST", "/v1/layout/stage", {"changes": [
                {"node_id": n4.node_id, "role": cluster.role(n4)},
                {"node_id": n1.node_id, "role": None}]})
            n2.admin("POST", "/v1/layout/apply", {"version": version})
            wait_until(lambda: all(n.status()["layout_version"] >= version
                                   for n in (n1, n2, n4)), 30, "the new version to spread")
            # The transition waits for node 3's ack, and says so.
            short = n3.node_id[:8]
            wait_until(lambda: any(log_lines(n, f"waiting for acks.*{short}")
                                   for n in (n1, n2, n4)), 30,
                       "a node to wait for node 3's ack")
            acked = load.acked()
            wait_until(lambda: load.acked() >= acked + 6 or ledger.errors, 60,
                       "writes to go on through node 3's peers while it is paused")
            for n in (n1, n2, n4):
                assert len(log_lines(n, RETIRED)) == retired_before[n.name], \
                    f"{n.name} retired the old version while node 3 had not acked"
                assert not cluster.fully_replicated(n), f"{n.name}: transition already done"
        finally:
            n3._killpg(signal.SIGCONT)
            paused = False
        assert not paused
        # Writes through the resumed node, whose layout may still be the old one.
        resumed_load = Load(ledger, [(n3.name, n3.s3())], cluster.bucket, threads=1,
                            prefix="resumed").start()
        wait_until(lambda: resumed_load.acked() >= 4 or ledger.errors, 60,
                   "writes through the resumed node")
        cluster.wait_fully_replicated(120)
        acked = load.acked()
        wait_until(lambda: load.acked() >= acked + 4 or ledger.errors, 60,
                   "writes to go on after the transition")
    finally:
        load.stop()
        if resumed_load:
            resumed_load.stop()
    assert not ledger.errors, "writes failed:\n" + "\n".join(ledger.errors)
    assert any(len(log_lines(n, RETIRED)) > retired_before[n.name] for n in cluster.nodes)
    roles = {r["node_id"] for r in n2.layout()["roles"]}
    assert roles == {n2.node_id, n3.node_id, n4.node_id}, roles
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)


@pytest.mark.timeout(300)
def test_node_removed_while_down_resurrects_nothing(make_cluster):
    cluster = make_cluster(nodes=4, zones=["dc1", "dc2", "dc3", "dc1"],
                           settings={"background.tombstone_gc_delay_secs": 1})
    n1, n2, n3, n4 = cluster.nodes
    c1 = n1.s3()
    keys = [f"k{i:02d}" for i in range(24)]
    for k in keys:
        c1.put_object(Bucket=cluster.bucket, Key=k, Body=f"old {k}".encode())

    cluster.stop(n4)
    cluster.wait_seen_down([n4])
    collected_before = {n.name: len(log_lines(n, r"tombstone gc: object_v1: \d+ due, [1-9]\d* collected"))
                        for n in (n1, n2, n3)}
    cluster.change_layout([(n4, None)], via=n1)
    # Removed and down: the transition does not wait for it.
    cluster.wait_fully_replicated(90)

    overwritten, deleted = keys[::2], keys[1::2]
    for k in overwritten:
        c1.put_object(Bucket=cluster.bucket, Key=k, Body=f"new {k}".encode())
    for k in deleted:
        c1.delete_object(Bucket=cluster.bucket, Key=k)
    wait_until(lambda: any(len(log_lines(n, r"tombstone gc: object_v1: \d+ due, [1-9]\d* collected"))
                           > collected_before[n.name] for n in (n1, n2, n3)), 60,
               "the object tombstones to be collected")

    cluster.restart(n4)
    expected = sorted(overwritten)

    clients = {node.name: node.s3() for node in cluster.nodes}

    # n4 learns it owns nothing (it pulls the layout at start): it must push nothing back.

    def agree() -> None:
        for node in cluster.nodes:
            c = clients[node.name]
            listed = [k for k, _, _ in list_keys(c, cluster.bucket)]
            assert listed == expected, f"{node.name} lists {listed}"
            for k in overwritten:
                got = c.get_object(Bucket=cluster.bucket, Key=k)["Body"].read()
                assert got == f"new {k}".encode(), f"{k} via {node.name}: {got!r}"
            for k in deleted:
                with pytest.raises(Exception) as exc:
                    c.head_object(Bucket=cluster.bucket, Key=k)
                assert "404" in str(exc.value), f"{k} via {node.name}: {exc.value}"

    # The invariant holds at once and across the next anti-entropy passes (every 2 s).
    deadline = time.monotonic() + 8
    checks = 0
    while checks < 2 or time.monotonic() < deadline:
        agree()
        checks += 1
    refused = [line for n in (n1, n2, n3) for line in log_lines(n, "refused an anti-entropy push")]
    print(f"checks={checks} anti-entropy pushes refused from the removed node: {len(refused)}")
