"""The exception hierarchy shared by ``Client``, ``AsyncClient`` and ``EmbeddedEngine``."""

from __future__ import annotations

from typing import Optional


class Error(Exception):
    """Base class of every d-engine error. ``code`` is the machine-readable
    error code (the ``dengine.v1.ErrorCode`` name, e.g. ``"NOT_LEADER"``)."""

    code: str = "INTERNAL"

    resume_revision: Optional[int] = None
    """Set on the error that ends a watch: the revision to watch from again
    so that nothing after the last delivered event is missed."""

    @property
    def retryable(self) -> bool:
        """True if the same request may succeed later or on another node."""
        return False


class NotLeader(Error):
    """The node is not the leader. ``leader_id`` / ``leader_addr`` name the
    leader (client address) when known. Clients follow this hint themselves."""

    code = "NOT_LEADER"

    def __init__(self, message: str, leader_id: Optional[int] = None, leader_addr: Optional[str] = None):
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_addr = leader_addr

    @property
    def retryable(self) -> bool:
        return True


class Unavailable(Error):
    """The node cannot be reached or cannot serve right now; retry later."""

    code = "UNAVAILABLE"

    @property
    def retryable(self) -> bool:
        return True


class NoLeader(Unavailable):
    """No leader is known (an election is in progress)."""

    code = "NO_LEADER"


class Overloaded(Unavailable):
    """The node's queues are full; back off and retry."""

    code = "OVERLOADED"


class ShuttingDown(Unavailable):
    """The node is stopping."""

    code = "SHUTTING_DOWN"


class ChangeInProgress(Unavailable):
    """A membership or leadership change is in progress."""

    code = "CHANGE_IN_PROGRESS"


class Timeout(Error):
    """The request did not complete in time (an attempt's ``timeout``, or the
    whole operation's ``retry.deadline``). The client retries a timed-out
    attempt itself, on the next node, within the deadline: reads are safe to
    repeat and a write keeps its write id across those retries, so the
    server applies it at most once. When ``Timeout`` reaches the caller the
    write's outcome is unknown: calling the method again is a *new* write
    (a new sequence number, not deduplicated against the first), so repeat
    it only if it is idempotent (a put of the same value) or conditional
    (``compare_and_swap``, ``txn``)."""

    code = "TIMEOUT"

    @property
    def retryable(self) -> bool:
        return True


class InvalidArgument(Error, ValueError):
    """A request field is invalid (empty or oversized key, oversized value,
    unknown consistency, malformed endpoint...). Not retryable."""

    code = "INVALID_ARGUMENT"


class StorageError(Error):
    """The node's storage failed (e.g. disk full); it refuses writes."""

    code = "STORAGE"


class Compacted(Error):
    """A watch's start revision is no longer in the history.
    ``compact_revision`` is the oldest revision still available (None if the
    server did not say): re-list the keys, then watch from the list's
    revision + 1."""

    code = "COMPACTED"

    def __init__(self, message: str, compact_revision: Optional[int] = None):
        super().__init__(message)
        self.compact_revision = compact_revision


class Unauthenticated(Error):
    code = "UNAUTHENTICATED"


class PermissionDenied(Error):
    code = "PERMISSION_DENIED"


class UnknownNode(Error):
    """An admin request named a node id that is not in the cluster."""

    code = "UNKNOWN_NODE"


class NoSpace(Error):
    """The write would take the node's stored data past its storage quota
    (``storage.quota_bytes``); nothing was written and the node raised its
    NOSPACE alarm. Reads and deletes still work: delete keys (or raise the
    quota). Not retryable as is (gRPC RESOURCE_EXHAUSTED, told apart from
    ``Overloaded`` by its ``NO_SPACE`` reason)."""

    code = "NO_SPACE"


class LeaseNotFound(Error):
    """The lease does not exist: never granted, revoked, or expired (its keys
    are gone). ``lease_id`` names it when the server said. Not retryable:
    grant a new lease. Also available as ``LeaseNotFoundError``."""

    code = "LEASE_NOT_FOUND"

    def __init__(self, message: str, lease_id: Optional[int] = None):
        super().__init__(message)
        self.lease_id = lease_id


LeaseNotFoundError = LeaseNotFound


class NotHeld(Error):
    """The lock or election leadership named by the request is not held any
    more: its key is gone (unlocked, resigned, or its lease ended) or belongs
    to another holder. Not retryable."""

    code = "NOT_HELD"


class WatchCanceled(Error):
    """The server ended a watch with no more specific code (a server that
    sent neither a ``cancel_code`` nor a code name in its reason); the
    message carries the server's reason. Watches otherwise end with the
    typed error of their cancel code (``Compacted``, ``Overloaded``,
    ``PermissionDenied``...)."""

    code = "WATCH_CANCELED"


class ClientClosed(Error):
    """The client (or engine) was closed."""

    code = "CLOSED"


_BY_CODE = {
    cls.code: cls
    for cls in (
        NotLeader,
        Unavailable,
        NoLeader,
        Overloaded,
        ShuttingDown,
        ChangeInProgress,
        Timeout,
        InvalidArgument,
        StorageError,
        Compacted,
        Unauthenticated,
        PermissionDenied,
        UnknownNode,
        NoSpace,
        LeaseNotFound,
        NotHeld,
        WatchCanceled,
        ClientClosed,
    )
}


def error_for_code(code: str, message: str) -> Error:
    """Builds the exception for an error code name (unknown codes → ``Error``)."""
    cls = _BY_CODE.get(code, Error)
    err = cls(message)
    if cls is Error:
        err.code = code or "INTERNAL"
    return err
