"""The event spine over HTTP: append, replay by run, list, validation and isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]


async def test_append_then_replay_and_list(client: Client, auth: Auth) -> None:
    h = auth(headers={"X-Run-Id": "run7", "X-Step-Id": "st1"})
    ids = []
    for i in range(3):
        r = await client.post(
            "/events/append", json={"event_type": "rl", "source": "agent", "payload": {"i": i}}, headers=h
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["tenant_id"] == "t_alpha" and body["user_id"] == "u_alice" and body["run_id"] == "run7"
        assert body["route"].startswith("event_spine:")
        ids.append(body["event_id"])
    r = await client.get("/events/replay", params={"run_id": "run7", "limit": 2}, headers=h)
    page = r.json()
    assert [e["event_id"] for e in page["items"]] == ids[:2] and page["has_more"]
    r = await client.get(
        "/events/replay", params={"run_id": "run7", "cursor": page["next_cursor"]}, headers=h
    )
    assert [e["event_id"] for e in r.json()["items"]] == ids[2:]
    r = await client.get("/events/list", params={"event_type": "rl", "source": "agent"}, headers=h)
    assert [e["event_id"] for e in r.json()["items"]] == ids


async def test_missing_required_fields_are_422_envelopes_and_write_nothing(
    client: Client, auth: Auth
) -> None:
    h = auth()
    for body in ({"source": "ui", "run_id": "r", "step_id": "s"}, {"event_type": "rl", "source": "ui"}, [1]):
        r = await client.post("/events/append", json=body, headers=h)
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]["http_status"] == r.status_code
    r = await client.get("/events/list", headers=h)
    assert r.json()["items"] == []


async def test_viewers_cannot_append_and_clients_cannot_forge_safety_events(
    client: Client, auth: Auth
) -> None:
    body: dict[str, Any] = {"event_type": "rl", "source": "ui", "run_id": "r", "step_id": "s"}
    r = await client.post("/events/append", json=body, headers=auth(roles=("viewer",)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "auth.forbidden_role")
    r = await client.post("/events/append", json={**body, "event_type": "safety"}, headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (403, "event_spine.reserved_event_type")


async def test_replay_and_cursors_never_cross_tenants(client: Client, auth: Auth) -> None:
    body = {"event_type": "rl", "source": "ui", "run_id": "r1", "step_id": "s"}
    for _ in range(2):
        await client.post("/events/append", json=body, headers=auth("t_alpha"))
    page = (
        await client.get("/events/replay", params={"run_id": "r1", "limit": 1}, headers=auth("t_alpha"))
    ).json()
    r = await client.get("/events/replay", params={"run_id": "r1"}, headers=auth("t_beta"))
    assert r.json()["items"] == []
    r = await client.get("/events/list", headers=auth("t_beta"))
    assert r.json()["items"] == []
    r = await client.get(
        "/events/replay", params={"run_id": "r1", "cursor": page["next_cursor"]}, headers=auth("t_beta")
    )
    assert (r.status_code, r.json()["error"]["code"]) == (410, "event_spine.cursor_invalid")
    assert r.json()["error"]["details"]["cursor"] == page["next_cursor"]


async def test_replay_without_run_id_is_422(client: Client, auth: Auth) -> None:
    r = await client.get("/events/replay", headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (422, "event_spine.invalid_request")


async def test_bad_time_filter_is_422(client: Client, auth: Auth) -> None:
    r = await client.get("/events/list", params={"since": "yesterday"}, headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (422, "event_spine.invalid_request")
