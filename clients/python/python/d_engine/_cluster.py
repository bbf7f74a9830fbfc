"""Cluster-change streams: :class:`ClusterState` and the iterators that
follow ``Cluster.WatchCluster`` across the client's endpoints
(:class:`ClusterChanges`, :class:`AsyncClusterChanges`).

Contract (the same in every d-engine client): each item is the **whole**
state, so a reader that falls behind only needs the latest one; the first
item has both ``*_changed`` flags set; a later item is never identical to
the one before it; the leader's term never goes backwards (a node with an
older view keeps the newer leader). When the serving node stops, crashes
or becomes unreachable, the stream is re-opened on the next endpoint (in
the order given to the client) within the retry policy's ``deadline``;
nothing is lost because every item is the whole state. When no endpoint
serves it in time, iteration raises the last error (``Unavailable``...);
refused credentials raise at once. ``close()`` ends the iteration.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import grpc

from . import _codec as codec
from ._errors import ClientClosed, Error, PermissionDenied, Unauthenticated, Unavailable
from ._proto.dengine.v1 import client_pb2 as pb
from ._routing import RetryPolicy
from ._types import LeaderInfo, Member

if TYPE_CHECKING:  # pragma: no cover
    from ._aio import AsyncClient
    from ._client import Client


@dataclass(frozen=True)
class ClusterState:
    """The cluster as one node sees it: one item of ``cluster_changes()``."""

    leader: LeaderInfo
    """The leader; ``id == 0`` (and an empty ``addr``) during an election."""
    term: int
    """The leader's term."""
    members: List[Member]
    """Every voter and learner."""
    leader_changed: bool
    """The leader or term differs from the previous item (True on the first)."""
    members_changed: bool
    """The membership differs from the previous item (True on the first)."""
    node_id: int
    """The node whose view this is (0 if unknown)."""


def state_from_pb(ev: pb.ClusterEvent) -> ClusterState:
    return ClusterState(
        leader=LeaderInfo(id=ev.leader_id, addr=ev.leader_addr),
        term=ev.term,
        members=[codec.member_from_pb(m) for m in ev.members],
        leader_changed=True,
        members_changed=True,
        node_id=ev.header.node_id if ev.HasField("header") else 0,
    )


class StateTracker:
    """Decides which observed views are news (the module contract)."""

    def __init__(self) -> None:
        self.last: Optional[ClusterState] = None

    def observe(self, s: ClusterState) -> Optional[ClusterState]:
        p = self.last
        if p is not None:
            if s.term < p.term:
                s = replace(s, leader=p.leader, term=p.term)
            lc = s.leader != p.leader or s.term != p.term
            mc = s.members != p.members
            if not lc and not mc:
                return None
            s = replace(s, leader_changed=lc, members_changed=mc)
        self.last = s
        return s


def _final(err: Error) -> bool:
    return isinstance(err, (Unauthenticated, PermissionDenied, ClientClosed))


def _backoff(policy: RetryPolicy, round_: int) -> float:
    cap = min(policy.max_backoff, policy.base_backoff * (2 ** min(round_, 10)))
    return random.uniform(cap / 2, cap)


class ClusterChanges:
    """Iterator of :class:`ClusterState` over a sync :class:`~d_engine.Client`
    (``client.cluster_changes()``); contract in the module docstring. Use as
    a context manager or call ``close()``."""

    def __init__(self, client: Client):
        self._client = client
        self._tracker = StateTracker()
        self._closed = False
        self._call: Any = None
        self._index = -1
        self._pending: Optional[pb.ClusterEvent] = None
        self._connect()

    def _open_on(self, i: int) -> Tuple[Any, pb.ClusterEvent]:
        target = self._client._router.endpoints[i]
        stub = self._client._stubs(target).cluster
        call = stub.WatchCluster(pb.WatchClusterRequest())
        timer = _Deadline(call, self._client._timeout)
        try:
            first = next(call)
        except StopIteration:
            raise Unavailable(f"{target}: closed the cluster watch before its first message") from None
        except grpc.RpcError as e:
            if timer.fired:
                raise Unavailable(f"{target}: no cluster state within {self._client._timeout}s") from None
            raise codec.error_from_rpc(e, target) from None
        finally:
            timer.cancel()
        return call, first

    def _connect(self) -> None:
        eps = self._client._router.endpoints
        n = len(eps)
        deadline = time.monotonic() + self._client._retry.deadline
        errors: List[str] = []
        round_ = 0
        while True:
            for k in range(n):
                if self._closed:
                    raise ClientClosed("the cluster watch was closed")
                i = (self._index + 1 + k) % n
                try:
                    self._call, self._pending = self._open_on(i)
                    self._index = i
                    return
                except Error as e:
                    if _final(e):
                        raise
                    errors.append(str(e))
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    f"cluster watch: no endpoint served it within {self._client._retry.deadline}s: "
                    + "; ".join(errors[-n:])
                )
            time.sleep(min(left, _backoff(self._client._retry, round_)))
            round_ += 1

    def __iter__(self) -> ClusterChanges:
        return self

    def __next__(self) -> ClusterState:
        while True:
            if self._closed:
                raise StopIteration
            ev = self._pending
            self._pending = None
            if ev is None:
                try:
                    ev = next(self._call)
                except StopIteration:
                    ev = None
                except grpc.RpcError as e:
                    if self._closed:
                        raise StopIteration from None
                    err = codec.error_from_rpc(e, self._client._router.endpoints[self._index])
                    if _final(err):
                        self._closed = True
                        raise err from None
                    ev = None
                if ev is None:
                    # The node stopped (SHUTTING_DOWN), crashed or is gone:
                    # go on with the next endpoint.
                    try:
                        self._connect()
                    except ClientClosed:
                        raise StopIteration from None
                    except Error:
                        self._closed = True
                        raise
                    continue
            s = self._tracker.observe(state_from_pb(ev))
            if s is not None:
                return s

    def close(self) -> None:
        """Ends the stream; a blocked ``next()`` raises StopIteration."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> ClusterChanges:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Deadline:
    """Cancels a streaming call that sends nothing within ``timeout``."""

    def __init__(self, call: Any, timeout: float):
        import threading

        self.fired = False
        self._call = call

        def fire() -> None:
            self.fired = True
            call.cancel()

        self._t = threading.Timer(timeout, fire)
        self._t.daemon = True
        self._t.start()

    def cancel(self) -> None:
        self._t.cancel()


class AsyncClusterChanges:
    """Async iterator of :class:`ClusterState` over an
    :class:`~d_engine.AsyncClient` (``async for s in client.cluster_changes()``);
    contract in the module docstring. Call ``close()`` (or use ``async with``)
    to end it early."""

    def __init__(self, client: AsyncClient):
        self._client = client
        self._tracker = StateTracker()
        self._closed = False
        self._call: Any = None
        self._index = -1
        self._pending: Optional[pb.ClusterEvent] = None
        self._started = False

    async def _open_on(self, i: int) -> Tuple[Any, pb.ClusterEvent]:
        target = self._client._router.endpoints[i]
        stub = self._client._stubs(target).cluster
        call = stub.WatchCluster(pb.WatchClusterRequest())
        try:
            first = await asyncio.wait_for(call.read(), self._client._timeout)
        except asyncio.TimeoutError:
            call.cancel()
            raise Unavailable(f"{target}: no cluster state within {self._client._timeout}s") from None
        except grpc.RpcError as e:
            raise codec.error_from_rpc(e, target) from None
        if first is grpc.aio.EOF:
            raise Unavailable(f"{target}: closed the cluster watch before its first message")
        return call, first

    async def _connect(self) -> None:
        eps = self._client._router.endpoints
        n = len(eps)
        deadline = time.monotonic() + self._client._retry.deadline
        errors: List[str] = []
        round_ = 0
        while True:
            for k in range(n):
                if self._closed:
                    raise ClientClosed("the cluster watch was closed")
                i = (self._index + 1 + k) % n
                try:
                    self._call, self._pending = await self._open_on(i)
                    self._index = i
                    return
                except Error as e:
                    if _final(e):
                        raise
                    errors.append(str(e))
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    f"cluster watch: no endpoint served it within {self._client._retry.deadline}s: "
                    + "; ".join(errors[-n:])
                )
            await asyncio.sleep(min(left, _backoff(self._client._retry, round_)))
            round_ += 1

    async def start(self) -> AsyncClusterChanges:
        """Opens the stream now (else the first ``__anext__`` does); raises
        if no endpoint serves it."""
        if not self._started:
            self._started = True
            await self._connect()
        return self

    def __aiter__(self) -> AsyncClusterChanges:
        return self

    async def __anext__(self) -> ClusterState:
        if not self._started:
            await self.start()
        while True:
            if self._closed:
                raise StopAsyncIteration
            ev = self._pending
            self._pending = None
            if ev is None:
                try:
                    msg = await self._call.read()
                    ev = None if msg is grpc.aio.EOF else msg
                except asyncio.CancelledError:
                    if self._closed:
                        raise StopAsyncIteration from None
                    raise
                except grpc.RpcError as e:
                    if self._closed:
                        raise StopAsyncIteration from None
                    err = codec.error_from_rpc(e, self._client._router.endpoints[self._index])
                    if _final(err):
                        self._closed = True
                        raise err from None
                    ev = None
                if ev is None:
                    try:
                        await self._connect()
                    except ClientClosed:
                        raise StopAsyncIteration from None
                    except Error:
                        self._closed = True
                        raise
                    continue
            s = self._tracker.observe(state_from_pb(ev))
            if s is not None:
                return s

    def close(self) -> None:
        """Ends the stream; a pending ``__anext__`` raises StopAsyncIteration."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncClusterChanges:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()
