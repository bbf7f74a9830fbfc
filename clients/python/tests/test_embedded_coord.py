"""Coordination calls of the engine in-process (issue 17), blocking and
asyncio, on a real single-node engine: range pages and iterators, scan_prefix
past one page, delete_range, txns (both branches), leases (attach, revoke,
keepalive, loss reporting), locks (exclusion between threads and tasks,
hand-over when the holder's lease ends, timeout) and elections (campaign,
proclaim, resign, observe)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from cluster import wait_until

import d_engine as dengine
from d_engine import Compare, Op


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dengine.EmbeddedEngine]:
    with dengine.EmbeddedEngine.start(tmp_path / "data") as e:
        e.wait_ready(10)
        yield e


@pytest.fixture
def client(engine: dengine.EmbeddedEngine) -> Iterator[dengine.EmbeddedClient]:
    with engine.client() as c:
        yield c


def _fill(client: dengine.EmbeddedClient, prefix: bytes, n: int) -> List[bytes]:
    """Writes ``n`` keys under ``prefix`` (128 per txn); returns them in key order."""
    keys = [prefix + b"%06d" % i for i in range(n)]
    for i in range(0, n, dengine.MAX_TXN_OPS):
        client.txn(success=[Op.put(k, b"v" + k) for k in keys[i : i + dengine.MAX_TXN_OPS]])
    return keys


def test_same_coordination_methods_as_the_grpc_clients():
    import inspect

    names = [
        "range", "range_iter", "delete_range", "txn", "put", "scan_prefix", "lease_grant", "lease_revoke",
        "lease_renew", "lease_time_to_live", "lease_list", "lease", "lock", "unlock", "campaign", "proclaim",
        "resign", "election_leader", "observe",
    ]  # fmt: skip
    for grpc_cls, emb_cls in (
        (dengine.Client, dengine.EmbeddedClient),
        (dengine.AsyncClient, dengine.AsyncEmbeddedClient),
    ):
        for name in names:
            a, b = inspect.signature(getattr(grpc_cls, name)), inspect.signature(getattr(emb_cls, name))
            assert [(p.name, p.kind, p.default) for p in a.parameters.values()] == [
                (p.name, p.kind, p.default) for p in b.parameters.values()
            ], (emb_cls.__name__, name)
            assert inspect.iscoroutinefunction(getattr(grpc_cls, name)) == inspect.iscoroutinefunction(
                getattr(emb_cls, name)
            ), (emb_cls.__name__, name)


# ---------------------------------------------------------------- ranges


def test_range_pages_and_iterator_see_every_key_once(client: dengine.EmbeddedClient):
    keys = _fill(client, b"r/", 50)
    client.put(b"r0", b"outside")
    client.put(b"q", b"outside")

    # pages by hand: more / next_key / count, each key exactly once, in order
    seen: List[bytes] = []
    end = dengine.prefix_end(b"r/")
    page = client.range(b"r/", prefix=True, limit=7)
    pages = 1
    while True:
        # count: the live keys of the range requested (from this page's first key on)
        assert page.count == 50 - len(seen) and len(page.kvs) <= 7 and page.revision > 0
        seen += [kv.key for kv in page.kvs]
        if not page.more:
            assert page.next_key == b""
            break
        page = client.range(page.next_key, end, limit=7)
        pages += 1
    assert pages == 8 and seen == keys

    assert [kv.key for kv in client.range_iter(b"r/", prefix=True, page_size=7)] == keys
    assert [kv.key for kv in client.range_iter(b"r/000010", b"r/000013")] == keys[10:13]
    assert [kv.key for kv in client.range_iter(b"r/000048", b"\0")] == keys[48:] + [b"r0"]
    first = client.range(b"r/000003").kvs
    assert [(kv.key, kv.value, kv.version) for kv in first] == [(b"r/000003", b"vr/000003", 1)]
    assert client.range(b"r/", prefix=True, keys_only=True, limit=2).kvs[0].value == b""
    counted = client.range(b"r/", prefix=True, count_only=True)
    assert counted.count == 50 and counted.kvs == []
    assert client.range(b"nothing", prefix=True).kvs == []


def test_scan_prefix_and_range_walk_past_the_page_maximum(client: dengine.EmbeddedClient):
    n = dengine.MAX_RANGE_LIMIT + 50
    keys = _fill(client, b"big/", n)
    client.put(b"bih", b"after the prefix")
    first = client.range(b"big/", prefix=True)
    assert len(first.kvs) == dengine.MAX_RANGE_LIMIT and first.more and first.count == n
    # scan_prefix never truncates: every page is read (natively, or here for a large limit)
    assert [kv.key for kv in client.scan_prefix(b"big/")] == keys
    assert [kv.key for kv in client.scan_prefix(b"big/", limit=n - 20)] == keys[: n - 20]
    assert [kv.key for kv in client.scan_prefix(b"big/", limit=n + 20)] == keys
    assert [kv.key for kv in client.scan_prefix(b"big/", limit=5)] == keys[:5]
    walked = [kv.key for kv in client.range_iter(b"big/", prefix=True)]
    assert walked == keys and len(set(walked)) == n


def test_range_and_delete_range_bad_input(client: dengine.EmbeddedClient):
    with pytest.raises(dengine.InvalidArgument, match="range_end"):
        client.range(b"b", b"a")
    with pytest.raises(dengine.InvalidArgument, match="limit"):
        client.range(b"a", prefix=True, limit=dengine.MAX_RANGE_LIMIT + 1)
    with pytest.raises(dengine.InvalidArgument):
        client.range(b"a", b"b", prefix=True)
    with pytest.raises(dengine.InvalidArgument, match="limit"):
        client.range_iter(b"a", prefix=True, page_size=-1)
    with pytest.raises(dengine.InvalidArgument):
        client.delete_range(b"b", b"a")


def test_delete_range(client: dengine.EmbeddedClient):
    keys = _fill(client, b"d/", 10)
    client.put(b"e", b"stays")
    single = client.delete_range(keys[0], prev_kv=True)
    assert single.deleted == 1 and [kv.key for kv in single.prev_kvs] == [keys[0]] and single.revision > 0
    some = client.delete_range(keys[1], keys[4])
    assert some.deleted == 3 and some.prev_kvs == []
    rest = client.delete_range(b"d/", prefix=True, prev_kv=True)
    assert rest.deleted == 6 and [kv.key for kv in rest.prev_kvs] == keys[4:]
    assert [kv.value for kv in rest.prev_kvs] == [b"v" + k for k in keys[4:]]
    assert client.range(b"d/", prefix=True).count == 0 and client.get(b"e").value == b"stays"
    assert client.delete_range(b"d/", prefix=True).deleted == 0


# ---------------------------------------------------------------- txns


def test_txn_both_branches(client: dengine.EmbeddedClient):
    rev = client.put(b"cfg", b"v1")
    client.put(b"n", b"0")
    ok = client.txn(
        compare=[Compare.value(b"cfg") == b"v1", Compare.version(b"n") == 1, Compare.create_revision(b"lock") == 0],
        success=[Op.put(b"cfg", b"v2"), Op.get(b"n"), Op.delete(b"n", prev_kv=True), Op.range(b"c", b"d")],
        failure=[Op.put(b"failed", b"1")],
    )
    assert ok.succeeded and ok.revision > rev and not ok.replayed
    put, got, deleted, ranged = ok.results
    assert isinstance(put, dengine.PutResult) and put.revision == ok.revision
    assert isinstance(got, dengine.RangePage) and [kv.value for kv in got.kvs] == [b"0"]
    assert isinstance(deleted, dengine.DeleteRangeResult) and deleted.deleted == 1
    assert [kv.key for kv in deleted.prev_kvs] == [b"n"]
    assert [kv.value for kv in ranged.kvs] == [b"v2"]  # a range sees the txn's own earlier writes
    assert client.get(b"cfg").value == b"v2" and client.get(b"n") is None and client.get(b"failed") is None

    no = client.txn(
        compare=[Compare.value(b"cfg") == b"v1"],
        success=[Op.put(b"cfg", b"v3")],
        failure=[Op.put(b"failed", b"1"), Op.get(b"cfg")],
    )
    assert not no.succeeded and len(no.results) == 2
    assert [kv.value for kv in no.results[1].kvs] == [b"v2"]
    assert client.get(b"cfg").value == b"v2" and client.get(b"failed").value == b"1"

    # a missing key: version/revisions 0, a value compare is false for every operator
    assert client.txn(compare=[Compare.mod_revision(b"missing") == 0]).succeeded
    assert not client.txn(compare=[Compare.value(b"missing") != b"x"]).succeeded
    assert client.txn(compare=[Compare.mod_revision(b"cfg") > rev, Compare.lease(b"cfg") == 0]).succeeded


def test_txn_bad_input(client: dengine.EmbeddedClient):
    with pytest.raises(dengine.InvalidArgument, match="at most 128"):
        client.txn(success=[Op.put(b"k%d" % i, b"v") for i in range(129)])
    with pytest.raises(dengine.InvalidArgument):
        client.txn(success=[Op.put(b"k", b"v", ttl=1)])  # a txn put takes a lease, not a ttl
    with pytest.raises(dengine.LeaseNotFound):
        client.txn(success=[Op.put(b"k", b"v", lease=12345)])
    assert client.get(b"k") is None


# ---------------------------------------------------------------- leases


def test_lease_calls_and_revoke_deletes_keys(client: dengine.EmbeddedClient):
    lid = client.lease_grant(30)
    assert lid > 0
    r1 = client.put(b"svc/a", b"1", lease=lid)
    client.put(b"svc/b", b"2", lease=lid)
    client.put(b"svc/c", b"3")
    assert client.range(b"svc/a").kvs[0].lease == lid and client.range(b"svc/c").kvs[0].lease == 0 and r1 > 0
    assert [kv.lease for kv in client.scan_prefix(b"svc/")] == [lid, lid, 0]
    info = client.lease_time_to_live(lid, keys=True)
    assert info.id == lid and info.granted_ttl == 30 and 0 < info.remaining <= 30
    assert sorted(info.keys) == [b"svc/a", b"svc/b"] and info.key_count == 2
    assert client.lease_time_to_live(lid).keys == []
    assert client.lease_renew(lid) == 30
    assert lid in [s.id for s in client.lease_list()]
    assert client.txn(compare=[Compare.lease(b"svc/a") == lid]).succeeded

    mine = client.lease_grant(5, id=777)
    assert mine == 777 and client.lease_time_to_live(777).granted_ttl == 5

    with client.watch_prefix(b"svc/") as w:
        assert client.lease_revoke(lid) == 2
        deletes = {next(w).kv.key for _ in range(2)}
    assert deletes == {b"svc/a", b"svc/b"}
    assert client.get(b"svc/a") is None and client.get(b"svc/b") is None and client.get(b"svc/c").value == b"3"
    assert lid not in [s.id for s in client.lease_list()]
    for call in (
        lambda: client.lease_revoke(lid),
        lambda: client.lease_renew(lid),
        lambda: client.lease_time_to_live(lid),
        lambda: client.put(b"svc/d", b"4", lease=lid),
    ):
        with pytest.raises(dengine.LeaseNotFound):
            call()
    with pytest.raises(dengine.InvalidArgument, match="ttl or lease"):
        client.put(b"x", b"1", ttl=1, lease=777)
    with pytest.raises(dengine.InvalidArgument, match="lease ttl"):
        client.lease_grant(0)
    with pytest.raises(TypeError):
        client.lease_revoke("1")  # type: ignore[arg-type]


def test_plain_reads_and_watch_events_carry_the_lease(client: dengine.EmbeddedClient):
    lid = client.lease_grant(30)
    with client.watch(b"leased") as w:
        client.put(b"leased", b"1", lease=lid)
        assert next(w).kv.lease == lid
    assert client.get(b"leased").lease == lid
    assert client.get_multi([b"leased"])[0].lease == lid


def test_keepalive_keeps_a_one_second_lease_past_three_seconds(client: dengine.EmbeddedClient):
    lost: List[dengine.Error] = []
    with client.lease(1, on_lost=lost.append) as lease:
        assert isinstance(lease, dengine.Lease) and lease.alive
        client.put(b"alive", b"1", lease=lease.id)
        time.sleep(3.2)
        assert client.get(b"alive") is not None, "the kept-alive lease expired"
        assert lease.alive and not lease.lost.is_set() and lease.error is None
        assert 0 < client.lease_time_to_live(lease.id).remaining <= 1
    # leaving the block revokes the lease, deleting its key
    assert client.get(b"alive") is None and lost == []
    with pytest.raises(dengine.LeaseNotFound):
        client.lease_renew(lease.id)


def test_keepalive_reports_a_revoked_lease_as_lost(client: dengine.EmbeddedClient):
    called = threading.Event()
    errors: List[dengine.Error] = []

    def on_lost(e: dengine.Error) -> None:
        errors.append(e)
        called.set()

    lease = client.lease(0.6, on_lost=on_lost)
    try:
        client.put(b"gone", b"1", lease=lease.id)
        assert client.lease_revoke(lease.id) == 1
        assert lease.lost.wait(3), "the keepalive did not notice the revoked lease"
        assert called.is_set() and isinstance(errors[0], dengine.LeaseNotFound)
        assert isinstance(lease.error, dengine.LeaseNotFound) and not lease.alive
    finally:
        assert lease.revoke() == 0  # already gone: not an error


def test_stopped_keepalive_lets_the_lease_expire(client: dengine.EmbeddedClient):
    lease = client.lease(0.5)
    client.put(b"short", b"1", lease=lease.id)
    lease.stop()
    wait_until("the lease's key to go", lambda: client.get(b"short") is None, timeout=5)
    assert not lease.lost.is_set()  # stopping is not a loss


def test_closing_the_client_stops_its_keepalives(engine: dengine.EmbeddedEngine):
    c = engine.client()
    lease = c.lease(0.5)
    c.close()
    assert not lease.alive and not lease.lost.is_set()
    other = engine.client()
    wait_until("the unrenewed lease to expire", lambda: lease.id not in [s.id for s in other.lease_list()], timeout=5)


# ---------------------------------------------------------------- locks


def test_lock_excludes_between_threads_and_fences(engine: dengine.EmbeddedEngine):
    inside = 0
    max_inside = 0
    history: List[int] = []
    guard = threading.Lock()
    failures: List[BaseException] = []

    def worker() -> None:
        nonlocal inside, max_inside
        try:
            with engine.client() as c:
                for _ in range(5):
                    with c.lock("jobs", ttl=5) as lock:
                        assert isinstance(lock, dengine.Lock) and lock.key.startswith(b"jobs/")
                        with guard:
                            inside += 1
                            max_inside = max(max_inside, inside)
                            history.append(lock.revision)
                        time.sleep(0.02)
                        with guard:
                            inside -= 1
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            failures.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert max_inside == 1, "two holders at once"
    assert len(history) == 10 and history == sorted(history) and len(set(history)) == 10
    c = engine.client()
    assert c.range(b"jobs/", prefix=True).count == 0  # every holder released and revoked


def test_lock_passes_on_when_the_holders_lease_is_revoked(client: dengine.EmbeddedClient, engine):
    first = client.lock("job", ttl=10)
    got: List[dengine.Lock] = []
    errors: List[BaseException] = []

    def waiter() -> None:
        try:
            got.append(engine.client().lock("job", ttl=10, timeout=20))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    assert not got, "the waiter got a held lock"
    client.lease_revoke(first.lease.id)  # the holder "dies"
    t.join(20)
    assert not errors, errors
    second = got[0]
    assert second.revision > first.revision and second.key != first.key
    assert first.lost.wait(5) and isinstance(first.lease.error, dengine.LeaseNotFound)
    with pytest.raises(dengine.InvalidArgument):
        client.lock("", ttl=1)
    second.unlock()
    first.unlock()  # already gone: unlock of a missing key is fine, its lease revoke finds nothing
    assert client.range(b"job/", prefix=True).count == 0


def test_lock_timeout_and_a_lease_of_ones_own(client: dengine.EmbeddedClient):
    held = client.lock("t", ttl=10)
    t0 = time.monotonic()
    with pytest.raises(dengine.Timeout, match="not acquired"):
        client.lock("t", ttl=10, timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert [kv.key for kv in client.range(b"t/", prefix=True).kvs] == [held.key]  # the waiter left the queue

    lid = client.lease_grant(10)
    with pytest.raises(dengine.Timeout):
        client.lock("t", lease=lid, timeout=0.3)
    assert [kv.key for kv in client.range(b"t/", prefix=True).kvs] == [held.key]
    held.unlock()
    with client.lock("t", lease=lid, timeout=5) as mine:
        assert mine.lease is None and mine.key == b"t/%016x" % lid and not mine.lost.is_set()
    assert client.lease_time_to_live(lid).id == lid  # a lease passed in is not revoked
    with pytest.raises(dengine.LeaseNotFound):
        client.lock("t", lease=424242, timeout=5)


# ---------------------------------------------------------------- elections


def test_election_campaign_proclaim_resign_observe(client: dengine.EmbeddedClient, engine):
    assert client.election_leader("sched") is None
    seen: List[dengine.KeyValue] = []
    obs = client.observe("sched")
    reader_done = threading.Event()

    def read() -> None:
        for kv in obs:
            seen.append(kv)
        reader_done.set()

    reader = threading.Thread(target=read)
    reader.start()

    a = client.campaign("sched", b"a", ttl=10)
    assert isinstance(a, dengine.Leadership) and a.revision > 0
    assert client.election_leader("sched").value == b"a"
    wait_until("observe to see a", lambda: [kv.value for kv in seen] == [b"a"], timeout=5)

    b_won: List[dengine.Leadership] = []
    b_thread = threading.Thread(target=lambda: b_won.append(engine.client().campaign("sched", b"b", ttl=10)))
    b_thread.start()
    time.sleep(0.3)
    assert not b_won and client.election_leader("sched").value == b"a"
    a.proclaim(b"a2")
    wait_until("observe to see a2", lambda: [kv.value for kv in seen] == [b"a", b"a2"], timeout=5)
    a.resign()
    b_thread.join(10)
    b = b_won[0]
    assert b.revision > a.revision and client.election_leader("sched").value == b"b"
    wait_until("observe to see b", lambda: [kv.value for kv in seen] == [b"a", b"a2", b"b"], timeout=5)
    assert seen[2].key == b.key and seen[0].key == a.key
    with pytest.raises(dengine.NotHeld):
        client.proclaim(a.leader, b"stale")

    # the leader's lease ends: the election has no leader; a new candidate leads
    client.lease_revoke(b.lease.id)
    wait_until("b's key to go", lambda: client.election_leader("sched") is None, timeout=5)
    with client.campaign("sched", b"c", ttl=10) as c:
        wait_until("observe to see c", lambda: len(seen) == 4 and seen[3].key == c.key, timeout=5)
    obs.cancel()
    assert reader_done.wait(5)
    reader.join(5)
    with pytest.raises(dengine.InvalidArgument):
        client.observe("")


# ---------------------------------------------------------------- asyncio


async def _await(x):
    """A coroutine awaiting ``x`` (an AsyncLock or AsyncLeadership), for ``ensure_future``."""
    return await x


@pytest.fixture
async def aengine(tmp_path: Path):
    async with await dengine.AsyncEmbeddedEngine.start(tmp_path / "adata") as e:
        await e.wait_ready(10)
        yield e


async def test_async_ranges_txn_delete_range(aengine: dengine.AsyncEmbeddedEngine):
    c = aengine.client()
    keys = [b"r/%03d" % i for i in range(40)]
    for i in range(0, 40, 16):
        await c.txn(success=[Op.put(k, k) for k in keys[i : i + 16]])
    page = await c.range(b"r/", prefix=True, limit=15)
    assert len(page.kvs) == 15 and page.more and page.count == 40
    assert [kv.key async for kv in c.range_iter(b"r/", prefix=True, page_size=15)] == keys
    assert [kv.key for kv in await c.scan_prefix(b"r/")] == keys
    assert [kv.key for kv in await c.scan_prefix(b"r/", limit=3)] == keys[:3]
    with pytest.raises(dengine.InvalidArgument):
        c.range_iter(b"b", b"a")

    ok = await c.txn(compare=[Compare.version(b"r/000") == 1], success=[Op.put(b"r/000", b"x"), Op.get(b"r/001")])
    assert ok.succeeded and [kv.value for kv in ok.results[1].kvs] == [b"r/001"]
    no = await c.txn(compare=[Compare.version(b"r/000") == 1], failure=[Op.get(b"r/000")])
    assert not no.succeeded and no.results[0].kvs[0].value == b"x"
    d = await c.delete_range(b"r/", prefix=True, prev_kv=True)
    assert d.deleted == 40 and len(d.prev_kvs) == 40 and (await c.range(b"r/", prefix=True)).count == 0


async def test_async_scan_prefix_past_the_page_maximum(aengine: dengine.AsyncEmbeddedEngine):
    c = aengine.client()
    n = dengine.MAX_RANGE_LIMIT + 30
    keys = [b"k/%06d" % i for i in range(n)]
    for i in range(0, n, dengine.MAX_TXN_OPS):
        await c.txn(success=[Op.put(k, b"") for k in keys[i : i + dengine.MAX_TXN_OPS]])
    assert [kv.key for kv in await c.scan_prefix(b"k/")] == keys
    assert [kv.key for kv in await c.scan_prefix(b"k/", limit=n - 10)] == keys[:-10]
    assert len([kv async for kv in c.range_iter(b"k/", prefix=True)]) == n


async def test_async_leases_revoke_and_keepalive(aengine: dengine.AsyncEmbeddedEngine):
    c = aengine.client()
    lid = await c.lease_grant(30)
    await c.put(b"s/a", b"1", lease=lid)
    await c.put(b"s/b", b"2", lease=lid)
    info = await c.lease_time_to_live(lid, keys=True)
    assert sorted(info.keys) == [b"s/a", b"s/b"] and info.key_count == 2
    assert await c.lease_renew(lid) == 30 and lid in [s.id for s in await c.lease_list()]
    assert await c.lease_revoke(lid) == 2
    assert await c.get(b"s/a") is None and await c.get(b"s/b") is None
    with pytest.raises(dengine.LeaseNotFound):
        await c.lease_renew(lid)
    with pytest.raises(dengine.LeaseNotFound):
        await c.put(b"s/c", b"3", lease=lid)

    async with c.lease(1) as lease:
        assert isinstance(lease, dengine.AsyncLease) and lease.alive
        await c.put(b"alive", b"1", lease=lease.id)
        await asyncio.sleep(3.2)
        assert await c.get(b"alive") is not None, "the kept-alive lease expired"
        assert lease.alive and lease.error is None
    assert await c.get(b"alive") is None

    lost: List[dengine.Error] = []

    async def on_lost(e: dengine.Error) -> None:
        lost.append(e)

    lease = await c.lease(0.6, on_lost=on_lost)
    await c.lease_revoke(lease.id)
    await asyncio.wait_for(lease.lost.wait(), 3)
    assert isinstance(lost[0], dengine.LeaseNotFound) and isinstance(lease.error, dengine.LeaseNotFound)
    assert await lease.revoke() == 0
    await c.close()


async def test_async_lock_exclusion_handover_and_timeout(aengine: dengine.AsyncEmbeddedEngine):
    c = aengine.client()
    inside = 0
    max_inside = 0
    history: List[int] = []

    async def worker() -> None:
        nonlocal inside, max_inside
        for _ in range(4):
            async with c.lock("jobs", ttl=5) as lock:
                inside += 1
                max_inside = max(max_inside, inside)
                history.append(lock.revision)
                await asyncio.sleep(0.02)
                inside -= 1

    await asyncio.wait_for(asyncio.gather(worker(), worker()), 60)
    assert max_inside == 1 and len(history) == 8 and history == sorted(history)

    first = await c.lock("job", ttl=10)
    waiter = asyncio.ensure_future(_await(c.lock("job", ttl=10, timeout=20)))
    await asyncio.sleep(0.5)
    assert not waiter.done()
    await c.lease_revoke(first.lease.id)
    second = await asyncio.wait_for(waiter, 20)
    assert second.revision > first.revision
    await asyncio.wait_for(first.lost.wait(), 5)

    with pytest.raises(dengine.Timeout):
        await c.lock("job", ttl=10, timeout=0.3)
    assert [kv.key for kv in (await c.range(b"job/", prefix=True)).kvs] == [second.key]
    await second.unlock()
    assert (await c.range(b"job/", prefix=True)).count == 0

    # a canceled waiter leaves the queue too
    held = await c.lock("job", ttl=10)
    task = asyncio.ensure_future(_await(c.lock("job", ttl=10)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [kv.key for kv in (await c.range(b"job/", prefix=True)).kvs] == [held.key]
    await held.unlock()


async def test_async_election_observe(aengine: dengine.AsyncEmbeddedEngine):
    c = aengine.client()
    seen: List[bytes] = []
    obs = c.observe("el")

    async def read() -> None:
        async for kv in obs:
            seen.append(kv.value)

    reader = asyncio.ensure_future(read())

    async def until(values: List[bytes]) -> None:
        for _ in range(500):
            if seen == values:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"observed {seen}, expected {values}")

    a = await c.campaign("el", b"a", ttl=10)
    await until([b"a"])
    b_task = asyncio.ensure_future(_await(c.campaign("el", b"b", ttl=10)))
    await asyncio.sleep(0.3)
    assert not b_task.done()
    await a.proclaim(b"a2")
    await until([b"a", b"a2"])
    await a.resign()
    b = await asyncio.wait_for(b_task, 10)
    await until([b"a", b"a2", b"b"])
    assert (await c.election_leader("el")).key == b.key
    async with c.campaign("el", b"c", ttl=10, lease=b.leader.lease) as again:
        # campaigning again with the same lease keeps the position and publishes the new value
        assert again.key == b.key
        await until([b"a", b"a2", b"b", b"c"])
    with pytest.raises(dengine.NotHeld):
        await c.proclaim(a.leader, b"stale")
    obs.cancel()
    await asyncio.wait_for(reader, 5)


def test_a_waiting_lock_ends_with_client_closed_when_the_engine_stops(tmp_path: Path):
    engine = dengine.EmbeddedEngine.start(tmp_path / "stop")
    try:
        engine.wait_ready(10)
        c = engine.client()
        held = c.lock("x", ttl=10)
        errors: List[BaseException] = []

        def waiter() -> None:
            try:
                engine.client().lock("x", ttl=10)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        assert t.is_alive() and held.revision > 0
    finally:
        engine.stop()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], dengine.ClientClosed), errors
    with pytest.raises(TypeError, match="timeout"):
        c.lock("x", timeout="1")  # type: ignore[arg-type]


async def test_async_waiting_lock_ends_with_client_closed_when_the_engine_stops(tmp_path: Path):
    engine = await dengine.AsyncEmbeddedEngine.start(tmp_path / "astop")
    try:
        await engine.wait_ready(10)
        c = engine.client()
        await c.lock("x", ttl=10)
        waiter = asyncio.ensure_future(_await(c.lock("x", ttl=10)))
        await asyncio.sleep(0.3)
        assert not waiter.done()
    finally:
        await engine.stop()
    with pytest.raises(dengine.ClientClosed):
        await asyncio.wait_for(waiter, 10)
