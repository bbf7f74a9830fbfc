"""Three embedded engines in three Python processes form one cluster
(``EmbeddedEngine.start_with(<toml>)`` in each, peers over gRPC)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from cluster import EmbeddedNodeProc, cluster_specs, embedded_node, wait_until

import d_engine as dengine


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[List[EmbeddedNodeProc]]:
    specs = cluster_specs(tmp_path)
    procs = [embedded_node(s, specs, tmp_path) for s in specs]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.expect_started()
        for p in procs:
            p.wait_ready(timeout=15, reply_timeout=20)
        yield procs
    finally:
        for p in procs:
            p.close()


def _leader(nodes: List[EmbeddedNodeProc], not_: int = 0) -> int:
    def agreed():
        ids = {p.request("leader")["ok"] for p in nodes if p.alive()}
        return ids.pop() if len(ids) == 1 and not ids & {0, not_} else None

    return wait_until("the three nodes to agree on a leader", agreed, timeout=15)


def test_three_python_processes_form_a_cluster(nodes: List[EmbeddedNodeProc]):
    leader = _leader(nodes)
    assert all(p.request("members")["ok"] == [1, 2, 3] for p in nodes)
    lp = nodes[leader - 1]
    assert isinstance(lp.request("put", key="k", value="v1")["ok"], int)
    assert lp.request("get", key="k")["ok"] == "v1"
    # replicated: every node applies it (eventual reads are served locally)
    for p in nodes:

        def applied(p=p):
            return p.request("get", key="k", consistency="eventual")["ok"] == "v1"

        wait_until(f"node {p.spec.id} to apply the write", applied, 10)


def test_writes_on_a_follower_are_forwarded_to_the_leader(nodes: List[EmbeddedNodeProc]):
    leader = _leader(nodes)
    follower = next(p for p in nodes if p.spec.id != leader)
    reply = follower.request("put", key="fw", value="from-follower")
    assert "ok" in reply, f"a write on a follower failed: {reply}"
    assert follower.request("get", key="fw")["ok"] == "from-follower"
    assert follower.request("cas", key="fw", expected="from-follower", new="2")["ok"] is True
    assert nodes[leader - 1].request("get", key="fw")["ok"] == "2"


def test_cas_with_ttl_on_a_follower_is_forwarded_to_the_leader(nodes: List[EmbeddedNodeProc]):
    # Regression: CAS with a TTL used to call the local node handle without
    # forwarding, so on a follower it failed with NotLeader.
    leader = _leader(nodes)
    follower = next(p for p in nodes if p.spec.id != leader)
    reply = follower.request("cas", key="ttl-fw", expected=None, new="held", ttl=60)
    assert reply.get("ok") is True, f"CAS with a TTL on a follower failed: {reply}"
    assert nodes[leader - 1].request("get", key="ttl-fw")["ok"] == "held"


def test_grpc_client_reaches_the_embedded_cluster(nodes: List[EmbeddedNodeProc]):
    leader = _leader(nodes)
    nodes[leader - 1].request("put", key="x", value="embedded")
    with dengine.Client([p.spec.client_addr for p in nodes]) as c:
        assert c.get(b"x").value == b"embedded"
        c.put(b"y", b"grpc")
    assert nodes[leader - 1].request("get", key="y")["ok"] == "grpc"


def test_leader_process_killed_the_others_elect_and_keep_data(nodes: List[EmbeddedNodeProc]):
    leader = _leader(nodes)
    lp = nodes[leader - 1]
    for i in range(20):
        assert "ok" in lp.request("put", key=f"d{i}", value=str(i))
    lp.kill()
    rest = [p for p in nodes if p.spec.id != leader]
    new = _leader(rest, not_=leader)
    assert new != leader
    np_ = nodes[new - 1]
    assert [np_.request("get", key=f"d{i}")["ok"] for i in range(20)] == [str(i) for i in range(20)]
    assert "ok" in np_.request("put", key="after", value="1")


def _request_in_thread(node: EmbeddedNodeProc, op: str, out: List[dict], **kw: object) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(node.request(op, reply_timeout=60, **kw)))
    t.start()
    return t


def test_a_lock_held_by_a_killed_process_passes_on(nodes: List[EmbeddedNodeProc]):
    leader = _leader(nodes)
    holder, waiter = [p for p in nodes if p.spec.id != leader]  # both followers: every step is forwarded
    first = holder.request("lock", name="jobs", ttl=2)
    assert "ok" in first, first
    out: List[dict] = []
    t = _request_in_thread(waiter, "lock", out, name="jobs", ttl=2)
    time.sleep(1.0)
    assert not out, f"two holders at once: {out}"  # the holder keeps its lease alive
    holder.kill()
    killed_at = time.monotonic()
    t.join(30)
    assert out and "ok" in out[0], out
    waited = time.monotonic() - killed_at
    assert out[0]["ok"]["revision"] > first["ok"]["revision"]  # the fencing token grows
    # not before the dead holder's lease could expire (renewed every ttl/3), nor much later
    assert 1.0 < waited < 10, f"the lock passed on {waited:.1f}s after the holder died (ttl 2s)"
    assert "ok" in waiter.request("unlock", key=out[0]["ok"]["key"])


def test_leadership_of_a_killed_process_passes_on(nodes: List[EmbeddedNodeProc]):
    leader = _leader(nodes)
    a, b = [p for p in nodes if p.spec.id != leader]
    observer = nodes[leader - 1]
    assert "ok" in a.request("campaign", name="sched", value="a", ttl=2)
    assert observer.request("election_leader", name="sched")["ok"] == "a"
    out: List[dict] = []
    t = _request_in_thread(b, "campaign", out, name="sched", value="b", ttl=2)
    time.sleep(1.0)
    assert not out and observer.request("election_leader", name="sched")["ok"] == "a"
    a.kill()
    t.join(30)
    assert out and "ok" in out[0], out
    assert observer.request("election_leader", name="sched")["ok"] == "b"
