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
import importlib.util
import os
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from google.protobuf.message import Message

from . import _codec as codec
from ._client import _limit
from ._codec import BytesLike
from ._embedded_admin import AsyncEmbeddedAdminMixin, EmbeddedAdminMixin
from ._errors import ClientClosed, Error, Overloaded, Timeout, WatchCanceled
from ._lease import AsyncLease, Lease, OnLost, _fatal
from ._lock import AsyncLeadership, AsyncLock, Leadership, Lock, holder_key, leader_key_from_pb, leader_key_pb
from ._proto.dengine.v1 import client_pb2 as pb
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
from ._watch import FilterArg, watch_request

try:
    from . import _native  # type: ignore[attr-defined]  # the Rust extension (absent in the client-only wheel)
except ImportError as _e:  # pragma: no cover - only in a source tree without the built extension
    _native = None
    _NATIVE_ERROR: Optional[ImportError] = _e
else:
    _NATIVE_ERROR = None

PathLike = Union[str, "os.PathLike[str]"]
M = TypeVar("M", bound=Message)

_CONSISTENCY_CODE = {Consistency.LINEARIZABLE: 0, Consistency.LEASE: 1, Consistency.EVENTUAL: 2}
_WATCH_POLL = 0.2
"""Seconds a blocking watch waits per native call (signals are handled in between)."""
_ASYNC_WATCH_MAX_QUEUED = 65536
"""Events an asyncio watch buffers for a slow consumer before it is canceled."""
_RETRY_PAUSE = 0.05
"""Seconds between two attempts of a lock or campaign after a retryable error."""


EMBEDDED_AVAILABLE = _native is not None
"""Whether this installation has the engine (the Rust extension
``d_engine._native``): True for the abi3 wheel and ``pip install
./clients/python``, False for the client-only wheel, whose gRPC clients
work the same."""


def _native_module() -> Any:
    """The Rust extension, or ImportError saying how to get it."""
    if _native is None:
        present = importlib.util.find_spec("d_engine._native") is not None
        why = (
            f"is installed but does not load ({_NATIVE_ERROR})"
            if present
            else "is not in this installation (the client-only build, or a source tree that was not built)"
        )
        raise ImportError(
            f"EmbeddedEngine needs the d-engine engine; its Rust extension d_engine._native {why}. "
            "Install the full package: the d_engine-*-abi3 wheel (clients/python/scripts/build_wheels.sh) "
            "or `pip install ./clients/python` (compiles it with cargo).",
            name="d_engine._native",
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


def _cas(t: tuple) -> CasResult:
    return CasResult(succeeded=t[0], current=_kv(t[1]), revision=t[2])


def _event(t: tuple) -> WatchEvent:
    prev = KeyValue(*t[2]) if len(t) > 2 and t[2] is not None else None
    return WatchEvent(type=t[0], kv=KeyValue(*t[1]), prev_kv=prev)


def _watch_args(
    key: object,
    start_revision: object,
    prefix: bool,
    range_end: Optional[object],
    prev_kv: bool,
    progress_notify: bool,
    filters: FilterArg,
) -> tuple:
    """The native ``watch(...)`` arguments, checked like the gRPC clients' watch options."""
    req = watch_request(
        key,
        _revision(start_revision),
        prefix=prefix,
        range_end=range_end,
        prev_kv=prev_kv,
        progress_notify=progress_notify,
        filters=filters,
    )
    return (
        req.key,
        req.prefix,
        req.start_revision,
        req.range_end or None,
        req.prev_kv,
        req.progress_notify,
        pb.NO_PUT in req.filters,
        pb.NO_DELETE in req.filters,
    )


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


def _wait_timeout(timeout: object) -> Optional[float]:
    """The ``timeout`` of a lock or campaign: seconds, or None (no limit)."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    return None if timeout is None else float(timeout)


class _Pending:
    """A native call started with ``call_async``, awaited from a thread
    (``wait`` with a timeout, so the caller can give up or see signals)."""

    __slots__ = ("_event", "_value", "_exc")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._value: Any = None
        self._exc: Optional[BaseException] = None

    def __call__(self, value: Any, exc: Optional[BaseException]) -> None:  # runtime thread
        self._value, self._exc = value, exc
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(max(0.0, timeout))

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._value


class EmbeddedEngine(EmbeddedAdminMixin):
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

    def _native_engine(self) -> Any:
        return self._n

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


class EmbeddedClient(EmbeddedAdminMixin):
    """In-process client of an :class:`EmbeddedEngine`; the methods of
    :class:`d_engine.Client`. On a follower, writes and linearizable/lease
    reads are forwarded to the leader (when members have client addresses).
    Thread-safe. ``close()`` closes this client only, not the engine (its
    keepalive helpers stop; their leases expire after their TTL)."""

    def __init__(self, native: Any):
        self._n = native
        self._closed = False
        self._guard = threading.Lock()
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()

    def _engine(self) -> Any:
        if self._closed:
            raise ClientClosed("the client is closed")
        return self._n

    _native_engine = _engine

    def close(self) -> None:
        with self._guard:
            self._closed = True
            leases = list(self._leases)
        for lease in leases:
            lease.stop()

    def __enter__(self) -> EmbeddedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- key-value -------------------------------------------------------
    def put(self, key: BytesLike, value: BytesLike, ttl: Optional[float] = None, *, lease: Optional[int] = None) -> int:
        """Stores ``value`` under ``key`` (``ttl`` in seconds, or attached to
        ``lease``: deleted with it); returns the write's revision. A put
        without ``lease`` detaches the key from any lease it had."""
        key, value = codec.check_key(key), codec.check_value(value)
        ttl_ms, lease_id = codec.put_lease(ttl, lease)
        if lease_id:
            req = pb.PutRequest(key=key, value=value, lease=lease_id)
            return self._call("Put", req, pb.PutResponse).revision
        return self._engine().put(key, value, ttl_ms)

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
        """Every pair whose key starts with ``prefix``, in key order (``limit``
        > 0: the first ``limit``). Reads as many range pages as needed:
        nothing is left out, but each page is its own point in time."""
        limit = _limit(limit)
        out: List[KeyValue] = []
        page_size = min(limit, codec.MAX_RANGE_LIMIT)
        for kv in self.range_iter(prefix, prefix=True, page_size=page_size, consistency=consistency):
            out.append(kv)
            if len(out) == limit:
                break
        return out

    def range(
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
        """One page of the keys in ``[key, range_end)``, in key order (see
        :meth:`d_engine.Client.range`). When ``page.more``, ``range(page.next_key,
        ...)`` with the same ``range_end`` reads the next page (``range_iter``
        does this)."""
        req = codec.range_request(key, range_end, prefix, limit, keys_only, count_only, consistency)
        return codec.range_from_pb(self._call("Range", req, pb.RangeResponse))

    def range_iter(
        self,
        key: BytesLike,
        range_end: Optional[BytesLike] = None,
        *,
        prefix: bool = False,
        page_size: int = 0,
        keys_only: bool = False,
        consistency: Union[Consistency, str] = Consistency.LINEARIZABLE,
    ) -> Iterator[KeyValue]:
        """Every pair of the range (arguments as for :meth:`range`), reading
        pages of ``page_size`` (0 = the maximum) lazily. Each key present for
        the whole walk is yielded exactly once; each page is its own point in
        time (``RangePage.revision``)."""
        req = codec.range_request(key, range_end, prefix, page_size, keys_only, False, consistency)
        return self._walk(req)

    def _walk(self, first: pb.RangeRequest) -> Iterator[KeyValue]:
        req: Optional[pb.RangeRequest] = first
        while req is not None:
            page = codec.range_from_pb(self._call("Range", req, pb.RangeResponse))
            yield from page.kvs
            req = codec.next_page(req, page)

    def delete_range(
        self,
        key: BytesLike,
        range_end: Optional[BytesLike] = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
    ) -> DeleteRangeResult:
        """Deletes every key in ``[key, range_end)`` (or starting with ``key``
        when ``prefix=True``) in one replicated step. ``prev_kv=True``
        returns the deleted pairs."""
        k, end = codec.range_bounds(key, range_end, prefix)
        req = pb.DeleteRangeRequest(key=k, range_end=end, prev_kv=bool(prev_kv))
        return codec.delete_range_from_pb(self._call("DeleteRange", req, pb.DeleteRangeResponse))

    def txn(
        self,
        compare: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """Atomically: if every ``compare`` holds, run the ``success`` ops,
        else the ``failure`` ops (in order, in one log entry); see
        :meth:`d_engine.Client.txn`."""
        req = txn_request(compare, success, failure)
        return txn_from_pb(self._call("Txn", req, pb.TxnResponse))

    def watch(
        self,
        key: BytesLike,
        start_revision: int = 0,
        *,
        range_end: Optional[BytesLike] = None,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: FilterArg = (),
        resume_timeout: Optional[float] = None,
    ) -> EmbeddedWatch:
        """Iterator of changes to ``key`` (or ``[key, range_end)``) after
        commit, in revision order (served by the local node). Options as for
        :meth:`d_engine.Client.watch` (``prev_kv``, ``progress_notify``,
        ``filters``); the local node's watch does not need to resume."""
        args = _watch_args(key, start_revision, False, range_end, prev_kv, progress_notify, filters)
        return EmbeddedWatch(self._engine().watch(*args))

    def watch_prefix(
        self,
        prefix: BytesLike,
        start_revision: int = 0,
        *,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: FilterArg = (),
        resume_timeout: Optional[float] = None,
    ) -> EmbeddedWatch:
        """Iterator of changes to every key starting with ``prefix``."""
        args = _watch_args(prefix, start_revision, True, None, prev_kv, progress_notify, filters)
        return EmbeddedWatch(self._engine().watch(*args))

    # -- leases ----------------------------------------------------------
    def lease_grant(self, ttl: float, *, id: int = 0) -> int:
        """Grants a lease of ``ttl`` seconds (0.001 ..= one year); returns its
        id (``id`` > 0 asks for that id). Keys put with ``lease=`` are deleted
        when it expires or is revoked. :meth:`lease` also keeps it alive."""
        req = pb.LeaseGrantRequest(ttl_ms=codec.lease_ttl_ms(ttl), id=codec.check_id(id))
        return self._call("LeaseGrant", req, pb.LeaseGrantResponse).id

    def lease_revoke(self, lease_id: int) -> int:
        """Revokes the lease, deleting its keys in one step; returns how many.
        Raises LeaseNotFound if it does not exist (any more)."""
        req = pb.LeaseRevokeRequest(id=codec.check_id(lease_id))
        return self._call("LeaseRevoke", req, pb.LeaseRevokeResponse).deleted

    def lease_renew(self, lease_id: int) -> float:
        """Restarts the lease's TTL once; returns the TTL in seconds. Raises
        LeaseNotFound if it does not exist (any more)."""
        req = pb.LeaseKeepAliveRequest(id=codec.check_id(lease_id))
        return self._call("LeaseRenew", req, pb.LeaseKeepAliveResponse).ttl_ms / 1000

    def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo:
        """The lease's granted and remaining TTL (seconds) and key count; with
        ``keys=True`` also its keys. Raises LeaseNotFound if it does not exist."""
        req = pb.LeaseTimeToLiveRequest(id=codec.check_id(lease_id), keys=bool(keys))
        return codec.lease_info_from_pb(self._call("LeaseTimeToLive", req, pb.LeaseTimeToLiveResponse))

    def lease_list(self) -> List[LeaseStatus]:
        """Every live lease."""
        resp = self._call("LeaseList", pb.LeaseListRequest(), pb.LeaseListResponse)
        return [codec.lease_status_from_pb(x) for x in resp.leases]

    def lease(self, ttl: float, *, id: int = 0, on_lost: Optional[OnLost] = None) -> EmbeddedLease:
        """Grants a lease of ``ttl`` seconds and keeps it alive from a
        background thread (renewing every ``ttl / 3``). ``with
        client.lease(10) as lease:`` revokes it on exit. ``lease.lost`` (an
        Event) is set, and ``on_lost(error)`` called, if the lease is lost
        anyway (``LeaseNotFound``, or no renewal acknowledged within the TTL:
        ``Timeout``). See :class:`d_engine.Lease`."""
        granted_at = time.monotonic()
        lease_id = self.lease_grant(ttl, id=id)
        lease = EmbeddedLease(self, lease_id, ttl, on_lost, granted_at)  # type: ignore[arg-type]  # the embedded subclass overrides what uses gRPC internals
        with self._guard:
            self._leases.add(lease)
        return lease

    # -- locks and elections ---------------------------------------------
    def lock(
        self, name: BytesLike, ttl: float = 10.0, *, lease: Optional[int] = None, timeout: Optional[float] = None
    ) -> Lock:
        """Waits until the lock ``name`` is held (at most ``timeout`` seconds;
        None = as long as it takes) and returns it: ``with client.lock("jobs",
        ttl=10) as lock:``. Without ``lease``, a lease of ``ttl`` seconds is
        granted and kept alive for it. ``lock.revision`` is the fencing token.
        See :meth:`d_engine.Client.lock`."""
        name_b = codec.check_key(name, "lock name")
        limit = _wait_timeout(timeout)
        own = self.lease(ttl) if lease is None else None
        lease_id = own.id if own is not None else codec.check_id(lease)
        req = pb.LockRequest(name=name_b, lease=lease_id)
        try:
            resp = self._wait("Lock", req, pb.LockResponse, limit, own)
        except BaseException:
            self._abandon(own, holder_key(name_b, lease_id))
            raise
        return Lock(self, name_b, resp.key, resp.revision, own)  # type: ignore[arg-type]  # the embedded subclass overrides what uses gRPC internals

    def unlock(self, key: BytesLike) -> None:
        """Releases the lock held by ``key`` (``Lock.key``); nothing if it is already gone."""
        self._call("Unlock", pb.UnlockRequest(key=codec.check_key(key)), pb.UnlockResponse)

    def campaign(
        self,
        name: BytesLike,
        value: BytesLike,
        ttl: float = 10.0,
        *,
        lease: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Leadership:
        """Waits until elected leader of ``name`` (at most ``timeout``
        seconds), publishing ``value``: ``with client.campaign("scheduler",
        b"host-1", ttl=10) as leadership:``. Lease as for :meth:`lock`."""
        name_b, value_b = codec.check_key(name, "election name"), codec.check_value(value)
        limit = _wait_timeout(timeout)
        own = self.lease(ttl) if lease is None else None
        lease_id = own.id if own is not None else codec.check_id(lease)
        req = pb.CampaignRequest(name=name_b, lease=lease_id, value=value_b)
        try:
            resp = self._wait("Campaign", req, pb.CampaignResponse, limit, own)
        except BaseException:
            self._abandon(own, holder_key(name_b, lease_id))
            raise
        return Leadership(self, leader_key_from_pb(resp.leader), own)  # type: ignore[arg-type]  # the embedded subclass overrides what uses gRPC internals

    def proclaim(self, leader: LeaderKey, value: BytesLike) -> None:
        """Publishes a new value as the leader (NotHeld if the leadership is gone)."""
        req = pb.ProclaimRequest(leader=leader_key_pb(leader), value=codec.check_value(value))
        self._call("Proclaim", req, pb.ProclaimResponse)

    def resign(self, leader: LeaderKey) -> None:
        """Gives the leadership up (nothing if it is already gone)."""
        self._call("Resign", pb.ResignRequest(leader=leader_key_pb(leader)), pb.ResignResponse)

    def election_leader(self, name: BytesLike) -> Optional[KeyValue]:
        """The current leader's key and value, or None when the election has no leader."""
        req = pb.ElectionLeaderRequest(name=codec.check_key(name, "election name"))
        return codec.opt_kv(self._call("Leader", req, pb.ElectionLeaderResponse))

    def observe(self, name: BytesLike) -> EmbeddedObservation:
        """Iterator of the election's leaders, the current one first, then
        each new one (a new leader, or a new value proclaimed)."""
        name_b = codec.check_key(name, "election name")
        return EmbeddedObservation(self, name_b, self._engine().watch(name_b + b"/", True, 0))

    def _wait(
        self, method: str, req: Message, cls: Type[M], timeout: Optional[float], own: Optional[EmbeddedLease]
    ) -> M:
        """A call that waits its turn in the engine (Lock, Campaign) until
        ``timeout`` seconds have passed (None: no limit); fails at once with
        the lease's error when the helper's own lease is lost meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pending = _Pending()
            self._engine().call_async(method, req.SerializeToString(), pending)
            while True:
                step = _WATCH_POLL if deadline is None else min(_WATCH_POLL, deadline - time.monotonic())
                if pending.wait(step):
                    break
                if own is not None and own.lost.is_set():
                    raise own.error or Error(f"lease {own.id} was lost while waiting")
                if self._n.closed:
                    raise ClientClosed("the engine is stopped (EmbeddedEngine.stop() was called)")
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"not acquired within {timeout}s")
            try:
                return cls.FromString(pending.result())
            except Error as e:
                if own is not None and own.lost.is_set():
                    raise own.error or e from None
                if not e.retryable:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"not acquired within {timeout}s (last error: {e})") from None
                time.sleep(_RETRY_PAUSE)

    def _abandon(self, own: Optional[EmbeddedLease], key: bytes) -> None:
        """Leaves the queue of a lock or election that was not acquired."""
        try:
            if own is not None:
                own.revoke()
            else:
                self.unlock(key)
        except Error:
            pass  # the key goes with its lease anyway

    # -- cluster ---------------------------------------------------------
    def members(self) -> List[Member]:
        return _members(self._engine().members())

    def leader(self) -> LeaderInfo:
        return _leader(self._engine().leader())

    # -- internals -------------------------------------------------------
    def _call(self, method: str, req: Message, cls: Type[M]) -> M:
        """A coordination call of the native engine, with dengine.v1 messages."""
        return cls.FromString(self._engine().call(method, req.SerializeToString()))


class EmbeddedLease(Lease):
    """A lease kept alive by a background thread (``EmbeddedClient.lease(ttl)``):
    a :class:`d_engine.Lease` (same ``id``, ``lost``, ``error``, ``revoke()``,
    ``stop()``, ``with``) that renews through the embedded engine every
    ``ttl / 3``. Lost on ``LeaseNotFound`` or when no renewal was
    acknowledged within the TTL (``Timeout``)."""

    _client: EmbeddedClient  # type: ignore[assignment]

    def _run(self) -> None:
        client = self._client
        next_at = self._renewed_at + self.interval
        while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
            if self.remaining() <= 0:
                self._lose(self._expired_error())
                return
            sent_at = time.monotonic()
            pending = _Pending()
            try:
                client._engine().call_async(
                    "LeaseRenew", pb.LeaseKeepAliveRequest(id=self.id).SerializeToString(), pending
                )
            except ClientClosed:
                return  # the client or the engine is closed: stop quietly, like Client.close()
            while not pending.wait(min(_WATCH_POLL, self.remaining())):
                if self._stopping.is_set() or client._n.closed:
                    return
                if self.remaining() <= 0:
                    self._lose(self._expired_error())
                    return
            try:
                resp = pb.LeaseKeepAliveResponse.FromString(pending.result())
            except ClientClosed:
                return
            except Error as e:
                if self._stopping.is_set():
                    return
                if _fatal(e):
                    self._lose(e)
                    return
                next_at = time.monotonic() + max(0.01, self._retry_delay(e))
                continue
            self._renewed(sent_at, resp)
            next_at = sent_at + self.interval

    def __repr__(self) -> str:
        return "<Embedded" + super().__repr__()[1:]


def _leader_id(kv: Optional[KeyValue]) -> Optional[Tuple[bytes, int]]:
    return None if kv is None else (kv.key, kv.mod_revision)


class EmbeddedObservation:
    """Iterator of an election's leaders (``KeyValue`` of the leader's key:
    its value is what the leader published), starting with the current one
    (like :class:`d_engine.Observation`). Built on a watch of the election's
    queue (``name/``): each change makes it read the leader again, and a new
    leader key or a new value is yielded. ``cancel()`` (from any thread, or
    leaving the ``with`` block) ends it quietly."""

    def __init__(self, client: EmbeddedClient, name: bytes, native_watch: Any):
        self._client = client
        self._name = name
        self._w = native_watch
        self._last: Optional[Tuple[bytes, int]] = None
        self._dirty = True
        self._cancelled = False

    def __iter__(self) -> EmbeddedObservation:
        return self

    def __next__(self) -> KeyValue:
        while True:
            if self._cancelled:
                raise StopIteration
            if self._dirty:
                self._dirty = False
                kv = self._client.election_leader(self._name)
                if kv is not None and _leader_id(kv) != self._last:
                    self._last = _leader_id(kv)
                    return kv
            self._wait_change()

    def _wait_change(self) -> None:
        """Waits for a change of the queue (coalescing a burst into one)."""
        try:
            t = self._w.next_event(_WATCH_POLL)
            if t is None:
                return  # timed out: lets Python run signal handlers (Ctrl-C)
            if t is False:
                self._cancelled = True
                return
            self._dirty = True
            while True:
                t = self._w.next_event(0.0)
                if t is None:
                    return
                if t is False:
                    self._cancelled = True
                    return
        except (WatchCanceled, Overloaded):
            if self._cancelled or self._client._n.closed:
                raise
            # the engine dropped the watch (this consumer fell behind): watch
            # again and read the leader again, so no change is missed
            self._w = self._client._engine().watch(self._name + b"/", True, 0)
            self._dirty = True

    def cancel(self) -> None:
        self._cancelled = True
        self._w.cancel()

    def __enter__(self) -> EmbeddedObservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class EmbeddedWatch:
    """An iterator of :class:`WatchEvent` (like :class:`d_engine.Watch`).
    Ends by raising ``Overloaded`` (consumer too slow), ``Compacted``,
    ``WatchCanceled`` (engine stopped) or
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


class AsyncEmbeddedClient(AsyncEmbeddedAdminMixin):
    """asyncio in-process client; the methods of :class:`d_engine.AsyncClient`.
    Requests run on the engine's runtime and never block the event loop."""

    def __init__(self, native: Any):
        self._n = native
        self._closed = False
        self._leases: weakref.WeakSet[AsyncLease] = weakref.WeakSet()

    def _start(self, conv: Optional[Callable[[Any], Any]], method: str, *args: Any) -> asyncio.Future:
        if self._closed:
            raise ClientClosed("the client is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        getattr(self._n, method)(*args, _Done(loop, fut, conv))
        return fut

    def _native_engine(self) -> Any:
        if self._closed:
            raise ClientClosed("the client is closed")
        return self._n

    def _call(self, method: str, req: Message, cls: Type[M]) -> asyncio.Future:
        """A coordination call of the native engine (a future of a ``cls`` message)."""
        return self._start(cls.FromString, "call_async", method, req.SerializeToString())

    async def close(self) -> None:
        """Closes this client (not the engine); keepalive helpers stop (their
        leases are not revoked and expire after their TTL)."""
        self._closed = True
        for lease in list(self._leases):
            await lease.stop()

    async def __aenter__(self) -> AsyncEmbeddedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def put(
        self, key: BytesLike, value: BytesLike, ttl: Optional[float] = None, *, lease: Optional[int] = None
    ) -> int:
        key, value = codec.check_key(key), codec.check_value(value)
        ttl_ms, lease_id = codec.put_lease(ttl, lease)
        if lease_id:
            return (
                await self._call("Put", pb.PutRequest(key=key, value=value, lease=lease_id), pb.PutResponse)
            ).revision
        return await self._start(None, "put_async", key, value, ttl_ms)

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
        return codec.range_from_pb(await self._call("Range", req, pb.RangeResponse))

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
        return self._walk(req)

    async def _walk(self, first: pb.RangeRequest) -> AsyncIterator[KeyValue]:
        req: Optional[pb.RangeRequest] = first
        while req is not None:
            page = codec.range_from_pb(await self._call("Range", req, pb.RangeResponse))
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
        req = pb.DeleteRangeRequest(key=k, range_end=end, prev_kv=bool(prev_kv))
        return codec.delete_range_from_pb(await self._call("DeleteRange", req, pb.DeleteRangeResponse))

    async def txn(
        self,
        compare: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        req = txn_request(compare, success, failure)
        return txn_from_pb(await self._call("Txn", req, pb.TxnResponse))

    async def lease_grant(self, ttl: float, *, id: int = 0) -> int:
        req = pb.LeaseGrantRequest(ttl_ms=codec.lease_ttl_ms(ttl), id=codec.check_id(id))
        return (await self._call("LeaseGrant", req, pb.LeaseGrantResponse)).id

    async def lease_revoke(self, lease_id: int) -> int:
        req = pb.LeaseRevokeRequest(id=codec.check_id(lease_id))
        return (await self._call("LeaseRevoke", req, pb.LeaseRevokeResponse)).deleted

    async def lease_renew(self, lease_id: int) -> float:
        req = pb.LeaseKeepAliveRequest(id=codec.check_id(lease_id))
        return (await self._call("LeaseRenew", req, pb.LeaseKeepAliveResponse)).ttl_ms / 1000

    async def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo:
        req = pb.LeaseTimeToLiveRequest(id=codec.check_id(lease_id), keys=bool(keys))
        return codec.lease_info_from_pb(await self._call("LeaseTimeToLive", req, pb.LeaseTimeToLiveResponse))

    async def lease_list(self) -> List[LeaseStatus]:
        resp = await self._call("LeaseList", pb.LeaseListRequest(), pb.LeaseListResponse)
        return [codec.lease_status_from_pb(x) for x in resp.leases]

    def lease(self, ttl: float, *, id: int = 0, on_lost: Optional[OnLost] = None) -> AsyncEmbeddedLease:
        """A lease of ``ttl`` seconds kept alive by a background task: ``async
        with client.lease(10) as lease:`` (revoked on exit) or ``lease =
        await client.lease(10)``. See :meth:`EmbeddedClient.lease`."""
        return AsyncEmbeddedLease(self, ttl, id, on_lost)  # type: ignore[arg-type]  # the embedded subclass overrides what uses gRPC internals

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
    ) -> AsyncEmbeddedWatch:
        if self._closed:
            raise ClientClosed("the client is closed")
        args = _watch_args(key, start_revision, False, range_end, prev_kv, progress_notify, filters)
        return AsyncEmbeddedWatch(self._n.watch(*args))

    async def watch_prefix(
        self,
        prefix: BytesLike,
        start_revision: int = 0,
        *,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: FilterArg = (),
        resume_timeout: Optional[float] = None,
    ) -> AsyncEmbeddedWatch:
        if self._closed:
            raise ClientClosed("the client is closed")
        args = _watch_args(prefix, start_revision, True, None, prev_kv, progress_notify, filters)
        return AsyncEmbeddedWatch(self._n.watch(*args))

    def lock(
        self, name: BytesLike, ttl: float = 10.0, *, lease: Optional[int] = None, timeout: Optional[float] = None
    ) -> AsyncLock:
        """``async with client.lock("jobs", ttl=10) as lock:`` or ``lock = await
        client.lock(...)``; see :meth:`EmbeddedClient.lock`."""
        name_b = codec.check_key(name, "lock name")
        _wait_timeout(timeout)
        return AsyncLock(self, name_b, ttl, None if lease is None else codec.check_id(lease), timeout)  # type: ignore[arg-type]  # the embedded subclass overrides what uses gRPC internals

    async def _lock(
        self, name: bytes, ttl: float, lease_id: Optional[int], timeout: Optional[float]
    ) -> Tuple[bytes, int, Optional[AsyncLease]]:
        own = await self.lease(ttl) if lease_id is None else None
        lid = own.id if own is not None else int(lease_id or 0)
        req = pb.LockRequest(name=name, lease=lid)
        try:
            resp = await self._wait("Lock", req, pb.LockResponse, timeout, own)
        except BaseException:
            await self._abandon(own, holder_key(name, lid))
            raise
        return resp.key, resp.revision, own

    async def unlock(self, key: BytesLike) -> None:
        await self._call("Unlock", pb.UnlockRequest(key=codec.check_key(key)), pb.UnlockResponse)

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
        ``leadership = await client.campaign(...)``; see :meth:`EmbeddedClient.campaign`."""
        name_b, value_b = codec.check_key(name, "election name"), codec.check_value(value)
        _wait_timeout(timeout)
        return AsyncLeadership(self, name_b, value_b, ttl, None if lease is None else codec.check_id(lease), timeout)  # type: ignore[arg-type]  # the embedded subclass overrides what uses gRPC internals

    async def _campaign(
        self, name: bytes, value: bytes, ttl: float, lease_id: Optional[int], timeout: Optional[float]
    ) -> Tuple[LeaderKey, Optional[AsyncLease]]:
        own = await self.lease(ttl) if lease_id is None else None
        lid = own.id if own is not None else int(lease_id or 0)
        req = pb.CampaignRequest(name=name, lease=lid, value=value)
        try:
            resp = await self._wait("Campaign", req, pb.CampaignResponse, timeout, own)
        except BaseException:
            await self._abandon(own, holder_key(name, lid))
            raise
        return leader_key_from_pb(resp.leader), own

    async def proclaim(self, leader: LeaderKey, value: BytesLike) -> None:
        req = pb.ProclaimRequest(leader=leader_key_pb(leader), value=codec.check_value(value))
        await self._call("Proclaim", req, pb.ProclaimResponse)

    async def resign(self, leader: LeaderKey) -> None:
        await self._call("Resign", pb.ResignRequest(leader=leader_key_pb(leader)), pb.ResignResponse)

    async def election_leader(self, name: BytesLike) -> Optional[KeyValue]:
        req = pb.ElectionLeaderRequest(name=codec.check_key(name, "election name"))
        return codec.opt_kv(await self._call("Leader", req, pb.ElectionLeaderResponse))

    def observe(self, name: BytesLike) -> AsyncEmbeddedObservation:
        """``async for kv in client.observe(name)``: the election's leaders
        (see :class:`EmbeddedObservation`). Call it inside the event loop."""
        name_b = codec.check_key(name, "election name")
        if self._closed:
            raise ClientClosed("the client is closed")
        return AsyncEmbeddedObservation(self, name_b, AsyncEmbeddedWatch(self._n.watch(name_b + b"/", True, 0)))

    async def _wait(
        self, method: str, req: Message, cls: Type[M], timeout: Optional[float], own: Optional[AsyncLease]
    ) -> M:
        """A call that waits its turn in the engine (Lock, Campaign); see :meth:`EmbeddedClient._wait`."""
        timeout = _wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fut = self._call(method, req, cls)
            lost = asyncio.ensure_future(own.lost.wait()) if own is not None else None
            try:
                while not fut.done() and not (lost is not None and lost.done()):
                    if self._n.closed:  # a stopped engine drops its calls: they never complete
                        raise ClientClosed("the engine is stopped (EmbeddedEngine.stop() was called)")
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    await asyncio.wait(
                        [f for f in (fut, lost) if f is not None],
                        timeout=_WATCH_POLL if left is None else min(_WATCH_POLL, left),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            finally:
                if lost is not None:
                    lost.cancel()
                if not fut.done():
                    fut.cancel()  # its result is not wanted any more (the native call ends on its own)
            if not fut.done() or fut.cancelled():
                if own is not None and own.lost.is_set():
                    raise own.error or Error(f"lease {own.id} was lost while waiting")
                raise Timeout(f"not acquired within {timeout}s")
            try:
                return fut.result()
            except Error as e:
                if own is not None and own.lost.is_set():
                    raise own.error or e from None
                if not e.retryable:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"not acquired within {timeout}s (last error: {e})") from None
                await asyncio.sleep(_RETRY_PAUSE)

    async def _abandon(self, own: Optional[AsyncLease], key: bytes) -> None:
        try:
            if own is not None:
                await own.revoke()
            else:
                await self.unlock(key)
        except Error:
            pass  # the key goes with its lease anyway

    async def members(self) -> List[Member]:
        if self._closed:
            raise ClientClosed("the client is closed")
        return _members(self._n.members())

    async def leader(self) -> LeaderInfo:
        if self._closed:
            raise ClientClosed("the client is closed")
        return _leader(self._n.leader())


class AsyncEmbeddedLease(AsyncLease):
    """A lease kept alive by an asyncio task (``AsyncEmbeddedClient.lease(ttl)``):
    a :class:`d_engine.AsyncLease` renewing through the embedded engine
    every ``ttl / 3``; lost as :class:`EmbeddedLease`."""

    _client: AsyncEmbeddedClient  # type: ignore[assignment]

    async def _run(self) -> None:
        next_at = self._renewed_at + self.interval
        req = pb.LeaseKeepAliveRequest(id=self.id)
        while not self._stopping:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self._stopping:
                return
            if self.remaining() <= 0:
                await self._lose(self._expired_error())
                return
            sent_at = time.monotonic()
            try:
                fut = self._client._call("LeaseRenew", req, pb.LeaseKeepAliveResponse)
                resp = await asyncio.wait_for(fut, max(0.001, self.remaining()))
            except asyncio.TimeoutError:
                if self._client._n.closed:
                    return  # the engine stopped (and dropped the call): stop quietly
                await self._lose(self._expired_error())
                return
            except ClientClosed:
                return  # the client or the engine is closed: stop quietly, like AsyncClient.close()
            except Error as e:
                if _fatal(e):
                    await self._lose(e)
                    return
                next_at = time.monotonic() + max(0.01, self._retry_delay(e))
                continue
            self._renewed(sent_at, resp)
            next_at = sent_at + self.interval

    def __repr__(self) -> str:
        return "<AsyncEmbedded" + super().__repr__()[len("<Async") :]


class AsyncEmbeddedObservation:
    """``async for kv in observation``: an election's leaders (see
    :class:`EmbeddedObservation`); ``cancel()`` ends it quietly."""

    def __init__(self, client: AsyncEmbeddedClient, name: bytes, watch: AsyncEmbeddedWatch):
        self._client = client
        self._name = name
        self._watch = watch
        self._last: Optional[Tuple[bytes, int]] = None
        self._dirty = True
        self._cancelled = False

    def __aiter__(self) -> AsyncEmbeddedObservation:
        return self

    async def __anext__(self) -> KeyValue:
        while True:
            if self._cancelled:
                raise StopAsyncIteration
            if self._dirty:
                self._dirty = False
                kv = await self._client.election_leader(self._name)
                if kv is not None and _leader_id(kv) != self._last:
                    self._last = _leader_id(kv)
                    return kv
                continue
            try:
                await self._watch.__anext__()
            except StopAsyncIteration:
                self._cancelled = True
                raise
            except (WatchCanceled, Overloaded):
                if self._cancelled or self._client._n.closed:
                    raise
                # fell behind: watch again, then read the leader again
                self._watch = AsyncEmbeddedWatch(self._client._n.watch(self._name + b"/", True, 0))
            self._watch._skip_queued_events()
            self._dirty = True

    def cancel(self) -> None:
        self._cancelled = True
        self._watch.cancel()

    async def __aenter__(self) -> AsyncEmbeddedObservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


_END = object()


class AsyncEmbeddedWatch:
    """``async for event in watch`` (like :class:`d_engine.AsyncWatch`).
    Must be created inside a running event loop."""

    def __init__(self, native_watch: Any):
        self._w = native_watch
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._failed: Optional[BaseException] = None
        self._held: Any = None
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

    def _skip_queued_events(self) -> None:
        """Drops the events already queued (an observation reads the state
        again instead); the end of the stream or an error is kept."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END or isinstance(item, BaseException):
                self._held = item
                return

    async def __anext__(self) -> WatchEvent:
        if self._failed is not None:
            raise self._failed
        if self._held is not None:
            item, self._held = self._held, None
        else:
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


class AsyncEmbeddedEngine(AsyncEmbeddedAdminMixin):
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

    def _native_engine(self) -> Any:
        return self.sync._n

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
