"""The storaged pod the operator renders, run as a local process: the ConfigMap's
storaged.toml, the container's args and env, and the Secret mounts, with only the mount paths
moved under a temp dir and the listen ports moved to free loopback ports. It must start, pass
its startup and liveness probes (its readiness probe rightly fails: a lone pod has no
layout), and report the zone of its StatefulSet — even though its bootstrap peer (the
headless Service DNS name) does not resolve here."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from oplib import ROOT, render

STORAGED_BIN = Path(os.environ.get("STORAGED_BIN", ROOT / "target" / "release" / "storaged"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container env values."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


@pytest.mark.timeout(60)
def test_rendered_pod_runs_as_a_storaged_process(operator_bin, tmp_path):
    assert STORAGED_BIN.exists(), f"{STORAGED_BIN} missing: cargo build --release -p storaged"
    objs = render(operator_bin, ROOT / "examples" / "garagecluster.yaml")
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    sts = next(o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"].endswith("-paris"))
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]

    # Mounts: the ConfigMap, the Secret (rpc secret + admin token), the two volumes.
    moved: dict[str, Path] = {}
    for m in container["volumeMounts"]:
        moved[m["mountPath"]] = tmp_path / m["name"]
        moved[m["mountPath"]].mkdir()
    toml = config["data"]["storaged.toml"]
    for mount, local in moved.items():
        toml = toml.replace(mount, str(local))
    config_dir = next(p for m, p in moved.items() if m == "/etc/storaged")
    (config_dir / "storaged.toml").write_text(toml)
    secret_dir = next(p for m, p in moved.items() if "secrets" in m)
    token = secrets.token_hex(16)
    (secret_dir / "rpc_secret").write_text(secrets.token_hex(32))
    (secret_dir / "admin_token").write_text(token)

    env = {"POD_NAME": f"{sts['metadata']['name']}-0"}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
    s3, admin, rpc = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    env.update({
        "STORAGED_S3_API_API_BIND_ADDR": f"127.0.0.1:{s3}",
        "STORAGED_ADMIN_API_BIND_ADDR": f"127.0.0.1:{admin}",
        "STORAGED_RPC_BIND_ADDR": f"127.0.0.1:{rpc}",
    })
    args = [a.replace("/etc/storaged", str(config_dir)) for a in container["args"]]
    cmd = [str(STORAGED_BIN)] + args
    log = open(tmp_path / "pod.log", "wb")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = container["readinessProbe"]["httpGet"]["path"]
        live = container["livenessProbe"]["httpGet"]["path"]
        startup = container["startupProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "pod.log").read_text()
            try:
                if get(f"http://127.0.0.1:{admin}{startup}")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "startup probe never passed"
            time.sleep(0.05)
        assert get(f"http://127.0.0.1:{admin}{live}")[0] == 200
        # Alone, without peers or a layout (the operator applies it once the pods of every
        # zone are up), it is alive but not ready: no S3 traffic until it can serve. The
        # peers Service publishes it anyway (publishNotReadyAddresses) so the others and the
        # operator reach it.
        code, body = get(f"http://127.0.0.1:{admin}{probe}")
        assert code == 503 and b"layout" in body, (code, body)
        code, body = get(f"http://127.0.0.1:{admin}/v1/status", token)
        assert code == 200, body
        me = [n for n in json.loads(body)["nodes"] if n["node_id"] == json.loads(body)["node_id"]]
        assert me and me[0]["zone"] == "paris", body
    finally:
        proc.terminate()
        assert proc.wait(timeout=35) == 0, "SIGTERM (pod deletion) must stop the node cleanly"
        log.close()
