"""``/memory`` through HTTP with lab tokens: set, get one/all, versions, delete, isolation by
tenant/user/project/session, route default TTL, bad input, and a short real TTL on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_http.bootstrap import create_app
from tests.conftest import make_settings

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Litestar]


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    details: dict[str, Any] = error["details"]
    return details


async def _set(client: Client, auth: Auth, key: str, value: Any, **kw: Any) -> Any:
    headers = kw.pop("headers", None) or auth()
    return await client.post(
        "/memory", json={"session_id": "s1", "key": key, "value": value, **kw}, headers=headers
    )


async def test_set_then_get_one_and_all(client: Client, auth: Auth) -> None:
    resp = await _set(client, auth, "name", {"first": "Ada"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["version"], resp.json()["expires_at"]) == (1, None)
    await _set(client, auth, "lang", "en")
    one = await client.get("/memory", params={"session_id": "s1", "key": "name"}, headers=auth())
    assert one.json()["value"] == {"first": "Ada"}
    assert one.json()["user_id"] == "u_alice"
    everything = (await client.get("/memory", params={"session_id": "s1"}, headers=auth())).json()
    assert [(v["key"], v["value"]) for v in everything["items"]] == [
        ("lang", "en"),
        ("name", {"first": "Ada"}),
    ]


async def test_setting_again_replaces_and_bumps_the_version(client: Client, auth: Auth) -> None:
    await _set(client, auth, "k", 1)
    resp = await _set(client, auth, "k", 2)
    assert (resp.json()["version"], resp.json()["value"]) == (2, 2)


async def test_delete_one_key_then_the_whole_session(client: Client, auth: Auth) -> None:
    for key in ("a", "b", "c"):
        await _set(client, auth, key, key)
    resp = await client.delete("/memory", params={"session_id": "s1", "key": "a"}, headers=auth())
    assert (resp.status_code, resp.json()["deleted"]) == (200, 1)
    resp = await client.get("/memory", params={"session_id": "s1", "key": "a"}, headers=auth())
    assert_envelope(resp, 404, "memory.not_found")
    resp = await client.delete("/memory", params={"session_id": "s1"}, headers=auth())
    assert resp.json()["deleted"] == 2
    assert (await client.get("/memory", params={"session_id": "s1"}, headers=auth())).json()["items"] == []
    resp = await client.delete("/memory", params={"session_id": "s1", "key": "a"}, headers=auth())
    assert_envelope(resp, 404, "memory.not_found")


@pytest.mark.parametrize(
    "other",
    [
        {"tenant_id": "t_beta"},
        {"sub": "u_bob"},
        {"headers": {"X-Project-Id": "p2"}},
    ],
)
async def test_another_tenant_user_or_project_never_sees_the_values(
    client: Client, auth: Auth, other: Any
) -> None:
    await _set(client, auth, "secret", "mine")
    headers = auth(**other)
    resp = await client.get("/memory", params={"session_id": "s1", "key": "secret"}, headers=headers)
    assert_envelope(resp, 404, "memory.not_found")
    assert (await client.get("/memory", params={"session_id": "s1"}, headers=headers)).json()["items"] == []


async def test_another_session_is_separate(client: Client, auth: Auth) -> None:
    await _set(client, auth, "k", 1)
    assert (await client.get("/memory", params={"session_id": "s2"}, headers=auth())).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"key": "k", "value": 1}, "request.validation_failed"),
        ({"session_id": "s1", "value": 1}, "request.validation_failed"),
        ({"session_id": "s1", "key": "k", "value": 1, "ttl_seconds": -1}, "memory.invalid_request"),
        ({"session_id": "s1", "key": "k", "value": 1, "ttl_seconds": 0}, "memory.invalid_request"),
        ({"session_id": "s1", "key": "k", "value": 1, "ttl_seconds": "soon"}, "request.validation_failed"),
        ({"session_id": "s1", "key": "bad key", "value": 1}, "memory.invalid_id"),
        ({"session_id": "s 1", "key": "k", "value": 1}, "memory.invalid_id"),
        ({"session_id": "s1", "key": "k", "value": 1, "user_id": "u_bob"}, "request.validation_failed"),
    ],
)
async def test_bad_input_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, body: dict[str, Any], code: str
) -> None:
    assert_envelope(await client.post("/memory", json=body, headers=auth()), 422, code)
    assert (await client.get("/memory", params={"session_id": "s1"}, headers=auth())).json()["items"] == []


async def test_get_without_session_id_is_an_envelope(client: Client, auth: Auth) -> None:
    resp = await client.get("/memory", headers=auth())
    assert resp.status_code == 400 or resp.status_code == 422
    assert resp.json()["error"]["http_status"] == resp.status_code


async def test_a_viewer_cannot_set(client: Client, auth: Auth) -> None:
    assert_envelope(
        await _set(client, auth, "k", 1, headers=auth(roles=("viewer",))), 403, "auth.forbidden_role"
    )


# --- TTL ----------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_app(tmp_path: Any) -> Litestar:
    settings = make_settings(tmp_path)
    connections = {**settings.connections, "sq": {"backend": "sqlite", "path": str(tmp_path / "ttl.db")}}
    routes = [
        {"resource_kind": "memory_store", "connection": "sq", "options": {"default_ttl_seconds": 3600}},
    ]
    return create_app(make_settings(tmp_path, connections=connections, routes=routes))


@pytest.fixture
async def sqlite_client(sqlite_app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=sqlite_app) as c:
        yield c


async def test_a_short_real_ttl_on_sqlite_hides_the_value(sqlite_client: Client, auth: Auth) -> None:
    resp = await _set(sqlite_client, auth, "brief", "x", ttl_seconds=0.3)
    assert resp.headers["x-northstar-backend"] == "sqlite (lab)"
    assert resp.json()["expires_at"] is not None
    await _set(sqlite_client, auth, "durable", "y", ttl_seconds=3600)
    await asyncio.sleep(0.6)
    resp = await sqlite_client.get("/memory", params={"session_id": "s1", "key": "brief"}, headers=auth())
    assert_envelope(resp, 404, "memory.not_found")
    items = (await sqlite_client.get("/memory", params={"session_id": "s1"}, headers=auth())).json()["items"]
    assert [v["key"] for v in items] == ["durable"]


async def test_the_route_default_ttl_applies_when_the_request_names_none(
    sqlite_client: Client, auth: Auth
) -> None:
    resp = await _set(sqlite_client, auth, "k", 1)
    assert resp.json()["ttl_seconds"] == 3600
    assert resp.json()["expires_at"] is not None


async def test_without_ttl_anywhere_a_value_is_durable(client: Client, auth: Auth) -> None:
    resp = await _set(client, auth, "k", 1)
    assert (resp.json()["ttl_seconds"], resp.json()["expires_at"]) == (None, None)
