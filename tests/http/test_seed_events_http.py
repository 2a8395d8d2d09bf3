"""Seed behaviours over HTTP: agent audit events through /events/append, and strategy-lock
snapshots written through /tabular landing on the spine as ``strategy_lock`` events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]
RUN = {"X-Run-Id": "run1", "X-Step-Id": "step1"}


async def test_an_agent_token_appends_audit_with_source_agent(client: Client, auth: Auth) -> None:
    agent = auth(agent_id="ag_9", headers=RUN)
    body: dict[str, Any] = {"event_type": "audit", "source": "agent", "payload": {"action": "tool_called"}}
    r = await client.post("/events/append", json=body, headers=agent)
    assert r.status_code == 201, r.text
    assert (r.json()["source"], r.json()["payload"]) == (
        "agent",
        {"action": "tool_called", "agent_id": "ag_9"},
    )
    # the same body from a user token, or with another source, stays refused
    for headers, changed in (
        (auth(headers=RUN), {}),
        (agent, {"source": "ui"}),
        (agent, {"source": "system"}),
    ):
        r = await client.post("/events/append", json={**body, **changed}, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "event_spine.reserved_event_type"), r.text
    listed = (await client.get("/events/list", params={"event_type": "audit"}, headers=auth())).json()[
        "items"
    ]
    assert [(e["source"], e["payload"]["action"]) for e in listed] == [("agent", "tool_called")]


async def test_a_strategy_lock_snapshot_write_is_a_strategy_lock_event(client: Client, auth: Auth) -> None:
    h = auth(headers=RUN)
    r = await client.put(
        "/tabular/strategy_lock_snapshots/lock1", json={"json_blob": {"locked": True}}, headers=h
    )
    assert r.status_code in (200, 201), r.text
    r = await client.put("/tabular/flows/f1", json={"json_blob": {"steps": []}}, headers=h)
    assert r.status_code in (200, 201), r.text
    r = await client.delete("/tabular/strategy_lock_snapshots/lock1", headers={**h, "If-Match": '"1"'})
    assert r.status_code in (200, 204), r.text
    events = (await client.get("/events/list", params={"event_type": "strategy_lock"}, headers=h)).json()[
        "items"
    ]
    assert [(e["payload"]["action"], e["payload"]["id"], e["payload"]["version"]) for e in events] == [
        ("snapshot.written", "lock1", 1),
        ("snapshot.deleted", "lock1", 1),
    ]
    assert {e["source"] for e in events} == {"system"} and events[0]["run_id"] == "run1"
