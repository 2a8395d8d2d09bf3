"""``/analytics/events`` through HTTP with lab tokens: accepted events are in the analytics
store and on the spine; bad input is an envelope and writes neither; tenants are isolated."""

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
ALICE = RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice")


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    details: dict[str, Any] = error["details"]
    return details


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "page_view", "page": "/pricing"},
        {"kind": "click", "target": "button#buy", "properties": {"x": 10}},
        {"kind": "custom", "name": "canvas.zoom", "occurred_at": "2026-11-21T10:00:00Z"},
    ],
)
async def test_an_event_is_stored_and_lands_on_the_spine(
    client: Client, auth: Auth, engines: Engines, body: dict[str, Any]
) -> None:
    resp = await client.post("/analytics/events", json=body, headers=auth(headers={"X-Surface-Id": "chat"}))
    assert resp.status_code == 201, resp.text
    stored = resp.json()
    assert (stored["kind"], stored["surface_id"], stored["user_id"]) == (body["kind"], "chat", "u_alice")
    listed = (await client.get("/analytics/events", headers=auth())).json()
    assert [e["event_id"] for e in listed["items"]] == [stored["event_id"]]
    spine = await engines.spine.list(ALICE, event_type="analytics")
    assert [(e.event_id, e.event_type, e.source) for e in spine.items] == [
        (stored["event_id"], "analytics", "ui")
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "page_view"},
        {"kind": "click", "page": "/"},
        {"kind": "nonsense"},
        {"kind": "custom", "name": "UPPER"},
        {"kind": "page_view", "page": "/", "user_id": "u_bob"},
        {"kind": "page_view", "page": "/", "occurred_at": "not a time"},
        [],
    ],
)
async def test_bad_input_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, engines: Engines, body: Any
) -> None:
    resp = await client.post("/analytics/events", json=body, headers=auth())
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] in ("request.validation_failed", "analytics.invalid_event")
    assert (await client.get("/analytics/events", headers=auth())).json()["items"] == []
    assert (await engines.spine.list(ALICE, event_type="analytics")).items == []


async def test_a_foreign_tenant_never_sees_events(client: Client, auth: Auth) -> None:
    await client.post("/analytics/events", json={"kind": "page_view", "page": "/a"}, headers=auth())
    await client.post("/analytics/events", json={"kind": "page_view", "page": "/b"}, headers=auth())
    page = (await client.get("/analytics/events", params={"limit": 1}, headers=auth())).json()
    assert page["has_more"]
    other = auth(tenant_id="t_beta")
    assert (await client.get("/analytics/events", headers=other)).json()["items"] == []
    resp = await client.get("/analytics/events", params={"cursor": page["next_cursor"]}, headers=other)
    assert_envelope(resp, 410, "analytics.cursor_invalid")
    rest = (
        await client.get("/analytics/events", params={"cursor": page["next_cursor"]}, headers=auth())
    ).json()
    assert [e["page"] for e in rest["items"]] == ["/b"] and not rest["has_more"]


async def test_a_retried_event_with_the_same_key_is_stored_and_on_the_spine_once(
    client: Client, auth: Auth, engines: Engines
) -> None:
    body = {"kind": "click", "target": "button#buy", "idempotency_key": "click-1"}
    first = await client.post("/analytics/events", json=body, headers=auth())
    again = await client.post("/analytics/events", json=body, headers=auth())
    assert first.status_code == 201, first.text
    assert again.json()["event_id"] == first.json()["event_id"]
    listed = (await client.get("/analytics/events", headers=auth())).json()
    assert [e["event_id"] for e in listed["items"]] == [first.json()["event_id"]]
    spine_events = (await engines.spine.list(ALICE, event_type="analytics")).items
    assert [e.event_id for e in spine_events] == [first.json()["event_id"]]
    mismatch = await client.post("/analytics/events", json={**body, "target": "other"}, headers=auth())
    assert_envelope(mismatch, 422, "event_spine.idempotency_mismatch")
