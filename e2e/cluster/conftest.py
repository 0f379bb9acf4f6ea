"""Fixtures of the cluster suite: `make_cluster(...)` builds a `harness.Cluster` whose nodes
are registered with the `instances` factory, so they are stopped at the end of the test and
their logs are attached to a failure report; `mounts` mounts small tmpfs filesystems (a
node's full disk) and unmounts them at teardown, also after a failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .harness import Cluster


@pytest.fixture
def make_cluster(instances) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(nodes: int = 3, zones: list[str] | int = 3, start: bool = True,
             **kw: object) -> Cluster:
        name = f"c{len(made) + 1}"
        c = Cluster(instances.binary, instances.root / name, instances.started.append,
                    nodes=nodes, zones=zones, name=name, **kw)
        made.append(c)
        return c.start() if start else c

    yield make


class Mounts:
    """Small filesystems mounted for one test (a node's full disk); unmounted at teardown,
    also when the test failed."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def tmpfs(self, path: Path, size: str) -> Path:
        """Mounts a tmpfs of `size` (`mount -o size=`, e.g. `8m`) on `path` (created)."""
        if os.geteuid() != 0:
            pytest.fail("the disk-full tests need root (mount -t tmpfs)")
        path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(path)], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs on {path}: {res.stderr.strip()}")
        self.mounted.append(path)
        return path

    def resize(self, path: Path, size: str) -> None:
        """Grows (or shrinks) the tmpfs on `path` in place (`mount -o remount,size=`)."""
        assert path in self.mounted, f"{path} is not one of this test's mounts"
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True,
                       capture_output=True, timeout=30)

    def unmount_all(self) -> list[str]:
        errors = []
        for path in reversed(self.mounted):
            res = subprocess.run(["umount", str(path)], capture_output=True, text=True,
                                 timeout=30)
            if res.returncode != 0:  # still busy (a process outlived the test): detach it
                lazy = subprocess.run(["umount", "-l", str(path)], capture_output=True,
                                      text=True, timeout=30)
                if lazy.returncode != 0:
                    errors.append(f"umount {path}: {lazy.stderr.strip()}")
        self.mounted.clear()
        return errors


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Request it before `make_cluster`, so that the nodes are stopped before it unmounts."""
    m = Mounts()
    yield m
    errors = m.unmount_all()
    if errors:
        pytest.fail("\n".join(errors))
