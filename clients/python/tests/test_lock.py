"""Locks and leader election against a real 3-node d-engine-server cluster:
mutual exclusion with increasing fencing revisions, a lock held by a killed
process passing to the next waiter, election with observe; sync and asyncio.
Skipped (with the reason) while the server does not serve Lock/Election."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import List, Tuple

import pytest
from cluster import ServerCluster

import d_engine as dengine

HOLDER = r"""
import json, sys, time
import d_engine as dengine
c = dengine.Client(sys.argv[1].split(","))
lock = c.lock(sys.argv[2], ttl=float(sys.argv[3]))
print(json.dumps({"key": lock.key.decode(), "revision": lock.revision}), flush=True)
time.sleep(3600)
"""


@pytest.fixture
def locks(client: dengine.Client) -> dengine.Client:
    try:
        client.unlock(b"__probe__/0000000000000000")
    except dengine.Error as e:
        if "UNIMPLEMENTED" in str(e):
            pytest.skip(f"the server does not serve Lock yet: {e}")
        raise
    return client


def test_lock_exclusive_with_increasing_fencing_revisions(locks: dengine.Client, cluster: ServerCluster, ns: bytes):
    name = ns + b"jobs"
    history: List[Tuple[float, float, int]] = []  # (acquired, released, revision)
    errors: List[BaseException] = []

    def worker() -> None:
        try:
            with dengine.Client(cluster.endpoints) as c:
                for _ in range(3):
                    with c.lock(name, ttl=5, timeout=30) as lock:
                        t0 = time.monotonic()
                        time.sleep(0.02)
                        history.append((t0, time.monotonic(), lock.revision))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    history.sort()
    assert len(history) == 12
    for (_, released, rev), (acquired, _, next_rev) in zip(history, history[1:]):
        assert acquired >= released, "two holders at once"
        assert next_rev > rev, "the fencing revision grows with every holder"
    assert locks.range(name + b"/", prefix=True).count == 0


def test_lock_of_a_killed_process_passes_on(locks: dengine.Client, cluster: ServerCluster, ns: bytes):
    name = (ns + b"killed").decode()
    ttl = 2.0
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ",".join(cluster.endpoints), name, str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        first = json.loads(proc.stdout.readline())
        with pytest.raises(dengine.Timeout):
            locks.lock(name, ttl=5, timeout=0.5)  # held by the process
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        killed_at = time.monotonic()
        with locks.lock(name, ttl=5, timeout=20) as lock:
            waited = time.monotonic() - killed_at
            assert lock.revision > first["revision"] and lock.key != first["key"].encode()
            assert waited < ttl * 2 + 3, f"the dead holder's lock passed on only after {waited:.1f}s"
    finally:
        proc.kill()
        proc.wait(5)


def test_election(locks: dengine.Client, cluster: ServerCluster, ns: bytes):
    name = ns + b"leader"
    with dengine.Client(cluster.endpoints) as a, dengine.Client(cluster.endpoints) as b:
        assert a.election_leader(name) is None
        seen: List[bytes] = []
        obs = b.observe(name)
        reader = threading.Thread(target=lambda: [seen.append(kv.value) for kv in obs], daemon=True)
        reader.start()
        with a.campaign(name, b"host-a", ttl=5) as lead:
            assert b.election_leader(name).value == b"host-a"
            lead.proclaim(b"host-a:2")
            assert b.election_leader(name).value == b"host-a:2"
            with pytest.raises(dengine.Timeout):
                b.campaign(name, b"host-b", ttl=5, timeout=0.5)
        with b.campaign(name, b"host-b", ttl=5, timeout=10) as lead_b:
            assert lead_b.revision > lead.revision and a.election_leader(name).value == b"host-b"
            with pytest.raises(dengine.NotHeld):
                a.proclaim(lead.leader, b"stale")
            deadline = time.monotonic() + 5
            while b"host-b" not in seen and time.monotonic() < deadline:
                time.sleep(0.05)
        obs.cancel()
        reader.join(5)
        assert seen[0] == b"host-a" and b"host-b" in seen


async def test_async_lock_and_election(locks: dengine.Client, cluster: ServerCluster, ns: bytes):
    async with dengine.AsyncClient(cluster.endpoints) as a, dengine.AsyncClient(cluster.endpoints) as b:
        order: List[str] = []

        async def hold(c: dengine.AsyncClient, who: str) -> int:
            async with c.lock(ns + b"al", ttl=5, timeout=20) as lock:
                order.append(who + "+")
                await asyncio.sleep(0.1)
                order.append(who + "-")
                return lock.revision

        revs = await asyncio.gather(hold(a, "a"), hold(b, "b"))
        assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"]) and revs[0] != revs[1]
        async with a.campaign(ns + b"ae", b"x", ttl=5) as lead:
            assert (await b.election_leader(ns + b"ae")).value == b"x"
            await lead.proclaim(b"y")
            assert (await b.election_leader(ns + b"ae")).value == b"y"
        assert await a.election_leader(ns + b"ae") is None
