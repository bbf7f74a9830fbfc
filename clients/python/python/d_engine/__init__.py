"""d-engine for Python: a client for standalone d-engine servers (sync and
asyncio) and the engine itself in-process (``EmbeddedEngine``,
``AsyncEmbeddedEngine``), all raising the same exceptions.

    import d_engine as dengine
    client = dengine.Client("127.0.0.1:9083")
    client.put(b"key", b"value")

The gRPC clients are pure Python; the embedded engine is a Rust extension
that the client-only wheel leaves out (``EMBEDDED_AVAILABLE`` tells).
"""

from ._admin import NodeStatus
from ._aio import AsyncClient, AsyncWatch
from ._client import Client, Watch
from ._cluster import AsyncClusterChanges, ClusterChanges, ClusterState
from ._codec import MAX_KEY_BYTES, MAX_RANGE_LIMIT, MAX_TXN_OPS, MAX_VALUE_BYTES, prefix_end
from ._embedded import (
    EMBEDDED_AVAILABLE,
    AsyncEmbeddedClient,
    AsyncEmbeddedEngine,
    AsyncEmbeddedWatch,
    EmbeddedClient,
    EmbeddedEngine,
    EmbeddedWatch,
)
from ._embedded_admin import AsyncEmbeddedChanges, EmbeddedChanges
from ._errors import (
    ChangeInProgress,
    ClientClosed,
    Compacted,
    Error,
    InvalidArgument,
    LeaseNotFound,
    LeaseNotFoundError,
    NoLeader,
    NoSpace,
    NotHeld,
    NotLeader,
    Overloaded,
    PermissionDenied,
    ShuttingDown,
    StorageError,
    Timeout,
    Unauthenticated,
    Unavailable,
    UnknownNode,
    WatchCanceled,
)
from ._lease import AsyncLease, Lease
from ._lock import AsyncLeadership, AsyncLock, AsyncObservation, Leadership, Lock, Observation
from ._routing import RetryPolicy
from ._txn import Compare, CompareTarget, Op
from ._types import (
    CasResult,
    Consistency,
    DeleteRangeResult,
    KeyValue,
    LeaderInfo,
    LeaderKey,
    LeaseInfo,
    LeaseStatus,
    Member,
    PutResult,
    RangePage,
    TxnResult,
    WatchEvent,
)
from ._version import __version__

__all__ = [
    "__version__",
    "EMBEDDED_AVAILABLE",
    "AsyncClient",
    "AsyncClusterChanges",
    "AsyncEmbeddedClient",
    "AsyncEmbeddedChanges",
    "AsyncEmbeddedEngine",
    "AsyncEmbeddedWatch",
    "AsyncLeadership",
    "AsyncLease",
    "AsyncLock",
    "AsyncObservation",
    "AsyncWatch",
    "CasResult",
    "ChangeInProgress",
    "Client",
    "ClusterChanges",
    "ClusterState",
    "ClientClosed",
    "Compacted",
    "Compare",
    "CompareTarget",
    "Consistency",
    "DeleteRangeResult",
    "EmbeddedChanges",
    "EmbeddedClient",
    "EmbeddedEngine",
    "EmbeddedWatch",
    "Error",
    "InvalidArgument",
    "KeyValue",
    "LeaderInfo",
    "LeaderKey",
    "Leadership",
    "Lease",
    "LeaseInfo",
    "LeaseNotFound",
    "LeaseNotFoundError",
    "LeaseStatus",
    "Lock",
    "MAX_KEY_BYTES",
    "MAX_RANGE_LIMIT",
    "MAX_TXN_OPS",
    "MAX_VALUE_BYTES",
    "Member",
    "NodeStatus",
    "NoLeader",
    "NoSpace",
    "NotHeld",
    "NotLeader",
    "Observation",
    "Op",
    "Overloaded",
    "PermissionDenied",
    "prefix_end",
    "PutResult",
    "RangePage",
    "RetryPolicy",
    "ShuttingDown",
    "StorageError",
    "Timeout",
    "TxnResult",
    "Unauthenticated",
    "Unavailable",
    "UnknownNode",
    "Watch",
    "WatchCanceled",
    "WatchEvent",
]
