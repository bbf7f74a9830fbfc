"""d-engine for Python: a client for standalone d-engine servers (sync and
asyncio) and the engine itself in-process (``EmbeddedEngine``,
``AsyncEmbeddedEngine``), all raising the same exceptions.

    import d_engine as dengine
    client = dengine.Client("127.0.0.1:9083")
    client.put(b"key", b"value")
"""

from ._aio import AsyncClient, AsyncWatch
from ._client import Client, Watch
from ._codec import MAX_KEY_BYTES, MAX_VALUE_BYTES
from ._embedded import (
    AsyncEmbeddedClient,
    AsyncEmbeddedEngine,
    AsyncEmbeddedWatch,
    EmbeddedClient,
    EmbeddedEngine,
    EmbeddedWatch,
)
from ._errors import (
    ChangeInProgress,
    ClientClosed,
    Compacted,
    Error,
    InvalidArgument,
    NoLeader,
    NoSpace,
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
from ._routing import RetryPolicy
from ._types import CasResult, Consistency, KeyValue, LeaderInfo, Member, WatchEvent

__all__ = [
    "AsyncClient",
    "AsyncEmbeddedClient",
    "AsyncEmbeddedEngine",
    "AsyncEmbeddedWatch",
    "AsyncWatch",
    "CasResult",
    "ChangeInProgress",
    "Client",
    "ClientClosed",
    "Compacted",
    "Consistency",
    "EmbeddedClient",
    "EmbeddedEngine",
    "EmbeddedWatch",
    "Error",
    "InvalidArgument",
    "KeyValue",
    "LeaderInfo",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Member",
    "NoLeader",
    "NoSpace",
    "NotLeader",
    "Overloaded",
    "PermissionDenied",
    "RetryPolicy",
    "ShuttingDown",
    "StorageError",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "UnknownNode",
    "Watch",
    "WatchCanceled",
    "WatchEvent",
]
