"""Authentication and authorization against a 3-node cluster with [auth]
enabled (docs/auth.md): sync and async clients, passwords and tokens."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from cluster import ServerCluster, wait_until

import d_engine as dengine
from d_engine import _auth


def _tool(binary: str, stdin: str, *args: str) -> str:
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, check=True).stdout


def _field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ": "):
            return line[len(name) + 2 :].strip()
    raise AssertionError(f"no {name} in {text!r}")


@pytest.fixture(scope="module")
def auth_cluster(server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[ServerCluster, str]]:
    root: Path = tmp_path_factory.mktemp("auth")
    phc = _tool(server_bin, "rpw\n", "hash-password").strip()
    tok = _tool(server_bin, "", "gen-token")
    token, digest = _field(tok, "token"), _field(tok, "sha256")
    section = f"""
[auth]
enabled = true

[[auth.roles]]
name = "app-reader"
grants = [{{ prefix = "app/", access = "read" }}]

[[auth.users]]
name = "reader"
password_hash = "{phc}"
roles = ["app-reader"]

[[auth.users]]
name = "root"
tokens = ["{digest}"]
roles = ["admin"]
"""
    cluster = ServerCluster(server_bin, root)
    for cfg in root.glob("node*.toml"):
        with open(cfg, "a") as f:
            f.write(section)
    cluster.start()
    try:
        with dengine.Client(cluster.endpoints, timeout=2.0, token=token) as c:

            def ready() -> bool:
                cluster.check_alive()
                c.put(b"app/a", b"1")
                return True

            wait_until("the auth cluster to accept a write", ready, timeout=60)
        yield cluster, token
    finally:
        cluster.stop()


def test_header_values():
    assert _auth.header_value("Aladdin", "open sesame", None) == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert _auth.header_value(None, None, "t") == "Bearer t"
    assert _auth.header_value(None, None, None) is None
    for bad in [("a:b", "x", None), ("", "x", None), ("u", None, None), (None, None, ""), ("u", "p", "t")]:
        with pytest.raises(dengine.InvalidArgument):
            _auth.header_value(*bad)


def test_sync_reader_writer_and_refusals(auth_cluster):
    cluster, token = auth_cluster
    with dengine.Client(cluster.endpoints, username="reader", password="rpw") as r:
        assert r.get(b"app/a").value == b"1"
        assert [kv.key for kv in r.scan_prefix(b"app/")] == [b"app/a"]
        with pytest.raises(dengine.PermissionDenied) as e:
            r.put(b"app/a", b"2")
        assert 'user "reader" lacks readwrite access to key "app/a"' in str(e.value)
        with pytest.raises(dengine.PermissionDenied):
            r.get(b"other/x")
        with pytest.raises(dengine.PermissionDenied):
            r.scan_prefix(b"ap")
        with pytest.raises(dengine.PermissionDenied):
            r.watch_prefix(b"")
        with r.watch_prefix(b"app/") as w:
            with dengine.Client(cluster.endpoints, token=token) as admin:
                admin.put(b"app/b", b"x")
            ev = next(iter(w))
            assert ev.kv.key == b"app/b"
    for kwargs in ({"username": "reader", "password": "nope"}, {"token": "nope"}, {}):
        with dengine.Client(cluster.endpoints, timeout=2.0, **kwargs) as c:
            with pytest.raises(dengine.Unauthenticated):
                c.get(b"app/a")
    assert issubclass(dengine.PermissionDenied, dengine.Error)
    assert issubclass(dengine.Unauthenticated, dengine.Error)


async def test_async_reader_and_refusals(auth_cluster):
    cluster, token = auth_cluster
    async with dengine.AsyncClient(cluster.endpoints, username="reader", password="rpw") as r:
        assert (await r.get(b"app/a")).value == b"1"
        with pytest.raises(dengine.PermissionDenied):
            await r.put(b"app/a", b"2")
        with pytest.raises(dengine.PermissionDenied):
            await r.watch_prefix(b"ap")
    async with dengine.AsyncClient(cluster.endpoints, token=token) as admin:
        await admin.put(b"other/y", b"1")
    async with dengine.AsyncClient(cluster.endpoints, timeout=2.0, username="reader", password="bad") as c:
        with pytest.raises(dengine.Unauthenticated):
            await c.get(b"app/a")
