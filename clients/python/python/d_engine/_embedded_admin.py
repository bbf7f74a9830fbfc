"""Node events and admin calls of the embedded engine: the calls a Rust
embedder has on ``EmbeddedEngine`` / its ``NodeHandle`` —
``leader_changes()``, ``member_changes()``, ``cluster_changes()`` (iterators
and async iterators) and ``add_learner``, ``promote``, ``remove_member``,
``transfer_leader``, ``trigger_snapshot``, ``node_status`` — as mixins of
:class:`~d_engine.EmbeddedEngine` and :class:`~d_engine.AsyncEmbeddedEngine`.

The same calls (names and signatures of :class:`d_engine.Client`) are on
``EmbeddedClient`` / ``AsyncEmbeddedClient``, so code written for the gRPC
client runs embedded. Admin calls act on the local node, as for a Rust
embedder: membership changes and transfers on a follower raise
``NotLeader`` (naming the leader); use a :class:`d_engine.Client` to have
them routed to the leader. ``node_status(addr)`` / ``trigger_snapshot(addr)``
accept only this node's own address.

Event streams are the local node's view (:class:`~d_engine.ClusterState`,
same contract as the gRPC clients' ``cluster_changes()``: the current state
first with both flags set, then one item per change, never a repeat). They
end (``StopIteration`` / ``StopAsyncIteration``) when the engine stops or
``close()`` is called.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Generic, Iterator, List, Optional, TypeVar

from . import _codec as codec
from ._admin import NodeStatus, _check_learner, _find_learner_addr, _members, _status_from_pb
from ._cluster import ClusterState
from ._errors import Error, InvalidArgument, ShuttingDown, Timeout, UnknownNode
from ._proto.dengine.v1 import client_pb2 as pb
from ._types import LeaderInfo, Member

T = TypeVar("T")
_POLL = 0.2
"""Seconds a blocking iterator waits per native call (signals are handled in between)."""

_CLUSTER, _LEADER, _MEMBERS = "cluster", "leader", "members"


def _pick(kind: str, ev_bytes: bytes) -> Optional[Any]:
    """The item of stream ``kind`` for one native event, or None to skip."""
    ev = pb.ClusterEvent.FromString(ev_bytes)
    if kind == _LEADER:
        return LeaderInfo(id=ev.leader_id, addr=ev.leader_addr) if ev.leader_changed else None
    members = _members(ev)
    if kind == _MEMBERS:
        return members if ev.members_changed else None
    return ClusterState(
        leader=LeaderInfo(id=ev.leader_id, addr=ev.leader_addr),
        term=ev.term,
        members=members,
        leader_changed=ev.leader_changed,
        members_changed=ev.members_changed,
        node_id=ev.header.node_id,
    )


class EmbeddedChanges(Generic[T]):
    """A blocking iterator over the embedded node's cluster changes
    (``engine.leader_changes()`` → :class:`LeaderInfo`, ``member_changes()``
    → ``List[Member]``, ``cluster_changes()`` → :class:`ClusterState`).
    ``next()`` waits without the GIL; ``close()`` (from any thread, or
    leaving the ``with`` block) ends it."""

    def __init__(self, native_watch: Any, kind: str):
        self._w = native_watch
        self._kind = kind

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                b = self._w.next_event(_POLL)
            except ShuttingDown:
                raise StopIteration from None
            if b is None:
                continue  # timed out: lets Python run signal handlers (Ctrl-C)
            if b is False:
                raise StopIteration
            item = _pick(self._kind, b)
            if item is not None:
                return item

    def close(self) -> None:
        self._w.cancel()

    def __enter__(self) -> EmbeddedChanges[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END = object()


class AsyncEmbeddedChanges(Generic[T]):
    """``async for`` form of :class:`EmbeddedChanges` (never blocks the loop:
    items are pushed from the engine's runtime). Create it inside a running
    event loop."""

    def __init__(self, native_watch: Any, kind: str):
        self._w = native_watch
        self._kind = kind
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._ended = False
        self._w.pump(self._deliver)

    def _deliver(self, value: Any, exc: Optional[BaseException]) -> None:  # runtime thread
        try:
            self._loop.call_soon_threadsafe(self._enqueue, value, exc)
        except RuntimeError:
            self._w.cancel()  # the loop is gone

    def _enqueue(self, value: Any, exc: Optional[BaseException]) -> None:
        if exc is not None or value is False:
            self._queue.put_nowait(_END)
            return
        # Changes are rare (leader or membership): every item is queued.
        item = _pick(self._kind, value)
        if item is not None:
            self._queue.put_nowait(item)

    def __aiter__(self) -> AsyncEmbeddedChanges[T]:
        return self

    async def __anext__(self) -> T:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._ended = True
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._w.cancel()

    async def __aenter__(self) -> AsyncEmbeddedChanges[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _own_node(status: NodeStatus, addr: Optional[str]) -> None:
    """An embedded client answers for its own node only."""
    if addr is None:
        return
    own = [m.client_addr for m in status.members if m.id == status.id]
    if codec.parse_endpoints(addr)[0] not in own:
        raise InvalidArgument(
            f"addr {addr!r}: an embedded client answers for its own node (node {status.id}, client address "
            f"{own[0] if own and own[0] else 'none'}); use d_engine.Client to reach other nodes"
        )


def _learner_applied(addr: str) -> int:
    """The applied index of the node at client address ``addr`` (over gRPC)."""
    from ._client import Client  # noqa: PLC0415 - only when promoting

    with Client(addr, timeout=2.0) as c:
        return c.node_status(addr).applied_index


class EmbeddedAdminMixin:
    """Node events and admin calls of :class:`~d_engine.EmbeddedEngine` and
    :class:`~d_engine.EmbeddedClient` (same names and signatures as
    :class:`d_engine.Client`)."""

    def _native_engine(self) -> Any:
        raise NotImplementedError

    def _admin(self, method: str, req: Any, cls: Any) -> Any:
        return cls.FromString(self._native_engine().call(method, req.SerializeToString()))

    def leader_changes(self) -> EmbeddedChanges[LeaderInfo]:
        """The leader now, then on every leader or term change."""
        return EmbeddedChanges(self._native_engine().cluster_changes(), _LEADER)

    def member_changes(self) -> EmbeddedChanges[List[Member]]:
        """The members now, then on every membership change."""
        return EmbeddedChanges(self._native_engine().cluster_changes(), _MEMBERS)

    def cluster_changes(self) -> EmbeddedChanges[ClusterState]:
        """Leader and members as one stream of whole states."""
        return EmbeddedChanges(self._native_engine().cluster_changes(), _CLUSTER)

    def wait_ready(self, timeout: float = 30.0) -> LeaderInfo:
        """Blocks until a leader is known (and, if this node leads, it serves
        reads and writes); raises ``Timeout`` after ``timeout`` seconds."""
        t = self._native_engine().wait_ready(float(timeout))
        return LeaderInfo(id=t[0], addr=t[1])

    def add_learner(self, id: int, peer_addr: str, client_addr: str = "") -> List[Member]:
        """Adds node ``id`` as a learner (on the leader); returns the members after."""
        _check_learner(id, peer_addr)
        req = pb.AddLearnerRequest(id=id, peer_addr=peer_addr, client_addr=client_addr)
        return _members(self._admin("AddLearner", req, pb.ChangeResponse))

    def promote(self, id: int, force: bool = False) -> List[Member]:
        """Turns learner ``id`` into a voter (on the leader); refused with
        :class:`ChangeInProgress` while it lags, unless ``force``."""
        req = pb.PromoteRequest(id=id, force=force)
        return _members(self._admin("Promote", req, pb.ChangeResponse))

    def promote_when_caught_up(self, id: int, timeout: float = 30.0) -> List[Member]:
        """Waits until learner ``id`` (asked over gRPC at its client address)
        has applied what this node had committed, then promotes it."""
        status = self.node_status()
        addr = _find_learner_addr(status, id)
        if addr == "":
            return status.members
        if addr is None:
            raise UnknownNode(f"node {id} is not a learner with a client address ({status.members})")
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                if _learner_applied(addr) >= status.commit_index:
                    return self.promote(id)
            except Error as e:
                last = e
            time.sleep(0.05)
        raise Timeout(f"learner {id} did not catch up to index {status.commit_index} within {timeout}s ({last})")

    def remove_member(self, id: int) -> List[Member]:
        """Removes node ``id`` (on the leader); returns the members after."""
        return _members(self._admin("RemoveMember", pb.RemoveMemberRequest(id=id), pb.ChangeResponse))

    def transfer_leader(self, to: int) -> List[Member]:
        """Hands leadership to voter ``to`` (on the leader); returns once it leads."""
        return _members(self._admin("TransferLeader", pb.TransferLeaderRequest(to=to), pb.ChangeResponse))

    def trigger_snapshot(self, addr: Optional[str] = None) -> int:
        """Snapshots this node now; returns the snapshot index. ``addr`` may
        only name this node."""
        if addr is not None:
            _own_node(self.node_status(), addr)
        resp = self._admin("TriggerSnapshot", pb.TriggerSnapshotRequest(), pb.TriggerSnapshotResponse)
        return int(resp.snapshot_index)

    def node_status(self, addr: Optional[str] = None) -> NodeStatus:
        """This node's role, indexes, members and alarms (``addr`` may only
        name this node)."""
        st = _status_from_pb(self._admin("NodeStatus", pb.NodeStatusRequest(), pb.NodeStatusResponse))
        _own_node(st, addr)
        return st


class AsyncEmbeddedAdminMixin:
    """Node events and admin calls of :class:`~d_engine.AsyncEmbeddedEngine`
    and :class:`~d_engine.AsyncEmbeddedClient` (coroutines; same names and
    signatures as :class:`d_engine.AsyncClient`)."""

    def _native_engine(self) -> Any:
        raise NotImplementedError

    async def _admin(self, method: str, req: Any, cls: Any) -> Any:
        from ._embedded import _Done  # noqa: PLC0415 - _embedded imports this module

        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._native_engine().call_async(method, req.SerializeToString(), _Done(loop, fut, cls.FromString))
        return await fut

    def leader_changes(self) -> AsyncEmbeddedChanges[LeaderInfo]:
        return AsyncEmbeddedChanges(self._native_engine().cluster_changes(), _LEADER)

    def member_changes(self) -> AsyncEmbeddedChanges[List[Member]]:
        return AsyncEmbeddedChanges(self._native_engine().cluster_changes(), _MEMBERS)

    def cluster_changes(self) -> AsyncEmbeddedChanges[ClusterState]:
        return AsyncEmbeddedChanges(self._native_engine().cluster_changes(), _CLUSTER)

    async def wait_ready(self, timeout: float = 30.0) -> LeaderInfo:
        from ._embedded import _Done  # noqa: PLC0415 - _embedded imports this module

        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._native_engine().wait_ready_async(
            float(timeout), _Done(loop, fut, lambda t: LeaderInfo(id=t[0], addr=t[1]))
        )
        return await fut

    async def add_learner(self, id: int, peer_addr: str, client_addr: str = "") -> List[Member]:
        _check_learner(id, peer_addr)
        req = pb.AddLearnerRequest(id=id, peer_addr=peer_addr, client_addr=client_addr)
        return _members(await self._admin("AddLearner", req, pb.ChangeResponse))

    async def promote(self, id: int, force: bool = False) -> List[Member]:
        req = pb.PromoteRequest(id=id, force=force)
        return _members(await self._admin("Promote", req, pb.ChangeResponse))

    async def promote_when_caught_up(self, id: int, timeout: float = 30.0) -> List[Member]:
        status = await self.node_status()
        addr = _find_learner_addr(status, id)
        if addr == "":
            return status.members
        if addr is None:
            raise UnknownNode(f"node {id} is not a learner with a client address ({status.members})")
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                if await loop.run_in_executor(None, _learner_applied, addr) >= status.commit_index:
                    return await self.promote(id)
            except Error as e:
                last = e
            await asyncio.sleep(0.05)
        raise Timeout(f"learner {id} did not catch up to index {status.commit_index} within {timeout}s ({last})")

    async def remove_member(self, id: int) -> List[Member]:
        return _members(await self._admin("RemoveMember", pb.RemoveMemberRequest(id=id), pb.ChangeResponse))

    async def transfer_leader(self, to: int) -> List[Member]:
        return _members(await self._admin("TransferLeader", pb.TransferLeaderRequest(to=to), pb.ChangeResponse))

    async def trigger_snapshot(self, addr: Optional[str] = None) -> int:
        if addr is not None:
            _own_node(await self.node_status(), addr)
        resp = await self._admin("TriggerSnapshot", pb.TriggerSnapshotRequest(), pb.TriggerSnapshotResponse)
        return int(resp.snapshot_index)

    async def node_status(self, addr: Optional[str] = None) -> NodeStatus:
        st = _status_from_pb(await self._admin("NodeStatus", pb.NodeStatusRequest(), pb.NodeStatusResponse))
        _own_node(st, addr)
        return st
