"""The consistency checker (`e2e/checker`, package `e2e/consistency`) run for real: a clean
run under every nemesis must find lost=0 anomalies=0, and a run against a daemon with a
test-only fault that acknowledges writes it then drops must find lost > 0 (a checker that
cannot see a loss proves nothing)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from storaged_proc import REPO, clean_env

CHECKER = REPO / "e2e" / "checker"
LAST = re.compile(r"^checker: ops=(\d+) acknowledged=(\d+) lost=(\d+) anomalies=(\d+)$")
# CI budget: the clean run's workload minutes (override for a longer local run).
CI_MINUTES = float(os.environ.get("CHECKER_CI_MINUTES", "2.5"))


def run_checker(storaged_bin: Path, out: Path, *args: str, timeout: float) -> tuple[dict, str]:
    env = clean_env()
    env["STORAGED_BIN"] = str(storaged_bin)
    res = subprocess.run([str(CHECKER), "--out", str(out), *args], env=env, text=True,
                         capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = res.stdout.strip().splitlines()
    m = LAST.match(lines[-1]) if lines else None
    assert m, f"no checker line last (exit {res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
    ops, acked, lost, anomalies = map(int, m.groups())
    return ({"rc": res.returncode, "ops": ops, "acknowledged": acked, "lost": lost,
             "anomalies": anomalies}, res.stdout)


@pytest.mark.timeout(int(CI_MINUTES * 60) + 480)
def test_checker_finds_no_loss_under_every_nemesis(storaged_bin: Path, tmp_path: Path):
    got, out = run_checker(storaged_bin, tmp_path / "clean", "--minutes", str(CI_MINUTES),
                           "--nemesis", "kill,pause,partition,layout,skew",
                           timeout=CI_MINUTES * 60 + 420)
    print(out[-3000:])
    assert got["rc"] == 0 and got["lost"] == 0 and got["anomalies"] == 0, out[-6000:]
    # at least 5 ops/s sustained, and every nemesis ran
    assert got["ops"] >= 5 * CI_MINUTES * 60, got
    for what in ("kill -9", "SIGSTOP", "cut", "layout", "clock offset"):
        assert f"nemesis: {what}" in out or what in out, f"no {what} in the run:\n{out[-3000:]}"


@pytest.mark.timeout(420)
def test_checker_reports_acknowledged_writes_a_faulty_daemon_lost(storaged_bin: Path,
                                                                  tmp_path: Path):
    got, out = run_checker(storaged_bin, tmp_path / "faulty", "--minutes", "0.4",
                           "--nemesis", "none", "--fault", "lose_acked_puts", timeout=360)
    assert got["rc"] == 1 and got["lost"] > 0, out[-4000:]
    assert (tmp_path / "faulty" / "history.jsonl").is_file(), "a red run keeps its history"
    assert "RED" in out
