"""Client behaviour that needs no d-engine server: argument checking,
endpoint parsing, error decoding, and NotLeader redirects + exactly-once
write ids against two scripted in-process gRPC servers."""

from __future__ import annotations

from concurrent import futures

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import d_engine as dengine
from d_engine._codec import parse_endpoints
from d_engine._proto.dengine.v1 import client_pb2 as pb
from d_engine._proto.dengine.v1 import client_pb2_grpc as rpc


def test_endpoints_accept_common_forms():
    assert parse_endpoints("127.0.0.1:9083") == ["127.0.0.1:9083"]
    assert parse_endpoints("http://localhost:9083") == ["localhost:9083"]
    assert parse_endpoints(["a:1", "b:2"]) == ["a:1", "b:2"]
    assert parse_endpoints("a:1,b:2") == ["a:1", "b:2"]
    # No port: the client port every client defaults to.
    assert parse_endpoints("db1") == ["db1:9083"]
    assert parse_endpoints("https://[::1]/") == ["[::1]:9083"]


@pytest.mark.parametrize("bad", ["", "a b", "host:", "host:99999", "host:0", "a:b:c", 9083, [1]])
def test_malformed_endpoints_are_rejected_with_a_clear_error(bad):
    with pytest.raises(dengine.InvalidArgument, match="endpoint"):
        dengine.Client(bad)


def test_bad_keys_and_values_fail_before_any_network_call():
    c = dengine.Client("127.0.0.1:1")
    with pytest.raises(TypeError, match="key must be bytes or str, not int"):
        c.put(1, b"v")
    with pytest.raises(dengine.InvalidArgument, match="key is empty"):
        c.put(b"", b"v")
    with pytest.raises(dengine.InvalidArgument, match="limit is 4096"):
        c.get(b"k" * 4097)
    with pytest.raises(dengine.InvalidArgument, match="limits.max_value_bytes"):
        c.put(b"k", b"v" * ((1 << 20) + 1))
    with pytest.raises(dengine.InvalidArgument, match="unknown consistency"):
        c.get(b"k", consistency="strong")
    with pytest.raises(dengine.InvalidArgument, match="ttl"):
        c.put(b"k", b"v", ttl=-1)
    c.close()
    with pytest.raises(dengine.ClientClosed):
        c.put(b"k", b"v")


def _not_leader_status(leader_id: int, leader_addr: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason="NOT_LEADER", domain="d-engine", metadata={"leader_id": str(leader_id), "leader_addr": leader_addr}
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    st = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="not the leader", details=[detail])

    class _S(grpc.Status):
        code = grpc.StatusCode.UNAVAILABLE
        details = st.message
        trailing_metadata = (("grpc-status-details-bin", st.SerializeToString()),)

    return _S()


def _coded_status(code: grpc.StatusCode, rpc_code: int, reason: str, message: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="d-engine")
    detail = any_pb2.Any()
    detail.Pack(info)
    st = status_pb2.Status(code=rpc_code, message=message, details=[detail])

    class _S(grpc.Status):
        pass

    _S.code = code
    _S.details = message
    _S.trailing_metadata = (("grpc-status-details-bin", st.SerializeToString()),)
    return _S()


class _QuotaKv(rpc.KvServicer):
    """A node at its storage quota: every put fails with NO_SPACE."""

    def __init__(self):
        self.puts = 0

    def Put(self, request, context):
        self.puts += 1
        context.abort_with_status(
            _coded_status(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                code_pb2.RESOURCE_EXHAUSTED,
                "NO_SPACE",
                "node 1 stores 4000 bytes of data and its quota is storage.quota_bytes = 4096 bytes",
            )
        )


def test_no_space_is_classified_and_not_retried():
    assert isinstance(dengine._errors.error_for_code("NO_SPACE", "m"), dengine.NoSpace)
    servicer = _QuotaKv()
    srv, addr = _serve(servicer)
    try:
        with dengine.Client(addr, retry=dengine.RetryPolicy(deadline=5.0)) as c:
            with pytest.raises(dengine.NoSpace, match="storage.quota_bytes") as info:
                c.put(b"k", b"v")
        assert info.value.code == "NO_SPACE"
        assert not info.value.retryable
        assert not isinstance(info.value, dengine.Overloaded), "not the retryable OVERLOADED"
        assert servicer.puts == 1, "NO_SPACE is not retried"
    finally:
        srv.stop(0)


class _ScriptedKv(rpc.KvServicer):
    """Follower: always NOT_LEADER pointing at `leader_addr`; leader: stores puts,
    failing the first `fail_first` attempts with UNAVAILABLE."""

    def __init__(self, leader_addr: str | None, fail_first: int = 0):
        self.leader_addr = leader_addr
        self.fail_first = fail_first
        self.write_ids: list[tuple[int, int]] = []
        self.store: dict[bytes, bytes] = {}

    def Put(self, request, context):
        self.write_ids.append((request.write_id.client_id, request.write_id.seq))
        if self.leader_addr is not None:
            context.abort_with_status(_not_leader_status(1, self.leader_addr))
        if self.fail_first > 0:
            self.fail_first -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "leader busy")
        self.store[request.key] = request.value
        return pb.PutResponse(revision=len(self.store))

    def Get(self, request, context):
        if self.leader_addr is not None:
            context.abort_with_status(_not_leader_status(1, self.leader_addr))
        if request.key in self.store:
            return pb.GetResponse(kv=pb.KeyValue(key=request.key, value=self.store[request.key], version=1))
        return pb.GetResponse()


def _serve(servicer):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_KvServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_follows_not_leader_hint_and_reuses_write_id_across_retries():
    leader = _ScriptedKv(None, fail_first=2)
    leader_srv, leader_addr = _serve(leader)
    follower = _ScriptedKv(leader_addr)
    follower_srv, follower_addr = _serve(follower)
    try:
        with dengine.Client([follower_addr], retry=dengine.RetryPolicy(deadline=5.0)) as c:
            assert c.put(b"k", "v") == 1
            assert c.get("k").value == b"v"
            assert c.get(b"missing") is None
        # one logical write: the follower saw it once, the leader three times, all with one id
        ids = set(follower.write_ids) | set(leader.write_ids)
        assert len(ids) == 1 and len(leader.write_ids) == 3
    finally:
        leader_srv.stop(0)
        follower_srv.stop(0)


def test_not_leader_details_are_decoded():
    follower_srv, follower_addr = _serve(_ScriptedKv("10.9.9.9:1"))
    try:
        with dengine.Client(follower_addr, retry=dengine.RetryPolicy(deadline=0.0)) as c:
            with pytest.raises(dengine.NotLeader) as info:
                c.put(b"k", b"v")
        assert info.value.leader_id == 1 and info.value.leader_addr == "10.9.9.9:1"
        assert info.value.retryable
    finally:
        follower_srv.stop(0)


def test_unreachable_endpoint_gives_unavailable_within_the_deadline():
    c = dengine.Client("127.0.0.1:1", timeout=0.2, retry=dengine.RetryPolicy(deadline=0.5))
    with pytest.raises(dengine.Unavailable):
        c.put(b"k", b"v")


async def test_async_client_follows_redirects():
    leader = _ScriptedKv(None, fail_first=1)
    leader_srv, leader_addr = _serve(leader)
    follower_srv, follower_addr = _serve(_ScriptedKv(leader_addr))
    try:
        async with dengine.AsyncClient(follower_addr) as c:
            assert await c.put("k", b"v") == 1
            kv = await c.get(b"k")
            assert kv is not None and kv.value == b"v"
    finally:
        leader_srv.stop(0)
        follower_srv.stop(0)


@pytest.mark.parametrize("follow", [True, False])
def test_leader_hints_outside_the_endpoints_are_followed_only_when_asked(follow):
    """A follower's NOT_LEADER hint names an address the client was not given
    (as behind NAT or port forwarding): followed by default; with
    ``follow_hints_outside_endpoints=False`` the client tries its next
    endpoint instead and never dials the hinted address."""
    hidden = _ScriptedKv(None)
    hidden_srv, hidden_addr = _serve(hidden)
    listed = _ScriptedKv(None)
    listed_srv, listed_addr = _serve(listed)
    follower_srv, follower_addr = _serve(_ScriptedKv(hidden_addr))
    try:
        with dengine.Client(
            [follower_addr, listed_addr],
            retry=dengine.RetryPolicy(deadline=5.0),
            follow_hints_outside_endpoints=follow,
        ) as c:
            assert c.put(b"k", b"v") == 1
        if follow:
            assert hidden.write_ids and not listed.write_ids
        else:
            assert listed.write_ids and not hidden.write_ids, "the unlisted address was dialled"
    finally:
        for s in (hidden_srv, listed_srv, follower_srv):
            s.stop(0)


async def test_async_client_does_not_follow_unlisted_hints_when_asked():
    hidden = _ScriptedKv(None)
    hidden_srv, hidden_addr = _serve(hidden)
    listed = _ScriptedKv(None)
    listed_srv, listed_addr = _serve(listed)
    follower_srv, follower_addr = _serve(_ScriptedKv(hidden_addr))
    try:
        async with dengine.AsyncClient([follower_addr, listed_addr], follow_hints_outside_endpoints=False) as c:
            assert await c.put(b"k", b"v") == 1
        assert listed.write_ids and not hidden.write_ids
    finally:
        for s in (hidden_srv, listed_srv, follower_srv):
            s.stop(0)


def test_a_listed_hint_is_followed_even_when_unlisted_ones_are_not():
    leader = _ScriptedKv(None)
    leader_srv, leader_addr = _serve(leader)
    follower_srv, follower_addr = _serve(_ScriptedKv(leader_addr))
    try:
        from d_engine._routing import Router

        r = Router([follower_addr, leader_addr], follow_hints_outside_endpoints=False)
        r.failed(follower_addr, dengine.NotLeader("m", leader_id=2, leader_addr=leader_addr))
        assert r.leader == leader_addr
        r.failed(follower_addr, dengine.NotLeader("m", leader_id=3, leader_addr="10.0.0.9:9083"))
        assert r.leader is None
        with pytest.raises(TypeError, match="follow_hints_outside_endpoints"):
            dengine.Client(follower_addr, follow_hints_outside_endpoints="no")  # type: ignore[arg-type]
    finally:
        leader_srv.stop(0)
        follower_srv.stop(0)


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Records each call's method and whether it already carried credentials."""

    def __init__(self):
        self.calls: list[tuple[str, bool]] = []

    def _note(self, details):
        md = dict(details.metadata or ())
        self.calls.append((details.method, "authorization" in md))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        self._note(client_call_details)
        return continuation(client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        self._note(client_call_details)
        return continuation(client_call_details, request)


class _AioRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.calls: list[str] = []

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls.append(client_call_details.method)
        return await continuation(client_call_details, request)


def test_interceptors_see_every_call_before_the_credentials_header():
    leader = _ScriptedKv(None)
    srv, addr = _serve(leader)
    rec = _Recorder()
    try:
        with dengine.Client(addr, interceptors=[rec], token="t0k") as c:
            c.put(b"k", b"v")
            assert c.get(b"k").value == b"v"
        methods = [m if isinstance(m, str) else m.decode() for m, _ in rec.calls]
        assert methods == ["/dengine.v1.Kv/Put", "/dengine.v1.Kv/Get"]
        assert not any(auth for _, auth in rec.calls), "the caller's interceptors run before the auth header"
    finally:
        srv.stop(0)


async def test_async_client_takes_aio_interceptors():
    srv, addr = _serve(_ScriptedKv(None))
    rec = _AioRecorder()
    try:
        async with dengine.AsyncClient(addr, interceptors=[rec]) as c:
            await c.put(b"k", b"v")
            await c.get(b"k")
        methods = [m if isinstance(m, str) else m.decode() for m in rec.calls]
        assert methods == ["/dengine.v1.Kv/Put", "/dengine.v1.Kv/Get"]
    finally:
        srv.stop(0)


def test_bad_interceptors_are_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"interceptors\[0\]"):
        dengine.Client("127.0.0.1:1", interceptors=[object()])
    with pytest.raises(TypeError, match=r"interceptors\[0\]"):
        dengine.AsyncClient("127.0.0.1:1", interceptors=[_Recorder()])  # sync interceptors on grpc.aio
    with pytest.raises(TypeError, match="interceptors must be a list"):
        dengine.Client("127.0.0.1:1", interceptors=_Recorder())  # type: ignore[arg-type]
