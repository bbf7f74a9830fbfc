"""Which node to ask next: leader discovery state and retry backoff, shared
by the sync and asyncio clients (no I/O here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from ._errors import Error, NotLeader, Timeout


@dataclass
class RetryPolicy:
    """Retries of retryable errors (NotLeader, NoLeader, Unavailable,
    Overloaded, ShuttingDown, ChangeInProgress, Timeout) within ``deadline``
    seconds (the operation timeout), with exponential backoff and full
    jitter between ``base_backoff`` and ``max_backoff``. Retrying is safe:
    reads have no effect and a write keeps its write id (client id,
    sequence) on every retry, so the server applies it at most once."""

    deadline: float = 10.0
    base_backoff: float = 0.02
    max_backoff: float = 0.5


KEEPALIVE_TIME_MS = 10_000
"""An HTTP/2 ping every 10 s on every channel (as the Go client) ..."""
KEEPALIVE_TIMEOUT_MS = 5_000
"""... and the connection is dropped when a ping is not answered in 5 s, so
a call or watch on a paused (SIGSTOP) or partitioned node fails over
instead of hanging."""


def channel_options(max_message_bytes: int, extra: Sequence[Tuple[str, Any]] = ()) -> List[Tuple[str, Any]]:
    """gRPC channel options: message size limits, keepalive, then the
    caller's ``channel_options`` (which override a default of the same name)."""
    opts: Dict[str, Any] = {
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
        "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
        # gRPC core (>= 1.5x) times pings out after this, not after
        # keepalive_timeout_ms (its default is a minute).
        "grpc.http2.ping_timeout_ms": KEEPALIVE_TIMEOUT_MS,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.max_pings_without_data": 0,
    }
    for item in extra:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"channel_options must be (name, value) pairs, got {item!r}")
        opts[item[0]] = item[1]
    return list(opts.items())


class Router:
    """Tracks the believed leader and rotates through endpoints.

    A ``NotLeader`` hint names the leader's client address. With
    ``follow_hints_outside_endpoints`` (the default) it is followed wherever
    it points; without it, a hint to an address that is not one of the
    endpoints is ignored and the next endpoint is tried instead (for
    clusters reached through NAT, port forwarding or a proxy, whose
    advertised addresses the client cannot dial)."""

    def __init__(self, endpoints: List[str], follow_hints_outside_endpoints: bool = True):
        if not isinstance(follow_hints_outside_endpoints, bool):
            raise TypeError(
                "follow_hints_outside_endpoints must be a bool, "
                f"not {type(follow_hints_outside_endpoints).__name__}"
            )
        self.endpoints = list(endpoints)
        self.follow_outside = follow_hints_outside_endpoints
        self.leader: Optional[str] = None
        self._next = 0

    def follows(self, leader_addr: str) -> bool:
        """Whether a NotLeader hint to ``leader_addr`` is followed."""
        return self.follow_outside or leader_addr in self.endpoints

    def target(self, need_leader: bool) -> str:
        if need_leader and self.leader:
            return self.leader
        target = self.endpoints[self._next % len(self.endpoints)]
        return target

    def failed(self, target: str, err: Error) -> None:
        """Updates routing after ``err`` from ``target``."""
        if isinstance(err, NotLeader):
            if err.leader_addr and err.leader_addr != target and self.follows(err.leader_addr):
                self.leader = err.leader_addr
                return
            self.leader = None
        elif target == self.leader:
            self.leader = None
        self._next += 1
        if len(self.endpoints) > 1 and self.endpoints[self._next % len(self.endpoints)] == target:
            # Never rotate straight back to the node that just failed (a
            # paused node would cost a whole attempt timeout again).
            self._next += 1

    def succeeded(self, target: str, need_leader: bool) -> None:
        if need_leader:
            self.leader = target


class Attempts:
    """One logical request's retry budget."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.started = time.monotonic()
        self.tries = 0
        self.last: Optional[Error] = None

    def remaining(self) -> float:
        return self.policy.deadline - (time.monotonic() - self.started)

    def attempt_timeout(self, timeout: float) -> float:
        """Seconds the next attempt may take: the first attempt always gets
        the full per-attempt ``timeout`` (a request with no retry budget
        still gets one real try); later ones are cut to what is left of the
        deadline."""
        if self.tries == 0:
            return timeout
        return max(0.001, min(timeout, self.remaining()))

    def next_delay(self, err: Error) -> Optional[float]:
        """Seconds to wait before retrying after ``err``, or None to give up
        (the caller then raises ``final_error()``)."""
        self.tries += 1
        self.last = err
        if not err.retryable:
            return None
        if isinstance(err, NotLeader) and err.leader_addr and self.tries <= 3:
            delay = 0.0
        else:
            cap = min(self.policy.max_backoff, self.policy.base_backoff * (2 ** min(self.tries, 10)))
            delay = random.uniform(0, cap)
        if self.remaining() <= delay:
            return None
        return delay

    def final_error(self) -> Error:
        err = self.last
        if err is None:
            return Timeout("request timed out before it was sent")
        return err


WRITE_WINDOW = 32
"""A client's outstanding write sequence numbers span at most this many.

The server remembers the last 64 write results per client (its
deduplication window) and refuses an unseen sequence number below that
window as an expired retry. A write with sequence ``s`` is only sent while
``s - (oldest outstanding seq) < WRITE_WINDOW``, so fewer than 64 newer
writes can be applied before any outstanding one: a stalled (retrying)
write holds the window instead of falling out of it."""


class SeqWindow:
    """Assigns write sequence numbers inside :data:`WRITE_WINDOW` (sync)."""

    def __init__(self, size: int = WRITE_WINDOW):
        self._size = size
        self._cv = threading.Condition()
        self._next = 1
        self._outstanding: Set[int] = set()

    @contextlib.contextmanager
    def seq(self) -> Iterator[int]:
        with self._cv:
            while self._outstanding and self._next - min(self._outstanding) >= self._size:
                self._cv.wait()
            s = self._next
            self._next += 1
            self._outstanding.add(s)
        try:
            yield s
        finally:
            with self._cv:
                self._outstanding.discard(s)
                self._cv.notify_all()


class AsyncSeqWindow:
    """:class:`SeqWindow` for asyncio (its condition binds lazily to the running loop)."""

    def __init__(self, size: int = WRITE_WINDOW):
        self._size = size
        self._cv: Optional[asyncio.Condition] = None
        self._next = 1
        self._outstanding: Set[int] = set()

    @contextlib.asynccontextmanager
    async def seq(self) -> AsyncIterator[int]:
        if self._cv is None:
            self._cv = asyncio.Condition()
        cv = self._cv
        async with cv:
            await cv.wait_for(lambda: not self._outstanding or self._next - min(self._outstanding) < self._size)
            s = self._next
            self._next += 1
            self._outstanding.add(s)
        try:
            yield s
        finally:
            self._outstanding.discard(s)
            async with cv:
                cv.notify_all()


def new_client_id() -> int:
    """A random non-zero 63-bit id for exactly-once write retries."""
    return int.from_bytes(os.urandom(8), "little") >> 1 or 1
