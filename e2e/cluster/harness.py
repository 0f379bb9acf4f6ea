"""A multi-node storaged cluster on loopback for the e2e cluster tests.

`Cluster` starts N real `storaged server` processes (one `ServerInstance` each, from
storaged_proc.py: same process handling, logs and teardown as every other suite), each in a
zone, with one rpc secret and admin token, a replication factor, a consistency mode and fast
background intervals. It applies a layout through the admin API, creates an access key and a
bucket, and hands out per-node boto3 clients. Nodes can be killed (-9), stopped and restarted
with the same directories and ports; chunk files can be found and corrupted on disk.

Everything waits with `wait_until` and a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests

from storaged_proc import S3Config, ServerInstance, boto3_client, wait_until

MiB = 1024 * 1024
BLOCK_SIZE = MiB  # the daemon's default `block_size`
INLINE_MAX = 8 * 1024  # objects up to this size live in the metadata, without chunks

# Background intervals in seconds (or ms) instead of minutes, so that failure detection,
# resync and anti-entropy happen within a test.
FAST_BACKGROUND: dict[str, object] = {
    "background.ping_interval_ms": 200,
    "background.ping_timeout_ms": 500,
    "background.failures_before_down": 2,
    "background.anti_entropy_interval_secs": 2,
    "background.resync_retry_secs": 1,
    "background.gc_interval_secs": 1,
    "background.block_gc_delay_secs": 2,
}

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ClusterNode(ServerInstance):
    """One node of a `Cluster`: a `storaged server` with its zone and admin helpers."""

    def __init__(self, binary: Path, root: Path, name: str, index: int, zone: str,
                 **settings: object):
        super().__init__(binary, root, name, zone=zone, **settings)
        self.index = index
        self.zone = zone
        self.node_id = ""
        self.key: S3Config | None = None

    # -- admin API --------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: object | None = None,
              ok: Iterable[int] = (200,), timeout: float = 10):
        assert self.cfg and self.cfg.admin_endpoint
        r = requests.request(method, self.cfg.admin_endpoint + path, json=body, timeout=timeout,
                             headers={"Authorization": f"Bearer {self.admin_token}"})
        if r.status_code not in tuple(ok):
            raise AssertionError(f"{self.name}: {method} {path} -> {r.status_code} {r.text}")
        return r.json() if r.content else None

    def status(self) -> dict:
        return self.admin("GET", "/v1/status")

    def health(self) -> dict:
        return self.admin("GET", "/v1/health")

    def layout(self) -> dict:
        return self.admin("GET", "/v1/layout")

    def up_node_ids(self) -> set[str]:
        return {n["node_id"] for n in self.status()["nodes"] if n["is_up"]}

    # -- S3 -----------------------------------------------------------------------------------

    def s3(self, **config_kw: object):
        """A boto3 client of the cluster key talking to this node."""
        assert self.key, "the cluster has no key yet (Cluster.start creates it)"
        return boto3_client(self.key, **config_kw)

    # -- chunks on disk -------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return Path(str(self.settings["data_dir"]))

    def chunk_files(self) -> dict[str, Path]:
        """Chunk hash (hex) -> file, from `data_dir/<h0>/<h1>/<hex>[.zst]` (temp and
        set-aside `.corrupted` files excluded)."""
        out: dict[str, Path] = {}
        if not self.data_dir.is_dir():
            return out
        for d0 in self.data_dir.iterdir():
            if not (d0.is_dir() and len(d0.name) == 2):
                continue
            for d1 in d0.iterdir():
                if not (d1.is_dir() and len(d1.name) == 2):
                    continue
                for f in d1.iterdir():
                    name = f.name[:-4] if f.name.endswith(".zst") else f.name
                    if HEX64.match(name):
                        out[name] = f
        return out

    def chunk_contents(self) -> dict[str, Path]:
        """sha256 of each plain chunk file's bytes -> file. Tests write random (incompressible)
        bodies, whose chunks are stored as plain files holding exactly the chunk's bytes, so
        a chunk of a test object is found by its content without computing blake3."""
        out: dict[str, Path] = {}
        for path in self.chunk_files().values():
            if path.name.endswith(".zst"):
                continue
            try:
                out[hashlib.sha256(path.read_bytes()).hexdigest()] = path
            except FileNotFoundError:  # deleted (GC, resync drop) while listing
                pass
        return out


def chunk_digests(body: bytes, block_size: int = BLOCK_SIZE) -> list[str]:
    """sha256 of each chunk of an object written with a single PUT (none when inline)."""
    if len(body) <= INLINE_MAX:
        return []
    return [hashlib.sha256(body[i : i + block_size]).hexdigest()
            for i in range(0, len(body), block_size)]


class Cluster:
    """N storaged nodes on loopback. Use through the `make_cluster` fixture, which stops the
    nodes at the end of the test and attaches their logs to failures."""

    def __init__(self, binary: Path, root: Path, register: Callable[[ClusterNode], None],
                 nodes: int = 3, zones: list[str] | int = 3, replication_factor: int = 3,
                 consistency_mode: str = "consistent", settings: dict[str, object] | None = None,
                 name: str = "c"):
        self.binary = binary
        self.root = root
        self.register = register
        self.name = name
        self.rpc_secret = secrets.token_hex(32)
        self.admin_token = secrets.token_hex(16)
        self.replication_factor = replication_factor
        self.consistency_mode = consistency_mode
        self.settings = dict(FAST_BACKGROUND)
        self.settings.update(settings or {})
        self.nodes: list[ClusterNode] = []
        self.key: S3Config | None = None
        self.bucket = ""
        zone_names = ([f"dc{(i % zones) + 1}" for i in range(nodes)]
                      if isinstance(zones, int) else list(zones))
        assert len(zone_names) == nodes, (zone_names, nodes)
        for zone in zone_names:
            self.new_node(zone)

    # -- nodes --------------------------------------------------------------------------------

    def new_node(self, zone: str, start: bool = False) -> ClusterNode:
        """A node in `zone` bootstrapping to node 1 (node 1 bootstraps to every node created
        before it starts). Not in the layout until a role is applied."""
        index = len(self.nodes) + 1
        node = ClusterNode(
            self.binary, self.root / f"node{index}", f"{self.name}-node{index}", index, zone,
            replication_factor=self.replication_factor,
            consistency_mode=self.consistency_mode,
            rpc_secret=self.rpc_secret,
            **{"admin.admin_token": self.admin_token},
            **self.settings,
        )
        self.register(node)
        if self.nodes:
            node.update_settings(bootstrap_peers=[f"127.0.0.1:{self.nodes[0].rpc_port}"])
            first = self.nodes[0]
            if not first.alive():
                first.update_settings(
                    bootstrap_peers=[f"127.0.0.1:{n.rpc_port}" for n in [*self.nodes[1:], node]])
        self.nodes.append(node)
        if self.key and node.cfg:
            node.key = S3Config(endpoint=node.cfg.endpoint, access_key=self.key.access_key,
                                secret_key=self.key.secret_key, bucket=self.bucket)
        if start:
            self.start_nodes([node])
        return node

    def start_nodes(self, nodes: list[ClusterNode]) -> None:
        """Spawns every node first (they boot in parallel), then waits for each."""
        for n in nodes:
            n.spawn()
        for n in nodes:
            n.wait_ready()
            n.node_id = n.status()["node_id"]

    def node_by_id(self, node_id: str) -> ClusterNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive()]

    def wait_all_up(self, nodes: list[ClusterNode] | None = None, timeout: float = 30) -> None:
        """Every node of `nodes` (default: the running ones) sees every one of them up."""
        group = nodes or self.running()
        ids = {n.node_id for n in group}
        wait_until(lambda: all(ids <= n.up_node_ids() for n in group), timeout,
                   f"{[n.name for n in group]} to see each other up")

    def wait_seen_down(self, down: list[ClusterNode], timeout: float = 30) -> None:
        ids = {n.node_id for n in down}
        wait_until(lambda: all(not (ids & n.up_node_ids()) for n in self.running()), timeout,
                   f"{[n.name for n in down]} to be seen down")

    # -- layout ---------------------------------------------------------------------------------

    def role(self, node: ClusterNode, capacity: int | None = 10**9) -> dict:
        return {"zone": node.zone, "capacity": capacity, "tags": []}

    def change_layout(self, changes: list[tuple[ClusterNode, dict | None]],
                      via: ClusterNode | None = None) -> dict:
        """Stages `(node, role or None)` changes and applies them as the next version."""
        via = via or self.running()[0]
        via.admin("POST", "/v1/layout/stage",
                  {"changes": [{"node_id": n.node_id, "role": r} for n, r in changes]})
        version = via.layout()["version"] + 1
        out = via.admin("POST", "/v1/layout/apply", {"version": version})
        assert out["layout"]["version"] == version, out
        self.wait_layout_version(version)
        return out

    def wait_layout_version(self, version: int, timeout: float = 30) -> None:
        wait_until(lambda: all(n.status()["layout_version"] >= version for n in self.running()),
                   timeout, f"every running node to know layout version {version}")

    def fully_replicated(self, via: ClusterNode | None = None) -> bool:
        h = (via or self.running()[0]).health()
        return (h["status"] == "healthy" and h["partitions_all_ok"] == h["partitions"]
                and h["partitions_not_fully_replicated"] == 0)

    def wait_fully_replicated(self, timeout: float = 60) -> None:
        last: dict = {}

        def ok() -> bool:
            nonlocal last
            for n in self.running():
                last = {n.name: n.health()}
                if not self.fully_replicated(n):
                    return False
            return True

        wait_until(ok, timeout, "every partition to be fully replicated",
                   on_timeout=lambda: f"last health: {last}")

    # -- start ------------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "Cluster":
        """Starts every node, waits until they see each other, gives each a storage role,
        applies the layout, waits for full health, and creates a key and a bucket."""
        self.start_nodes(self.nodes)
        self.wait_all_up(self.nodes, timeout)
        self.change_layout([(n, self.role(n)) for n in self.nodes])
        self.wait_fully_replicated(timeout)
        self.create_key_and_bucket()
        return self

    def create_key_and_bucket(self) -> None:
        first = self.running()[0]
        key = first.admin("POST", "/v1/keys", {"name": "cluster-e2e", "allow_create_bucket": True})
        self.bucket = f"cluster-{secrets.token_hex(4)}"
        b = first.admin("POST", "/v1/buckets", {"name": self.bucket})
        first.admin("POST", "/v1/permissions/allow", {
            "bucket_id": b["id"], "access_key_id": key["access_key_id"],
            "permissions": {"read": True, "write": True, "owner": True}})
        assert first.cfg
        self.key = S3Config(endpoint=first.cfg.endpoint, access_key=key["access_key_id"],
                            secret_key=key["secret_access_key"], bucket=self.bucket)
        for n in self.nodes:
            assert n.cfg
            n.key = S3Config(endpoint=n.cfg.endpoint, access_key=self.key.access_key,
                             secret_key=self.key.secret_key, bucket=self.bucket)

        def everyone_knows() -> bool:
            for n in self.running():
                k = n.admin("GET", f"/v1/keys/{key['access_key_id']}")
                if not any(p["bucket_id"] == b["id"] and p["permissions"]["write"]
                           for p in k["buckets"]):
                    return False
            return True

        wait_until(everyone_knows, 30, "every node to know the key and its bucket grant")

    # -- faults ---------------------------------------------------------------------------------

    def kill9(self, node: ClusterNode) -> None:
        node.kill9()

    def stop(self, node: ClusterNode) -> None:
        rc = node.stop()
        assert rc == 0, f"{node.name} exited {rc} on SIGTERM\n{node.log_tail()}"

    def restart(self, node: ClusterNode) -> None:
        """Starts a stopped or killed node again (same directories, ports and key)."""
        assert not node.alive(), f"{node.name} is still running"
        node_id = node.node_id
        self.start_nodes([node])
        assert node.node_id == node_id, "a restarted node keeps its identity"




# --------------------------------------------------------------------------------------------
# Objects: what was written, what was acknowledged, what reads back
# --------------------------------------------------------------------------------------------


def random_body(size: int) -> bytes:
    return os.urandom(size)


@dataclass
class Ledger:
    """Every write attempted and every write acknowledged, for the `lost=0` check."""

    written: int = 0
    acked: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # (key, via, exception) of each failed write, for tests that check how writes fail.
    failures: list[tuple[str, str, BaseException]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, client, bucket: str, key: str, body: bytes, via: str = "") -> bool:
        with self.lock:
            self.written += 1
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and reported
            with self.lock:
                self.errors.append(f"PUT {key} via {via}: {exc!r}")
                self.failures.append((key, via, exc))
            return False
        with self.lock:
            self.acked[key] = body
        return True

    def expected_chunks(self) -> set[str]:
        return {d for body in self.acked.values() for d in chunk_digests(body)}

    def verify(self, clients: dict[str, object], bucket: str) -> int:
        """Reads every acknowledged object through every client; returns how many reads
        matched. Fails the test with the list of mismatches (lost or altered objects)."""
        bad: list[str] = []
        good = 0
        for name, client in clients.items():
            for key, body in sorted(self.acked.items()):
                try:
                    got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                except Exception as exc:  # noqa: BLE001
                    bad.append(f"{key} via {name}: {exc!r}")
                    continue
                if got != body:
                    bad.append(f"{key} via {name}: {len(got)} bytes, expected {len(body)} "
                               f"(sha256 {hashlib.sha256(got).hexdigest()[:12]} vs "
                               f"{hashlib.sha256(body).hexdigest()[:12]})")
                else:
                    good += 1
        lost = len({b.split(" via ")[0] for b in bad})
        self.summary(good, lost)
        assert not bad, f"{len(bad)} acknowledged reads failed:\n" + "\n".join(bad[:30])
        return good

    def summary(self, read_back: int, lost: int = 0) -> str:
        line = f"written={self.written} acked={len(self.acked)} read_back={read_back} lost={lost}"
        print(line)
        return line


class Load:
    """Writer threads putting objects of mixed sizes (some over the chunk size) through
    a set of nodes until stopped or until each has written `per_thread` objects."""

    SIZES = (0, 100, 5_000, 64 * 1024, 700 * 1024, MiB + 17, 2 * MiB + 12_345)

    def __init__(self, ledger: Ledger, clients: list[tuple[str, object]], bucket: str,
                 threads: int = 3, per_thread: int | None = None, prefix: str = "load",
                 sizes: tuple[int, ...] | None = None):
        self.ledger = ledger
        self.clients = clients
        self.bucket = bucket
        self.per_thread = per_thread
        self.prefix = prefix
        self.sizes = sizes or self.SIZES
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                        for t in range(threads)]

    def _run(self, t: int) -> None:
        i = 0
        while not self.stop_event.is_set() and (self.per_thread is None or i < self.per_thread):
            name, client = self.clients[(t + i) % len(self.clients)]
            size = self.sizes[(t * 3 + i) % len(self.sizes)]
            self.ledger.put(client, self.bucket, f"{self.prefix}/t{t}/o{i:04d}",
                            random_body(size), via=name)
            i += 1

    def start(self) -> "Load":
        for th in self.threads:
            th.start()
        return self

    def acked(self) -> int:
        with self.ledger.lock:
            return len(self.ledger.acked)

    def join(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.0, deadline - time.monotonic()))
        alive = [th.name for th in self.threads if th.is_alive()]
        assert not alive, f"writer threads still running after {timeout}s: {alive}"

    def stop(self, timeout: float = 120) -> None:
        self.stop_event.set()
        self.join(timeout)


def missing_chunks(node: ClusterNode, expected: set[str]) -> set[str]:
    return expected - set(node.chunk_contents())


def wait_chunks_everywhere(nodes: list[ClusterNode], expected: set[str], timeout: float = 60):
    """Waits until every node holds a plain chunk file with each expected content."""
    wait_until(lambda: all(not missing_chunks(n, expected) for n in nodes), timeout,
               f"{len(expected)} chunks to be on {[n.name for n in nodes]}",
               on_timeout=lambda: "missing: " + ", ".join(
                   f"{n.name}={len(missing_chunks(n, expected))}" for n in nodes))


def list_keys(client, bucket: str) -> list[tuple[str, int, str]]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [(o["Key"], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
    return out
