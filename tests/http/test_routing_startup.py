"""Routing: startup refusal outside lab, 503 for unrouted kinds in lab, the routing endpoints."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

from northstar_adapters import AdapterFactory, memory
from northstar_adapters.compose import build_registry
from northstar_adapters.config import ConfigError, finalize
from northstar_core.routing import Connection, Route, RoutingError, RoutingRegistry, Target
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings


def _saas(tmp_path, name: str, **overrides):
    """saas settings whose registry is the memory store ``name`` (no cloud needed to refuse)."""
    connections = {
        "reg": {"backend": "memory", "name": name},
        "main": {"backend": "dynamodb", "region": "eu-west-1"},
        **overrides.pop("connections", {}),
    }
    return make_settings(
        tmp_path, mode="saas", connections=connections, registry={"connection": "reg"},
        jwt={"hs256_secret": "x" * 32, "audience": "northstar"}, **overrides,
    )


async def test_saas_with_a_kind_routed_to_sqlite_refuses_to_start(tmp_path) -> None:
    name = f"reg-{uuid.uuid4().hex}"
    # a lab run left a sqlite route in the shared registry store
    lab_store = memory.open_store(
        Target(resource_kind="routing_registry", backend="memory", params={"name": name},
               table="routing_registry")
    )
    lab_conns = {"sq": Connection(name="sq", backend="sqlite", params={"path": str(tmp_path / "x.db")})}
    lab = RoutingRegistry(lab_store, AdapterFactory(), connections=lab_conns, deployment_mode="lab")
    await lab.set_route(Route(resource_kind="chat_store", connection="sq"))
    sq = {"backend": "sqlite", "path": str(tmp_path / "x.db")}
    settings = _saas(tmp_path, name, connections={"sq": sq})
    with pytest.raises(RoutingError) as err:
        await build_registry(finalize(settings))
    message = str(err.value)
    assert "refusing to start in mode 'saas'" in message
    assert "chat_store: routed to lab-only backend 'sqlite'" in message


async def test_saas_configured_with_a_sqlite_route_refuses_to_start(tmp_path) -> None:
    settings = _saas(
        tmp_path, uuid.uuid4().hex,
        connections={"sq": {"backend": "sqlite", "path": str(tmp_path / "x.db")}},
        routes=[{"resource_kind": "chat_store", "connection": "sq"}],
    )
    with pytest.raises(RoutingError) as err:
        await build_registry(finalize(settings))
    assert "configured route for chat_store" in str(err.value)
    assert "lab" in str(err.value)


async def test_saas_with_a_required_kind_unrouted_refuses_to_start(tmp_path) -> None:
    settings = _saas(tmp_path, uuid.uuid4().hex)
    with pytest.raises(RoutingError) as err:
        await build_registry(finalize(settings))
    assert "chat_store: no route" in str(err.value)
    assert "event_spine: no route" in str(err.value)


def test_outside_lab_secrets_and_registry_must_be_configured(tmp_path) -> None:
    settings = make_settings(tmp_path, mode="enterprise", cursor_secret=None, registry=None, jwt={})
    with pytest.raises(ConfigError) as err:
        finalize(settings)
    for what in ("cursor_secret", "jwt", "registry"):
        assert what in str(err.value)


@pytest.fixture
async def partial_lab(tmp_path):
    settings = make_settings(
        tmp_path,
        lab_route_all=False,
        routes=[{"resource_kind": "event_spine", "connection": "mem"}],
    )
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def test_lab_unrouted_kind_answers_503_missing_route(partial_lab, auth) -> None:
    r = await partial_lab.post(
        "/chat/threads/th_1/messages", json={"role": "user", "content": "x"}, headers=auth()
    )
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "chat_store.missing_route"


async def test_readyz_is_503_while_required_kinds_are_unrouted(partial_lab, auth) -> None:
    r = await partial_lab.get("/readyz", headers=auth(system=True))  # details: system tokens only
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "routing.not_ready" and "chat_store" in err["details"]["unrouted"]
    assert "event_spine" not in err["details"]["unrouted"]


async def test_diagnostics_lists_unrouted_kinds(partial_lab, auth) -> None:
    report = (await partial_lab.get("/routing/diagnostics", headers=auth())).json()
    assert "chat_store" in report["unrouted"]
    assert report["kinds"]["event_spine"]["routed"] is True


@pytest.fixture
def app(tmp_path):
    # one memory connection open to tenant overrides besides the deployment's own
    settings = make_settings(tmp_path)
    connections = {
        **settings.connections,
        "tenant_mem": {"backend": "memory", "name": uuid.uuid4().hex, "tenant_overrides": True},
    }
    return create_app(make_settings(tmp_path, connections=connections))


async def test_routes_need_admin_to_read_and_write(client, auth) -> None:
    assert (await client.get("/routing/routes", headers=auth())).status_code == 403
    r = await client.get("/routing/routes", headers=auth(roles=("admin",)))
    assert r.status_code == 200
    assert {x["resource_kind"] for x in r.json()["routes"]} >= {"chat_store", "event_spine"}
    route = {"resource_kind": "chat_store", "connection": "tenant_mem", "tenant_id": "t_alpha"}
    assert (await client.post("/routing/routes", json=route, headers=auth())).status_code == 403


async def test_tenant_admin_may_override_own_tenant_but_not_the_global_table(client, auth) -> None:
    admin = auth(roles=("admin",))
    own = {"resource_kind": "chat_store", "connection": "tenant_mem", "tenant_id": "t_alpha"}
    r = await client.post("/routing/routes", json=own, headers=admin)
    assert r.status_code == 200 and r.json()["version"] == 1
    assert r.json()["label"] == "memory (lab)"
    glob = {"resource_kind": "chat_store", "connection": "tenant_mem", "table": "shared"}
    r = await client.post("/routing/routes", json=glob, headers=admin)
    assert r.status_code == 403 and r.json()["error"]["code"] == "auth.system_required"
    r = await client.post("/routing/routes", json=glob, headers=auth(roles=("admin",), system=True))
    assert r.status_code == 200


async def test_per_tenant_override_moves_only_that_tenants_data(client, auth) -> None:
    admin = auth(roles=("admin",))
    own = {"resource_kind": "chat_store", "connection": "tenant_mem", "table": "dedicated",
           "tenant_id": "t_alpha"}
    before = {"role": "user", "content": "before"}
    await client.post("/chat/threads/th/messages", json=before, headers=auth())
    # the tenant's thread is in the shared table: moving it away would leave it behind
    r = await client.post("/routing/routes", json=own, headers=admin)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "routing.would_strand")
    r = await client.post("/routing/routes", json={**own, "force": True}, headers=admin)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "auth.system_required")
    assert len((await client.get("/chat/threads/th/messages", headers=auth())).json()["items"]) == 1
    # the system operator may force it: the tenant then reads its (empty) dedicated store
    operator = auth(system=True, roles=("admin",))
    forced = await client.post("/routing/routes", json={**own, "force": True}, headers=operator)
    assert forced.status_code == 200, forced.text
    r = await client.get("/chat/threads/th/messages", headers=auth())
    assert r.json()["items"] == []
    other = await client.get("/chat/threads/th/messages", headers=auth("t_gamma"))
    assert other.status_code == 200


async def test_route_writes_are_validated_and_versioned(client, auth) -> None:
    sysadmin = auth(roles=("admin",), system=True)
    bad = {"resource_kind": "chat_store", "connection": "oracle"}
    r = await client.post("/routing/routes", json=bad, headers=sysadmin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "routing.unknown_connection"
    bad_kind = {"resource_kind": "nonsense", "connection": "mem"}
    r = await client.post("/routing/routes", json=bad_kind, headers=sysadmin)
    assert r.json()["error"]["code"] == "routing.unknown_resource_kind"
    stale = {"resource_kind": "chat_store", "connection": "mem", "expected_version": 99}
    r = await client.post("/routing/routes", json=stale, headers=sysadmin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "routing.version_conflict"
