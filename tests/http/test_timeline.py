"""The realtime timeline over HTTP: append (idempotent), list with cursors, isolation, envelopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]


async def test_append_then_list_in_pages_with_cursors(client: Client, auth: Auth) -> None:
    h = auth(headers={"X-Run-Id": "run1"})
    ids = []
    for i in range(5):
        r = await client.post(
            "/realtime/timeline/s1/append", json={"type": "note", "data": {"i": i}}, headers=h
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["seq"], body["type"], body["run_id"], body["actor_id"]) == (
            i + 1,
            "note",
            "run1",
            "u_alice",
        )
        ids.append(body["event_id"])
    page = (await client.get("/realtime/timeline/s1/list", params={"limit": 2}, headers=h)).json()
    assert [e["event_id"] for e in page["items"]] == ids[:2] and page["has_more"]
    rest = (
        await client.get("/realtime/timeline/s1/list", params={"cursor": page["next_cursor"]}, headers=h)
    ).json()
    assert [e["data"]["i"] for e in rest["items"]] == [2, 3, 4] and not rest["has_more"]


async def test_append_with_same_key_returns_the_first_event(client: Client, auth: Auth) -> None:
    h = auth()
    body = {"type": "note", "data": {"x": 1}, "idempotency_key": "k1"}
    first = await client.post("/realtime/timeline/s1/append", json=body, headers=h)
    again = await client.post("/realtime/timeline/s1/append", json=body, headers=h)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event_id"] == first.json()["event_id"] and again.json()["replayed"] is True
    r = await client.post("/realtime/timeline/s1/append", json={**body, "data": {"x": 2}}, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "event_stream.idempotency_mismatch")
    assert len((await client.get("/realtime/timeline/s1/list", headers=h)).json()["items"]) == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/realtime/timeline/s1/append", {"type": "Bad Type"}, 422, "event_stream.invalid_event_type"),
        (
            "/realtime/timeline/canvas:c1/append",
            {"type": "op_committed"},
            403,
            "event_stream.reserved_stream",
        ),
        (
            "/realtime/timeline/s1/append",
            {"type": "note", "data": {"b": "x" * 70_000}},
            413,
            "event_stream.event_too_large",
        ),
        (
            "/realtime/timeline/s1/append",
            {"type": "note", "idempotency_key": "bad key"},
            422,
            "event_stream.invalid_id",
        ),
    ],
)
async def test_bad_append_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    h = auth()
    r = await client.post(path, json=body, headers=h)
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["http_status"]) == (
        status,
        code,
        status,
    )
    assert (await client.get("/realtime/timeline/s1/list", headers=h)).json()["items"] == []


async def test_malformed_body_and_viewer_are_refused(client: Client, auth: Auth) -> None:
    r = await client.post(
        "/realtime/timeline/s1/append", content=b"{", headers={**auth(), "Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500 and r.json()["error"]["http_status"] == r.status_code
    r = await client.post(
        "/realtime/timeline/s1/append", json={"type": "note"}, headers=auth(roles=("viewer",))
    )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "auth.forbidden_role")
    r = await client.get("/realtime/timeline/s1/list", params={"limit": 0}, headers=auth())
    assert 400 <= r.status_code < 500 and "error" in r.json()


async def test_streams_and_cursors_never_cross_tenants_or_streams(client: Client, auth: Auth) -> None:
    a, b = auth("t_alpha"), auth("t_beta")
    r = await client.post(
        "/realtime/timeline/s1/append", json={"type": "note", "data": {"secret": 1}}, headers=a
    )
    cursor = r.json()["event_id"]
    assert (await client.get("/realtime/timeline/s1/list", headers=b)).json()["items"] == []
    r = await client.get("/realtime/timeline/s1/list", params={"cursor": cursor}, headers=b)
    assert (r.status_code, r.json()["error"]["code"]) == (410, "event_stream.cursor_invalid")
    assert r.json()["error"]["details"]["cursor"] == cursor
    r = await client.get("/realtime/timeline/s2/list", params={"cursor": cursor}, headers=a)
    assert r.status_code == 410


async def test_safety_decisions_of_canvas_commands_are_readable_on_the_canvas_timeline(
    client: Client, auth: Auth
) -> None:
    h = auth()
    body = {"base_rev": 0, "ops": [{"op": "create", "atom_id": "a", "kind": "box"}], "idempotency_key": "k"}
    assert (await client.post("/canvas/c1/commands", json=body, headers=h)).status_code == 201
    items = (await client.get("/realtime/timeline/canvas:c1/list", headers=h)).json()["items"]
    assert [e["type"] for e in items] == ["safety_decision", "op_committed"]
    assert items[0]["data"]["action_name"] == "canvas_command"
