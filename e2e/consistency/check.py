"""The checker: each key is a register; is the history explainable?

Rules (a write is a PUT, CopyObject, completed multipart upload or DELETE; a DELETE writes
"absent"; before any write every key is absent):

* A write w1 *definitely precedes* w2 when w1 was acknowledged (`ok`) before w2 was invoked.
  A write that is `info` (5xx, timeout, cut connection) may take effect at any time after its
  invocation, so it definitely precedes nothing, until a read returns its value: from that
  read's completion on it orders like an acknowledged one. A `fail` write never took effect.
* A read (GET, or a LIST's view of one key: present or absent) invoked at `ri` and completed
  at `rc` may return the value of a write w that was invoked before `rc` and that no write
  acknowledged before `ri` definitely follows (w is not *superseded* by then). Anything else
  is an anomaly: a stale read (w was superseded: a lost update, a deleted object seen again
  after the delete was acknowledged), a value of a failed write, a value never written.
* Every body read must be exactly the bytes of the write it names (`values.body_origin`):
  multipart objects whole, copies the bytes of a write to their source key.
* After healing, the value every node agrees on must be the value of a write that nothing
  supersedes. When it is not, every acknowledged write that nothing supersedes is *lost*.
  The listing must hold exactly the keys whose final value is present.

The checks are necessary conditions of linearizability per key, each decided in O(log n)
with prefix maxima, so a 30-minute history checks in seconds.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict
from typing import Iterable

from .history import Op

INF = float("inf")
ABSENT = "<absent>"


@dataclasses.dataclass
class FinalRead:
    """What one node returned for one key after healing."""

    value: str | None
    origin: str | None = None
    body_ok: bool = True


@dataclasses.dataclass
class Report:
    ops: int = 0
    acknowledged: int = 0
    lost: int = 0
    anomalies: list[str] = dataclasses.field(default_factory=list)
    lost_writes: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        return (f"checker: ops={self.ops} acknowledged={self.acknowledged} lost={self.lost} "
                f"anomalies={len(self.anomalies)}")

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.anomalies


@dataclasses.dataclass
class _W:
    value: str | None
    invoke: float
    ceff: float  # completion if acknowledged, else +inf
    ok: bool
    op: Op | None  # None: the initial "absent"


class Register:
    """The writes to one key, indexed for the two questions the checker asks."""

    def __init__(self, writes: Iterable[_W]):
        self.writes = list(writes)
        acked = sorted((w for w in self.writes if w.ok), key=lambda w: w.invoke)
        self._acked_invoke = [w.invoke for w in acked]
        # suffix minimum of completion times over acknowledged writes sorted by invocation
        self._suffix_min: list[float] = [INF] * (len(acked) + 1)
        for i in range(len(acked) - 1, -1, -1):
            self._suffix_min[i] = min(acked[i].ceff, self._suffix_min[i + 1])
        self._groups: dict[str, tuple[list[float], list[float], list[_W]]] = {}
        by: dict[str, list[_W]] = defaultdict(list)
        for w in self.writes:
            by[self._vkey(w.value)].append(w)
            by["present" if w.value is not None else "absent"].append(w)
        for g, ws in by.items():
            ws.sort(key=lambda w: w.invoke)
            pmax, best, out_w = [], -INF, []
            best_w = ws[0]
            for w in ws:
                if w.ceff > best:
                    best, best_w = w.ceff, w
                pmax.append(best)
                out_w.append(best_w)
            self._groups[g] = ([w.invoke for w in ws], pmax, out_w)

    @staticmethod
    def _vkey(value: str | None) -> str:
        return "v:" + (value if value is not None else ABSENT)

    def superseded(self, ceff: float, t: float) -> bool:
        """Some write acknowledged before `t` was invoked after a write that completed at
        `ceff` was acknowledged."""
        i = bisect.bisect_right(self._acked_invoke, ceff)
        return self._suffix_min[i] < t

    def witness(self, group: str, ri: float, rc: float) -> _W | None:
        """A write of `group` invoked before `rc` and not superseded at `ri`, if any."""
        g = self._groups.get(group)
        if not g:
            return None
        invokes, pmax, best = g
        i = bisect.bisect_left(invokes, rc) - 1
        if i < 0:
            return None
        return None if self.superseded(pmax[i], ri) else best[i]

    def value_ok(self, value: str | None, ri: float, rc: float) -> bool:
        return self.witness(self._vkey(value), ri, rc) is not None

    def presence_ok(self, present: bool, ri: float, rc: float) -> bool:
        return self.witness("present" if present else "absent", ri, rc) is not None

    def maximal_acked(self) -> list[_W]:
        """Acknowledged writes that no later acknowledged write supersedes."""
        return [w for w in self.writes if w.ok and w.op is not None and w.op.type == "ok"
                and not self.superseded(w.ceff, INF)]


def _registers(ops: list[Op], keys: Iterable[str]) -> dict[str, Register]:
    # A maybe-applied write that a read returned had taken effect by the time that read
    # completed: from then on it orders like an acknowledged write.
    seen: dict[str, float] = {}
    for op in ops:
        if op.f == "get" and op.type == "ok" and op.read and op.complete is not None:
            seen[op.read] = min(seen.get(op.read, INF), op.complete)
    ws: dict[str, list[_W]] = {k: [_W(None, -INF, -INF, True, None)] for k in keys}
    for op in ops:
        if not op.is_write or op.type == "fail" or op.key not in ws:
            continue
        value = None if op.f == "delete" else op.value
        if op.type == "ok" and op.complete is not None:
            ws[op.key].append(_W(value, op.invoke, op.complete, True, op))
        elif value is not None and value in seen:
            ws[op.key].append(_W(value, op.invoke, seen[value], True, op))
        else:
            ws[op.key].append(_W(value, op.invoke, INF, False, op))
    return {k: Register(v) for k, v in ws.items()}


def _describe(op: Op) -> str:
    c = f"{op.complete:.3f}" if op.complete is not None else "-"
    extra = f" read={op.read}" if op.f == "get" else ""
    return (f"#{op.id} p{op.process} {op.f} {op.key} via {op.node} [{op.invoke:.3f}, {c}] "
            f"{op.type}{extra}")


def check(ops: list[Op], keys: list[str], final: dict[str, dict[str, FinalRead]],
          final_listed: dict[str, set[str]], prefix: str = "") -> Report:
    """`final[key][node]` and `final_listed[node]` are the reads made after healing."""
    rep = Report(ops=len(ops))
    rep.acknowledged = sum(1 for op in ops if op.is_write and op.type == "ok")
    regs = _registers(ops, keys)
    writes_by_value = {op.value: op for op in ops if op.f in ("put", "mpu", "copy") and op.value}
    # The bodies each key can ever hold: its own PUTs and multipart uploads, and through
    # copies (transitively) those of their sources.
    holds: dict[str, set[str]] = defaultdict(set)
    for v, op in writes_by_value.items():
        if op.f in ("put", "mpu"):
            holds[op.key].add(v)
    copies = [op for op in writes_by_value.values() if op.f == "copy" and op.type != "fail"]
    changed = True
    while changed:
        changed = False
        for op in copies:
            add = holds[op.src or ""] - holds[op.key]
            if add:
                holds[op.key] |= add
                changed = True

    def body_anomaly(key: str, value: str | None, origin: str | None, body_ok: bool,
                     where: str) -> str | None:
        if value is None:
            return None
        w = writes_by_value.get(value)
        if not body_ok or origin is None:
            return f"{where}: {key}={value}: the body is not the bytes any write wrote"
        if w is None:
            return None  # reported as a phantom value
        if w.f == "copy":
            if origin not in holds[w.src or ""]:
                return (f"{where}: {key}={value} (copy of {w.src}) holds the body of {origin}, "
                        f"which {w.src} never held")
        elif origin != value:
            return f"{where}: {key}={value} holds the body of {origin} (a torn version)"
        return None

    for op in ops:
        if op.type != "ok" or op.complete is None:
            continue
        if op.f == "get" and op.key in regs:
            reg = regs[op.key]
            if not reg.value_ok(op.read, op.invoke, op.complete):
                w = writes_by_value.get(op.read) if op.read else None
                why = ("a value never written" if op.read and w is None else
                       "the value of a failed write" if w is not None and w.type == "fail" else
                       "a superseded (stale) value")
                rep.anomalies.append(f"{_describe(op)}: {why}")
            a = body_anomaly(op.key, op.read, op.origin, op.body_ok, _describe(op))
            if a:
                rep.anomalies.append(a)
        elif op.f == "list" and op.listed is not None:
            listed = set(op.listed)
            for k in listed - set(keys):
                rep.anomalies.append(f"{_describe(op)}: lists {k}, a key never written")
            for k, reg in regs.items():
                present = k in listed
                if not reg.presence_ok(present, op.invoke, op.complete):
                    rep.anomalies.append(
                        f"{_describe(op)}: {k} {'listed' if present else 'missing'}, "
                        f"which no write explains")

    for key, reg in regs.items():
        views = final.get(key, {})
        values = {v.value for v in views.values()}
        if len(values) > 1:
            rep.anomalies.append(f"final: nodes disagree on {key}: "
                                 + ", ".join(f"{n}={v.value}" for n, v in sorted(views.items())))
        lost_here: list[_W] = []
        for node, v in sorted(views.items()):
            a = body_anomaly(key, v.value, v.origin, v.body_ok, f"final via {node}")
            if a:
                rep.anomalies.append(a)
            if reg.value_ok(v.value, INF, INF):
                continue
            maximal = reg.maximal_acked()
            if maximal:
                lost_here = maximal
            else:
                rep.anomalies.append(f"final via {node}: {key}={v.value}, which no write explains")
        for w in lost_here:
            assert w.op is not None
            rep.lost += 1
            rep.lost_writes.append(
                f"lost: {_describe(w.op)} value={w.value}; final "
                + ", ".join(f"{n}={v.value}" for n, v in sorted(views.items())))

    for node, listed in sorted(final_listed.items()):
        for key in keys:
            views = final.get(key, {})
            if not views:
                continue
            present = {v.value is not None for v in views.values()}
            if len(present) == 1 and (key in listed) != present.pop():
                rep.anomalies.append(f"final: the listing via {node} "
                                     f"{'holds' if key in listed else 'lacks'} {key}, "
                                     f"whose GET says otherwise")
    return rep
