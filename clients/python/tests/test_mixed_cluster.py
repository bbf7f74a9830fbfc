"""A cluster of embedded engines in two languages: nodes 1 and 2 are Python
processes (``EmbeddedEngine.start_with``), node 3 is a Rust application
embedding the engine (``tests/src/bin/embedded_app.rs``, which keeps writing
``app/3/<n>`` and prints ``ACK <key>`` once a write is acknowledged). Same
TOML format, same peer protocol."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from cluster import (
    EmbeddedNodeProc,
    Proc,
    cluster_specs,
    embedded_app_binary,
    embedded_node,
    wait_until,
    write_config,
)

import d_engine as dengine

ACK = re.compile(r"^ACK (app/3/\d+)$", re.M)


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[Tuple[List[EmbeddedNodeProc], Proc]]:
    try:
        binary = embedded_app_binary()
    except RuntimeError as e:
        pytest.fail(f"the Rust embedded application is needed for this test: {e}")
    specs = cluster_specs(tmp_path)
    py = [embedded_node(s, specs, tmp_path) for s in specs[:2]]
    rust_cfg = write_config(specs[2], specs, tmp_path / "rust3.toml")
    rust = Proc(specs[2], [binary, str(rust_cfg)], tmp_path / "rust3.log")
    try:
        for p in py:
            p.start()
        rust.start()
        for p in py:
            p.expect_started()
        for p in py:
            p.wait_ready(timeout=30, reply_timeout=40)
        wait_until("the Rust node to report READY", lambda: "READY 3" in rust.log_tail(200), 30)
        yield py, rust
    finally:
        rust.kill()
        for p in py:
            p.close()


def _acked(rust: Proc) -> List[str]:
    return ACK.findall(rust.log_path.read_text(errors="replace"))


def test_python_and_rust_embedded_nodes_form_one_cluster(mixed):
    py, rust = mixed

    def agreed():
        ids = {p.request("leader")["ok"] for p in py}
        return ids.pop() if len(ids) == 1 and 0 not in ids else None

    leader = wait_until("the nodes to agree on a leader", agreed, 20)
    assert leader in (1, 2, 3)
    assert all(p.request("members")["ok"] == [1, 2, 3] for p in py)

    # The Rust node's writes (forwarded to the leader when it follows) are
    # committed and visible to linearizable reads on the Python nodes.
    acked = wait_until("the Rust node to acknowledge 5 writes", lambda: _acked(rust)[4:] and _acked(rust), 30)
    for key in acked[:5]:
        n = int(key.rsplit("/", 1)[1])
        for p in py:
            assert p.request("get", key=key)["ok"] == str(n), f"node {p.spec.id} misses {key}"

    # A Python write reaches the Rust node's state machine: read it there
    # through the node's own client port with an eventual (local) read.
    assert "ok" in py[0].request("put", key="from/python", value="hello rust")
    with dengine.Client(rust.spec.client_addr) as c:
        wait_until(
            "the Rust node to apply the Python write",
            lambda: (kv := c.get(b"from/python", consistency="eventual")) is not None and kv.value == b"hello rust",
            15,
        )

    # SIGKILL the Rust process: the two Python nodes keep a quorum, keep
    # every write the Rust node saw acknowledged, and take new writes.
    rust.kill(signal.SIGKILL)
    acked = _acked(rust)
    leader = wait_until(
        "the Python nodes to agree on a new leader", lambda: (lead := agreed()) in (1, 2) and lead, 20
    )
    lp = py[leader - 1]
    for key in acked:
        n = int(key.rsplit("/", 1)[1])
        assert lp.request("get", key=key)["ok"] == str(n), f"acknowledged {key} lost"
    assert "ok" in lp.request("put", key="after/kill", value="1")
