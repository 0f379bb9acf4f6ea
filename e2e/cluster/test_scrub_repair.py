"""A chunk file corrupted on disk: a read through that node still returns the object intact,
and the scrub sets the bad copy aside and resync fetches a good one from a peer. A truncated
copy is caught by the read itself (no scrub), counted, and fetched again; a chunk corrupt on
every replica is never served as if it were whole."""

from __future__ import annotations

import hashlib
import re

import pytest
import requests

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


def chunk_file_on(node, plain_digest: str):
    """The file of `node` holding a chunk: by content for a plain file, else the only
    `.zst` file (the compressible test object is the only one stored compressed)."""
    p = node.chunk_contents().get(plain_digest)
    if p is not None:
        return p
    zst = [f for f in node.chunk_files().values() if f.name.endswith(".zst")]
    return zst[0] if len(zst) == 1 else None


def corrupt_total(node) -> float:
    text = requests.get(node.cfg.admin_endpoint + "/metrics", timeout=5).text
    m = re.search(r"^storaged_chunks_corrupt_total (\S+)$", text, re.M)
    assert m, "no storaged_chunks_corrupt_total metric"
    return float(m.group(1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["half", "empty", "zst-half"])
def test_truncated_chunk_caught_by_reads_and_repaired(make_cluster, how):
    # No scrub: the read path alone must catch the damage, report it and get it repaired.
    cluster = make_cluster(nodes=3, zones=3, settings={"background.scrub_interval_secs": 3600})
    n1, n2, n3 = cluster.nodes
    ledger = Ledger()
    if how.startswith("zst"):  # a compressible first chunk: stored as one zstd frame
        body = (b"storaged compressible chunk " * 40_000)[:MiB] + random_body(4321)
    else:
        body = random_body(2 * MiB + 4321)
    assert ledger.put(n1.s3(), cluster.bucket, "victim", body, via=n1.name)
    chunk = body[:MiB] if how.startswith("zst") else body[MiB : 2 * MiB]
    digest = hashlib.sha256(chunk).hexdigest()
    path = wait_until(lambda: chunk_file_on(n2, digest), 60,
                      "node 2 to hold the chunk")
    original = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(0 if how == "empty" else len(original) // 2)

    # Never served as good data: a read through node 2 is whole, and the damage is counted.
    ledger.verify({n2.name: n2.s3()}, cluster.bucket)
    wait_until(lambda: corrupt_total(n2) >= 1, 10, "node 2 to report the corrupt chunk")

    # Repaired from a peer without any scrub pass.
    def repaired() -> bool:
        p = chunk_file_on(n2, digest)
        return p is not None and p.read_bytes() == original

    wait_until(repaired, 60, "node 2's truncated chunk to be fetched again from a peer")
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)


@pytest.mark.timeout(120)
def test_chunk_corrupt_everywhere_is_never_served(make_cluster):
    cluster = make_cluster(nodes=3, zones=3, settings={"background.scrub_interval_secs": 3600})
    body = random_body(3 * MiB + 99)
    client = cluster.nodes[0].s3()
    client.put_object(Bucket=cluster.bucket, Key="doomed", Body=body)
    second = hashlib.sha256(body[MiB : 2 * MiB]).hexdigest()
    for n in cluster.nodes:
        path = wait_until(lambda: n.chunk_contents().get(second), 60, f"{n.name}'s copy")
        data = bytearray(path.read_bytes())
        data[500] ^= 0x01
        path.write_bytes(bytes(data))

    from botocore.exceptions import BotoCoreError, ClientError

    for n in cluster.nodes:
        try:
            got = n.s3(read_timeout=30).get_object(Bucket=cluster.bucket, Key="doomed")
            data = got["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError):
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                assert status >= 500, exc.response
            continue
        raise AssertionError(f"{n.name} served {len(data)} bytes of an object whose chunk is "
                             f"corrupt on every replica (equal: {data == body})")
    for n in cluster.nodes:
        n.check_alive("serving a chunk corrupt everywhere")
