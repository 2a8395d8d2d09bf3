"""Tenant archives (``northstar_core.kernel.archive``): export → import reproduces every item and
every read exactly; exports resume from any mark; bad, cut or foreign archives write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.suite import make_registry
from contracts.suite.scan import scan_all
from northstar_adapters.memory import MemoryItemStore
from northstar_core.canvas import CommandIn
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel import archive
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RoutingRegistry, Target
from northstar_core.storage import Item, ItemStore, Put

SECRET = b"s" * 32
TENANT = "t_arch"
SYSTEM = RequestContext(tenant_id="t_ops", mode="lab", user_id="op", roles=("owner",), is_system=True)


def ctx(tenant: str = TENANT, roles: tuple[str, ...] = ("member", "admin")) -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u1", roles=roles, run_id="run1")


async def engines_on(store: ItemStore) -> Engines:
    return Engines(await make_registry(store), CursorCodec(SECRET), ManualClock())


async def populate(engines: Engines, tenant: str = TENANT) -> None:
    c = ctx(tenant)
    for i in range(3):
        await engines.chat.post(c, "th_1", role="user", content=f"hello {i}", idempotency_key=f"k{i}")
    await engines.chat.post(c, "th_2", role="agent", content="other thread")
    for i in range(4):
        await engines.spine.append(
            c,
            {"event_type": "note.added", "source": "ui", "payload": {"n": i}, "step_id": f"s{i}"},
            client=True,
        )
    create = {"op": "create", "atom_id": "a", "kind": "box", "props": {}}
    await engines.canvas.commit(c, "c1", CommandIn(base_rev=0, ops=[create], idempotency_key="cmd1"))
    await engines.memory.set(c, "s1", "colour", {"v": "blue"})
    await engines.memory.set(c, "s1", "short", 1, ttl_seconds=60)
    await engines.budget.record(c, {"amount": 2.5, "surface_id": "s1"})


async def reads(engines: Engines, tenant: str = TENANT) -> dict[str, Any]:
    """What a client reads back, cursors included (the same codec secret on both sides)."""
    c = ctx(tenant)
    out = {
        "th_1": await engines.chat.list_messages(c, "th_1", cursor=None),
        "th_2": await engines.chat.list_messages(c, "th_2", cursor=None),
        "spine": await engines.spine.list(c),
        "canvas": await engines.canvas.snapshot(c, "c1"),
        "memory": await engines.memory.get(c, "s1", "colour"),
        "budget": await engines.budget.usage(c),
    }
    return msgspec.to_builtins(out)


async def export_lines(engines: Engines, tenant: str = TENANT, cursor: str | None = None) -> list[bytes]:
    out = b"".join([chunk async for chunk in await engines.archives.export(SYSTEM, tenant, cursor)])
    return out.splitlines(keepends=True)


async def feed(lines: Iterable[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


def decoded(line: bytes) -> Any:
    return msgspec.json.decode(line, type=archive.Line)


async def tenant_items(store: ItemStore, tenant: str = TENANT) -> list[tuple[str, Item]]:
    return sorted(await scan_all(store, tenant + "|", 50), key=lambda pi: (pi[0], pi[1].key))


async def test_export_then_import_reproduces_every_item_and_every_read() -> None:
    source_store = MemoryItemStore()
    source = await engines_on(source_store)
    await populate(source)
    await populate(source, "t_other")
    lines = await export_lines(source)
    assert isinstance(decoded(lines[0]), archive.ArchiveHeader)
    assert isinstance(decoded(lines[-1]), archive.ArchiveEnd)
    exported = [decoded(x) for x in lines if isinstance(decoded(x), archive.ArchiveItem)]
    assert exported and all(e.partition.startswith(TENANT + "|") for e in exported)

    target_store = MemoryItemStore()
    target = await engines_on(target_store)
    report = await target.archives.import_(SYSTEM, TENANT, feed(lines))
    assert (report.items, report.written, report.already_present) == (len(exported), len(exported), 0)
    assert await tenant_items(target_store) == await tenant_items(source_store)
    assert await tenant_items(target_store, "t_other") == []
    assert await reads(target) == await reads(source)
    # the imported tenant goes on where it stopped: the next post is the thread's 4th
    posted = await target.chat.post(ctx(), "th_1", role="user", content="after", idempotency_key="k9")
    again = await source.chat.post(ctx(), "th_1", role="user", content="after", idempotency_key="k9")
    ours, theirs = msgspec.to_builtins(posted), msgspec.to_builtins(again)
    for one in (ours, theirs):
        one["message"].pop("message_id")  # a new message's id is random on each side
    assert ours == theirs and ours["message"]["seq"] == 4


async def test_an_export_resumed_after_any_mark_continues_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archive, "PAGE", 3)
    source = await engines_on(MemoryItemStore())
    await populate(source)
    full = await export_lines(source)
    marks = [i for i, x in enumerate(full) if isinstance(decoded(x), archive.ArchiveMark)]
    assert len(marks) > 3
    for i in marks:
        mark = decoded(full[i])
        assert full[i + 1 :] == await export_lines(source, cursor=mark.cursor)


async def test_export_cursors_are_bound_to_the_tenant_and_need_the_system_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archive, "PAGE", 3)
    source = await engines_on(MemoryItemStore())
    await populate(source)
    await populate(source, "t_other")
    mark = next(decoded(x) for x in await export_lines(source) if isinstance(decoded(x), archive.ArchiveMark))
    with pytest.raises(NorthstarError) as info:
        await source.archives.export(SYSTEM, "t_other", mark.cursor)
    assert (info.value.http_status, info.value.code) == (410, "archive.cursor_invalid")
    with pytest.raises(NorthstarError) as info:
        await source.archives.export(ctx(roles=("owner",)), TENANT)
    assert (info.value.http_status, info.value.code) == (403, "auth.system_required")
    for bad in ("t_x|y", "", "x" * 300):
        with pytest.raises(NorthstarError) as info:
            await source.archives.export(SYSTEM, bad)
        assert (info.value.http_status, info.value.code) == (422, "archive.invalid_tenant")


async def test_import_refuses_a_tenant_that_holds_data_and_resume_skips_what_is_there() -> None:
    source = await engines_on(MemoryItemStore())
    await populate(source)
    lines = await export_lines(source)
    target_store = MemoryItemStore()
    target = await engines_on(target_store)
    await target.memory.set(ctx(), "s9", "k", 1)
    with pytest.raises(NorthstarError) as info:
        await target.archives.import_(SYSTEM, TENANT, feed(lines))
    assert (info.value.http_status, info.value.code) == (409, "archive.not_empty")

    fresh_store = MemoryItemStore()
    fresh = await engines_on(fresh_store)
    first = await fresh.archives.import_(SYSTEM, TENANT, feed(lines))
    before = await tenant_items(fresh_store)
    second = await fresh.archives.import_(SYSTEM, TENANT, feed(lines), resume=True)
    assert (second.written, second.already_present) == (0, first.written)
    assert await tenant_items(fresh_store) == before


async def test_an_item_already_there_with_other_content_is_a_conflict_and_not_overwritten() -> None:
    source = await engines_on(MemoryItemStore())
    await populate(source)
    lines = await export_lines(source)
    entry = next(decoded(x) for x in lines if isinstance(decoded(x), archive.ArchiveItem))
    target_store = MemoryItemStore()
    target = await engines_on(target_store)
    await target_store.write(entry.partition, [Put(entry.key, b"something else")])
    with pytest.raises(NorthstarError) as info:
        await target.archives.import_(SYSTEM, TENANT, feed(lines), resume=True)
    assert (info.value.http_status, info.value.code) == (409, "archive.conflict")
    assert (await target_store.get(entry.partition, entry.key)) == Item(entry.key, b"something else")


async def test_a_cut_archive_writes_only_verified_pages_and_resume_completes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archive, "PAGE", 4)
    source_store = MemoryItemStore()
    source = await engines_on(source_store)
    await populate(source)
    lines = await export_lines(source)
    marks = [i for i, x in enumerate(lines) if isinstance(decoded(x), archive.ArchiveMark)]
    cut = lines[: marks[1] + 3]  # two verified pages and a part of the third
    target_store = MemoryItemStore()
    target = await engines_on(target_store)
    with pytest.raises(NorthstarError) as info:
        await target.archives.import_(SYSTEM, TENANT, feed(cut))
    assert (info.value.http_status, info.value.code) == (422, "archive.truncated")
    assert len(await tenant_items(target_store)) == decoded(lines[marks[1]]).items
    await target.archives.import_(SYSTEM, TENANT, feed(lines), resume=True)
    assert await tenant_items(target_store) == await tenant_items(source_store)
    # an export that failed part-way ends with its error instead: cut there, the same way
    failed = msgspec.json.encode(archive.ArchiveError(error={"code": "event_spine.backend_unavailable"}))
    other_store = MemoryItemStore()
    other = await engines_on(other_store)
    with pytest.raises(NorthstarError) as info:
        await other.archives.import_(SYSTEM, TENANT, feed([*lines[: marks[0] + 1], failed + b"\n"]))
    assert (info.value.code, info.value.details["export_error"]) == (
        "archive.truncated",
        {"code": "event_spine.backend_unavailable"},
    )
    assert len(await tenant_items(other_store)) == decoded(lines[marks[0]]).items


def _altered(lines: list[bytes], index: int, **changes: Any) -> list[bytes]:
    out = list(lines)
    line = msgspec.structs.replace(decoded(lines[index]), **changes)
    out[index] = msgspec.json.encode(line) + b"\n"
    return out


async def test_altered_crafted_or_foreign_archives_are_refused_and_write_nothing() -> None:
    source = await engines_on(MemoryItemStore())
    await populate(source)
    lines = await export_lines(source)
    first = next(i for i, x in enumerate(lines) if isinstance(decoded(x), archive.ArchiveItem))
    entry = decoded(lines[first])
    header = decoded(lines[0])
    cases: dict[str, tuple[list[bytes], str]] = {
        "altered value": (_altered(lines, first, value=b"tampered"), "archive.invalid_request"),
        "other tenant's partition (re-digested or not)": (
            _altered(lines, first, partition="t_victim|lab|chat|th_1"),
            "archive.invalid_request",
        ),
        "bad key": (_altered(lines, first, key=""), "archive.invalid_request"),
        "version out of range": (_altered(lines, first, version=0), "archive.invalid_request"),
        "expiry out of range": (_altered(lines, first, expires_at=1e300), "archive.invalid_request"),
        "no such group": (_altered(lines, first, group=len(header.groups)), "archive.invalid_request"),
        "header of another tenant": (_altered(lines, 0, tenant_id="t_other"), "archive.invalid_request"),
        "other format": (_altered(lines, 0, version=2), "archive.invalid_request"),
        "other layouts": (
            _altered(lines, 0, layouts={**header.layouts, "event_spine": 1}),
            "archive.layout_mismatch",
        ),
        "no header": (lines[1:], "archive.invalid_request"),
        "not json": ([lines[0], b"{nope\n", *lines[1:]], "archive.invalid_request"),
    }
    assert entry.partition.startswith(TENANT + "|")
    for name, (body, code) in cases.items():
        store = MemoryItemStore()
        target = await engines_on(store)
        with pytest.raises(NorthstarError) as info:
            await target.archives.import_(SYSTEM, TENANT, feed(body))
        assert info.value.code == code, name
        assert 400 <= info.value.http_status < 500, name
        assert await scan_all(store, "", 50) == [], f"{name}: something was written"
    with pytest.raises(NorthstarError) as info:
        await (await engines_on(MemoryItemStore())).archives.import_(
            ctx(roles=("owner",)), TENANT, feed(lines)
        )
    assert info.value.code == "auth.system_required"


class _TablePerName:
    """A backend factory with one memory store per table name (kinds routed to tables)."""

    def __init__(self) -> None:
        self.tables: dict[str, MemoryItemStore] = {}

    def open(self, target: Target) -> ItemStore:
        return self.tables.setdefault(target.table_name, MemoryItemStore())


async def _registry(tables: dict[str, str]) -> RoutingRegistry:
    registry = RoutingRegistry(
        MemoryItemStore(),
        _TablePerName(),
        connections={"mem": Connection(name="mem", backend="memory")},
        deployment_mode="lab",
        refresh_seconds=3600.0,
    )
    for kind in RESOURCE_KINDS:
        await registry.set_route(
            Route(resource_kind=kind, connection="mem", table=tables.get(kind)), probe=False
        )
    return registry


async def test_groups_follow_tables_and_an_import_needs_each_group_in_one_table() -> None:
    # source: chat and canvas commands share a table, everything else has its own
    shared = {"chat_store": "shared", "canvas_command_store": "shared"}
    source = Engines(await _registry(shared), CursorCodec(SECRET), ManualClock())
    await populate(source)
    lines = await export_lines(source)
    header = decoded(lines[0])
    assert ["chat_store", "canvas_command_store"] in [sorted(g, reverse=True) for g in header.groups]
    assert len(header.groups) == len(RESOURCE_KINDS) - 1
    # into one table for everything: fine
    merged_store = MemoryItemStore()
    merged = await engines_on(merged_store)
    await merged.archives.import_(SYSTEM, TENANT, feed(lines))
    assert await reads(merged) == await reads(source)
    # into a deployment that splits chat and canvas: refused before anything is written
    split = Engines(await _registry({}), CursorCodec(SECRET), ManualClock())
    with pytest.raises(NorthstarError) as info:
        await split.archives.import_(SYSTEM, TENANT, feed(lines))
    assert (info.value.http_status, info.value.code) == (409, "archive.routing_mismatch")


# --- erasure -------------------------------------------------------------------------------


async def test_erasing_a_tenant_deletes_every_item_of_it_and_nothing_else() -> None:
    store = MemoryItemStore()
    engines = await engines_on(store)
    await populate(engines)
    await populate(engines, "t_other")
    others = await tenant_items(store, "t_other")
    count = len(await tenant_items(store))
    lines = await export_lines(engines)
    report = await engines.archives.erase(SYSTEM, TENANT, confirm=TENANT, settle_seconds=0)
    assert (report.deleted, report.passes) == (count, 2)  # the second pass finds nothing
    assert await tenant_items(store) == []
    assert await tenant_items(store, "t_other") == others
    assert await reads(engines, "t_other") == await reads(await engines_on(store), "t_other")
    # the tenant is served no more: reads, writes, export and import are refused
    for attempt in (
        engines.chat.list_messages(ctx(), "th_1", cursor=None),
        engines.chat.post(ctx(), "th_1", role="user", content="back?"),
        engines.archives.export(SYSTEM, TENANT),
        engines.archives.import_(SYSTEM, TENANT, feed(lines)),
    ):
        with pytest.raises(NorthstarError) as info:
            await attempt
        assert (info.value.http_status, info.value.code) == (410, "tenant.erased")
    assert await tenant_items(store) == []
    # run again (as after an interruption): nothing left, the record stays
    again = await engines.archives.erase(SYSTEM, TENANT, confirm=TENANT, settle_seconds=0)
    assert (again.deleted, again.passes) == (0, 1)
    retired = engines.registry.retired(TENANT)
    assert retired is not None and (retired.state, retired.items_deleted) == ("erased", count)


async def test_another_process_sharing_the_registry_refuses_the_erased_tenant_after_its_refresh() -> None:
    store = MemoryItemStore()
    engines = await engines_on(store)
    await populate(engines)
    other = Engines(engines.registry, CursorCodec(SECRET), ManualClock())
    peer_registry = RoutingRegistry(
        engines.registry._store,  # the same durable routing table, as a second process opens it
        engines.registry._factory,
        connections=engines.registry.connections,
        deployment_mode="lab",
        refresh_seconds=0.0,
    )
    await peer_registry.load()
    peer = Engines(peer_registry, CursorCodec(SECRET), ManualClock())
    assert (await peer.chat.list_messages(ctx(), "th_1", cursor=None)).items
    await other.archives.erase(SYSTEM, TENANT, confirm=TENANT, settle_seconds=0)
    with pytest.raises(NorthstarError) as info:
        await peer.chat.post(ctx(), "th_1", role="user", content="written after the erasure?")
    assert info.value.code == "tenant.erased"
    assert await tenant_items(store) == []


async def test_erasure_needs_the_system_flag_and_the_tenant_repeated() -> None:
    store = MemoryItemStore()
    engines = await engines_on(store)
    await populate(engines)
    before = await tenant_items(store)
    for caller, confirm, code in (
        (ctx(roles=("owner",)), TENANT, "auth.system_required"),
        (SYSTEM, "t_other", "archive.invalid_request"),
        (SYSTEM, "", "archive.invalid_request"),
    ):
        with pytest.raises(NorthstarError) as info:
            await engines.archives.erase(caller, TENANT, confirm=confirm, settle_seconds=0)
        assert info.value.code == code
    assert await tenant_items(store) == before
    assert engines.registry.retired(TENANT) is None


# --- the rule, for any items ------------------------------------------------------------------

_names = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="|"), min_size=1, max_size=6
)
_items = st.lists(
    st.tuples(
        st.sampled_from([TENANT, "t_other", TENANT + "0"]),  # and a tenant whose id extends this one
        _names,  # partition tail
        _names,  # key
        st.binary(max_size=40),
        st.integers(1, 2**40),
        st.sampled_from([None, 4_000_000_000.5, 1.0]),  # no expiry, future, long expired
    ),
    max_size=60,
    unique_by=lambda t: (t[0], t[1], t[2]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_items, st.integers(1, 7), st.data())
def test_any_items_export_and_import_exactly_and_an_export_resumes_from_any_mark(
    monkeypatch: pytest.MonkeyPatch,
    items: list[tuple[str, str, str, bytes, int, float | None]],
    page: int,
    data: Any,
) -> None:
    monkeypatch.setattr(archive, "PAGE", page)

    async def scenario() -> None:
        source_store = MemoryItemStore()
        for tenant, tail, key, value, version, expires in items:
            await source_store.write(f"{tenant}|lab|{tail}", [Put(key, value, version, expires)])
        source = await engines_on(source_store)
        lines = await export_lines(source)
        marks = [i for i, x in enumerate(lines) if isinstance(decoded(x), archive.ArchiveMark)]
        at = data.draw(st.sampled_from(marks))
        resumed = await export_lines(source, cursor=decoded(lines[at]).cursor)
        assert lines[: at + 1] + resumed == lines
        target_store = MemoryItemStore()
        target = await engines_on(target_store)
        report = await target.archives.import_(SYSTEM, TENANT, feed(lines))
        expected = await tenant_items(source_store)
        assert report.items == report.written == len(expected)
        assert await tenant_items(target_store) == expected
        assert await scan_all(target_store, "", 1000) == expected  # nothing of any other tenant

    asyncio.run(scenario())


async def test_an_export_cursor_is_refused_once_a_group_moved_to_another_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archive, "PAGE", 3)
    source = Engines(await _registry({}), CursorCodec(SECRET), ManualClock())
    await populate(source)
    mark = next(decoded(x) for x in await export_lines(source) if isinstance(decoded(x), archive.ArchiveMark))
    assert await export_lines(source, cursor=mark.cursor)  # resumable while the tables stay
    moved = Route(resource_kind="chat_store", connection="mem", table="elsewhere")
    await source.registry.set_route(moved, force=True)
    with pytest.raises(NorthstarError) as info:
        await source.archives.export(SYSTEM, TENANT, mark.cursor)
    assert (info.value.http_status, info.value.code) == (409, "archive.routes_changed")
