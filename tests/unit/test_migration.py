"""Online migration in one process, on memory tables: writes keep flowing through the copy, the
journaled phase and the cutover; none is lost or doubled; a subscriber keeps following; a
migrator stopped at any point resumes; rollback and release leave one copy of the data."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.migration import Migrations, partition_digest, sync_partition
from northstar_core.routing import RESOURCE_KINDS, Connection, KindStore, Route, RoutingRegistry, Target
from northstar_core.storage import Absent, ConditionFailed, Delete, InvalidItem, ItemStore, Put, VersionIs

FENCE = 0.05
SETTLE = 0.1


class _NoChecks(MemoryItemStore):
    """A backend without atomic checks (as Firestore and Cosmos DB): a stream appends at a head
    read from the store, and a batch with a Check is refused."""

    capabilities = msgspec.structs.replace(MemoryItemStore.capabilities, atomic_checks=False)


class _Tables:
    """One memory store per (connection, table), as separate tables of backends ("c" has no
    atomic checks)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], MemoryItemStore] = {}

    def open(self, target: Target) -> ItemStore:
        name = str(target.params.get("name"))
        store = _NoChecks() if name == "c" else MemoryItemStore()
        return self.tables.setdefault((name, target.table_name), store)

    def items(self, connection: str, table: str, tenant: str) -> int:
        store = self.tables.get((connection, table))
        if store is None:
            return 0
        return sum(len(items) for name, (_, items) in store._parts.items() if name.startswith(f"{tenant}|"))


def _registry(tables: _Tables, routing: MemoryItemStore) -> RoutingRegistry:
    return RoutingRegistry(
        routing,
        tables,
        connections={
            "a": Connection(name="a", backend="memory", params={"name": "a"}),
            "b": Connection(name="b", backend="memory", params={"name": "b"}),
            "c": Connection(name="c", backend="memory", params={"name": "c"}),
        },
        deployment_mode="lab",
        refresh_seconds=0.02,
        max_view_seconds=0.2,
    )


async def _engines(tables: _Tables | None = None, routing: MemoryItemStore | None = None) -> Engines:
    tables = tables or _Tables()
    routing = routing or MemoryItemStore()
    registry = _registry(tables, routing)
    await registry.load()
    if not registry.routes():
        for kind in RESOURCE_KINDS:
            await registry.set_route(Route(resource_kind=kind, connection="a"), probe=False)
    return Engines(registry, CursorCodec(b"k" * 32), SystemClock())


def _ctx(tenant: str = "t_a", user: str = "u1") -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id=user, roles=("member",))


class _Load:
    """Writers posting to a few threads until stopped; what was acknowledged, per thread."""

    def __init__(self, engines: Engines, tenant: str = "t_a", threads: int = 3, writers: int = 4) -> None:
        self.engines = engines
        self.tenant = tenant
        self.threads = [f"th{i}" for i in range(threads)]
        self.acked: dict[str, list[tuple[int, str]]] = {t: [] for t in self.threads}
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write(i)) for i in range(writers)]

    async def _write(self, writer: int) -> None:
        n = 0
        while not self._stop.is_set():
            thread = random.choice(self.threads)
            content = f"w{writer}-{n}"
            n += 1
            try:
                posted = await self.engines.chat.post(
                    _ctx(self.tenant), thread, role="user", content=content, idempotency_key=content
                )
            except NorthstarError as exc:  # a 503 is a refusal, never an acknowledgement
                assert exc.http_status == 503, exc
                self.failures.append(exc.code)
                continue
            self.acked[thread].append((posted.message.seq, content))
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _messages(engines: Engines, thread: str, tenant: str = "t_a") -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    cursor = None
    while True:
        page = await engines.chat.list_messages(_ctx(tenant), thread, cursor=cursor, limit=200)
        out += [(m.seq, m.content) for m in page.items]
        if not page.has_more:
            return out
        cursor = page.next_cursor


async def _check_exact(engines: Engines, load: _Load) -> None:
    for thread, acked in load.acked.items():
        stored = await _messages(engines, thread, load.tenant)
        # every acknowledged message once, at the sequence number it was acknowledged with,
        # and the thread numbered 1..n without a gap
        assert sorted(acked) == [m for m in stored if m in set(acked)]
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
        assert len({content for _, content in stored}) == len(stored)
        assert set(acked) <= set(stored)


@pytest.mark.parametrize("to", ["b", "c"])
async def test_a_tenant_moves_under_write_load_and_nothing_is_lost_or_doubled(to: str) -> None:
    tables = _Tables()
    engines = await _engines(tables)
    for i in range(30):
        await engines.chat.post(_ctx(), f"th{i % 3}", role="user", content=f"before-{i}")
    await engines.chat.post(_ctx("t_other"), "th0", role="user", content="stays")
    load = _Load(engines)
    # seed the load's record with what was there (acknowledged too)
    for thread in load.threads:
        load.acked[thread] += await _messages(engines, thread)
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(
        ["chat_store"], to, "chat_store", "t_a", fence_seconds=FENCE, settle_seconds=SETTLE
    )
    await asyncio.sleep(0.05)
    switched = await migrations.run(migration.id)
    assert switched.phase == "switched"
    await asyncio.sleep(0.1)
    await load.stop()
    store = await engines.registry.store_for("chat_store", "t_a")
    assert (store.route.connection, store.route.tenant_id) == (to, "t_a")
    await _check_exact(engines, load)
    assert sum(len(v) for v in load.acked.values()) > 60
    # a write held at the cutover was planned for the old backend: it is planned again, never
    # refused (only 503s are allowed, and a migration this short causes none)
    assert load.failures == []
    # the other tenant was not moved; both copies of t_a exist until the release
    assert (await engines.registry.store_for("chat_store", "t_other")).route.connection == "a"
    assert tables.items("a", "chat_store", "t_a") > 0
    progress = await migrations.release(migration.id)
    assert progress.state == "released"
    assert tables.items("a", "chat_store", "t_a") == 0
    assert tables.items("a", "chat_store", "t_other") > 0
    assert tables.items(to, "chat_store", "t_a") > 0
    await _check_exact(engines, load)
    # the route is an ordinary tenant override again
    assert engines.registry.migration_for("chat_store", "t_a") is None


async def test_a_rollback_after_the_cutover_keeps_the_writes_made_on_the_target() -> None:
    tables = _Tables()
    engines = await _engines(tables)
    await engines.chat.post(_ctx(), "th0", role="user", content="first")
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(["chat_store"], "b", tenant_id=None, fence_seconds=FENCE,
                                       settle_seconds=SETTLE)
    await migrations.run(migration.id)
    assert (await engines.registry.store_for("chat_store", "t_a")).route.connection == "b"
    load = _Load(engines, writers=2)
    for thread in load.threads:
        load.acked[thread] += await _messages(engines, thread)
    await asyncio.sleep(0.05)
    rollback = asyncio.create_task(migrations.rollback(migration.id))
    await asyncio.sleep(0.3)
    await load.stop()
    progress = await rollback
    assert progress.state == "rolled_back"
    assert (await engines.registry.store_for("chat_store", "t_a")).route.connection == "a"
    await _check_exact(engines, load)
    assert tables.items("b", "chat_store", "t_a") == 0
    with pytest.raises(NorthstarError) as info:
        await migrations.release(migration.id)
    assert info.value.code == "migration.not_switched"


@pytest.mark.parametrize("stop_after", [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.25])
async def test_a_migrator_stopped_at_any_point_resumes_and_finishes(stop_after: float) -> None:
    engines = await _engines()
    for i in range(200):
        await engines.chat.post(_ctx(), f"th{i % 3}", role="user", content=f"before-{i}")
    load = _Load(engines, writers=2)
    for thread in load.threads:
        load.acked[thread] += await _messages(engines, thread)
    # a migrator process killed mid-way: its task cancelled wherever it was
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(
        ["chat_store"], "b", tenant_id="t_a", fence_seconds=FENCE, settle_seconds=SETTLE
    )
    run = asyncio.create_task(migrations.run(migration.id))
    await asyncio.sleep(stop_after)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await asyncio.sleep(0.05)
    # another migrator (a new process: its own registry over the same tables) resumes
    again = Migrations(engines.registry, engines.clock)
    assert (await again.start(["chat_store"], "b", tenant_id="t_a")).id == migration.id
    await again.run(migration.id)
    await asyncio.sleep(0.05)
    await load.stop()
    assert (await engines.registry.store_for("chat_store", "t_a")).route.connection == "b"
    await _check_exact(engines, load)


async def test_a_subscriber_keeps_following_across_the_cutover() -> None:
    engines = await _engines()
    await engines.chat.post(_ctx(), "th0", role="user", content="m1")
    received: list[int] = []

    async def follow() -> None:
        async for entry in engines.chat.follow(_ctx(), "th0", cursor=None):
            received.append(entry.seq)
            if entry.seq == 6:
                return

    tail = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await engines.chat.post(_ctx(), "th0", role="user", content="m2")
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(["chat_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                       settle_seconds=SETTLE)
    await engines.chat.post(_ctx(), "th0", role="user", content="m3")
    await migrations.run(migration.id)
    for n in (4, 5, 6):
        await engines.chat.post(_ctx(), "th0", role="user", content=f"m{n}")
    await asyncio.wait_for(tail, timeout=5)
    assert received == [2, 3, 4, 5, 6]


async def test_a_migration_refuses_what_it_cannot_move_cleanly() -> None:
    tables = _Tables()
    engines = await _engines(tables)
    registry = engines.registry
    migrations = Migrations(registry, engines.clock)
    # kinds sharing a table move together
    shared = Route(resource_kind="notes_store", connection="a", table="chat_store")
    await registry.set_route(shared, force=True)
    with pytest.raises(NorthstarError) as info:
        await migrations.start(["chat_store"], "b")
    assert info.value.code == "migration.shared_table"
    assert "notes_store" in info.value.details["kinds"]
    await registry.set_route(Route(resource_kind="notes_store", connection="a"), force=True)
    # a target that holds data of the scope already
    await tables.open(Target(resource_kind="chat_store", backend="memory", params={"name": "b"})).write(
        "t_a|lab|x", [Put("k", b"v")]
    )
    with pytest.raises(NorthstarError) as info:
        await migrations.start(["chat_store"], "b", tenant_id="t_a")
    assert info.value.code == "migration.target_not_empty"
    # the same table
    with pytest.raises(NorthstarError) as info:
        await migrations.start(["chat_store"], "a", tenant_id="t_b")
    assert info.value.code == "migration.same_table"
    migration = await migrations.start(["chat_store"], "b", "chats", tenant_id="t_b")
    # while it runs, the kind's routes change only through it
    with pytest.raises(NorthstarError) as info:
        await registry.set_route(Route(resource_kind="chat_store", connection="b", tenant_id="t_c"))
    assert info.value.code == "migration.in_progress"
    with pytest.raises(NorthstarError) as info:
        await migrations.start(["chat_store"], "b", "other", tenant_id="t_b")
    assert info.value.code == "migration.in_progress"
    assert (await migrations.rollback(migration.id)).state == "rolled_back"


async def test_writes_stop_when_the_routes_cannot_be_confirmed() -> None:
    routing = MemoryItemStore()
    engines = await _engines(routing=routing)
    await engines.chat.post(_ctx(), "th0", role="user", content="m1")

    async def down(*args: Any, **kwargs: Any) -> Any:
        from northstar_core.storage import BackendUnavailable

        raise BackendUnavailable("registry down")

    routing.query = down  # type: ignore[method-assign]
    await asyncio.sleep(0.25)  # longer than max_view_seconds
    with pytest.raises(NorthstarError) as info:
        await engines.chat.post(_ctx(), "th0", role="user", content="m2")
    assert (info.value.http_status, info.value.code) == (503, "routing_registry.backend_unavailable")
    # reads go on from the routes last read
    assert [m.content for m in (await engines.chat.list_messages(_ctx(), "th0")).items] == ["m1"]


async def test_sync_makes_a_partition_equal_and_digests_see_any_difference() -> None:
    source, target = MemoryItemStore(), MemoryItemStore()
    await source.write("t_a|p", [Put(f"k{i:03d}", b"v%d" % i, version=i + 1) for i in range(60)])
    await target.write("t_a|p", [Put("k001", b"stale"), Put("k999", b"extra"), Put("k002", b"v2", version=9)])
    await sync_partition(source, target, "t_a|p")
    assert await partition_digest(source, "t_a|p") == await partition_digest(target, "t_a|p")
    assert (await target.get("t_a|p", "k999")) is None
    await target.write("t_a|p", [Delete("k005")])
    assert await partition_digest(source, "t_a|p") != await partition_digest(target, "t_a|p")


async def test_two_commands_on_one_migration_cannot_both_go_on() -> None:
    tables = _Tables()
    engines = await _engines(tables)
    await engines.chat.post(_ctx(), "th0", role="user", content="m1")
    first = Migrations(engines.registry, engines.clock)
    migration = await first.start(["chat_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                  settle_seconds=SETTLE)
    await first.run(migration.id)
    # another operator rolls it back meanwhile; the first one's release must not delete the
    # side that serves again
    other = Migrations(engines.registry, engines.clock)
    assert (await other.rollback(migration.id)).state == "rolled_back"
    with pytest.raises(NorthstarError) as info:
        await first.release(migration.id)
    assert info.value.code in ("migration.conflict", "migration.not_switched")
    assert (await engines.registry.store_for("chat_store", "t_a")).route.connection == "a"
    assert tables.items("a", "chat_store", "t_a") > 0
    assert [m.content for m in (await engines.chat.list_messages(_ctx(), "th0")).items] == ["m1"]


# --- every interleaving of writes with the migrator: a reference model ------------------------

_PARTS = ("t_a|lab|p0", "t_a|lab|p1", "t_a|lab|p2")
_op = st.tuples(
    st.integers(0, 2),  # partition
    st.integers(0, 4),  # key
    st.sampled_from(["put", "put_absent", "put_if_version", "delete", "delete_if_version"]),
    st.sampled_from([0.0, 0.0, 0.001, 0.005, 0.02]),  # pause before it
)


async def _interleaved(
    ops: list[tuple[int, int, str, float]], stop_after: float | None, back: bool, to: str
) -> None:
    tables = _Tables()
    engines = await _engines(tables)
    registry = engines.registry
    model: dict[tuple[str, str], tuple[bytes, int]] = {}
    store = await registry.store_for("notes_store", "t_a")
    await store.write(_PARTS[0], [Put("k0", b"seed", version=1)])
    model[(_PARTS[0], "k0")] = (b"seed", 1)

    done = asyncio.Event()

    async def writer() -> None:
        handle = await registry.store_for("notes_store", "t_a")  # held across the whole run
        # the operations again and again until the migration is over: writes in every phase
        n = 0
        while n < len(ops) or not done.is_set():
            p, k, action, pause = ops[n % len(ops)]
            n += 1
            await asyncio.sleep(pause or 0.002)
            part, key = _PARTS[p], f"k{k}"
            held = model.get((part, key))
            value = f"v{n}".encode()
            version = (held[1] + 1) if held else 1
            op: Any
            if action == "put":
                op = Put(key, value, version=version)
            elif action == "put_absent":
                op = Put(key, value, version=version, condition=Absent())
            elif action == "put_if_version":
                op = Put(key, value, version=version, condition=VersionIs(held[1] if held else 1))
            elif action == "delete":
                op = Delete(key)
            else:
                op = Delete(key, condition=VersionIs(held[1] if held else 1))
            try:
                await handle.write(part, [op])
            except ConditionFailed:
                continue  # refused: the model is unchanged, exactly like the store
            if isinstance(op, Delete):
                model.pop((part, key), None)
            else:
                model[(part, key)] = (value, version)

    writing = asyncio.create_task(writer())
    migrations = Migrations(registry, engines.clock)
    migration = await migrations.start(["notes_store"], to, tenant_id="t_a", fence_seconds=0.05,
                                       settle_seconds=0.05)
    run = asyncio.create_task(migrations.run(migration.id))
    if stop_after is not None:
        await asyncio.sleep(stop_after)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        run = asyncio.create_task(Migrations(registry, engines.clock).run(migration.id))
    await run
    if back:
        await Migrations(registry, engines.clock).rollback(migration.id)
    done.set()
    await writing
    serving = await registry.store_for("notes_store", "t_a")
    assert serving.route.connection == ("a" if back else to)
    held: dict[tuple[str, str], tuple[bytes, int]] = {}
    for part in _PARTS:
        for item in await serving.query(part, "", limit=100):
            held[(part, item.key)] = (item.value, item.version)
    assert held == model


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(_op, min_size=1, max_size=40),
    stop_after=st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.15, 0.25, 0.3])),
    back=st.booleans(),
    to=st.sampled_from(["b", "c"]),
)
def test_any_interleaving_of_writes_with_the_migration_serves_exactly_the_acknowledged_state(
    ops: list[tuple[int, int, str, float]], stop_after: float | None, back: bool, to: str
) -> None:
    asyncio.run(_interleaved(ops, stop_after, back, to))


async def test_a_migration_record_this_version_cannot_read_stops_its_kind_being_served() -> None:
    routing = MemoryItemStore()
    engines = await _engines(routing=routing)
    await engines.chat.post(_ctx(), "th0", role="user", content="m1")
    # written by another version of the service, with a field this one does not know
    await routing.write("routing_registry", [Put("migration#chat_store@*", b'{"id": 1, "future": true}')])
    await engines.registry.load()
    with pytest.raises(NorthstarError) as info:
        await engines.chat.post(_ctx(), "th0", role="user", content="m2")
    assert (info.value.http_status, info.value.code) == (503, "chat_store.route_misconfigured")
    assert "migration record is unreadable" in info.value.message
    # other kinds are served as before
    assert (await engines.registry.store_for("notes_store", "t_a")).route.connection == "a"


async def test_writes_are_journaled_while_dual_and_switched_and_the_cutover_drains_the_journal() -> None:
    routing = MemoryItemStore()
    engines = await _engines(routing=routing)

    def marks() -> set[str]:
        return {
            key[2:]
            for name, (_, items) in routing._parts.items()
            if name.startswith("migration|chat_store@t_a|j")
            for key in items
        }

    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(["chat_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                       settle_seconds=SETTLE)
    await engines.chat.post(_ctx(), "th1", role="user", content="dual")
    await engines.chat.post(_ctx("t_other"), "th1", role="user", content="not in scope")
    assert marks() == {"t_a|lab|thread|th1", "t_a|lab|chat_threads|u1"}
    await migrations.run(migration.id)
    assert marks() == set()
    await engines.chat.post(_ctx(), "th2", role="user", content="switched")
    assert "t_a|lab|thread|th2" in marks()  # for a rollback
    await migrations.release(migration.id)
    assert marks() == set()


# --- one migrator at a time: the lease -------------------------------------------------------


async def _with_one_note() -> tuple[Engines, KindStore]:
    """Engines, and the notes handle of tenant t_a, which holds ``k`` = ``v-before`` (version 1)."""
    engines = await _engines()
    handle = await engines.registry.store_for("notes_store", "t_a")
    await handle.write("t_a|lab|p", [Put("k", b"v-before", version=1)])
    return engines, handle


async def test_a_second_migrator_never_undoes_writes_made_on_the_target_after_the_switch() -> None:
    # An operator runs the same command again while the first one is frozen; the second one
    # (a little slower) must not drain source -> target once the first one has switched.
    engines, handle = await _with_one_note()
    registry = engines.registry
    second: list[asyncio.Task[Any]] = []

    async def slower(seconds: float) -> None:
        await asyncio.sleep(seconds + 0.3)

    class First(Migrations):
        async def _phase(self, migration: Any, version: int, phase: str) -> Any:
            out = await super()._phase(migration, version, phase)
            if phase == "frozen":
                other = Migrations(registry, engines.clock, sleep=slower)
                second.append(asyncio.create_task(other.run(migration.id)))
                await asyncio.sleep(0.01)
            return out

    first = First(registry, engines.clock)
    migration = await first.start(["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                  settle_seconds=0.05)
    await first.run(migration.id)
    serving = await registry.store_for("notes_store", "t_a")
    assert serving.route.connection == "b"
    await handle.write("t_a|lab|p", [Put("k", b"v-after", version=2)])  # acknowledged by the target
    try:
        assert (await second[0]).phase == "switched"  # it found the migration switched: nothing to do
    except NorthstarError as exc:
        assert exc.code == "migration.conflict"
    got = await serving.get("t_a|lab|p", "k")
    assert got is not None and (got.value, got.version) == (b"v-after", 2)


async def test_a_migrator_that_lost_its_lease_writes_nothing_and_stops_with_a_conflict() -> None:
    # The first migrator stalls (its heartbeat too, as in a paused process) after reading phase
    # frozen; its lease expires, a second one takes over and switches; the first one wakes up.
    engines, handle = await _with_one_note()
    registry = engines.registry
    wake = asyncio.Event()
    stalled = asyncio.Event()

    async def stalls(seconds: float) -> None:
        stalled.set()
        await wake.wait()

    async def no_heartbeat(lease: Any) -> None:
        await wake.wait()

    class Stalls(Migrations):
        async def _phase(self, migration: Any, version: int, phase: str) -> Any:
            out = await super()._phase(migration, version, phase)
            if phase == "frozen":
                self._sleep = stalls  # the cutover's wait for the writes to settle never ends
            return out

    first = Stalls(registry, engines.clock)
    first._heartbeat = no_heartbeat  # type: ignore[method-assign]
    migration = await first.start(["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                  settle_seconds=0.05)
    run = asyncio.create_task(first.run(migration.id))
    await asyncio.wait_for(stalled.wait(), timeout=5)
    second = Migrations(registry, engines.clock)
    assert (await asyncio.wait_for(second.run(migration.id), timeout=5)).phase == "switched"
    serving = await registry.store_for("notes_store", "t_a")
    await handle.write("t_a|lab|p", [Put("k", b"v-after", version=2)])
    assert serving.route.connection == "b"
    wake.set()
    with pytest.raises(NorthstarError) as info:
        await run
    assert info.value.code == "migration.conflict"
    got = await serving.get("t_a|lab|p", "k")
    assert got is not None and (got.value, got.version) == (b"v-after", 2)
    assert (await registry.store_for("notes_store", "t_a")).route.connection == "b"


async def test_a_command_waits_for_a_live_migrator_one_lease_period_then_gives_up() -> None:
    engines = await _engines()
    registry = engines.registry
    await (await registry.store_for("notes_store", "t_a")).write("t_a|lab|p", [Put("k", b"v")])
    release = asyncio.Event()

    class Slow(Migrations):
        async def _copy(self, *args: Any, **kwargs: Any) -> None:
            await release.wait()  # a long copy: the heartbeat keeps the lease
            await super()._copy(*args, **kwargs)

    first = Slow(registry, engines.clock)
    settle = 0.1
    migration = await first.start(["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                  settle_seconds=settle)
    run = asyncio.create_task(first.run(migration.id))
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(NorthstarError) as info:
        await Migrations(registry, engines.clock).rollback(migration.id)
    waited = loop.time() - began
    assert (info.value.http_status, info.value.code) == (409, "migration.conflict")
    assert "another migrator is running" in info.value.message
    assert 2 * settle <= waited < 2.0  # one lease period (two settle_seconds) and its margin
    assert registry.migration(migration.id) is not None  # the rollback changed nothing
    release.set()
    assert (await run).phase == "switched"


# --- batches the target takes ------------------------------------------------------------------


class _TwoMegabyteBatches(MemoryItemStore):
    """A backend refusing a write of more than 2 MB (as Cosmos DB's transactional batches; the
    emulators do not enforce it), or of a key named ``refused``."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    async def write(self, partition: str, ops: Any) -> None:
        size = sum(len(op.key) + len(getattr(op, "value", b"")) for op in ops)
        self.largest = max(self.largest, size)
        if size > 2 * 1024 * 1024:
            raise InvalidItem("request size is too large (simulated)")
        if any(op.key == "refused" for op in ops):
            raise InvalidItem("the key is not allowed (simulated)")
        await super().write(partition, ops)


class _CappedTables(_Tables):
    def open(self, target: Target) -> ItemStore:
        if target.params.get("name") == "b":
            return self.tables.setdefault(("b", target.table_name), _TwoMegabyteBatches())
        return super().open(target)


async def test_big_items_are_copied_in_batches_the_target_takes() -> None:
    tables = _CappedTables()
    engines = await _engines(tables)
    handle = await engines.registry.store_for("notes_store", "t_a")
    for i in range(30):  # each one an ordinary write the service accepts
        await handle.write("t_a|lab|notes|p", [Put(f"n{i:02d}", bytes([i]) * 300_000, version=1)])
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                       settle_seconds=0.05)
    assert (await migrations.run(migration.id)).phase == "switched"
    target = tables.tables[("b", "notes_store")]
    assert isinstance(target, _TwoMegabyteBatches) and 0 < target.largest <= 2 * 1024 * 1024
    items = await target.query("t_a|lab|notes|p", "", limit=100)
    assert [(item.key, item.value) for item in items] == [
        (f"n{i:02d}", bytes([i]) * 300_000) for i in range(30)
    ]


async def test_an_item_the_target_refuses_stops_the_migration_with_an_envelope() -> None:
    tables = _CappedTables()
    engines = await _engines(tables)
    handle = await engines.registry.store_for("notes_store", "t_a")
    await handle.write("t_a|lab|p", [Put("refused", b"v"), Put("fine", b"v")])
    migrations = Migrations(engines.registry, engines.clock)
    migration = await migrations.start(["notes_store"], "b", tenant_id="t_a", fence_seconds=FENCE,
                                       settle_seconds=0.05)
    for _ in range(2):  # not retryable: every run stops the same way, with the envelope
        with pytest.raises(NorthstarError) as info:
            await migrations.run(migration.id)
        assert (info.value.http_status, info.value.code) == (409, "migration.backend_refused")
        assert info.value.details["partition"] == "t_a|lab|p"
    assert (await engines.registry.store_for("notes_store", "t_a")).route.connection == "a"
    assert (await migrations.rollback(migration.id)).state == "rolled_back"
