"""Secrets never appear where they do not belong.

A 3-node cluster logging at debug level (storaged and s3s at trace) gets keys created through
the admin API and the CLI, S3 traffic that succeeds and fails (wrong signatures, unknown keys,
presigned URLs), admin and metrics calls with wrong tokens, and then every node log and every
response collected on the way is searched for every S3 secret key, the rpc secret, the admin
token and the metrics token. The only responses allowed to carry a secret are the ones whose
job is to return it: key creation and import, and `GET /v1/keys/{id}?show_secret=true` (and the
CLI's `key create` / `key info --show-secret`)."""

from __future__ import annotations

import secrets
import subprocess
import uuid

import pytest
import requests

from storaged_proc import S3Config, admin_env, boto3_client
from s3.helpers import key_path, presign_url, signed_request

LOG_LEVEL = "debug,storaged=trace,s3s=trace"


class Collected:
    """Every response body and header set the test saw, by where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, what: str, resp) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        self.items.append((what, f"HTTP {resp.status_code}\n{headers}\n\n{resp.text}"))

    def add_text(self, what: str, text: str) -> None:
        self.items.append((what, text))


def _cli(node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(node.binary), *args], env=admin_env(node.cfg), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def _flip_last_char(h: dict) -> None:
    """Changes the signature's last hex digit (to another digit, whatever it was)."""
    last = h["authorization"][-1]
    h.update(authorization=h["authorization"][:-1] + ("1" if last == "0" else "0"))


@pytest.mark.timeout(300)
def test_secrets_never_in_logs_or_responses(make_cluster):
    metrics_token = secrets.token_hex(16)
    c = make_cluster(3, start=False, settings={"admin.metrics_token": metrics_token})
    for n in c.nodes:
        n.extra_env["RUST_LOG"] = LOG_LEVEL
    c.start()
    first, second = c.nodes[0], c.nodes[1]
    seen = Collected()
    s3_secrets = {c.key.secret_key}

    # Keys through the admin API (the creation answer carries the secret: exempt) and the CLI.
    api_key = first.admin("POST", "/v1/keys", {"name": "secrets-api"})
    s3_secrets.add(api_key["secret_access_key"])
    imported_secret = secrets.token_hex(32)
    imported_id = "GK" + secrets.token_hex(12)
    first.admin("POST", "/v1/keys/import", {"access_key_id": imported_id,
                                            "secret_access_key": imported_secret,
                                            "name": "secrets-import"})
    s3_secrets.add(imported_secret)
    res = _cli(second, "key", "create", "--name", "secrets-cli", "--json")
    assert res.returncode == 0, res.stderr
    import json

    cli_key = json.loads(res.stdout)
    s3_secrets.add(cli_key["secret_access_key"])
    seen.add_text("cli key create stderr", res.stderr)
    # The secret is shown where asked for, and only there.
    shown = first.admin("GET", f"/v1/keys/{cli_key['access_key_id']}?show_secret=true")
    assert shown["secret_access_key"] == cli_key["secret_access_key"]
    res = _cli(first, "key", "info", cli_key["access_key_id"])
    assert res.returncode == 0, res.stderr
    seen.add_text("cli key info", res.stdout + res.stderr)
    res = _cli(first, "key", "list")
    seen.add_text("cli key list", res.stdout + res.stderr)
    res = _cli(first, "status")
    seen.add_text("cli status", res.stdout + res.stderr)

    # S3 traffic through every node, good and bad.
    for i, n in enumerate(c.nodes):
        s3 = n.s3()
        s3.put_object(Bucket=c.bucket, Key=f"k{i}", Body=b"payload %d" % i)
        assert s3.get_object(Bucket=c.bucket, Key=f"k{i}")["Body"].read() == b"payload %d" % i
        cfg = n.key
        r = signed_request(cfg, "GET", key_path(c.bucket, f"k{i}"),
                           tamper=_flip_last_char)
        seen.add(f"{n.name} tampered signature", r)
        assert r.status_code == 403
        r = signed_request(cfg.with_key(cfg.access_key, "0" * 64), "GET", f"/{c.bucket}",
                           "list-type=2")
        seen.add(f"{n.name} wrong secret", r)
        assert r.status_code == 403
        r = signed_request(cfg.with_key("GK" + uuid.uuid4().hex[:24], cfg.secret_key), "GET",
                           f"/{c.bucket}", "list-type=2")
        seen.add(f"{n.name} unknown key", r)
        assert r.status_code == 403
        r = signed_request(cfg, "PUT", key_path(c.bucket, "bad-md5"), body=b"x",
                           headers={"content-md5": "AAAAAAAAAAAAAAAAAAAAAA=="})
        seen.add(f"{n.name} bad digest", r)
        url = presign_url(cfg, "GET", key_path(c.bucket, f"k{i}"), expires=300)
        r = requests.get(url, timeout=30)
        seen.add(f"{n.name} presigned", r)
        assert r.status_code == 200
        r = requests.get(url[:-1] + ("0" if url[-1] != "0" else "1"), timeout=30)
        seen.add(f"{n.name} presigned tampered", r)
        assert r.status_code == 403
        # Keys created through one node sign requests on every other one.
        for kid, secret in ((api_key["access_key_id"], api_key["secret_access_key"]),
                            (cli_key["access_key_id"], cli_key["secret_access_key"])):
            other = boto3_client(S3Config(endpoint=n.cfg.endpoint, access_key=kid,
                                          secret_key=secret))
            other.list_buckets()

        # Admin and metrics, with right and wrong tokens.
        base = n.cfg.admin_endpoint
        for path, token in (("/v1/status", c.admin_token), ("/v1/keys", c.admin_token),
                            (f"/v1/keys/{cli_key['access_key_id']}", c.admin_token),
                            ("/v1/status", "wrong-" + secrets.token_hex(8)),
                            ("/v1/keys", ""), ("/metrics", metrics_token),
                            ("/metrics", "wrong-" + secrets.token_hex(8)), ("/metrics", ""),
                            ("/v1/health", c.admin_token), ("/v1/layout", c.admin_token),
                            ("/v1/buckets", c.admin_token), ("/v1/nodes", c.admin_token)):
            hdrs = {"Authorization": f"Bearer {token}"} if token else {}
            r = requests.get(base + path, headers=hdrs, timeout=10)
            seen.add(f"{n.name} GET {path} ({'right' if token in (c.admin_token, metrics_token) else 'wrong'} token)", r)
        r = requests.get(base + "/v1/status", headers={"Authorization": f"Bearer {c.admin_token}"},
                         timeout=10)
        assert r.status_code == 200, r.text
        r = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {metrics_token}"},
                         timeout=10)
        assert r.status_code == 200 and "storaged" in r.text, r.text[:300]
        assert requests.get(base + "/metrics", timeout=10).status_code in (401, 403)
        # A malformed admin request: its error must not echo what it was sent.
        r = requests.post(base + "/v1/keys/import", timeout=10,
                          headers={"Authorization": f"Bearer {c.admin_token}"},
                          json={"access_key_id": "bad id", "secret_access_key": "short-secret-xyz"})
        seen.add(f"{n.name} bad import", r)
        assert r.status_code == 400, r.text
        assert "short-secret-xyz" not in r.text, r.text

    # A wrong admin token through the CLI.
    env = admin_env(first.cfg)
    env["STORAGED_ADMIN_TOKEN"] = "wrong-" + secrets.token_hex(8)
    res = subprocess.run([str(first.binary), "key", "list"], env=env, capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode != 0
    seen.add_text("cli wrong token", res.stdout + res.stderr)

    # Stop the nodes so their logs are complete (shutdown lines included).
    for n in c.nodes:
        n.stop()
    everything = {"rpc secret": c.rpc_secret, "admin token": c.admin_token,
                  "metrics token": metrics_token}
    everything.update({f"S3 secret {s[:4]}…": s for s in s3_secrets})
    leaks = []
    total_log = 0
    for n in c.nodes:
        text = n.log_path.read_text(errors="replace")
        total_log += len(text)
        for what, value in everything.items():
            if value in text:
                line = next(l for l in text.splitlines() if value in l)
                leaks.append(f"{n.name} log has the {what}: {line[:300]}")
    for where, text in seen.items:
        for what, value in everything.items():
            if value in text:
                leaks.append(f"response '{where}' has the {what}: {text[:300]}")
    assert not leaks, "\n".join(leaks)
    # The logs were really verbose: a filter that logged nothing would pass vacuously.
    assert total_log > 20_000, f"only {total_log} bytes of logs at {LOG_LEVEL}"
