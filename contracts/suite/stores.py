"""Contracts of the remaining durable stores (issue 6), run unchanged on every backend.

Session memory, blackboard, config, notes, the tabular tables and analytics are built on
``harness.open()`` stores through a tiny routing registry, so each backend proves the domain
rules (versioning, TTL, tenant isolation, paging) on its own storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest

from contracts.harness import BackendHarness
from northstar_core.analytics import AnalyticsService
from northstar_core.blackboard import Blackboard
from northstar_core.clock import Clock, ManualClock
from northstar_core.config import ConfigService
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.memory import SessionMemory
from northstar_core.notes import NoteIn, NotesService, NoteUpdate
from northstar_core.routing import RouteOptions, RoutingRegistry
from northstar_core.spine import EventSpine
from northstar_core.storage import ItemStore
from northstar_core.tabular import TABLES, TabularStore

SECRET = b"stores-contract-secret-0123456789"


async def stores_registry(
    harness_or_store: BackendHarness | ItemStore,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> RoutingRegistry:
    """:func:`make_registry`, then route options (``max_value_bytes``…) set per kind."""
    from contracts.suite import make_registry  # the package imports this module: no cycle

    registry = await make_registry(harness_or_store)
    for route, version in registry.routes():
        extra = (params or {}).get(route.resource_kind)
        if extra:
            await registry.set_route(
                msgspec.structs.replace(route, options=RouteOptions(**extra)), expected_version=version
            )
    return registry


def make_ctx(tenant: str = "t_a", user: str = "u1", **kw: Any) -> RequestContext:
    base: dict[str, Any] = {
        "tenant_id": tenant,
        "mode": "lab",
        "user_id": user,
        "roles": ("member",),
        "request_id": "req-1",
    }
    base.update(kw)
    return RequestContext(**base)


class StoreServices:
    """The six services of issue 6 over one registry and clock."""

    def __init__(self, registry: RoutingRegistry, clock: Clock) -> None:
        cursors = CursorCodec(SECRET)
        self.registry = registry
        self.clock = clock
        self.spine = EventSpine(registry, cursors, clock=clock)
        self.memory = SessionMemory(registry, clock)
        self.blackboard = Blackboard(registry, cursors, clock)
        self.config = ConfigService(registry, clock)
        self.notes = NotesService(registry, cursors, clock)
        self.tabular = TabularStore(registry, cursors, clock, spine=self.spine)
        self.analytics = AnalyticsService(registry, cursors, clock, self.spine)


async def build_services(
    harness_or_store: BackendHarness | ItemStore,
    clock: Clock | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> StoreServices:
    return StoreServices(await stores_registry(harness_or_store, params), clock or ManualClock())


async def _conflict(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    assert info.value.http_status == 409, info.value
    return info.value


class StoresContract:
    """Issue 6 stores on this backend: versioning, TTL, isolation and paging hold."""

    @pytest.fixture
    async def svc(self, harness: BackendHarness) -> StoreServices:
        params = {"blackboard_store": {"max_value_bytes": 64}}
        return await build_services(harness, params=params)

    async def test_stores_memory_value_is_hidden_once_its_ttl_passes(self, svc: StoreServices) -> None:
        clock = svc.clock
        assert isinstance(clock, ManualClock)
        await svc.memory.set(make_ctx(), "s1", "k", {"v": 1}, ttl_seconds=30)
        await svc.memory.set(make_ctx(), "s1", "keep", 2)
        assert (await svc.memory.get(make_ctx(), "s1", "k")).value == {"v": 1}
        clock.advance(31)
        with pytest.raises(NorthstarError) as info:
            await svc.memory.get(make_ctx(), "s1", "k")
        assert info.value.code == "memory.not_found"
        assert [v.key for v in await svc.memory.get_all(make_ctx(), "s1")] == ["keep"]

    async def test_stores_memory_is_scoped_to_tenant_and_user(self, svc: StoreServices) -> None:
        await svc.memory.set(make_ctx(), "s1", "k", "mine")
        for other in (make_ctx(tenant="t_b"), make_ctx(user="u2")):
            assert await svc.memory.get_all(other, "s1") == []

    async def test_stores_blackboard_versioned_writes_never_overwrite(self, svc: StoreServices) -> None:
        ctx = make_ctx()
        first = await svc.blackboard.put(ctx, "run1", "plan", [1], expected_version=None)
        assert first.version == 1
        err = await _conflict(svc.blackboard.put(ctx, "run1", "plan", [2], expected_version=None))
        assert err.details["current_version"] == 1
        second = await svc.blackboard.put(ctx, "run1", "plan", [2], expected_version=1)
        assert second.version == 2
        err = await _conflict(svc.blackboard.put(ctx, "run1", "plan", [3], expected_version=1))
        assert err.details["current_version"] == 2
        assert (await svc.blackboard.get(ctx, "run1", "plan")).value == [2]

    async def test_stores_blackboard_enforces_the_route_size_limit(self, svc: StoreServices) -> None:
        with pytest.raises(NorthstarError) as info:
            await svc.blackboard.put(make_ctx(), "run1", "big", "x" * 100, expected_version=None)
        assert (info.value.code, info.value.http_status) == ("blackboard.value_too_large", 413)
        assert (await svc.blackboard.list(make_ctx(), "run1")).items == []

    async def test_stores_blackboard_lists_in_pages_and_never_across_tenants(
        self, svc: StoreServices
    ) -> None:
        ctx = make_ctx()
        for i in range(5):
            await svc.blackboard.put(ctx, "run1", f"k{i}", i, expected_version=None)
        seen: list[str] = []
        cursor = None
        while True:
            page = await svc.blackboard.list(ctx, "run1", cursor=cursor, limit=2)
            seen += [e.key for e in page.items]
            cursor = page.next_cursor
            if not page.has_more:
                break
        assert seen == [f"k{i}" for i in range(5)]
        assert (await svc.blackboard.list(make_ctx(tenant="t_b"), "run1")).items == []

    async def test_stores_config_toggle_resolves_surface_over_tenant_over_system(
        self, svc: StoreServices
    ) -> None:
        admin = make_ctx(roles=("admin",), is_system=True)
        key = "canvas.gestures_enabled"
        assert await svc.config.toggle(admin, key, default=True) is True
        await svc.config.put(admin, "system", {key: False}, expected_version=None)
        assert await svc.config.toggle(admin, key, default=True) is False
        await svc.config.put(admin, "tenant", {key: True}, expected_version=None)
        assert await svc.config.toggle(admin, key, default=False) is True
        await svc.config.put(admin, "surface", {key: False}, expected_version=None, surface_id="canvas")
        assert await svc.config.toggle(make_ctx(surface_id="canvas"), key, default=True) is False
        assert await svc.config.toggle(make_ctx(surface_id="chat"), key, default=False) is True

    async def test_stores_notes_are_visible_to_their_owner_only(self, svc: StoreServices) -> None:
        note = await svc.notes.create(make_ctx(), NoteIn(title="t", surface_id="chat", tags=["a"]))
        assert (await svc.notes.get(make_ctx(), note.note_id)).title == "t"
        for other in (make_ctx(user="u2"), make_ctx(tenant="t_b")):
            with pytest.raises(NorthstarError) as info:
                await svc.notes.get(other, note.note_id)
            assert info.value.http_status == 404
            assert (await svc.notes.list(other)).items == []
        updated = await svc.notes.update(
            make_ctx(), note.note_id, NoteUpdate(title="t2", expected_version=1)
        )
        assert updated.version == 2
        stale = NoteUpdate(title="t3", expected_version=1)
        await _conflict(svc.notes.update(make_ctx(), note.note_id, stale))

    async def test_stores_tabular_keeps_every_version_readable(self, svc: StoreServices) -> None:
        ctx = make_ctx()
        for table in TABLES:
            await svc.tabular.put(ctx, table, "r1", {"v": 1}, expected_version=None)
            await svc.tabular.put(ctx, table, "r1", {"v": 2}, expected_version=1)
            assert (await svc.tabular.get(ctx, table, "r1")).json_blob == {"v": 2}
            assert (await svc.tabular.get(ctx, table, "r1", version=1)).json_blob == {"v": 1}
            assert [v.version for v in (await svc.tabular.versions(ctx, table, "r1")).items] == [1, 2]
            await svc.tabular.delete(ctx, table, "r1", expected_version=2)
            again = await svc.tabular.put(ctx, table, "r1", {"v": 3}, expected_version=None)
            assert again.version == 3

    async def test_stores_analytics_event_lands_in_the_store_and_on_the_spine(
        self, svc: StoreServices
    ) -> None:
        ctx = make_ctx(run_id="run1")
        stored = await svc.analytics.record(ctx, {"kind": "page_view", "page": "/home"})
        assert [e.event_id for e in (await svc.analytics.list(ctx)).items] == [stored.event_id]
        spine_event = await svc.spine.get(ctx, stored.event_id)
        assert spine_event is not None and spine_event.event_type == "analytics"

    async def test_stores_record_listings_resume_at_their_end(self, svc: StoreServices) -> None:
        """Blackboard, tabular (records and versions) and analytics pages are resumable: the
        last page still names the position after its last item, and an empty page answers
        the cursor it was asked with (``None`` when there was none)."""
        ctx = make_ctx(run_id="run1")
        listings: dict[str, Any] = {
            "blackboard": lambda cursor: svc.blackboard.list(ctx, "run1", cursor=cursor, limit=2),
            "tabular": lambda cursor: svc.tabular.list(ctx, "flows", cursor=cursor, limit=2),
            "versions": lambda cursor: svc.tabular.versions(ctx, "flows", "r1", cursor=cursor, limit=2),
            "analytics": lambda cursor: svc.analytics.list(ctx, cursor=cursor, limit=2),
        }
        for name in ("blackboard", "tabular", "analytics"):
            empty = await listings[name](None)
            assert (empty.items, empty.next_cursor, empty.has_more) == ([], None, False), name
        for i in range(3):
            await svc.blackboard.put(ctx, "run1", f"k{i}", i, expected_version=None)
            await svc.tabular.put(ctx, "flows", f"r{i}", i, expected_version=None)
            await svc.analytics.record(ctx, {"kind": "click", "target": f"t{i}"})
        for version in (1, 2):  # r1 has three versions
            await svc.tabular.put(ctx, "flows", "r1", version, expected_version=version)
        for name, listing in listings.items():
            first = await listing(None)
            assert (len(first.items), first.has_more) == (2, True), name
            last = await listing(first.next_cursor)
            assert (len(last.items), last.has_more) == (1, False), name
            assert last.next_cursor is not None, name
            end = await listing(last.next_cursor)
            assert (end.items, end.next_cursor, end.has_more) == ([], last.next_cursor, False), name
