"""Plain data returned by every d-engine client."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from ._errors import InvalidArgument


class Consistency(str, enum.Enum):
    """How a read is ordered against writes."""

    LINEARIZABLE = "linearizable"
    """ReadIndex on the leader: sees every write acknowledged before the read began."""
    LEASE = "lease"
    """Served by the leader under its lease (assumes bounded clock drift)."""
    EVENTUAL = "eventual"
    """Served from the contacted node's local state; may be stale."""

    @classmethod
    def parse(cls, value: Union[Consistency, str]) -> Consistency:
        if isinstance(value, Consistency):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise InvalidArgument(f"unknown consistency {value!r}: use 'linearizable', 'lease' or 'eventual'")


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    """Log index that created the key (since its last deletion)."""
    mod_revision: int
    """Log index that last modified the key."""
    version: int
    """Modifications since creation (1 after create)."""
    expires_at_ms: int = 0
    """Absolute expiry in unix milliseconds; 0 = no TTL."""


@dataclass(frozen=True)
class CasResult:
    succeeded: bool
    current: Optional[KeyValue]
    """The key after the operation (None if it does not exist)."""
    revision: int


@dataclass(frozen=True)
class WatchEvent:
    type: str
    """``"put"`` or ``"delete"``."""
    kv: KeyValue
    """For deletes, ``value`` is empty and ``mod_revision`` is the deletion's revision."""

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True)
class Member:
    id: int
    peer_addr: str
    client_addr: str
    role: str
    """``"voter"`` or ``"learner"``."""


@dataclass(frozen=True)
class LeaderInfo:
    id: int
    """0 if unknown."""
    addr: str
    """Client address of the leader; empty if unknown."""
