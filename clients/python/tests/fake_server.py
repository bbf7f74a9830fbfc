"""An in-process fake of the d-engine Kv and Lease services, for client
unit tests that need no real server: ranges with small pages, delete-range,
transactions with write-id deduplication, leases with expiry and keepalive
streams, and scripted faults (a lost response, a follower that answers
NOT_LEADER). It implements the wire contract of client.proto, not the
engine: the integration tests check the real thing."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Dict, List, Optional, Tuple

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from d_engine._proto.dengine.v1 import client_pb2 as pb
from d_engine._proto.dengine.v1 import client_pb2_grpc as rpc


def coded_status(code: grpc.StatusCode, reason: str, message: str, **meta: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="d-engine", metadata=meta)
    detail = any_pb2.Any()
    detail.Pack(info)
    st = status_pb2.Status(code=code.value[0], message=message, details=[detail])

    class _S(grpc.Status):
        pass

    _S.code = code
    _S.details = message
    _S.trailing_metadata = (("grpc-status-details-bin", st.SerializeToString()),)
    return _S()


class Store:
    """The shared state of a fake node."""

    def __init__(self, page_max: int = 10_000):
        self.lock = threading.RLock()
        self.page_max = page_max
        self.rev = 1
        self.kvs: Dict[bytes, pb.KeyValue] = {}
        self.leases: Dict[int, Tuple[int, float]] = {}  # id -> (ttl_ms, expires at, monotonic)
        self.applied: Dict[Tuple[int, int], object] = {}
        self.write_ids: List[Tuple[str, int, int]] = []
        self.keepalives = 0
        self.drop_next_txn_response = False
        self.range_calls = 0
        self.keepalive_auth: List[str] = []
        self.stall_keepalives = False

    # -- helpers (lock held) --
    def expire(self) -> None:
        now = time.monotonic()
        for lid, (_, exp) in list(self.leases.items()):
            if exp <= now:
                self.revoke(lid)

    def revoke(self, lid: int) -> int:
        self.leases.pop(lid)
        gone = [k for k, kv in self.kvs.items() if kv.lease == lid]
        for k in gone:
            del self.kvs[k]
        self.rev += 1
        return len(gone)

    def in_range(self, key: bytes, end: bytes) -> List[bytes]:
        keys = sorted(self.kvs)
        if not end:
            return [key] if key in self.kvs else []
        return [k for k in keys if k >= key and (end == b"\0" or k < end)]

    def put(self, req: pb.PutRequest, context) -> int:
        if req.lease and req.lease not in self.leases:
            context.abort_with_status(
                coded_status(grpc.StatusCode.NOT_FOUND, "LEASE_NOT_FOUND", "no lease", lease_id=str(req.lease))
            )
        self.rev += 1
        old = self.kvs.get(req.key)
        self.kvs[req.key] = pb.KeyValue(
            key=req.key,
            value=req.value,
            create_revision=old.create_revision if old else self.rev,
            mod_revision=self.rev,
            version=(old.version + 1) if old else 1,
            lease=req.lease,
        )
        return self.rev

    def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        keys = self.in_range(req.key, req.range_end)
        resp = pb.RangeResponse(header=pb.ResponseHeader(revision=self.rev), count=len(keys))
        if req.count_only:
            return resp
        n = min(req.limit or self.page_max, self.page_max)
        for k in keys[:n]:
            kv = pb.KeyValue()
            kv.CopyFrom(self.kvs[k])
            if req.keys_only:
                kv.value = b""
            resp.kvs.append(kv)
        if len(keys) > n:
            resp.more = True
            resp.next_key = keys[n]
        return resp

    def delete_range(self, req: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
        keys = self.in_range(req.key, req.range_end)
        if keys:
            self.rev += 1
        resp = pb.DeleteRangeResponse(deleted=len(keys), revision=self.rev)
        for k in keys:
            kv = self.kvs.pop(k)
            if req.prev_kv:
                resp.prev_kvs.append(kv)
        return resp

    def holds(self, c: pb.Compare) -> bool:
        kv = self.kvs.get(c.key)
        target = c.WhichOneof("target")
        if target == "value":
            if kv is None:
                return False
            have, want = kv.value, c.value
        else:
            have = getattr(kv, target) if kv is not None else 0
            want = getattr(c, target)
        return {
            pb.Compare.EQUAL: have == want,
            pb.Compare.NOT_EQUAL: have != want,
            pb.Compare.LESS: have < want,
            pb.Compare.GREATER: have > want,
        }[c.op]


class FakeKv(rpc.KvServicer):
    def __init__(self, store: Store, leader_addr: Optional[str] = None):
        self.s = store
        self.leader_addr = leader_addr

    def _leader(self, context) -> None:
        if self.leader_addr is not None:
            context.abort_with_status(
                coded_status(
                    grpc.StatusCode.UNAVAILABLE,
                    "NOT_LEADER",
                    "not the leader",
                    leader_id="1",
                    leader_addr=self.leader_addr,
                )
            )

    def _dedup(self, kind: str, write_id: pb.WriteId):
        self.s.write_ids.append((kind, write_id.client_id, write_id.seq))
        return self.s.applied.get((write_id.client_id, write_id.seq))

    def Put(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            done = self._dedup("put", request.write_id)
            if done is None:
                done = self.s.applied[(request.write_id.client_id, request.write_id.seq)] = pb.PutResponse(
                    revision=self.s.put(request, context)
                )
            return done

    def Get(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            kv = self.s.kvs.get(request.key)
            return pb.GetResponse(kv=kv) if kv is not None else pb.GetResponse()

    def Range(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            self.s.range_calls += 1
            if request.range_end and request.range_end != b"\0" and request.range_end <= request.key:
                context.abort_with_status(
                    coded_status(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "range_end <= key")
                )
            return self.s.range(request)

    def DeleteRange(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            done = self._dedup("delete_range", request.write_id)
            if done is None:
                done = self.s.applied[(request.write_id.client_id, request.write_id.seq)] = self.s.delete_range(request)
            return done

    def Txn(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            key = (request.write_id.client_id, request.write_id.seq)
            done = self._dedup("txn", request.write_id)
            if done is not None:
                replay = pb.TxnResponse()
                replay.CopyFrom(done)
                replay.replayed = True
                for r in replay.results:
                    if r.WhichOneof("result") == "range":
                        r.range.Clear()
                return replay
            ok = all(self.s.holds(c) for c in request.compare)
            resp = pb.TxnResponse(succeeded=ok)
            for op in request.success if ok else request.failure:
                kind = op.WhichOneof("op")
                if kind == "put":
                    resp.results.add(put=pb.PutResponse(revision=self.s.put(op.put, context)))
                elif kind == "range":
                    resp.results.add(range=self.s.range(op.range))
                else:
                    resp.results.add(delete_range=self.s.delete_range(op.delete_range))
            resp.revision = self.s.rev
            self.s.applied[key] = resp
            if self.s.drop_next_txn_response:
                self.s.drop_next_txn_response = False
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (scripted: the txn was applied)")
            return resp


class FakeLease(rpc.LeaseServicer):
    def __init__(self, store: Store, leader_addr: Optional[str] = None):
        self.s = store
        self.leader_addr = leader_addr

    def _leader(self, context) -> None:
        if self.leader_addr is not None:
            context.abort_with_status(
                coded_status(
                    grpc.StatusCode.UNAVAILABLE,
                    "NOT_LEADER",
                    "not the leader",
                    leader_id="1",
                    leader_addr=self.leader_addr,
                )
            )

    def _missing(self, context, lid: int) -> None:
        context.abort_with_status(
            coded_status(grpc.StatusCode.NOT_FOUND, "LEASE_NOT_FOUND", f"lease {lid} not found", lease_id=str(lid))
        )

    def LeaseGrant(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            self.s.write_ids.append(("lease_grant", request.write_id.client_id, request.write_id.seq))
            self.s.rev += 1
            lid = request.id or self.s.rev
            self.s.leases[lid] = (request.ttl_ms, time.monotonic() + request.ttl_ms / 1000)
            return pb.LeaseGrantResponse(id=lid, ttl_ms=request.ttl_ms, revision=self.s.rev)

    def LeaseRevoke(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            if request.id not in self.s.leases:
                self._missing(context, request.id)
            return pb.LeaseRevokeResponse(deleted=self.s.revoke(request.id), revision=self.s.rev)

    def _renew(self, lid: int, context) -> pb.LeaseKeepAliveResponse:
        with self.s.lock:
            self.s.expire()
            if lid not in self.s.leases:
                self._missing(context, lid)
            ttl_ms, _ = self.s.leases[lid]
            self.s.leases[lid] = (ttl_ms, time.monotonic() + ttl_ms / 1000)
            self.s.keepalives += 1
            return pb.LeaseKeepAliveResponse(id=lid, ttl_ms=ttl_ms)

    def LeaseKeepAlive(self, request_iterator, context):
        self._leader(context)
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.s.keepalive_auth.append(auth)
        for req in request_iterator:
            if self.s.stall_keepalives:  # a hung leader: reads renewals, never answers
                continue
            yield self._renew(req.id, context)

    def LeaseRenew(self, request, context):
        self._leader(context)
        return self._renew(request.id, context)

    def LeaseTimeToLive(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            if request.id not in self.s.leases:
                self._missing(context, request.id)
            ttl_ms, exp = self.s.leases[request.id]
            keys = sorted(k for k, kv in self.s.kvs.items() if kv.lease == request.id)
            return pb.LeaseTimeToLiveResponse(
                id=request.id,
                granted_ttl_ms=ttl_ms,
                remaining_ms=max(0, int((exp - time.monotonic()) * 1000)),
                keys=keys if request.keys else [],
                key_count=len(keys),
            )

    def LeaseList(self, request, context):
        self._leader(context)
        with self.s.lock:
            self.s.expire()
            return pb.LeaseListResponse(
                leases=[pb.LeaseStatus(id=i, granted_ttl_ms=t) for i, (t, _) in sorted(self.s.leases.items())]
            )


class FakeLock(rpc.LockServicer, rpc.ElectionServicer):
    """The lock/election recipe over the store: a holder key per lease under
    ``name/``, queued by create_revision."""

    def __init__(self, store: Store):
        self.s = store

    def _enqueue(self, name: bytes, lease: int, value: bytes, context) -> bytes:
        key = name + b"/" + b"%016x" % lease
        with self.s.lock:
            self.s.expire()
            if key not in self.s.kvs:
                self.s.put(pb.PutRequest(key=key, value=value, lease=lease), context)
        return key

    def _head(self, name: bytes) -> Optional[pb.KeyValue]:
        keys = self.s.in_range(name + b"/", name + b"0")
        kvs = sorted((self.s.kvs[k] for k in keys), key=lambda kv: kv.create_revision)
        return kvs[0] if kvs else None

    def _wait_head(self, name: bytes, key: bytes, context) -> pb.KeyValue:
        while context.is_active():
            with self.s.lock:
                self.s.expire()
                kv = self.s.kvs.get(key)
                if kv is None:
                    context.abort_with_status(
                        coded_status(grpc.StatusCode.NOT_FOUND, "LEASE_NOT_FOUND", "lease ended while waiting")
                    )
                head = self._head(name)
                if head is not None and head.key == key:
                    return kv
            time.sleep(0.01)
        context.abort(grpc.StatusCode.CANCELLED, "gone")

    def Lock(self, request, context):
        key = self._enqueue(request.name, request.lease, b"", context)
        kv = self._wait_head(request.name, key, context)
        return pb.LockResponse(key=key, revision=kv.create_revision)

    def Unlock(self, request, context):
        with self.s.lock:
            if request.key in self.s.kvs:
                self.s.delete_range(pb.DeleteRangeRequest(key=request.key))
        return pb.UnlockResponse()

    def Campaign(self, request, context):
        key = self._enqueue(request.name, request.lease, request.value, context)
        kv = self._wait_head(request.name, key, context)
        return pb.CampaignResponse(
            leader=pb.LeaderKey(name=request.name, key=key, revision=kv.create_revision, lease=request.lease)
        )

    def _held(self, leader: pb.LeaderKey, context) -> None:
        kv = self.s.kvs.get(leader.key)
        if kv is None or kv.create_revision != leader.revision:
            context.abort_with_status(coded_status(grpc.StatusCode.FAILED_PRECONDITION, "NOT_HELD", "not held"))

    def Proclaim(self, request, context):
        with self.s.lock:
            self.s.expire()
            self._held(request.leader, context)
            self.s.put(pb.PutRequest(key=request.leader.key, value=request.value, lease=request.leader.lease), context)
        return pb.ProclaimResponse()

    def Resign(self, request, context):
        with self.s.lock:
            if request.leader.key in self.s.kvs:
                self.s.delete_range(pb.DeleteRangeRequest(key=request.leader.key))
        return pb.ResignResponse()

    def Leader(self, request, context):
        with self.s.lock:
            self.s.expire()
            head = self._head(request.name)
        return pb.ElectionLeaderResponse(kv=head) if head is not None else pb.ElectionLeaderResponse()

    def Observe(self, request, context):
        last = None
        while context.is_active():
            with self.s.lock:
                self.s.expire()
                head = self._head(request.name)
            if head is not None and (last is None or (head.key, head.mod_revision) != last):
                last = (head.key, head.mod_revision)
                yield pb.ElectionLeaderResponse(kv=head)
            time.sleep(0.01)


class FakeNode:
    """A fake node on 127.0.0.1 (the leader, or a follower pointing at ``leader_addr``)."""

    def __init__(self, store: Optional[Store] = None, leader_addr: Optional[str] = None):
        self.store = store or Store()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        rpc.add_KvServicer_to_server(FakeKv(self.store, leader_addr), self.server)
        rpc.add_LeaseServicer_to_server(FakeLease(self.store, leader_addr), self.server)
        if leader_addr is None:
            locks = FakeLock(self.store)
            rpc.add_LockServicer_to_server(locks, self.server)
            rpc.add_ElectionServicer_to_server(locks, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)
