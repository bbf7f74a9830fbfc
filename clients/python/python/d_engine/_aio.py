"""The asyncio gRPC client (``grpc.aio``), mirroring :class:`d_engine.Client`."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc
import grpc.aio

from . import _auth
from . import _codec as codec
from ._admin import AsyncAdminMixin
from ._client import _AttemptTimedOut, _cas_request, _limit, _needs_leader
from ._codec import BytesLike, Endpoints
from ._errors import ClientClosed, Error, Timeout, Unavailable
from ._lease import AsyncLease, OnLost
from ._lock import AsyncLeadership, AsyncLock, AsyncObservation, holder_key, leader_key_from_pb, leader_key_pb
from ._proto.dengine.v1 import client_pb2 as pb
from ._proto.dengine.v1 import client_pb2_grpc as rpc
from ._routing import AsyncSeqWindow, Attempts, RetryPolicy, Router, new_client_id
from ._routing import channel_options as grpc_options
from ._tls import PathLike, check_interceptors
from ._tls import channel_options as tls_options
from ._tls import credentials as tls_credentials
from ._txn import Compare, Op, txn_from_pb, txn_request
from ._types import (
    CasResult,
    Consistency,
    DeleteRangeResult,
    KeyValue,
    LeaderInfo,
    LeaderKey,
    LeaseInfo,
    LeaseStatus,
    Member,
    RangePage,
    TxnResult,
    WatchEvent,
)
from ._watch import (
    FilterArg,
    WatchState,
    cancel_resumable,
    check_resume_timeout,
    open_resumable,
    rpc_break_resumable,
    watch_request,
)

T = TypeVar("T")
_MAX_MSG = 8 << 20


class _Stubs:
    def __init__(self, channel: grpc.aio.Channel, target: str):
        self.channel = channel
        self.target = target
        self.kv = rpc.KvStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.lock = rpc.LockStub(channel)
        self.election = rpc.ElectionStub(channel)
        self.cluster = rpc.ClusterStub(channel)


class AsyncClient(AsyncAdminMixin):
    """asyncio client of a d-engine cluster; same behaviour and method names
    as :class:`d_engine.Client`, with every method a coroutine and watches
    consumed with ``async for`` (retries, keepalive and watch resume as
    there). Use ``async with`` or ``await close()``.
    TLS arguments (``ca_file``, ``cert_file``, ``key_file``,
    ``tls_server_name``), ``follow_hints_outside_endpoints`` and
    ``channel_options`` as for Client; ``interceptors`` are
    ``grpc.aio.ClientInterceptor`` s passed to every channel."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        timeout: float = 5.0,
        retry: Optional[RetryPolicy] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        ca_file: Optional[PathLike] = None,
        cert_file: Optional[PathLike] = None,
        key_file: Optional[PathLike] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        channel_options: Sequence[Tuple[str, Any]] = (),
        tls_server_name: Optional[str] = None,
        interceptors: Sequence[Any] = (),
        follow_hints_outside_endpoints: bool = True,
    ):
        self._router = Router(codec.parse_endpoints(endpoints), follow_hints_outside_endpoints)
        self._channel_options = tls_options(tls_server_name) + list(channel_options)
        grpc_options(_MAX_MSG, self._channel_options)  # refuses malformed options now
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._credentials = tls_credentials(
            ca_file,
            cert_file,
            key_file,
            credentials,
            scheme=codec.endpoint_scheme(endpoints),
            server_name=tls_server_name,
        )
        self._interceptors = check_interceptors(interceptors, aio=True)
        # username/password or token: sent as `authorization` metadata on every RPC.
        self._auth = _auth.header_value(username, password, token)
        self._channels: Dict[str, _Stubs] = {}
        self._closed = False
        self._client_id = new_client_id()
        self._window = AsyncSeqWindow()
        self._leases: weakref.WeakSet[AsyncLease] = weakref.WeakSet()

    async def close(self) -> None:
        """Closes the connections; keepalive helpers stop (their leases are
        not revoked and expire after their TTL)."""
        self._closed = True
        for lease in list(self._leases):
            await lease.stop()
        channels, self._channels = self._channels, {}
        for s in channels.values():
            await s.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def put(
        self, key: BytesLike, value: BytesLike, ttl: Optional[float] = None, *, lease: Optional[int] = None
    ) -> int:
        key, value = codec.check_key(key), codec.check_value(value)
        ttl_ms, lease_id = codec.put_lease(ttl, lease)
        async with self._window.seq() as seq:
            req = pb.PutRequest(key=key, value=value, ttl_ms=ttl_ms, lease=lease_id, write_id=self._write_id(seq))
            return (await self._call(lambda s, t: s.kv.Put(req, timeout=t), True)).revision

    async def get(
        self, key: BytesLike, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> Optional[KeyValue]:
        req = pb.GetRequest(key=codec.check_key(key), consistency=codec.consistency_pb(consistency))
        return codec.opt_kv(await self._call(lambda s, t: s.kv.Get(req, timeout=t), _needs_leader(consistency)))

    async def get_multi(
        self, keys: Sequence[BytesLike], consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[Optional[KeyValue]]:
        if isinstance(keys, (str, bytes)):
            raise TypeError("keys must be a list of keys, not a single key")
        req = pb.GetMultiRequest(keys=[codec.check_key(k) for k in keys], consistency=codec.consistency_pb(consistency))
        resp = await self._call(lambda s, t: s.kv.GetMulti(req, timeout=t), _needs_leader(consistency))
        return [codec.opt_kv(r) for r in resp.results]

    async def delete(self, key: BytesLike) -> bool:
        key = codec.check_key(key)
        async with self._window.seq() as seq:
            req = pb.DeleteRequest(key=key, write_id=self._write_id(seq))
            return (await self._call(lambda s, t: s.kv.Delete(req, timeout=t), True)).deleted

    async def compare_and_swap(
        self,
        key: BytesLike,
        expected: Optional[BytesLike],
        new_value: Optional[BytesLike],
        ttl: Optional[float] = None,
    ) -> CasResult:
        req = _cas_request(key, expected, new_value, ttl, pb.WriteId())
        async with self._window.seq() as seq:
            req.write_id.CopyFrom(self._write_id(seq))
            return codec.cas_from_pb(await self._call(lambda s, t: s.kv.CompareAndSwap(req, timeout=t), True))

    async def scan_prefix(
        self, prefix: BytesLike, limit: int = 0, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[KeyValue]:
        limit = _limit(limit)
        out: List[KeyValue] = []
        page_size = min(limit, codec.MAX_RANGE_LIMIT)
        async for kv in self.range_iter(prefix, prefix=True, page_size=page_size, consistency=consistency):
            out.append(kv)
            if len(out) == limit:
                break
        return out

    async def range(
        self,
        key: BytesLike,
        range_end: Optional[BytesLike] = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        consistency: Union[Consistency, str] = Consistency.LINEARIZABLE,
    ) -> RangePage:
        req = codec.range_request(key, range_end, prefix, limit, keys_only, count_only, consistency)
        return await self._range_page(req, _needs_leader(consistency))

    def range_iter(
        self,
        key: BytesLike,
        range_end: Optional[BytesLike] = None,
        *,
        prefix: bool = False,
        page_size: int = 0,
        keys_only: bool = False,
        consistency: Union[Consistency, str] = Consistency.LINEARIZABLE,
    ) -> AsyncIterator[KeyValue]:
        """``async for kv in client.range_iter(...)``: every pair of the range, page by page
        (arguments are checked at the call)."""
        req = codec.range_request(key, range_end, prefix, page_size, keys_only, False, consistency)
        return self._walk(req, _needs_leader(consistency))

    async def _walk(self, first: pb.RangeRequest, need_leader: bool) -> AsyncIterator[KeyValue]:
        req: Optional[pb.RangeRequest] = first
        while req is not None:
            page = await self._range_page(req, need_leader)
            for kv in page.kvs:
                yield kv
            req = codec.next_page(req, page)

    async def delete_range(
        self,
        key: BytesLike,
        range_end: Optional[BytesLike] = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
    ) -> DeleteRangeResult:
        k, end = codec.range_bounds(key, range_end, prefix)
        async with self._window.seq() as seq:
            req = pb.DeleteRangeRequest(key=k, range_end=end, prev_kv=bool(prev_kv), write_id=self._write_id(seq))
            return codec.delete_range_from_pb(await self._call(lambda s, t: s.kv.DeleteRange(req, timeout=t), True))

    async def txn(
        self,
        compare: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        req = txn_request(compare, success, failure)
        async with self._window.seq() as seq:
            req.write_id.CopyFrom(self._write_id(seq))
            return txn_from_pb(await self._call(lambda s, t: s.kv.Txn(req, timeout=t), True))

    async def lease_grant(self, ttl: float, *, id: int = 0) -> int:
        ttl_ms, lease_id = codec.lease_ttl_ms(ttl), codec.check_id(id)
        async with self._window.seq() as seq:
            req = pb.LeaseGrantRequest(ttl_ms=ttl_ms, id=lease_id, write_id=self._write_id(seq))
            return (await self._call(lambda s, t: s.lease.LeaseGrant(req, timeout=t), True)).id

    async def lease_revoke(self, lease_id: int) -> int:
        lease_id = codec.check_id(lease_id)
        async with self._window.seq() as seq:
            req = pb.LeaseRevokeRequest(id=lease_id, write_id=self._write_id(seq))
            return (await self._call(lambda s, t: s.lease.LeaseRevoke(req, timeout=t), True)).deleted

    async def lease_renew(self, lease_id: int) -> float:
        req = pb.LeaseKeepAliveRequest(id=codec.check_id(lease_id))
        return (await self._call(lambda s, t: s.lease.LeaseRenew(req, timeout=t), True)).ttl_ms / 1000

    async def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo:
        req = pb.LeaseTimeToLiveRequest(id=codec.check_id(lease_id), keys=bool(keys))
        return codec.lease_info_from_pb(await self._call(lambda s, t: s.lease.LeaseTimeToLive(req, timeout=t), True))

    async def lease_list(self) -> List[LeaseStatus]:
        resp = await self._call(lambda s, t: s.lease.LeaseList(pb.LeaseListRequest(), timeout=t), True)
        return [codec.lease_status_from_pb(x) for x in resp.leases]

    def lease(self, ttl: float, *, id: int = 0, on_lost: Optional[OnLost] = None) -> AsyncLease:
        """A lease of ``ttl`` seconds kept alive by a background task: ``async
        with client.lease(10) as lease:`` (revoked on exit) or ``lease =
        await client.lease(10)``. See :class:`d_engine.Client.lease`."""
        return AsyncLease(self, ttl, id, on_lost)

    async def watch(
        self,
        key: BytesLike,
        start_revision: int = 0,
        *,
        range_end: Optional[BytesLike] = None,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: FilterArg = (),
        resume_timeout: Optional[float] = None,
    ) -> AsyncWatch:
        """As :meth:`d_engine.Client.watch` (same options, same resume rule);
        consume with ``async for``."""
        req = watch_request(
            key,
            start_revision,
            prefix=False,
            range_end=range_end,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            filters=filters,
        )
        return await self._watch(req, check_resume_timeout(resume_timeout))

    async def watch_prefix(
        self,
        prefix: BytesLike,
        start_revision: int = 0,
        *,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: FilterArg = (),
        resume_timeout: Optional[float] = None,
    ) -> AsyncWatch:
        """As :meth:`d_engine.Client.watch_prefix`."""
        req = watch_request(
            prefix,
            start_revision,
            prefix=True,
            range_end=None,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            filters=filters,
        )
        return await self._watch(req, check_resume_timeout(resume_timeout))

    def lock(
        self, name: BytesLike, ttl: float = 10.0, *, lease: Optional[int] = None, timeout: Optional[float] = None
    ) -> AsyncLock:
        """``async with client.lock("jobs", ttl=10) as lock:`` or ``lock = await
        client.lock(...)``; see :meth:`d_engine.Client.lock`."""
        name_b = codec.check_key(name, "lock name")
        return AsyncLock(self, name_b, ttl, None if lease is None else codec.check_id(lease), timeout)

    async def _lock(
        self, name: bytes, ttl: float, lease_id: Optional[int], timeout: Optional[float]
    ) -> Tuple[bytes, int, Optional[AsyncLease]]:
        own = await self.lease(ttl) if lease_id is None else None
        lid = own.id if own is not None else int(lease_id or 0)
        req = pb.LockRequest(name=name, lease=lid)
        try:
            resp = await self._wait(lambda s, t: s.lock.Lock(req, timeout=t), timeout, own)
        except BaseException:
            await self._abandon(own, holder_key(name, lid))
            raise
        return resp.key, resp.revision, own

    async def unlock(self, key: BytesLike) -> None:
        req = pb.UnlockRequest(key=codec.check_key(key))
        await self._call(lambda s, t: s.lock.Unlock(req, timeout=t), True)

    def campaign(
        self,
        name: BytesLike,
        value: BytesLike,
        ttl: float = 10.0,
        *,
        lease: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> AsyncLeadership:
        """``async with client.campaign(name, value, ttl=10) as leadership:`` or
        ``leadership = await client.campaign(...)``; see :meth:`d_engine.Client.campaign`."""
        name_b, value_b = codec.check_key(name, "election name"), codec.check_value(value)
        return AsyncLeadership(self, name_b, value_b, ttl, None if lease is None else codec.check_id(lease), timeout)

    async def _campaign(
        self, name: bytes, value: bytes, ttl: float, lease_id: Optional[int], timeout: Optional[float]
    ) -> Tuple[LeaderKey, Optional[AsyncLease]]:
        own = await self.lease(ttl) if lease_id is None else None
        lid = own.id if own is not None else int(lease_id or 0)
        req = pb.CampaignRequest(name=name, lease=lid, value=value)
        try:
            resp = await self._wait(lambda s, t: s.election.Campaign(req, timeout=t), timeout, own)
        except BaseException:
            await self._abandon(own, holder_key(name, lid))
            raise
        return leader_key_from_pb(resp.leader), own

    async def proclaim(self, leader: LeaderKey, value: BytesLike) -> None:
        req = pb.ProclaimRequest(leader=leader_key_pb(leader), value=codec.check_value(value))
        await self._call(lambda s, t: s.election.Proclaim(req, timeout=t), True)

    async def resign(self, leader: LeaderKey) -> None:
        req = pb.ResignRequest(leader=leader_key_pb(leader))
        await self._call(lambda s, t: s.election.Resign(req, timeout=t), True)

    async def election_leader(self, name: BytesLike) -> Optional[KeyValue]:
        req = pb.ElectionLeaderRequest(name=codec.check_key(name, "election name"))
        return codec.opt_kv(await self._call(lambda s, t: s.election.Leader(req, timeout=t), True))

    def observe(self, name: BytesLike) -> AsyncObservation:
        req = pb.ElectionLeaderRequest(name=codec.check_key(name, "election name"))
        return AsyncObservation(self, req)

    async def _wait(
        self, fn: Callable[[_Stubs, Optional[float]], Awaitable[T]], timeout: Optional[float], own: Optional[AsyncLease]
    ) -> T:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> Optional[float]:
            return None if deadline is None else max(0.001, deadline - time.monotonic())

        while True:
            try:
                return await self._call(lambda s, t: fn(s, left()), True)
            except Error as e:
                if own is not None and own.lost.is_set():
                    raise own.error or e from None
                if not e.retryable:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"not acquired within {timeout}s (last error: {e})") from None

    async def _abandon(self, own: Optional[AsyncLease], key: bytes) -> None:
        try:
            if own is not None:
                await own.revoke()
            else:
                await self.unlock(key)
        except Error:
            pass  # the key goes with its lease anyway

    async def members(self) -> List[Member]:
        resp = await self._call(lambda s, t: s.cluster.Members(pb.MembersRequest(), timeout=t), False)
        return [codec.member_from_pb(m) for m in resp.members]

    async def leader(self) -> LeaderInfo:
        resp = await self._call(lambda s, t: s.cluster.Leader(pb.LeaderRequest(), timeout=t), False)
        return codec.leader_from_pb(resp)

    def _write_id(self, seq: int) -> pb.WriteId:
        return pb.WriteId(client_id=self._client_id, seq=seq)

    def _stubs(self, target: str) -> _Stubs:
        if self._closed:
            raise ClientClosed("the client is closed")
        stubs = self._channels.get(target)
        if stubs is None:
            opts = grpc_options(_MAX_MSG, self._channel_options)
            # The caller's interceptors see each call first (without the credentials header).
            chain = list(self._interceptors) + (_auth.aio_interceptors(self._auth) or [])
            if self._credentials is not None:
                ch = grpc.aio.secure_channel(target, self._credentials, options=opts, interceptors=chain or None)
            else:
                ch = grpc.aio.insecure_channel(target, options=opts, interceptors=chain or None)
            stubs = self._channels[target] = _Stubs(ch, target)
        return stubs

    async def _range_page(self, req: pb.RangeRequest, need_leader: bool) -> RangePage:
        return codec.range_from_pb(await self._call(lambda s, t: s.kv.Range(req, timeout=t), need_leader))

    async def _call(self, fn: Callable[[_Stubs, float], Awaitable[T]], need_leader: bool) -> T:
        attempts = Attempts(self._retry)
        while True:
            target = self._router.target(need_leader)
            try:
                result = await fn(self._stubs(target), attempts.attempt_timeout(self._timeout))
            except grpc.RpcError as e:
                err = codec.error_from_rpc(e, target)
                self._router.failed(target, err)
                delay = attempts.next_delay(err)
                if delay is None:
                    raise attempts.final_error() from None
                await asyncio.sleep(delay)
                continue
            self._router.succeeded(target, need_leader)
            return result

    async def _watch(self, req: pb.WatchRequest, resume_timeout: Optional[float]) -> AsyncWatch:
        state = WatchState(req, resume_timeout)
        call, first, target = await self._open_watch(state)
        return AsyncWatch(self, state, call, first, target)

    async def _open_watch(self, state: WatchState) -> Tuple[Any, pb.WatchResponse, str]:
        """Creates the watch from ``state.next`` (on the leader, with the
        client's retries) and waits for its ``created`` message."""
        req = state.request()
        opened: List[str] = []

        async def open_stream(stubs: _Stubs, timeout: float) -> Tuple[Any, pb.WatchResponse]:
            call = stubs.kv.Watch(req)
            try:
                # The attempt timeout bounds only the wait for "created".
                first = await asyncio.wait_for(call.read(), timeout)
            except asyncio.TimeoutError:
                call.cancel()
                raise _AttemptTimedOut() from None
            if first is grpc.aio.EOF:
                raise Unavailable("the watch stream closed before it was created")
            if first.canceled:
                call.cancel()
                raise state.canceled(first)
            opened.append(stubs.target)
            return call, first

        call, first = await self._call(open_stream, True)
        state.created(first)
        return call, first, opened[-1]


class AsyncWatch:
    """``async for event in watch``; the same resume rule and typed end as
    :class:`d_engine.Watch`. ``cancel()`` ends it quietly."""

    def __init__(self, client: AsyncClient, state: WatchState, call: Any, created: pb.WatchResponse, target: str):
        self._client = client
        self._state = state
        self._call: Optional[Any] = call
        self._target = target
        self._pending: List[WatchEvent] = state.events(created)
        self._cancelled = False

    @property
    def resume_revision(self) -> int:
        """The revision the watch would resume from now."""
        return self._state.next

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._cancelled:
                raise StopAsyncIteration
            if self._call is None:
                await self._reopen()
                continue
            try:
                resp = await self._call.read()
            except asyncio.CancelledError:
                if self._cancelled:
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as e:
                if self._cancelled:
                    raise StopAsyncIteration from None
                err: Error = codec.error_from_rpc(e, self._target)
                resumable = rpc_break_resumable(e, err)
            else:
                if resp is grpc.aio.EOF:
                    if self._cancelled:
                        raise StopAsyncIteration
                    err = Unavailable(f"{self._target}: the watch stream closed without a cancel")
                    resumable = True
                elif not resp.canceled:
                    self._pending.extend(self._state.events(resp))
                    continue
                else:
                    err = self._state.canceled(resp)
                    resumable = cancel_resumable(err)
            self._call = None
            if not resumable:
                raise self._state.final(err) from None
        return self._pending.pop(0)

    async def _reopen(self) -> None:
        attempt = 0
        while not self._cancelled:
            try:
                call, first, target = await self._client._open_watch(self._state)
            except Error as err:
                if isinstance(err, ClientClosed) or not open_resumable(err):
                    raise self._state.final(err) from None
                delay = self._state.retry_delay(attempt, err)
                if delay is None:
                    raise self._state.final(err) from None
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if self._cancelled:
                call.cancel()
                return
            self._call, self._target = call, target
            self._pending.extend(self._state.events(first))
            return

    def cancel(self) -> None:
        self._cancelled = True
        call = self._call
        if call is not None:
            call.cancel()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()
