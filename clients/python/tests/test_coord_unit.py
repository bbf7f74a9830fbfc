"""The coordination API of the gRPC clients without a d-engine server:
prefix_end, range bounds, the Compare/Op builders, LEASE_NOT_FOUND mapping,
and (against the in-process fake of fake_server.py) range paging, txn
exactly-once retries and the lease keepalive helpers, sync and asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from fake_server import FakeNode, Store, coded_status

import d_engine as dengine
from d_engine import Compare, Op
from d_engine._codec import error_from_rpc, range_bounds
from d_engine._errors import error_for_code
from d_engine._proto.dengine.v1 import client_pb2 as pb
from d_engine._txn import compare_pb, txn_op_pb, txn_request


# -- prefix_end and range bounds -------------------------------------------
@pytest.mark.parametrize(
    "prefix, end",
    [
        (b"a", b"b"),
        (b"user/", b"user0"),
        (b"a\xff", b"b"),
        (b"ab\xfe", b"ab\xff"),
        (b"a\xfe\xff\xff", b"a\xff"),
        (b"\xff", b"\0"),
        (b"\xff\xff", b"\0"),
        (b"", b"\0"),
        ("jobs/", b"jobs0"),
    ],
)
def test_prefix_end(prefix, end):
    assert dengine.prefix_end(prefix) == end


def test_prefix_end_bounds_exactly_the_prefixed_keys():
    for p in (b"a", b"a\xff", b"\x00", b"k\xfe\xff"):
        end = dengine.prefix_end(p)
        for k in (p, p + b"\x00", p + b"\xff\xff", p[:-1], p[:-1] + bytes([p[-1] + 1]) if p[-1] < 255 else b"\xff" * 9):
            assert (p <= k < end) == k.startswith(p), (p, k, end)


def test_range_bounds():
    assert range_bounds(b"k", None, False) == (b"k", b"")
    assert range_bounds(b"k", b"", False) == (b"k", b"")
    assert range_bounds(b"a", b"c", False) == (b"a", b"c")
    assert range_bounds(b"a", b"\0", False) == (b"a", b"\0")
    assert range_bounds(b"", b"\0", False) == (b"", b"\0")
    assert range_bounds(b"p/", None, True) == (b"p/", b"p0")
    assert range_bounds(b"", None, True) == (b"", b"\0")
    with pytest.raises(dengine.InvalidArgument, match="must sort after key"):
        range_bounds(b"b", b"a", False)
    with pytest.raises(dengine.InvalidArgument, match="must sort after key"):
        range_bounds(b"b", b"b", False)
    with pytest.raises(dengine.InvalidArgument, match="not both"):
        range_bounds(b"p", b"q", True)
    with pytest.raises(dengine.InvalidArgument, match="key is empty"):
        range_bounds(b"", None, False)
    with pytest.raises(TypeError, match="prefix must be a bool"):
        range_bounds(b"p", None, b"p")


def test_bad_range_and_lease_arguments_fail_before_any_network_call():
    c = dengine.Client("127.0.0.1:1")
    with pytest.raises(dengine.InvalidArgument, match="limit must be 0"):
        c.range(b"a", b"z", limit=10_001)
    with pytest.raises(dengine.InvalidArgument, match="limit must be 0"):
        c.range(b"a", b"z", limit=-1)
    with pytest.raises(dengine.InvalidArgument, match="must sort after key"):
        c.delete_range(b"z", b"a")
    with pytest.raises(dengine.InvalidArgument, match="ttl or lease, not both"):
        c.put(b"k", b"v", ttl=1, lease=5)
    with pytest.raises(dengine.InvalidArgument, match="lease ttl"):
        c.lease_grant(0)
    with pytest.raises(dengine.InvalidArgument, match="lease ttl"):
        c.lease_grant(366 * 24 * 3600)
    with pytest.raises(TypeError, match="lease id must be an int"):
        c.lease_revoke("7")
    with pytest.raises(TypeError, match="compare must be a list"):
        c.txn(compare=Compare.version(b"k") == 1)
    c.close()


# -- Compare and Op builders -----------------------------------------------
def test_compare_builders():
    assert (Compare.value(b"k") == b"x") == Compare(b"k", "value", "==", b"x")
    assert (Compare.value("k") != "x") == Compare(b"k", "value", "!=", b"x")
    assert (Compare.version(b"k") > 3) == Compare(b"k", "version", ">", 3)
    assert (Compare.create_revision(b"k") == 0) == Compare(b"k", "create_revision", "==", 0)
    assert (Compare.mod_revision(b"k") < 10) == Compare(b"k", "mod_revision", "<", 10)
    assert (Compare.lease(b"k") == 7) == Compare(b"k", "lease", "==", 7)
    # reflected: `3 < x` is `x > 3`
    assert (3 < Compare.version(b"k")) == Compare(b"k", "version", ">", 3)
    assert (b"x" == Compare.value(b"k")) == Compare(b"k", "value", "==", b"x")


def test_compare_builders_refuse_what_the_server_cannot_do():
    with pytest.raises(TypeError, match=r"==, !=, < and >"):
        Compare.version(b"k") <= 3  # noqa: B015 - the comparison is the test
    with pytest.raises(TypeError, match=r"==, !=, < and >"):
        Compare.version(b"k") >= 3  # noqa: B015
    with pytest.raises(TypeError, match="needs a comparison"):
        bool(Compare.value(b"k"))
    with pytest.raises(TypeError, match="must be an int"):
        Compare.version(b"k") == b"3"  # noqa: B015
    with pytest.raises(TypeError, match="must be bytes or str"):
        Compare.value(b"k") == 3  # noqa: B015
    with pytest.raises(dengine.InvalidArgument, match="must be in 0..2"):
        Compare.mod_revision(b"k") > -1  # noqa: B015
    with pytest.raises(dengine.InvalidArgument, match="key is empty"):
        Compare.value(b"")
    with pytest.raises(dengine.InvalidArgument, match="unknown compare operator"):
        Compare(b"k", "version", ">=", 1)
    with pytest.raises(TypeError, match="needs a comparison"):
        txn_request([Compare.value(b"k")], [], [])


def test_compare_to_protobuf():
    c = compare_pb(Compare.value(b"k") != b"v")
    assert (c.key, c.op, c.WhichOneof("target"), c.value) == (b"k", pb.Compare.NOT_EQUAL, "value", b"v")
    c = compare_pb(Compare.version(b"k") == 0)
    assert (c.op, c.WhichOneof("target"), c.version) == (pb.Compare.EQUAL, "version", 0)
    c = compare_pb(Compare.lease(b"k") > 5)
    assert (c.op, c.WhichOneof("target"), c.lease) == (pb.Compare.GREATER, "lease", 5)
    c = compare_pb(Compare.create_revision(b"k") < 9)
    assert (c.op, c.WhichOneof("target"), c.create_revision) == (pb.Compare.LESS, "create_revision", 9)


def test_op_builders_and_protobuf():
    put = txn_op_pb(Op.put(b"k", "v", lease=9))
    assert put.WhichOneof("op") == "put" and (put.put.key, put.put.value, put.put.lease) == (b"k", b"v", 9)
    assert not put.put.HasField("write_id"), "ops inside a txn carry no write id"
    assert txn_op_pb(Op.put(b"k", b"v", ttl=1.5)).put.ttl_ms == 1500
    get = txn_op_pb(Op.get(b"k"))
    assert get.WhichOneof("op") == "range" and (get.range.key, get.range.range_end) == (b"k", b"")
    rng = txn_op_pb(Op.range(b"p/", prefix=True, limit=5, keys_only=True))
    assert (rng.range.key, rng.range.range_end, rng.range.limit, rng.range.keys_only) == (b"p/", b"p0", 5, True)
    assert txn_op_pb(Op.range(b"a", b"\0", count_only=True)).range.count_only
    dr = txn_op_pb(Op.delete_range(b"a", b"c", prev_kv=True))
    assert dr.WhichOneof("op") == "delete_range" and (dr.delete_range.range_end, dr.delete_range.prev_kv) == (
        b"c",
        True,
    )
    assert txn_op_pb(Op.delete(b"k")).delete_range == pb.DeleteRangeRequest(key=b"k")
    with pytest.raises(dengine.InvalidArgument, match="ttl or lease"):
        Op.put(b"k", b"v", lease=1, ttl=1)
    with pytest.raises(dengine.InvalidArgument, match="limits.max_value_bytes"):
        Op.put(b"k", b"v" * ((1 << 20) + 1))
    with pytest.raises(TypeError, match="Op values"):
        txn_request([], [pb.TxnOp()], [])


def test_txn_size_limits():
    ops = [Op.get(b"k%d" % i) for i in range(dengine.MAX_TXN_OPS)]
    cmps = [Compare.version(b"k%d" % i) > 0 for i in range(dengine.MAX_TXN_OPS)]
    req = txn_request(cmps, ops, ops)
    assert len(req.compare) == len(req.success) == len(req.failure) == 128
    with pytest.raises(dengine.InvalidArgument, match="at most 128"):
        txn_request(cmps + cmps[:1], [], [])
    with pytest.raises(dengine.InvalidArgument, match="success has 129"):
        txn_request([], ops + ops[:1], [])


# -- error mapping ---------------------------------------------------------
class _Err(grpc.RpcError):
    def __init__(self, status: grpc.Status):
        self._s = status

    def code(self):
        return self._s.code

    def details(self):
        return self._s.details

    def trailing_metadata(self):
        return self._s.trailing_metadata


def test_lease_not_found_is_mapped():
    err = error_from_rpc(
        _Err(coded_status(grpc.StatusCode.NOT_FOUND, "LEASE_NOT_FOUND", "lease 42 not found", lease_id="42")), "n1"
    )
    assert isinstance(err, dengine.LeaseNotFound) and isinstance(err, dengine.LeaseNotFoundError)
    assert err.code == "LEASE_NOT_FOUND" and err.lease_id == 42 and not err.retryable
    assert "lease 42 not found" in str(err)
    assert isinstance(error_for_code("LEASE_NOT_FOUND", "m"), dengine.LeaseNotFound)
    # the other NOT_FOUND of the API keeps its meaning
    other = error_from_rpc(_Err(coded_status(grpc.StatusCode.NOT_FOUND, "UNKNOWN_NODE", "node 9")), "n1")
    assert isinstance(other, dengine.UnknownNode)


# -- against the fake server -----------------------------------------------
@pytest.fixture
def fake():
    node = FakeNode(Store(page_max=3))
    yield node
    node.stop()


def test_range_pages_and_iterator_walk_every_key_once(fake: FakeNode):
    with dengine.Client(fake.addr) as c:
        for i in range(10):
            c.put(b"r/%02d" % i, b"v%d" % i)
        c.put(b"r0", b"outside the prefix")
        page = c.range(b"r/", prefix=True)
        assert [kv.key for kv in page.kvs] == [b"r/00", b"r/01", b"r/02"]
        assert page.more and page.next_key == b"r/03" and page.count == 10 and page.revision > 0
        nxt = c.range(page.next_key, dengine.prefix_end(b"r/"))
        assert [kv.key for kv in nxt.kvs] == [b"r/03", b"r/04", b"r/05"]
        assert [kv.key for kv in c.range_iter(b"r/", prefix=True)] == [b"r/%02d" % i for i in range(10)]
        assert [kv.key for kv in c.range_iter(b"r/", prefix=True, page_size=2)] == [b"r/%02d" % i for i in range(10)]
        assert len(c.scan_prefix(b"r/")) == 10, "scan_prefix walks every page"
        assert [kv.key for kv in c.scan_prefix(b"r/", limit=4)] == [b"r/00", b"r/01", b"r/02", b"r/03"]
        counted = c.range(b"r/", prefix=True, count_only=True)
        assert counted.count == 10 and counted.kvs == [] and not counted.more
        assert all(kv.value == b"" for kv in c.range(b"r/", prefix=True, keys_only=True).kvs)
        single = c.range(b"r/05")
        assert [kv.value for kv in single.kvs] == [b"v5"] and not single.more
        everything = [kv.key for kv in c.range_iter(b"", b"\0")]
        assert everything == sorted(everything) and len(everything) == 11
        d = c.delete_range(b"r/", prefix=True, prev_kv=True)
        assert d.deleted == 10 and [kv.key for kv in d.prev_kvs][:2] == [b"r/00", b"r/01"]
        assert c.range(b"r/", prefix=True).count == 0 and c.get(b"r0") is not None


def _put_value_txn():
    return (
        [Compare.value(b"t/k") == b"old"],
        [Op.put(b"t/k", b"new"), Op.get(b"t/k")],
        [Op.get(b"t/k")],
    )


def test_txn_branches_and_exactly_once_retry(fake: FakeNode):
    with dengine.Client(fake.addr, retry=dengine.RetryPolicy(deadline=5)) as c:
        r = c.txn(*_put_value_txn())
        assert not r.succeeded and len(r.results) == 1 and r.results[0].kvs == []
        c.put(b"t/k", b"old")
        fake.store.drop_next_txn_response = True  # applied, then the answer is lost: the client retries
        r = c.txn(*_put_value_txn())
        assert r.succeeded and r.replayed, "the retry is answered from the first application"
        assert isinstance(r.results[0], dengine.PutResult) and r.results[0].revision == r.revision
        assert c.get(b"t/k").version == 2, "applied once"
        txns = [w for w in fake.store.write_ids if w[0] == "txn"]
        assert len(txns) == 3 and txns[1][1:] == txns[2][1:], "the retry reused the write id"
        assert txns[0][1:] != txns[1][1:]


def test_lease_calls_and_put_with_lease(fake: FakeNode):
    with dengine.Client(fake.addr) as c:
        lid = c.lease_grant(5)
        c.put(b"l/a", b"1", lease=lid)
        c.put(b"l/b", b"2", lease=lid)
        assert c.get(b"l/a").lease == lid
        info = c.lease_time_to_live(lid, keys=True)
        assert info.id == lid and info.granted_ttl == 5 and 0 < info.remaining <= 5
        assert info.keys == [b"l/a", b"l/b"] and info.key_count == 2
        assert c.lease_renew(lid) == 5
        assert [(s.id, s.granted_ttl) for s in c.lease_list()] == [(lid, 5)]
        assert c.lease_revoke(lid) == 2 and c.get(b"l/a") is None
        with pytest.raises(dengine.LeaseNotFound) as e:
            c.lease_revoke(lid)
        assert e.value.lease_id == lid
        with pytest.raises(dengine.LeaseNotFound):
            c.put(b"l/c", b"3", lease=lid)


def test_keepalive_keeps_the_lease_past_its_ttl_and_reports_loss(fake: FakeNode):
    lost = []
    with dengine.Client(fake.addr) as c, c.lease(0.3, on_lost=lost.append) as lease:
        c.put(b"ka/k", b"v", lease=lease.id)
        time.sleep(1.0)
        assert lease.alive and not lease.lost.is_set()
        assert c.get(b"ka/k") is not None, "kept alive past 3 TTLs"
        assert fake.store.keepalives >= 3
        c.lease_revoke(lease.id)  # as another process would
        assert lease.lost.wait(2), "the helper notices the revoke"
        assert isinstance(lease.error, dengine.LeaseNotFound) and lost == [lease.error]
        assert not lease.alive
    # leaving the block revoked nothing more and raised nothing (the lease was gone)


def test_keepalive_with_block_revokes_and_follows_the_leader(fake: FakeNode):
    follower = FakeNode(fake.store, leader_addr=fake.addr)
    try:
        with dengine.Client(follower.addr) as c:
            with c.lease(0.3) as lease:
                c.put(b"w/k", b"v", lease=lease.id)
                time.sleep(0.8)
                assert lease.alive and c.get(b"w/k") is not None
            assert not lease.lost.is_set(), "a revoke on exit is not a loss"
            assert c.get(b"w/k") is None and c.lease_list() == []
    finally:
        follower.stop()


def test_keepalive_reports_loss_when_no_renewal_lands_within_the_ttl():
    node = FakeNode()
    lost = threading.Event()
    with dengine.Client(node.addr, timeout=0.2) as c:
        lease = c.lease(0.6, on_lost=lambda e: lost.set())
        node.stop()  # the cluster goes away
        t0 = time.monotonic()
        assert lost.wait(3)
        assert isinstance(lease.error, dengine.Timeout) and "within its TTL" in str(lease.error)
        assert time.monotonic() - t0 < 1.5
        lease.stop()


async def test_async_range_txn_and_lease(fake: FakeNode):
    async with dengine.AsyncClient(fake.addr) as c:
        await asyncio.gather(*(c.put(b"a/%02d" % i, b"x") for i in range(8)))
        page = await c.range(b"a/", prefix=True)
        assert len(page.kvs) == 3 and page.more and page.count == 8
        assert [kv.key async for kv in c.range_iter(b"a/", prefix=True)] == [b"a/%02d" % i for i in range(8)]
        assert len(await c.scan_prefix(b"a/")) == 8
        assert (await c.delete_range(b"a/00", b"a/04")).deleted == 4
        fake.store.drop_next_txn_response = True
        r = await c.txn([Compare.create_revision(b"a/k") == 0], [Op.put(b"a/k", b"1")], [])
        assert r.succeeded and r.replayed and (await c.get(b"a/k")).version == 1
        r = await c.txn([Compare.create_revision(b"a/k") == 0], [Op.put(b"a/k", b"1")], [Op.get(b"a/k")])
        assert not r.succeeded and r.results[0].kvs[0].value == b"1" and not r.replayed

        lost = []

        async def on_lost(err):
            lost.append(err)

        async with c.lease(0.3, on_lost=on_lost) as lease:
            await c.put(b"a/leased", b"v", lease=lease.id)
            await asyncio.sleep(1.0)
            assert lease.alive and (await c.get(b"a/leased")) is not None
            assert (await c.lease_time_to_live(lease.id)).key_count == 1
            await c.lease_revoke(lease.id)
            await asyncio.wait_for(lease.lost.wait(), 2)
            assert isinstance(lease.error, dengine.LeaseNotFound) and lost == [lease.error]
        lease2 = await c.lease(5)
        assert lease2.alive and [s.id for s in await c.lease_list()] == [lease2.id]
        assert await lease2.revoke() == 0 and await c.lease_list() == []


def test_keepalive_stream_carries_the_credentials(fake: FakeNode):
    with dengine.Client(fake.addr, token="s3cret") as c:
        with c.lease(0.3) as lease:
            time.sleep(0.3)
            assert lease.alive
    assert fake.store.keepalive_auth and set(fake.store.keepalive_auth) == {"Bearer s3cret"}


async def test_async_keepalive_stream_carries_the_credentials(fake: FakeNode):
    async with dengine.AsyncClient(fake.addr, token="s3cret") as c:
        async with c.lease(0.3) as lease:
            await asyncio.sleep(0.3)
            assert lease.alive and fake.store.keepalives >= 1
    assert fake.store.keepalive_auth and set(fake.store.keepalive_auth) == {"Bearer s3cret"}


async def test_async_keepalive_follows_the_leader_then_reports_a_silent_cluster():
    leader = FakeNode()
    follower = FakeNode(leader.store, leader_addr=leader.addr)
    try:
        async with dengine.AsyncClient(follower.addr, timeout=0.2) as c:
            lease = await c.lease(0.6)
            await asyncio.sleep(1.2)
            assert lease.alive and leader.store.keepalives >= 3
            leader.stop()
            follower.stop()
            await asyncio.wait_for(lease.lost.wait(), 3)
            assert isinstance(lease.error, dengine.Timeout)
            await lease.stop()
    finally:
        leader.stop()
        follower.stop()


async def test_range_iter_checks_its_arguments_at_the_call():
    c = dengine.Client("127.0.0.1:1")
    with pytest.raises(dengine.InvalidArgument, match="must sort after key"):
        c.range_iter(b"z", b"a")
    c.close()
    ac = dengine.AsyncClient("127.0.0.1:1")
    with pytest.raises(dengine.InvalidArgument, match="limit must be 0"):
        ac.range_iter(b"a", prefix=True, page_size=20_000)
    await ac.close()


def test_keepalive_reports_loss_when_the_leader_stops_answering(fake: FakeNode):
    with dengine.Client(fake.addr, timeout=5.0) as c:
        lease = c.lease(0.6)
        time.sleep(0.5)
        fake.store.stall_keepalives = True
        t0 = time.monotonic()
        assert lease.lost.wait(3)
        assert isinstance(lease.error, dengine.Timeout) and time.monotonic() - t0 < 1.2
        lease.stop()


async def test_async_keepalive_reports_loss_when_the_leader_stops_answering(fake: FakeNode):
    async with dengine.AsyncClient(fake.addr, timeout=5.0) as c:
        lease = await c.lease(0.6)
        await asyncio.sleep(0.5)
        fake.store.stall_keepalives = True
        t0 = time.monotonic()
        await asyncio.wait_for(lease.lost.wait(), 3)
        assert isinstance(lease.error, dengine.Timeout) and time.monotonic() - t0 < 1.2
        await lease.stop()
