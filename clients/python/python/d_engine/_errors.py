"""The exception hierarchy shared by ``Client``, ``AsyncClient`` and ``EmbeddedEngine``."""

from __future__ import annotations

from typing import Optional


class Error(Exception):
    """Base class of every d-engine error. ``code`` is the machine-readable
    error code (the ``dengine.v1.ErrorCode`` name, e.g. ``"NOT_LEADER"``)."""

    code: str = "INTERNAL"

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
    """The request did not complete in time. The outcome of a write is
    unknown (retrying through the same client is safe: writes are deduplicated)."""

    code = "TIMEOUT"


class InvalidArgument(Error, ValueError):
    """A request field is invalid (empty or oversized key, oversized value,
    unknown consistency, malformed endpoint...). Not retryable."""

    code = "INVALID_ARGUMENT"


class StorageError(Error):
    """The node's storage failed (e.g. disk full); it refuses writes."""

    code = "STORAGE"


class Compacted(Error):
    """A watch's start revision is no longer in the history."""

    code = "COMPACTED"


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
    """The server ended a watch (slow consumer, shutdown...); ``reason`` says why."""

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
