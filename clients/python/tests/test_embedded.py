"""The engine in-process (pyo3): one node, every client method, restart,
data-dir locking, bad input, the asyncio form."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from cluster import wait_until

import d_engine as dengine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dengine.EmbeddedEngine]:
    with dengine.EmbeddedEngine.start(tmp_path / "data") as e:
        e.wait_ready(10)
        yield e


@pytest.fixture
def client(engine: dengine.EmbeddedEngine) -> dengine.EmbeddedClient:
    return engine.client()


def test_same_methods_and_signatures_as_the_grpc_client():
    import inspect

    public = {n for n in dir(dengine.Client) if not n.startswith("_")}
    assert public <= set(dir(dengine.EmbeddedClient)), public - set(dir(dengine.EmbeddedClient))
    for name in public - {"close"}:
        a = inspect.signature(getattr(dengine.Client, name))
        b = inspect.signature(getattr(dengine.EmbeddedClient, name))
        assert list(a.parameters) == list(b.parameters), name
        assert [p.default for p in a.parameters.values()] == [p.default for p in b.parameters.values()], name
    apublic = {n for n in dir(dengine.AsyncClient) if not n.startswith("_")}
    assert apublic <= set(dir(dengine.AsyncEmbeddedClient))


def test_put_get_all_consistencies(client: dengine.EmbeddedClient):
    rev = client.put(b"k", b"v")
    for c in ("linearizable", "lease", "eventual", dengine.Consistency.EVENTUAL):
        kv = client.get("k", consistency=c)
        assert kv == dengine.KeyValue(b"k", b"v", rev, rev, 1, 0)
    assert client.get(b"missing") is None


def test_str_bytearray_memoryview_accepted(client: dengine.EmbeddedClient):
    client.put("clé", bytearray(b"a"))
    client.put(memoryview(b"mv"), "välue")
    assert client.get("clé".encode()).value == b"a"
    assert client.get(b"mv").value == "välue".encode()


def test_get_multi_delete_cas_scan(client: dengine.EmbeddedClient):
    client.put(b"a", b"1")
    client.put(b"c", b"3")
    assert [kv and kv.value for kv in client.get_multi([b"a", b"b", "c"])] == [b"1", None, b"3"]
    assert client.delete(b"a") is True and client.delete(b"a") is False and client.get(b"a") is None
    created = client.compare_and_swap(b"x", None, b"1")
    assert created.succeeded and created.current.value == b"1"
    assert not client.compare_and_swap(b"x", None, b"2").succeeded
    failed = client.compare_and_swap(b"x", b"nope", b"2")
    assert not failed.succeeded and failed.current.value == b"1"
    assert client.compare_and_swap(b"x", b"1", b"2").succeeded and client.get(b"x").value == b"2"
    gone = client.compare_and_swap(b"x", b"2", None)
    assert gone.succeeded and gone.current is None and client.get(b"x") is None
    for k in (b"p/3", b"p/1", b"p/2", b"q/1"):
        client.put(k, k)
    assert [kv.key for kv in client.scan_prefix(b"p/")] == [b"p/1", b"p/2", b"p/3"]
    assert [kv.key for kv in client.scan_prefix("p/", limit=1)] == [b"p/1"]
    assert len(client.scan_prefix(b"")) == 5


def test_ttl(client: dengine.EmbeddedClient):
    client.put(b"t", b"x", ttl=0.3)
    kv = client.get(b"t")
    assert kv is not None and kv.expires_at_ms > 0
    wait_until("the ttl key to expire", lambda: client.get(b"t") is None, timeout=8)
    r = client.compare_and_swap(b"t2", None, b"y", ttl=0.3)
    assert r.succeeded and r.current.expires_at_ms > 0
    wait_until("the cas ttl key to expire", lambda: client.get(b"t2") is None, timeout=8)


def test_watch_key_prefix_and_start_revision(client: dengine.EmbeddedClient):
    with client.watch(b"w") as w, client.watch_prefix(b"p/") as wp:
        r1 = client.put(b"w", b"1")
        client.put(b"p/a", b"a")
        client.delete(b"w")
        ev1, ev2 = next(w), next(w)
        assert (ev1.type, ev1.kv.value, ev1.revision) == ("put", b"1", r1)
        assert ev2.type == "delete" and ev2.revision > r1
        assert next(wp).kv.key == b"p/a"
    with client.watch(b"w", start_revision=r1) as replay:
        assert [next(replay).type, next(replay).type] == ["put", "delete"]


def test_watch_cancel_from_another_thread_unblocks(client: dengine.EmbeddedClient):
    w = client.watch(b"never")
    out = []
    t = threading.Thread(target=lambda: out.append(list(w)), daemon=True)
    t.start()
    time.sleep(0.3)
    w.cancel()
    t.join(5)
    assert not t.is_alive() and out == [[]]


def test_watch_ends_with_watch_canceled_when_the_engine_stops(tmp_path: Path):
    e = dengine.EmbeddedEngine.start(tmp_path)
    e.wait_ready(10)
    w = e.client().watch(b"k")
    errors = []

    def consume():
        try:
            list(w)
        except dengine.Error as err:
            errors.append(err)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.2)
    e.stop()
    t.join(5)
    assert not t.is_alive(), "watch hung after stop()"
    assert len(errors) == 1 and isinstance(errors[0], (dengine.WatchCanceled, dengine.ShuttingDown)), errors


def test_members_and_leader(engine: dengine.EmbeddedEngine, client: dengine.EmbeddedClient):
    assert [(m.id, m.role) for m in client.members()] == [(1, "voter")]
    assert client.leader().id == 1 and engine.node_id == 1
    assert engine.peer_addr is None and engine.client_addr is None


def test_gil_is_released_while_waiting(client: dengine.EmbeddedClient):
    # A watch blocked in next() must not stop other Python threads.
    w = client.watch(b"gil")
    t = threading.Thread(target=lambda: next(w, None), daemon=True)
    t.start()
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.3:
        n += 1
    w.cancel()
    t.join(5)
    assert n > 10_000 and not t.is_alive()


def test_concurrent_writers_from_threads(client: dengine.EmbeddedClient):
    def work(tid: int):
        for i in range(100):
            client.put(b"t%d/%d" % (tid, i), b"x")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(client.scan_prefix(b"t")) == 800


def test_restart_keeps_data(tmp_path: Path):
    with dengine.EmbeddedEngine.start(tmp_path) as e:
        e.wait_ready(10)
        revs = [e.client().put(b"k%d" % i, b"v%d" % i) for i in range(50)]
    with dengine.EmbeddedEngine.start(str(tmp_path)) as e:
        e.wait_ready(10)
        c = e.client()
        got = c.get_multi([b"k%d" % i for i in range(50)])
        assert [kv.value for kv in got] == [b"v%d" % i for i in range(50)]
        assert [kv.mod_revision for kv in got] == revs
        assert c.put(b"after", b"x") > revs[-1]


def test_data_dir_in_use_is_a_clear_error(engine: dengine.EmbeddedEngine, tmp_path: Path):
    with pytest.raises(dengine.StorageError, match="in use by another d-engine process"):
        dengine.EmbeddedEngine.start(tmp_path / "data")
    assert engine.client().put(b"still", b"works") > 0


def test_stopped_engine_raises_client_closed(tmp_path: Path):
    e = dengine.EmbeddedEngine.start(tmp_path)
    c = e.client()
    e.stop()
    e.stop()  # idempotent
    for call in (lambda: c.put(b"k", b"v"), lambda: c.get(b"k"), lambda: c.members(), lambda: e.wait_ready(1)):
        with pytest.raises(dengine.ClientClosed, match="stopped"):
            call()
    assert e.stopped


def test_closed_client_raises_client_closed(engine: dengine.EmbeddedEngine):
    with engine.client() as c:
        c.put(b"k", b"v")
    with pytest.raises(dengine.ClientClosed):
        c.get(b"k")
    assert engine.client().get(b"k").value == b"v"


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda c: c.put(1, b"v"), TypeError, "key must be bytes or str, not int"),
        (lambda c: c.put(b"k", 3.5), TypeError, "value must be bytes or str, not float"),
        (lambda c: c.put(b"", b"v"), dengine.InvalidArgument, "key is empty"),
        (lambda c: c.put(b"k" * 4097, b"v"), dengine.InvalidArgument, "limit is 4096"),
        (lambda c: c.put(b"k", b"v" * ((1 << 20) + 1)), dengine.InvalidArgument, "limits.max_value_bytes"),
        (lambda c: c.put(b"k", b"v", ttl="1"), TypeError, "ttl must be a number"),
        (lambda c: c.put(b"k", b"v", ttl=-1), dengine.InvalidArgument, "ttl must be > 0"),
        (lambda c: c.get(b"k", consistency="strong"), dengine.InvalidArgument, "unknown consistency"),
        (lambda c: c.get_multi(b"k"), TypeError, "list of keys"),
        (lambda c: c.get_multi([b"a", 2]), TypeError, "not int"),
        (lambda c: c.scan_prefix(b"p", limit="2"), TypeError, "limit must be an int"),
        (lambda c: c.watch(b"k", start_revision="1"), TypeError, "start_revision must be an int"),
        (lambda c: c.compare_and_swap(b"k", 1, b"v"), TypeError, "expected must be bytes or str"),
    ],
)
def test_bad_input_raises_clear_python_errors(client: dengine.EmbeddedClient, call, exc, msg):
    with pytest.raises(exc, match=msg):
        call(client)


def test_bad_start_arguments(tmp_path: Path):
    with pytest.raises(TypeError, match="data_dir must be a non-empty str or os.PathLike"):
        dengine.EmbeddedEngine.start(123)
    with pytest.raises(dengine.InvalidArgument, match="cannot read config file"):
        dengine.EmbeddedEngine.start_with(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node_id = 1\n[raft]\nelection_timeout_ms = 1\n")
    with pytest.raises(dengine.InvalidArgument, match="election_timeout_ms"):
        dengine.EmbeddedEngine.start_with(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("nodeid = 1\n")
    with pytest.raises(dengine.InvalidArgument, match="nodeid"):
        dengine.EmbeddedEngine.start_with(unknown)
    with pytest.raises(TypeError, match="EmbeddedEngine.start"):
        dengine.EmbeddedEngine(object())


def test_wait_ready_rejects_bad_timeouts(engine: dengine.EmbeddedEngine):
    with pytest.raises(TypeError, match="timeout must be a number"):
        engine.wait_ready("5")
    with pytest.raises(dengine.InvalidArgument, match="timeout"):
        engine.wait_ready(-1)


async def test_asyncio_engine_and_client(tmp_path: Path):
    async with await dengine.AsyncEmbeddedEngine.start(tmp_path) as e:
        assert (await e.wait_ready(10)).id == 1
        c = e.client()
        revs = await asyncio.gather(*(c.put(b"a/%03d" % i, b"%d" % i) for i in range(200)))
        assert len(set(revs)) == 200
        assert (await c.get(b"a/007")).value == b"7"
        assert (await c.get(b"a/007", "eventual")).value == b"7"
        assert [kv and kv.value for kv in await c.get_multi([b"a/001", b"zz"])] == [b"1", None]
        assert len(await c.scan_prefix(b"a/", limit=10)) == 10
        assert (await c.compare_and_swap(b"a/001", b"1", b"one")).succeeded
        assert await c.delete(b"a/002") is True
        assert [m.id for m in await c.members()] == [1] and (await c.leader()).id == 1
        with pytest.raises(dengine.InvalidArgument):
            await c.put(b"", b"x")
        with pytest.raises(TypeError):
            await c.get(5)

        w = await c.watch_prefix(b"w/")
        await c.put(b"w/1", b"x")
        await c.delete(b"w/1")
        seen = []
        async for ev in w:
            seen.append((ev.type, ev.kv.key))
            if len(seen) == 2:
                w.cancel()
        assert seen == [("put", b"w/1"), ("delete", b"w/1")]

        # a cancelled await does not break the client
        task = asyncio.ensure_future(c.put(b"c", b"1"))
        task.cancel()
        await asyncio.sleep(0.05)
        assert (await c.put(b"c", b"2")) > 0
    with pytest.raises(dengine.ClientClosed):
        await c.get(b"a/001")


async def test_sync_engine_aio_client(engine: dengine.EmbeddedEngine):
    c = engine.aio_client()
    await c.put(b"x", b"y")
    assert engine.client().get(b"x").value == b"y"
    async with c:
        pass
    with pytest.raises(dengine.ClientClosed):
        await c.get(b"x")
