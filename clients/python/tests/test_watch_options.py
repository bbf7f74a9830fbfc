"""Watch options on real nodes (issue 17 item 2): a ``[key, range_end)``
watch with ``prev_kv`` and the ``no_delete`` filter delivers exactly the puts
inside the range, each with the value it replaced, from a standalone
cluster (sync and asyncio clients) and from an embedded engine; an idle
embedded watch with ``progress_notify`` learns the current revision."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from cluster import ServerCluster

import d_engine as dengine

# (key, value or None for a delete)
WRITES: List[Tuple[bytes, Optional[bytes]]] = [
    (b"a", b"1"),
    (b"0", b"x"),  # before the range
    (b"b", b"new-b"),  # overwrites the value written before the watch
    (b"c", b"x"),  # the range's end: outside
    (b"a", None),  # a delete: filtered out
    (b"bz", b"2"),
]
# (key, value, previous value or None)
EXPECTED = [(b"a", b"1", None), (b"b", b"new-b", b"old-b"), (b"bz", b"2", None)]


def _check(events: List[dengine.WatchEvent], prefix: bytes) -> None:
    got = [(e.type, e.kv.key, e.kv.value, e.prev_kv.value if e.prev_kv else None) for e in events]
    assert got == [("put", prefix + k, v, p) for k, v, p in EXPECTED]


def _write(c, prefix: bytes) -> None:
    for k, v in WRITES:
        if v is None:
            c.delete(prefix + k)
        else:
            c.put(prefix + k, v)


def test_range_prev_kv_and_filter_from_a_cluster(cluster: ServerCluster):
    p = b"wopt/sync/"
    with dengine.Client(cluster.endpoints) as c:
        c.put(p + b"b", b"old-b")
        with c.watch(p + b"a", range_end=p + b"c", prev_kv=True, filters=["no_delete"]) as w:
            _write(c, p)
            _check([next(w) for _ in EXPECTED], p)


def test_async_range_prev_kv_and_filter_from_a_cluster(cluster: ServerCluster):
    p = b"wopt/async/"

    async def run() -> None:
        async with dengine.AsyncClient(cluster.endpoints) as c:
            await c.put(p + b"b", b"old-b")
            w = await c.watch(p + b"a", range_end=p + b"c", prev_kv=True, filters=["no_delete"])
            async with w:
                for k, v in WRITES:
                    if v is None:
                        await c.delete(p + k)
                    else:
                        await c.put(p + k, v)
                events = []
                async for e in w:
                    events.append(e)
                    if len(events) == len(EXPECTED):
                        break
            _check(events, p)

    asyncio.run(asyncio.wait_for(run(), 30))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[dengine.EmbeddedEngine]:
    config = tmp_path / "d-engine.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n\n[watch]\nprogress_interval_ms = 200\n')
    with dengine.EmbeddedEngine.start_with(config) as e:
        e.wait_ready(10)
        yield e


def test_range_prev_kv_filter_and_progress_embedded(engine: dengine.EmbeddedEngine):
    p = b"wopt/emb/"
    with engine.client() as c:
        c.put(p + b"b", b"old-b")
        with c.watch(p + b"a", range_end=p + b"c", prev_kv=True, filters=["no_delete"]) as w:
            _write(c, p)
            _check([next(w) for _ in EXPECTED], p)
        last = c.put(p + b"last", b"x")
        with c.watch(p + b"idle", progress_notify=True) as idle:
            e = next(idle)
            while e.is_progress and e.revision < last:
                e = next(idle)
            assert e.is_progress and e.revision >= last
