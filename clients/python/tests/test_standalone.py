"""The gRPC clients against a real 3-node d-engine-server cluster."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from cluster import ServerCluster, wait_until

import d_engine as dengine


def test_seed_snippet_put_get(client: dengine.Client, ns: bytes):
    rev = client.put(ns + b"key", b"value")
    assert isinstance(rev, int) and rev > 0
    kv = client.get(ns + b"key")
    assert kv is not None and kv.value == b"value" and kv.key == ns + b"key"
    assert kv.mod_revision == rev and kv.create_revision == rev and kv.version == 1


def test_str_keys_are_utf8_and_values_bytes(client: dengine.Client, ns: bytes):
    key = ns.decode() + "clé"
    client.put(key, "välue")
    kv = client.get(key.encode("utf-8"))
    assert kv is not None and kv.value == "välue".encode() and isinstance(kv.value, bytes)


@pytest.mark.parametrize("consistency", ["linearizable", "lease", "eventual", dengine.Consistency.LEASE])
def test_read_consistencies(client: dengine.Client, ns: bytes, consistency):
    rev = client.put(ns + b"c", b"1")
    if consistency == "eventual":
        # any node, possibly stale: wait until it has applied the write
        kv = wait_until("an eventual read to see the write", lambda: client.get(ns + b"c", consistency), 5)
    else:
        kv = client.get(ns + b"c", consistency=consistency)
    assert kv is not None and kv.value == b"1" and kv.mod_revision >= rev


def test_unknown_consistency_is_invalid_argument(client: dengine.Client, ns: bytes):
    with pytest.raises(dengine.InvalidArgument, match="unknown consistency"):
        client.get(ns + b"x", consistency="strong")


def test_version_counts_modifications(client: dengine.Client, ns: bytes):
    r1 = client.put(ns + b"v", b"a")
    r2 = client.put(ns + b"v", b"b")
    kv = client.get(ns + b"v")
    assert r2 > r1 and kv.version == 2 and kv.create_revision == r1 and kv.mod_revision == r2


def test_get_multi_in_order_with_missing(client: dengine.Client, ns: bytes):
    client.put(ns + b"a", b"1")
    client.put(ns + b"c", b"3")
    got = client.get_multi([ns + b"a", ns + b"b", ns + b"c"])
    assert [kv.value if kv else None for kv in got] == [b"1", None, b"3"]


def test_delete(client: dengine.Client, ns: bytes):
    client.put(ns + b"d", b"1")
    assert client.delete(ns + b"d") is True
    assert client.get(ns + b"d") is None
    assert client.delete(ns + b"d") is False


def test_compare_and_swap(client: dengine.Client, ns: bytes):
    k = ns + b"cas"
    created = client.compare_and_swap(k, None, b"v1")
    assert created.succeeded and created.current.value == b"v1"
    again = client.compare_and_swap(k, None, b"other")
    assert not again.succeeded and again.current.value == b"v1"
    wrong = client.compare_and_swap(k, b"nope", b"v2")
    assert not wrong.succeeded and client.get(k).value == b"v1"
    swapped = client.compare_and_swap(k, b"v1", b"v2")
    assert swapped.succeeded and swapped.revision > created.revision and client.get(k).value == b"v2"
    deleted = client.compare_and_swap(k, b"v2", None)
    assert deleted.succeeded and deleted.current is None and client.get(k) is None


def test_scan_prefix_sorted_and_limited(client: dengine.Client, ns: bytes):
    for i in (3, 1, 2):
        client.put(ns + b"s/%d" % i, b"%d" % i)
    client.put(ns + b"t/other", b"x")
    kvs = client.scan_prefix(ns + b"s/")
    assert [kv.key for kv in kvs] == [ns + b"s/1", ns + b"s/2", ns + b"s/3"]
    assert [kv.key for kv in client.scan_prefix(ns + b"s/", limit=2)] == [ns + b"s/1", ns + b"s/2"]


def test_ttl_expires(client: dengine.Client, ns: bytes):
    client.put(ns + b"ttl", b"x", ttl=0.5)
    kv = client.get(ns + b"ttl")
    assert kv is not None and kv.expires_at_ms > time.time() * 1000
    wait_until("the key with ttl=0.5s to expire", lambda: client.get(ns + b"ttl") is None, timeout=8)
    client.put(ns + b"keep", b"x")
    assert client.get(ns + b"keep").expires_at_ms == 0


def test_watch_key_and_prefix(client: dengine.Client, ns: bytes):
    with client.watch(ns + b"w") as w, client.watch_prefix(ns + b"p/") as wp:
        r1 = client.put(ns + b"w", b"1")
        client.put(ns + b"p/a", b"a")
        assert client.delete(ns + b"w") is True
        client.put(ns + b"p/b", b"b")
        e1, e2 = next(w), next(w)
        assert (e1.type, e1.kv.value, e1.revision) == ("put", b"1", r1)
        assert e2.type == "delete" and e2.kv.key == ns + b"w" and e2.revision > r1
        got = [next(wp).kv.key for _ in range(2)]
        assert got == [ns + b"p/a", ns + b"p/b"]


def test_watch_from_start_revision_replays(client: dengine.Client, ns: bytes):
    r1 = client.put(ns + b"h", b"1")
    client.put(ns + b"h", b"2")
    with client.watch(ns + b"h", start_revision=r1) as w:
        assert [next(w).kv.value, next(w).kv.value] == [b"1", b"2"]


def test_watch_cancel_from_another_thread_unblocks(client: dengine.Client, ns: bytes):
    w = client.watch(ns + b"never")
    result = []

    def consume():
        result.append(list(w))

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.2)
    w.cancel()
    t.join(5)
    assert not t.is_alive() and result == [[]]


def test_members_and_leader(client: dengine.Client, cluster: ServerCluster):
    members = client.members()
    assert sorted(m.id for m in members) == [1, 2, 3]
    assert {m.client_addr for m in members} == set(cluster.endpoints)
    assert all(m.role == "voter" for m in members)
    leader = client.leader()
    assert leader.id in (1, 2, 3) and leader.addr == cluster.specs[leader.id - 1].client_addr


def test_unreachable_endpoint_fails_with_unavailable_fast():
    t0 = time.monotonic()
    with dengine.Client("127.0.0.1:1", retry=dengine.RetryPolicy(deadline=1.0)) as c:
        with pytest.raises((dengine.Unavailable, dengine.Timeout)):
            c.get(b"k")
    assert time.monotonic() - t0 < 5


def test_closed_client_raises_client_closed(cluster: ServerCluster):
    c = dengine.Client(cluster.endpoints)
    c.close()
    with pytest.raises(dengine.ClientClosed):
        c.put(b"k", b"v")


def test_server_validates_too(client: dengine.Client, ns: bytes):
    with pytest.raises(dengine.InvalidArgument, match="limits.max_value_bytes"):
        client.put(ns + b"big", b"x" * ((1 << 20) + 1))
    with pytest.raises(TypeError, match="key must be bytes or str, not int"):
        client.get(42)


async def test_async_client_basics(cluster: ServerCluster, ns: bytes):
    async with dengine.AsyncClient(cluster.endpoints) as c:
        rev = await c.put(ns + b"a", b"1")
        assert (await c.get(ns + b"a")).mod_revision == rev
        assert [kv.value if kv else None for kv in await c.get_multi([ns + b"a", ns + b"zz"])] == [b"1", None]
        cas = await c.compare_and_swap(ns + b"a", b"1", b"2")
        assert cas.succeeded
        assert [kv.key for kv in await c.scan_prefix(ns)] == [ns + b"a"]
        # from the next revision: a lagging node must not replay the CAS
        w = await c.watch_prefix(ns, start_revision=cas.revision + 1)
        await c.put(ns + b"b", b"x")
        assert await c.delete(ns + b"a") is True
        events = []
        async for ev in w:
            events.append((ev.type, ev.kv.key))
            if len(events) == 2:
                w.cancel()
        assert events == [("put", ns + b"b"), ("delete", ns + b"a")]
        assert len(await c.members()) == 3 and (await c.leader()).id in (1, 2, 3)
    with pytest.raises(dengine.ClientClosed):
        await c.get(ns + b"a")


async def test_async_client_many_concurrent_writes(cluster: ServerCluster, ns: bytes):
    # More writes in flight than the server's 64-result deduplication window.
    async with dengine.AsyncClient(cluster.endpoints) as c:
        revs = await asyncio.gather(*(c.put(ns + b"%04d" % i, b"x") for i in range(300)))
        assert len(set(revs)) == 300
        assert len(await c.scan_prefix(ns)) == 300


def test_sync_client_many_threads_share_one_client(client: dengine.Client, ns: bytes):
    def work(t: int):
        for i in range(25):
            client.put(ns + b"%d/%d" % (t, i), b"x")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(80)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(client.scan_prefix(ns)) == 2000
