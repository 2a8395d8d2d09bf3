"""``/config/{scope}`` through HTTP with lab tokens: read (ETag), create, versioned update,
stale write, permissions per scope, foreign tenant, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_core.engines import Engines
from northstar_core.identity import RequestContext

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Litestar]
GESTURES = "canvas.gestures_enabled"


def admin(auth: Auth, **kw: Any) -> dict[str, str]:
    return auth(roles=("admin",), **kw)


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    details: dict[str, Any] = error["details"]
    return details


async def test_an_unwritten_scope_reads_as_version_0(client: Client, auth: Auth) -> None:
    resp = await client.get("/config/tenant", headers=auth())
    assert resp.status_code == 200
    assert (resp.json()["values"], resp.json()["version"], resp.headers["etag"]) == ({}, 0, '"0"')


async def test_create_read_and_versioned_update(client: Client, auth: Auth) -> None:
    resp = await client.put("/config/tenant", json={"values": {GESTURES: False}}, headers=admin(auth))
    assert (resp.status_code, resp.json()["version"]) == (201, 1)
    resp = await client.put(
        "/config/tenant",
        json={"values": {GESTURES: True, "tool_canvas_mode": "read_only"}},
        headers=admin(auth, headers={"If-Match": '"1"'}),
    )
    assert (resp.status_code, resp.json()["version"], resp.headers["etag"]) == (200, 2, '"2"')
    read = (await client.get("/config/tenant", headers=auth())).json()
    assert read["values"] == {GESTURES: True, "tool_canvas_mode": "read_only"}


async def test_a_stale_write_is_409_with_the_current_version(client: Client, auth: Auth) -> None:
    await client.put("/config/tenant", json={"values": {"a": 1}}, headers=admin(auth))
    await client.put("/config/tenant", json={"values": {"a": 2}, "expected_version": 1}, headers=admin(auth))
    resp = await client.put(
        "/config/tenant", json={"values": {"a": 3}, "expected_version": 1}, headers=admin(auth)
    )
    assert assert_envelope(resp, 409, "config.version_conflict")["current_version"] == 2
    resp = await client.put("/config/tenant", json={"values": {"a": 3}}, headers=admin(auth))
    assert assert_envelope(resp, 409, "config.version_conflict")["current_version"] == 2
    assert (await client.get("/config/tenant", headers=auth())).json()["values"] == {"a": 2}


async def test_surface_scope_by_query_or_header(client: Client, auth: Auth) -> None:
    resp = await client.put(
        "/config/surface?surface_id=canvas", json={"values": {GESTURES: False}}, headers=admin(auth)
    )
    assert (resp.status_code, resp.json()["surface_id"]) == (201, "canvas")
    by_header = await client.get("/config/surface", headers=auth(headers={"X-Surface-Id": "canvas"}))
    assert by_header.json()["values"] == {GESTURES: False}
    other = await client.get("/config/surface?surface_id=chat", headers=auth())
    assert other.json()["version"] == 0


async def test_who_may_write_which_scope(client: Client, auth: Auth) -> None:
    body = {"values": {GESTURES: False}}
    assert_envelope(await client.put("/config/tenant", json=body, headers=auth()), 403, "auth.forbidden_role")
    assert_envelope(
        await client.put("/config/system", json=body, headers=admin(auth)), 403, "auth.system_required"
    )
    resp = await client.put("/config/system", json=body, headers=auth(system=True))
    assert resp.status_code == 201, resp.text
    assert (await client.get("/config/system", headers=auth(tenant_id="t_beta"))).json()["values"] == body[
        "values"
    ]


async def test_a_foreign_tenant_never_sees_tenant_config(client: Client, auth: Auth) -> None:
    await client.put("/config/tenant", json={"values": {"secret": 1}}, headers=admin(auth))
    resp = await client.get("/config/tenant", headers=auth(tenant_id="t_beta"))
    assert (resp.json()["values"], resp.json()["version"]) == ({}, 0)
    # and a write there is a create in that tenant, not a conflict with ours
    resp = await client.put(
        "/config/tenant", json={"values": {"x": 1}}, headers=admin(auth, tenant_id="t_beta")
    )
    assert resp.status_code == 201


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/config/galaxy", {"values": {}}, 404, "config.unknown_scope"),
        ("/config/surface", {"values": {}}, 422, "config.invalid_request"),
        ("/config/tenant", {"values": {GESTURES: "on"}}, 422, "config.invalid_toggle"),
        ("/config/tenant", {"values": {"tool_canvas_mode": "sideways"}}, 422, "config.invalid_toggle"),
        ("/config/tenant", {"values": {"Not A Key": 1}}, 422, "config.invalid_toggle"),
        ("/config/tenant", {"values": []}, 422, "request.validation_failed"),
        ("/config/tenant", {"vals": {}}, 422, "request.validation_failed"),
        ("/config/tenant", {"values": {}, "expected_version": -1}, 422, "config.invalid_request"),
    ],
)
async def test_bad_input_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, path: str, body: Any, status: int, code: str
) -> None:
    assert_envelope(await client.put(path, json=body, headers=admin(auth)), status, code)
    assert (await client.get("/config/tenant", headers=auth())).json()["version"] == 0


async def test_the_library_toggle_sees_what_http_wrote(client: Client, auth: Auth, engines: Engines) -> None:
    await client.put("/config/tenant", json={"values": {GESTURES: False}}, headers=admin(auth))
    ctx = RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice", surface_id="canvas")
    assert await engines.config.toggle(ctx, GESTURES, default=True) is False
