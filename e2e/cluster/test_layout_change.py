"""A node joins and a node leaves the layout (through the `storaged layout` CLI) while clients
write and read: no client sees an error, every partition ends fully replicated once the load
stops, and the node that left drops its data."""

from __future__ import annotations

import random
import threading

import pytest

from storaged_proc import wait_until

from .harness import Ledger, Load, missing_chunks, wait_chunks_everywhere


class Reader:
    """Reads random acknowledged objects back while the layout changes."""

    def __init__(self, ledger: Ledger, clients: list[tuple[str, object]], bucket: str):
        self.ledger, self.clients, self.bucket = ledger, clients, bucket
        self.reads = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(7)
        while not self.stop_event.is_set():
            with self.ledger.lock:
                items = list(self.ledger.acked.items())
            if not items:
                self.stop_event.wait(0.05)  # nothing acknowledged yet: poll again
                continue
            key, body = rng.choice(items)
            name, client = rng.choice(self.clients)
            try:
                got = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                if got != body:
                    self.errors.append(f"GET {key} via {name}: wrong bytes ({len(got)})")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"GET {key} via {name}: {exc!r}")
            self.reads += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)


@pytest.mark.timeout(240)
def test_node_added_and_removed_under_load(make_cluster, cli):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    n4 = cluster.new_node("dc1", start=True)
    cluster.wait_all_up(cluster.nodes)
    assert n4.node_id not in {r["node_id"] for r in n1.layout()["roles"]}

    ledger = Ledger()
    clients = [(n2.name, n2.s3()), (n3.name, n3.s3())]
    reader = Reader(ledger, clients, cluster.bucket)
    reader.thread.start()

    def under_load(prefix: str, change) -> None:
        """Runs `change` while two writers put objects; stops them once a few more writes
        were acknowledged after the change was applied."""
        base = len(ledger.acked)
        load = Load(ledger, clients, cluster.bucket, threads=2, prefix=prefix).start()
        try:
            wait_until(lambda: load.acked() >= base + 4 or ledger.errors, 60,
                       f"the {prefix} load to get going")
            change()
            acked = load.acked()
            wait_until(lambda: load.acked() >= acked + 6 or ledger.errors, 60,
                       f"writes to go on after the {prefix} change")
        finally:
            load.stop()

    version = n2.layout()["version"]

    def join() -> None:
        # Node 4 joins zone dc1, named by a unique prefix of its id.
        cli.run(n2.cfg, "layout", "assign", n4.node_id[:12], "--zone", "dc1",
                "--capacity", "1G")
        staged = cli.json(n2.cfg, "layout", "show", "--json")
        assert [c["node_id"] for c in staged["staged"]] == [n4.node_id], staged
        applied = cli.json(n2.cfg, "layout", "apply", "--version", str(version + 1), "--json")
        assert applied["layout"]["version"] == version + 1, applied
        cluster.wait_layout_version(version + 1)

    def leave() -> None:
        # Node 1 leaves: dc1 keeps its replica through node 4.
        cli.run(n2.cfg, "layout", "remove", n1.node_id[:12])
        cli.run(n2.cfg, "layout", "apply", "--version", str(version + 2))
        cluster.wait_layout_version(version + 2)

    try:
        under_load("join", join)
        cluster.wait_fully_replicated(90)
        under_load("leave", leave)
        cluster.wait_fully_replicated(90)
    finally:
        reader.stop()
    assert not ledger.errors, "writes failed during layout changes:\n" + "\n".join(ledger.errors)
    assert not reader.errors, "reads failed during layout changes:\n" + "\n".join(reader.errors)
    roles = {r["node_id"] for r in n2.layout()["roles"]}
    assert roles == {n2.node_id, n3.node_id, n4.node_id}, roles

    expected = ledger.expected_chunks()
    wait_chunks_everywhere([n2, n3, n4], expected, timeout=90)
    wait_until(lambda: not (expected & set(n1.chunk_contents())), 90,
               "node 1 to drop the chunks it no longer holds",
               on_timeout=lambda: f"node 1 still holds "
               f"{len(expected) - len(missing_chunks(n1, expected))} of {len(expected)}")
    print(f"concurrent reads during the changes: {reader.reads}")
    ledger.verify({n.name: n.s3() for n in (n2, n3, n4)}, cluster.bucket)
