"""The synchronous gRPC client."""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TypeVar, Union

import grpc

from . import _auth
from . import _codec as codec
from ._codec import BytesLike, Endpoints
from ._errors import ClientClosed, Error, WatchCanceled
from ._proto import client_pb2 as pb
from ._proto import client_pb2_grpc as rpc
from ._routing import Attempts, RetryPolicy, Router, SeqWindow, new_client_id
from ._tls import PathLike
from ._tls import credentials as tls_credentials
from ._types import CasResult, Consistency, KeyValue, LeaderInfo, Member, WatchEvent

T = TypeVar("T")
_MAX_MSG = 8 << 20


class _Stubs:
    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.kv = rpc.KvStub(channel)
        self.cluster = rpc.ClusterStub(channel)


class Client:
    """Synchronous client of a d-engine cluster.

    ``endpoints`` is ``"host:port"`` or a list of them (any cluster members).
    The client finds the leader, follows NotLeader hints and retries
    retryable errors with backoff until ``retry.deadline``; each request
    attempt is bounded by ``timeout`` seconds. Writes carry a (client id,
    sequence) pair reused across retries, so a retried write applies once.
    Thread-safe. Use as a context manager or call ``close()``.

    TLS: ``ca_file`` (PEM CA bundle the servers' certificates must chain to)
    and, for mutual TLS, ``cert_file`` + ``key_file`` (the client certificate
    and key), e.g. the files ``d-engine-server certs`` writes; or any
    ``credentials`` (``grpc.ssl_channel_credentials(...)``). Unreadable files
    raise InvalidArgument naming the argument and the path.
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
    ):
        self._router = Router(codec.parse_endpoints(endpoints))
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._credentials = tls_credentials(ca_file, cert_file, key_file, credentials)
        # username/password or token: sent as `authorization` metadata on every RPC.
        self._auth = _auth.header_value(username, password, token)
        self._channels: Dict[str, _Stubs] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._client_id = new_client_id()
        self._window = SeqWindow()

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        for s in channels.values():
            s.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- key-value -------------------------------------------------------
    def put(self, key: BytesLike, value: BytesLike, ttl: Optional[float] = None) -> int:
        """Stores ``value`` under ``key`` (``ttl`` in seconds); returns the write's revision."""
        key, value, ttl_ms = codec.check_key(key), codec.check_value(value), codec.ttl_ms(ttl)
        with self._window.seq() as seq:
            req = pb.PutRequest(key=key, value=value, ttl_ms=ttl_ms, write_id=self._write_id(seq))
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
        """Up to ``limit`` pairs (0 = server maximum) whose key starts with ``prefix``, in key order."""
        req = pb.ScanPrefixRequest(
            prefix=codec.check_prefix(prefix), limit=_limit(limit), consistency=codec.consistency_pb(consistency)
        )
        resp = self._call(lambda s, t: s.kv.ScanPrefix(req, timeout=t), _needs_leader(consistency))
        return [codec.kv_from_pb(kv) for kv in resp.kvs]

    def watch(self, key: BytesLike, start_revision: int = 0) -> Watch:
        """Iterator of changes to ``key`` after commit, in revision order."""
        return self._watch(codec.check_key(key), False, start_revision)

    def watch_prefix(self, prefix: BytesLike, start_revision: int = 0) -> Watch:
        """Iterator of changes to every key starting with ``prefix``."""
        return self._watch(codec.check_prefix(prefix), True, start_revision)

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
                opts = [("grpc.max_receive_message_length", _MAX_MSG), ("grpc.max_send_message_length", _MAX_MSG)]
                if self._credentials is not None:
                    ch = grpc.secure_channel(target, self._credentials, options=opts)
                else:
                    ch = grpc.insecure_channel(target, options=opts)
                if self._auth is not None:
                    ch = grpc.intercept_channel(ch, _auth.AuthInterceptor(self._auth))
                stubs = self._channels[target] = _Stubs(ch)
            return stubs

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

    def _watch(self, key: bytes, prefix: bool, start_revision: int) -> Watch:
        req = pb.WatchRequest(key=key, prefix=prefix, start_revision=int(start_revision))

        def open_stream(stubs: _Stubs, timeout: float) -> Watch:
            call = stubs.kv.Watch(req)
            first = next(call)  # the "created" message, or an error
            if first.canceled:
                call.cancel()
                raise WatchCanceled(first.cancel_reason or "watch refused")
            return Watch(call, first)

        return self._call(open_stream, False)


class Watch:
    """An iterator of :class:`WatchEvent`. Ends by raising ``WatchCanceled``
    (with the server's reason) or a transport error; ``cancel()`` (or leaving
    the ``with`` block) stops it and the iteration ends quietly."""

    def __init__(self, call: grpc.Call, created: pb.WatchResponse):
        self._call = call
        self._pending: List[WatchEvent] = [codec.event_from_pb(e) for e in created.events]
        self._cancelled = False

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        while not self._pending:
            if self._cancelled:
                raise StopIteration
            try:
                resp = next(self._call)
            except StopIteration:
                raise WatchCanceled("the server closed the watch stream") from None
            except grpc.RpcError as e:
                if self._cancelled:
                    raise StopIteration from None
                raise codec.error_from_rpc(e, "watch") from None
            if resp.canceled:
                raise WatchCanceled(resp.cancel_reason or "canceled by the server")
            self._pending.extend(codec.event_from_pb(e) for e in resp.events)
        return self._pending.pop(0)

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _needs_leader(consistency: Union[Consistency, str]) -> bool:
    return Consistency.parse(consistency) is not Consistency.EVENTUAL


def _limit(limit: int) -> int:
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


__all__ = ["Client", "Watch", "Error"]
