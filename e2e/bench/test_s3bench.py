"""`s3bench` works (a smoke run, not a measurement: no timing is asserted).

It starts its own 3-node `storaged dev` cluster from the built binary, runs every operation
of the `smoke` scenario and writes its results; against the shared dev instance it runs one
workload given by URL and credentials; and it fails, naming the S3 error, when every request
is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3bench() -> Path:
    path = Path(os.environ.get("S3BENCH_BIN", REPO / "target/release/s3bench"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"s3bench not found at {path}: cargo build --release -p s3bench")
    return path


def run(cmd: list[str], timeout: float = 240, env: dict | None = None):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, env=env)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        if text in cmd:
            found.append(cmd.replace("\0", " "))
    return found


def test_smoke_scenario_on_its_own_cluster(s3bench, storaged_bin, tmp_path):
    out = tmp_path / "smoke"
    r = run([s3bench, "scenario", "smoke", "--storaged", storaged_bin, "--out", out])
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "results.json").read_text())
    ops = report["ops"]
    expected = {"1.put": 200, "2.get": 200, "3.put": 4, "4.head": 100, "5.list": 2,
                "6.delete": 200}
    assert {k: v["ops"] for k, v in ops.items()} == expected
    assert all(v["errors"] == 0 for v in ops.values())
    assert ops["2.get"]["mb_per_sec"] > 0 and ops["2.get"]["p99_ms"] >= ops["2.get"]["p50_ms"]
    # Each list pass sees every key of the run (200 small objects).
    assert ops["5.list"]["keys_per_sec"] > 0
    assert report["servers"]["peak_rss_bytes"] > 0 and report["servers"]["cpu_seconds"] > 0
    assert (out / "results.csv").read_text().startswith("name,op,ops,errors")
    # The cluster it started is gone.
    assert not processes_mentioning(str(out))


def test_run_against_an_endpoint_and_refusals_fail_the_run(s3bench, dev_cfg, bucket, tmp_path):
    base = [s3bench, "run", "--endpoint", dev_cfg.endpoint, "--access-key", dev_cfg.access_key,
            "--bucket", bucket, "--mix", "put=1,get=1", "--size", "1KiB-20KiB",
            "--clients", "4", "--ops", "60", "--keys", "60"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = run([*base, "--secret-key", dev_cfg.secret_key, "--allow-errors", "--out",
             tmp_path / "ok"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ops = json.loads((tmp_path / "ok" / "results.json").read_text())["ops"]
    assert ops["put"]["errors"] == 0 and ops["put"]["ops"] > 0
    # GETs of keys not written yet may be 404s (allowed here); every other one succeeded.
    assert ops["put"]["ops"] + ops["get"]["ops"] + ops["get"]["errors"] == 60

    r = run([*base, "--secret-key", "wrong" * 8, "--out", tmp_path / "bad"], env=env)
    assert r.returncode == 1
    # Refused at once (creating the bucket), in one line naming the S3 error.
    assert "SignatureDoesNotMatch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
