"""Transactions: the ``Compare`` conditions and ``Op`` operations of
``Client.txn`` (plain data, checked when built), and their protobuf form.

    from d_engine import Compare, Op
    client.txn(
        compare=[Compare.value(b"k") == b"old", Compare.version(b"n") > 3],
        success=[Op.put(b"k", b"new"), Op.get(b"n")],
        failure=[Op.range(b"jobs/", prefix=True)],
    )
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn, Optional, Sequence, Union

from . import _codec as codec
from ._codec import BytesLike
from ._errors import Error, InvalidArgument
from ._proto.dengine.v1 import client_pb2 as pb
from ._types import DeleteRangeResult, PutResult, TxnOpResult, TxnResult

CompareOperand = Union[bytes, int]

_TARGETS = ("value", "version", "create_revision", "mod_revision", "lease")
_OPS = ("==", "!=", "<", ">")


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction, on one key: ``target op operand``.

    Build it with a comparison on a target::

        Compare.value(key) == b"x"          # also != < > (bytewise)
        Compare.version(key) > 3            # modifications since creation
        Compare.create_revision(key) == 0   # the key does not exist
        Compare.mod_revision(key) < rev
        Compare.lease(key) == lease_id      # 0: attached to no lease

    A missing key has version, create_revision, mod_revision and lease 0;
    a value compare on a missing key is false whatever the operator.
    """

    key: bytes
    target: str
    """``"value"``, ``"version"``, ``"create_revision"``, ``"mod_revision"`` or ``"lease"``."""
    op: str
    """``"=="``, ``"!="``, ``"<"`` or ``">"``."""
    operand: CompareOperand

    def __post_init__(self) -> None:
        if self.target not in _TARGETS:
            raise InvalidArgument(f"unknown compare target {self.target!r}: use one of {', '.join(_TARGETS)}")
        if self.op not in _OPS:
            raise InvalidArgument(f"unknown compare operator {self.op!r}: use one of {' '.join(_OPS)}")
        object.__setattr__(self, "key", codec.check_key(self.key))
        if self.target == "value":
            object.__setattr__(self, "operand", codec.check_value(self.operand, "compared value"))
        else:
            codec.check_id(self.operand, f"the {self.target} compared")

    @staticmethod
    def value(key: BytesLike) -> CompareTarget:
        """The key's value (compared bytewise)."""
        return CompareTarget(key, "value")

    @staticmethod
    def version(key: BytesLike) -> CompareTarget:
        """Modifications since the key was created (0: missing)."""
        return CompareTarget(key, "version")

    @staticmethod
    def create_revision(key: BytesLike) -> CompareTarget:
        """The revision that created the key (0: missing)."""
        return CompareTarget(key, "create_revision")

    @staticmethod
    def mod_revision(key: BytesLike) -> CompareTarget:
        """The revision that last modified the key (0: missing)."""
        return CompareTarget(key, "mod_revision")

    @staticmethod
    def lease(key: BytesLike) -> CompareTarget:
        """The lease the key is attached to (0: none or missing)."""
        return CompareTarget(key, "lease")


class CompareTarget:
    """``Compare.<target>(key)``: compare it with ``==``, ``!=``, ``<`` or ``>`` to get a :class:`Compare`."""

    __slots__ = ("key", "target")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, key: BytesLike, target: str):
        self.key = codec.check_key(key)
        self.target = target

    def _cmp(self, op: str, other: object) -> Compare:
        return Compare(self.key, self.target, op, other)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._cmp("==", other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other: object) -> Compare:
        return self._cmp("<", other)

    def __gt__(self, other: object) -> Compare:
        return self._cmp(">", other)

    def __le__(self, other: object) -> NoReturn:
        raise TypeError("transaction compares support ==, !=, < and > (write `x <= n` as `x < n + 1`)")

    def __ge__(self, other: object) -> NoReturn:
        raise TypeError("transaction compares support ==, !=, < and > (write `x >= n` as `x > n - 1`)")

    def __bool__(self) -> NoReturn:
        raise TypeError(f"Compare.{self.target}(key) needs a comparison, e.g. Compare.{self.target}(key) == ...")

    def __repr__(self) -> str:
        return f"Compare.{self.target}({self.key!r})"


@dataclass(frozen=True)
class Op:
    """One operation of a transaction branch; build it with
    ``Op.put``, ``Op.get``, ``Op.range``, ``Op.delete`` or ``Op.delete_range``."""

    kind: str
    """``"put"``, ``"range"`` or ``"delete_range"``."""
    key: bytes
    value: bytes = b""
    range_end: bytes = b""
    lease: int = 0
    ttl_ms: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    prev_kv: bool = False

    @staticmethod
    def put(key: BytesLike, value: BytesLike, *, lease: Optional[int] = None, ttl: Optional[float] = None) -> Op:
        """Stores ``value`` under ``key`` (attached to ``lease``, or expiring after ``ttl`` seconds)."""
        ttl_ms, lease_id = codec.put_lease(ttl, lease)
        return Op("put", codec.check_key(key), codec.check_value(value), lease=lease_id, ttl_ms=ttl_ms)

    @staticmethod
    def get(key: BytesLike) -> Op:
        """Reads one key (its result is a ``RangePage`` with 0 or 1 pair)."""
        return Op("range", codec.check_key(key))

    @staticmethod
    def range(
        key: BytesLike,
        range_end: Optional[BytesLike] = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> Op:
        """Reads ``[key, range_end)`` (or the keys starting with ``key`` when
        ``prefix=True``) at the transaction's revision; one page."""
        k, end = codec.range_bounds(key, range_end, prefix)
        return Op(
            "range",
            k,
            range_end=end,
            limit=codec.check_limit(limit),
            keys_only=bool(keys_only),
            count_only=bool(count_only),
        )

    @staticmethod
    def delete(key: BytesLike, *, prev_kv: bool = False) -> Op:
        """Deletes one key."""
        return Op("delete_range", codec.check_key(key), prev_kv=bool(prev_kv))

    @staticmethod
    def delete_range(
        key: BytesLike, range_end: Optional[BytesLike] = None, *, prefix: bool = False, prev_kv: bool = False
    ) -> Op:
        """Deletes ``[key, range_end)`` (or the keys starting with ``key`` when ``prefix=True``)."""
        k, end = codec.range_bounds(key, range_end, prefix)
        return Op("delete_range", k, range_end=end, prev_kv=bool(prev_kv))


def _bad(what: str, item: object, example: str) -> NoReturn:
    raise TypeError(f"{what} must hold {example}, not {type(item).__name__}")


_COMPARE_OP_PB = {"==": pb.Compare.EQUAL, "!=": pb.Compare.NOT_EQUAL, "<": pb.Compare.LESS, ">": pb.Compare.GREATER}


def compare_pb(c: Compare) -> pb.Compare:
    if not isinstance(c, Compare):
        if isinstance(c, CompareTarget):
            raise TypeError(f"{c!r} needs a comparison, e.g. {c!r} == ...")
        _bad("compare", c, "Compare conditions (e.g. Compare.value(key) == b'x')")
    out = pb.Compare(op=_COMPARE_OP_PB[c.op], key=c.key)
    setattr(out, c.target, c.operand)
    return out


def txn_op_pb(op: Op) -> pb.TxnOp:
    if not isinstance(op, Op):
        _bad("success and failure", op, "Op values (e.g. Op.put(key, value))")
    if op.kind == "put":
        return pb.TxnOp(put=pb.PutRequest(key=op.key, value=op.value, ttl_ms=op.ttl_ms, lease=op.lease))
    if op.kind == "range":
        return pb.TxnOp(
            range=pb.RangeRequest(
                key=op.key, range_end=op.range_end, limit=op.limit, keys_only=op.keys_only, count_only=op.count_only
            )
        )
    if op.kind == "delete_range":
        return pb.TxnOp(delete_range=pb.DeleteRangeRequest(key=op.key, range_end=op.range_end, prev_kv=op.prev_kv))
    raise InvalidArgument(f"unknown txn op kind {op.kind!r}: build ops with Op.put/get/range/delete/delete_range")


def txn_request(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> pb.TxnRequest:
    """The request (without its write id); checks the lists and their sizes."""
    for name, items in (("compare", compare), ("success", success), ("failure", failure)):
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{name} must be a list, not {type(items).__name__}")
        if len(items) > codec.MAX_TXN_OPS:
            raise InvalidArgument(f"{name} has {len(items)} entries; a transaction allows at most {codec.MAX_TXN_OPS}")
    return pb.TxnRequest(
        compare=[compare_pb(c) for c in compare],
        success=[txn_op_pb(o) for o in success],
        failure=[txn_op_pb(o) for o in failure],
    )


def _op_result(r: pb.TxnOpResult, revision: int) -> TxnOpResult:
    kind = r.WhichOneof("result")
    if kind == "range":
        return codec.range_from_pb(r.range, revision)
    if kind == "put":
        return PutResult(revision=r.put.revision or revision)
    if kind == "delete_range":
        d = r.delete_range
        return DeleteRangeResult(
            deleted=d.deleted,
            prev_kvs=[codec.kv_from_pb(kv) for kv in d.prev_kvs],
            revision=d.revision or revision,
            prev_kvs_truncated=d.prev_kvs_truncated,
        )
    raise Error(f"the server returned a transaction result of unknown kind {kind!r}")


def txn_from_pb(resp: pb.TxnResponse) -> TxnResult:
    rev = resp.revision or resp.header.revision
    return TxnResult(
        succeeded=resp.succeeded,
        results=[_op_result(r, rev) for r in resp.results],
        revision=rev,
        replayed=resp.replayed,
    )
