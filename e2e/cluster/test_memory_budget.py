"""The node-wide memory budget (`limits.memory_budget_bytes`) holds under a stalled replica.

Node 3 is paused (SIGSTOP) but never declared down (the failure detector is told to wait),
so every chunk put to it hangs until its 30 s call timeout: the worst case for memory, since
each of those transfers keeps its chunk alive. Clients push 384 MiB through node 1 at once.
The budget must keep node 1's resident memory near its start while the PUTs still succeed
on the other two replicas, node 1 must keep answering other requests, and node 3 must get
every chunk once it resumes (the transfers abandoned to free the budget are resync's).

`TEST_BUDGET=4294967295` runs the same load with no practical bound, to measure the growth
the budget prevents (the assertions then fail, as they should).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import requests

from storaged_proc import wait_until

from .harness import MiB, Ledger, chunk_digests, random_body, wait_chunks_everywhere

BUDGET = int(os.environ.get("TEST_BUDGET", 8 * MiB))
OBJECT = 8 * MiB
WRITERS = 12
PER_WRITER = 4
# Resident memory node 1 may grow by over its idle level: the budget, plus what is not
# object data (connection buffers, allocator slack, compression contexts). Without the
# budget the growth is the data in flight to the stalled node, several hundred MiB.
GROWTH_MAX = 112 * MiB


def rss_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert m, f"no {field} in /proc/{pid}/status"
    return int(m.group(1))


def metric(node, name: str) -> float:
    text = requests.get(node.cfg.admin_endpoint + "/metrics", timeout=5).text
    m = re.search(rf"^storaged_{name} (\S+)$", text, re.M)
    assert m, f"metric storaged_{name} missing"
    return float(m.group(1))


def test_memory_stays_in_budget_under_a_stalled_replica(make_cluster):
    c = make_cluster(settings={
        "limits.memory_budget_bytes": BUDGET,
        "background.failures_before_down": 100_000,  # node 3 stays "up", its calls hang
        "limits.header_read_timeout_secs": 300,
    })
    n1, n2, n3 = c.nodes
    c1 = n1.s3()
    pid = n1.proc.pid
    # Warm up (connections, pools) so the idle level is a fair baseline.
    warm = random_body(2 * MiB)
    c1.put_object(Bucket=c.bucket, Key="warm", Body=warm)
    assert c1.get_object(Bucket=c.bucket, Key="warm")["Body"].read() == warm
    idle = rss_kib(pid, "VmRSS") * 1024

    ledger = Ledger()
    peak_in_use = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak_in_use[0] = max(peak_in_use[0], metric(n1, "memory_budget_in_use_bytes"))
            sampling.wait(0.2)

    def writer(t: int) -> None:
        client = n1.s3()
        for i in range(PER_WRITER):
            ledger.put(client, c.bucket, f"big/t{t}/o{i}", random_body(OBJECT), via="node1")

    n3._killpg(signal.SIGSTOP)
    try:
        sampler = threading.Thread(target=sample, daemon=True)
        threads = [threading.Thread(target=writer, args=(t,), daemon=True)
                   for t in range(WRITERS)]
        sampler.start()
        for th in threads:
            th.start()
        # The node keeps serving while its budget is under pressure.
        wait_until(lambda: len(ledger.acked) + len(ledger.errors) >= WRITERS // 2, 120,
                   "the first big PUTs to end")
        t0 = time.monotonic()
        c1.put_object(Bucket=c.bucket, Key="small", Body=b"still serving")
        assert c1.get_object(Bucket=c.bucket, Key="small")["Body"].read() == b"still serving"
        served_in = time.monotonic() - t0
        for th in threads:
            th.join(240)
        assert not any(th.is_alive() for th in threads), "writers still running after 240 s"
        sampling.set()
        sampler.join(10)
        peak = rss_kib(pid, "VmHWM") * 1024
        print(f"idle={idle / MiB:.0f}MiB peak={peak / MiB:.0f}MiB growth="
              f"{(peak - idle) / MiB:.0f}MiB budget_in_use_peak={peak_in_use[0] / MiB:.1f}MiB "
              f"waits={metric(n1, 'memory_budget_waits'):.0f} small_put_get={served_in:.1f}s "
              f"acked={len(ledger.acked)}/{WRITERS * PER_WRITER}")
        assert not ledger.errors, ledger.errors[:5]
        assert metric(n1, "memory_budget_waits") > 0, "the budget never pushed back"
        assert peak_in_use[0] <= BUDGET
        assert peak - idle < GROWTH_MAX, (
            f"node 1 grew by {(peak - idle) / MiB:.0f} MiB with a {BUDGET / MiB:.0f} MiB budget")
        assert served_in < 20, f"a small PUT + GET took {served_in:.1f} s under pressure"
    finally:
        n3._killpg(signal.SIGCONT)

    # Node 3 gets every chunk it missed (abandoned transfers are resync's), and every
    # acknowledged object reads back whole through every node.
    expected = {d for body in ledger.acked.values() for d in chunk_digests(body)}
    wait_chunks_everywhere([n1, n2, n3], expected, timeout=120)
    ledger.verify({"node1": c1, "node2": n2.s3(), "node3": n3.s3()}, c.bucket)
