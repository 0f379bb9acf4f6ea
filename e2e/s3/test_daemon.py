"""The daemon as an operator meets it: config validation naming the bad field, STORAGED_*
environment overrides and *_file secrets, /metrics, and the copy-pasteable example that
`storaged dev` prints."""

from __future__ import annotations

import re
import subprocess

import pytest
import requests

from storaged_proc import boto3_client, clean_env, free_port, wait_until
from .helpers import run

BAD_CONFIGS = [
    ({"rpc_secret": "not-hex"}, "rpc_secret"),
    ({"rpc_secret": None}, "rpc_secret"),
    ({"replication_factor": 0}, "replication_factor"),
    ({"metadata_dir": ""}, "metadata_dir"),
    ({"s3_api.api_bind_addr": "not an address"}, "api_bind_addr"),
    ({"admin.admin_token": ""}, "admin_token"),
    # Accepted by the old range (up to 64 MiB) but larger than a replica takes (32 MiB).
    ({"block_size": 64 * 1024 * 1024}, "block_size"),
]


@pytest.mark.parametrize("overrides,field", BAD_CONFIGS,
                         ids=[f for _, f in BAD_CONFIGS[:1]] + [
                             "rpc_secret-missing", "replication_factor", "metadata_dir",
                             "api_bind_addr", "admin_token", "block_size"])
def test_invalid_config_names_the_field(instances, overrides, field):
    srv = instances.server("badcfg", start=False, **overrides)
    srv.spawn()
    try:
        rc = srv.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"storaged kept running with an invalid config ({overrides})\n{srv.log_tail()}")
    log = srv.log_path.read_text(errors="replace")
    assert rc != 0, f"invalid config must exit non-zero ({overrides})"
    assert field in log, f"the error must name `{field}`:\n{log[-2000:]}"
    if field == "block_size":
        # Our own validation (not a TOML parser's snippet): one line, no backtrace.
        out = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("=====")]
        assert len(out) == 1 and "block_size" in out[0], out


def test_env_overrides_and_secret_files(instances, tmp_path, cli):
    token_file = tmp_path / "admin-token"
    token_file.write_text("token-from-a-file\n")
    srv = instances.server("envcfg", start=False, **{"admin.admin_token": None,
                                                     "admin.admin_token_file": str(token_file)})
    s3_port = free_port()
    srv.extra_env = {"STORAGED_S3_API_API_BIND_ADDR": f"127.0.0.1:{s3_port}"}
    srv.s3_port = s3_port
    srv.cfg.endpoint = f"http://127.0.0.1:{s3_port}"
    srv.cfg.admin_token = "token-from-a-file"
    srv.start()
    # The admin token came from the file (trailing newline trimmed) ...
    r = requests.get(f"{srv.cfg.admin_endpoint}/v1/keys",
                     headers={"Authorization": "Bearer token-from-a-file"}, timeout=10)
    assert r.status_code == 200, r.text
    # ... and S3 listens where the environment said, not where the file said.
    key_cfg = cli.create_key(srv.cfg, "env", create_bucket=True)
    client = boto3_client(key_cfg)
    client.create_bucket(Bucket="env-bucket")
    assert "env-bucket" in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_metrics_endpoint(dev_cfg, s3, bucket):
    s3.put_object(Bucket=bucket, Key="m", Body=b"x")
    r = requests.get(dev_cfg.admin_endpoint + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert "# TYPE" in r.text or "# HELP" in r.text, "Prometheus text format expected"


@pytest.mark.timeout(180)
def test_dev_printed_example_works(dev, tool, tmp_path):
    """The `aws` example `storaged dev` prints, pasted into a shell with nothing else set up."""
    tool("aws")
    out = dev.log_path.read_text(errors="replace")
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    lines = [ln.strip() for ln in out.splitlines()]
    cmds = [ln for ln in lines if re.match(r"^(source |\. |echo |aws |export )", ln)]
    assert any(c.startswith("aws ") and " cp " in c for c in cmds), (
        f"no copy-pasteable `aws s3 cp` example in the dev output:\n{out[-3000:]}")
    env = clean_env()
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    if not any(c.startswith(("source ", ". ", "export ")) for c in cmds):
        cmds.insert(0, f"source {dev.dev_env_path}")
    script = "set -euo pipefail\n" + "\n".join(cmds) + "\n"
    res = run(["bash", "-c", script], env, cwd=tmp_path, timeout=120)
    assert "hello" in res.stdout, f"the example's `aws s3 ls` did not show the object:\n{res.stdout}"
    client = boto3_client(dev.cfg)
    objs = client.list_objects_v2(Bucket=dev.cfg.bucket).get("Contents", [])
    assert any(o["Key"].startswith("hello") for o in objs)


def test_ready_reflects_readiness(dev_cfg):
    wait_until(lambda: requests.get(dev_cfg.admin_endpoint + "/ready", timeout=5).status_code == 200,
               10, "/ready to answer 200 on a single healthy node")


def test_ready_is_503_on_a_lone_node_that_needs_peers(instances):
    """`replication_factor = 3`, no peers, no layout: alive, but it cannot serve."""
    srv = instances.server("lone-rf3", replication_factor=3)
    assert requests.get(srv.cfg.admin_endpoint + "/health", timeout=5).status_code == 200
    r = requests.get(srv.cfg.admin_endpoint + "/ready", timeout=5)
    assert r.status_code == 503, r.text
    assert "layout" in r.text, r.text
