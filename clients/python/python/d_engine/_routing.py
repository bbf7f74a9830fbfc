"""Which node to ask next: leader discovery state and retry backoff, shared
by the sync and asyncio clients (no I/O here)."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import List, Optional

from ._errors import Error, NotLeader, Timeout


@dataclass
class RetryPolicy:
    """Retries of retryable errors (NotLeader, NoLeader, Unavailable,
    Overloaded...) within ``deadline`` seconds, with exponential backoff
    and full jitter between ``base_backoff`` and ``max_backoff``."""

    deadline: float = 10.0
    base_backoff: float = 0.02
    max_backoff: float = 0.5


class Router:
    """Tracks the believed leader and rotates through endpoints."""

    def __init__(self, endpoints: List[str]):
        self.endpoints = list(endpoints)
        self.leader: Optional[str] = None
        self._next = 0

    def target(self, need_leader: bool) -> str:
        if need_leader and self.leader:
            return self.leader
        target = self.endpoints[self._next % len(self.endpoints)]
        return target

    def failed(self, target: str, err: Error) -> None:
        """Updates routing after ``err`` from ``target``."""
        if isinstance(err, NotLeader):
            if err.leader_addr and err.leader_addr != target:
                self.leader = err.leader_addr
                return
            self.leader = None
        elif target == self.leader:
            self.leader = None
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


def new_client_id() -> int:
    """A random non-zero 63-bit id for exactly-once write retries."""
    return int.from_bytes(os.urandom(8), "little") >> 1 or 1
