"""POST /actions/execute: handlers behind the gate chain, usage on the ledger, envelopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.safety.actions import ActionOutcome, ActionRequest

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]

REQUEST: dict[str, Any] = {
    "action_name": "send_email",
    "subject_type": "agent",
    "subject_id": "a1",
    "params": {"to": "x"},
    "estimated_cost": 1.5,
}


def ctx(tenant: str = "t_alpha") -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u_alice", roles=("member",))


def register(engines: Engines, calls: list[ActionRequest]) -> None:
    async def handler(ctx: RequestContext, request: ActionRequest) -> Any:
        calls.append(request)
        return ActionOutcome(result={"sent": request.params["to"]}, cost=1.25)

    engines.actions.register("send_email", handler)


async def test_allowed_action_runs_and_records_usage_and_decision(
    client: Client, auth: Auth, engines: Engines
) -> None:
    calls: list[ActionRequest] = []
    register(engines, calls)
    r = await client.post("/actions/execute", json=REQUEST, headers=auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == {"sent": "x"} and body["decision"]["decision"] == "allow"
    assert body["usage"]["amount"] == 1.25 and len(calls) == 1
    events = (await engines.spine.list(ctx())).items
    assert [e.event_type for e in events] == ["safety", "budget", "analytics"]
    report = events[-1].payload["properties"]
    assert (events[-1].payload["name"], report["outcome"], report["cost"], report["handler"]) == (
        "action.executed",
        "ok",
        1.25,
        "python",
    )
    assert report["decision_event_id"] == body["decision"]["event_id"] and report["latency_ms"] >= 0
    stream = (await engines.timeline.list(ctx(), "agent:a1")).items
    assert [e.type for e in stream] == ["safety_decision"]
    usage = (await client.get("/budget/usage", headers=auth())).json()
    assert usage["total"] == 1.25


async def test_blocked_action_is_403_with_gate_recorded_and_never_runs(
    client: Client, auth: Auth, engines: Engines
) -> None:
    calls: list[ActionRequest] = []
    register(engines, calls)
    admin = auth(sub="u_admin", roles=("admin",))
    r = await client.put(
        "/kill-switches", json={"actions": ["send_email"], "expected_version": 0}, headers=admin
    )
    assert r.status_code == 201
    r = await client.post("/actions/execute", json=REQUEST, headers=auth())
    error = r.json()["error"]
    assert (r.status_code, error["http_status"], error["gate"], error["code"]) == (
        403,
        403,
        "kill_switch",
        "gate.kill_switch.action_blocked",
    )
    assert calls == []
    safety = (await engines.spine.list(ctx(), event_type="safety")).items
    assert [e.payload["decision"] for e in safety] == ["deny"]
    assert safety[0].event_id == error["details"]["event_id"]
    assert (await engines.spine.list(ctx(), event_type="budget")).items == []
    stream = (await engines.timeline.list(ctx(), "agent:a1")).items
    assert [(e.type, e.data["code"]) for e in stream] == [
        ("safety_decision", "gate.kill_switch.action_blocked")
    ]


async def test_unknown_action_is_404(client: Client, auth: Auth) -> None:
    r = await client.post("/actions/execute", json={**REQUEST, "action_name": "nope"}, headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (404, "actions.unknown_action")


async def test_bad_requests_are_422_and_record_nothing(client: Client, auth: Auth, engines: Engines) -> None:
    register(engines, [])
    for bad in (
        {k: v for k, v in REQUEST.items() if k != "subject_id"},
        {**REQUEST, "estimated_cost": -1},
        {**REQUEST, "params": [1]},
        {**REQUEST, "subject_type": "has space"},
        {**REQUEST, "surprise": 1},
    ):
        r = await client.post("/actions/execute", json=bad, headers=auth())
        assert (r.status_code, r.json()["error"]["code"]) == (422, "actions.invalid_request"), r.text
    assert (await engines.spine.list(ctx())).items == []


async def test_viewers_cannot_execute(client: Client, auth: Auth, engines: Engines) -> None:
    register(engines, [])
    r = await client.post("/actions/execute", json=REQUEST, headers=auth(roles=("viewer",)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "auth.forbidden_role")


async def test_a_failing_handler_is_502_and_audited(client: Client, auth: Auth, engines: Engines) -> None:
    async def broken(ctx: RequestContext, request: ActionRequest) -> Any:
        raise RuntimeError("boom")

    engines.actions.register("send_email", broken)
    r = await client.post("/actions/execute", json=REQUEST, headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (502, "actions.handler_failed")
    audit = (await engines.spine.list(ctx(), event_type="audit")).items
    assert audit[-1].payload["action"] == "action_failed"
