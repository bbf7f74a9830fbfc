"""Watch requests and the resume rule, shared by the sync and asyncio
clients (no I/O here).

Resume rule (docs/clients.md): a watch whose stream breaks (node killed,
connection lost, keepalive timeout) or that the server cancels with
``SHUTTING_DOWN``, ``NOT_LEADER``, ``NO_LEADER``, ``CHANGE_IN_PROGRESS`` or
``TIMEOUT`` is re-created on the leader from the revision after the last
delivered event (or the server's ``resume_revision`` if later; or inside the
last revision, skipping its events already delivered, when the server says
it cut that revision), so nothing is missed or delivered twice. It keeps trying until it is cancelled (or
``resume_timeout`` seconds pass). Any other cancel ends it with the typed
error of its ``cancel_code`` (``Compacted`` with ``compact_revision``,
``Overloaded`` for a slow consumer, ``Unauthenticated``...), whose
``resume_revision`` says where to watch from again.
"""

from __future__ import annotations

import random
import time
from typing import Any, Iterable, List, Optional, Union

import grpc

from . import _codec as codec
from ._errors import (
    ChangeInProgress,
    Compacted,
    Error,
    InvalidArgument,
    NoLeader,
    NotLeader,
    Overloaded,
    ShuttingDown,
    Timeout,
    Unavailable,
    WatchCanceled,
    error_for_code,
)
from ._proto.dengine.v1 import client_pb2 as pb
from ._types import KeyValue, WatchEvent

_FILTERS = {"no_put": pb.NO_PUT, "no_delete": pb.NO_DELETE}

# Cancels after which re-creating the watch continues it without a gap.
_RESUMABLE_CANCELS = (ShuttingDown, NotLeader, NoLeader, ChangeInProgress, Timeout)


def watch_request(
    key: object,
    start_revision: int,
    *,
    prefix: bool,
    range_end: Optional[object],
    prev_kv: bool,
    progress_notify: bool,
    filters: Iterable[str],
) -> pb.WatchRequest:
    """The WatchRequest for a key, a prefix (``prefix=True``) or
    ``[key, range_end)`` (``range_end=b"\\0"``: every key >= key)."""
    if isinstance(start_revision, bool) or not isinstance(start_revision, int) or start_revision < 0:
        raise InvalidArgument(f"start_revision must be an int >= 0, got {start_revision!r}")
    if isinstance(filters, str):
        filters = [filters]
    fs = []
    for f in filters:
        v = _FILTERS.get(str(f).lower())
        if v is None:
            raise InvalidArgument(f"unknown watch filter {f!r}; use 'no_put' or 'no_delete'")
        fs.append(v)
    req = pb.WatchRequest(
        start_revision=start_revision, prev_kv=bool(prev_kv), progress_notify=bool(progress_notify), filters=fs
    )
    if prefix:
        if range_end is not None:
            raise InvalidArgument("give range_end or a prefix watch, not both")
        # The prefix flag (not a computed range end) keeps prefix watches
        # working on servers that predate range_end.
        req.key, req.prefix = codec.check_prefix(key), True
    else:
        req.key, req.range_end = codec.range_bounds(key, range_end, False)
    return req


def check_resume_timeout(resume_timeout: Optional[float]) -> Optional[float]:
    if resume_timeout is None:
        return None
    if isinstance(resume_timeout, bool) or not isinstance(resume_timeout, (int, float)) or resume_timeout < 0:
        raise InvalidArgument(f"resume_timeout must be seconds >= 0 or None, got {resume_timeout!r}")
    return float(resume_timeout)


def cancel_error(resp: pb.WatchResponse) -> Error:
    """The typed error of a canceled WatchResponse, decided from
    ``cancel_code``. Only a server that sends no code (older than the field)
    has it read from its reason, which then starts with the code name."""
    reason = resp.cancel_reason or "the server ended the watch"
    name = ""
    if resp.cancel_code != pb.ERROR_CODE_UNSPECIFIED:
        name = pb.ErrorCode.Name(resp.cancel_code)
    elif ":" in reason:
        head = reason.split(":", 1)[0].strip()
        if head in pb.ErrorCode.keys():
            name = head
    if name == "COMPACTED":
        err: Error = Compacted(reason, resp.compact_revision or None)
    elif name:
        err = error_for_code(name, reason)
    else:
        err = WatchCanceled(reason)
    if resp.resume_revision:
        err.resume_revision = resp.resume_revision
    return err


def cancel_resumable(err: Error) -> bool:
    return isinstance(err, _RESUMABLE_CANCELS)


def break_resumable(err: Error) -> bool:
    """A stream failure (not a server cancel) after which the watch is
    re-created: every transport failure (re-creating a watch has no side
    effects), but not a slow-consumer ``Overloaded`` or an error the server
    answered on purpose (auth, invalid argument, compacted...)."""
    if isinstance(err, Overloaded):
        return False
    return isinstance(err, (Unavailable, Timeout))


def open_resumable(err: Error) -> bool:
    """Errors of a re-open attempt after which it is tried again."""
    return isinstance(err, (Unavailable, Timeout)) or cancel_resumable(err)


class WatchState:
    """Where a watch is: the request, the next revision to resume from and
    the floor below which events are duplicates of delivered ones."""

    def __init__(self, req: pb.WatchRequest, resume_timeout: Optional[float]):
        self.req = req
        self.next = req.start_revision
        self.floor = req.start_revision
        self.resume_timeout = resume_timeout
        self._broken_at: Optional[float] = None
        # The last delivered revision and how many of its events were
        # delivered: when the server cuts a revision in the middle (its
        # resume_revision = that revision), the watch resumes inside it and
        # skips the events of it already delivered.
        self.last_rev = 0
        self.at_last = 0
        self._skip_rev = 0
        self._skip = 0

    def request(self) -> pb.WatchRequest:
        req = pb.WatchRequest()
        req.CopyFrom(self.req)
        req.start_revision = self.next
        return req

    def created(self, first: pb.WatchResponse) -> None:
        """A stream was (re-)created from ``self.next``."""
        if self.next == 0 and first.header.revision:
            self.next = first.header.revision + 1
        self.floor = self.next
        self._broken_at = None
        self._skip_rev, self._skip = 0, 0
        if self.last_rev and self.next == self.last_rev:
            self._skip_rev, self._skip = self.last_rev, self.at_last

    def events(self, resp: pb.WatchResponse) -> List[WatchEvent]:
        """The new events of a (non-canceled) response, advancing ``next``."""
        out: List[WatchEvent] = []
        if resp.progress and not resp.events and resp.header.revision:
            rev = resp.header.revision
            self.next = max(self.next, rev + 1)
            out.append(WatchEvent(type="progress", kv=KeyValue(b"", b"", 0, rev, 0)))
            return out
        for ev in resp.events:
            rev = ev.kv.mod_revision
            if rev < self.floor:
                continue  # delivered before a resume
            if self._skip and rev == self._skip_rev:
                self._skip -= 1  # delivered before the server cut this revision
                continue
            out.append(event_from_pb(ev))
            if rev == self.last_rev:
                self.at_last += 1
            else:
                self.last_rev, self.at_last = rev, 1
            self.next = max(self.next, rev + 1)
        return out

    def canceled(self, resp: pb.WatchResponse) -> Error:
        err = cancel_error(resp)
        r = err.resume_revision or 0
        if r and r == self.last_rev and self.next == r + 1:
            self.next = r  # the server cut revision r in the middle: resume inside it
        elif r > self.next:
            self.next = r  # events up to r were filtered on the server
        err.resume_revision = None
        return err

    def retry_delay(self, attempt: int, err: Error) -> Optional[float]:
        """Seconds to wait before re-opening again after ``err``, or None to
        give up (resume timeout passed)."""
        now = time.monotonic()
        if self._broken_at is None:
            self._broken_at = now
        if self.resume_timeout is not None and now - self._broken_at >= self.resume_timeout:
            return None
        return random.uniform(0, min(1.0, 0.05 * (2 ** min(attempt, 5))))

    def final(self, err: Error) -> Error:
        """Stamps the error that ends the watch with where to resume."""
        if err.resume_revision is None:
            err.resume_revision = self.next
        return err


def event_from_pb(ev: pb.WatchEvent) -> WatchEvent:
    kind = "delete" if ev.type == pb.DELETE else "put"
    prev = codec.kv_from_pb(ev.prev_kv) if ev.HasField("prev_kv") else None
    return WatchEvent(type=kind, kv=codec.kv_from_pb(ev.kv), prev_kv=prev)


FilterArg = Union[str, Iterable[str]]


def rpc_break_resumable(e: Any, err: Error) -> bool:
    """:func:`break_resumable` for a gRPC failure: an INTERNAL or UNKNOWN
    status without a d-engine ErrorInfo is a broken connection (an HTTP/2
    reset, a closed socket), not a server answer, so it resumes too."""
    if break_resumable(err):
        return True
    code = e.code() if hasattr(e, "code") else None
    return code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and not codec.has_error_info(e)
