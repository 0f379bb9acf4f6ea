"""A whole zone (two nodes) stops: the two other zones keep serving reads and writes, nothing
acknowledged is lost, and the zone catches up when it returns."""

from __future__ import annotations

import pytest

from .harness import Ledger, Load, wait_chunks_everywhere


@pytest.mark.timeout(180)
def test_zone_down_reads_and_writes_go_on(make_cluster):
    cluster = make_cluster(nodes=4, zones=["dc1", "dc2", "dc3", "dc1"])
    dc1 = [n for n in cluster.nodes if n.zone == "dc1"]
    others = [n for n in cluster.nodes if n.zone != "dc1"]
    assert len(dc1) == 2 and len(others) == 2

    ledger = Ledger()
    clients = [(n.name, n.s3()) for n in others]
    Load(ledger, clients, cluster.bucket, threads=2, per_thread=6, prefix="before").start().join()
    assert not ledger.errors, ledger.errors

    for n in dc1:
        cluster.stop(n)
    cluster.wait_seen_down(dc1)

    # Writes and reads through the two remaining zones.
    Load(ledger, clients, cluster.bucket, threads=2, per_thread=6, prefix="during").start().join()
    assert not ledger.errors, "writes failed with zone dc1 down:\n" + "\n".join(ledger.errors)
    ledger.verify(dict(clients), cluster.bucket)

    # The zone returns and catches up.
    for n in dc1:
        cluster.restart(n)
    cluster.wait_all_up(cluster.nodes)
    cluster.wait_fully_replicated(90)
    # Each chunk is on 3 of the 4 nodes (one per zone): dc2 and dc3 hold every chunk, and
    # between them the two dc1 nodes hold every chunk too.
    expected = ledger.expected_chunks()
    wait_chunks_everywhere(others, expected, timeout=30)

    def dc1_has_all() -> bool:
        held = set()
        for n in dc1:
            held |= set(n.chunk_contents())
        return expected <= held

    from storaged_proc import wait_until

    wait_until(dc1_has_all, 90, "zone dc1 to catch up on every chunk")
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
