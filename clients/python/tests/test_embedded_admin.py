"""Node events (leader_changes, member_changes, cluster_changes) and admin
calls of the embedded engine, sync and asyncio, on a single in-process node:
the streams start with the current state, report a membership change, and
end when the engine stops."""

from __future__ import annotations

import asyncio
import queue
import threading
from pathlib import Path
from typing import Iterator

import pytest

import d_engine as dengine


def _in_thread(it: Iterator) -> queue.Queue:
    """Iterates ``it`` on a thread (so the test's waits are bounded)."""
    q: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            for x in it:
                q.put(x)
            q.put(StopIteration())
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            q.put(e)

    threading.Thread(target=run, daemon=True).start()
    return q


def test_events_and_admin_calls(tmp_path: Path):
    engine = dengine.EmbeddedEngine.start(tmp_path / "data")
    try:
        me = engine.wait_ready(10)
        leaders = _in_thread(engine.leader_changes())
        members = _in_thread(engine.member_changes())
        states = _in_thread(engine.cluster_changes())

        assert leaders.get(timeout=5) == dengine.LeaderInfo(id=me.id, addr=me.addr)
        first = members.get(timeout=5)
        assert [(m.id, m.role) for m in first] == [(engine.node_id, "voter")]
        s = states.get(timeout=5)
        assert s.leader_changed and s.members_changed and s.node_id == engine.node_id and s.term > 0

        st = engine.node_status()
        assert (st.id, st.role, st.leader_id) == (engine.node_id, "leader", engine.node_id)
        client = engine.client()
        client.put(b"k", b"v")
        assert client.trigger_snapshot() >= st.applied_index
        assert client.node_status().applied_index > st.applied_index
        assert client.wait_ready(5).id == engine.node_id

        # A learner that never starts: the change commits on the one voter.
        ms = engine.add_learner(9, "127.0.0.1:1", "127.0.0.1:2")
        assert any(m.id == 9 and m.role == "learner" for m in ms)
        grown = members.get(timeout=5)
        assert sorted((m.id, m.role) for m in grown) == [(engine.node_id, "voter"), (9, "learner")]
        s = states.get(timeout=5)
        assert s.members_changed and not s.leader_changed
        assert leaders.empty(), "a membership change is not a leader change"
        assert len(engine.add_learner(9, "127.0.0.1:1", "127.0.0.1:2")) == 2, "idempotent"

        assert [m.id for m in client.remove_member(9)] == [engine.node_id]
        assert [m.id for m in members.get(timeout=5)] == [engine.node_id]

        with pytest.raises(dengine.InvalidArgument, match="id"):
            engine.add_learner(0, "127.0.0.1:1")
        with pytest.raises(dengine.UnknownNode):
            engine.promote(42)
        with pytest.raises(dengine.UnknownNode):
            engine.transfer_leader(42)
        with pytest.raises(dengine.InvalidArgument, match="own node"):
            client.node_status("127.0.0.1:1")

        cancelled = engine.cluster_changes()
        cancelled.close()
        assert list(cancelled) == []
    finally:
        engine.stop()
    # Every stream ends when the engine stops.
    for q in (leaders, members, states):
        while True:
            item = q.get(timeout=5)
            if isinstance(item, BaseException):
                assert isinstance(item, StopIteration), repr(item)
                break


async def test_async_events_and_admin_calls(tmp_path: Path):
    engine = await dengine.AsyncEmbeddedEngine.start(tmp_path / "data")
    try:
        await engine.wait_ready(10)
        leaders = engine.leader_changes()
        members = engine.member_changes()
        first = await asyncio.wait_for(leaders.__anext__(), 5)
        assert first.id == engine.node_id
        assert [m.id for m in await asyncio.wait_for(members.__anext__(), 5)] == [engine.node_id]

        st = await engine.node_status()
        assert st.role == "leader"
        assert await engine.trigger_snapshot() > 0
        client = engine.client()
        assert (await client.wait_ready(5)).id == engine.node_id
        ms = await client.add_learner(9, "127.0.0.1:1")
        assert any(m.id == 9 for m in ms)
        grown = await asyncio.wait_for(members.__anext__(), 5)
        assert any(m.id == 9 and m.role == "learner" for m in grown)
        await engine.remove_member(9)
        assert [m.id for m in await asyncio.wait_for(members.__anext__(), 5)] == [engine.node_id]
        with pytest.raises(dengine.UnknownNode):
            await engine.promote(42)
    finally:
        await engine.stop()

    async def drain(it) -> None:
        async for _ in it:
            pass

    await asyncio.wait_for(drain(leaders), 5)
    await asyncio.wait_for(drain(members), 5)
