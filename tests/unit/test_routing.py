"""The routing registry: durable routes over operator-named connections, no fallback, lab-only
backends only in lab, and what a tenant admin's override may (not) change."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from northstar_adapters import AdapterFactory
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.errors import NorthstarError
from northstar_core.routing import (
    DATA_LAYOUTS,
    PROTECTED_KINDS,
    RESOURCE_KINDS,
    RETIRE_GRACE_SECONDS,
    UNRECORDED_LAYOUT,
    Connection,
    Route,
    RouteOptions,
    RoutingError,
    RoutingRegistry,
    Target,
)
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op, Put


class Unreachable(MemoryItemStore):
    """Fault injection: a backend that never answers."""

    async def get(self, partition: str, key: str) -> Item | None:
        raise BackendUnavailable("connection refused", retry_after=7)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        raise BackendUnavailable("connection refused", retry_after=7)


class Tracked(MemoryItemStore):
    async def close(self) -> None:
        self.was_closed = True
        await super().close()


class Factory:
    """Opens one in-memory store per (connection name, table); connections named ``down…`` never
    answer; a ``refuse`` param makes the adapter refuse its params, naming the field."""

    def __init__(self) -> None:
        self.opened: dict[tuple[str, str], ItemStore] = {}

    def open(self, target: Target) -> ItemStore:
        if "refuse" in target.params:
            raise ValueError(f"Expected `int`, got `str` - at `$.{target.params['refuse']}`")
        key = (str(target.params.get("name")), target.table_name)
        if key not in self.opened:
            self.opened[key] = Unreachable() if key[0].startswith("down") else Tracked()
        return self.opened[key]


def _conn(name: str, backend: str, overrides: bool = False, **params: Any) -> Connection:
    return Connection(name=name, backend=backend, params={"name": name, **params}, tenant_overrides=overrides)


CONNECTIONS = {
    c.name: c
    for c in [
        _conn("mem", "memory"),
        _conn("mem2", "memory"),
        _conn("down", "memory"),
        _conn("sq", "sqlite"),
        _conn("ddb", "dynamodb"),
        _conn("fs", "firestore"),
        _conn("cos", "cosmos"),
        _conn("open", "memory", overrides=True),
        _conn("cloud_open", "dynamodb", overrides=True),
        _conn("bad", "memory", refuse="busy_timeout_ms"),
    ]
}


def registry(mode: str = "lab", store: ItemStore | None = None, **kwargs: Any) -> RoutingRegistry:
    kwargs.setdefault("connections", CONNECTIONS)
    return RoutingRegistry(store or MemoryItemStore(), Factory(), deployment_mode=mode, **kwargs)


def route(kind: str = "chat_store", connection: str = "mem", **kw: Any) -> Route:
    return Route(resource_kind=kind, connection=connection, **kw)


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_an_unrouted_kind_answers_503_missing_route() -> None:
    err = await _err(registry().store_for("chat_store", "t_a"))
    assert (err.code, err.http_status) == ("chat_store.missing_route", 503)
    assert err.details == {"resource_kind": "chat_store"}


async def test_a_routed_kind_resolves_to_its_connection() -> None:
    reg = registry()
    await reg.set_route(route(table="chat"))
    store = await reg.store_for("chat_store", "t_a")
    assert (store.backend, store.label, store.kind, store.route.table_name) == (
        "memory", "memory (lab)", "chat_store", "chat"
    )


@pytest.mark.parametrize("connection", ["mem", "sq"])
@pytest.mark.parametrize("mode", ["saas", "enterprise", "system"])
async def test_a_lab_only_backend_is_refused_outside_lab(mode: str, connection: str) -> None:
    reg = registry(mode)
    err = await _err(reg.set_route(route(connection=connection)))
    assert (err.code, err.http_status) == ("routing.lab_backend_forbidden", 422)
    assert reg.routes() == []


async def test_a_lab_route_in_a_shared_table_is_refused_at_startup_and_on_use_outside_lab() -> None:
    table = MemoryItemStore()
    lab = registry("lab", table)
    for kind in RESOURCE_KINDS:
        await lab.set_route(route(kind, "ddb"))
    await lab.set_route(route("notes_store", "sq"))
    saas = registry("saas", table)
    await saas.load()
    with pytest.raises(RoutingError, match="notes_store: routed to lab-only backend 'sqlite'"):
        saas.check_startup()
    assert (await _err(saas.store_for("notes_store", "t_a"))).code == "notes_store.missing_route"


async def test_a_lab_only_tenant_override_is_refused_at_startup_outside_lab() -> None:
    table = MemoryItemStore()
    lab = registry("lab", table)
    for kind in RESOURCE_KINDS:
        await lab.set_route(route(kind, "cos"))
    await lab.set_route(route("chat_store", "mem", tenant_id="t_x"))
    saas = registry("saas", table)
    await saas.load()
    with pytest.raises(RoutingError, match="tenant t_x"):
        saas.check_startup()


async def test_startup_outside_lab_is_refused_while_a_required_kind_is_unrouted() -> None:
    reg = registry("saas")
    for kind in RESOURCE_KINDS:
        if kind != "event_spine":
            await reg.set_route(route(kind, "fs"))
    with pytest.raises(RoutingError, match="event_spine: no route"):
        reg.check_startup()
    await reg.set_route(route("event_spine", "fs"))
    reg.check_startup()


async def test_startup_outside_lab_is_refused_when_a_route_names_a_removed_connection() -> None:
    table = MemoryItemStore()
    first = registry("saas", table)
    for kind in RESOURCE_KINDS:
        await first.set_route(route(kind, "ddb"))
    without = {n: c for n, c in CONNECTIONS.items() if n != "ddb"}
    later = registry("saas", table, connections=without)
    await later.load()
    with pytest.raises(RoutingError, match="connection 'ddb' is not configured"):
        later.check_startup()
    err = await _err(later.store_for("chat_store", "t_a"))
    assert (err.code, err.http_status) == ("chat_store.route_misconfigured", 503)


def test_lab_starts_with_unrouted_kinds() -> None:
    registry("lab").check_startup()


async def test_a_tenant_override_beats_the_kind_route_for_that_tenant_only() -> None:
    reg = registry()
    await reg.set_route(route(connection="mem"))
    await reg.set_route(route(connection="mem2", tenant_id="t_vip"))
    vip = await reg.store_for("chat_store", "t_vip")
    other = await reg.store_for("chat_store", "t_other")
    assert (vip.route.connection, other.route.connection) == ("mem2", "mem")
    assert vip.inner is not other.inner


async def test_a_tenant_override_alone_leaves_other_tenants_unrouted() -> None:
    reg = registry()
    await reg.set_route(route(tenant_id="t_vip"))
    await reg.store_for("chat_store", "t_vip")
    with pytest.raises(NorthstarError, match="no backend route"):
        await reg.store_for("chat_store", "t_other")


async def test_diagnostics_list_unrouted_and_unreachable_kinds() -> None:
    reg = registry(required_kinds=("chat_store", "notes_store", "event_spine"))
    await reg.set_route(route())
    await reg.set_route(route("notes_store", "down"), probe=False)
    report = await reg.diagnostics()
    assert report["unrouted"] == ["event_spine"]
    assert report["unreachable"] == ["notes_store"]
    assert report["kinds"]["notes_store"]["error"] == "notes_store.backend_unavailable"
    assert report["kinds"]["chat_store"] == {
        "routed": True, "backend": "memory (lab)", "connection": "mem", "reachable": True
    }


async def test_an_unreachable_backend_answers_503_backend_unavailable_with_retry_after() -> None:
    reg = registry()
    await reg.set_route(route(connection="down"), probe=False)
    store = await reg.store_for("chat_store", "t_a")
    err = await _err(store.get("p", "k"))
    assert (err.code, err.http_status) == ("chat_store.backend_unavailable", 503)
    assert err.headers == {"Retry-After": "7"}


async def test_a_route_whose_backend_does_not_answer_is_503_and_not_stored() -> None:
    reg = registry()
    err = await _err(reg.set_route(route(connection="down")))
    assert (err.code, err.http_status) == ("routing.backend_unavailable", 503)
    assert reg.routes() == []


@pytest.mark.parametrize(
    ("bad", "code", "status"),
    [
        (route("nonsense_store"), "routing.unknown_resource_kind", 422),
        (route(connection="postgres"), "routing.unknown_connection", 422),
        (route(table="Chat"), "routing.invalid_params", 422),
        (route(table="chat\n"), "routing.invalid_params", 422),
        (route(table="../etc"), "routing.invalid_params", 422),
        (route(table="a" * 64), "routing.invalid_params", 422),
        (route(tenant_id="t_a\n"), "routing.invalid_params", 422),
        (route(options=RouteOptions(max_value_bytes=0)), "routing.invalid_params", 422),
        (route(options=RouteOptions(default_ttl_seconds=2**64)), "routing.invalid_params", 422),
        (route(connection="bad"), "routing.invalid_params", 422),
    ],
)
async def test_invalid_routes_are_refused_naming_the_field_and_nothing_is_stored(
    bad: Route, code: str, status: int
) -> None:
    reg = registry()
    err = await _err(reg.set_route(bad))
    assert (err.code, err.http_status) == (code, status)
    if code == "routing.invalid_params":
        assert err.details["field"] in {"table", "tenant_id", "options.max_value_bytes",
                                        "options.default_ttl_seconds", "busy_timeout_ms"}
    assert reg.routes() == []


@pytest.mark.parametrize(
    ("override", "why"),
    [
        (route(connection="open"), "deployment-wide"),
        (route("event_spine", "open", tenant_id="t_a"), "operator only"),
        (route("config_store", "open", tenant_id="t_a"), "operator only"),
        (route("budget_store", "open", tenant_id="t_a"), "operator only"),
        (route(connection="mem", tenant_id="t_a"), "not open to tenant overrides"),
        (route(connection="open", tenant_id="t_a", options=RouteOptions(max_value_bytes=10)), "options"),
    ],
)
async def test_a_tenant_admin_may_only_route_its_tenant_to_an_open_connection(
    override: Route, why: str
) -> None:
    reg = registry()
    err = await _err(reg.set_route(override, by_system=False))
    assert (err.code, err.http_status) == ("routing.override_forbidden", 403)
    assert why in err.message
    assert reg.routes() == []
    allowed = route(connection="open", tenant_id="t_a", table="mine")
    assert await reg.set_route(allowed, by_system=False) == 1
    assert (await reg.store_for("chat_store", "t_a")).route.table == "mine"


def test_protected_kinds_are_the_audit_trail_and_everything_the_gates_read() -> None:
    assert {"event_spine", "config_store", "firearms_policy_store", "strategy_policy_store",
            "budget_store", "strategy_lock_store"} == PROTECTED_KINDS


async def test_a_stale_expected_version_is_409_with_the_current_version() -> None:
    reg = registry()
    assert await reg.set_route(route()) == 1
    assert await reg.set_route(route(), expected_version=1) == 2
    err = await _err(reg.set_route(route(connection="mem2"), expected_version=1))
    assert (err.code, err.http_status) == ("routing.version_conflict", 409)
    assert err.details == {"current_version": 2}
    for huge in (2**63, 2**64, -1):
        err = await _err(reg.set_route(route(), expected_version=huge))
        assert (err.code, err.details["field"]) == ("routing.invalid_params", "expected_version")


async def test_routes_are_durable_across_a_new_registry_on_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    first_store = SqliteItemStore(path, namespace="routing", private=True)
    first = RoutingRegistry(first_store, Factory(), connections=CONNECTIONS, deployment_mode="lab")
    await first.set_route(route(connection="sq", table="chats"))
    await first.set_route(route(connection="mem", tenant_id="t_b"))
    await first_store.close()

    reopened = SqliteItemStore(path, namespace="routing", private=True)
    second = RoutingRegistry(reopened, Factory(), connections=CONNECTIONS, deployment_mode="lab")
    await second.load()
    assert [(r.resource_kind, r.connection, r.table, r.tenant_id, v) for r, v in second.routes()] == [
        ("chat_store", "sq", "chats", None, 1),
        ("chat_store", "mem", None, "t_b", 1),
    ]
    assert (await second.store_for("chat_store", "t_b")).backend == "memory"
    await reopened.close()


async def test_an_unreadable_stored_route_is_503_route_misconfigured_never_500() -> None:
    table = MemoryItemStore()
    reg = registry("lab", table, required_kinds=("chat_store",))
    await table.write("routing_registry", [Put("route#chat_store#*", b'{"resource_kind": 5}')])
    await reg.load()
    err = await _err(reg.store_for("chat_store", "t_a"))
    assert (err.code, err.http_status) == ("chat_store.route_misconfigured", 503)
    report = await reg.diagnostics()
    assert report["unreachable"] == ["chat_store"]
    saas = registry("saas", table, required_kinds=("chat_store",))
    await saas.load()
    with pytest.raises(RoutingError, match="stored route unreadable"):
        saas.check_startup()
    # the operator fixes it by setting the route again
    await reg.set_route(route())
    assert (await reg.store_for("chat_store", "t_a")).backend == "memory"


async def test_a_stored_route_records_the_data_layout_of_its_kind() -> None:
    table = MemoryItemStore()
    reg = registry("lab", table, required_kinds=("chat_store",))
    await reg.set_route(route())
    stored = await table.get("routing_registry", "route#chat_store#*")
    assert stored is not None
    assert msgspec.json.decode(stored.value)["layout"] == DATA_LAYOUTS["chat_store"]
    assert [r.layout for r, _ in reg.routes()] == [DATA_LAYOUTS["chat_store"]]


async def test_a_route_naming_another_layout_is_refused_and_nothing_is_stored() -> None:
    table = MemoryItemStore()
    reg = registry("lab", table, required_kinds=("chat_store",))
    other = DATA_LAYOUTS["chat_store"] + 1
    err = await _err(reg.set_route(route(layout=other)))
    assert (err.code, err.http_status, err.details["field"]) == ("routing.invalid_params", 422, "layout")
    assert await table.get("routing_registry", "route#chat_store#*") is None
    # naming the current layout is accepted
    await reg.set_route(route(layout=DATA_LAYOUTS["chat_store"]))
    assert (await reg.store_for("chat_store", "t_a")).backend == "memory"


async def test_a_route_stored_for_another_layout_is_not_served_and_stops_startup() -> None:
    table = MemoryItemStore()
    reg = registry("lab", table, required_kinds=("chat_store",))
    await reg.set_route(route())
    stored = await table.get("routing_registry", "route#chat_store#*")
    assert stored is not None
    body = msgspec.json.decode(stored.value)
    body["layout"] = DATA_LAYOUTS["chat_store"] + 1  # written by a build with another layout
    await table.write("routing_registry", [Put("route#chat_store#*", msgspec.json.encode(body), version=2)])
    await reg.load()
    err = await _err(reg.store_for("chat_store", "t_a"))
    assert (err.code, err.http_status) == ("chat_store.route_misconfigured", 503)
    assert "layout" in err.details["reason"]
    saas = registry("saas", table, required_kinds=("chat_store",))
    await saas.load()
    with pytest.raises(RoutingError, match="layout"):
        saas.check_startup()
    # a route stored before layouts were recorded is in the first layout
    del body["layout"]
    await table.write("routing_registry", [Put("route#chat_store#*", msgspec.json.encode(body), version=3)])
    await reg.load()
    assert DATA_LAYOUTS["chat_store"] == UNRECORDED_LAYOUT
    assert (await reg.store_for("chat_store", "t_a")).backend == "memory"


async def test_a_connection_whose_params_the_adapter_refuses_is_503_on_use_and_in_diagnostics() -> None:
    bad = {"sq": Connection(name="sq", backend="sqlite", params={"path": "x.db", "synchronous": "bogus"})}
    table = MemoryItemStore()
    await table.write(
        "routing_registry", [Put("route#chat_store#*", b'{"resource_kind":"chat_store","connection":"sq"}')]
    )
    reg = RoutingRegistry(table, AdapterFactory(), connections=bad, deployment_mode="lab",
                          required_kinds=("chat_store",))
    await reg.load()
    err = await _err(reg.store_for("chat_store", "t_a"))
    assert (err.code, err.http_status) == ("chat_store.route_misconfigured", 503)
    assert "synchronous" in err.message
    report = await reg.diagnostics()
    assert report["kinds"]["chat_store"]["error"] == "chat_store.route_misconfigured"
    err = await _err(reg.set_route(route(connection="sq")))
    assert (err.code, err.details["field"]) == ("routing.invalid_params", "synchronous")


async def test_a_replaced_store_is_closed_after_the_grace_period() -> None:
    clock = [0.0]
    factory = Factory()
    reg = RoutingRegistry(MemoryItemStore(), factory, connections=CONNECTIONS, deployment_mode="lab",
                          monotonic=lambda: clock[0], refresh_seconds=1.0)
    await reg.set_route(route(table="one"))
    first = (await reg.store_for("chat_store", "t_a")).inner
    await reg.set_route(route(table="two"))
    assert not getattr(first, "was_closed", False)  # requests in flight may still use it
    clock[0] += RETIRE_GRACE_SECONDS + 1
    second = (await reg.store_for("chat_store", "t_a")).inner
    assert getattr(first, "was_closed", False) and not getattr(second, "was_closed", False)
    # a probe of a route that was never stored does not keep its store open either
    await _err(reg.set_route(route(table="three"), expected_version=99))
    clock[0] += RETIRE_GRACE_SECONDS + 1
    await reg.load()
    clock[0] += RETIRE_GRACE_SECONDS + 1
    await reg.load()
    assert getattr(factory.opened[("mem", "three")], "was_closed", False)


async def test_registries_sharing_a_table_converge_after_their_refresh_interval() -> None:
    table = MemoryItemStore()
    clock = [0.0]
    reader = registry("lab", table, monotonic=lambda: clock[0], refresh_seconds=5.0)
    await reader.load()
    await registry("lab", table).set_route(route())
    with pytest.raises(NorthstarError):
        await reader.store_for("chat_store")
    clock[0] += 5.0
    assert (await reader.store_for("chat_store")).backend == "memory"


async def test_kinds_routed_to_one_connection_and_table_share_one_opened_store() -> None:
    factory = Factory()
    reg = RoutingRegistry(MemoryItemStore(), factory, connections=CONNECTIONS, deployment_mode="lab")
    await reg.set_route(route(table="one"))
    await reg.set_route(route("notes_store", table="one"))
    a = await reg.store_for("chat_store", "t_a")
    b = await reg.store_for("notes_store", "t_b")
    assert a.inner is b.inner and len(factory.opened) == 1


async def test_an_unreachable_registry_store_keeps_serving_the_routes_it_loaded() -> None:
    table = MemoryItemStore()
    clock = [0.0]
    reg = registry("lab", table, monotonic=lambda: clock[0], refresh_seconds=1.0)
    await reg.set_route(route(table="chat"))

    async def down(*args: object, **kwargs: object) -> list[Item]:
        raise BackendUnavailable("connection refused", retry_after=3)

    table.query = down  # type: ignore[method-assign]
    clock[0] += 5.0
    # the refresh fails, the known route still resolves: the kind reports its own backend
    assert (await reg.store_for("chat_store")).route.table == "chat"
    fresh = registry("lab", table)
    err = await _err(fresh.store_for("chat_store"))
    assert err.code == "routing_registry.backend_unavailable"
