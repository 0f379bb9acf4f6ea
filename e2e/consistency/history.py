"""Operation records: what each client invoked, when, through which node, and what came back.

Times are `time.monotonic()` of the one process that runs every client, so "completed before
invoked" between any two operations is meaningful. `type` follows Jepsen's vocabulary:

* `ok`: the operation took effect and the client was told so;
* `fail`: it certainly did not take effect (a 4xx answer, or the connection was refused
  before the request was sent);
* `info`: unknown (a 5xx, a timeout, a connection cut mid-request): a write may have been
  applied, at any time from its invocation on.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

WRITES = ("put", "copy", "mpu", "delete")


@dataclasses.dataclass
class Op:
    id: int
    process: int
    f: str  # put | get | delete | list | copy | mpu
    key: str  # for list: the prefix listed
    node: str
    invoke: float
    value: str | None = None  # the value id a write writes (None: a delete)
    size: int = 0  # body size of put / mpu
    src: str | None = None  # copy: the source key
    complete: float | None = None
    type: str = "info"  # ok | fail | info
    read: str | None = None  # get: the value id read (None: 404)
    origin: str | None = None  # get: the value id the body itself names (copies: the source's)
    body_ok: bool = True  # get: the body is exactly what its origin wrote
    listed: list[str] | None = None  # list: keys present
    error: str = ""

    @property
    def is_write(self) -> bool:
        return self.f in WRITES


class History:
    """Thread-safe, append-only list of operations."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def invoke(self, process: int, f: str, key: str, node: str, **kw: object) -> Op:
        with self.lock:
            op = Op(id=len(self.ops), process=process, f=f, key=key, node=node,
                    invoke=time.monotonic() - self.t0, **kw)  # type: ignore[arg-type]
            self.ops.append(op)
            return op

    def complete(self, op: Op, type_: str, **kw: object) -> None:
        with self.lock:
            op.complete = time.monotonic() - self.t0
            op.type = type_
            for k, v in kw.items():
                setattr(op, k, v)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def snapshot(self) -> list[Op]:
        with self.lock:
            return list(self.ops)

    def dump(self, path: Path) -> None:
        with path.open("w") as f:
            for op in self.snapshot():
                f.write(json.dumps(dataclasses.asdict(op)) + "\n")


def load(path: Path) -> list[Op]:
    return [Op(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
