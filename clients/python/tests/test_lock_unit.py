"""The lock and election helpers against the in-process fake server
(fake_server.FakeLock models the server's recipe): mutual exclusion,
fencing revisions, handing over when a holder's lease ends, timeouts that
leave the queue, and campaign/proclaim/observe/resign; sync and asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List, Tuple

import pytest
from fake_server import FakeNode

import d_engine as dengine


@pytest.fixture
def fake():
    node = FakeNode()
    yield node
    node.stop()


def test_lock_is_exclusive_and_fenced(fake: FakeNode):
    history: List[Tuple[str, int, int]] = []  # (event, worker, revision)
    holders = []
    errors: List[BaseException] = []

    def worker(i: int) -> None:
        try:
            with dengine.Client(fake.addr) as c:
                for _ in range(3):
                    with c.lock("jobs", ttl=2) as lock:
                        holders.append(i)
                        assert len(holders) == 1, f"two holders at once: {holders}"
                        history.append(("acquire", i, lock.revision))
                        time.sleep(0.01)
                        holders.remove(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    revs = [r for _, _, r in history]
    assert len(revs) == 12 and revs == sorted(revs) and len(set(revs)) == 12, "fencing revisions increase"
    assert fake.store.leases == {}, "every helper revoked its lease"


def test_lock_passes_on_when_the_holder_stops_renewing(fake: FakeNode):
    with dengine.Client(fake.addr) as a, dengine.Client(fake.addr) as b:
        held = a.lock("l", ttl=0.5)
        assert held.key.startswith(b"l/") and not held.lost.is_set()
        with pytest.raises(dengine.Timeout):
            b.lock("l", ttl=5, timeout=0.3)
        assert len(fake.store.in_range(b"l/", b"l0")) == 1, "a waiter that timed out left the queue"
        held.lease.stop()  # the holder "dies"
        t0 = time.monotonic()
        with b.lock("l", ttl=5, timeout=5) as nxt:
            assert time.monotonic() - t0 < 2 and nxt.revision > held.revision
        assert b.range(b"l/", prefix=True).count == 0


def test_lock_with_a_lease_of_your_own(fake: FakeNode):
    with dengine.Client(fake.addr) as c:
        lid = c.lease_grant(10)
        with c.lock(b"mine", lease=lid) as lock:
            assert lock.lease is None and lock.key == b"mine/%016x" % lid and not lock.lost.is_set()
            assert c.get(lock.key).lease == lid
        assert c.get(lock.key) is None and [s.id for s in c.lease_list()] == [lid], "your lease stays yours"


def test_election_campaign_proclaim_observe_resign(fake: FakeNode):
    with dengine.Client(fake.addr) as a, dengine.Client(fake.addr) as b:
        assert a.election_leader("svc") is None
        seen: List[bytes] = []
        obs = a.observe("svc")

        def watch() -> None:
            for kv in obs:
                seen.append(kv.value)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        # (the fake observes by polling every 10 ms: each change is left visible for a while)
        with a.campaign("svc", b"host-a", ttl=2) as lead:
            assert a.election_leader("svc").value == b"host-a"
            time.sleep(0.1)
            lead.proclaim(b"host-a:v2")
            assert b.election_leader("svc").value == b"host-a:v2"
            got: List[dengine.Leadership] = []
            tb = threading.Thread(target=lambda: got.append(b.campaign("svc", b"host-b", ttl=2)))
            tb.start()
            time.sleep(0.2)
            assert not got, "b waits while a leads"
        tb.join(5)
        assert got and b.election_leader("svc").value == b"host-b" and got[0].revision > lead.revision
        with pytest.raises(dengine.NotHeld):
            a.proclaim(lead.leader, b"stale")
        time.sleep(0.1)
        got[0].resign()
        assert b.election_leader("svc") is None
        time.sleep(0.1)
        obs.cancel()
        t.join(5)
        assert seen[:3] == [b"host-a", b"host-a:v2", b"host-b"]


async def test_async_lock_and_election(fake: FakeNode):
    async with dengine.AsyncClient(fake.addr) as a, dengine.AsyncClient(fake.addr) as b:
        order: List[str] = []

        async def hold(c: dengine.AsyncClient, who: str) -> int:
            async with c.lock("al", ttl=2) as lock:
                order.append(who + "+")
                await asyncio.sleep(0.05)
                order.append(who + "-")
                return lock.revision

        revs = await asyncio.gather(hold(a, "a"), hold(b, "b"))
        assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"]) and revs[0] != revs[1]
        lock = await a.lock("al", ttl=2)
        with pytest.raises(dengine.Timeout):
            await b.lock("al", timeout=0.2)
        await lock.unlock()
        assert fake.store.in_range(b"al/", b"al0") == []

        async with a.campaign("ae", b"x", ttl=2) as lead:
            obs = b.observe("ae")
            first = await obs.__anext__()
            assert first.value == b"x" and (await b.election_leader("ae")).key == lead.key
            await lead.proclaim(b"y")
            assert (await obs.__anext__()).value == b"y"
            obs.cancel()
        assert await a.election_leader("ae") is None
        lead2 = await b.campaign("ae", b"z", ttl=2)
        assert lead2.revision > lead.revision
        await lead2.resign()
