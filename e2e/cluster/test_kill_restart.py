"""kill -9 of a node in the middle of a concurrent write load: writes through the other nodes
go on, and once the node is back every chunk is on every node again and every acknowledged
object reads back byte-identical from every node."""

from __future__ import annotations

import pytest

from storaged_proc import wait_until

from .harness import Ledger, Load, wait_chunks_everywhere


@pytest.mark.timeout(180)
def test_kill9_under_write_load_then_resync(make_cluster):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    load = Load(ledger, [(n1.name, n1.s3()), (n2.name, n2.s3())], cluster.bucket,
                threads=3, per_thread=14).start()

    # Kill node 3 once the load is well under way (objects in flight on every thread).
    wait_until(lambda: load.acked() >= 6 or ledger.errors, 60, "the load to get going")
    cluster.kill9(n3)
    before_kill = load.acked()
    load.join(120)
    assert not ledger.errors, "writes through live nodes failed:\n" + "\n".join(ledger.errors)
    assert len(ledger.acked) > before_kill, "writes went on while node 3 was down"

    cluster.restart(n3)
    cluster.wait_all_up(cluster.nodes)
    wait_chunks_everywhere(cluster.nodes, ledger.expected_chunks(), timeout=90)
    cluster.wait_fully_replicated(60)
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
