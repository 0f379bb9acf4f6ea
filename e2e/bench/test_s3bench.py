"""`s3bench` works (a smoke run, not a measurement: no timing is asserted).

It starts its own cluster (three plain `storaged server` processes) from the built binary,
runs every operation of the `smoke` scenario and writes its results and plots; runs tiny
versions of the `delete`, `list` (seeded once into a kept data directory), `geo` (through the
delaying proxies) and `keepalive` scenarios; against the shared dev instance it runs one
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
    assert report["system"] == "storaged"
    assert report["rss"]["idle_bytes"] > 0 and set(report["rss"]["after"]) == set(expected)
    assert (out / "results.csv").read_text().startswith("system,name,op,ops,errors")
    for plot in ("latency.svg", "throughput.svg"):
        svg = (out / plot).read_text()
        assert svg.startswith("<svg") and "2.get" in svg, plot
    # Each node got a minimal config: no tuning key.
    config = (out / "cluster" / "node1" / "storaged.toml").read_text()
    assert "replication_factor = 3" in config and "block_size" not in config
    # The cluster it started is gone.
    assert not processes_mentioning(str(out))


def scenario(s3bench, storaged_bin, out, *args):
    r = run([s3bench, "scenario", *args, "--storaged", storaged_bin, "--out", out])
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((out / "results.json").read_text())


def test_delete_objects_in_one_request_and_in_batches(s3bench, storaged_bin, tmp_path):
    ops = scenario(s3bench, storaged_bin, tmp_path / "d", "delete", "--keys", "50")["ops"]
    assert {k: (v["ops"], v["items"]) for k, v in ops.items()} == {
        "1.put": (50, 0),
        "2.delete_objects": (1, 50),  # one request of all 50 keys
        "3.put": (50, 0),
        "4.delete_objects": (10, 50),  # requests of 5
        "5.list": (1, 0),  # nothing is left
    }
    assert all(v["errors"] == 0 for v in ops.values())


def test_list_seeds_a_kept_data_dir_once(s3bench, storaged_bin, tmp_path):
    args = ["list", "--keys", "300", "--data-root", tmp_path / "data"]
    first = scenario(s3bench, storaged_bin, tmp_path / "l1", *args)["ops"]
    assert first["1.seed_put"]["ops"] == 300
    again = scenario(s3bench, storaged_bin, tmp_path / "l2", *args)
    ops = again["ops"]
    assert "1.seed_put" not in ops  # the kept cluster came back with its keys
    assert ops["2.list"]["items"] == 300
    # 300 keys are spread over d00..d99: d07 holds 3, in 3 "subdirectories".
    assert ops["3.list"]["items"] == 3 * 3
    assert ops["4.list_delim"]["items"] == 100 * 5
    assert ops["5.list_delim"]["items"] == 3 * 5
    assert again["rss"]["after"]["2.list"] > 0
    assert not processes_mentioning(str(tmp_path / "data"))


def test_geo_goes_through_the_delaying_proxies(s3bench, storaged_bin, tmp_path):
    ops = scenario(s3bench, storaged_bin, tmp_path / "g", "geo", "--keys", "5")["ops"]
    assert ops["1.put"]["ops"] == 5 and ops["2.get"]["ops"] == 5
    # Not a timing assertion but a proof the proxies are in the path: a quorum write needs
    # another zone, which is at least one 50 ms round trip away.
    assert ops["1.put"]["p50_ms"] >= 50


def test_keepalive_gets_over_fixed_connections(s3bench, storaged_bin, tmp_path):
    out = tmp_path / "k"
    report = scenario(s3bench, storaged_bin, out, "keepalive", "--seconds", "1", "--no-wrk")
    ka = report["ops"]["2.keepalive_get"]
    assert ka["ops"] > 0 and ka["errors"] == 0 and ka["mb_per_sec"] > 0


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
