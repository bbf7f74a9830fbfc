"""Fixtures: a real 3-node d-engine-server cluster (session scope) and helpers.

The server binary is ``$DENGINE_SERVER_BIN`` or is built with
``cargo build -p d-engine-server``; the standalone tests are skipped (with
the reason) only if it cannot be had at all."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import pytest
from cluster import ServerCluster, server_binary, wait_until

import d_engine as dengine

_counter = itertools.count()


@pytest.fixture(scope="session")
def server_bin() -> str:
    try:
        return server_binary()
    except RuntimeError as e:
        pytest.skip(f"d-engine-server binary unavailable: {e}")


def start_cluster(binary: str, root: Path, extra_toml: str = "") -> ServerCluster:
    """Starts 3 servers (``extra_toml`` appended to their config files) and
    waits until the cluster accepts a write."""
    cluster = ServerCluster(binary, root, extra_toml=extra_toml)
    cluster.start()
    try:
        with dengine.Client(cluster.endpoints, timeout=2.0) as c:

            def ready() -> bool:
                cluster.check_alive()
                c.put(b"__ready__", b"1")
                return True

            wait_until("the 3-node d-engine-server cluster to accept a write", ready, timeout=30)
    except BaseException as e:  # noqa: BLE001 - stop the servers whatever failed, then re-raise
        logs = cluster.logs()
        cluster.stop()
        if isinstance(e, Exception):
            raise AssertionError(f"the cluster did not start: {e}\nserver logs:\n{logs}") from e
        raise
    return cluster


@pytest.fixture(scope="session")
def cluster(server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerCluster]:
    c = start_cluster(server_bin, tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def fresh_cluster(server_bin: str, tmp_path: Path) -> Iterator[ServerCluster]:
    """A cluster of its own, for tests that kill nodes."""
    c = start_cluster(server_bin, tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster: ServerCluster) -> Iterator[dengine.Client]:
    with dengine.Client(cluster.endpoints) as c:
        yield c


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> bytes:
    """A key prefix unique to the test."""
    return f"{request.node.name}/{next(_counter)}/".encode()
