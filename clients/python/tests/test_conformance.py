"""The Python driver of the cross-language conformance suite (issue 18).

Runs every scenario of ``tests/conformance/scenarios.json`` (repository
root) against real d-engine-server processes through ``d_engine.Client``
and asserts the outcome the data states. The Rust and Go drivers run the
same file; docs/clients.md ("Conformance suite") describes the steps."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import pytest
from cluster import REPO, ServerCluster
from conftest import start_cluster

import d_engine as dengine

DATA = REPO / "tests" / "conformance" / "scenarios.json"
SUITE = json.loads(DATA.read_text())
assert SUITE["format"] == 1, f"{DATA}: format {SUITE['format']}; this driver reads format 1"

# Python's row of the error table in docs/clients.md: contract name -> class.
# Matched exactly (NoLeader, Overloaded and ShuttingDown subclass Unavailable).
ERRORS: Dict[str, Type[dengine.Error]] = {
    "NOT_LEADER": dengine.NotLeader,
    "NO_LEADER": dengine.NoLeader,
    "INVALID_ARGUMENT": dengine.InvalidArgument,
    "OVERLOADED": dengine.Overloaded,
    "TIMEOUT": dengine.Timeout,
    "SHUTTING_DOWN": dengine.ShuttingDown,
    "STORAGE": dengine.StorageError,
    "CHANGE_IN_PROGRESS": dengine.ChangeInProgress,
    "COMPACTED": dengine.Compacted,
    "UNAUTHENTICATED": dengine.Unauthenticated,
    "PERMISSION_DENIED": dengine.PermissionDenied,
    "UNKNOWN_NODE": dengine.UnknownNode,
    "NO_SPACE": dengine.NoSpace,
    "LEASE_NOT_FOUND": dengine.LeaseNotFound,
    "NOT_HELD": dengine.NotHeld,
    "UNAVAILABLE": dengine.Unavailable,
    "CLIENT_CLOSED": dengine.ClientClosed,
    "WATCH_CANCELED": dengine.WatchCanceled,
}

_END = object()


class Failure(AssertionError):
    pass


class WatchReader:
    """Reads a ``Watch`` on a thread once the first item is asked for (so a
    scenario can leave it unread: a slow consumer), handing events and the
    ending error to the test with a bounded wait."""

    def __init__(self, watch: Optional[dengine.Watch], start: int):
        self.watch = watch
        self.start = start
        self.last = 0
        self.ended: Optional[dengine.Error] = None
        self._q: queue.Queue[Tuple[str, Any]] = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def cancel(self) -> None:
        if self.watch is not None:
            self.watch.cancel()

    def _run(self) -> None:
        assert self.watch is not None
        try:
            for ev in self.watch:
                self._q.put(("event", ev))
            self._q.put(("stop", None))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self._q.put(("error", e))

    def next(self, timeout: float) -> Tuple[str, Any]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return ("timeout", None)


def batch_key(prefix: str, i: int) -> str:
    return f"{prefix}{i:04d}"


def batch_value(i: int, size: int = 0) -> bytes:
    v = f"v{i:04d}".encode()
    return v + b"x" * max(0, size - len(v))


def prefix_end(p: str) -> bytes:
    b = bytearray(p.encode())
    b[-1] += 1
    return bytes(b)


class Run:
    def __init__(self, scenario: Dict[str, Any], cluster: ServerCluster):
        self.sc = scenario
        self.cluster = cluster
        self.ns = f"conf/py/{scenario['name']}/"
        self.client = dengine.Client(cluster.endpoints)
        self.revs: Dict[str, int] = {}
        self.watches: Dict[str, WatchReader] = {}
        self.stopped: Optional[int] = None
        self.paused: Optional[int] = None
        self.step = ""

    def fail(self, msg: str) -> None:
        raise Failure(f"{self.step}: {msg}")

    def close(self) -> None:
        for w in self.watches.values():
            w.cancel()
        self.client.close()

    def check_error(self, err: BaseException, name: str) -> dengine.Error:
        cls = ERRORS.get(name)
        if cls is None:
            self.fail(f"the Python driver has no row for error {name!r}")
        if type(err) is not cls:
            self.fail(f"expected {name} ({cls.__name__}), got {type(err).__name__}: {err}")
        assert isinstance(err, dengine.Error)
        want = SUITE["errors"].get(name)
        if want is not None and err.retryable != want["retryable"]:
            self.fail(f"{name}: retryable = {err.retryable}, the error table says {want['retryable']}")
        return err

    def expect_error(self, name: str, fn: Any, max_elapsed_ms: Optional[int]) -> None:
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - classified below
            self.check_error(e, name)
        else:
            self.fail(f"expected {name}, got success")
        elapsed = (time.monotonic() - t0) * 1000
        if max_elapsed_ms and elapsed > max_elapsed_ms:
            self.fail(f"{name} took {elapsed:.0f} ms (retried?); the limit is {max_elapsed_ms} ms")

    # -- steps -------------------------------------------------------------
    def run(self, st: Dict[str, Any]) -> None:
        op = st["op"]
        getattr(self, "op_" + op)(st)

    def op_put(self, st: Dict[str, Any]) -> None:
        key = self.ns + st["key"]
        value = st["value"].encode() if "value" in st else b"x" * st["size"]
        if "expect_error" in st:
            self.expect_error(st["expect_error"], lambda: self.client.put(key, value), st.get("max_elapsed_ms"))
            return
        self.revs[key] = self.client.put(key, value)

    def op_put_many(self, st: Dict[str, Any]) -> None:
        for i in range(st["count"]):
            key = self.ns + batch_key(st["prefix"], i)
            self.revs[key] = self.client.put(key, batch_value(i, st.get("size", 0)))

    def op_txn_put_many(self, st: Dict[str, Any]) -> None:
        ops = [
            dengine.Op.put(self.ns + batch_key(st["prefix"], i), batch_value(i, st.get("size", 0)))
            for i in range(st["count"])
        ]
        if "expect_error" in st:
            self.expect_error(st["expect_error"], lambda: self.client.txn(success=ops), st.get("max_elapsed_ms"))
            return
        self.client.txn(success=ops)

    def op_get(self, st: Dict[str, Any]) -> None:
        kv = self.client.get(self.ns + st["key"])
        want = st["expect"]
        got = None if kv is None else kv.value
        if got != (None if want is None else want.encode()):
            self.fail(f"get {st['key']!r} = {got!r}, want {want!r}")

    def op_cas(self, st: Dict[str, Any]) -> None:
        expected = st["expected"]
        new_value = st.get("new_value")  # absent or null: no new value (deletes)
        res = self.client.compare_and_swap(
            self.ns + st["key"],
            None if expected is None else expected.encode(),
            None if new_value is None else new_value.encode(),
        )
        if "expect_succeeded" in st and res.succeeded != st["expect_succeeded"]:
            self.fail(f"cas {st['key']!r}: succeeded = {res.succeeded}, want {st['expect_succeeded']}")
        if "expect_current" in st:
            want = st["expect_current"]
            got = None if res.current is None else res.current.value
            if got != (None if want is None else want.encode()):
                self.fail(f"cas {st['key']!r}: current = {got!r}, want {want!r}")

    def check_batch_keys(self, keys: List[bytes], prefix: str, n: int) -> None:
        want = [batch_key(prefix, i).encode() for i in range(n)]
        if keys != want:
            self.fail(f"{len(keys)} keys {keys[:3]}..., want {n} in order, each once ({want[:3]}...)")

    def op_range_pages(self, st: Dict[str, Any]) -> None:
        prefix = self.ns + st["prefix"]
        end = prefix_end(prefix)
        nxt = prefix.encode()
        keys: List[bytes] = []
        pages = 0
        while True:
            page = self.client.range(nxt, end, limit=st["page_size"])
            pages += 1
            want = st["expect_keys"] - len(keys)
            if page.count != want:
                self.fail(f"page {pages}: count = {page.count}, want {want} (keys from the page's start to the end)")
            if len(page.kvs) > st["page_size"]:
                self.fail(f"page {pages} has {len(page.kvs)} pairs, more than the limit {st['page_size']}")
            keys += [kv.key for kv in page.kvs]
            if not page.more:
                break
            if pages > st["expect_keys"] + 1:
                self.fail(f"more than {pages} pages")
            nxt = page.next_key
        if pages != st["expect_pages"]:
            self.fail(f"{pages} pages, want {st['expect_pages']}")
        self.check_batch_keys(keys, prefix, st["expect_keys"])

    def op_range_all(self, st: Dict[str, Any]) -> None:
        prefix = self.ns + st["prefix"]
        keys = [kv.key for kv in self.client.range_iter(prefix, prefix=True, page_size=st["page_size"])]
        self.check_batch_keys(keys, prefix, st["expect_keys"])

    def resolve_start(self, start: str) -> int:
        if start == "now":
            return 0
        kind, _, arg = start.partition(":")
        if kind == "rev_of":
            return self.revs[self.ns + arg]
        w = self.watches[arg]
        if w.ended is None:
            self.fail(f"watch {arg!r} has not ended")
        assert w.ended is not None
        if kind == "resume_of":
            rev = w.ended.resume_revision
        elif kind == "compact_of":
            rev = getattr(w.ended, "compact_revision", None)
        else:
            self.fail(f"unknown start {start!r}")
        if not rev:
            self.fail(f"start {start!r} resolved to {rev!r}")
        return int(rev)

    def op_watch(self, st: Dict[str, Any]) -> None:
        start = self.resolve_start(st.get("start", "now"))
        try:
            if "prefix" in st:
                w = self.client.watch_prefix(self.ns + st["prefix"], start)
            else:
                w = self.client.watch(self.ns + st["key"], start)
        except dengine.Error as e:
            if "expect_error" not in st:
                raise
            err = self.check_error(e, st["expect_error"])
            self._opened_with_error(st, start, err)
            return
        reader = WatchReader(w, start)
        self.watches[st["name"]] = reader
        if "expect_error" in st:
            kind, item = reader.next(self.timeout(st))
            if kind != "error":
                self.fail(f"want the watch to end with {st['expect_error']} before any event, got {kind} {item!r}")
            self._opened_with_error(st, start, self.check_error(item, st["expect_error"]))

    def _opened_with_error(self, st: Dict[str, Any], start: int, err: dengine.Error) -> None:
        reader = self.watches.setdefault(st["name"], WatchReader(None, start))
        reader.ended = err
        if st["expect_error"] == "COMPACTED":
            cr = getattr(err, "compact_revision", None) or 0
            if cr <= start:
                self.fail(f"compact revision {cr}, want one after the start {start}")
        if err.resume_revision != start:
            self.fail(f"resume revision {err.resume_revision}, want the start revision {start} (nothing delivered)")

    @staticmethod
    def timeout(st: Dict[str, Any]) -> float:
        return float(st.get("timeout_s", 10))

    def next_event(self, w: WatchReader, st: Dict[str, Any], what: str) -> dengine.WatchEvent:
        kind, item = w.next(self.timeout(st))
        if kind == "event":
            return item
        if kind == "error":
            self.fail(f"{what}: the watch ended with {type(item).__name__}: {item}")
        why = "the watch stopped" if kind == "stop" else f"nothing within {self.timeout(st)} s"
        self.fail(f"{what}: {why}")
        raise AssertionError("unreachable")

    def check_event(self, ev: dengine.WatchEvent, typ: str, key: str, value: bytes) -> None:
        if ev.type != typ or ev.kv.key != key.encode() or ev.kv.value != value:
            self.fail(
                f"event {ev.type} {ev.kv.key!r} ({len(ev.kv.value)} bytes, revision {ev.revision}), "
                f"want {typ} {key!r} ({len(value)} bytes) - in order, each once"
            )
        rev = self.revs.get(key)
        if rev is not None and ev.revision != rev:
            self.fail(f"event for {key!r} has revision {ev.revision}, the put returned {rev}")

    def op_expect_events(self, st: Dict[str, Any]) -> None:
        w = self.watches[st["watch"]]
        for i, want in enumerate(st["events"]):
            ev = self.next_event(w, st, f"event {i + 1} of {len(st['events'])}")
            self.check_event(ev, want["type"], self.ns + want["key"], want["value"].encode())
            w.last = ev.revision

    def op_expect_batch(self, st: Dict[str, Any]) -> None:
        w = self.watches[st["watch"]]
        prefix = self.ns + st["prefix"]
        for i in range(st["count"]):
            key = batch_key(prefix, i)
            if self.revs[key] < w.start:
                continue
            ev = self.next_event(w, st, f"event for {key}")
            self.check_event(ev, "put", key, batch_value(i, st.get("size", 0)))
            w.last = ev.revision

    def op_drain_batch_until_end(self, st: Dict[str, Any]) -> None:
        w = self.watches[st["watch"]]
        prefix = self.ns + st["prefix"]
        deadline = time.monotonic() + self.timeout(st)
        i = 0
        while True:
            kind, item = w.next(max(0.0, deadline - time.monotonic()) if i < st["count"] else 2.0)
            if kind == "error":
                err = self.check_error(item, st["error"])
                w.ended = err
                if i >= st["count"]:
                    self.fail(f"ended after all {i} events: the cut came after the whole batch")
                first_undelivered = self.revs[batch_key(prefix, i)]
                rr = err.resume_revision or 0
                if not (w.last < rr <= first_undelivered):
                    self.fail(
                        f"resume revision {rr}: want one in ({w.last}, {first_undelivered}] (after the last "
                        "delivered event, at or before the first undelivered one)"
                    )
                print(f"{self.step}: {i} of {st['count']} events delivered, then {type(err).__name__}")
                return
            if kind == "event":
                if i >= st["count"]:
                    self.fail(f"an event after the batch: {item!r}")
                self.check_event(item, "put", batch_key(prefix, i), batch_value(i, st.get("size", 0)))
                w.last = item.revision
                i += 1
                continue
            if i >= st["count"]:
                self.fail(f"all {i} events were delivered without {st['error']}: the watcher never fell behind")
            self.fail(f"after {i} events: {'the watch stopped' if kind == 'stop' else 'nothing more in time'}")

    def op_expect_end(self, st: Dict[str, Any]) -> None:
        w = self.watches[st["watch"]]
        kind, item = w.next(self.timeout(st))
        if kind != "error":
            self.fail(f"want the watch to end with {st['error']}, got {kind} {item!r}")
        err = self.check_error(item, st["error"])
        w.ended = err
        rr = err.resume_revision or 0
        if rr <= w.last or rr < w.start:
            self.fail(f"resume revision {rr}: want one past the last delivered event {w.last} (start {w.start})")

    def op_close_client(self, st: Dict[str, Any]) -> None:
        self.client.close()

    def leader(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                lid = self.client.leader().id
                if lid:
                    return lid
            except dengine.Error:
                pass
            time.sleep(0.05)
        self.fail("no leader within 20 s")
        raise AssertionError("unreachable")

    def op_fault(self, st: Dict[str, Any]) -> None:
        kind = st["kind"]
        if kind == "kill_leader":
            self.stopped = self.leader()
            self.cluster.proc(self.stopped).kill(signal.SIGKILL)
        elif kind == "pause_leader":
            self.paused = self.leader()
            p = self.cluster.proc(self.paused).popen
            assert p is not None
            p.send_signal(signal.SIGSTOP)
        elif kind == "resume_paused":
            assert self.paused is not None
            p = self.cluster.proc(self.paused).popen
            assert p is not None
            p.send_signal(signal.SIGCONT)
        elif kind == "terminate_leader":
            self.stopped = self.leader()
            p = self.cluster.proc(self.stopped).popen
            assert p is not None
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.fail(f"node {self.stopped} did not exit within 15 s of SIGTERM")
        elif kind == "restart_stopped":
            assert self.stopped is not None
            self.cluster.proc(self.stopped).start()
        else:
            self.fail(f"unknown fault {kind!r}")


def _ids() -> List[str]:
    return [s["name"] for s in SUITE["scenarios"]]


@pytest.mark.parametrize("scenario", SUITE["scenarios"], ids=_ids())
def test_conformance(scenario: Dict[str, Any], server_bin: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    why = scenario.get("known_differences", {}).get("python")
    if why:
        pytest.skip(f"known difference: {why}")
    fresh: Optional[ServerCluster] = None
    if scenario["cluster"] == "shared":
        cluster = request.getfixturevalue("cluster")
    elif scenario["cluster"] == "fresh":
        fresh = cluster = start_cluster(server_bin, tmp_path, scenario.get("server_toml", ""))
    else:
        raise AssertionError(f"unknown cluster {scenario['cluster']!r}")
    run = Run(scenario, cluster)
    try:
        for i, st in enumerate(scenario["steps"]):
            run.step = f"{scenario['name']} step {i + 1} ({st['op']})"
            run.run(st)
    except Failure:
        if fresh is not None:
            print(fresh.logs())
        raise
    finally:
        run.close()
        if fresh is not None:
            for p in fresh.procs:
                if p.popen is not None and p.popen.poll() is None:
                    p.popen.send_signal(signal.SIGCONT)
            fresh.stop()
