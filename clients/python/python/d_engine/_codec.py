"""Conversions shared by the sync and asyncio clients: argument checking,
endpoint parsing, protobuf <-> Python values, gRPC errors -> exceptions."""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Union

import grpc
from google.rpc import error_details_pb2, status_pb2

from ._errors import Error, InvalidArgument, NotLeader, Timeout, Unavailable, error_for_code
from ._proto import client_pb2 as pb
from ._types import CasResult, Consistency, KeyValue, LeaderInfo, Member, WatchEvent

# Copies of the Rust API crate's limits (engine/api/src/limits.rs): the
# values and the messages; a test there fails when they drift.
MAX_KEY_BYTES = 4096
"""Largest key the server accepts."""
MAX_VALUE_BYTES = 1 << 20
"""Largest value the server accepts (1 MiB)."""
KEY_SETTING = "limits.max_key_bytes"
VALUE_SETTING = "limits.max_value_bytes"
ERROR_DOMAIN = "d-engine"

BytesLike = Union[bytes, bytearray, memoryview, str]
Endpoints = Union[str, Sequence[str]]

_ENDPOINT = re.compile(r"^(?:https?://)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})/?$")


def parse_endpoints(endpoints: Endpoints) -> List[str]:
    """``"host:port"`` or a list of them (an ``http://`` prefix is accepted);
    returns ``host:port`` targets. Raises InvalidArgument on anything else."""
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
        if not m or not (0 < int(m.group(2)) < 65536):
            raise InvalidArgument(f"malformed endpoint {e!r}: expected 'host:port', e.g. '127.0.0.1:9083'")
        out.append(f"{m.group(1)}:{int(m.group(2))}")
    if not out:
        raise InvalidArgument("at least one endpoint is required, e.g. '127.0.0.1:9083'")
    return out


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


def consistency_pb(c: Union[Consistency, str]) -> int:
    return _CONSISTENCY_PB[Consistency.parse(c)]


def kv_from_pb(kv: pb.KeyValue) -> KeyValue:
    return KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        expires_at_ms=kv.expires_at_ms,
    )


def opt_kv(resp: pb.GetResponse) -> Optional[KeyValue]:
    return kv_from_pb(resp.kv) if resp.HasField("kv") else None


def cas_from_pb(resp: pb.CompareAndSwapResponse) -> CasResult:
    current = kv_from_pb(resp.current) if resp.HasField("current") else None
    return CasResult(succeeded=resp.succeeded, current=current, revision=resp.revision)


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
        return error_for_code(info.reason, f"{target}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"{target}: request timed out")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"{target}: {details}")
    return error_for_code(_STATUS_FALLBACK.get(code, "INTERNAL"), f"{target}: {details}")


def _error_info(e: grpc.RpcError) -> Optional[error_details_pb2.ErrorInfo]:
    try:
        trailers = e.trailing_metadata() or ()
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
