"""Conversions shared by the sync and asyncio clients: argument checking,
endpoint parsing, protobuf <-> Python values, gRPC errors -> exceptions."""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
from google.rpc import error_details_pb2, status_pb2

from ._errors import Compacted, Error, InvalidArgument, LeaseNotFound, NotLeader, Timeout, Unavailable, error_for_code
from ._proto.dengine.v1 import client_pb2 as pb
from ._types import (
    CasResult,
    Consistency,
    DeleteRangeResult,
    KeyValue,
    LeaderInfo,
    LeaseInfo,
    LeaseStatus,
    Member,
    RangePage,
    WatchEvent,
)

# Copies of the Rust API crate's limits (engine/api/src/limits.rs): the
# values and the messages; a test there fails when they drift.
MAX_KEY_BYTES = 4096
"""Largest key the server accepts."""
MAX_VALUE_BYTES = 1 << 20
"""Largest value the server accepts (1 MiB)."""
MAX_RANGE_LIMIT = 10_000
"""Largest ``limit`` of one range page (0 asks for this many)."""
MAX_TXN_OPS = 128
"""Most compares, and most ops per branch, of one transaction."""
MAX_LEASE_TTL_MS = 365 * 24 * 3600 * 1000
"""Longest lease TTL the server grants (one year)."""
_U64 = (1 << 64) - 1
KEY_SETTING = "limits.max_key_bytes"
VALUE_SETTING = "limits.max_value_bytes"
ERROR_DOMAIN = "d-engine"

BytesLike = Union[bytes, bytearray, memoryview, str]
Endpoints = Union[str, Sequence[str]]

_ENDPOINT = re.compile(r"^(?:https?://)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+)(?::(\d{1,5}))?/?$")

#: The client port an endpoint without one gets (as in the Rust and Go clients).
DEFAULT_CLIENT_PORT = 9083


def parse_endpoints(endpoints: Endpoints) -> List[str]:
    """``"host:port"`` or a list of them (an ``http://`` or ``https://``
    prefix is accepted; :func:`endpoint_scheme` tells which; a missing port
    is :data:`DEFAULT_CLIENT_PORT`); returns ``host:port`` targets. Raises
    InvalidArgument on anything else."""
    if isinstance(endpoints, str):
        items: Iterable[object] = [e for e in endpoints.split(",") if e.strip()] or [endpoints]
    elif isinstance(endpoints, (list, tuple)):
        items = endpoints
    else:
        raise InvalidArgument(
            f"endpoints must be a 'host:port' string or a list of them, got {type(endpoints).__name__}"
        )
    out = []
    for e in items:
        if not isinstance(e, str):
            raise InvalidArgument(f"endpoint {e!r} must be a str like '127.0.0.1:9083'")
        m = _ENDPOINT.match(e.strip())
        port = int(m.group(2)) if m and m.group(2) is not None else DEFAULT_CLIENT_PORT
        if not m or not (0 < port < 65536):
            raise InvalidArgument(f"malformed endpoint {e!r}: expected 'host:port', e.g. '127.0.0.1:9083'")
        out.append(f"{m.group(1)}:{port}")
    if not out:
        raise InvalidArgument("at least one endpoint is required, e.g. '127.0.0.1:9083'")
    return out


def endpoint_scheme(endpoints: Endpoints) -> Optional[str]:
    """``"https"`` when the endpoints carry an ``https://`` scheme,
    ``"http"`` for ``http://``, None when they carry none (the TLS arguments
    decide). Raises InvalidArgument when endpoints mix the two schemes (or a
    scheme with none): one client talks to its cluster one way."""
    items = [e for e in endpoints.split(",") if e.strip()] if isinstance(endpoints, str) else list(endpoints)
    schemes = set()
    for e in items:
        if isinstance(e, str):
            low = e.strip().lower()
            schemes.add("https" if low.startswith("https://") else "http" if low.startswith("http://") else "")
    if len(schemes) > 1:
        raise InvalidArgument(
            f"endpoints mix schemes ({', '.join(sorted(s + '://' if s else 'none' for s in schemes))}): "
            "use https:// on every endpoint for TLS, or no scheme on any"
        )
    scheme = schemes.pop() if schemes else ""
    return scheme or None


def to_bytes(value: object, what: str) -> bytes:
    """Accepts bytes-like values, and str encoded as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def check_key(key: object, what: str = "key") -> bytes:
    b = to_bytes(key, what)
    if not b:
        raise InvalidArgument(f"{what} is empty; keys must be 1..={MAX_KEY_BYTES} bytes ({KEY_SETTING})")
    if len(b) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{what} is {len(b)} bytes; the limit is {MAX_KEY_BYTES} bytes ({KEY_SETTING})")
    return b


def check_prefix(prefix: object) -> bytes:
    b = to_bytes(prefix, "prefix")
    if len(b) > MAX_KEY_BYTES:
        raise InvalidArgument(f"prefix is {len(b)} bytes; the limit is {MAX_KEY_BYTES} bytes ({KEY_SETTING})")
    return b


def prefix_end(prefix: BytesLike) -> bytes:
    """The ``range_end`` that makes ``[prefix, prefix_end(prefix))`` the keys
    starting with ``prefix``: the last byte below 0xff is incremented and the
    0xff bytes after it dropped; an empty or all-0xff prefix gives ``b"\\0"``
    (every key from the start key on)."""
    p = to_bytes(prefix, "prefix").rstrip(b"\xff")
    if not p:
        return b"\0"
    return p[:-1] + bytes([p[-1] + 1])


def range_bounds(key: object, range_end: Optional[object], prefix: bool) -> Tuple[bytes, bytes]:
    """``(key, range_end)`` of a range request: a single key (no
    ``range_end``), ``[key, range_end)``, or with ``prefix=True`` every key
    starting with ``key``. ``range_end=b"\\0"`` reads every key >= ``key``."""
    if not isinstance(prefix, bool):
        raise TypeError(f"prefix must be a bool (True: key is a prefix), not {type(prefix).__name__}")
    if prefix:
        if range_end is not None:
            raise InvalidArgument("give range_end or prefix=True, not both")
        p = check_prefix(key)
        return p, prefix_end(p)
    if range_end is None:
        return check_key(key), b""
    end = to_bytes(range_end, "range_end")
    if not end:
        return check_key(key), b""
    k = to_bytes(key, "key")
    if len(k) > MAX_KEY_BYTES:
        raise InvalidArgument(f"key is {len(k)} bytes; the limit is {MAX_KEY_BYTES} bytes ({KEY_SETTING})")
    if end != b"\0" and end <= k:
        raise InvalidArgument(f"range_end {end!r} must sort after key {k!r} (or be b'\\0': every key >= key)")
    return k, end


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 0 or limit > MAX_RANGE_LIMIT:
        raise InvalidArgument(f"limit must be 0 (server maximum) ..= {MAX_RANGE_LIMIT}, got {limit}")
    return limit


def check_id(value: object, what: str = "lease id") -> int:
    """A lease id (or another u64 field): an int in 0..2**64."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0 or value > _U64:
        raise InvalidArgument(f"{what} must be in 0..2**64, got {value}")
    return value


def lease_ttl_ms(ttl: object) -> int:
    """A lease TTL in seconds -> milliseconds, 1 ms ..= one year."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    ms = int(round(ttl * 1000)) if ttl == ttl else -1
    if not 1 <= ms <= MAX_LEASE_TTL_MS:
        raise InvalidArgument(f"lease ttl must be 0.001 ..= {MAX_LEASE_TTL_MS // 1000} seconds (one year), got {ttl}")
    return ms


def put_lease(ttl: Optional[float], lease: object) -> Tuple[int, int]:
    """``(ttl_ms, lease)`` of a put: at most one of them."""
    lease_id = 0 if lease is None else check_id(lease)
    if lease_id and ttl is not None:
        raise InvalidArgument("give ttl or lease, not both (a leased key lives as long as its lease)")
    return ttl_ms(ttl), lease_id


def check_value(value: object, what: str = "value") -> bytes:
    b = to_bytes(value, what)
    if len(b) > MAX_VALUE_BYTES:
        raise InvalidArgument(f"{what} is {len(b)} bytes; the limit is {MAX_VALUE_BYTES} bytes ({VALUE_SETTING})")
    return b


def ttl_ms(ttl: Optional[float]) -> int:
    """TTL in seconds (float) -> whole milliseconds, at least 1."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if ttl <= 0:
        raise InvalidArgument(f"ttl must be > 0 seconds, got {ttl}")
    return max(1, int(round(ttl * 1000)))


_CONSISTENCY_PB = {
    Consistency.LINEARIZABLE: pb.LINEARIZABLE,
    Consistency.LEASE: pb.LEASE,
    Consistency.EVENTUAL: pb.EVENTUAL,
}


def consistency_pb(c: Union[Consistency, str]) -> pb.Consistency:
    return _CONSISTENCY_PB[Consistency.parse(c)]


def kv_from_pb(kv: pb.KeyValue) -> KeyValue:
    return KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        expires_at_ms=kv.expires_at_ms,
        lease=kv.lease,
    )


def opt_kv(resp: Union[pb.GetResponse, pb.ElectionLeaderResponse]) -> Optional[KeyValue]:
    return kv_from_pb(resp.kv) if resp.HasField("kv") else None


def cas_from_pb(resp: pb.CompareAndSwapResponse) -> CasResult:
    current = kv_from_pb(resp.current) if resp.HasField("current") else None
    return CasResult(succeeded=resp.succeeded, current=current, revision=resp.revision)


def range_request(
    key: object,
    range_end: Optional[object],
    prefix: bool,
    limit: int,
    keys_only: bool,
    count_only: bool,
    consistency: Union[Consistency, str] = Consistency.LINEARIZABLE,
) -> pb.RangeRequest:
    k, end = range_bounds(key, range_end, prefix)
    return pb.RangeRequest(
        key=k,
        range_end=end,
        limit=check_limit(limit),
        keys_only=bool(keys_only),
        count_only=bool(count_only),
        consistency=consistency_pb(consistency),
    )


def range_from_pb(resp: pb.RangeResponse, revision: int = 0) -> RangePage:
    return RangePage(
        kvs=[kv_from_pb(kv) for kv in resp.kvs],
        more=resp.more,
        count=resp.count,
        next_key=resp.next_key if resp.more else b"",
        revision=resp.header.revision or revision,
    )


def next_page(req: pb.RangeRequest, page: RangePage) -> Optional[pb.RangeRequest]:
    """The request of the page after ``page``, or None at the end of the range."""
    if not page.more:
        return None
    if not page.next_key or page.next_key <= req.key:
        raise Error(f"the server returned more=True with next_key {page.next_key!r} not after {req.key!r}")
    nxt = pb.RangeRequest()
    nxt.CopyFrom(req)
    nxt.key = page.next_key
    return nxt


def delete_range_from_pb(resp: pb.DeleteRangeResponse) -> DeleteRangeResult:
    return DeleteRangeResult(
        deleted=resp.deleted,
        prev_kvs=[kv_from_pb(kv) for kv in resp.prev_kvs],
        revision=resp.revision or resp.header.revision,
        prev_kvs_truncated=resp.prev_kvs_truncated,
    )


def lease_info_from_pb(r: pb.LeaseTimeToLiveResponse) -> LeaseInfo:
    return LeaseInfo(
        id=r.id,
        granted_ttl=r.granted_ttl_ms / 1000,
        remaining=r.remaining_ms / 1000,
        keys=list(r.keys),
        key_count=r.key_count,
    )


def lease_status_from_pb(s: pb.LeaseStatus) -> LeaseStatus:
    return LeaseStatus(id=s.id, granted_ttl=s.granted_ttl_ms / 1000)


def event_from_pb(ev: pb.WatchEvent) -> WatchEvent:
    kind = "delete" if ev.type == pb.DELETE else "put"
    return WatchEvent(type=kind, kv=kv_from_pb(ev.kv))


def member_from_pb(m: pb.Member) -> Member:
    role = "learner" if m.role == pb.LEARNER else "voter"
    return Member(id=m.id, peer_addr=m.peer_addr, client_addr=m.client_addr, role=role)


def leader_from_pb(r: pb.LeaderResponse) -> LeaderInfo:
    return LeaderInfo(id=r.leader_id, addr=r.leader_addr)


_STATUS_FALLBACK = {
    grpc.StatusCode.UNAVAILABLE: "UNAVAILABLE",
    grpc.StatusCode.DEADLINE_EXCEEDED: "TIMEOUT",
    grpc.StatusCode.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "OVERLOADED",
    grpc.StatusCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    grpc.StatusCode.PERMISSION_DENIED: "PERMISSION_DENIED",
    grpc.StatusCode.OUT_OF_RANGE: "COMPACTED",
    grpc.StatusCode.NOT_FOUND: "UNKNOWN_NODE",
    grpc.StatusCode.FAILED_PRECONDITION: "CHANGE_IN_PROGRESS",
    grpc.StatusCode.CANCELLED: "UNAVAILABLE",
}


def error_from_rpc(e: grpc.RpcError, target: str) -> Error:
    """Maps a gRPC failure to a d-engine exception, reading the
    ``google.rpc.ErrorInfo`` detail when the server sent one."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = (e.details() if hasattr(e, "details") else None) or str(code)
    info = _error_info(e)
    if info is not None:
        meta = dict(info.metadata)
        if info.reason == "NOT_LEADER":
            lid = int(meta.get("leader_id") or 0) or None
            return NotLeader(f"{target}: {details}", lid, meta.get("leader_addr") or None)
        if info.reason == "LEASE_NOT_FOUND":
            lease = meta.get("lease_id") or ""
            return LeaseNotFound(f"{target}: {details}", int(lease) if lease.isdigit() else None)
        resume = meta.get("resume_revision") or ""
        if info.reason == "COMPACTED":
            rev = meta.get("compact_revision") or ""
            err: Error = Compacted(f"{target}: {details}", int(rev) if rev.isdigit() else None)
        else:
            err = error_for_code(info.reason, f"{target}: {details}")
        if resume.isdigit() and int(resume) > 0:
            err.resume_revision = int(resume)  # a watch refused at creation: where to continue
        return err
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"{target}: request timed out")
    if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE) and _is_size_limit(details):
        # gRPC's (or tonic's) message size limit, raised by the transport
        # without an ErrorInfo: the same request can never pass, so it is not
        # ``Overloaded`` (which would be retried until the deadline).
        return InvalidArgument(f"{target}: message too large: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{target}: {details}")
    return error_for_code(_STATUS_FALLBACK.get(code, "INTERNAL"), f"{target}: {details}")


def has_error_info(e: grpc.RpcError) -> bool:
    """True if the failure carries a d-engine ErrorInfo (a server's answer)."""
    return _error_info(e) is not None


def _is_size_limit(details: str) -> bool:
    d = details.lower()
    return "larger than max" in d or "too large" in d or "message length" in d


def _error_info(e: grpc.RpcError) -> Optional[error_details_pb2.ErrorInfo]:
    try:
        trailers: Any = e.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - a broken call may have no trailers
        return None
    for key, value in trailers:
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for any_detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if any_detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return info
    return None
