"""The routing registry: durable routes, no fallback, lab-only backends only in lab."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.errors import NorthstarError
from northstar_core.routing import RESOURCE_KINDS, Route, RoutingError, RoutingRegistry
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op


class Unreachable(MemoryItemStore):
    """Fault injection: a backend that never answers."""

    async def get(self, partition: str, key: str) -> Item | None:
        raise BackendUnavailable("connection refused", retry_after=7)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        raise BackendUnavailable("connection refused", retry_after=7)


class Factory:
    """Opens one in-memory store per distinct route (``params.name``), or a failing one."""

    def __init__(self) -> None:
        self.opened: dict[str, ItemStore] = {}

    def open(self, route: Route) -> ItemStore:
        name = str(route.params.get("name", route.resource_kind))
        if name not in self.opened:
            self.opened[name] = Unreachable() if name.startswith("down") else MemoryItemStore()
        return self.opened[name]


def registry(mode: str = "lab", store: ItemStore | None = None, **kwargs: object) -> RoutingRegistry:
    return RoutingRegistry(store or MemoryItemStore(), Factory(), deployment_mode=mode, **kwargs)  # type: ignore[arg-type]


async def test_an_unrouted_kind_answers_503_missing_route() -> None:
    reg = registry()
    with pytest.raises(NorthstarError) as info:
        await reg.store_for("chat_store", "t_a")
    assert (info.value.code, info.value.http_status) == ("chat_store.missing_route", 503)
    assert info.value.details == {"resource_kind": "chat_store"}


async def test_a_routed_kind_resolves_to_its_backend() -> None:
    reg = registry()
    await reg.set_route(Route(resource_kind="chat_store", backend="memory", params={"name": "chat"}))
    store = await reg.store_for("chat_store", "t_a")
    assert store.route.backend == "memory" and store.kind == "chat_store"


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("mode", ["saas", "enterprise", "system"])
async def test_a_lab_only_backend_is_refused_outside_lab(mode: str, backend: str) -> None:
    reg = registry(mode)
    with pytest.raises(NorthstarError) as info:
        await reg.set_route(Route(resource_kind="chat_store", backend=backend))
    assert (info.value.code, info.value.http_status) == ("routing.lab_backend_forbidden", 422)
    assert reg.routes() == []


async def test_a_lab_route_in_a_shared_table_is_refused_at_startup_and_on_use_outside_lab() -> None:
    table = MemoryItemStore()
    lab = registry("lab", table)
    for kind in RESOURCE_KINDS:
        await lab.set_route(Route(resource_kind=kind, backend="dynamodb"))
    await lab.set_route(Route(resource_kind="notes_store", backend="sqlite"))
    saas = registry("saas", table)
    await saas.load()
    with pytest.raises(RoutingError, match="notes_store: routed to lab-only backend 'sqlite'"):
        saas.check_startup()
    with pytest.raises(NorthstarError) as info:
        await saas.store_for("notes_store", "t_a")
    assert info.value.code == "notes_store.missing_route"


async def test_a_lab_only_tenant_override_is_refused_at_startup_outside_lab() -> None:
    table = MemoryItemStore()
    lab = registry("lab", table)
    for kind in RESOURCE_KINDS:
        await lab.set_route(Route(resource_kind=kind, backend="cosmos"))
    await lab.set_route(Route(resource_kind="chat_store", backend="memory", tenant_id="t_x"))
    saas = registry("saas", table)
    await saas.load()
    with pytest.raises(RoutingError, match="tenant t_x"):
        saas.check_startup()


async def test_startup_outside_lab_is_refused_while_a_required_kind_is_unrouted() -> None:
    reg = registry("saas")
    for kind in RESOURCE_KINDS:
        if kind != "event_spine":
            await reg.set_route(Route(resource_kind=kind, backend="firestore"))
    with pytest.raises(RoutingError, match="event_spine: no route"):
        reg.check_startup()
    await reg.set_route(Route(resource_kind="event_spine", backend="firestore"))
    reg.check_startup()


def test_lab_starts_with_unrouted_kinds() -> None:
    registry("lab").check_startup()


async def test_a_tenant_override_beats_the_kind_route_for_that_tenant_only() -> None:
    reg = registry()
    await reg.set_route(Route(resource_kind="chat_store", backend="memory", params={"name": "shared"}))
    await reg.set_route(
        Route(resource_kind="chat_store", backend="memory", params={"name": "vip"}, tenant_id="t_vip")
    )
    vip = await reg.store_for("chat_store", "t_vip")
    other = await reg.store_for("chat_store", "t_other")
    assert vip.route.params == {"name": "vip"} and other.route.params == {"name": "shared"}
    assert vip.inner is not other.inner


async def test_a_tenant_override_alone_leaves_other_tenants_unrouted() -> None:
    reg = registry()
    await reg.set_route(Route(resource_kind="chat_store", backend="memory", tenant_id="t_vip"))
    await reg.store_for("chat_store", "t_vip")
    with pytest.raises(NorthstarError, match="no backend route"):
        await reg.store_for("chat_store", "t_other")


async def test_diagnostics_list_unrouted_and_unreachable_kinds() -> None:
    reg = registry(required_kinds=("chat_store", "notes_store", "event_spine"))
    await reg.set_route(Route(resource_kind="chat_store", backend="memory"))
    await reg.set_route(Route(resource_kind="notes_store", backend="memory", params={"name": "down-notes"}))
    report = await reg.diagnostics()
    assert report["unrouted"] == ["event_spine"]
    assert report["unreachable"] == ["notes_store"]
    assert report["kinds"]["notes_store"]["error"] == "notes_store.backend_unavailable"
    assert report["kinds"]["chat_store"] == {"routed": True, "backend": "memory (lab)", "reachable": True}


async def test_an_unreachable_backend_answers_503_backend_unavailable_with_retry_after() -> None:
    reg = registry()
    await reg.set_route(Route(resource_kind="chat_store", backend="memory", params={"name": "down"}))
    store = await reg.store_for("chat_store", "t_a")
    with pytest.raises(NorthstarError) as info:
        await store.get("p", "k")
    err = info.value
    assert (err.code, err.http_status, err.headers) == (
        "chat_store.backend_unavailable",
        503,
        {"Retry-After": "7"},
    )


@pytest.mark.parametrize(
    ("route", "code"),
    [
        (Route(resource_kind="nonsense_store", backend="memory"), "routing.unknown_resource_kind"),
        (Route(resource_kind="chat_store", backend="postgres"), "routing.unknown_backend"),
    ],
)
async def test_unknown_kinds_and_backends_are_refused(route: Route, code: str) -> None:
    with pytest.raises(NorthstarError) as info:
        await registry().set_route(route)
    assert (info.value.code, info.value.http_status) == (code, 422)


async def test_a_stale_expected_version_is_409_with_the_current_version() -> None:
    reg = registry()
    assert await reg.set_route(Route(resource_kind="chat_store", backend="memory")) == 1
    assert await reg.set_route(Route(resource_kind="chat_store", backend="memory"), expected_version=1) == 2
    with pytest.raises(NorthstarError) as info:
        await reg.set_route(Route(resource_kind="chat_store", backend="dynamodb"), expected_version=1)
    assert (info.value.code, info.value.http_status) == ("routing.version_conflict", 409)
    assert info.value.details == {"current_version": 2}


async def test_routes_are_durable_across_a_new_registry_on_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    first_store = SqliteItemStore(path, namespace="routing", private=True)
    first = RoutingRegistry(first_store, Factory(), deployment_mode="lab")
    await first.set_route(Route(resource_kind="chat_store", backend="sqlite", params={"path": "x"}))
    await first.set_route(Route(resource_kind="chat_store", backend="memory", tenant_id="t_b"))
    await first_store.close()

    reopened = SqliteItemStore(path, namespace="routing", private=True)
    second = RoutingRegistry(reopened, Factory(), deployment_mode="lab")
    await second.load()
    assert [(r.resource_kind, r.backend, r.tenant_id, v) for r, v in second.routes()] == [
        ("chat_store", "sqlite", None, 1),
        ("chat_store", "memory", "t_b", 1),
    ]
    assert (await second.store_for("chat_store", "t_b")).route.backend == "memory"
    await reopened.close()


async def test_registries_sharing_a_table_converge_after_their_refresh_interval() -> None:
    table = MemoryItemStore()
    clock = [0.0]
    reader = registry("lab", table, monotonic=lambda: clock[0], refresh_seconds=5.0)
    await reader.load()
    await registry("lab", table).set_route(Route(resource_kind="chat_store", backend="memory"))
    with pytest.raises(NorthstarError):
        await reader.store_for("chat_store")
    clock[0] += 5.0
    assert (await reader.store_for("chat_store")).route.backend == "memory"


async def test_kinds_routed_to_one_configuration_share_one_opened_store() -> None:
    factory = Factory()
    reg = RoutingRegistry(MemoryItemStore(), factory, deployment_mode="lab")
    route = Route(resource_kind="chat_store", backend="memory", params={"name": "one"})
    await reg.set_route(route)
    a = await reg.store_for("chat_store", "t_a")
    b = await reg.store_for("chat_store", "t_b")
    assert a.inner is b.inner and len(factory.opened) == 1


async def test_an_unreachable_registry_store_keeps_serving_the_routes_it_loaded() -> None:
    table = MemoryItemStore()
    clock = [0.0]
    reg = registry("lab", table, monotonic=lambda: clock[0], refresh_seconds=1.0)
    await reg.set_route(Route(resource_kind="chat_store", backend="memory", params={"name": "chat"}))

    async def down(*args: object, **kwargs: object) -> list[Item]:
        raise BackendUnavailable("connection refused", retry_after=3)

    table.query = down  # type: ignore[method-assign]
    clock[0] += 5.0
    # the refresh fails, the known route still resolves: the kind reports its own backend
    assert (await reg.store_for("chat_store")).route.params == {"name": "chat"}
    fresh = registry("lab", table)
    with pytest.raises(NorthstarError) as info:  # never loaded: nothing to serve from
        await fresh.store_for("chat_store")
    assert info.value.code == "routing_registry.backend_unavailable"
