"""A failing batch never leaves a transaction, a lock or half a batch behind.

The SQLite writer commits every process's batches in shared transactions (group commit); a batch
that fails in any way — a value SQLite cannot bind, any exception, even a ``BaseException`` —
must be rolled back alone and the writer must stay usable, or one request would stop every
tenant's writes until restart. The storage port also refuses unrepresentable versions and expiry
times before any adapter sees them. All on real SQLite files and the real memory store; the only
fakes inject a fault into the writer.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import northstar_adapters.sqlite as sqlite_adapter
from northstar_adapters.memory import CAPABILITIES as MEMORY_CAPABILITIES
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.storage import (
    MAX_EXPIRES_AT,
    MAX_VERSION,
    Absent,
    BackendUnavailable,
    Check,
    ConditionFailed,
    Delete,
    InvalidItem,
    Item,
    Op,
    Put,
    VersionIs,
    validate_ops,
)
from tests.adapters.sqlite_support import until_queued, writer_blocked

# Integers SQLite INTEGER cannot hold (signed 64-bit), and a few just inside.
UNBINDABLE = [2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**30]
BEYOND_VERSIONS = st.one_of(
    st.integers(min_value=MAX_VERSION + 1, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-1),
    st.sampled_from([2**53, 2**63 - 1, 2**63, 2**64, -(2**63)]),
)
BAD_EXPIRY = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -1.0, MAX_EXPIRES_AT + 1]),
    st.floats(min_value=MAX_EXPIRES_AT * 2, allow_infinity=True),
    st.integers(min_value=int(MAX_EXPIRES_AT) + 1, max_value=2**80),
)


def _soon(aw: Any) -> Any:
    """Await with a deadline: a writer thread that died would otherwise hang the test forever."""
    return asyncio.wait_for(aw, timeout=10)


async def _fresh(tmp_path: Path) -> SqliteItemStore:
    store = SqliteItemStore(tmp_path / "tx.sqlite3", namespace="kind", private=True)
    await store.write("warm", [Put("init", b"x")])  # the file and schema exist
    return store


async def _raw_write(store: SqliteItemStore, partition: str, ops: list[Op]) -> None:
    """Straight to the writer thread, past the port's validation — as a validation bug would."""
    engine = store._live_database()
    await engine.write(store.namespace, partition, ops)


# --- SQLite: the group-commit writer ----------------------------------------------------------


@pytest.mark.parametrize("big", UNBINDABLE)
@pytest.mark.parametrize("where", ["version", "condition"])
async def test_an_unbindable_integer_fails_its_batch_alone_and_the_next_write_commits(
    tmp_path: Path, big: int, where: str
) -> None:
    store = await _fresh(tmp_path)
    await store.write("t_a", [Put("k", b"v1", version=1)])
    bad = (
        Put("k", b"v2", version=big, condition=VersionIs(1))
        if where == "version"
        else Put("k", b"v2", version=2, condition=VersionIs(big))
    )
    with pytest.raises(InvalidItem):  # the batch's fault: not an outage a client should retry
        await _soon(_raw_write(store, "t_a", [Put("side", b"s"), bad]))
    # Nothing of the failed batch is visible, and the writer took the next write at once
    # (before the fix: "cannot start a transaction within a transaction" until restart).
    await _soon(store.write("t_b", [Put("k", b"other tenant", condition=Absent())]))
    assert await store.get("t_b", "k") == Item("k", b"other tenant")
    assert await store.get("t_a", "k") == Item("k", b"v1", 1)
    assert await store.get("t_a", "side") is None
    await store.close()


async def test_a_bad_batch_inside_a_group_is_rolled_back_alone(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    engine = store._live_database()
    with writer_blocked(store.path):
        first = asyncio.create_task(store.write("g", [Put("warmup", b"w")]))
        await until_queued(store, 0)  # the writer holds it, waiting for the lock
        ok_a = asyncio.create_task(store.write("g", [Put("a", b"a", condition=Absent())]))
        bad = asyncio.create_task(
            engine.write(store.namespace, "g", [Put("b-side", b"x"), Put("b", b"y", version=2**64)])
        )
        ok_c = asyncio.create_task(store.write("h", [Put("c", b"c", condition=Absent())]))
        await until_queued(store, 3)
    await _soon(first)
    await _soon(ok_a)
    with pytest.raises(InvalidItem):
        await _soon(bad)
    await _soon(ok_c)
    assert [i.key for i in await store.query("g", "")] == ["a", "warmup"]
    assert await store.get("h", "c") == Item("c", b"c")  # the rest of the group committed
    await _soon(store.write("g", [Put("after", b"z")]))
    assert await store.get("g", "after") == Item("after", b"z")
    await store.close()


class _Boom(BaseException):
    """Not an ``Exception``: what a bare ``except Exception`` would let through."""


@pytest.mark.parametrize("fault", [_Boom, asyncio.CancelledError, KeyError, RuntimeError])
async def test_any_exception_mid_batch_rolls_back_and_the_writer_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: type[BaseException]
) -> None:
    store = await _fresh(tmp_path)
    real_apply = sqlite_adapter._Database._apply

    def apply_then_fail(conn: sqlite3.Connection, req: Any, now: float) -> None:
        real_apply(conn, req, now)  # the batch's rows are written inside the transaction…
        if req.partition == "faulty":
            raise fault("injected")  # …then the batch fails before it is released

    monkeypatch.setattr(sqlite_adapter._Database, "_apply", staticmethod(apply_then_fail))
    with pytest.raises((BackendUnavailable, InvalidItem)):
        await _soon(store.write("faulty", [Put("half", b"h"), Put("other-half", b"o")]))
    # Same writer, same file: the next transaction starts cleanly and nothing half-written shows.
    await _soon(store.write("fine", [Put("k", b"v", condition=Absent())]))
    assert await store.get("fine", "k") == Item("k", b"v")
    assert await store.query("faulty", "") == []
    await store.close()


async def test_a_raw_connection_sees_no_open_transaction_after_a_failure(tmp_path: Path) -> None:
    store = await _fresh(tmp_path)
    with pytest.raises(InvalidItem):
        await _soon(_raw_write(store, "p", [Put("k", b"v", version=2**64)]))
    # Another connection (another process) can take the write lock at once: nothing holds it.
    conn = sqlite3.connect(store.path, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("ROLLBACK")
    conn.close()
    await store.close()


# --- the storage port refuses unrepresentable numbers ------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(version=BEYOND_VERSIONS, shape=st.sampled_from(["put", "put-cond", "delete-cond", "check"]))
def test_validate_ops_refuses_versions_no_backend_can_hold(version: int, shape: str) -> None:
    shapes: dict[str, list[Op]] = {
        "put": [Put("k", b"v", version=version)],
        "put-cond": [Put("k", b"v", version=2, condition=VersionIs(version))],
        "delete-cond": [Delete("k", condition=VersionIs(version))],
        "check": [Put("k", b"v"), Check("c", VersionIs(version))],
    }
    ops = shapes[shape]
    with pytest.raises(InvalidItem):
        validate_ops(ops, MEMORY_CAPABILITIES)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(expires_at=BAD_EXPIRY)
def test_validate_ops_refuses_expiry_times_that_are_not_finite_or_out_of_range(expires_at: Any) -> None:
    with pytest.raises(InvalidItem):
        validate_ops([Put("k", b"v", expires_at=expires_at)], MEMORY_CAPABILITIES)


def test_validate_ops_accepts_the_edges() -> None:
    validate_ops(
        [
            Put("a", b"v", version=MAX_VERSION, expires_at=MAX_EXPIRES_AT),
            Put("b", b"v", version=0, expires_at=0.0, condition=VersionIs(MAX_VERSION)),
            Check("c", VersionIs(0)),
        ],
        MEMORY_CAPABILITIES,
    )


@pytest.mark.parametrize("big", UNBINDABLE)
async def test_the_sqlite_store_refuses_a_bad_version_before_queueing_it(tmp_path: Path, big: int) -> None:
    store = await _fresh(tmp_path)
    before = store.commit_stats()
    with pytest.raises(InvalidItem):
        await _soon(store.write("p", [Put("k", b"v", version=big)]))
    assert store.commit_stats() == before  # never reached the writer
    assert await store.get("p", "k") is None
    await store.close()


# --- memory: a batch is applied whole or not at all ---------------------------------------------


async def test_memory_refuses_a_bad_number_and_writes_nothing() -> None:
    store = MemoryItemStore()
    with pytest.raises(InvalidItem):
        await store.write("p", [Put("a", b"1"), Put("b", b"2", version=2**64)])
    with pytest.raises(InvalidItem):
        await store.write("p", [Put("a", b"1"), Put("b", b"2", expires_at=math.nan)])
    assert await store.query("p", "") == []
    await store.write("p", [Put("a", b"1")])  # the store is still usable
    assert await store.get("p", "a") == Item("a", b"1")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    existing=st.sets(st.sampled_from("abcdef"), max_size=4),
    batch=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.sampled_from(["put", "put-absent", "delete", "delete-v1"])),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    ),
)
def test_memory_batches_are_all_or_nothing(existing: set[str], batch: list[tuple[str, str]]) -> None:
    async def run() -> None:
        store = MemoryItemStore()
        for key in sorted(existing):
            await store.write("p", [Put(key, b"old")])
        before = await store.query("p", "")
        ops: list[Op] = []
        for key, kind in batch:
            if kind == "put":
                ops.append(Put(key, b"new", version=2))
            elif kind == "put-absent":
                ops.append(Put(key, b"new", version=2, condition=Absent()))
            elif kind == "delete":
                ops.append(Delete(key))
            else:
                ops.append(Delete(key, condition=VersionIs(1)))
        try:
            await store.write("p", ops)
        except ConditionFailed:
            assert await store.query("p", "") == before  # not one op applied
            return
        after = {i.key: i.value for i in await store.query("p", "")}
        expected = {i.key: i.value for i in before}
        for key, kind in batch:
            if kind.startswith("put"):
                expected[key] = b"new"
            else:
                expected.pop(key, None)
        assert after == expected

    asyncio.run(run())
