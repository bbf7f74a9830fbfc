"""Locks and leader election, thin over the server's Lock and Election
services (the recipes run once, in the server, on leases).

Sync: :class:`Lock`, :class:`Leadership` and :class:`Observation` (from
``Client.lock``, ``Client.campaign``, ``Client.observe``); asyncio:
:class:`AsyncLock`, :class:`AsyncLeadership`, :class:`AsyncObservation`.
A helper that granted its own lease keeps it alive (``lease``, ``lost``)
and revokes it when the lock is released or the leadership resigned.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Generator, Optional, Tuple

import grpc
import grpc.aio

from . import _codec as codec
from ._codec import BytesLike
from ._errors import Error, Unavailable
from ._lease import AsyncLease, Lease
from ._proto.dengine.v1 import client_pb2 as pb
from ._routing import Attempts
from ._types import KeyValue, LeaderKey

if TYPE_CHECKING:
    from ._aio import AsyncClient
    from ._client import Client


def holder_key(name: bytes, lease_id: int) -> bytes:
    """The key a lock or election candidate with lease ``lease_id`` holds: ``name/<16 hex digits>``."""
    return name + b"/" + b"%016x" % lease_id


def leader_key_from_pb(k: pb.LeaderKey) -> LeaderKey:
    return LeaderKey(name=k.name, key=k.key, revision=k.revision, lease=k.lease)


def leader_key_pb(k: LeaderKey) -> pb.LeaderKey:
    if not isinstance(k, LeaderKey):
        raise TypeError(f"leader must be a LeaderKey (from campaign()), not {type(k).__name__}")
    return pb.LeaderKey(name=k.name, key=k.key, revision=k.revision, lease=k.lease)


_NEVER = threading.Event()


class Lock:
    """A held lock (``with client.lock("jobs", ttl=10) as lock:``).

    ``key`` is the holder's key; ``revision`` the fencing token (it grows
    with every new holder: a protected resource refuses a token below the
    highest it has seen). With a lease of its own (no ``lease=`` given),
    ``lease`` keeps it alive and ``lost`` is set if it is lost anyway (the
    lock then passes to the next waiter). ``unlock()`` (or leaving the block)
    releases the lock and revokes that lease."""

    def __init__(self, client: Client, name: bytes, key: bytes, revision: int, lease: Optional[Lease]):
        self._client = client
        self.name = name
        self.key = key
        self.revision = revision
        self.lease = lease

    @property
    def lost(self) -> threading.Event:
        """Set when the lock's own lease is lost (never set for a lease you passed in)."""
        return self.lease.lost if self.lease is not None else _NEVER

    def unlock(self) -> None:
        try:
            self._client.unlock(self.key)
        finally:
            if self.lease is not None:
                self.lease.revoke()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.unlock()
        except Error:
            if exc is None:
                raise

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} key={self.key!r} revision={self.revision}>"


class Leadership:
    """An election won (``with client.campaign("leader", b"me", ttl=10) as leadership:``).

    ``leader`` (a :class:`LeaderKey`) names the key and its fencing
    ``revision``; ``proclaim(value)`` publishes a new value; ``resign()``
    (or leaving the block) gives the leadership up and revokes the helper's
    own lease; ``lost`` as for :class:`Lock`."""

    def __init__(self, client: Client, leader: LeaderKey, lease: Optional[Lease]):
        self._client = client
        self.leader = leader
        self.lease = lease

    @property
    def key(self) -> bytes:
        return self.leader.key

    @property
    def revision(self) -> int:
        return self.leader.revision

    @property
    def lost(self) -> threading.Event:
        return self.lease.lost if self.lease is not None else _NEVER

    def proclaim(self, value: BytesLike) -> None:
        self._client.proclaim(self.leader, value)

    def resign(self) -> None:
        try:
            self._client.resign(self.leader)
        finally:
            if self.lease is not None:
                self.lease.revoke()

    def __enter__(self) -> Leadership:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.resign()
        except Error:
            if exc is None:
                raise

    def __repr__(self) -> str:
        return f"<Leadership {self.leader.name!r} key={self.key!r} revision={self.revision}>"


class Observation:
    """Iterator of an election's leaders (``KeyValue`` of the leader's key:
    its value is what the leader published), starting with the current one.
    It follows the cluster's leader (reconnecting after NotLeader or a lost
    connection, within the client's retry deadline per outage, without
    repeating a leader already seen). ``cancel()`` (or leaving the ``with``
    block) ends it quietly."""

    def __init__(self, client: Client, req: pb.ElectionLeaderRequest):
        self._client = client
        self._req = req
        self._call: Any = None
        self._target = ""
        self._last: Optional[Tuple[bytes, int]] = None
        self._cancelled = False
        self._guard = threading.Lock()

    def _open(self) -> None:
        target = self._client._router.target(True)
        call = self._client._stubs(target).election.Observe(self._req)
        with self._guard:
            self._call, self._target = call, target
            if self._cancelled:
                call.cancel()

    def __iter__(self) -> Observation:
        return self

    def __next__(self) -> KeyValue:
        attempts: Optional[Attempts] = None
        while True:
            if self._cancelled:
                raise StopIteration
            try:
                if self._call is None:
                    self._open()
                resp = next(self._call)
            except StopIteration:
                if self._cancelled:
                    raise
                err: Error = Unavailable("the server closed the observe stream")
            except grpc.RpcError as e:
                if self._cancelled:
                    raise StopIteration from None
                err = codec.error_from_rpc(e, self._target)
            else:
                if not resp.HasField("kv"):
                    continue
                self._client._router.succeeded(self._target, True)
                kv = codec.kv_from_pb(resp.kv)
                if (kv.key, kv.mod_revision) == self._last:
                    continue  # the current leader, sent again after a reconnect
                self._last = (kv.key, kv.mod_revision)
                return kv
            self._call = None
            self._client._router.failed(self._target, err)
            attempts = attempts or Attempts(self._client._retry)
            delay = attempts.next_delay(err)
            if delay is None:
                raise attempts.final_error()
            time.sleep(delay)

    def cancel(self) -> None:
        with self._guard:
            self._cancelled = True
            call = self._call
        if call is not None:
            call.cancel()

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class AsyncLock:
    """:class:`Lock` for asyncio: ``async with client.lock("jobs", ttl=10) as lock:``
    or ``lock = await client.lock(...)`` then ``await lock.unlock()``."""

    def __init__(self, client: AsyncClient, name: bytes, ttl: float, lease_id: Optional[int], timeout: Optional[float]):
        self._client = client
        self.name = name
        self._ttl = ttl
        self._lease_id = lease_id
        self._timeout = timeout
        self.key = b""
        self.revision = 0
        self.lease: Optional[AsyncLease] = None
        self._acquired = False

    async def _acquire(self) -> AsyncLock:
        if not self._acquired:
            self.key, self.revision, self.lease = await self._client._lock(
                self.name, self._ttl, self._lease_id, self._timeout
            )
            self._acquired = True
        return self

    def __await__(self) -> Generator[Any, None, AsyncLock]:
        return self._acquire().__await__()

    @property
    def lost(self) -> asyncio.Event:
        if self.lease is None:
            return asyncio.Event()
        return self.lease.lost

    async def unlock(self) -> None:
        try:
            await self._client.unlock(self.key)
        finally:
            if self.lease is not None:
                await self.lease.revoke()

    async def __aenter__(self) -> AsyncLock:
        return await self._acquire()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.unlock()
        except Error:
            if exc is None:
                raise

    def __repr__(self) -> str:
        return f"<AsyncLock {self.name!r} key={self.key!r} revision={self.revision}>"


class AsyncLeadership:
    """:class:`Leadership` for asyncio: ``async with client.campaign(name, value, ttl=10) as leadership:``
    or ``leadership = await client.campaign(...)``."""

    def __init__(
        self,
        client: AsyncClient,
        name: bytes,
        value: bytes,
        ttl: float,
        lease_id: Optional[int],
        timeout: Optional[float],
    ):
        self._client = client
        self._args = (name, value, ttl, lease_id, timeout)
        self.leader: Optional[LeaderKey] = None
        self.lease: Optional[AsyncLease] = None

    async def _campaign(self) -> AsyncLeadership:
        if self.leader is None:
            self.leader, self.lease = await self._client._campaign(*self._args)
        return self

    def __await__(self) -> Generator[Any, None, AsyncLeadership]:
        return self._campaign().__await__()

    def _held(self) -> LeaderKey:
        if self.leader is None:
            raise Error("the campaign has not been won yet: await it or use `async with`")
        return self.leader

    @property
    def key(self) -> bytes:
        return self._held().key

    @property
    def revision(self) -> int:
        return self._held().revision

    @property
    def lost(self) -> asyncio.Event:
        return self.lease.lost if self.lease is not None else asyncio.Event()

    async def proclaim(self, value: BytesLike) -> None:
        await self._client.proclaim(self._held(), value)

    async def resign(self) -> None:
        try:
            await self._client.resign(self._held())
        finally:
            if self.lease is not None:
                await self.lease.revoke()

    async def __aenter__(self) -> AsyncLeadership:
        return await self._campaign()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.resign()
        except Error:
            if exc is None:
                raise


class AsyncObservation:
    """``async for kv in observation``: an election's leaders (see :class:`Observation`)."""

    def __init__(self, client: AsyncClient, req: pb.ElectionLeaderRequest):
        self._client = client
        self._req = req
        self._call: Any = None
        self._target = ""
        self._last: Optional[Tuple[bytes, int]] = None
        self._cancelled = False

    def __aiter__(self) -> AsyncObservation:
        return self

    async def __anext__(self) -> KeyValue:
        attempts: Optional[Attempts] = None
        while True:
            if self._cancelled:
                raise StopAsyncIteration
            try:
                if self._call is None:
                    self._target = self._client._router.target(True)
                    self._call = self._client._stubs(self._target).election.Observe(self._req)
                resp = await self._call.read()
            except asyncio.CancelledError:
                if self._cancelled:
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as e:
                if self._cancelled:
                    raise StopAsyncIteration from None
                err: Error = codec.error_from_rpc(e, self._target)
            else:
                if resp is grpc.aio.EOF:
                    if self._cancelled:
                        raise StopAsyncIteration
                    err = Unavailable("the server closed the observe stream")
                elif not resp.HasField("kv"):
                    continue
                else:
                    self._client._router.succeeded(self._target, True)
                    kv = codec.kv_from_pb(resp.kv)
                    if (kv.key, kv.mod_revision) == self._last:
                        continue
                    self._last = (kv.key, kv.mod_revision)
                    return kv
            self._call = None
            self._client._router.failed(self._target, err)
            attempts = attempts or Attempts(self._client._retry)
            delay = attempts.next_delay(err)
            if delay is None:
                raise attempts.final_error()
            await asyncio.sleep(delay)

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncObservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()
