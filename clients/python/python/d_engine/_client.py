"""The synchronous gRPC client."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from . import _auth
from . import _codec as codec
from ._admin import AdminMixin
from ._codec import BytesLike, Endpoints
from ._errors import ClientClosed, Error, Timeout, Unavailable
from ._lease import Lease, OnLost
from ._lock import Leadership, Lock, Observation, holder_key, leader_key_from_pb, leader_key_pb
from ._proto.dengine.v1 import client_pb2 as pb
from ._proto.dengine.v1 import client_pb2_grpc as rpc
from ._routing import Attempts, RetryPolicy, Router, SeqWindow, new_client_id
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
    def __init__(self, channel: grpc.Channel, target: str):
        self.channel = channel
        self.target = target
        self.kv = rpc.KvStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.lock = rpc.LockStub(channel)
        self.election = rpc.ElectionStub(channel)
        self.cluster = rpc.ClusterStub(channel)


class Client(AdminMixin):
    """Synchronous client of a d-engine cluster.

    ``endpoints`` is ``"host:port"`` or a list of them (any cluster members).
    The client finds the leader, follows NotLeader hints and retries
    retryable errors (including ``Timeout`` and ``ShuttingDown``) on the
    next node with backoff until ``retry.deadline`` (10 s: the operation
    timeout); each attempt is bounded by ``timeout`` seconds (5 s), so a
    paused or partitioned leader costs one attempt before the call moves on
    to the new leader. Writes carry a (client id, sequence) pair reused
    across those retries, so a retried write applies once. Channels send
    keepalive pings (every 10 s, 5 s to answer) so a dead or paused node is
    noticed by idle channels and watches too. ``channel_options``: extra
    ``(name, value)`` gRPC channel options (override the defaults).
    Thread-safe. Use as a context manager or call ``close()``.

    TLS: ``ca_file`` (PEM CA bundle the servers' certificates must chain to)
    and, for mutual TLS, ``cert_file`` + ``key_file`` (the client certificate
    and key), e.g. the files ``d-engine-server certs`` writes; or any
    ``credentials`` (``grpc.ssl_channel_credentials(...)``). Unreadable files
    raise InvalidArgument naming the argument and the path. ``https://``
    endpoints always mean TLS (gRPC's default roots when no CA is given);
    ``http://`` endpoints with TLS arguments are refused.
    ``tls_server_name``: the name the servers' certificates are checked
    against (and the SNI) instead of the endpoint's host, e.g. when
    connecting by IP address (gRPC's ``grpc.ssl_target_name_override``).

    ``interceptors``: gRPC client interceptors wrapped around every channel
    (``grpc.intercept_channel``), e.g. OpenTelemetry's; they see each call
    before the ``authorization`` header is added.
    ``follow_hints_outside_endpoints=False``: a NotLeader hint naming an
    address that is not one of ``endpoints`` is not dialled; the client
    tries its next endpoint instead (clusters behind NAT or port
    forwarding, whose advertised addresses the client cannot reach).
    """

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
        self._interceptors = check_interceptors(interceptors, aio=False)
        # username/password or token: sent as `authorization` metadata on every RPC.
        self._auth = _auth.header_value(username, password, token)
        self._channels: Dict[str, _Stubs] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._client_id = new_client_id()
        self._window = SeqWindow()
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        """Closes the connections; keepalive helpers stop (their leases are
        not revoked and expire after their TTL)."""
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
            leases = list(self._leases)
        for lease in leases:
            lease.stop()
        for s in channels.values():
            s.channel.close()

    def __enter__(self) -> Client:
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
        with self._window.seq() as seq:
            req = pb.PutRequest(key=key, value=value, ttl_ms=ttl_ms, lease=lease_id, write_id=self._write_id(seq))
            return self._call(lambda s, t: s.kv.Put(req, timeout=t), True).revision

    def get(
        self, key: BytesLike, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> Optional[KeyValue]:
        """The key's current value and metadata, or None."""
        req = pb.GetRequest(key=codec.check_key(key), consistency=codec.consistency_pb(consistency))
        resp = self._call(lambda s, t: s.kv.Get(req, timeout=t), _needs_leader(consistency))
        return codec.opt_kv(resp)

    def get_multi(
        self, keys: Sequence[BytesLike], consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[Optional[KeyValue]]:
        """One result per key, in order, read at one point in time."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("keys must be a list of keys, not a single key")
        req = pb.GetMultiRequest(keys=[codec.check_key(k) for k in keys], consistency=codec.consistency_pb(consistency))
        resp = self._call(lambda s, t: s.kv.GetMulti(req, timeout=t), _needs_leader(consistency))
        return [codec.opt_kv(r) for r in resp.results]

    def delete(self, key: BytesLike) -> bool:
        """Deletes ``key``; True if it existed."""
        key = codec.check_key(key)
        with self._window.seq() as seq:
            req = pb.DeleteRequest(key=key, write_id=self._write_id(seq))
            return self._call(lambda s, t: s.kv.Delete(req, timeout=t), True).deleted

    def compare_and_swap(
        self,
        key: BytesLike,
        expected: Optional[BytesLike],
        new_value: Optional[BytesLike],
        ttl: Optional[float] = None,
    ) -> CasResult:
        """Sets ``key`` to ``new_value`` if its value equals ``expected``
        (``None``: the key must not exist). ``new_value=None`` deletes."""
        req = _cas_request(key, expected, new_value, ttl, pb.WriteId())
        with self._window.seq() as seq:
            req.write_id.CopyFrom(self._write_id(seq))
            return codec.cas_from_pb(self._call(lambda s, t: s.kv.CompareAndSwap(req, timeout=t), True))

    def scan_prefix(
        self, prefix: BytesLike, limit: int = 0, consistency: Union[Consistency, str] = Consistency.LINEARIZABLE
    ) -> List[KeyValue]:
        """Every pair whose key starts with ``prefix``, in key order (``limit``
        > 0: the first ``limit``). Reads as many ``range`` pages as needed:
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
        """One page of the keys in ``[key, range_end)``, in key order.

        ``range_end``: None = the single key ``key``; ``b"\\0"`` = every key
        >= ``key``; ``prefix=True`` = every key starting with ``key`` (see
        :func:`prefix_end`). ``limit``: most pairs in the page (0 = server
        maximum, 10,000); a page also stops at the response byte budget.
        When ``page.more``, ``range(page.next_key, ...)`` with the same
        ``range_end`` reads the next page (``range_iter`` does this)."""
        req = codec.range_request(key, range_end, prefix, limit, keys_only, count_only, consistency)
        return self._range_page(req, _needs_leader(consistency))

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
        pages of ``page_size`` (0 = server maximum) lazily. Each key present
        for the whole walk is yielded exactly once; each page is its own
        point in time (``RangePage.revision``)."""
        req = codec.range_request(key, range_end, prefix, page_size, keys_only, False, consistency)
        return self._walk(req, _needs_leader(consistency))

    def _walk(self, first: pb.RangeRequest, need_leader: bool) -> Iterator[KeyValue]:
        req: Optional[pb.RangeRequest] = first
        while req is not None:
            page = self._range_page(req, need_leader)
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
        when ``prefix=True``; range rules as for :meth:`range`) in one
        replicated step. ``prev_kv=True`` returns the deleted pairs."""
        k, end = codec.range_bounds(key, range_end, prefix)
        with self._window.seq() as seq:
            req = pb.DeleteRangeRequest(key=k, range_end=end, prev_kv=bool(prev_kv), write_id=self._write_id(seq))
            return codec.delete_range_from_pb(self._call(lambda s, t: s.kv.DeleteRange(req, timeout=t), True))

    def txn(
        self,
        compare: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """Atomically: if every ``compare`` holds, run the ``success`` ops,
        else the ``failure`` ops (in order, in one log entry). Ops come from
        :class:`Op` (``Op.put``, ``Op.get``, ``Op.range``, ``Op.delete``,
        ``Op.delete_range``), conditions from :class:`Compare`. At most 128
        compares and 128 ops per branch. A retried txn applies once
        (``result.replayed`` then tells; range results are empty then)."""
        req = txn_request(compare, success, failure)
        with self._window.seq() as seq:
            req.write_id.CopyFrom(self._write_id(seq))
            return txn_from_pb(self._call(lambda s, t: s.kv.Txn(req, timeout=t), True))

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
    ) -> Watch:
        """Iterator of changes to ``key`` (or to ``[key, range_end)``;
        ``range_end=b"\\0"``: every key >= key) after commit, in revision
        order, each once. ``start_revision`` replays history from that
        revision (``Compacted`` if it is gone). ``prev_kv=True``: events
        carry ``prev_kv``. ``progress_notify=True``: an idle watch yields
        ``type == "progress"`` events. ``filters``: ``"no_put"`` and/or
        ``"no_delete"``. The watch resumes by itself after a node kill,
        restart or leader change until it is cancelled (``resume_timeout``
        seconds bounds that); see :class:`Watch` for how it ends."""
        req = watch_request(
            key,
            start_revision,
            prefix=False,
            range_end=range_end,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            filters=filters,
        )
        return self._watch(req, check_resume_timeout(resume_timeout))

    def watch_prefix(
        self,
        prefix: BytesLike,
        start_revision: int = 0,
        *,
        prev_kv: bool = False,
        progress_notify: bool = False,
        filters: FilterArg = (),
        resume_timeout: Optional[float] = None,
    ) -> Watch:
        """:meth:`watch` for every key starting with ``prefix`` (all keys if empty)."""
        req = watch_request(
            prefix,
            start_revision,
            prefix=True,
            range_end=None,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
            filters=filters,
        )
        return self._watch(req, check_resume_timeout(resume_timeout))

    # -- leases ----------------------------------------------------------
    def lease_grant(self, ttl: float, *, id: int = 0) -> int:
        """Grants a lease of ``ttl`` seconds (0.001 ..= one year); returns its
        id (``id`` > 0 asks for that id). Keys put with ``lease=`` are deleted
        when it expires or is revoked. :meth:`lease` also keeps it alive."""
        ttl_ms, lease_id = codec.lease_ttl_ms(ttl), codec.check_id(id)
        with self._window.seq() as seq:
            req = pb.LeaseGrantRequest(ttl_ms=ttl_ms, id=lease_id, write_id=self._write_id(seq))
            return self._call(lambda s, t: s.lease.LeaseGrant(req, timeout=t), True).id

    def lease_revoke(self, lease_id: int) -> int:
        """Revokes the lease, deleting its keys in one step; returns how many.
        Raises LeaseNotFound if it does not exist (any more)."""
        lease_id = codec.check_id(lease_id)
        with self._window.seq() as seq:
            req = pb.LeaseRevokeRequest(id=lease_id, write_id=self._write_id(seq))
            return self._call(lambda s, t: s.lease.LeaseRevoke(req, timeout=t), True).deleted

    def lease_renew(self, lease_id: int) -> float:
        """Restarts the lease's TTL once; returns the TTL in seconds. Raises
        LeaseNotFound if it does not exist (any more)."""
        req = pb.LeaseKeepAliveRequest(id=codec.check_id(lease_id))
        return self._call(lambda s, t: s.lease.LeaseRenew(req, timeout=t), True).ttl_ms / 1000

    def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo:
        """The lease's granted and remaining TTL (seconds) and key count; with
        ``keys=True`` also its keys. Raises LeaseNotFound if it does not exist."""
        req = pb.LeaseTimeToLiveRequest(id=codec.check_id(lease_id), keys=bool(keys))
        return codec.lease_info_from_pb(self._call(lambda s, t: s.lease.LeaseTimeToLive(req, timeout=t), True))

    def lease_list(self) -> List[LeaseStatus]:
        """Every live lease."""
        resp = self._call(lambda s, t: s.lease.LeaseList(pb.LeaseListRequest(), timeout=t), True)
        return [codec.lease_status_from_pb(x) for x in resp.leases]

    def lease(self, ttl: float, *, id: int = 0, on_lost: Optional[OnLost] = None) -> Lease:
        """Grants a lease of ``ttl`` seconds and keeps it alive from a
        background thread (renewing every ``ttl / 3`` over the keepalive
        stream, following the leader). ``with client.lease(10) as lease:``
        revokes it on exit. ``lease.lost`` (an Event) is set, and
        ``on_lost(error)`` called, if the lease is lost anyway."""
        granted_at = time.monotonic()
        lease_id = self.lease_grant(ttl, id=id)
        lease = Lease(self, lease_id, ttl, on_lost, granted_at)
        with self._lock:
            self._leases.add(lease)
        return lease

    # -- locks and elections ---------------------------------------------
    def lock(
        self, name: BytesLike, ttl: float = 10.0, *, lease: Optional[int] = None, timeout: Optional[float] = None
    ) -> Lock:
        """Waits until the lock ``name`` is held (at most ``timeout`` seconds;
        None = as long as it takes) and returns it: ``with client.lock("jobs",
        ttl=10) as lock:``. Without ``lease``, a lease of ``ttl`` seconds is
        granted and kept alive for it: if this process dies, the lock passes
        to the next waiter within ``ttl``. ``lock.revision`` is the fencing
        token. Waiters get the lock in the order they asked for it."""
        name_b = codec.check_key(name, "lock name")
        own = self.lease(ttl) if lease is None else None
        lease_id = own.id if own is not None else codec.check_id(lease)
        req = pb.LockRequest(name=name_b, lease=lease_id)
        try:
            resp = self._wait(lambda s, t: s.lock.Lock(req, timeout=t), timeout, own)
        except BaseException:
            self._abandon(own, holder_key(name_b, lease_id))
            raise
        return Lock(self, name_b, resp.key, resp.revision, own)

    def unlock(self, key: BytesLike) -> None:
        """Releases the lock held by ``key`` (``Lock.key``); nothing if it is already gone."""
        req = pb.UnlockRequest(key=codec.check_key(key))
        self._call(lambda s, t: s.lock.Unlock(req, timeout=t), True)

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
        own = self.lease(ttl) if lease is None else None
        lease_id = own.id if own is not None else codec.check_id(lease)
        req = pb.CampaignRequest(name=name_b, lease=lease_id, value=value_b)
        try:
            resp = self._wait(lambda s, t: s.election.Campaign(req, timeout=t), timeout, own)
        except BaseException:
            self._abandon(own, holder_key(name_b, lease_id))
            raise
        return Leadership(self, leader_key_from_pb(resp.leader), own)

    def proclaim(self, leader: LeaderKey, value: BytesLike) -> None:
        """Publishes a new value as the leader (NotHeld if the leadership is gone)."""
        req = pb.ProclaimRequest(leader=leader_key_pb(leader), value=codec.check_value(value))
        self._call(lambda s, t: s.election.Proclaim(req, timeout=t), True)

    def resign(self, leader: LeaderKey) -> None:
        """Gives the leadership up (nothing if it is already gone)."""
        req = pb.ResignRequest(leader=leader_key_pb(leader))
        self._call(lambda s, t: s.election.Resign(req, timeout=t), True)

    def election_leader(self, name: BytesLike) -> Optional[KeyValue]:
        """The current leader's key and value, or None when the election has no leader."""
        req = pb.ElectionLeaderRequest(name=codec.check_key(name, "election name"))
        return codec.opt_kv(self._call(lambda s, t: s.election.Leader(req, timeout=t), True))

    def observe(self, name: BytesLike) -> Observation:
        """Iterator of the election's leaders, the current one first, then each new one."""
        req = pb.ElectionLeaderRequest(name=codec.check_key(name, "election name"))
        return Observation(self, req)

    def _wait(self, fn: Callable[[_Stubs, Optional[float]], T], timeout: Optional[float], own: Optional[Lease]) -> T:
        """A call that waits on the server (Lock, Campaign) until ``timeout``
        seconds have passed (None: no limit), retried across leader changes."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> Optional[float]:
            return None if deadline is None else max(0.001, deadline - time.monotonic())

        while True:
            try:
                return self._call(lambda s, t: fn(s, left()), True)
            except Error as e:
                if own is not None and own.lost.is_set():
                    raise own.error or e from None
                if not e.retryable:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"not acquired within {timeout}s (last error: {e})") from None

    def _abandon(self, own: Optional[Lease], key: bytes) -> None:
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
        resp = self._call(lambda s, t: s.cluster.Members(pb.MembersRequest(), timeout=t), False)
        return [codec.member_from_pb(m) for m in resp.members]

    def leader(self) -> LeaderInfo:
        resp = self._call(lambda s, t: s.cluster.Leader(pb.LeaderRequest(), timeout=t), False)
        return codec.leader_from_pb(resp)

    # -- internals -------------------------------------------------------
    def _write_id(self, seq: int) -> pb.WriteId:
        return pb.WriteId(client_id=self._client_id, seq=seq)

    def _stubs(self, target: str) -> _Stubs:
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            stubs = self._channels.get(target)
            if stubs is None:
                opts = grpc_options(_MAX_MSG, self._channel_options)
                if self._credentials is not None:
                    ch = grpc.secure_channel(target, self._credentials, options=opts)
                else:
                    ch = grpc.insecure_channel(target, options=opts)
                # The caller's interceptors see each call first (without the credentials header).
                chain: List[Any] = list(self._interceptors)
                if self._auth is not None:
                    chain.append(_auth.AuthInterceptor(self._auth))
                if chain:
                    ch = grpc.intercept_channel(ch, *chain)
                stubs = self._channels[target] = _Stubs(ch, target)
            return stubs

    def _range_page(self, req: pb.RangeRequest, need_leader: bool) -> RangePage:
        return codec.range_from_pb(self._call(lambda s, t: s.kv.Range(req, timeout=t), need_leader))

    def _call(self, fn: Callable[[_Stubs, float], T], need_leader: bool) -> T:
        attempts = Attempts(self._retry)
        while True:
            target = self._router.target(need_leader)
            try:
                result = fn(self._stubs(target), attempts.attempt_timeout(self._timeout))
            except grpc.RpcError as e:
                err = codec.error_from_rpc(e, target)
                self._router.failed(target, err)
                delay = attempts.next_delay(err)
                if delay is None:
                    raise attempts.final_error() from None
                time.sleep(delay)
                continue
            self._router.succeeded(target, need_leader)
            return result

    def _watch(self, req: pb.WatchRequest, resume_timeout: Optional[float]) -> Watch:
        state = WatchState(req, resume_timeout)
        call, first, target = self._open_watch(state)
        return Watch(self, state, call, first, target)

    def _open_watch(self, state: WatchState) -> Tuple[Any, pb.WatchResponse, str]:
        """Creates the watch from ``state.next`` (on the leader, with the
        client's retries) and waits for its ``created`` message."""
        req = state.request()
        opened: List[str] = []

        def open_stream(stubs: _Stubs, timeout: float) -> Tuple[Any, pb.WatchResponse]:
            call = stubs.kv.Watch(req)
            # The attempt timeout bounds only the wait for "created".
            timer = threading.Timer(timeout, call.cancel)
            timer.start()
            try:
                first = next(call)  # the "created" message, or an error
            except StopIteration:
                raise Unavailable("the watch stream closed before it was created") from None
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.CANCELLED and not timer.is_alive():
                    raise _AttemptTimedOut() from None
                raise
            finally:
                timer.cancel()
            if first.canceled:
                call.cancel()
                raise state.canceled(first)
            opened.append(stubs.target)
            return call, first

        call, first = self._call(open_stream, True)
        state.created(first)
        return call, first, opened[-1]


class Watch:
    """An iterator of :class:`WatchEvent` that survives node kills, graceful
    restarts and leader changes (see :meth:`Client.watch`).

    It ends by raising a typed error decided from the server's cancel code:
    ``Compacted`` (``compact_revision``: the history to resume from is
    gone), ``Overloaded`` (this watcher read too slowly), ``Unauthenticated``
    / ``PermissionDenied``, ``InvalidArgument``, ``ClientClosed``, the last
    retry error after ``resume_timeout``, or ``WatchCanceled`` for a cancel
    with no known code; the error's ``resume_revision`` says where to watch
    from again. ``cancel()`` (or leaving the ``with`` block) stops it and
    the iteration ends quietly."""

    def __init__(self, client: Client, state: WatchState, call: Any, created: pb.WatchResponse, target: str):
        self._client = client
        self._state = state
        self._call: Optional[Any] = call
        self._target = target
        self._pending: List[WatchEvent] = state.events(created)
        self._cancelled = False
        self._wake = threading.Event()

    @property
    def resume_revision(self) -> int:
        """The revision the watch would resume from now (one past the last
        delivered event or progress notification)."""
        return self._state.next

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        while not self._pending:
            if self._cancelled:
                raise StopIteration
            if self._call is None:
                self._reopen()
                continue
            try:
                resp = next(self._call)
            except StopIteration:
                err: Error = Unavailable(f"{self._target}: the watch stream closed without a cancel")
                resumable = True
            except grpc.RpcError as e:
                if self._cancelled:
                    raise StopIteration from None
                err = codec.error_from_rpc(e, self._target)
                resumable = rpc_break_resumable(e, err)
            else:
                if not resp.canceled:
                    self._pending.extend(self._state.events(resp))
                    continue
                err = self._state.canceled(resp)
                resumable = cancel_resumable(err)
            self._call = None
            if not resumable:
                raise self._state.final(err) from None
        return self._pending.pop(0)

    def _reopen(self) -> None:
        """Re-creates the stream from the resume revision until it works,
        fails for good, ``resume_timeout`` passes or the watch is cancelled."""
        attempt = 0
        while not self._cancelled:
            try:
                call, first, target = self._client._open_watch(self._state)
            except Error as err:
                if isinstance(err, ClientClosed) or not open_resumable(err):
                    raise self._state.final(err) from None
                delay = self._state.retry_delay(attempt, err)
                if delay is None:
                    raise self._state.final(err) from None
                attempt += 1
                self._wake.wait(delay)
                continue
            if self._cancelled:
                call.cancel()
                return
            self._call, self._target = call, target
            self._pending.extend(self._state.events(first))
            return

    def cancel(self) -> None:
        self._cancelled = True
        self._wake.set()
        call = self._call
        if call is not None:
            call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _AttemptTimedOut(grpc.RpcError):
    """DEADLINE_EXCEEDED for a watch whose ``created`` message did not arrive
    within the attempt timeout (the stream itself has no deadline)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "the watch was not created within the attempt timeout"

    def trailing_metadata(self) -> tuple:
        return ()


def _needs_leader(consistency: Union[Consistency, str]) -> bool:
    return Consistency.parse(consistency) is not Consistency.EVENTUAL


def _limit(limit: int) -> int:
    """``scan_prefix``'s limit: how many pairs at most (0 = all)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 0:
        raise codec.InvalidArgument(f"limit must be >= 0, got {limit}")
    return limit


def _cas_request(
    key: BytesLike,
    expected: Optional[BytesLike],
    new_value: Optional[BytesLike],
    ttl: Optional[float],
    write_id: pb.WriteId,
) -> pb.CompareAndSwapRequest:
    req = pb.CompareAndSwapRequest(key=codec.check_key(key), ttl_ms=codec.ttl_ms(ttl), write_id=write_id)
    if expected is not None:
        req.expected_value = codec.check_value(expected, "expected")
    if new_value is not None:
        req.new_value = codec.check_value(new_value, "new_value")
    return req


__all__ = ["Client", "Watch", "Error", "Lease"]
