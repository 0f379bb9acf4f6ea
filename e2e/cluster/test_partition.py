"""Network partitions: three nodes (three zones, rf 3, consistent mode), each storaged in its
own network namespace (see netns.py). Cutting node C's link to the peer bridge drops every
packet between C and the other nodes, while the test process still reaches C's S3 and admin
APIs over C's own access link.

* The majority side (A, B) keeps serving reads and writes; the minority C refuses writes
  with 503 ServiceUnavailable (it cannot reach a write quorum of 2), never 200.
* After the link comes back, both sides converge: what the majority wrote (and deleted)
  during the partition reads back byte-identical through C, listings are identical on every
  node, and C holds the chunks on its own disk.
"""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from storaged_proc import wait_until

from .harness import MiB, Ledger, Load, list_keys, random_body, wait_chunks_everywhere
from .netns import NetLab, NetnsCluster, NetnsNode, require_netns

# Mixed sizes: empty, inline (<= 8 KiB), one chunk, several chunks.
SIZES = (0, 100, 5_000, 64 * 1024, 700 * 1024, MiB + 17, 2 * MiB + 12_345)


@pytest.fixture
def partition_cluster(instances) -> Iterator[NetnsCluster]:
    """A started 3-node cluster in network namespaces; at teardown the nodes are stopped and
    every namespace and link is deleted, whatever happened."""
    require_netns()
    lab = NetLab(3).create()
    cluster: NetnsCluster | None = None
    try:
        cluster = NetnsCluster(lab, instances.binary, instances.root / "p", instances.started.append,
                               nodes=3, zones=["dc1", "dc2", "dc3"], replication_factor=3,
                               consistency_mode="consistent", name="p")
        cluster.start()
        yield cluster
    finally:
        errors: list[str] = []
        for n in (cluster.nodes if cluster else []):
            try:
                n.stop()
            except AssertionError as exc:
                errors.append(str(exc))
        errors += lab.destroy()
        if errors:
            pytest.fail("partition teardown:\n" + "\n".join(errors))


def wait_partitioned(cluster: NetnsCluster, minority: NetnsNode, timeout: float = 30) -> None:
    """Both sides of the cut see the other side down."""
    majority = [n for n in cluster.nodes if n is not minority]
    maj_ids = {n.node_id for n in majority}
    wait_until(lambda: all(minority.node_id not in n.up_node_ids() for n in majority)
               and not (maj_ids & minority.up_node_ids()), timeout,
               f"{minority.name} and {[n.name for n in majority]} to see each other down")


def put_on_minority(client, bucket: str, key: str, body: bytes) -> str:
    """A PUT through the isolated node; returns '<http status> <code>'."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        return f"{exc.response['ResponseMetadata']['HTTPStatusCode']} {err.get('Code')}"
    return "200 OK"


def get_status(client, bucket: str, key: str) -> str:
    try:
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        return f"{exc.response['ResponseMetadata']['HTTPStatusCode']} {err.get('Code')}"
    return "200 OK"


def wait_same_listing(cluster: NetnsCluster, timeout: float = 30) -> list[tuple[str, int, str]]:
    """Waits until every node lists the same (key, size, ETag) entries; returns them."""
    lists: dict[str, list] = {}

    def same() -> bool:
        lists.clear()
        lists.update({n.name: list_keys(n.s3(), cluster.bucket) for n in cluster.nodes})
        return len({repr(v) for v in lists.values()}) == 1

    wait_until(same, timeout, "identical listings on every node",
               on_timeout=lambda: "\n".join(f"{k}: {len(v)} keys" for k, v in lists.items()))
    return next(iter(lists.values()))


def start_partitioned(cluster: NetnsCluster, ledger: Ledger) -> tuple[list[NetnsNode], NetnsNode]:
    """Writes a first batch through every node, then cuts node 3 off its peers."""
    a, b, c = cluster.nodes
    Load(ledger, [(n.name, n.s3()) for n in cluster.nodes], cluster.bucket, threads=3,
         per_thread=4, prefix="before", sizes=SIZES).start().join()
    assert not ledger.errors, ledger.errors
    cluster.lab.cut(c.index)
    wait_partitioned(cluster, c)
    return [a, b], c


@pytest.mark.timeout(120)
def test_minority_refuses_writes_majority_serves(partition_cluster: NetnsCluster):
    cluster = partition_cluster
    ledger = Ledger()
    majority, c = start_partitioned(cluster, ledger)

    # The majority side goes on: every PUT through A or B succeeds, every object reads back.
    clients = [(n.name, n.s3()) for n in majority]
    Load(ledger, clients, cluster.bucket, threads=2, per_thread=7, prefix="during",
         sizes=SIZES).start().join()
    assert not ledger.errors, "writes failed on the majority side:\n" + "\n".join(ledger.errors)

    # The minority refuses writes: 503 ServiceUnavailable, never 200 (nor another error).
    # One attempt per request (the harness's clients retry a 503 once).
    c_client = c.s3(retries={"total_max_attempts": 1, "mode": "standard"})
    refused: dict[str, bytes] = {}
    outcomes: dict[str, str] = {}
    timings: list[str] = []
    for i, size in enumerate(SIZES):
        key, body = f"minority/o{i}", random_body(size)
        ledger.written += 1
        t0 = time.monotonic()
        outcomes[f"{key} ({size} B)"] = put_on_minority(c_client, cluster.bucket, key, body)
        timings.append(f"{time.monotonic() - t0:.1f}")
        refused[key] = body
    # Reads through C cannot reach a read quorum either.
    for key in sorted(ledger.acked)[:2]:
        t0 = time.monotonic()
        outcomes[f"GET {key}"] = get_status(c_client, cluster.bucket, key)
        timings.append(f"{time.monotonic() - t0:.1f}")
    print(f"{c.name} (isolated): {sorted(set(outcomes.values()))} for "
          f"{len(SIZES)} PUTs + 2 GETs, seconds each: {' '.join(timings)}")
    wrong = {k: v for k, v in outcomes.items() if v != "503 ServiceUnavailable"}
    assert not wrong, f"the isolated node answered other than 503 ServiceUnavailable: {wrong}"

    # Reads: every acknowledged object (before and during the cut) through A and B.
    ledger.verify(dict(clients), cluster.bucket)
    assert not ({n.node_id for n in majority} & c.up_node_ids()), "the cut held throughout"

    # Heal: a refused write may or may not surface later, but only whole, and the same on
    # every node; acknowledged objects are all there.
    cluster.lab.heal(c.index)
    cluster.wait_all_up(cluster.nodes)
    cluster.wait_fully_replicated(60)
    listing = wait_same_listing(cluster)
    keys = {k for k, _, _ in listing}
    assert set(ledger.acked) <= keys, f"acked objects missing: {set(ledger.acked) - keys}"
    assert keys <= set(ledger.acked) | set(refused), f"unknown: {keys - set(ledger.acked)}"
    for key in sorted(keys & set(refused)):
        for n in cluster.nodes:
            got = n.s3().get_object(Bucket=cluster.bucket, Key=key)["Body"].read()
            assert got == refused[key], f"refused {key} surfaced altered via {n.name}"
    print(f"refused writes visible after the heal: {len(keys & set(refused))}/{len(refused)}")


@pytest.mark.timeout(120)
def test_heal_converges(partition_cluster: NetnsCluster):
    cluster = partition_cluster
    ledger = Ledger()
    majority, c = start_partitioned(cluster, ledger)
    a = majority[0]

    # During the cut the majority writes new objects (mixed sizes, multi-chunk ones too),
    # overwrites two objects written before the cut and deletes two others.
    clients = [(n.name, n.s3()) for n in majority]
    Load(ledger, clients, cluster.bucket, threads=2, per_thread=7, prefix="during",
         sizes=SIZES).start().join()
    before = sorted(k for k in ledger.acked if k.startswith("before/"))
    for key in before[:2]:
        assert ledger.put(a.s3(), cluster.bucket, key, random_body(MiB + 4_321), via=a.name)
    for key in before[2:4]:
        a.s3().delete_object(Bucket=cluster.bucket, Key=key)
        del ledger.acked[key]
    assert not ledger.errors, "writes failed on the majority side:\n" + "\n".join(ledger.errors)
    expected_listing = sorted(ledger.acked)
    assert [k for k, _, _ in list_keys(a.s3(), cluster.bucket)] == expected_listing

    # Heal: the nodes see each other again and the partitions are fully replicated.
    t_heal = time.monotonic()
    cluster.lab.heal(c.index)
    cluster.wait_all_up(cluster.nodes)
    cluster.wait_fully_replicated(60)

    # C catches up on every chunk of every live object, on its own disk (anti-entropy of the
    # block refs + resync).
    wait_chunks_everywhere([c], ledger.expected_chunks(), timeout=60)

    # Listings identical on every node (keys, sizes, ETags), and equal to what was acked.
    listing = wait_same_listing(cluster)
    assert [k for k, _, _ in listing] == expected_listing
    print(f"converged {time.monotonic() - t_heal:.1f}s after the heal")

    # Every acknowledged object reads back byte-identical through every node, C included.
    good = ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
    assert good == len(cluster.nodes) * len(ledger.acked)
