"""Unit tests (in-process scripted gRPC servers) of the watch resume rule,
the typed watch end, the watch options on the wire, Timeout failover with
one write id, and the Python row of docs/clients.md's error table."""

from __future__ import annotations

import re
import threading
import time
from concurrent import futures
from typing import Callable, Iterator, List

import grpc
import pytest
from fake_server import coded_status

import d_engine as dengine
from d_engine import _codec as codec
from d_engine import _watch
from d_engine._proto.dengine.v1 import client_pb2 as pb
from d_engine._proto.dengine.v1 import client_pb2_grpc as rpc

Script = Callable[[pb.WatchRequest, grpc.ServicerContext], Iterator[pb.WatchResponse]]


def created(rev: int) -> pb.WatchResponse:
    return pb.WatchResponse(created=True, header=pb.ResponseHeader(revision=rev))


def put(key: str, rev: int, prev: bytes | None = None) -> pb.WatchEvent:
    ev = pb.WatchEvent(type=pb.PUT, kv=pb.KeyValue(key=key.encode(), value=b"v", mod_revision=rev))
    if prev is not None:
        ev.prev_kv.CopyFrom(pb.KeyValue(key=key.encode(), value=prev, mod_revision=rev - 1))
    return ev


def events(*evs: pb.WatchEvent) -> pb.WatchResponse:
    return pb.WatchResponse(events=list(evs))


def cancel(code: int, reason: str = "text never decides", resume: int = 0, compact: int = 0) -> pb.WatchResponse:
    return pb.WatchResponse(
        canceled=True, cancel_code=code, cancel_reason=reason, resume_revision=resume, compact_revision=compact
    )


class _WatchKv(rpc.KvServicer):
    """Plays one script per Watch call (the last one repeats) and records the requests."""

    def __init__(self, scripts: List[Script]):
        self.scripts = scripts
        self.requests: List[pb.WatchRequest] = []
        self.lock = threading.Lock()

    def Watch(self, request, context):
        with self.lock:
            n = len(self.requests)
            self.requests.append(request)
            script = self.scripts[min(n, len(self.scripts) - 1)]
        yield from script(request, context)


def _serve(servicer: rpc.KvServicer):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rpc.add_KvServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _resume_scripts() -> List[Script]:
    def first(req, ctx):
        yield created(10)
        yield events(put("k", 11))
        # 12..14 filtered on the server: it says resume at 15.
        yield cancel(pb.SHUTTING_DOWN, resume=15)

    def broken(req, ctx):
        yield created(20)
        yield events(put("k", 14), put("k", 15))  # 14 is below the resume point: a duplicate
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "node killed")

    def refused(req, ctx):
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "connection refused")
        yield  # pragma: no cover

    def last(req, ctx):
        yield created(30)
        yield events(put("k", 16), put("t", 16))  # one txn: two events of one revision
        yield cancel(pb.COMPACTED, reason="SHUTTING_DOWN: misleading", resume=17, compact=25)

    # More refusals than a retry deadline's worth of attempts: retry until cancelled.
    return [first, broken] + [refused] * 8 + [last]


def test_watch_resumes_and_ends_typed_from_cancel_code():
    kv = _WatchKv(_resume_scripts())
    srv, addr = _serve(kv)
    try:
        with dengine.Client(addr, retry=dengine.RetryPolicy(deadline=0.2)) as c:
            w = c.watch(b"k")
            got = []
            with pytest.raises(dengine.Compacted) as info:
                for ev in w:
                    got.append((ev.kv.key, ev.revision))
        assert got == [(b"k", 11), (b"k", 15), (b"k", 16), (b"t", 16)]
        assert info.value.compact_revision == 25 and info.value.resume_revision == 17
        starts = [r.start_revision for r in kv.requests]
        assert starts[:3] == [0, 15, 16] and set(starts[2:]) == {16}
    finally:
        srv.stop(0)


async def test_async_watch_resumes_and_ends_typed_from_cancel_code():
    kv = _WatchKv(_resume_scripts())
    srv, addr = _serve(kv)
    try:
        async with dengine.AsyncClient(addr, retry=dengine.RetryPolicy(deadline=0.2)) as c:
            w = await c.watch(b"k")
            got = []
            with pytest.raises(dengine.Compacted) as info:
                async for ev in w:
                    got.append((ev.kv.key, ev.revision))
        assert got == [(b"k", 11), (b"k", 15), (b"k", 16), (b"t", 16)]
        assert info.value.compact_revision == 25 and info.value.resume_revision == 17
    finally:
        srv.stop(0)


def test_overloaded_cancel_ends_the_watch_without_resuming():
    def slow(req, ctx):
        yield created(1)
        yield events(put("k", 2))
        yield cancel(pb.OVERLOADED, reason="watcher too slow")

    kv = _WatchKv([slow])
    srv, addr = _serve(kv)
    try:
        with dengine.Client(addr) as c:
            w = c.watch(b"k")
            assert next(w).revision == 2
            with pytest.raises(dengine.Overloaded) as info:
                next(w)
        assert info.value.resume_revision == 3
        assert len(kv.requests) == 1, "a slow consumer's watch is not re-created"
    finally:
        srv.stop(0)


def test_resume_timeout_bounds_retry_until_cancelled():
    def first(req, ctx):
        yield created(1)
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "node killed")

    def refused(req, ctx):
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "connection refused")
        yield  # pragma: no cover

    srv, addr = _serve(_WatchKv([first, refused]))
    try:
        with dengine.Client(addr, retry=dengine.RetryPolicy(deadline=0.1)) as c:
            w = c.watch(b"k", resume_timeout=0.5)
            t0 = time.monotonic()
            with pytest.raises(dengine.Unavailable) as info:
                next(w)
            assert 0.4 < time.monotonic() - t0 < 5
        assert info.value.resume_revision == 2
    finally:
        srv.stop(0)


def test_watch_options_travel_and_prev_kv_and_progress_arrive():
    def script(req, ctx):
        yield created(7)
        yield events(put("a/1", 8, prev=b"old"))
        yield pb.WatchResponse(progress=True, header=pb.ResponseHeader(revision=12))

    kv = _WatchKv([script])
    srv, addr = _serve(kv)
    try:
        with dengine.Client(addr) as c:
            with c.watch(b"a/", 4, range_end=b"b", prev_kv=True, progress_notify=True, filters=["no_delete"]) as w:
                ev = next(w)
                assert ev.prev_kv is not None and ev.prev_kv.value == b"old" and not ev.is_progress
                p = next(w)
                assert p.is_progress and p.revision == 12 and w.resume_revision == 13
        r = kv.requests[0]
        assert (r.key, r.range_end, r.prefix, r.prev_kv, r.progress_notify) == (b"a/", b"b", False, True, True)
        assert list(r.filters) == [pb.NO_DELETE] and r.start_revision == 4
    finally:
        srv.stop(0)


def test_watch_argument_errors_name_the_argument():
    with dengine.Client("127.0.0.1:1") as c:
        with pytest.raises(dengine.InvalidArgument, match="filter"):
            c.watch(b"k", filters=["no_such"])
        with pytest.raises(dengine.InvalidArgument, match="range_end"):
            c.watch(b"b", range_end=b"a")
        with pytest.raises(dengine.InvalidArgument, match="resume_timeout"):
            c.watch(b"k", resume_timeout=-1)
        with pytest.raises(dengine.InvalidArgument, match="start_revision"):
            c.watch(b"k", -3)


class _HungThenOk(rpc.KvServicer):
    """A 'paused' node: never answers within the attempt timeout."""

    def __init__(self, hang: bool):
        self.hang = hang
        self.write_ids: List[tuple] = []

    def Put(self, request, context):
        self.write_ids.append((request.write_id.client_id, request.write_id.seq))
        if self.hang:
            time.sleep(2.0)
        return pb.PutResponse(revision=9)

    def Get(self, request, context):
        if self.hang:
            time.sleep(2.0)
        return pb.GetResponse(kv=pb.KeyValue(key=request.key, value=b"v", mod_revision=9))


@pytest.mark.parametrize("aio", [False, True])
async def test_timeout_fails_over_with_the_same_write_id(aio):
    hung, ok = _HungThenOk(True), _HungThenOk(False)
    hung_srv, hung_addr = _serve(hung)
    ok_srv, ok_addr = _serve(ok)
    try:
        policy = dengine.RetryPolicy(deadline=5.0)
        if aio:
            async with dengine.AsyncClient([hung_addr, ok_addr], timeout=0.3, retry=policy) as ac:
                ac._router._next = 0  # start on the hung node
                assert await ac.put(b"k", b"v") == 9
                ac._router.leader = hung_addr
                assert (await ac.get(b"k")).value == b"v"
        else:
            with dengine.Client([hung_addr, ok_addr], timeout=0.3, retry=policy) as c:
                c._router._next = 0
                assert c.put(b"k", b"v") == 9
                c._router.leader = hung_addr
                assert c.get(b"k").value == b"v"
        assert hung.write_ids and ok.write_ids and set(hung.write_ids) == set(ok.write_ids), "one write id"
    finally:
        hung_srv.stop(0)
        ok_srv.stop(0)


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers=()):
        self._code, self._details, self._trailers = code, details, trailers

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def _server_error(code: grpc.StatusCode, reason: str) -> _FakeRpcError:
    st = coded_status(code, reason, "m")
    return _FakeRpcError(code, "m", st.trailing_metadata)


# The Python row of docs/clients.md's error table: a server ErrorCode → class, retried?
SERVER_CODES = [
    ("NOT_LEADER", grpc.StatusCode.UNAVAILABLE, dengine.NotLeader, True),
    ("NO_LEADER", grpc.StatusCode.UNAVAILABLE, dengine.NoLeader, True),
    ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, dengine.InvalidArgument, False),
    ("OVERLOADED", grpc.StatusCode.RESOURCE_EXHAUSTED, dengine.Overloaded, True),
    ("TIMEOUT", grpc.StatusCode.DEADLINE_EXCEEDED, dengine.Timeout, True),
    ("SHUTTING_DOWN", grpc.StatusCode.UNAVAILABLE, dengine.ShuttingDown, True),
    ("STORAGE", grpc.StatusCode.INTERNAL, dengine.StorageError, False),
    ("CHANGE_IN_PROGRESS", grpc.StatusCode.FAILED_PRECONDITION, dengine.ChangeInProgress, True),
    ("COMPACTED", grpc.StatusCode.OUT_OF_RANGE, dengine.Compacted, False),
    ("UNAUTHENTICATED", grpc.StatusCode.UNAUTHENTICATED, dengine.Unauthenticated, False),
    ("PERMISSION_DENIED", grpc.StatusCode.PERMISSION_DENIED, dengine.PermissionDenied, False),
    ("UNKNOWN_NODE", grpc.StatusCode.NOT_FOUND, dengine.UnknownNode, False),
    ("NO_SPACE", grpc.StatusCode.RESOURCE_EXHAUSTED, dengine.NoSpace, False),
    ("LEASE_NOT_FOUND", grpc.StatusCode.NOT_FOUND, dengine.LeaseNotFound, False),
    ("NOT_HELD", grpc.StatusCode.FAILED_PRECONDITION, dengine.NotHeld, False),
]


def test_the_table_covers_every_error_code():
    assert {r[0] for r in SERVER_CODES} == set(pb.ErrorCode.keys()) - {"ERROR_CODE_UNSPECIFIED"}


@pytest.mark.parametrize("reason,status,cls,retried", SERVER_CODES, ids=[r[0] for r in SERVER_CODES])
def test_server_error_row(reason, status, cls, retried):
    err = codec.error_from_rpc(_server_error(status, reason), "n1")
    assert type(err) is cls and err.code == reason and err.retryable is retried
    # The same code as a watch cancel: resumes only on the "node going away" codes.
    werr = _watch.cancel_error(cancel(pb.ErrorCode.Value(reason)))
    assert type(werr) is cls
    assert _watch.cancel_resumable(werr) is (
        reason in ("NOT_LEADER", "NO_LEADER", "TIMEOUT", "SHUTTING_DOWN", "CHANGE_IN_PROGRESS")
    )


TRANSPORT = [
    # status, details, class, call retried, watch resumes
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", dengine.Unavailable, True, True),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", dengine.Timeout, True, True),
    (grpc.StatusCode.CANCELLED, "Timeout expired", dengine.Unavailable, True, True),
    (grpc.StatusCode.INTERNAL, "RST_STREAM", dengine.Error, False, True),
    (grpc.StatusCode.UNKNOWN, "connection reset", dengine.Error, False, True),
    (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Received message larger than max (9 vs. 4)",
        dengine.InvalidArgument,
        False,
        False,
    ),
    (grpc.StatusCode.OUT_OF_RANGE, "decoded message length too large", dengine.InvalidArgument, False, False),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", dengine.Overloaded, True, False),
    (grpc.StatusCode.UNAUTHENTICATED, "no token", dengine.Unauthenticated, False, False),
]


@pytest.mark.parametrize(
    "status,details,cls,retried,resumes", TRANSPORT, ids=[f"{t[0].name}:{t[1]}" for t in TRANSPORT]
)
def test_transport_failure_row(status, details, cls, retried, resumes):
    e = _FakeRpcError(status, details)
    err = codec.error_from_rpc(e, "n1")
    assert type(err) is cls and err.retryable is retried
    assert _watch.rpc_break_resumable(e, err) is resumes


def test_watch_cancel_without_code_reads_the_reason_name():
    assert isinstance(
        _watch.cancel_error(pb.WatchResponse(canceled=True, cancel_reason="SHUTTING_DOWN: bye")), dengine.ShuttingDown
    )
    plain = _watch.cancel_error(pb.WatchResponse(canceled=True, cancel_reason="watcher too slow"))
    assert type(plain) is dengine.WatchCanceled


def test_keepalive_and_channel_options():
    from d_engine._routing import channel_options

    opts = dict(channel_options(100, [("grpc.keepalive_time_ms", 2000), ("grpc.primary_user_agent", "x")]))
    assert opts["grpc.keepalive_time_ms"] == 2000 and opts["grpc.keepalive_timeout_ms"] == 5000
    assert opts["grpc.primary_user_agent"] == "x" and opts["grpc.max_receive_message_length"] == 100
    with pytest.raises(TypeError, match="channel_options"):
        dengine.Client("127.0.0.1:1", channel_options=["bad"])


def test_router_never_rotates_straight_back_to_the_failed_node():
    from d_engine._routing import Router

    r = Router(["a:1", "b:1", "c:1"])
    r.leader, r._next = "b:1", 0
    r.failed("b:1", dengine.Timeout("paused"))
    assert r.leader is None and r.target(True) != "b:1"
    r.failed("a:1", dengine.Unavailable("down"))
    assert r.target(True) not in ("a:1",)


def test_watch_resumes_inside_a_revision_the_server_cut():
    def first(req, ctx):
        yield created(4)
        yield events(put("a", 5), put("t1", 6))
        yield cancel(pb.SHUTTING_DOWN, resume=6)  # revision 6 (a txn) was cut after t1

    def second(req, ctx):
        yield created(9)
        yield events(put("t1", 6), put("t2", 6), put("b", 7))
        time.sleep(5)

    kv = _WatchKv([first, second])
    srv, addr = _serve(kv)
    try:
        with dengine.Client(addr) as c:
            with c.watch(b"a", range_end=b"\0") as w:
                got = [next(w).kv.key for _ in range(4)]
        assert got == [b"a", b"t1", b"t2", b"b"]
        assert [r.start_revision for r in kv.requests] == [0, 6]
    finally:
        srv.stop(0)


def _doc_error_table():
    """docs/clients.md's error table as (first cell, Python cell, retried cell) rows."""
    from cluster import REPO

    text = (REPO / "docs" / "clients.md").read_text()
    section = text[text.index("## The error table") :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break  # the end of the first table of the section
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    header = rows[0]
    py, retried = header.index("Python class"), header.index("retried")
    return [(r[0], r[py], r[retried]) for r in rows[2:] if len(r) == len(header)]


def _first_name(cell: str) -> str:
    m = re.search(r"`([A-Za-z_.]+)", cell)
    assert m, f"no `Name` in {cell!r}"
    return m.group(1)


def test_error_table_python_column_is_what_the_client_does():
    """Every server-code row of docs/clients.md names the class the client
    raises and says "retried" exactly when the client retries it."""
    rows = {r[0].split()[0].strip("`"): r for r in _doc_error_table() if r[0].startswith("`")}
    for reason, _status, cls, retried in SERVER_CODES:
        assert reason in rows, f"docs/clients.md's error table has no row for {reason}"
        _, py_cell, retried_cell = rows[reason]
        assert _first_name(py_cell) == cls.__name__, f"{reason}: docs say {py_cell!r}, the client raises {cls.__name__}"
        assert retried_cell.startswith("yes" if retried else "no"), f"{reason}: docs say retried = {retried_cell!r}"


def test_closed_client_row():
    c = dengine.Client("127.0.0.1:1")
    c.close()
    with pytest.raises(dengine.ClientClosed) as info:
        c.get(b"k")
    assert info.value.code == "CLOSED" and not info.value.retryable
    rows = [r for r in _doc_error_table() if r[0].startswith("the client was closed")]
    assert rows and _first_name(rows[0][1]) == "ClientClosed" and rows[0][2].startswith("no")


async def test_closed_async_client_row():
    c = dengine.AsyncClient("127.0.0.1:1")
    await c.close()
    with pytest.raises(dengine.ClientClosed):
        await c.get(b"k")
