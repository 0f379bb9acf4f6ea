"""Process management and client plumbing for the storaged e2e suites (used by conftest.py and
the tests; no pytest fixtures here)."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BIN = REPO / "target" / "release" / "storaged"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

DEV_ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "BUCKET_NAME",
    "STORAGED_ADMIN_ENDPOINT",
    "STORAGED_ADMIN_TOKEN",
)


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def wait_until(
    cond: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> object:
    """Poll `cond` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_exc = exc
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_exc!r})" if last_exc else "")
                + (f"\n{extra}" if extra else "")
            )
        time.sleep(interval)  # poll interval, not synchronisation


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_bucket_name(hint: str = "") -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{slug}-{uuid.uuid4().hex[:10]}" if slug else f"e2e-{uuid.uuid4().hex[:16]}"
    return name[:63].strip("-")


def venv_bin() -> Path:
    return Path(sys.executable).parent


def find_tool(name: str) -> str:
    """Path of a client binary, preferring the venv's bin/; fails (not skips) when missing."""
    path = shutil.which(name, path=f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}")
    if not path:
        pytest.fail(
            f"client `{name}` not found in {venv_bin()} nor on PATH: install the e2e "
            f"requirements (pip install -r e2e/requirements.txt; s3cmd also via apt)"
        )
    return path


def parse_env_file(text: str) -> dict[str, str]:
    """Parse `export NAME=value` lines (values may be shell-quoted)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(value) if value else [""]
        out[name.strip()] = parts[0] if parts else ""
    return out


# --------------------------------------------------------------------------------------------
# Connection settings of one instance
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class S3Config:
    """Where and as whom to talk to an instance."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    bucket: str | None = None
    admin_endpoint: str | None = None
    admin_token: str | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def host_port(self) -> tuple[str, int]:
        from urllib.parse import urlsplit

        u = urlsplit(self.endpoint)
        return u.hostname or "127.0.0.1", u.port or 80

    def with_key(self, access_key: str, secret_key: str) -> "S3Config":
        return dataclasses.replace(self, access_key=access_key, secret_key=secret_key)


def admin_env(cfg: S3Config) -> dict[str, str]:
    env = clean_env()
    env["STORAGED_ADMIN_ENDPOINT"] = cfg.admin_endpoint or ""
    env["STORAGED_ADMIN_TOKEN"] = cfg.admin_token or ""
    return env


def clean_env() -> dict[str, str]:
    """os.environ without anything that could point a client or the daemon elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "STORAGED_", "RCLONE_", "S3_", "NODE"))
        and k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
    }
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def make_client_env(cfg: S3Config) -> dict[str, str]:
    """Environment for S3 client subprocesses (aws, rclone, s5cmd, s3cmd)."""
    env = clean_env()
    env.update(
        AWS_ACCESS_KEY_ID=cfg.access_key,
        AWS_SECRET_ACCESS_KEY=cfg.secret_key,
        AWS_ENDPOINT_URL=cfg.endpoint,
        AWS_REGION=cfg.region,
        AWS_DEFAULT_REGION=cfg.region,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_RETRY_MODE="standard",
        AWS_MAX_ATTEMPTS="2",
    )
    if cfg.bucket:
        env["BUCKET_NAME"] = cfg.bucket
    env.pop("AWS_CA_BUNDLE", None)
    env.pop("AWS_PROFILE", None)
    return env


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class Storaged:
    """One `storaged` process that this suite started (in its own process group)."""

    def __init__(self, binary: Path, args: list[str], workdir: Path, name: str):
        self.binary = binary
        self.args = args
        self.workdir = workdir
        self.name = name
        self.cfg: S3Config | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"{name}.log"
        self.starts = 0
        self.extra_env: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def spawn(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {self.binary} {' '.join(self.args)}\n".encode())
        log.flush()
        env = clean_env()
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env["NO_COLOR"] = "1"  # plain logs for failure reports
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [str(self.binary), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def check_alive(self, what: str) -> None:
        if not self.alive():
            rc = self.proc.returncode if self.proc else None
            pytest.fail(f"storaged ({self.name}) exited with {rc} while {what}\n{self.log_tail()}")

    def _killpg(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = STOP_TIMEOUT_S, kill_leftovers: bool = True) -> int | None:
        """SIGTERM, wait; returns the exit code. SIGKILLs the group if it does not exit, and
        (unless `kill_leftovers` is False) whatever of its process group outlived it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._killpg(signal.SIGKILL)
                self.proc.wait(timeout=10)
                raise AssertionError(
                    f"storaged ({self.name}) did not exit within {timeout}s of SIGTERM\n"
                    + self.log_tail()
                )
        if kill_leftovers:
            self._killpg(signal.SIGKILL)
        return self.proc.returncode

    def kill9(self) -> None:
        """kill -9 the whole process group this suite started (supervisor and nodes)."""
        self._killpg(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def health_ok(self) -> bool:
        import requests

        assert self.cfg and self.cfg.admin_endpoint
        try:
            return requests.get(self.cfg.admin_endpoint + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False


class DevInstance(Storaged):
    """`storaged dev --data-dir DIR`, ready once DIR/dev.env exists."""

    def __init__(self, binary: Path, data_dir: Path, name: str = "dev",
                 nodes: int | None = None, zones: int | None = None):
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["dev", "--data-dir", str(data_dir)]
        if nodes is not None:
            args += ["--nodes", str(nodes)]
        if zones is not None:
            args += ["--zones", str(zones)]
        super().__init__(binary, args, data_dir.parent, name)
        self.data_dir = data_dir
        self.env: dict[str, str] = {}

    def node_count(self) -> int:
        """How many nodes dev.env lists (NODE<i>_ENDPOINT for i = 1..n)."""
        n = 0
        while f"NODE{n + 1}_ENDPOINT" in self.env:
            n += 1
        return n

    @property
    def dev_env_path(self) -> Path:
        return self.data_dir / "dev.env"

    def start(self, timeout: float = READY_TIMEOUT_S) -> "DevInstance":
        # A previous run's dev.env says nothing about this one: readiness is a fresh file.
        self.dev_env_path.unlink(missing_ok=True)
        self.spawn()

        def ready() -> bool:
            self.check_alive("starting (no dev.env yet)")
            return self.dev_env_path.exists()

        wait_until(ready, timeout, f"{self.dev_env_path} to appear", on_timeout=self.log_tail)
        self.env = parse_env_file(self.dev_env_path.read_text())
        missing = [k for k in DEV_ENV_KEYS if not self.env.get(k)]
        assert not missing, f"dev.env lacks {missing}: {self.env}"
        self.cfg = S3Config(
            endpoint=self.env["AWS_ENDPOINT_URL"],
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region=self.env["AWS_REGION"],
            bucket=self.env["BUCKET_NAME"],
            admin_endpoint=self.env["STORAGED_ADMIN_ENDPOINT"].rstrip("/"),
            admin_token=self.env["STORAGED_ADMIN_TOKEN"],
            extra=self.env,
        )
        return self


class ServerInstance(Storaged):
    """`storaged server -c FILE` with a generated config on free ports."""

    def __init__(self, binary: Path, root: Path, name: str = "server", **overrides: object):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.s3_port = free_port()
        self.admin_port = free_port()
        self.rpc_port = free_port(socket.SOCK_DGRAM)
        self.admin_token = secrets.token_hex(16)
        settings: dict[str, object] = {
            "metadata_dir": str(root / "meta"),
            "data_dir": str(root / "data"),
            "replication_factor": 1,
            "rpc_bind_addr": f"127.0.0.1:{self.rpc_port}",
            "rpc_secret": secrets.token_hex(32),
            "s3_api.api_bind_addr": f"127.0.0.1:{self.s3_port}",
            "s3_api.s3_region": "us-east-1",
            "s3_api.root_domain": ".s3.local",
            "admin.api_bind_addr": f"127.0.0.1:{self.admin_port}",
            "admin.admin_token": self.admin_token,
        }
        settings.update(overrides)
        self.admin_token = str(settings["admin.admin_token"])  # an override wins
        self.settings = settings
        self.config_path = root / "storaged.toml"
        self.config_path.write_text(render_toml(settings))
        super().__init__(binary, ["server", "-c", str(self.config_path)], root, name)
        self.cfg = S3Config(
            endpoint=f"http://127.0.0.1:{self.s3_port}",
            access_key="",
            secret_key="",
            region=str(settings["s3_api.s3_region"]),
            admin_endpoint=f"http://127.0.0.1:{self.admin_port}",
            admin_token=self.admin_token,
        )

    def update_settings(self, **overrides: object) -> None:
        """Changes config keys (dotted for sections; None removes one); the next start uses
        them."""
        self.settings.update(overrides)
        self.config_path.write_text(render_toml(self.settings))

    def start(self, timeout: float = READY_TIMEOUT_S) -> "ServerInstance":
        self.spawn()
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "ServerInstance":
        """Waits until a spawned server answers /health and accepts S3 connections."""

        def ready() -> bool:
            self.check_alive("starting")
            if not self.health_ok():
                return False
            with socket.create_connection(("127.0.0.1", self.s3_port), timeout=1):
                return True

        wait_until(ready, timeout, f"storaged server {self.name} to be healthy",
                   on_timeout=self.log_tail)
        return self


def render_toml(settings: dict[str, object]) -> str:
    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'

    settings = {k: v for k, v in settings.items() if v is not None}  # None: leave the key out
    top = [f"{k} = {val(v)}" for k, v in settings.items() if "." not in k]
    sections: dict[str, list[str]] = {}
    for k, v in settings.items():
        if "." in k:
            sec, key = k.split(".", 1)
            sections.setdefault(sec, []).append(f"{key} = {val(v)}")
    out = "\n".join(top) + "\n"
    for sec, lines in sections.items():
        out += f"\n[{sec}]\n" + "\n".join(lines) + "\n"
    return out


# --------------------------------------------------------------------------------------------
# The storaged CLI
# --------------------------------------------------------------------------------------------


class Cli:
    """Runs `storaged <args>` against an instance's admin API."""

    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, cfg: S3Config, *args: str, check: bool = True, timeout: float = 30):
        res = subprocess.run(
            [str(self.binary), *args],
            env=admin_env(cfg),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            pytest.fail(
                f"`storaged {' '.join(args)}` exited {res.returncode}\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def json(self, cfg: S3Config, *args: str):
        import json

        res = self.run(cfg, *args)
        try:
            return json.loads(res.stdout)
        except ValueError:
            pytest.fail(f"`storaged {' '.join(args)}` did not print JSON: {res.stdout!r}")

    def create_key(self, cfg: S3Config, name: str, create_bucket: bool = False) -> S3Config:
        args = ["key", "create", "--name", name, "--json"]
        if create_bucket:
            args.insert(4, "--create-bucket")
        out = self.json(cfg, *args)
        return cfg.with_key(out["access_key_id"], out["secret_access_key"])


# --------------------------------------------------------------------------------------------
# boto3
# --------------------------------------------------------------------------------------------


def _boto_config(**kw: object):
    from botocore.config import Config

    s3 = {"addressing_style": "path"}
    s3.update(kw.pop("s3", {}) or {})  # type: ignore[arg-type]
    base = dict(
        s3=s3,
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    base.update(kw)
    return Config(**base)


def boto3_client(cfg: S3Config, **config_kw: object):
    """A boto3 S3 client for `cfg` (path-style, no retries, no ambient AWS config)."""
    import boto3

    for k, v in (
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ):
        os.environ[k] = v
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.pop("AWS_PROFILE", None)
    endpoint = config_kw.pop("endpoint_url", cfg.endpoint)
    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key,
        region_name=cfg.region,
    )
    return session.client("s3", endpoint_url=endpoint, config=_boto_config(**config_kw))


def empty_and_delete_bucket(client, name: str) -> None:
    """Best-effort cleanup of a test bucket (objects, uploads, bucket)."""
    from botocore.exceptions import ClientError

    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for up in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    except ClientError:
        pass
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(objs), 1000):
                client.delete_objects(Bucket=name, Delete={"Objects": objs[i : i + 1000], "Quiet": True})
        client.delete_bucket(Bucket=name)
    except ClientError:
        pass
