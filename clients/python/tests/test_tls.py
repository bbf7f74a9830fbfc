"""TLS and mutual TLS against real d-engine-server processes, with
certificates written by ``d-engine-server certs``: a client trusting the
cluster CA is served, a plaintext client and a client trusting another CA
are refused, and with ``client_auth = "require"`` a client without a
certificate is refused while one with a certificate is served."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Iterator, Optional, Tuple

import grpc
import pytest
from cluster import Proc, cluster_specs, wait_until, write_config

import d_engine as dengine

TIMEOUT = 2.0
FAIL_FAST = dengine.RetryPolicy(deadline=3.0)


def make_certs(binary: str, out: Path, hosts: str = "127.0.0.1,localhost") -> Path:
    subprocess.run(
        [binary, "certs", "--out", str(out), "--nodes", "1", "--clients", "app", "--hosts", hosts],
        check=True,
        capture_output=True,
    )
    return out


def tls_toml(certs: Path, client_auth: str) -> str:
    return (
        "\n[tls]\n"
        f'cert_file = "{certs / "node-1.pem"}"\n'
        f'key_file = "{certs / "node-1-key.pem"}"\n'
        f'ca_file = "{certs / "ca.pem"}"\n'
        "client_api = true\npeer = true\n"
        f'client_auth = "{client_auth}"\n'
    )


def start_tls_node(
    binary: str, root: Path, client_auth: str, hosts: str = "127.0.0.1,localhost"
) -> Tuple[Proc, Path]:
    certs = make_certs(binary, root / "certs", hosts)
    specs = cluster_specs(root, 1)
    cfg = write_config(specs[0], specs, root / "node1.toml", extra=tls_toml(certs, client_auth))
    proc = Proc(specs[0], [binary, "--config", str(cfg)], root / "node1.log")
    proc.start()
    return proc, certs


def wait_serving(proc: Proc, certs: Path, server_name: Optional[str] = None) -> None:
    with dengine.Client(
        proc.spec.client_addr,
        timeout=TIMEOUT,
        ca_file=certs / "ca.pem",
        cert_file=certs / "client-app.pem",
        key_file=certs / "client-app-key.pem",
        tls_server_name=server_name,
    ) as c:

        def ready() -> bool:
            if not proc.alive():
                raise AssertionError(f"server exited:\n{proc.log_tail()}")
            c.put(b"__ready__", b"1")
            return True

        wait_until("the TLS node to accept a write", ready, timeout=30)


@pytest.fixture
def tls_node(server_bin: str, tmp_path: Path) -> Iterator[Tuple[Proc, Path]]:
    proc, certs = start_tls_node(server_bin, tmp_path, "none")
    try:
        wait_serving(proc, certs)
        yield proc, certs
    finally:
        proc.kill()


@pytest.fixture
def mtls_node(server_bin: str, tmp_path: Path) -> Iterator[Tuple[Proc, Path]]:
    proc, certs = start_tls_node(server_bin, tmp_path, "require")
    try:
        wait_serving(proc, certs)
        yield proc, certs
    finally:
        proc.kill()


def test_tls_with_the_cluster_ca_is_served(tls_node: Tuple[Proc, Path]) -> None:
    proc, certs = tls_node
    with dengine.Client(proc.spec.client_addr, timeout=TIMEOUT, ca_file=certs / "ca.pem") as c:
        c.put(b"tls-key", b"v")
        kv = c.get(b"tls-key")
        assert kv is not None and kv.value == b"v"


def test_async_client_over_tls(tls_node: Tuple[Proc, Path]) -> None:
    proc, certs = tls_node

    async def run() -> bytes:
        async with dengine.AsyncClient(proc.spec.client_addr, timeout=TIMEOUT, ca_file=str(certs / "ca.pem")) as c:
            await c.put(b"async-tls", b"w")
            kv = await c.get(b"async-tls")
            assert kv is not None
            return kv.value

    assert asyncio.run(run()) == b"w"


def test_plaintext_client_is_refused(tls_node: Tuple[Proc, Path]) -> None:
    proc, _ = tls_node
    with dengine.Client(proc.spec.client_addr, timeout=TIMEOUT, retry=FAIL_FAST) as c:
        with pytest.raises(dengine.Error):
            c.put(b"plain", b"x")


def test_wrong_ca_is_refused(tls_node: Tuple[Proc, Path], server_bin: str, tmp_path: Path) -> None:
    proc, _ = tls_node
    other = make_certs(server_bin, tmp_path / "other-ca")
    with dengine.Client(proc.spec.client_addr, timeout=TIMEOUT, retry=FAIL_FAST, ca_file=other / "ca.pem") as c:
        with pytest.raises(dengine.Error):
            c.put(b"wrong-ca", b"x")


def test_mtls_without_a_client_certificate_is_refused(mtls_node: Tuple[Proc, Path]) -> None:
    proc, certs = mtls_node
    with dengine.Client(proc.spec.client_addr, timeout=TIMEOUT, retry=FAIL_FAST, ca_file=certs / "ca.pem") as c:
        with pytest.raises(dengine.Error):
            c.put(b"no-cert", b"x")
    with dengine.Client(
        proc.spec.client_addr,
        timeout=TIMEOUT,
        ca_file=certs / "ca.pem",
        cert_file=certs / "client-app.pem",
        key_file=certs / "client-app-key.pem",
    ) as c:
        c.put(b"with-cert", b"y")
        kv = c.get(b"with-cert")
        assert kv is not None and kv.value == b"y"


def test_bad_tls_arguments_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(dengine.InvalidArgument, match="ca_file"):
        dengine.Client("127.0.0.1:1", ca_file=tmp_path / "missing.pem")
    with pytest.raises(dengine.InvalidArgument, match="together"):
        dengine.Client("127.0.0.1:1", cert_file=tmp_path / "c.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(dengine.InvalidArgument, match="no PEM CERTIFICATE"):
        dengine.Client("127.0.0.1:1", ca_file=tmp_path / "junk.pem")


def test_https_endpoint_means_tls_with_or_without_a_ca_file(tls_node: Tuple[Proc, Path]) -> None:
    proc, certs = tls_node
    url = f"https://{proc.spec.client_addr}"
    with dengine.Client(url, timeout=TIMEOUT, ca_file=certs / "ca.pem") as c:
        c.put(b"https-key", b"v")
        kv = c.get(b"https-key")
        assert kv is not None and kv.value == b"v"
    # No CA given: still TLS (gRPC's default roots), which do not hold the
    # cluster's private CA, so the handshake fails; never a plaintext retry.
    with dengine.Client(url, timeout=TIMEOUT, retry=FAIL_FAST) as c:
        with pytest.raises(dengine.Unavailable):
            c.put(b"https-no-ca", b"x")


def test_https_endpoint_never_falls_back_to_plaintext(server_bin: str, tmp_path: Path) -> None:
    specs = cluster_specs(tmp_path, 1)
    cfg = write_config(specs[0], specs, tmp_path / "node1.toml")
    proc = Proc(specs[0], [server_bin, "--config", str(cfg)], tmp_path / "node1.log")
    proc.start()
    try:
        with dengine.Client(specs[0].client_addr, timeout=TIMEOUT) as plain:
            wait_until("the plaintext node to accept a write", lambda: plain.put(b"p", b"1"), timeout=30)
        with dengine.Client(f"https://{specs[0].client_addr}", timeout=TIMEOUT, retry=FAIL_FAST) as c:
            with pytest.raises(dengine.Unavailable):
                c.put(b"must-not-be-plaintext", b"x")
    finally:
        proc.kill()


def test_tls_server_name_checks_the_certificate_against_that_name(server_bin: str, tmp_path: Path) -> None:
    # The node's certificate names only db.internal.test, not the 127.0.0.1 dialled.
    proc, certs = start_tls_node(server_bin, tmp_path, "none", hosts="db.internal.test")
    try:
        wait_serving(proc, certs, server_name="db.internal.test")
        with dengine.Client(
            proc.spec.client_addr, timeout=TIMEOUT, ca_file=certs / "ca.pem", tls_server_name="db.internal.test"
        ) as c:
            c.put(b"sni", b"ok")
            assert c.get(b"sni").value == b"ok"

        async def run() -> bytes:
            async with dengine.AsyncClient(
                f"https://{proc.spec.client_addr}",
                timeout=TIMEOUT,
                ca_file=certs / "ca.pem",
                tls_server_name="db.internal.test",
            ) as ac:
                kv = await ac.get(b"sni")
                assert kv is not None
                return kv.value

        assert asyncio.run(run()) == b"ok"
        for name in (None, "other.internal.test"):
            with dengine.Client(
                proc.spec.client_addr, timeout=TIMEOUT, retry=FAIL_FAST, ca_file=certs / "ca.pem", tls_server_name=name
            ) as c:
                with pytest.raises(dengine.Unavailable):
                    c.put(b"sni-mismatch", b"x")
    finally:
        proc.kill()


def test_tls_argument_conflicts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(dengine.InvalidArgument, match="tls_server_name needs TLS"):
        dengine.Client("127.0.0.1:1", tls_server_name="db.internal.test")
    with pytest.raises(dengine.InvalidArgument, match="tls_server_name"):
        dengine.Client("https://127.0.0.1:1", tls_server_name="")
    with pytest.raises(dengine.InvalidArgument, match="mix schemes"):
        dengine.Client(["https://127.0.0.1:1", "127.0.0.1:2"])
    with pytest.raises(dengine.InvalidArgument, match="http://"):
        dengine.AsyncClient("http://127.0.0.1:1", credentials=grpc.ssl_channel_credentials())
    with pytest.raises(TypeError, match="credentials"):
        dengine.Client("127.0.0.1:1", credentials="ca.pem")  # type: ignore[arg-type]
    # https:// alone builds TLS credentials (gRPC's default roots).
    assert dengine.Client("https://127.0.0.1:1")._credentials is not None
    assert dengine.Client("http://127.0.0.1:1")._credentials is None
