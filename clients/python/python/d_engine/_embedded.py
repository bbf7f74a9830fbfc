"""The engine in-process: :class:`EmbeddedEngine` (blocking) and
:class:`AsyncEmbeddedEngine` (asyncio), over the Rust extension ``d_engine._native``.

Clients of an embedded engine have the same method names, argument types,
return types and exceptions as :class:`d_engine.Client` /
:class:`d_engine.AsyncClient`, so the same code runs in both modes.

Threading: every blocking call releases the GIL while the engine works.
The asyncio form never blocks the event loop: requests are started on the
engine's own tokio runtime and complete the awaiting future through
``loop.call_soon_threadsafe`` (no executor threads).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, List, Optional, Sequence, Union

from . import _codec as codec
from ._client import _limit
from ._codec import BytesLike
from ._errors import ClientClosed, Error, WatchCanceled
from ._types import CasResult, Consistency, KeyValue, LeaderInfo, Member, WatchEvent

try:
    from . import _native
except ImportError as _e:  # pragma: no cover - only in a source tree without the built extension
    _native = None
    _NATIVE_ERROR: Optional[ImportError] = _e
else:
    _NATIVE_ERROR = None

PathLike = Union[str, "os.PathLike[str]"]

_CONSISTENCY_CODE = {Consistency.LINEARIZABLE: 0, Consistency.LEASE: 1, Consistency.EVENTUAL: 2}
_WATCH_POLL = 0.2
"""Seconds a blocking watch waits per native call (signals are handled in between)."""
_ASYNC_WATCH_MAX_QUEUED = 65536
"""Events an asyncio watch buffers for a slow consumer before it is canceled."""


def _native_module() -> Any:
    if _native is None:
        raise Error(
            "the d-engine native extension (d_engine._native) is not built; "
            f"install the package with `pip install ./clients/python` ({_NATIVE_ERROR})"
        )
    return _native


def _path(value: object, what: str) -> str:
    if isinstance(value, (str, os.PathLike)):
        p = os.fspath(value)
        if isinstance(p, str) and p:
            return p
    raise TypeError(f"{what} must be a non-empty str or os.PathLike path, not {type(value).__name__}")


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise codec.InvalidArgument(f"{what} must be a finite number of seconds >= 0, got {value}")
    return float(value)


def _revision(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"start_revision must be an int, not {type(value).__name__}")
    if value < 0:
        raise codec.InvalidArgument(f"start_revision must be >= 0, got {value}")
    return value


def _cons(consistency: Union[Consistency, str]) -> int:
    return _CONSISTENCY_CODE[Consistency.parse(consistency)]


def _keys(keys: Sequence[BytesLike]) -> List[bytes]:
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise TypeError("keys must be a list of keys, not a single key")
    try:
        items = list(keys)
    except TypeError:
        raise TypeError(f"keys must be a list of keys, not {type(keys).__name__}") from None
    return [codec.check_key(k) for k in items]


def _kv(t: Optional[tuple]) -> Optional[KeyValue]:
    return None if t is None else KeyValue(*t)


def _kvs(ts: List[Optional[tuple]]) -> List[Optional[KeyValue]]:
    return [None if t is None else KeyValue(*t) for t in ts]


def _scan(ts: List[tuple]) -> List[KeyValue]:
    return [KeyValue(*t) for t in ts]


def _cas(t: tuple) -> CasResult:
    return CasResult(succeeded=t[0], current=_kv(t[1]), revision=t[2])


def _event(t: tuple) -> WatchEvent:
    return WatchEvent(type=t[0], kv=KeyValue(*t[1]))


def _leader(t: tuple) -> LeaderInfo:
    return LeaderInfo(id=t[0], addr=t[1])


def _members(ts: List[tuple]) -> List[Member]:
    return [Member(id=i, peer_addr=p, client_addr=c, role=r) for (i, p, c, r) in ts]


def _cas_args(key: BytesLike, expected: Optional[BytesLike], new_value: Optional[BytesLike], ttl: Optional[float]):
    return (
        codec.check_key(key),
        None if expected is None else codec.check_value(expected, "expected"),
        None if new_value is None else codec.check_value(new_value, "new_value"),
        codec.ttl_ms(ttl),
    )


class EmbeddedEngine:
    """A d-engine node running inside this process.

    ``EmbeddedEngine.start(data_dir)`` runs a single node with no network
    listeners; ``EmbeddedEngine.start_with("d-engine.toml")`` runs any
    configuration (``docs/config.md``), e.g. one member of a cluster whose
    other members are embedded engines in other processes or
    ``d-engine-server``s. A data directory can be used by one engine at a
    time (another one raises ``StorageError``). Use as a context manager or
    call ``stop()``; a stopped engine raises ``ClientClosed``.
    """

    def __init__(self, native: Any):
        if _native is None or not isinstance(native, _native.Engine):
            raise TypeError("use EmbeddedEngine.start(data_dir) or EmbeddedEngine.start_with(config_path)")
        self._n = native

    @classmethod
    def start(cls, data_dir: PathLike) -> EmbeddedEngine:
        """Starts a single-node engine storing its data in ``data_dir``
        (created if missing). Restarting on the same directory keeps every
        acknowledged write."""
        return cls(_native_module().Engine.start(_path(data_dir, "data_dir")))

    @classmethod
    def start_with(cls, config_path: PathLike) -> EmbeddedEngine:
        """Starts an engine from a TOML configuration file; invalid
        configuration raises ``InvalidArgument`` naming the key."""
        return cls(_native_module().Engine.start_with(_path(config_path, "config_path")))

    def wait_ready(self, timeout: float = 10.0) -> LeaderInfo:
        """Blocks until a leader is known (and, if this node leads, it serves
        reads and writes); raises ``Timeout`` after ``timeout`` seconds."""
        return _leader(self._n.wait_ready(_seconds(timeout, "timeout")))

    def client(self) -> EmbeddedClient:
        """The in-process client (same API as :class:`d_engine.Client`)."""
        return EmbeddedClient(self._n)

    def aio_client(self) -> AsyncEmbeddedClient:
        """The in-process asyncio client (same API as :class:`d_engine.AsyncClient`)."""
        return AsyncEmbeddedClient(self._n)

    @property
    def node_id(self) -> int:
        return self._n.node_id

    @property
    def peer_addr(self) -> Optional[str]:
        """The bound peer (Raft) address, or None without listeners."""
        return self._n.peer_addr

    @property
    def client_addr(self) -> Optional[str]:
        """The bound client gRPC API address (usable by :class:`d_engine.Client`), or None."""
        return self._n.client_addr

    @property
    def stopped(self) -> bool:
        return self._n.closed

    def stop(self) -> None:
        """Stops the node (the WAL is synced, threads joined). Idempotent."""
        self._n.stop()

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedEngine(node_id={self.node_id}, client_addr={self.client_addr!r}, stopped={self.stopped})"


class EmbeddedClient:
    """In-process client of an :class:`EmbeddedEngine`; the methods of
    :class:`d_engine.Client`. On a follower, writes and linearizable/lease
    reads are forwarded to the leader (when members have client addresses).
    Thread-safe. ``close()`` closes this client only, not the engine."""

    def __init__(self, native: Any):
        self._n = native
        self._closed = False

    def _engine(self) -> Any:
        if self._closed:
            raise ClientClosed("the client is closed")
        return self._n

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> EmbeddedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, key: BytesLike, value: BytesLike, ttl: Optional[float] = None) -> int:
        """Stores ``value`` under ``key`` (``ttl`` in seconds); returns the write's revision."""
        return self._engine().put(codec.check_key(key), codec.check_value(value), codec.ttl_ms(ttl))

    def get(
        self, key: BytesLike, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> Optional[KeyValue]:
        """The key's current value and metadata, or None."""
        t = self._engine().get(codec.check_key(key), _cons(consistency))
        return None if t is None else KeyValue(*t)

    def get_multi(
        self, keys: Sequence[BytesLike], consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[Optional[KeyValue]]:
        """One result per key, in order, read at one point in time."""
        return _kvs(self._engine().get_multi(_keys(keys), _cons(consistency)))

    def delete(self, key: BytesLike) -> bool:
        """Deletes ``key``; True if it existed."""
        return self._engine().delete(codec.check_key(key))

    def compare_and_swap(
        self,
        key: BytesLike,
        expected: Optional[BytesLike],
        new_value: Optional[BytesLike],
        ttl: Optional[float] = None,
    ) -> CasResult:
        """Sets ``key`` to ``new_value`` if its value equals ``expected``
        (``None``: the key must not exist). ``new_value=None`` deletes."""
        return _cas(self._engine().compare_and_swap(*_cas_args(key, expected, new_value, ttl)))

    def scan_prefix(
        self, prefix: BytesLike, limit: int = 0, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[KeyValue]:
        """Up to ``limit`` pairs (0 = the node's maximum) under ``prefix``, in key order."""
        return _scan(self._engine().scan_prefix(codec.check_prefix(prefix), _limit(limit), _cons(consistency)))

    def watch(self, key: BytesLike, start_revision: int = 0) -> EmbeddedWatch:
        """Iterator of changes to ``key`` after commit, in revision order
        (served by the local node)."""
        return EmbeddedWatch(self._engine().watch(codec.check_key(key), False, _revision(start_revision)))

    def watch_prefix(self, prefix: BytesLike, start_revision: int = 0) -> EmbeddedWatch:
        """Iterator of changes to every key starting with ``prefix``."""
        return EmbeddedWatch(self._engine().watch(codec.check_prefix(prefix), True, _revision(start_revision)))

    def members(self) -> List[Member]:
        return _members(self._engine().members())

    def leader(self) -> LeaderInfo:
        return _leader(self._engine().leader())


class EmbeddedWatch:
    """An iterator of :class:`WatchEvent` (like :class:`d_engine.Watch`).
    Ends by raising ``WatchCanceled`` (engine stopped, consumer too slow) or
    the node's error; ``cancel()`` (from any thread, or leaving the ``with``
    block) ends the iteration quietly. ``next()`` blocks without the GIL."""

    def __init__(self, native_watch: Any):
        self._w = native_watch

    def __iter__(self) -> EmbeddedWatch:
        return self

    def __next__(self) -> WatchEvent:
        while True:
            t = self._w.next_event(_WATCH_POLL)
            if t is None:
                continue  # timed out: lets Python run signal handlers (Ctrl-C)
            if t is False:
                raise StopIteration
            return _event(t)

    def cancel(self) -> None:
        self._w.cancel()

    def __enter__(self) -> EmbeddedWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


# ---------------------------------------------------------------- asyncio


class _Done:
    """Completes an asyncio future from a runtime thread."""

    __slots__ = ("loop", "fut", "conv")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future, conv: Optional[Callable[[Any], Any]]):
        self.loop, self.fut, self.conv = loop, fut, conv

    def __call__(self, value: Any, exc: Optional[BaseException]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._settle, value, exc)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits any more

    def _settle(self, value: Any, exc: Optional[BaseException]) -> None:
        if self.fut.done():
            return
        if exc is not None:
            self.fut.set_exception(exc)
            return
        try:
            self.fut.set_result(value if self.conv is None else self.conv(value))
        except Exception as e:  # noqa: BLE001 - conversion failure goes to the awaiter
            self.fut.set_exception(e)


class AsyncEmbeddedClient:
    """asyncio in-process client; the methods of :class:`d_engine.AsyncClient`.
    Requests run on the engine's runtime and never block the event loop."""

    def __init__(self, native: Any):
        self._n = native
        self._closed = False

    def _start(self, conv: Optional[Callable[[Any], Any]], method: str, *args: Any) -> asyncio.Future:
        if self._closed:
            raise ClientClosed("the client is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        getattr(self._n, method)(*args, _Done(loop, fut, conv))
        return fut

    async def close(self) -> None:
        self._closed = True

    async def __aenter__(self) -> AsyncEmbeddedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def put(self, key: BytesLike, value: BytesLike, ttl: Optional[float] = None) -> int:
        args = (codec.check_key(key), codec.check_value(value), codec.ttl_ms(ttl))
        return await self._start(None, "put_async", *args)

    async def get(
        self, key: BytesLike, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> Optional[KeyValue]:
        return await self._start(_kv, "get_async", codec.check_key(key), _cons(consistency))

    async def get_multi(
        self, keys: Sequence[BytesLike], consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[Optional[KeyValue]]:
        return await self._start(_kvs, "get_multi_async", _keys(keys), _cons(consistency))

    async def delete(self, key: BytesLike) -> bool:
        return await self._start(None, "delete_async", codec.check_key(key))

    async def compare_and_swap(
        self,
        key: BytesLike,
        expected: Optional[BytesLike],
        new_value: Optional[BytesLike],
        ttl: Optional[float] = None,
    ) -> CasResult:
        return await self._start(_cas, "compare_and_swap_async", *_cas_args(key, expected, new_value, ttl))

    async def scan_prefix(
        self, prefix: BytesLike, limit: int = 0, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[KeyValue]:
        args = (codec.check_prefix(prefix), _limit(limit), _cons(consistency))
        return await self._start(_scan, "scan_prefix_async", *args)

    async def watch(self, key: BytesLike, start_revision: int = 0) -> AsyncEmbeddedWatch:
        if self._closed:
            raise ClientClosed("the client is closed")
        return AsyncEmbeddedWatch(self._n.watch(codec.check_key(key), False, _revision(start_revision)))

    async def watch_prefix(self, prefix: BytesLike, start_revision: int = 0) -> AsyncEmbeddedWatch:
        if self._closed:
            raise ClientClosed("the client is closed")
        return AsyncEmbeddedWatch(self._n.watch(codec.check_prefix(prefix), True, _revision(start_revision)))

    async def members(self) -> List[Member]:
        if self._closed:
            raise ClientClosed("the client is closed")
        return _members(self._n.members())

    async def leader(self) -> LeaderInfo:
        if self._closed:
            raise ClientClosed("the client is closed")
        return _leader(self._n.leader())


_END = object()


class AsyncEmbeddedWatch:
    """``async for event in watch`` (like :class:`d_engine.AsyncWatch`).
    Must be created inside a running event loop."""

    def __init__(self, native_watch: Any):
        self._w = native_watch
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._failed: Optional[BaseException] = None
        self._w.pump(self._deliver)

    def _deliver(self, value: Any, exc: Optional[BaseException]) -> None:  # runtime thread
        try:
            self._loop.call_soon_threadsafe(self._enqueue, value, exc)
        except RuntimeError:
            self._w.cancel()  # the loop is gone

    def _enqueue(self, value: Any, exc: Optional[BaseException]) -> None:
        if exc is not None:
            self._queue.put_nowait(exc)
        elif value is False:
            self._queue.put_nowait(_END)
        elif self._queue.qsize() >= _ASYNC_WATCH_MAX_QUEUED:
            self._w.cancel()
            self._queue.put_nowait(
                WatchCanceled(f"the consumer fell {_ASYNC_WATCH_MAX_QUEUED} events behind; the watch was canceled")
            )
        else:
            self._queue.put_nowait(_event(value))

    def __aiter__(self) -> AsyncEmbeddedWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._failed is not None:
            raise self._failed
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._failed = item
            raise item
        return item

    def cancel(self) -> None:
        self._w.cancel()

    async def __aenter__(self) -> AsyncEmbeddedWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncEmbeddedEngine:
    """The asyncio form of :class:`EmbeddedEngine`: ``engine = await
    AsyncEmbeddedEngine.start(data_dir)``; ``await engine.wait_ready()``;
    ``engine.client()`` is an :class:`AsyncEmbeddedClient`; ``await
    engine.stop()`` or ``async with``. Starting and stopping (disk work)
    run in the loop's default executor; requests never block the loop."""

    def __init__(self, engine: EmbeddedEngine):
        if not isinstance(engine, EmbeddedEngine):
            raise TypeError("use `await AsyncEmbeddedEngine.start(data_dir)` or `.start_with(config_path)`")
        self.sync = engine
        """The blocking :class:`EmbeddedEngine` behind this one."""

    @classmethod
    async def start(cls, data_dir: PathLike) -> AsyncEmbeddedEngine:
        path = _path(data_dir, "data_dir")
        loop = asyncio.get_running_loop()
        return cls(await loop.run_in_executor(None, EmbeddedEngine.start, path))

    @classmethod
    async def start_with(cls, config_path: PathLike) -> AsyncEmbeddedEngine:
        path = _path(config_path, "config_path")
        loop = asyncio.get_running_loop()
        return cls(await loop.run_in_executor(None, EmbeddedEngine.start_with, path))

    async def wait_ready(self, timeout: float = 10.0) -> LeaderInfo:
        t = _seconds(timeout, "timeout")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.sync._n.wait_ready_async(t, _Done(loop, fut, _leader))
        return await fut

    def client(self) -> AsyncEmbeddedClient:
        return self.sync.aio_client()

    @property
    def node_id(self) -> int:
        return self.sync.node_id

    @property
    def client_addr(self) -> Optional[str]:
        return self.sync.client_addr

    @property
    def peer_addr(self) -> Optional[str]:
        return self.sync.peer_addr

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.sync.stop)

    async def __aenter__(self) -> AsyncEmbeddedEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
