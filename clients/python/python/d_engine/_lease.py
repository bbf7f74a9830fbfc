"""Lease keepalive helpers: :class:`Lease` (a background thread) for
:class:`d_engine.Client` and :class:`AsyncLease` (an asyncio task) for
:class:`d_engine.AsyncClient`.

A helper grants a lease, then renews it over the ``LeaseKeepAlive`` stream
every ``ttl / 3`` seconds, reconnecting to the current leader after a
leadership change or a broken connection. The lease is *lost* when the
server says it no longer exists (revoked, or expired: ``LeaseNotFound``) or
when no renewal was acknowledged for a whole TTL (``Timeout``: the leader
may have expired it); then ``lease.error`` says why, ``on_lost(error)`` is
called once, and ``lease.lost`` is set. Leaving the ``with`` block revokes
the lease, which deletes the keys attached to it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Optional, Union

import grpc
import grpc.aio

from . import _codec as codec
from ._errors import ClientClosed, Error, LeaseNotFound, NotLeader, Timeout, Unavailable
from ._proto.dengine.v1 import client_pb2 as pb

if TYPE_CHECKING:
    from ._aio import AsyncClient
    from ._client import Client

log = logging.getLogger("d_engine.lease")

OnLost = Callable[[Error], Any]
"""``on_lost(error)``: called once when the lease is lost (an async client also awaits a coroutine it returns)."""

_MIN_BACKOFF = 0.05
_MAX_BACKOFF = 0.5


def _fatal(err: Error) -> bool:
    """True when renewing again cannot help (the lease is gone, or the request is refused)."""
    return isinstance(err, LeaseNotFound) or not (err.retryable or isinstance(err, Timeout))


class _LeaseState:
    """What both helpers track: the lease's TTL and when it was last renewed."""

    def __init__(self, lease_id: int, ttl: float, granted_at: Optional[float] = None):
        self.id = lease_id
        self.ttl = ttl
        self.error: Optional[Error] = None
        """Why the lease was lost (None while it is kept alive, or after ``revoke()``/``stop()``)."""
        self._renewed_at = time.monotonic() if granted_at is None else granted_at
        self._backoff = _MIN_BACKOFF

    @property
    def interval(self) -> float:
        """Seconds between two renewals: a third of the TTL."""
        return self.ttl / 3

    def remaining(self) -> float:
        """Seconds until the lease may have expired, counted from the send
        time of the last acknowledged renewal (0 when it may be gone)."""
        return max(0.0, self._renewed_at + self.ttl - time.monotonic())

    def _renewed(self, sent_at: float, resp: pb.LeaseKeepAliveResponse) -> None:
        self._renewed_at = max(self._renewed_at, sent_at)
        if resp.ttl_ms:
            self.ttl = resp.ttl_ms / 1000
        self._backoff = _MIN_BACKOFF

    def _expired_error(self) -> Timeout:
        return Timeout(
            f"lease {self.id}: no renewal acknowledged within its TTL of {self.ttl:g}s; the leader may have expired it"
        )

    def _retry_delay(self, err: Error) -> float:
        if isinstance(err, NotLeader) and err.leader_addr:
            return 0.0
        delay = random.uniform(self._backoff / 2, self._backoff)
        self._backoff = min(_MAX_BACKOFF, self._backoff * 2)
        return min(delay, self.remaining())


class _EOF:
    pass


class _SyncStream:
    """One ``LeaseKeepAlive`` call of the sync client: requests go through a
    queue (consumed by gRPC), responses are read by a thread into a queue so
    that a wait for an answer can time out."""

    def __init__(self, stub: Any):
        self._requests: queue.Queue = queue.Queue()
        self._responses: queue.Queue = queue.Queue()
        self._call = stub.LeaseKeepAlive(iter(self._requests.get, None))
        self._reader = threading.Thread(target=self._read, name="d-engine lease keepalive reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for resp in self._call:
                self._responses.put(resp)
            self._responses.put(_EOF)
        except grpc.RpcError as e:
            self._responses.put(e)
        except Exception as e:  # noqa: BLE001 - handed to the keepalive loop, which stops on it
            self._responses.put(e)

    def send(self, lease_id: int) -> None:
        self._requests.put(pb.LeaseKeepAliveRequest(id=lease_id))

    def recv(self, timeout: float) -> Optional[pb.LeaseKeepAliveResponse]:
        """The next response; None if none came in ``timeout`` seconds.
        Raises the call's RpcError, or Unavailable when the server ended it."""
        try:
            item = self._responses.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None
        if item is _EOF:
            raise Unavailable("the server closed the lease keepalive stream")
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()


class Lease(_LeaseState):
    """A granted lease kept alive by a background thread (``Client.lease(ttl)``).

    ``id`` is the lease id to pass as ``put(..., lease=lease.id)``; ``lost``
    is a ``threading.Event`` set when the lease is lost (``error`` then says
    why and ``on_lost(error)`` was called from the keepalive thread). Leaving
    the ``with`` block calls ``revoke()``: the keepalive stops and the lease
    and its keys are deleted. ``stop()`` only stops renewing (the lease then
    expires after its TTL).
    """

    def __init__(
        self,
        client: Client,
        lease_id: int,
        ttl: float,
        on_lost: Optional[OnLost] = None,
        granted_at: Optional[float] = None,
    ):
        super().__init__(lease_id, ttl, granted_at)
        self._client = client
        self._on_lost = on_lost
        self.lost = threading.Event()
        self._stopping = threading.Event()
        self._stream: Optional[_SyncStream] = None
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"d-engine lease {lease_id} keepalive", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the keepalive runs and the lease was not lost."""
        return not self.lost.is_set() and not self._stopping.is_set()

    def stop(self) -> None:
        """Stops renewing (without revoking); the lease expires after its TTL."""
        self._stopping.set()
        with self._guard:
            stream = self._stream
        if stream is not None:
            stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)

    def revoke(self) -> int:
        """Stops renewing and revokes the lease (deleting its keys); returns
        the number of keys deleted (0 if the lease was already gone)."""
        self.stop()
        try:
            return self._client.lease_revoke(self.id)
        except LeaseNotFound:
            return 0

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.revoke()
        except Error:
            if exc is None:
                raise
            # the block's own exception wins; the lease expires after its TTL anyway

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else ("stopped" if self._stopping.is_set() else "alive")
        return f"<Lease id={self.id} ttl={self.ttl:g}s {state}>"

    # -- the keepalive thread --------------------------------------------
    def _lose(self, err: Error) -> None:
        if self.lost.is_set() or self._stopping.is_set():
            return
        self.error = err
        log.warning("lease %d lost: %s", self.id, err)
        if self._on_lost is not None:
            try:
                self._on_lost(err)
            except Exception:  # noqa: BLE001 - a failing callback must not kill the thread silently
                log.exception("on_lost callback of lease %d raised", self.id)
        self.lost.set()

    def _run(self) -> None:
        first = True
        while not self._stopping.is_set():
            if self.remaining() <= 0:
                self._lose(self._expired_error())
                return
            target = self._client._router.target(True)
            try:
                stubs = self._client._stubs(target)
                stream = _SyncStream(stubs.lease)
            except ClientClosed:
                return
            with self._guard:
                self._stream = stream
            if self._stopping.is_set():
                stream.close()
                return
            try:
                err = self._keep_alive(stream, target, first)
            finally:
                with self._guard:
                    self._stream = None
                stream.close()
            first = False
            if err is None or self._stopping.is_set():
                return
            if _fatal(err):
                self._lose(err)
                return
            self._client._router.failed(target, err)
            if self._stopping.wait(self._retry_delay(err)):
                return

    def _keep_alive(self, stream: _SyncStream, target: str, first: bool) -> Optional[Error]:
        """Renews over one stream until it fails (returns the error) or the
        helper stops (returns None). The first renewal of a new stream after
        a failure goes out at once; otherwise every ``interval`` seconds."""
        next_at = time.monotonic() + (self.interval if first else 0.0)
        while True:
            if self._stopping.wait(max(0.0, next_at - time.monotonic())):
                return None
            sent_at = time.monotonic()
            stream.send(self.id)
            wait = min(self._client._timeout, self._renewed_at + self.ttl - sent_at)
            try:
                resp = stream.recv(wait)
            except grpc.RpcError as e:
                return None if self._stopping.is_set() else codec.error_from_rpc(e, target)
            except Error as e:
                return e
            if resp is None:
                if self._stopping.is_set():
                    return None
                return self._expired_error() if self.remaining() <= 0 else Unavailable(f"{target}: no keepalive answer")
            self._renewed(sent_at, resp)
            self._client._router.succeeded(target, True)
            next_at = sent_at + self.interval


class AsyncLease(_LeaseState):
    """A lease kept alive by an asyncio task (``AsyncClient.lease(ttl)``).

    Use ``async with client.lease(10) as lease:`` (grants on entry, revokes
    on exit) or ``lease = await client.lease(10)`` (then ``await
    lease.revoke()``). ``lost`` is an ``asyncio.Event``; ``on_lost(error)``
    may be a plain function or a coroutine function. Otherwise as :class:`Lease`.
    """

    def __init__(self, client: AsyncClient, ttl: float, lease_id: int = 0, on_lost: Optional[OnLost] = None):
        super().__init__(codec.check_id(lease_id), ttl)
        self._ttl_ms = codec.lease_ttl_ms(ttl)
        self._client = client
        self._on_lost = on_lost
        self.lost = asyncio.Event()
        self._stopping = False
        self._task: Optional[asyncio.Task] = None
        self._started = False

    async def _start(self) -> AsyncLease:
        if self._started:
            return self
        self._started = True
        sent = time.monotonic()
        self.id = await self._client.lease_grant(self.ttl, id=self.id)
        self._renewed_at = sent
        self._task = asyncio.ensure_future(self._run())
        self._client._leases.add(self)
        return self

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._start().__await__()

    @property
    def alive(self) -> bool:
        return self._started and not self.lost.is_set() and not self._stopping

    async def stop(self) -> None:
        """Stops renewing (without revoking); the lease expires after its TTL."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def revoke(self) -> int:
        """Stops renewing and revokes the lease (deleting its keys); returns
        the number of keys deleted (0 if the lease was already gone)."""
        await self.stop()
        if not self.id:
            return 0
        try:
            return await self._client.lease_revoke(self.id)
        except LeaseNotFound:
            return 0

    async def __aenter__(self) -> AsyncLease:
        return await self._start()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.revoke()
        except Error:
            if exc is None:
                raise

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else ("stopped" if self._stopping else "alive")
        return f"<AsyncLease id={self.id} ttl={self.ttl:g}s {state}>"

    async def _lose(self, err: Error) -> None:
        if self.lost.is_set() or self._stopping:
            return
        self.error = err
        log.warning("lease %d lost: %s", self.id, err)
        if self._on_lost is not None:
            try:
                r: Union[Awaitable[Any], Any] = self._on_lost(err)
                if inspect.isawaitable(r):
                    await r
            except Exception:  # noqa: BLE001 - a failing callback must not kill the task silently
                log.exception("on_lost callback of lease %d raised", self.id)
        self.lost.set()

    async def _run(self) -> None:
        first = True
        while not self._stopping:
            if self.remaining() <= 0:
                await self._lose(self._expired_error())
                return
            target = self._client._router.target(True)
            try:
                stubs = self._client._stubs(target)
            except ClientClosed:
                return
            call = stubs.lease.LeaseKeepAlive()
            try:
                err = await self._keep_alive(call, target, first)
            finally:
                call.cancel()
            first = False
            if err is None or self._stopping:
                return
            if _fatal(err):
                await self._lose(err)
                return
            self._client._router.failed(target, err)
            await asyncio.sleep(self._retry_delay(err))

    async def _keep_alive(self, call: Any, target: str, first: bool) -> Optional[Error]:
        next_at = time.monotonic() + (self.interval if first else 0.0)
        while not self._stopping:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent_at = time.monotonic()
            wait = max(0.001, min(self._client._timeout, self._renewed_at + self.ttl - sent_at))
            try:
                await call.write(pb.LeaseKeepAliveRequest(id=self.id))
                resp = await asyncio.wait_for(call.read(), wait)
            except asyncio.TimeoutError:
                if self.remaining() <= 0:
                    return self._expired_error()
                return Unavailable(f"{target}: no keepalive answer")
            except grpc.RpcError as e:
                return codec.error_from_rpc(e, target)
            except asyncio.InvalidStateError:
                # write() after the server ended the call: read its status
                return await _call_error(call, target)
            if resp is grpc.aio.EOF:
                return await _call_error(call, target)
            self._renewed(sent_at, resp)
            self._client._router.succeeded(target, True)
            next_at = sent_at + self.interval
        return None


async def _call_error(call: Any, target: str) -> Error:
    """The error a finished keepalive call ended with."""
    try:
        code = await call.code()
    except Exception:  # noqa: BLE001 - a broken call: treat as a lost connection
        return Unavailable(f"{target}: the lease keepalive stream broke")
    if code == grpc.StatusCode.OK:
        return Unavailable(f"{target}: the server closed the lease keepalive stream")
    details = await call.details()
    trailers = await call.trailing_metadata()
    return codec.error_from_rpc(_FinishedCall(code, details, trailers), target)


class _FinishedCall(grpc.RpcError):
    """The status of a finished aio call, in the shape ``error_from_rpc`` reads."""

    def __init__(self, code: grpc.StatusCode, details: Optional[str], trailers: Any):
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> Optional[str]:
        return self._details

    def trailing_metadata(self) -> Any:
        return tuple(self._trailers or ())
