"""Shared fixtures of the end-to-end suites: real `storaged` processes, real S3 clients.

Nothing here mocks the daemon. Fixtures start the binary named by `STORAGED_BIN` (default
`<repo>/target/release/storaged`), wait for it to be ready by polling with deadlines (never
fixed sleeps), and stop it with SIGTERM at teardown.

* `dev`: one session-wide `storaged dev` instance, shared by most tests. Each test works in
  its own bucket (`bucket` / `bucket_factory`) so tests stay independent.
* `instances`: a factory of dedicated instances (`instances.dev()`, `instances.server()`), for crash /
  restart tests, stopped at the end of the test.
* `make_s3`, `s3`: boto3 clients; `client_env`: the environment for CLI clients (aws, rclone,
  s3cmd, s5cmd) run as subprocesses; `tool`: the path of a client binary (a missing client is
  a test failure with a clear message, never a silent skip); `cli`: the `storaged` CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from storaged_proc import (
    DEFAULT_BIN,
    Cli,
    DevInstance,
    S3Config,
    ServerInstance,
    Storaged,
    boto3_client,
    empty_and_delete_bucket,
    find_tool,
    make_client_env,
    unique_bucket_name,
)

# Every test gets this timeout unless it sets its own `@pytest.mark.timeout(N)`.
DEFAULT_TIMEOUT_S = 120


# --------------------------------------------------------------------------------------------
# pytest configuration: every test has a timeout
# --------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError(
            "pytest-timeout is required by the e2e suite (pip install -r e2e/requirements.txt)"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """On failure, attach the tail of every storaged log the test used."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("call", "setup"):
        funcargs = getattr(item, "funcargs", {})
        used = [v for v in funcargs.values() if isinstance(v, Storaged)]
        inst = funcargs.get("instances")
        if inst is not None:
            used += [s for s in getattr(inst, "started", []) if s not in used]
        for s in used:
            rep.sections.append((f"storaged log ({s.name})", s.log_tail(40)))


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def storaged_bin() -> Path:
    path = Path(os.environ.get("STORAGED_BIN", str(DEFAULT_BIN)))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"storaged binary not found at {path}: build it (cargo build --release -p storaged) "
            f"or set STORAGED_BIN"
        )
    return path


@pytest.fixture(scope="session")
def dev(storaged_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevInstance]:
    """The shared `storaged dev` instance."""
    inst = DevInstance(storaged_bin, tmp_path_factory.mktemp("dev-shared") / "data", "dev-shared")
    inst.start()
    yield inst
    crashed = not inst.alive()
    inst.stop()
    if crashed:
        pytest.fail(f"the shared dev instance died during the session\n{inst.log_tail()}")


@pytest.fixture
def dev_cfg(dev: DevInstance) -> S3Config:
    dev.check_alive("a test began")
    assert dev.cfg
    return dev.cfg


class Instances:
    """Factory of dedicated instances for one test; all are stopped at teardown."""

    def __init__(self, binary: Path, root: Path):
        self.binary = binary
        self.root = root
        self.started: list[Storaged] = []

    def dev(self, name: str = "dev", start: bool = True, nodes: int | None = None,
            zones: int | None = None) -> DevInstance:
        inst = DevInstance(self.binary, self.root / name / "data", name, nodes=nodes, zones=zones)
        self.started.append(inst)
        return inst.start() if start else inst

    def server(self, name: str = "server", start: bool = True, **overrides: object) -> ServerInstance:
        inst = ServerInstance(self.binary, self.root / name, name, **overrides)
        self.started.append(inst)
        return inst.start() if start else inst

    def close(self) -> None:
        errors = []
        for inst in self.started:
            try:
                inst.stop()
            except AssertionError as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("\n".join(errors))


@pytest.fixture
def instances(storaged_bin: Path, tmp_path: Path) -> Iterator[Instances]:
    inst = Instances(storaged_bin, tmp_path / "instances")
    yield inst
    inst.close()


@pytest.fixture(scope="session")
def cli(storaged_bin: Path) -> Cli:
    return Cli(storaged_bin)


@pytest.fixture(scope="session")
def make_s3() -> Callable[..., object]:
    return boto3_client


@pytest.fixture
def s3(dev_cfg: S3Config):
    """boto3 client of the shared dev instance's key."""
    return boto3_client(dev_cfg)


@pytest.fixture
def client_env(dev_cfg: S3Config) -> dict[str, str]:
    return make_client_env(dev_cfg)


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    return find_tool


@pytest.fixture
def bucket_factory(dev_cfg: S3Config, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Creates uniquely named buckets with the dev key (which may create buckets)."""
    client = boto3_client(dev_cfg)
    made: list[str] = []

    def make(hint: str | None = None) -> str:
        name = unique_bucket_name(hint or request.node.name)
        client.create_bucket(Bucket=name)
        made.append(name)
        return name

    yield make
    for name in made:
        empty_and_delete_bucket(client, name)


@pytest.fixture
def bucket(bucket_factory: Callable[..., str]) -> str:
    """A fresh, empty bucket owned by the dev key."""
    return bucket_factory()
