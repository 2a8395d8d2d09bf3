"""Analytics in the core: validated UX event shapes; each accepted event is on the spine
(``analytics``) and in the analytics store under the same id; bad input writes neither."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from contracts.suite import make_registry
from contracts.suite.stores import SECRET, StoreServices, build_services, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.analytics import AnalyticsEventIn, AnalyticsService
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.routing import RESOURCE_KINDS
from northstar_core.spine import EventSpine
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op


@pytest.fixture
async def svc() -> StoreServices:
    return await build_services(MemoryItemStore())


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_a_page_view_is_stored_and_on_the_spine_with_the_same_id(svc: StoreServices) -> None:
    ctx = make_ctx(surface_id="chat", run_id="run1")
    stored = await svc.analytics.record(
        ctx, {"kind": "page_view", "page": "/home", "properties": {"ref": "x"}}
    )
    assert (stored.kind, stored.name, stored.page, stored.source) == ("page_view", "page_view", "/home", "ui")
    assert (stored.tenant_id, stored.user_id, stored.surface_id) == ("t_a", "u1", "chat")
    spine = await svc.spine.list(ctx, event_type="analytics")
    assert [e.event_id for e in spine.items] == [stored.event_id]
    event = spine.items[0]
    assert (event.source, event.run_id, event.payload["page"], event.payload["properties"]) == (
        "ui",
        "run1",
        "/home",
        {"ref": "x"},
    )
    assert [e.event_id for e in (await svc.analytics.list(ctx)).items] == [stored.event_id]


async def test_an_agents_event_has_agent_source(svc: StoreServices) -> None:
    stored = await svc.analytics.record(
        make_ctx(agent_id="a1"), AnalyticsEventIn(kind="custom", name="tool.used")
    )
    assert stored.source == "agent"
    assert (await svc.spine.get(make_ctx(), stored.event_id)).source == "agent"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "page_view"},
        {"kind": "click"},
        {"kind": "custom"},
        {"kind": "hover", "name": "x"},
        {"kind": "custom", "name": "Bad Name"},
        {"kind": "page_view", "page": ""},
        {"kind": "page_view", "page": "/", "occurred_at": "yesterday"},
        {"kind": "page_view", "page": "/", "properties": [1]},
        {"kind": "page_view", "page": "/", "properties": {"x": "y" * 20_000}},
        {"kind": "page_view", "page": "/", "tenant_id": "t_b"},
        {"kind": "page_view", "page": "/", "session_id": "bad id"},
        b"{not json",
        b"[]",
    ],
)
async def test_invalid_events_are_422_and_nothing_is_written(svc: StoreServices, body: Any) -> None:
    err = await _err(svc.analytics.record(make_ctx(run_id="r"), body))
    assert (err.code, err.http_status) == ("analytics.invalid_event", 422)
    assert (await svc.analytics.list(make_ctx())).items == []
    assert (await svc.spine.list(make_ctx(), event_type="analytics")).items == []


async def test_a_constructed_struct_is_validated_like_the_wire(svc: StoreServices) -> None:
    err = await _err(svc.analytics.record(make_ctx(), AnalyticsEventIn(kind="custom", name="NOT OK")))
    assert err.code == "analytics.invalid_event"


async def test_tenants_never_see_each_others_events(svc: StoreServices) -> None:
    await svc.analytics.record(make_ctx(), {"kind": "click", "target": "#buy"})
    page = await svc.analytics.list(make_ctx(), limit=1)
    assert (await svc.analytics.list(make_ctx(tenant="t_b"))).items == []
    err = await _err(svc.analytics.list(make_ctx(tenant="t_b"), cursor=page.next_cursor))
    assert (err.code, err.http_status) == ("analytics.cursor_invalid", 410)


async def test_list_pages_in_arrival_order(svc: StoreServices) -> None:
    ids = [
        (await svc.analytics.record(make_ctx(), {"kind": "custom", "name": f"e{i}"})).event_id
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        page = await svc.analytics.list(make_ctx(), cursor=cursor, limit=2)
        seen += [e.event_id for e in page.items]
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert seen == ids


class _Down(ItemStore):
    """A store that is unreachable (fault injection)."""

    capabilities = MemoryItemStore.capabilities

    async def get(self, partition: str, key: str) -> Item | None:
        raise BackendUnavailable("down")

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        raise BackendUnavailable("down")

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        raise BackendUnavailable("down")


async def test_without_an_analytics_route_nothing_reaches_the_spine() -> None:
    store = MemoryItemStore()
    registry = await make_registry(store, kinds=[k for k in RESOURCE_KINDS if k != "analytics_store"])
    spine = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock())
    analytics = AnalyticsService(registry, CursorCodec(SECRET), ManualClock(), spine)
    err = await _err(analytics.record(make_ctx(run_id="r"), {"kind": "click", "target": "a"}))
    assert (err.code, err.http_status) == ("analytics_store.missing_route", 503)
    assert (await spine.list(make_ctx(), event_type="analytics")).items == []


async def test_an_unreachable_spine_fails_the_ingest_loudly() -> None:
    good = MemoryItemStore()
    registry = await make_registry(good)
    down = await make_registry(_Down(), kinds=["event_spine"])
    spine = EventSpine(down, CursorCodec(SECRET), clock=ManualClock())
    analytics = AnalyticsService(registry, CursorCodec(SECRET), ManualClock(), spine)
    err = await _err(analytics.record(make_ctx(run_id="r"), {"kind": "click", "target": "a"}))
    assert (err.code, err.http_status) == ("event_spine.backend_unavailable", 503)
    assert (await analytics.list(make_ctx())).items == []
