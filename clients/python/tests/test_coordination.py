"""The coordination API (ranges with paging, delete-range, transactions,
leases and the keepalive helpers) against a real 3-node d-engine-server
cluster, sync and asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, List

import grpc
import pytest
from cluster import ServerCluster, wait_until

import d_engine as dengine
from d_engine import Compare, Op


class _LostAnswer(grpc.RpcError):
    """A transport failure after the server applied the request (its answer was lost)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset after the request was sent (injected by the test)"

    def trailing_metadata(self) -> tuple:
        return ()


def _lose_first_answer(client: Any) -> List[int]:
    """Makes the next request of ``client`` reach the server, then fail as if
    its answer were lost, so that the client retries it. Returns a list that
    counts the attempts."""
    attempts: List[int] = []
    orig = client._call

    def call(fn: Callable, need_leader: bool):
        def once(stubs, timeout):
            result = fn(stubs, timeout)
            attempts.append(1)
            if len(attempts) == 1:
                raise _LostAnswer()
            return result

        client._call = orig
        return orig(once, need_leader)

    client._call = call
    return attempts


def _lose_first_answer_async(client: Any) -> List[int]:
    attempts: List[int] = []
    orig = client._call

    async def call(fn: Callable, need_leader: bool):
        async def once(stubs, timeout):
            result = await fn(stubs, timeout)
            attempts.append(1)
            if len(attempts) == 1:
                raise _LostAnswer()
            return result

        client._call = orig
        return await orig(once, need_leader)

    client._call = call
    return attempts


def _fill(client: dengine.Client, prefix: bytes, n: int, value: bytes = b"v") -> None:
    """Puts ``prefix + %06d`` for i < n, 128 per transaction."""
    for start in range(0, n, dengine.MAX_TXN_OPS):
        ops = [Op.put(prefix + b"%06d" % i, value) for i in range(start, min(n, start + dengine.MAX_TXN_OPS))]
        assert client.txn(success=ops).succeeded


# -- ranges ----------------------------------------------------------------
def test_range_pages_see_every_key_once(client: dengine.Client, ns: bytes):
    _fill(client, ns + b"k/", 50)
    client.put(ns + b"k0", b"just past the prefix")
    seen: List[bytes] = []
    page = client.range(ns + b"k/", prefix=True, limit=7)
    pages = 1
    assert len(page.kvs) == 7 and page.more and page.count == 50 and page.revision > 0
    seen += [kv.key for kv in page.kvs]
    while page.more:
        assert page.next_key > seen[-1]
        page = client.range(page.next_key, dengine.prefix_end(ns + b"k/"), limit=7)
        seen += [kv.key for kv in page.kvs]
        pages += 1
    assert pages == 8
    assert seen == [ns + b"k/%06d" % i for i in range(50)], "every key once, in order"
    assert [kv.key for kv in client.range_iter(ns + b"k/", prefix=True, page_size=7)] == seen
    assert page.next_key == b"" and not page.more


def test_range_iter_and_scan_prefix_read_past_the_server_page_maximum(client: dengine.Client, ns: bytes):
    n = dengine.MAX_RANGE_LIMIT + 57
    _fill(client, ns, n)
    first = client.range(ns, prefix=True)
    assert first.more and len(first.kvs) <= dengine.MAX_RANGE_LIMIT and first.count == n
    keys = [kv.key for kv in client.range_iter(ns, prefix=True)]
    assert keys == [ns + b"%06d" % i for i in range(n)]
    assert len(client.scan_prefix(ns)) == n, "scan_prefix no longer stops at one page"
    assert len(client.scan_prefix(ns, limit=10_050)) == 10_050


def test_range_options(client: dengine.Client, ns: bytes):
    r1 = client.put(ns + b"a", b"1")
    client.put(ns + b"b", b"22")
    client.put(ns + b"c", b"333")
    page = client.range(ns + b"a", ns + b"c")
    assert [(kv.key, kv.value) for kv in page.kvs] == [(ns + b"a", b"1"), (ns + b"b", b"22")]
    assert page.count == 2 and not page.more and page.revision >= r1
    assert page.kvs[0].create_revision == r1 and page.kvs[0].version == 1
    assert [kv.key for kv in client.range(ns + b"b", b"\0").kvs][:2] == [ns + b"b", ns + b"c"]
    keys_only = client.range(ns, prefix=True, keys_only=True)
    assert [kv.key for kv in keys_only.kvs] == [ns + b"a", ns + b"b", ns + b"c"]
    assert all(kv.value == b"" for kv in keys_only.kvs) and keys_only.kvs[2].mod_revision > r1
    counted = client.range(ns, prefix=True, count_only=True)
    assert counted.count == 3 and counted.kvs == [] and not counted.more
    assert [kv.value for kv in client.range(ns + b"b").kvs] == [b"22"]
    assert client.range(ns + b"missing").kvs == []
    eventual = wait_until(
        "an eventual range to see the keys", lambda: client.range(ns, prefix=True, consistency="eventual").count == 3
    )
    assert eventual


# -- delete-range ----------------------------------------------------------
def test_delete_range(client: dengine.Client, ns: bytes):
    for k in (b"a", b"b", b"c", b"d"):
        client.put(ns + b"d/" + k, k * 2)
    client.put(ns + b"e", b"outside")
    with client.watch_prefix(ns + b"d/") as w:
        res = client.delete_range(ns + b"d/a", ns + b"d/c", prev_kv=True)
        assert res.deleted == 2 and res.revision > 0 and not res.prev_kvs_truncated
        assert [(kv.key, kv.value) for kv in res.prev_kvs] == [(ns + b"d/a", b"aa"), (ns + b"d/b", b"bb")]
        events = [next(w), next(w)]
        assert [(e.type, e.kv.key) for e in events] == [("delete", ns + b"d/a"), ("delete", ns + b"d/b")]
        assert {e.revision for e in events} == {res.revision}, "one replicated step"
    rest = client.delete_range(ns + b"d/", prefix=True)
    assert rest.deleted == 2 and rest.prev_kvs == []
    assert client.range(ns + b"d/", prefix=True).count == 0 and client.get(ns + b"e") is not None
    assert client.delete_range(ns + b"d/", prefix=True).deleted == 0


# -- transactions ----------------------------------------------------------
def test_txn_both_branches(client: dengine.Client, ns: bytes):
    k, other = ns + b"k", ns + b"other"
    create = client.txn([Compare.create_revision(k) == 0], [Op.put(k, b"v1"), Op.get(k)], [Op.get(k)])
    assert create.succeeded and not create.replayed and len(create.results) == 2
    put_res, got = create.results
    assert isinstance(put_res, dengine.PutResult) and put_res.revision == create.revision
    assert isinstance(got, dengine.RangePage) and [kv.value for kv in got.kvs] == [b"v1"], (
        "later ops see earlier writes"
    )
    again = client.txn([Compare.create_revision(k) == 0], [Op.put(k, b"v2")], [Op.get(k), Op.get(other)])
    assert not again.succeeded and [kv.value for kv in again.results[0].kvs] == [b"v1"]
    assert again.results[1].kvs == [] and client.get(k).value == b"v1"

    kv = client.get(k)
    cmps = [
        Compare.value(k) == b"v1",
        Compare.version(k) == 1,
        Compare.mod_revision(k) == kv.mod_revision,
        Compare.create_revision(k) > 0,
        Compare.lease(k) == 0,
        Compare.version(other) == 0,
        Compare.value(k) != b"nope",
        Compare.mod_revision(k) < kv.mod_revision + 1,
    ]
    swap = client.txn(cmps, [Op.put(k, b"v2"), Op.put(other, b"o"), Op.delete_range(ns + b"x", ns + b"y")], [])
    assert swap.succeeded and [type(r).__name__ for r in swap.results] == [
        "PutResult",
        "PutResult",
        "DeleteRangeResult",
    ]
    assert {r.revision for r in swap.results} == {swap.revision}, "one log entry"
    assert client.get(k).mod_revision == client.get(other).mod_revision == swap.revision
    # a value compare on a missing key is false for every operator
    for cmp in (Compare.value(ns + b"none") == b"", Compare.value(ns + b"none") != b"x"):
        assert not client.txn([cmp], [Op.put(ns + b"none", b"1")], []).succeeded
    assert client.get(ns + b"none") is None
    deleted = client.txn([], [Op.delete(other, prev_kv=True)], [])
    assert deleted.results[0].deleted == 1 and deleted.results[0].prev_kvs[0].value == b"o"


def test_txn_retry_applies_once(client: dengine.Client, ns: bytes):
    counter = ns + b"counter"
    client.put(counter, b"0")
    attempts = _lose_first_answer(client)
    r = client.txn([Compare.value(counter) == b"0"], [Op.put(counter, b"1"), Op.put(ns + b"log/1", b"x")], [])
    assert len(attempts) == 2, "the client retried the txn"
    assert r.succeeded and r.replayed, "the retry was answered with the first application's result"
    assert client.get(counter).value == b"1" and client.get(counter).version == 2
    assert client.range(ns + b"log/", prefix=True).count == 1
    # the next txn is a new write
    r2 = client.txn([Compare.value(counter) == b"0"], [Op.put(counter, b"2")], [])
    assert not r2.succeeded and not r2.replayed


def test_txn_and_range_bad_input_from_the_server(client: dengine.Client, ns: bytes):
    # a put attached to a lease that does not exist applies nothing
    with pytest.raises(dengine.LeaseNotFound):
        client.txn([], [Op.put(ns + b"a", b"1"), Op.put(ns + b"b", b"2", lease=987654321)], [])
    assert client.range(ns, prefix=True).count == 0


# -- leases ----------------------------------------------------------------
def test_lease_grant_attach_revoke(client: dengine.Client, ns: bytes):
    lid = client.lease_grant(30)
    assert lid > 0
    client.put(ns + b"a", b"1", lease=lid)
    client.put(ns + b"b", b"2", lease=lid)
    client.put(ns + b"c", b"3")
    assert client.get(ns + b"a").lease == lid and client.get(ns + b"c").lease == 0
    info = client.lease_time_to_live(lid, keys=True)
    assert info.id == lid and info.granted_ttl == 30 and 0 < info.remaining <= 30
    assert sorted(info.keys) == [ns + b"a", ns + b"b"] and info.key_count == 2
    assert client.lease_renew(lid) == 30
    assert lid in [s.id for s in client.lease_list()]
    txn = client.txn([Compare.lease(ns + b"a") == lid], [Op.put(ns + b"t", b"in txn", lease=lid)], [])
    assert txn.succeeded and client.lease_time_to_live(lid).key_count == 3
    with client.watch_prefix(ns) as w:
        assert client.lease_revoke(lid) == 3
        events = [next(w) for _ in range(3)]
        assert all(e.type == "delete" for e in events) and len({e.revision for e in events}) == 1
    assert client.range(ns, prefix=True).count == 1 and client.get(ns + b"c").value == b"3"
    assert lid not in [s.id for s in client.lease_list()]
    for call in (
        lambda: client.lease_revoke(lid),
        lambda: client.lease_renew(lid),
        lambda: client.lease_time_to_live(lid),
        lambda: client.put(ns + b"d", b"4", lease=lid),
    ):
        with pytest.raises(dengine.LeaseNotFound):
            call()
    assert client.get(ns + b"d") is None


def test_lease_expiry_deletes_its_keys(client: dengine.Client, ns: bytes):
    lid = client.lease_grant(1)
    client.put(ns + b"gone", b"x", lease=lid)
    wait_until("the lease to expire and delete its key", lambda: client.get(ns + b"gone") is None, timeout=10)
    with pytest.raises(dengine.LeaseNotFound):
        client.lease_time_to_live(lid)


def test_keepalive_keeps_a_lease_past_its_ttl_and_reports_loss_after_revoke(cluster: ServerCluster, ns: bytes):
    lost: List[dengine.Error] = []
    with dengine.Client(cluster.endpoints) as c, dengine.Client(cluster.endpoints) as other:
        with c.lease(1.0, on_lost=lost.append) as lease:
            c.put(ns + b"held", b"x", lease=lease.id)
            time.sleep(3.5)
            assert lease.alive and not lease.lost.is_set(), lease.error
            assert other.get(ns + b"held") is not None, "alive past three TTLs"
            assert other.lease_time_to_live(lease.id).remaining > 0
            other.lease_revoke(lease.id)
            assert lease.lost.wait(3), "the keepalive reports the revoked lease"
            assert isinstance(lease.error, dengine.LeaseNotFound) and lost == [lease.error]
        assert other.get(ns + b"held") is None


def test_lease_helper_revokes_on_exit(client: dengine.Client, ns: bytes):
    with client.lease(10) as lease:
        client.put(ns + b"k", b"v", lease=lease.id)
        assert client.get(ns + b"k").lease == lease.id
    assert client.get(ns + b"k") is None and not lease.lost.is_set()
    with pytest.raises(dengine.LeaseNotFound):
        client.lease_time_to_live(lease.id)


# -- asyncio ---------------------------------------------------------------
async def test_async_coordination(cluster: ServerCluster, ns: bytes):
    async with dengine.AsyncClient(cluster.endpoints) as c:
        for start in range(0, 300, 100):
            await c.txn(success=[Op.put(ns + b"p/%04d" % i, b"x") for i in range(start, start + 100)])
        keys = [kv.key async for kv in c.range_iter(ns + b"p/", prefix=True, page_size=32)]
        assert keys == [ns + b"p/%04d" % i for i in range(300)]
        page = await c.range(ns + b"p/", prefix=True, limit=100)
        assert page.more and page.count == 300 and len(page.kvs) == 100
        assert len(await c.scan_prefix(ns + b"p/")) == 300
        assert (await c.delete_range(ns + b"p/0100", ns + b"p/0200")).deleted == 100
        assert (await c.range(ns + b"p/", prefix=True, count_only=True)).count == 200

        k = ns + b"k"
        await c.put(k, b"0")
        attempts = _lose_first_answer_async(c)
        r = await c.txn([Compare.value(k) == b"0"], [Op.put(k, b"1")], [Op.get(k)])
        assert len(attempts) == 2 and r.succeeded and r.replayed and (await c.get(k)).version == 2
        r = await c.txn([Compare.value(k) == b"0"], [Op.put(k, b"1")], [Op.get(k)])
        assert not r.succeeded and r.results[0].kvs[0].value == b"1"

        lost: List[dengine.Error] = []
        async with c.lease(1.0, on_lost=lost.append) as lease:
            await c.put(ns + b"held", b"x", lease=lease.id)
            await asyncio.sleep(3.5)
            assert lease.alive and (await c.get(ns + b"held")) is not None
            assert (await c.lease_time_to_live(lease.id, keys=True)).keys == [ns + b"held"]
            await c.lease_revoke(lease.id)
            await asyncio.wait_for(lease.lost.wait(), 3)
            assert isinstance(lease.error, dengine.LeaseNotFound) and lost == [lease.error]
        assert await c.get(ns + b"held") is None

        lease = await c.lease(10)
        await c.put(ns + b"l2", b"x", lease=lease.id)
        assert lease.id in [s.id for s in await c.lease_list()]
        assert await lease.revoke() == 1 and await c.get(ns + b"l2") is None


# -- leader change ---------------------------------------------------------
def test_kept_alive_lease_survives_a_leader_kill(fresh_cluster: ServerCluster):
    cluster = fresh_cluster
    with dengine.Client(cluster.endpoints, timeout=1.0) as c:
        old = wait_until("a leader", lambda: c.leader().id, timeout=10)
        lease = c.lease(2.0)
        c.put(b"svc/a", b"addr", lease=lease.id)
        cluster.proc(old).kill()
        survivors = [s.client_addr for s in cluster.specs if s.id != old]
        with dengine.Client(survivors, timeout=1.0) as s:
            new = wait_until("a new leader", lambda: (lid := s.leader().id) and lid != old and lid, timeout=15)
            assert new != old
            time.sleep(6.0)  # three TTLs after the kill
            assert lease.alive, f"lost after a leader change: {lease.error!r}"
            assert s.get(b"svc/a") is not None
            assert s.lease_time_to_live(lease.id).remaining > 0
        lease.stop()


def test_a_lease_outlives_a_leader_kill_by_its_ttl_then_expires(fresh_cluster: ServerCluster):
    """A new leader never expires a lease early (it gives every lease its
    full TTL again) and does not keep a dead holder's lease forever."""
    cluster = fresh_cluster
    ttl = 3.0
    with dengine.Client(cluster.endpoints, timeout=1.0) as c:
        old = wait_until("a leader", lambda: c.leader().id, timeout=10)
        lid = c.lease_grant(ttl)
        c.put(b"dead/a", b"x", lease=lid)
        renewed_at = time.monotonic()  # before the renewal is sent: the lease lives at least ttl from here
        c.lease_renew(lid)
        cluster.proc(old).kill()
    survivors = [s.client_addr for s in cluster.specs if s.id != old]
    with dengine.Client(survivors, timeout=1.0) as s:
        wait_until("a new leader", lambda: (lid2 := s.leader().id) and lid2 != old, timeout=15)
        time.sleep(max(0.0, renewed_at + ttl * 0.8 - time.monotonic()))
        kv = s.get(b"dead/a")
        if time.monotonic() < renewed_at + ttl:
            assert kv is not None, "the lease expired before its TTL had passed since its last renewal"
        wait_until("the dead holder's lease to expire on the new leader", lambda: s.get(b"dead/a") is None, timeout=20)
        with pytest.raises(dengine.LeaseNotFound):
            s.lease_time_to_live(lid)


def test_threads_and_leases_share_one_client(client: dengine.Client, ns: bytes):
    leases = [client.lease(5) for _ in range(4)]
    errors: List[BaseException] = []

    def work(i: int):
        try:
            for j in range(20):
                client.put(ns + b"%d/%d" % (i, j), b"x", lease=leases[i].id)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert client.range(ns, prefix=True, count_only=True).count == 80
    assert sum(lease.revoke() for lease in leases) == 80
    assert client.range(ns, prefix=True, count_only=True).count == 0
