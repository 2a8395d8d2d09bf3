"""The write path during a migration: what a migration moves, and the time limits that make sure
no write is acknowledged on a side the migrator has finished with (a write that cannot finish in
time is refused with a retryable 503, never acknowledged and then lost)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from test_migration import _engines, _Tables

from northstar_adapters.memory import MemoryItemStore
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.activity import ACTIVITY_PARTITION
from northstar_core.kernel.migration import Migrations
from northstar_core.routing import Migration
from northstar_core.storage import Item, ItemStore, Op, Put

FENCE = 0.05
SETTLE = 0.1


class _Slow(MemoryItemStore):
    """A memory store whose writes may hang before they are made (a backend hiccup): ``delay``
    says how long, from the partition and operations."""

    def __init__(self) -> None:
        super().__init__()
        self.delay: Callable[[str, Sequence[Op]], float] = lambda partition, ops: 0.0

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        pause = self.delay(partition, ops)
        if pause > 0:
            await asyncio.sleep(pause)
        await super().write(partition, ops)


def _keyed(delays: dict[str, float]) -> Callable[[str, Sequence[Op]], float]:
    """A delay for batches that put one of ``delays``' keys."""
    return lambda partition, ops: max(
        (delays.get(op.key, 0.0) for op in ops if isinstance(op, Put)), default=0.0
    )


def _system() -> RequestContext:
    return RequestContext(tenant_id="t_a", mode="lab", user_id="op", roles=("admin",), is_system=True)


def _partitions(store: MemoryItemStore) -> set[str]:
    return {name for name, (_, items) in store._parts.items() if items}


async def _with_slow_notes(routing: MemoryItemStore | None = None) -> tuple[_Slow, Engines]:
    """Engines whose notes_store table on connection ``a`` (where it is routed) can be slowed
    down; ``routing``: the registry's own store."""
    tables = _Tables()
    source = tables.tables[("a", "notes_store")] = _Slow()
    return source, await _engines(tables, routing)


async def _refused(task: asyncio.Task[Any]) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await task
    assert info.value.http_status == 503
    assert info.value.headers.get("Retry-After")
    return info.value


# --- what a migration moves ---------------------------------------------------------------------


async def test_a_deployment_wide_move_of_config_store_keeps_the_system_document() -> None:
    tables = _Tables()
    engines = await _engines(tables)
    await engines.config.put(_system(), "system", {"feature_x": True}, expected_version=0)
    await engines.config.put(_system(), "tenant", {"t": 1}, expected_version=0)
    source = tables.tables[("a", "config_store")]
    # the source's own activity index (processes' bookkeeping, not data)
    await source.write(ACTIVITY_PARTITION, [Put("a#p1", b"record")])
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(
        ["config_store"], "b", tenant_id=None, fence_seconds=FENCE, settle_seconds=SETTLE
    )
    assert migration.in_scope("~system|lab|config")
    assert not migration.in_scope(ACTIVITY_PARTITION)
    await migrations.run(migration.id)

    doc = await engines.config.get(_system(), "system")
    assert (doc.values, doc.version) == ({"feature_x": True}, 1)
    assert (await engines.config.get(_system(), "tenant")).values == {"t": 1}
    target = tables.tables[("b", "config_store")]
    assert "~system|lab|config" in _partitions(target)
    assert ACTIVITY_PARTITION not in _partitions(target)
    # written after the switch, it is on the new side with the rest
    await engines.config.put(_system(), "system", {"feature_x": False}, expected_version=1)
    await migrations.release(migration.id)
    assert (await engines.config.get(_system(), "system")).values == {"feature_x": False}
    # the old copy is gone; the old side's activity index is its own and stays
    assert _partitions(source) == {ACTIVITY_PARTITION}


async def test_a_tenant_move_of_config_store_leaves_the_system_document_where_it_is() -> None:
    tables = _Tables()
    engines = await _engines(tables)
    await engines.config.put(_system(), "system", {"feature_x": True}, expected_version=0)
    await engines.config.put(_system(), "tenant", {"t": 1}, expected_version=0)
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(
        ["config_store"], "b", tenant_id="t_a", fence_seconds=FENCE, settle_seconds=SETTLE
    )
    assert not migration.in_scope("~system|lab|config")
    assert not migration.in_scope("t_b|lab|config|tenant")
    await migrations.run(migration.id)
    await migrations.release(migration.id)

    assert (await engines.config.get(_system(), "system")).values == {"feature_x": True}
    assert (await engines.config.get(_system(), "tenant")).values == {"t": 1}
    assert _partitions(tables.tables[("a", "config_store")]) == {"~system|lab|config"}
    assert all(p.startswith("t_a|") for p in _partitions(tables.tables[("b", "config_store")]))


# --- a write that saw the migration -------------------------------------------------------------


async def test_a_write_whose_journal_mark_lands_late_is_refused_not_lost() -> None:
    tables = _Tables()
    routing = _Slow()
    engines = await _engines(tables, routing)
    registry = engines.registry
    handle = await registry.store_for("notes_store", "t_a")
    await handle.write("t_a|lab|p", [Put("k0", b"seed", version=1)])
    # the registry is slow to take this partition's journal mark: far beyond fence + settle
    routing.delay = _keyed({"p#t_a|lab|late": 0.5})
    writing: list[asyncio.Task[None]] = []

    class Probe(Migrations):
        async def _phase(self, migration: Migration, version: int, phase: str) -> tuple[Migration, int]:
            if phase == "frozen":  # a request arrives while this process still sees 'dual'
                late = handle.write("t_a|lab|late", [Put("x", b"acked", version=1)])
                writing.append(asyncio.create_task(late))
                await asyncio.sleep(0.01)
            return await super()._phase(migration, version, phase)

    migrations = Probe(registry, engines.clock)
    migration = await migrations.start(
        ["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE, settle_seconds=SETTLE
    )
    await migrations.run(migration.id)
    error = await _refused(writing[0])
    assert error.code == "notes_store.backend_unavailable"
    serving = await registry.store_for("notes_store", "t_a")
    assert serving.route.connection == "b"
    assert await serving.get("t_a|lab|p", "k0") is not None
    # refused, so made nowhere (and certainly not on the side that no longer serves)
    assert await serving.get("t_a|lab|late", "x") is None
    assert await tables.tables[("a", "notes_store")].get("t_a|lab|late", "x") is None


async def test_the_journal_mark_and_the_write_share_one_settle_deadline() -> None:
    routing = _Slow()
    source, engines = await _with_slow_notes(routing)
    registry = engines.registry
    settle = 0.6
    migrations = Migrations(registry, engines.clock)
    await migrations.start(["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE, settle_seconds=settle)
    handle = await registry.store_for("notes_store", "t_a")
    assert handle.migration is not None and handle.migration.phase == "dual"
    # each step well within settle_seconds, both together beyond it
    routing.delay = _keyed({"p#t_a|lab|slow": 0.4})
    source.delay = _keyed({"x": 0.4})
    with pytest.raises(NorthstarError) as info:
        await handle.write("t_a|lab|slow", [Put("x", b"v", version=1)])
    assert (info.value.http_status, info.value.code) == (503, "notes_store.backend_unavailable")
    assert await source.get("t_a|lab|slow", "x") is None
    # both together within it: made
    routing.delay = _keyed({"p#t_a|lab|fast": 0.03})
    source.delay = _keyed({"y": 0.03})
    await handle.write("t_a|lab|fast", [Put("y", b"v", version=1)])
    assert await source.get("t_a|lab|fast", "y") is not None


async def test_every_acknowledged_write_is_served_after_the_switch_despite_slow_marks_and_writes() -> None:
    rng = random.Random(7)
    routing = _Slow()
    source, engines = await _with_slow_notes(routing)
    registry = engines.registry
    # journal marks (not the migrator's own records) that often take longer than fence and settle
    # together, and data writes that sometimes add to them beyond settle_seconds
    journal = "migration|notes_store@t_a|j"
    routing.delay = lambda partition, ops: rng.uniform(0, 0.4) if partition.startswith(journal) else 0.0
    source.delay = lambda partition, ops: rng.uniform(0, 0.08)
    acked: list[tuple[str, str]] = []
    refused: list[str] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        handle = await registry.store_for("notes_store", "t_a")
        i = 0
        while not stop.is_set():
            partition, key = f"t_a|lab|p{rng.randrange(40)}", f"w{n}-{i}"
            i += 1
            try:
                await handle.write(partition, [Put(key, key.encode(), version=1)])
            except NorthstarError as exc:
                assert exc.http_status == 503, exc
                refused.append(exc.code)
                continue
            acked.append((partition, key))
            await asyncio.sleep(0)

    writers = [asyncio.create_task(writer(n)) for n in range(16)]
    await asyncio.sleep(0.05)
    migrations = Migrations(registry, engines.clock)
    migration = await migrations.start(
        ["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE, settle_seconds=SETTLE
    )
    await migrations.run(migration.id)
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*writers)

    serving = await registry.store_for("notes_store", "t_a")
    assert serving.route.connection == "b"
    assert acked and refused  # the slow steps did make some writes time out
    missing = [(p, k) for p, k in acked if await serving.get(p, k) is None]
    assert missing == []


# --- a write that did not see the migration -----------------------------------------------------


async def test_a_write_that_saw_no_migration_ends_before_its_view_of_the_routes_expires() -> None:
    source, engines = await _with_slow_notes()
    registry = engines.registry
    handle = await registry.store_for("notes_store", "t_a")
    await handle.write("t_a|lab|p", [Put("k0", b"seed", version=1)])
    source.delay = _keyed({"slow": 1.5})  # far beyond max_view_seconds (0.2)
    assert handle.migration is None
    writing = asyncio.create_task(handle.write("t_a|lab|p", [Put("slow", b"acked", version=1)]))
    await asyncio.sleep(0.01)
    done_when_copying: list[bool] = []

    class Probe(Migrations):
        async def _copy(self, migration: Migration, src: ItemStore, dst: ItemStore, *args: Any) -> None:
            # the migrator copies only once every write no process journals has ended
            done_when_copying.append(writing.done())
            await super()._copy(migration, src, dst, *args)

    migrations = Probe(registry, engines.clock)
    migration = await migrations.start(
        ["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE, settle_seconds=SETTLE
    )
    await migrations.run(migration.id)
    assert done_when_copying == [True]
    error = await _refused(writing)
    assert error.code == "notes_store.backend_unavailable"
    serving = await registry.store_for("notes_store", "t_a")
    assert serving.route.connection == "b"
    assert await serving.get("t_a|lab|p", "k0") is not None
    found: list[Item | None] = [await serving.get("t_a|lab|p", "slow"), await source.get("t_a|lab|p", "slow")]
    assert found == [None, None]


async def test_a_write_outside_any_migration_is_not_cut_short_while_the_routes_are_fresh() -> None:
    source, engines = await _with_slow_notes()
    handle = await engines.registry.store_for("notes_store", "t_a")
    source.delay = _keyed({"k": 0.02})  # well within max_view_seconds (0.2) less a refresh (0.02)
    await handle.write("t_a|lab|p", [Put("k", b"v", version=1)])
    assert await source.get("t_a|lab|p", "k") is not None
