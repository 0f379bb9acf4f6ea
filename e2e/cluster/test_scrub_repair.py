"""A chunk file corrupted on disk: a read through that node still returns the object intact,
and the scrub sets the bad copy aside and resync fetches a good one from a peer."""

from __future__ import annotations

import hashlib

import pytest

from storaged_proc import wait_until

from .harness import MiB, Ledger, random_body


@pytest.mark.timeout(120)
def test_corrupt_chunk_is_repaired(make_cluster):
    cluster = make_cluster(nodes=3, zones=3, settings={
        "background.scrub_interval_secs": 1,
        "background.scrub_pause_ms": 0,
    })
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    body = random_body(2 * MiB + 4321)
    assert ledger.put(n1.s3(), cluster.bucket, "victim", body, via=n1.name)
    second_chunk = body[MiB : 2 * MiB]
    digest = hashlib.sha256(second_chunk).hexdigest()
    path = wait_until(lambda: n2.chunk_contents().get(digest), 60,
                      "node 2 to hold the object's second chunk")

    # Flip bytes in the middle of the file, same length (what bit rot looks like).
    data = bytearray(path.read_bytes())
    assert bytes(data) == second_chunk, "a random chunk is stored as plain bytes"
    for i in range(1000, 1064):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))

    # A read through the node with the bad copy is intact (verified read, other replica).
    ledger.verify({n2.name: n2.s3()}, cluster.bucket)

    # The scrub notices, and the good bytes come back from a peer.
    def repaired() -> bool:
        p = n2.chunk_contents().get(digest)
        return p is not None and p.read_bytes() == second_chunk

    wait_until(repaired, 60, "node 2's corrupt chunk to be repaired from a peer")
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
