"""Cluster administration, node status and readiness for the gRPC clients
(the ``dengine.v1.Admin`` service), as mixins of :class:`~d_engine.Client`
(:class:`AdminMixin`) and :class:`~d_engine.AsyncClient`
(:class:`AsyncAdminMixin`); the same calls as the Rust client's
``GrpcAdmin`` and the Go client.

Membership changes and transfers go to the leader (following NotLeader
hints). They are retried only after errors that mean the change was not
executed (NotLeader, NoLeader, Overloaded, ChangeInProgress, an unreachable
node); an attempt that times out raises :class:`~d_engine.Timeout` without
a retry: its outcome is unknown, so check ``members()`` before repeating
it. ``add_learner`` and ``promote`` are idempotent on the server (a repeated
call with the same arguments succeeds).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

import grpc

from . import _codec as codec
from ._cluster import AsyncClusterChanges, ClusterChanges
from ._errors import Error, InvalidArgument, Timeout, UnknownNode
from ._proto.dengine.v1 import client_pb2 as pb
from ._proto.dengine.v1 import client_pb2_grpc as rpc
from ._types import LeaderInfo, Member

T = TypeVar("T")

_READY_KEY = b"\x00"
"""The key ``wait_ready`` reads linearizably (with auth on, the user needs
read access to it)."""


@dataclass(frozen=True)
class NodeStatus:
    """One node's view of itself (``node_status()``)."""

    id: int
    role: str
    """``"leader"``, ``"follower"``, ``"candidate"``, ``"pre_candidate"`` or ``"learner"``."""
    leader_id: int
    """0 if the node knows no leader."""
    term: int
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    members: List[Member]
    alarms: List[str]
    """Raised alarms, e.g. ``"NOSPACE"`` (stored data reached the quota)."""
    data_bytes: int
    """Logical size of the stored data (keys + values + 32 bytes per key)."""
    quota_bytes: int
    """The storage quota; 0 = none."""
    log_bytes: int
    """Payload bytes of the committed log since the latest snapshot."""


def _status_from_pb(r: pb.NodeStatusResponse) -> NodeStatus:
    return NodeStatus(
        id=r.id,
        role=r.role,
        leader_id=r.leader_id,
        term=r.header.term if r.HasField("header") else 0,
        commit_index=r.commit_index,
        applied_index=r.applied_index,
        last_log_index=r.last_log_index,
        snapshot_index=r.snapshot_index,
        members=[codec.member_from_pb(m) for m in r.members],
        alarms=list(r.alarms),
        data_bytes=r.data_bytes,
        quota_bytes=r.quota_bytes,
        log_bytes=r.log_bytes,
    )


def _check_learner(id: int, peer_addr: str) -> None:
    if id <= 0:
        raise InvalidArgument("id: node id 0 is reserved; use 1 or more")
    if not peer_addr.strip():
        raise InvalidArgument("peer_addr is empty; give the address peers reach the node at (host:port)")


def _unknown_outcome(op: str, e: grpc.RpcError) -> Optional[Error]:
    """A timed-out change as :class:`Timeout` (raised past the retry loop,
    which only retries ``grpc.RpcError``), or None for any other error."""
    err = codec.error_from_rpc(e, "")
    if isinstance(err, Timeout):
        return Timeout(
            f"{op}: no answer before the timeout; the change may or may not have been applied, "
            f"check members() before repeating it ({err})"
        )
    return None


def _members(resp: Any) -> List[Member]:
    return [codec.member_from_pb(m) for m in resp.members]


def _find_learner_addr(status: NodeStatus, id: int) -> Optional[str]:
    """The learner's client address, "" if ``id`` is already a voter."""
    for m in status.members:
        if m.id == id:
            return "" if m.role == "voter" else (m.client_addr or None)
    return None


class AdminMixin:
    """Admin and status calls of :class:`~d_engine.Client` (module docstring)."""

    _call: Callable[..., Any]
    _stubs: Callable[..., Any]
    _timeout: float

    def _change(self, op: str, fn: Callable[[Any, float], Any]) -> List[Member]:
        def attempt(stubs: Any, t: float) -> Any:
            try:
                return fn(rpc.AdminStub(stubs.channel), t)
            except grpc.RpcError as e:
                unknown = _unknown_outcome(op, e)
                if unknown is not None:
                    raise unknown from None
                raise

        return _members(self._call(attempt, True))

    def add_learner(self, id: int, peer_addr: str, client_addr: str = "") -> List[Member]:
        """Adds node ``id`` as a learner (receives the log, does not vote);
        returns the members after the change."""
        _check_learner(id, peer_addr)
        req = pb.AddLearnerRequest(id=id, peer_addr=peer_addr, client_addr=client_addr)
        return self._change("add_learner", lambda a, t: a.AddLearner(req, timeout=t))

    def promote(self, id: int, force: bool = False) -> List[Member]:
        """Turns learner ``id`` into a voter (see ``promote_when_caught_up``).
        The server refuses a learner that has not caught up
        (:class:`ChangeInProgress` naming the lag) unless ``force``; a
        forced voter far behind cannot help commit until it catches up."""
        req = pb.PromoteRequest(id=id, force=force)
        return self._change("promote", lambda a, t: a.Promote(req, timeout=t))

    def promote_when_caught_up(self, id: int, timeout: float = 30.0) -> List[Member]:
        """Waits until learner ``id`` has applied everything the leader had
        committed when the call started, then promotes it. Raises
        :class:`Timeout` after ``timeout`` seconds, :class:`UnknownNode` if
        ``id`` is not a learner with a client address."""
        leader = self.node_status()
        addr = _find_learner_addr(leader, id)
        if addr == "":
            return leader.members
        if addr is None:
            raise UnknownNode(f"node {id} is not a learner with a client address ({leader.members})")
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                if self.node_status(addr).applied_index >= leader.commit_index:
                    return self.promote(id)
            except Error as e:
                last = e
            time.sleep(0.05)
        raise Timeout(f"learner {id} did not catch up to index {leader.commit_index} within {timeout}s ({last})")

    def remove_member(self, id: int) -> List[Member]:
        """Removes node ``id`` (voter or learner); returns the members after."""
        req = pb.RemoveMemberRequest(id=id)
        return self._change("remove_member", lambda a, t: a.RemoveMember(req, timeout=t))

    def transfer_leader(self, to: int) -> List[Member]:
        """Hands leadership to voter ``to``; returns once it leads."""
        req = pb.TransferLeaderRequest(to=to)
        try:
            return self._change("transfer_leader", lambda a, t: a.TransferLeader(req, timeout=t))
        finally:
            self._router.leader = None  # type: ignore[attr-defined]

    def trigger_snapshot(self, addr: Optional[str] = None) -> int:
        """Snapshots the leader (or the node at ``addr``, no redirect) now;
        returns the snapshot index."""
        req = pb.TriggerSnapshotRequest()
        resp = self._admin_at(addr, lambda a, t: a.TriggerSnapshot(req, timeout=t))
        return int(resp.snapshot_index)

    def node_status(self, addr: Optional[str] = None) -> NodeStatus:
        """Status of the leader (any node if none is known), or of the node
        at ``addr`` (``host:port``; no redirect, no retry)."""
        req = pb.NodeStatusRequest()
        return _status_from_pb(self._admin_at(addr, lambda a, t: a.NodeStatus(req, timeout=t)))

    def _admin_at(self, addr: Optional[str], fn: Callable[[Any, float], Any]) -> Any:
        if addr is None:
            return self._call(lambda s, t: fn(rpc.AdminStub(s.channel), t), True)
        target = codec.parse_endpoints(addr)[0]
        try:
            return fn(rpc.AdminStub(self._stubs(target).channel), self._timeout)
        except grpc.RpcError as e:
            raise codec.error_from_rpc(e, target) from None

    def wait_ready(self, timeout: float = 30.0) -> LeaderInfo:
        """Waits until the cluster has a leader that serves requests (a
        leader is known and answers a linearizable read of the key
        ``b"\\x00"``); returns it. Raises :class:`Timeout` after ``timeout``
        seconds, or at once an error waiting cannot cure (e.g. refused
        credentials)."""
        deadline = time.monotonic() + timeout
        last: Optional[Error] = None
        while True:
            try:
                leader = self.leader()  # type: ignore[attr-defined]
                if leader.id:
                    self.get(_READY_KEY)  # type: ignore[attr-defined]
                    return leader
            except Error as e:
                if not e.retryable:
                    raise
                last = e
            if time.monotonic() >= deadline:
                raise Timeout(f"the cluster was not ready within {timeout}s (last: {last})")
            time.sleep(0.05)

    def cluster_changes(self) -> ClusterChanges:
        """Leader and membership changes (module ``_cluster``): an iterator of
        :class:`ClusterState`, re-opened on another node when its node goes
        away. Raises at once if no endpoint serves it."""
        return ClusterChanges(self)  # type: ignore[arg-type]


class AsyncAdminMixin:
    """Admin and status calls of :class:`~d_engine.AsyncClient` (coroutines)."""

    _call: Callable[..., Awaitable[Any]]
    _stubs: Callable[..., Any]
    _timeout: float

    async def _change(self, op: str, fn: Callable[[Any, float], Awaitable[Any]]) -> List[Member]:
        async def attempt(stubs: Any, t: float) -> Any:
            try:
                return await fn(rpc.AdminStub(stubs.channel), t)
            except grpc.RpcError as e:
                unknown = _unknown_outcome(op, e)
                if unknown is not None:
                    raise unknown from None
                raise

        return _members(await self._call(attempt, True))

    async def add_learner(self, id: int, peer_addr: str, client_addr: str = "") -> List[Member]:
        _check_learner(id, peer_addr)
        req = pb.AddLearnerRequest(id=id, peer_addr=peer_addr, client_addr=client_addr)
        return await self._change("add_learner", lambda a, t: a.AddLearner(req, timeout=t))

    async def promote(self, id: int, force: bool = False) -> List[Member]:
        req = pb.PromoteRequest(id=id, force=force)
        return await self._change("promote", lambda a, t: a.Promote(req, timeout=t))

    async def promote_when_caught_up(self, id: int, timeout: float = 30.0) -> List[Member]:
        leader = await self.node_status()
        addr = _find_learner_addr(leader, id)
        if addr == "":
            return leader.members
        if addr is None:
            raise UnknownNode(f"node {id} is not a learner with a client address ({leader.members})")
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                if (await self.node_status(addr)).applied_index >= leader.commit_index:
                    return await self.promote(id)
            except Error as e:
                last = e
            await asyncio.sleep(0.05)
        raise Timeout(f"learner {id} did not catch up to index {leader.commit_index} within {timeout}s ({last})")

    async def remove_member(self, id: int) -> List[Member]:
        req = pb.RemoveMemberRequest(id=id)
        return await self._change("remove_member", lambda a, t: a.RemoveMember(req, timeout=t))

    async def transfer_leader(self, to: int) -> List[Member]:
        req = pb.TransferLeaderRequest(to=to)
        try:
            return await self._change("transfer_leader", lambda a, t: a.TransferLeader(req, timeout=t))
        finally:
            self._router.leader = None  # type: ignore[attr-defined]

    async def trigger_snapshot(self, addr: Optional[str] = None) -> int:
        req = pb.TriggerSnapshotRequest()
        resp = await self._admin_at(addr, lambda a, t: a.TriggerSnapshot(req, timeout=t))
        return int(resp.snapshot_index)

    async def node_status(self, addr: Optional[str] = None) -> NodeStatus:
        req = pb.NodeStatusRequest()
        return _status_from_pb(await self._admin_at(addr, lambda a, t: a.NodeStatus(req, timeout=t)))

    async def _admin_at(self, addr: Optional[str], fn: Callable[[Any, float], Awaitable[Any]]) -> Any:
        if addr is None:
            return await self._call(lambda s, t: fn(rpc.AdminStub(s.channel), t), True)
        target = codec.parse_endpoints(addr)[0]
        try:
            return await fn(rpc.AdminStub(self._stubs(target).channel), self._timeout)
        except grpc.RpcError as e:
            raise codec.error_from_rpc(e, target) from None

    async def wait_ready(self, timeout: float = 30.0) -> LeaderInfo:
        deadline = time.monotonic() + timeout
        last: Optional[Error] = None
        while True:
            try:
                leader = await self.leader()  # type: ignore[attr-defined]
                if leader.id:
                    await self.get(_READY_KEY)  # type: ignore[attr-defined]
                    return leader
            except Error as e:
                if not e.retryable:
                    raise
                last = e
            if time.monotonic() >= deadline:
                raise Timeout(f"the cluster was not ready within {timeout}s (last: {last})")
            await asyncio.sleep(0.05)

    def cluster_changes(self) -> AsyncClusterChanges:
        """``async for state in client.cluster_changes()``: see
        :meth:`AdminMixin.cluster_changes`. The stream opens on the first
        ``__anext__`` (or ``await ....start()`` / ``async with``)."""
        return AsyncClusterChanges(self)  # type: ignore[arg-type]
