"""The core's observation port: routed store calls, live-tail pollers and outcomes reach the
installed observer; the default observes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core import observe
from northstar_core.errors import NorthstarError
from northstar_core.kernel.streams import SequencedStream
from northstar_core.kernel.tail import TailHub
from northstar_core.routing import Connection, KindStore, Route
from northstar_core.storage import (
    Absent,
    BackendUnavailable,
    ConditionFailed,
    Item,
    ItemStore,
    Op,
    Put,
)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str | None]] = []
        self.pollers = 0
        self.gates: list[tuple[str, str]] = []
        self.commits: list[tuple[str, int]] = []

    def store_call(self, kind: str, backend: str, op: str) -> AbstractContextManager[object]:
        @contextmanager
        def call() -> Iterator[None]:
            try:
                yield
            except BaseException as exc:
                self.calls.append((backend, kind, op, observe.error_kind(exc)))
                raise
            self.calls.append((backend, kind, op, None))

        return call()

    def gate_decision(self, gate: str, outcome: str) -> None:
        self.gates.append((gate, outcome))

    def tail_pollers(self, delta: int) -> None:
        self.pollers += delta

    def group_commit(self, backend: str, batches: int) -> None:
        self.commits.append((backend, batches))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    previous = observe.install(rec)
    try:
        yield rec
    finally:
        observe.install(previous)


class Down(ItemStore):
    capabilities = MemoryItemStore.capabilities

    async def get(self, partition: str, key: str) -> Item | None:
        raise BackendUnavailable("connection refused")

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:  # type: ignore[override]
        raise BackendUnavailable("connection refused")

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        raise BackendUnavailable("connection refused")


def kind_store(inner: ItemStore, kind: str = "chat_store") -> KindStore:
    return KindStore(
        kind, Route(resource_kind=kind, connection="c"), Connection(name="c", backend="memory"), inner
    )


def test_the_default_observer_is_a_no_op_and_install_returns_the_previous() -> None:
    assert observe.current() is observe.NOOP
    with observe.NOOP.store_call("k", "b", "get"):
        pass
    rec = Recorder()
    assert observe.install(rec) is observe.NOOP
    try:
        assert observe.current() is rec
    finally:
        assert observe.install(None) is rec
    assert observe.current() is observe.NOOP


async def test_routed_store_calls_are_reported_with_kind_backend_op_and_outcome(recorder: Recorder) -> None:
    store = kind_store(MemoryItemStore())
    await store.write("p", [Put("a", b"1", condition=Absent())])
    assert await store.get("p", "a") is not None
    assert len(await store.query("p", "")) == 1
    with pytest.raises(ConditionFailed):
        await store.write("p", [Put("a", b"2", condition=Absent())])
    assert recorder.calls == [
        ("memory", "chat_store", "write", None),
        ("memory", "chat_store", "get", None),
        ("memory", "chat_store", "query", None),
        ("memory", "chat_store", "write", "condition_failed"),
    ]


async def test_an_unreachable_backend_is_reported_as_backend_unavailable(recorder: Recorder) -> None:
    store = kind_store(Down(), kind="memory_store")
    with pytest.raises(NorthstarError) as err:
        await store.get("p", "a")
    assert err.value.code == "memory_store.backend_unavailable"
    assert recorder.calls == [("memory", "memory_store", "get", "backend_unavailable")]


def test_error_kinds_are_a_small_fixed_vocabulary() -> None:
    assert observe.error_kind(None) is None
    assert observe.error_kind(ConditionFailed("x")) == "condition_failed"
    assert observe.error_kind(NorthstarError("chat_store.invalid_item", "x", 422)) == "invalid_item"
    assert observe.error_kind(NorthstarError("chat_store.version_conflict", "x", 409)) == "error"
    assert observe.error_kind(asyncio.CancelledError()) == "cancelled"
    assert observe.error_kind(RuntimeError("boom")) == "error"


async def test_a_shared_store_with_followed_streams_runs_one_poller_while_they_have_subscribers(
    recorder: Recorder, tmp_path: Path
) -> None:
    hub = TailHub(poll_interval=0.01)
    store = kind_store(SqliteItemStore(tmp_path / "tail.sqlite3"))
    streams = [SequencedStream(store, f"t_a|lab|thread|th{i}", "chat") for i in range(2)]
    followers = [hub.follow(stream, 0, heartbeat=0.02) for stream in streams]
    try:
        for follower in followers:
            assert await asyncio.wait_for(follower.__anext__(), 5) is None  # a heartbeat: subscribed
        assert recorder.pollers == 1  # one per store, whatever the number of streams
        # the poller's reads (of the activity index) are reported like any other store call
        for _ in range(100):
            if ("memory", "chat_store", "query", None) in recorder.calls:
                break
            await asyncio.sleep(0.01)
        assert ("memory", "chat_store", "query", None) in recorder.calls
        await followers[0].aclose()
        assert recorder.pollers == 1
        await followers[1].aclose()
        for _ in range(100):
            if recorder.pollers == 0:
                break
            await asyncio.sleep(0.01)
        assert recorder.pollers == 0
    finally:
        await hub.close()
        await store.close()
    # a memory store is not shared with another process: nothing to poll for
    memory = SequencedStream(kind_store(MemoryItemStore()), "t_a|lab|thread|th", "chat")
    alone = hub.follow(memory, 0, heartbeat=0.02)
    assert await asyncio.wait_for(alone.__anext__(), 5) is None
    assert recorder.pollers == 0
    await alone.aclose()
