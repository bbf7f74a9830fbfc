"""Plain data returned by every d-engine client."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, Optional, Union

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
    lease: int = 0
    """The lease the key is attached to (deleted with it); 0 = none."""


@dataclass(frozen=True)
class CasResult:
    succeeded: bool
    current: Optional[KeyValue]
    """The key after the operation (None if it does not exist)."""
    revision: int


@dataclass(frozen=True)
class WatchEvent:
    type: str
    """``"put"``, ``"delete"``, or ``"progress"`` (a progress notification,
    only for watches with ``progress_notify=True``: no change; every change
    up to ``revision`` has been delivered; ``kv`` is empty then)."""
    kv: KeyValue
    """For deletes, ``value`` is empty and ``mod_revision`` is the deletion's revision."""
    prev_kv: Optional[KeyValue] = None
    """The key before the change, for watches with ``prev_kv=True`` (None
    when the key did not exist before it)."""

    @property
    def revision(self) -> int:
        """The change's revision; for a progress notification, the revision
        the watch has caught up to."""
        return self.kv.mod_revision

    @property
    def is_progress(self) -> bool:
        return self.type == "progress"


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


@dataclass(frozen=True)
class RangePage:
    """One page of a range read (``Client.range``)."""

    kvs: List[KeyValue]
    """The pairs of this page, in key order (values empty with ``keys_only``)."""
    more: bool
    """True when keys of the range follow the last one returned."""
    count: int
    """Live keys in the whole requested range (not only this page)."""
    next_key: bytes
    """When ``more``: the ``key`` that reads the next page (empty otherwise)."""
    revision: int
    """The store revision this page was read at."""


@dataclass(frozen=True)
class DeleteRangeResult:
    deleted: int
    """Number of keys deleted."""
    prev_kvs: List[KeyValue]
    """The deleted pairs (with ``prev_kv=True``; cut short past the response budget)."""
    revision: int
    prev_kvs_truncated: bool = False
    """True when ``prev_kvs`` lists fewer pairs than were deleted."""


@dataclass(frozen=True)
class PutResult:
    """The result of a put inside a transaction."""

    revision: int


TxnOpResult = Union[RangePage, PutResult, DeleteRangeResult]


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    """Whether every compare held (the ``success`` ops ran) or not (``failure`` ran)."""
    results: List[TxnOpResult]
    """One result per op of the branch that ran, in order: ``RangePage``
    for ``Op.range``/``Op.get``, ``PutResult`` for ``Op.put``,
    ``DeleteRangeResult`` for ``Op.delete_range``/``Op.delete``."""
    revision: int
    """The revision of the transaction's log entry."""
    replayed: bool = False
    """This answers a retry of a transaction already applied: its writes took
    effect once, at ``revision``; range results are empty then."""


@dataclass(frozen=True)
class LeaseInfo:
    """``Client.lease_time_to_live``: a live lease's TTL and keys."""

    id: int
    granted_ttl: float
    """Seconds the lease was granted for."""
    remaining: float
    """Seconds left on the leader's clock."""
    keys: List[bytes] = field(default_factory=list)
    """The attached keys (with ``keys=True``; cut short past the response budget)."""
    key_count: int = 0
    """Number of attached keys (all of them)."""


@dataclass(frozen=True)
class LeaseStatus:
    """One entry of ``Client.lease_list``."""

    id: int
    granted_ttl: float
    """Seconds the lease was granted for."""


@dataclass(frozen=True)
class LeaderKey:
    """A candidate's (or an elected leader's) key in an election."""

    name: bytes
    """The election name."""
    key: bytes
    """``name/<lease id, 16 hex digits>``."""
    revision: int
    """The key's create_revision: the fencing token of this leadership."""
    lease: int
