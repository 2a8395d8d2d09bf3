"""A route change never leaves a kind's data behind unnoticed: moving a kind (for one tenant or
for all) away from a table that holds its data is 409 ``routing.would_strand`` unless the
system operator forces it."""

from __future__ import annotations

import pytest

from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RouteOptions, RoutingRegistry, Target
from northstar_core.storage import ItemStore, Put


class _Tables:
    """One memory store per (connection, table), as separate tables of a backend."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], MemoryItemStore] = {}

    def open(self, target: Target) -> ItemStore:
        return self.tables.setdefault((str(target.params.get("name")), target.table_name), MemoryItemStore())


async def _engines() -> tuple[Engines, _Tables]:
    tables = _Tables()
    registry = RoutingRegistry(
        MemoryItemStore(),
        tables,
        connections={
            "a": Connection(name="a", backend="memory", params={"name": "a"}),
            "b": Connection(name="b", backend="memory", params={"name": "b"}, tenant_overrides=True),
        },
        deployment_mode="lab",
        refresh_seconds=0.0,
    )
    for kind in RESOURCE_KINDS:
        await registry.set_route(Route(resource_kind=kind, connection="a"), probe=False)
    return Engines(registry, CursorCodec(b"k" * 32), ManualClock()), tables


def _ctx(tenant: str) -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u1", roles=("member",))


async def test_a_tenant_override_that_would_strand_the_tenants_data_is_refused() -> None:
    engines, _ = await _engines()
    await engines.chat.post(_ctx("t_a"), "th", role="user", content="kept")
    registry = engines.registry
    move = Route(resource_kind="chat_store", connection="b", tenant_id="t_a")
    with pytest.raises(NorthstarError) as info:
        await registry.set_route(move, by_system=False)
    assert (info.value.http_status, info.value.code) == (409, "routing.would_strand")
    assert info.value.details["tenant_id"] == "t_a" and info.value.details["connection"] == "a"
    # nothing changed: the tenant still reads its thread
    assert len((await engines.chat.list_messages(_ctx("t_a"), "th", cursor=None)).items) == 1
    # a tenant admin cannot force it; the system operator can
    with pytest.raises(NorthstarError) as info:
        await registry.set_route(move, by_system=False, force=True)
    assert info.value.code == "auth.system_required"
    await registry.set_route(move, force=True)
    assert (await engines.chat.list_messages(_ctx("t_a"), "th", cursor=None)).items == []


async def test_moves_that_strand_nothing_are_allowed() -> None:
    engines, tables = await _engines()
    registry = engines.registry
    await engines.chat.post(_ctx("t_a"), "th", role="user", content="kept")
    # another tenant with no data of its own moves freely (t_a's items are not its)
    await registry.set_route(
        Route(resource_kind="chat_store", connection="b", tenant_id="t_b"), by_system=False
    )
    await registry.set_route(
        Route(resource_kind="chat_store", connection="b", tenant_id="t_a0"), by_system=False
    )  # a tenant id that extends t_a's is another tenant
    # options on the same table are no move
    await registry.set_route(
        Route(resource_kind="event_spine", connection="a", options=RouteOptions(shards=4))
    )
    # a kind whose table holds nothing moves deployment-wide
    await registry.set_route(Route(resource_kind="notes_store", connection="b"))
    # the deployment-wide route of a kind with data does not
    with pytest.raises(NorthstarError) as info:
        await registry.set_route(Route(resource_kind="chat_store", connection="b"))
    assert info.value.code == "routing.would_strand" and info.value.details["tenant_id"] is None
    # expired items are no data
    spine = tables.tables[("a", "memory_store")]
    await spine.write("t_c|lab|memory|x", [Put("k", b"v", expires_at=1.0)])
    await registry.set_route(Route(resource_kind="memory_store", connection="b"))
