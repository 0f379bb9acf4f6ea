"""A layout change completes while clients keep writing: the transition waits for the chunks
that were missing when it started, not for the ones continuous writes keep adding, so the old
layout version is retired (every partition fully replicated again) without pausing clients."""

from __future__ import annotations

import pytest

from storaged_proc import wait_until

from .harness import Ledger, Load


@pytest.mark.timeout(240)
def test_layout_change_completes_under_continuous_writes(make_cluster):
    cluster = make_cluster(nodes=3, zones=3)
    _, n2, n3 = cluster.nodes
    n4 = cluster.new_node("dc1", start=True)
    cluster.wait_all_up(cluster.nodes)

    ledger = Ledger()
    clients = [(n2.name, n2.s3()), (n3.name, n3.s3())]
    load = Load(ledger, clients, cluster.bucket, threads=2, prefix="steady").start()
    try:
        wait_until(lambda: load.acked() >= 6 or ledger.errors, 60, "the load to get going")
        cluster.change_layout([(n4, cluster.role(n4))], via=n2)
        before = load.acked()
        # Fully replicated again (older version retired) while the writers still run.
        cluster.wait_fully_replicated(120)
        assert not load.stop_event.is_set()
        wait_until(lambda: load.acked() >= before + 4 or ledger.errors, 60,
                   "writes to go on after the transition")
    finally:
        load.stop()
    assert not ledger.errors, "writes failed during the transition:\n" + "\n".join(ledger.errors)
    print(f"writes acknowledged while the layout changed: {load.acked() - before}")
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
