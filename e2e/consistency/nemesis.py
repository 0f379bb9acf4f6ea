"""The faults, injected one at a time and now and then two together, while the workload runs:

* `kill`: kill -9 of a node, restarted a few seconds later with the same disk;
* `pause`: SIGSTOP of a node for longer than the failure detector's timeout, then SIGCONT;
* `partition`: every node of one zone cut from the other nodes (network namespaces; clients
  still reach it, as a client inside that site would);
* `layout`: a layout change under load, in a cycle: add the spare node, remove a zone's node
  (so that zone has been replaced), then both at once (replace it back);
* clock skew is not injected here: nodes start with their clocks off (libfaketime, see `run`).

Every fault is healed by `heal_all`, which `run` calls before the final reads.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Callable

from cluster.harness import Cluster, ClusterNode

KINDS = ("kill", "pause", "partition", "layout")
HOLD_S = {"kill": 4.0, "pause": 3.0, "partition": 5.0}
QUIET_S = 2.0
LAYOUT_SETTLE_S = 60.0
ADMIN_TIMEOUT_S = 5.0


class Nemesis:
    def __init__(self, cluster: Cluster, kinds: list[str], log: Callable[[str], None],
                 cut: Callable[[ClusterNode], None] | None = None,
                 heal: Callable[[ClusterNode], None] | None = None, seed: int = 0):
        self.cluster = cluster
        self.kinds = [k for k in KINDS if k in kinds]
        self.log = log
        self._cut, self._heal = cut, heal
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.cut: set[str] = set()
        self.storage = [n for n in cluster.nodes if n.index <= 3]  # nodes with a role
        self.spare = [n for n in cluster.nodes if n.index > 3]
        self.layout_step = 0
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="nemesis")

    # -- what the workload may use -------------------------------------------------------------

    def serving(self) -> list[ClusterNode]:
        """Nodes clients send requests to: every node, faulty ones and the one without a
        role (it serves as a gateway) included."""
        return list(self.cluster.nodes)

    def storage_nodes(self) -> list[ClusterNode]:
        """Nodes with a role in the newest layout (they hold the chunks)."""
        with self.lock:
            return list(self.storage)

    def healthy(self) -> list[ClusterNode]:
        with self.lock:
            bad = self.killed | self.paused | self.cut
        return [n for n in self.cluster.nodes if n.name not in bad and n.alive()]

    # -- loop ----------------------------------------------------------------------------------

    def start(self) -> "Nemesis":
        if self.kinds:
            self.thread.start()
        return self

    def join(self, timeout: float = 120) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        i = 0
        self.stop.wait(QUIET_S)
        while not self.stop.is_set():
            kind = self.kinds[i % len(self.kinds)]
            combined = len(self.kinds) > 1 and i % 5 == 4
            i += 1
            try:
                if combined:
                    other = self.kinds[(i + 1) % len(self.kinds)]
                    if other == kind:
                        other = "kill"
                    self._combined(kind, other)
                else:
                    self._one(kind)
            except BaseException as exc:  # noqa: BLE001 - pytest.fail raises BaseException
                self.errors.append(f"{kind}: {exc}")
                self.log(f"nemesis {kind} failed: {exc}")
            finally:
                try:
                    self.heal_all()
                except BaseException as exc:  # noqa: BLE001
                    self.errors.append(f"heal after {kind}: {exc}")
            self.stop.wait(QUIET_S)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _one(self, kind: str) -> None:
        if kind == "layout":
            self._layout()
            return
        victim = self._victims(kind, 1)
        self._inject(kind, victim)
        self.stop.wait(HOLD_S[kind])

    def _combined(self, a: str, b: str) -> None:
        """Two faults at once, on different zones (so a quorum may be lost: the store must
        refuse, not lose)."""
        self.log(f"nemesis: {a} + {b} together")
        if "layout" in (a, b):
            other = b if a == "layout" else a
            if other == "layout":
                other = "kill"
            victims = self._victims(other, 1)
            self._inject(other, victims)
            self._layout()
            return
        first = self._victims(a, 1)
        self._inject(a, first)
        zones = {n.zone for n in first}
        second = [n for n in self._victims(b, 3) if n.zone not in zones][:1]
        self._inject(b, second)
        self.stop.wait(max(HOLD_S[a], HOLD_S[b]))

    def _victims(self, kind: str, count: int) -> list[ClusterNode]:
        with self.lock:
            bad = self.killed | self.paused | self.cut
            pool = [n for n in self.storage if n.name not in bad]
        if kind == "partition":
            if not pool:
                return []
            zone = self.rng.choice(sorted({n.zone for n in pool}))
            return [n for n in pool if n.zone == zone]
        self.rng.shuffle(pool)
        return pool[:count]

    def _inject(self, kind: str, nodes: list[ClusterNode]) -> None:
        for n in nodes:
            self._count(kind)
            if kind == "kill":
                self.log(f"nemesis: kill -9 {n.name}")
                n.kill9()
                with self.lock:
                    self.killed.add(n.name)
            elif kind == "pause":
                self.log(f"nemesis: SIGSTOP {n.name}")
                assert n.proc is not None
                os.kill(n.proc.pid, signal.SIGSTOP)
                with self.lock:
                    self.paused.add(n.name)
            elif kind == "partition":
                assert self._cut is not None
                self.log(f"nemesis: cut {n.name} ({n.zone}) off")
                self._cut(n)
                with self.lock:
                    self.cut.add(n.name)

    # -- layout changes ------------------------------------------------------------------------

    def _layout(self) -> None:
        """One step of the cycle add spare / remove a node of its zone / replace back."""
        with self.lock:
            storage = list(self.storage)
        in_layout = {n.name for n in storage}
        spare = next((n for n in self.cluster.nodes if n.name not in in_layout), None)
        step = self.layout_step % 3
        self.layout_step += 1
        if step == 0 and spare is not None:
            changes = [(spare, self.cluster.role(spare))]
            new = storage + [spare]
            what = f"add {spare.name} ({spare.zone})"
        elif step == 1 and len(storage) > 3:
            zone_of_new = storage[-1].zone
            old = next(n for n in storage[:-1] if n.zone == zone_of_new)
            changes = [(old, None)]
            new = [n for n in storage if n is not old]
            what = f"remove {old.name} ({old.zone})"
        else:
            if spare is None:
                return
            old = next((n for n in storage if n.zone == spare.zone), None)
            if old is None:
                return
            changes = [(spare, self.cluster.role(spare)), (old, None)]
            new = [n for n in storage if n is not old] + [spare]
            what = f"replace {old.name} by {spare.name} ({spare.zone})"
        via = self._via()
        self._count("layout")
        self.log(f"nemesis: layout {what} via {via.name}")
        admin_post(via, "/v1/layout/stage",
                   {"changes": [{"node_id": n.node_id, "role": r} for n, r in changes]})
        version = admin_get(via, "/v1/layout")["version"] + 1
        admin_post(via, "/v1/layout/apply", {"version": version})
        with self.lock:
            self.storage = new
        # Wait (bounded) for the transition to finish before the next change; other faults
        # may go on meanwhile in a combined step.
        deadline = time.monotonic() + LAYOUT_SETTLE_S
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                if fully_replicated(self._via()):
                    self.log(f"nemesis: layout v{version} settled")
                    return
            except Exception:  # noqa: BLE001 - a node may be restarting
                pass
            self.stop.wait(0.5)
        self.log(f"nemesis: layout v{version} not settled after {LAYOUT_SETTLE_S:.0f}s")

    def _via(self) -> ClusterNode:
        for n in self.healthy():
            try:
                admin_get(n, "/v1/status")
                return n
            except Exception:  # noqa: BLE001
                continue
        raise RuntimeError("no healthy node answers the admin API")

    # -- healing ---------------------------------------------------------------------------------

    def heal_all(self) -> None:
        by_name = {n.name: n for n in self.cluster.nodes}
        with self.lock:
            cut, paused, killed = set(self.cut), set(self.paused), set(self.killed)
        for name in cut:
            assert self._heal is not None
            self._heal(by_name[name])
            self.log(f"nemesis: heal {name}")
            with self.lock:
                self.cut.discard(name)
        for name in paused:
            n = by_name[name]
            if n.proc is not None:
                os.kill(n.proc.pid, signal.SIGCONT)
            self.log(f"nemesis: SIGCONT {name}")
            with self.lock:
                self.paused.discard(name)
        for name in killed:
            self.cluster.restart(by_name[name])
            self.log(f"nemesis: restarted {name}")
            with self.lock:
                self.killed.discard(name)


def admin_get(node: ClusterNode, path: str) -> dict:
    return node.admin("GET", path, timeout=ADMIN_TIMEOUT_S)


def admin_post(node: ClusterNode, path: str, body: dict) -> dict:
    return node.admin("POST", path, body, timeout=ADMIN_TIMEOUT_S)


def fully_replicated(node: ClusterNode) -> bool:
    h = admin_get(node, "/v1/health")
    return (h["status"] == "healthy" and h["partitions_all_ok"] == h["partitions"]
            and h["partitions_not_fully_replicated"] == 0)

