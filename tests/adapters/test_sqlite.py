"""The contract suite on the SQLite backend, plus SQLite-specific guarantees."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import northstar_adapters.sqlite as sqlite_adapter
from contracts.suite import ALL_CONTRACTS
from northstar_adapters.sqlite import SqliteItemStore, open_store
from northstar_core.routing import Target
from northstar_core.storage import Absent, BackendUnavailable, ConditionFailed, Item, Put
from tests.adapters.harnesses import SqliteHarness
from tests.adapters.sqlite_support import until_queued, writer_blocked


class TestSqlite(*ALL_CONTRACTS):  # type: ignore[misc]
    @pytest.fixture
    async def harness(self, tmp_path: Path) -> AsyncIterator[SqliteHarness]:
        h = SqliteHarness(tmp_path)
        yield h
        await h.cleanup()


# --- SQLite-specific guarantees ---------------------------------------------------------------


async def _fresh(tmp_path: Path, **kwargs: object) -> SqliteItemStore:
    store = SqliteItemStore(tmp_path / "s.sqlite3", private=True, **kwargs)  # type: ignore[arg-type]
    await store.write("p", [Put("init", b"x")])  # create the file and schema
    return store


async def test_writes_queued_during_a_transaction_commit_together(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    tx_before, batches_before = store.commit_stats()
    with writer_blocked(store.path):
        # The writer takes the first batch and waits on the foreign lock inside BEGIN IMMEDIATE;
        # everything written meanwhile queues up behind it.
        blocked = asyncio.create_task(store.write("p", [Put("first", b"v")]))
        await until_queued(store, 0)
        tasks = [
            asyncio.create_task(store.write(f"p{i}", [Put("k", b"v", condition=Absent())])) for i in range(20)
        ]
        await until_queued(store, 20)
    await blocked
    await asyncio.gather(*tasks)
    tx, batches = store.commit_stats()
    assert batches - batches_before == 21
    assert tx - tx_before == 2
    for i in range(20):
        assert await store.get(f"p{i}", "k") == Item("k", b"v")
    await store.close()


async def test_a_failing_batch_in_a_group_is_rolled_back_alone(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    with writer_blocked(store.path):
        first = asyncio.create_task(store.write("g", [Put("warmup", b"w")]))
        await until_queued(store, 0)  # the writer holds it, waiting on the lock
        ok_a = asyncio.create_task(store.write("g", [Put("a", b"a", condition=Absent())]))
        bad = asyncio.create_task(
            store.write("g", [Put("b-side", b"x"), Put("a", b"again", condition=Absent())])
        )
        ok_c = asyncio.create_task(store.write("g", [Put("c", b"c", condition=Absent())]))
        await until_queued(store, 3)
    await first
    await ok_a
    with pytest.raises(ConditionFailed) as info:
        await bad
    assert info.value.index == 1
    await ok_c
    assert [i.key for i in await store.query("g", "")] == ["a", "c", "warmup"]
    assert await store.get("g", "a") == Item("a", b"a")
    await store.close()


async def test_a_locked_database_answers_backend_unavailable(tmp_path: Path) -> None:
    store = await _fresh(tmp_path, busy_timeout_ms=100)
    with writer_blocked(store.path):
        with pytest.raises(BackendUnavailable):
            await store.write("p", [Put("k", b"v")])
    await store.write("p", [Put("k", b"v")])  # recovers once the lock is gone
    assert await store.get("p", "k") == Item("k", b"v")
    await store.close()


async def test_an_unopenable_file_answers_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("file")
    store = SqliteItemStore(blocker / "db.sqlite3", private=True)
    with pytest.raises(BackendUnavailable):
        await store.write("p", [Put("k", b"v")])
    with pytest.raises(BackendUnavailable):
        await store.get("p", "k")
    await store.close()


async def test_a_closed_store_refuses_operations(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    await store.close()
    with pytest.raises(BackendUnavailable):
        await store.get("p", "init")
    await store.close()  # idempotent


async def test_kinds_sharing_one_file_do_not_see_each_other(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    chat = open_store(Target(resource_kind="chat_store", backend="sqlite", params={"path": path}))
    notes = open_store(Target(resource_kind="notes_store", backend="sqlite", params={"path": path}))
    await chat.write("t_a|lab|x", [Put("k", b"chat")])
    await notes.write("t_a|lab|x", [Put("k", b"notes")])
    assert (await chat.get("t_a|lab|x", "k")) == Item("k", b"chat")
    assert (await notes.get("t_a|lab|x", "k")) == Item("k", b"notes")
    await chat.close()
    await notes.close()


def test_connection_defaults_to_full_synchronous_and_the_route_table_is_the_namespace() -> None:
    target = Target(resource_kind="chat_store", backend="sqlite", params={"path": "/data/n.db"})
    assert sqlite_adapter._params(target)[:3] == (Path("/data/n.db"), "FULL", "chat_store")
    named = Target(resource_kind="chat_store", backend="sqlite", params={"path": "/d.db"}, table="chats")
    assert sqlite_adapter._params(named)[2] == "chats"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "path"),  # only the operator's configuration names a file
        ({"path": 123}, "path"),
        ({"path": "x.db", "synchronous": "bogus"}, "synchronous"),
        ({"path": "x.db", "busy_timeout_ms": 2**63}, "busy_timeout_ms"),
        ({"path": "x.db", "namespace": "other"}, "namespace"),
    ],
)
def test_connection_params_are_strict_and_named(tmp_path: Path, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        open_store(Target(resource_kind="chat_store", backend="sqlite", params=params))
    assert not (Path.cwd() / "123").exists() and not (Path.cwd() / "x.db").exists()


async def test_connections_use_wal_and_full_synchronous(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    writer_conn = store._live_database().connect()
    assert writer_conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    writer_conn.close()
    await store.close()


async def test_provision_is_idempotent_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "p.sqlite3"
    route = Target(resource_kind="chat_store", backend="sqlite", params={"path": str(path)})
    plan = await sqlite_adapter.provision(route, dry_run=True)
    assert plan and all(line.startswith("would ") for line in plan)
    assert not path.exists()
    first = await sqlite_adapter.provision(route, dry_run=False)
    second = await sqlite_adapter.provision(route, dry_run=False)
    assert first == second and path.exists()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    conn.close()


_CRASH_CHILD = """
import asyncio, sys
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.storage import Put, Absent

async def main():
    store = SqliteItemStore(sys.argv[1])
    i = 0
    while True:
        await asyncio.gather(*(store.write("crash", [Put(f"k{i + j:06d}", b"v", condition=Absent())])
                               for j in range(4)))
        for j in range(4):
            print(i + j, flush=True)
        i += 4

asyncio.run(main())
"""


def test_acknowledged_writes_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    acked: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= 200:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    conn = sqlite3.connect(path)
    stored = {row[0] for row in conn.execute("SELECT sk FROM items WHERE pk = 'crash'")}
    conn.close()
    assert {f"k{i:06d}" for i in acked} <= stored


async def test_an_inline_read_that_sqlite_refuses_is_retried_on_the_reader_pool(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    threads: list[threading.Thread] = []

    def busy_once(conn: sqlite3.Connection) -> int:  # fault injection: the first attempt is busy
        threads.append(threading.current_thread())
        if len(threads) == 1:
            raise sqlite3.OperationalError("database is locked")
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])

    assert await store._live_database().read(busy_once) == 1
    assert threads[0] is threading.current_thread() and threads[1] is not threading.current_thread()
    await store.close()


async def test_a_read_failing_on_the_pool_too_is_backend_unavailable(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)

    def always_busy(conn: sqlite3.Connection) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(BackendUnavailable, match="disk I/O error"):
        await store._live_database().read(always_busy)
    await store.close()


async def test_pool_only_reads_see_the_same_data(tmp_path: Path) -> None:
    store = await _fresh(tmp_path, inline_reads=False)
    await store.write("p", [Put(f"k{i:03d}", b"v") for i in range(50)])
    assert len(await store.query("p", "k", limit=1000)) == 50
    assert await store.get("p", "k001") == Item("k001", b"v")
    await store.close()


async def test_reading_a_page_costs_the_same_deep_in_a_long_partition(tmp_path: Path) -> None:
    # SQLite VM steps (counted by a progress handler) are deterministic, unlike timings.
    store = await _fresh(tmp_path, synchronous="NORMAL")
    for first in range(0, 5000, 100):
        await store.write("long", [Put(f"s#{n:08d}", b"v") for n in range(first, first + 100)])
    await store.get("long", "s#00000000")  # opens the inline reader
    conn = store._live_database()._inline_local.conn
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 10)

    async def cost(descending: bool = False, **bounds: str) -> int:
        steps[0] = 0
        assert len(await store.query("long", "s#", limit=50, descending=descending, **bounds)) == 50
        return steps[0]

    shallow = await cost(after="s#00000010")
    assert await cost(after="s#00004900") <= 2 * shallow
    assert await cost(after="s#00004000", before="s#00004900") <= 2 * shallow
    assert await cost(before="s#00000100", descending=True) <= 2 * shallow
    conn.set_progress_handler(None, 0)
    await store.close()


async def test_writes_racing_close_are_all_answered(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    database = store._live_database()
    writes = [asyncio.create_task(database.write("default", "race", [Put(f"k{i}", b"v")])) for i in range(50)]
    await asyncio.sleep(0)
    await asyncio.to_thread(database.close)
    late = asyncio.create_task(database.write("default", "race", [Put("late", b"v")]))
    outcomes = await asyncio.wait_for(asyncio.gather(*writes, late, return_exceptions=True), timeout=30)
    assert all(o is None or isinstance(o, BackendUnavailable) for o in outcomes)
    assert isinstance(outcomes[-1], BackendUnavailable)


async def test_stores_opening_one_new_file_together_all_write(tmp_path: Path) -> None:
    # Switching a fresh file to WAL fails at once for a concurrent opener unless retried.
    stores = [SqliteItemStore(tmp_path / "fresh.db", namespace="n", private=True) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(s.write("p", [Put(f"k{i}", b"v", condition=Absent())]) for i, s in enumerate(stores)),
            return_exceptions=True,
        )
        assert results == [None] * 4
        assert len(await stores[0].query("p", "k")) == 4
    finally:
        for s in stores:
            await s.close()


async def test_closing_a_store_during_inline_reads_answers_every_read(tmp_path: Path) -> None:
    store = SqliteItemStore(tmp_path / "close.db", namespace="n", private=True)
    for start in range(0, 200, 100):
        await store.write("p", [Put(f"k{i:04d}", b"v" * 200) for i in range(start, start + 100)])

    async def reader() -> str:
        outcome = "read"
        for _ in range(2000):
            try:
                await store.query("p", "k", limit=200)  # inline (short) reads on the loop thread
            except BackendUnavailable:
                outcome = "closed"
                break
            await asyncio.sleep(0)
        return outcome

    readers = [asyncio.create_task(reader()) for _ in range(8)]
    await asyncio.sleep(0.005)
    await asyncio.get_running_loop().run_in_executor(None, store._live_database().close)
    outcomes = await asyncio.gather(*readers)
    assert set(outcomes) <= {"read", "closed"} and "closed" in outcomes
