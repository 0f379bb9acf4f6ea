"""Fixtures of the cluster suite: `make_cluster(...)` builds a `harness.Cluster` whose nodes
are registered with the `instances` factory, so they are stopped at the end of the test and
their logs are attached to a failure report."""

from __future__ import annotations

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
