"""`e2e/checker`: a cluster, a workload, a nemesis, then heal, read back and check.

    e2e/checker --minutes N [--fault NAME] [--nemesis kill,pause,partition,layout,skew|none]

The cluster: 4 `storaged server` processes, each in its own network namespace (so a zone
can be cut off), zones dc1 dc2 dc3 and a spare in dc1 for layout changes, replication
factor 3, consistent mode, fast background intervals; with `skew`, node 2's clock runs 5
minutes behind and node 3's 2 minutes ahead (libfaketime). The last line printed is
`checker: ops=N acknowledged=N lost=N anomalies=N`; the exit code is 1 on any loss or
anomaly, 2 when the run itself could not be made. The history, the nemesis log, the report
and (on a red run) the node logs and data are kept in the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from storaged_proc import REPO, S3Config, boto3_client

from cluster.harness import FAST_BACKGROUND, Cluster, ClusterNode

from . import check as checker
from .history import History
from .nemesis import KINDS, Nemesis
from .values import body_origin, chunk_digests, make_body, multipart_sizes
from .workload import Workload

FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/faketime/libfaketimeMT.so.1")
SKEW = {2: "-300", 3: "+120"}  # node index -> libfaketime offset in seconds
ALL = (*KINDS, "skew")
CONVERGE_S = 120.0


class RunError(Exception):
    """The run could not be made (not a verdict about the store)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="e2e/checker", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="workload duration (default 2)")
    p.add_argument("--nemesis", default=",".join(ALL),
                   help=f"comma-separated faults among {','.join(ALL)}, or none (default: all)")
    p.add_argument("--fault", default="",
                   help="a test-only daemon fault (STORAGED_TEST_FAULT), e.g. lose_acked_puts")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--keys", type=int, default=8)
    p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default target/checker/<time>)")
    p.add_argument("--keep", action="store_true", help="keep node data and logs of a green run")
    a = p.parse_args(argv)
    kinds = [] if a.nemesis.strip() in ("", "none") else [k.strip() for k in a.nemesis.split(",")]
    bad = [k for k in kinds if k not in ALL]
    if bad:
        p.error(f"--nemesis: unknown fault(s) {','.join(bad)} (known: {','.join(ALL)}, none)")
    if a.minutes <= 0:
        p.error("--minutes must be positive")
    a.kinds = kinds
    return a


def storaged_bin() -> Path:
    path = Path(os.environ.get("STORAGED_BIN", REPO / "target" / "release" / "storaged"))
    if not path.is_file():
        print(f"checker: building {path} (cargo build --release --locked -p storaged)", flush=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "storaged"],
                       cwd=REPO, check=True)
    if not path.is_file():
        raise RunError(f"no storaged binary at {path}")
    return path


def faketime_lib() -> str:
    for lib in FAKETIME_LIBS:
        if Path(lib).is_file():
            return lib
    raise RunError("the skew nemesis needs libfaketime (apt-get install libfaketime), "
                   "or leave skew out of --nemesis")


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out: Path = args.out or REPO / "target" / "checker" / f"{stamp}-{os.getpid()}"
        self.out.mkdir(parents=True, exist_ok=True)
        self.history = History()
        self.events: list[str] = []
        self.stop = threading.Event()
        self.lab = None
        self.cluster: Cluster | None = None
        self.started: list[ClusterNode] = []

    def log(self, msg: str) -> None:
        line = f"[{self.history.now():7.2f}s] {msg}"
        self.events.append(line)
        print(line, flush=True)

    # -- cluster -------------------------------------------------------------------------------

    def make_cluster(self) -> Cluster:
        binary = storaged_bin()
        zones = ["dc1", "dc2", "dc3", "dc1"]
        kw = dict(nodes=4, zones=zones, replication_factor=3, consistency_mode="consistent",
                  settings=dict(FAST_BACKGROUND), name="chk")
        root = self.out / "cluster"
        if os.geteuid() == 0:
            from cluster.netns import NetLab, NetnsCluster, require_netns

            require_netns()
            self.lab = NetLab(4).create()
            c: Cluster = NetnsCluster(self.lab, binary, root, self.started.append, **kw)
        elif "partition" in self.args.kinds:
            raise RunError("the partition nemesis needs root (network namespaces); "
                           "run as root or leave partition out of --nemesis")
        else:
            c = Cluster(binary, root, self.started.append, **kw)
        lib = faketime_lib() if "skew" in self.args.kinds else ""
        for n in c.nodes:
            if self.args.fault:
                n.extra_env["STORAGED_TEST_FAULT"] = self.args.fault
            if lib and n.index in SKEW:
                n.extra_env.update(LD_PRELOAD=lib, FAKETIME=SKEW[n.index],
                                   FAKETIME_DONT_FAKE_MONOTONIC="1")
                self.log(f"{n.name}: clock offset {SKEW[n.index]} s")
        first3, spare = c.nodes[:3], c.nodes[3]
        c.start_nodes(first3)
        c.wait_all_up(first3)
        c.change_layout([(n, c.role(n)) for n in first3])
        c.wait_fully_replicated()
        c.create_key_and_bucket()
        c.start_nodes([spare])
        c.wait_all_up(c.nodes)
        self.log(f"cluster up: {', '.join(f'{n.name}={n.zone}' for n in c.nodes)}; "
                 f"layout {[n.name for n in first3]}, spare {spare.name}")
        self.cluster = c
        return c

    def teardown(self, keep: bool) -> None:
        for n in self.started:
            try:
                if n.proc is not None and n.proc.poll() is None:
                    os.kill(n.proc.pid, signal.SIGCONT)
                n.stop(timeout=20)
            except BaseException as exc:  # noqa: BLE001
                print(f"checker: stopping {n.name}: {exc}", flush=True)
        if self.lab is not None:
            self.lab.destroy()
        if not keep:
            shutil.rmtree(self.out / "cluster", ignore_errors=True)

    # -- final reads ---------------------------------------------------------------------------

    def final_views(self, nodes: list[ClusterNode], keys: list[str]):
        assert self.cluster and self.cluster.key
        final: dict[str, dict[str, checker.FinalRead]] = {k: {} for k in keys}
        listed: dict[str, set[str]] = {}
        for n in nodes:
            assert n.cfg
            cfg = S3Config(endpoint=n.cfg.endpoint, access_key=self.cluster.key.access_key,
                           secret_key=self.cluster.key.secret_key)
            cl = boto3_client(cfg, read_timeout=30)
            bucket = self.cluster.bucket
            for k in keys:
                try:
                    r = cl.get_object(Bucket=bucket, Key=k)
                    body = r["Body"].read()
                    origin = body_origin(body)
                    final[k][n.name] = checker.FinalRead(r.get("Metadata", {}).get("op"), origin,
                                                         origin is not None)
                except Exception as exc:  # noqa: BLE001
                    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                    if code != "NoSuchKey":
                        raise
                    final[k][n.name] = checker.FinalRead(None)
            r = cl.list_objects_v2(Bucket=bucket, MaxKeys=1000)
            listed[n.name] = {o["Key"] for o in r.get("Contents", [])}
        return final, listed

    def converge(self, nodes: list[ClusterNode], keys: list[str]):
        """Final reads, repeated until every node returns the same thing (bounded)."""
        deadline = time.monotonic() + CONVERGE_S
        last: tuple | None = None
        err = ""
        while time.monotonic() < deadline:
            try:
                final, listed = self.final_views(nodes, keys)
                last = (final, listed)
                same = all(len({v.value for v in views.values()}) == 1 for views in final.values())
                if same and len({frozenset(s) for s in listed.values()}) == 1:
                    return final, listed
            except Exception as exc:  # noqa: BLE001
                err = repr(exc)
            time.sleep(0.5)  # poll interval of a bounded convergence wait
        if last is None:
            raise RunError(f"no final read succeeded within {CONVERGE_S:.0f}s: {err}")
        self.log(f"nodes did not converge within {CONVERGE_S:.0f}s")
        return last

    def missing_chunks(self, final, storage: list[ClusterNode]) -> list[str]:
        """Chunks of each final object that fewer than rf storage nodes hold on disk."""
        ops = {op.value: op for op in self.history.snapshot() if op.value}
        need = min(3, len(storage))
        wanted: dict[str, str] = {}
        for key, views in final.items():
            v = next(iter(views.values()), None)
            if v is None or v.value is None or v.origin is None or v.origin not in ops:
                continue
            src = ops[v.origin]
            body = make_body(src.value, src.size)
            parts = multipart_sizes(src.size) if src.f == "mpu" else None
            for d in chunk_digests(body, parts):
                wanted[d] = key
        holders = {d: 0 for d in wanted}
        for n in storage:
            have = n.chunk_contents()
            for d in wanted:
                holders[d] += d in have
        return [f"chunk {d[:12]} of {wanted[d]} on {c} of {need} replicas"
                for d, c in holders.items() if c < need]

    # -- the whole run ---------------------------------------------------------------------------

    def execute(self) -> checker.Report:
        a = self.args
        c = self.make_cluster()
        keys = [f"k{i}" for i in range(a.keys)]
        lab = self.lab
        nem = Nemesis(c, [k for k in a.kinds if k != "skew"], self.log,
                      cut=(lambda n: lab.cut(n.index)) if lab else None,
                      heal=(lambda n: lab.heal(n.index)) if lab else None, seed=a.seed)

        def nodes() -> list[tuple[str, S3Config]]:
            assert c.key
            out = []
            for n in nem.serving():
                assert n.cfg
                out.append((n.name, S3Config(endpoint=n.cfg.endpoint,
                                             access_key=c.key.access_key,
                                             secret_key=c.key.secret_key)))
            return out

        wl = Workload(self.history, c.bucket, keys, nodes, clients=a.clients, seed=a.seed)
        self.log(f"workload: {a.clients} clients, {len(keys)} keys, {a.minutes} min, "
                 f"nemesis {','.join(a.kinds) or 'none'}, seed {a.seed}"
                 + (f", fault {a.fault}" if a.fault else ""))
        wl.start()
        nem.start()
        self.stop.wait(a.minutes * 60)
        self.log("stopping the workload and the nemesis")
        nem.join()
        stuck = wl.join()
        nem.heal_all()
        ops = self.history.snapshot()
        dur = max(self.history.now(), 1e-9)
        self.log(f"{len(ops)} operations ({len(ops) / dur:.1f}/s), nemesis {nem.counts}")
        # Healed: every node up, layout transitions done, anti-entropy converged.
        storage = nem.storage_nodes()
        stuck_heal: list[str] = []
        # A cluster that does not heal is an anomaly, but the final reads still run: what
        # they find is the verdict on the data.
        for what, wait in (("every node up", lambda: c.wait_all_up(c.nodes, timeout=60)),
                           ("full replication", lambda: c.wait_fully_replicated(timeout=180))):
            try:
                wait()
            except BaseException as exc:  # noqa: BLE001 - pytest.fail is a BaseException
                self.log(f"after healing, no {what}: {str(exc)[:600]}")
                stuck_heal.append(f"after healing, no {what}: {str(exc)[:300]}")
        final, listed = self.converge(c.nodes, keys)
        rep = checker.check(ops, keys, final, listed)
        rep.anomalies += stuck_heal
        rep.anomalies += [f"nemesis: {e}" for e in nem.errors]
        rep.anomalies += [f"client thread {t} never returned" for t in stuck]
        deadline = time.monotonic() + 60
        missing = self.missing_chunks(final, storage)
        while missing and time.monotonic() < deadline:
            time.sleep(1)  # poll interval of a bounded resync wait
            missing = self.missing_chunks(final, storage)
        rep.anomalies += missing
        self.final = {k: {n: v.value for n, v in views.items()} for k, views in final.items()}
        return rep

    def save(self, rep: checker.Report | None) -> None:
        self.history.dump(self.out / "history.jsonl")
        (self.out / "nemesis.log").write_text("\n".join(self.events) + "\n")
        if rep is not None:
            (self.out / "report.json").write_text(json.dumps(
                {**dataclasses.asdict(rep), "final": getattr(self, "final", {}),
                 "args": {k: str(v) for k, v in vars(self.args).items()}}, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run = Run(args)
    signal.signal(signal.SIGTERM, lambda *_: run.stop.set())
    signal.signal(signal.SIGINT, lambda *_: run.stop.set())
    rep: checker.Report | None = None
    try:
        rep = run.execute()
    except BaseException as exc:  # noqa: BLE001 - pytest.fail in the harness is a BaseException
        run.save(None)
        run.teardown(keep=True)
        print(f"checker: the run could not be completed: {exc}", flush=True)
        print(f"checker: history and logs kept in {run.out}", flush=True)
        print("checker: ops=%d acknowledged=0 lost=0 anomalies=1" % len(run.history.ops))
        return 2
    run.save(rep)
    for line in rep.lost_writes[:20] + rep.anomalies[:40]:
        print(line)
    run.teardown(keep=args.keep or not rep.ok)
    if not rep.ok:
        print(f"checker: RED: history, report and node logs kept in {run.out}")
    print(rep.line(), flush=True)
    return 0 if rep.ok else 1
