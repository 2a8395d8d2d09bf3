"""Actions with an idempotency key: a retry never runs a handler again once it has run, and
never charges twice; failures release the key; a dead run's claim is taken over after its lease.
Also the dry run (``check``) and the analytics report of every execution."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.suite import make_registry
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.safety.actions import DEFAULT_LEASE_SECONDS, ActionOutcome, ActionRequest, HandlerFailed

REQUEST: dict[str, Any] = {
    "action_name": "fire",
    "subject_type": "agent",
    "subject_id": "a1",
    "estimated_cost": 2,
    "idempotency_key": "k1",
}


def ctx(user: str = "u1", **kw: Any) -> RequestContext:
    return RequestContext(tenant_id="t_x", mode="lab", user_id=user, roles=("member",), run_id="r1", **kw)


async def make_engines() -> Engines:
    return Engines(await make_registry(MemoryItemStore()), CursorCodec(b"a" * 32), ManualClock())


class Counting:
    """A handler that counts its calls and reports a cost."""

    def __init__(self, cost: float = 1.5) -> None:
        self.calls: list[ActionRequest] = []
        self.cost = cost

    async def __call__(self, ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
        self.calls.append(request)
        return ActionOutcome(result={"n": len(self.calls)}, cost=self.cost)


async def spine_types(engines: Engines, context: RequestContext | None = None) -> list[str]:
    return [e.event_type for e in (await engines.spine.list(context or ctx())).items]


async def test_a_retry_after_success_replays_without_running_or_charging_again() -> None:
    engines = await make_engines()
    handler = Counting()
    engines.actions.register("fire", handler)
    first = await engines.actions.execute(ctx(), REQUEST)
    second = await engines.actions.execute(ctx(), REQUEST)
    assert len(handler.calls) == 1 and handler.calls[0].idempotency_key == "k1"
    assert (first["replayed"], second["replayed"]) == (False, True)
    assert second["result"] == first["result"] == {"n": 1}
    assert second["usage"] == first["usage"] and second["decision"] == first["decision"]
    usage = await engines.budget.usage(ctx())
    assert (usage.total, len(usage.items)) == (1.5, 1)
    # one decision, one charge, one report: the replay wrote nothing
    assert await spine_types(engines) == ["safety", "budget", "analytics"]
    assert len((await engines.analytics.list(ctx())).items) == 1


async def test_the_same_key_with_another_payload_is_422_and_runs_nothing() -> None:
    engines = await make_engines()
    handler = Counting()
    engines.actions.register("fire", handler)
    await engines.actions.execute(ctx(), REQUEST)
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), {**REQUEST, "params": {"other": 1}})
    assert (info.value.http_status, info.value.code) == (422, "actions.idempotency_mismatch")
    assert len(handler.calls) == 1


async def test_keys_belong_to_their_user() -> None:
    engines = await make_engines()
    handler = Counting()
    engines.actions.register("fire", handler)
    await engines.actions.execute(ctx("u1"), REQUEST)
    other = await engines.actions.execute(ctx("u2"), REQUEST)
    assert other["replayed"] is False and len(handler.calls) == 2


async def test_a_request_while_the_first_still_runs_is_409_in_progress() -> None:
    engines = await make_engines()
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow(ctx: RequestContext, request: ActionRequest) -> Any:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return {"ok": True}

    engines.actions.register("fire", slow)
    first = asyncio.create_task(engines.actions.execute(ctx(), REQUEST))
    await started.wait()
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert (info.value.http_status, info.value.code) == (409, "actions.in_progress")
    assert int(info.value.headers["Retry-After"]) >= 1
    release.set()
    assert (await first)["result"] == {"ok": True}
    assert (await engines.actions.execute(ctx(), REQUEST))["replayed"] is True
    assert calls == 1


async def test_a_failed_handler_releases_the_key_and_charges_nothing() -> None:
    engines = await make_engines()
    attempts = 0

    async def flaky(ctx: RequestContext, request: ActionRequest) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise HandlerFailed("timeout", "too slow", timeout_seconds=1)
        return ActionOutcome(result="done", cost=3)

    engines.actions.register("fire", flaky)
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert (info.value.http_status, info.value.code) == (502, "actions.handler_failed")
    assert (info.value.details["reason"], info.value.details["timeout_seconds"]) == ("timeout", 1)
    assert (await engines.budget.usage(ctx())).items == []
    out = await engines.actions.execute(ctx(), REQUEST)
    assert (out["result"], out["replayed"], attempts) == ("done", False, 2)
    assert (await engines.budget.usage(ctx())).total == 3
    audit = [e for e in (await engines.spine.list(ctx(), event_type="audit")).items]
    assert [(a.payload["action"], a.payload["reason"]) for a in audit] == [("action_failed", "timeout")]
    reports = [
        e.payload["properties"] for e in (await engines.spine.list(ctx(), event_type="analytics")).items
    ]
    assert [(r["outcome"], r["cost"]) for r in reports] == [("failed", 0.0), ("ok", 3.0)]
    assert reports[0]["reason"] == "timeout"


async def test_a_run_whose_accounting_failed_is_finished_by_the_retry_not_run_again() -> None:
    engines = await make_engines()
    handler = Counting(cost=4)
    engines.actions.register("fire", handler)
    record = engines.budget.record
    failures = 1

    async def ledger_down_once(context: RequestContext, body: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise NorthstarError("budget_store.backend_unavailable", "down", 503)
        return await record(context, body)

    engines.budget.record = ledger_down_once  # type: ignore[method-assign]
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert info.value.code == "budget_store.backend_unavailable"
    out = await engines.actions.execute(ctx(), REQUEST)
    assert (out["result"], out["replayed"], len(handler.calls)) == ({"n": 1}, True, 1)
    assert (await engines.budget.usage(ctx())).total == 4
    again = await engines.actions.execute(ctx(), REQUEST)
    assert again["usage"] == out["usage"] and len(handler.calls) == 1
    assert len((await engines.budget.usage(ctx())).items) == 1


async def test_a_claim_whose_run_died_is_taken_over_after_its_lease() -> None:
    engines = await make_engines()
    clock = engines.clock
    assert isinstance(clock, ManualClock)
    started = asyncio.Event()
    calls = 0

    async def hangs_then_works(ctx: RequestContext, request: ActionRequest) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.Event().wait()  # the "process" dies here
        return "second"

    engines.actions.register("fire", hangs_then_works)
    first = asyncio.create_task(engines.actions.execute(ctx(), REQUEST))
    await started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert info.value.code == "actions.in_progress"
    clock.advance(DEFAULT_LEASE_SECONDS + 1)
    out = await engines.actions.execute(ctx(), REQUEST)
    assert (out["result"], calls) == ("second", 2)
    assert len((await engines.budget.usage(ctx())).items) == 1


async def test_a_non_json_result_is_charged_once_and_its_502_replayed() -> None:
    engines = await make_engines()
    calls = 0

    async def odd(ctx: RequestContext, request: ActionRequest) -> Any:
        nonlocal calls
        calls += 1
        return object()

    engines.actions.register("fire", odd)
    for replay in (False, True):
        with pytest.raises(NorthstarError) as info:
            await engines.actions.execute(ctx(), REQUEST)
        assert (info.value.http_status, info.value.code) == (502, "actions.handler_failed")
        assert info.value.details["reason"] == "non_json_result"
        assert info.value.details.get("replayed", False) is replay
    assert calls == 1
    assert (await engines.budget.usage(ctx())).total == 2
    assert len((await engines.spine.list(ctx(), event_type="audit")).items) == 1


async def test_without_a_key_every_request_runs() -> None:
    engines = await make_engines()
    handler = Counting()
    engines.actions.register("fire", handler)
    body = {k: v for k, v in REQUEST.items() if k != "idempotency_key"}
    await engines.actions.execute(ctx(), body)
    await engines.actions.execute(ctx(), body)
    assert len(handler.calls) == 2
    # the handler still sees a key: one per decision
    keys = [c.idempotency_key for c in handler.calls]
    assert all(k and k.startswith("decision-") for k in keys) and keys[0] != keys[1]


async def test_a_gate_block_releases_the_key() -> None:
    engines = await make_engines()
    handler = Counting()
    engines.actions.register("fire", handler)
    admin = RequestContext(tenant_id="t_x", mode="lab", user_id="u_admin", roles=("admin",))
    await engines.policies.put_document(admin, "kill_switches", {"actions": ["fire"]}, expected_version=0)
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert info.value.code == "gate.kill_switch.action_blocked"
    await engines.policies.put_document(admin, "kill_switches", {"actions": []}, expected_version=1)
    out = await engines.actions.execute(ctx(), REQUEST)
    assert out["replayed"] is False and len(handler.calls) == 1


# --- the dry run -------------------------------------------------------------------------------


async def test_check_records_a_dry_run_decision_and_runs_and_charges_nothing() -> None:
    engines = await make_engines()
    handler = Counting()
    engines.actions.register("fire", handler)
    out = await engines.actions.check(ctx(), REQUEST)
    assert (out["allowed"], out["dry_run"], out["registered"]) == (True, True, True)
    assert out["decision"]["dry_run"] is True and out["decision"]["decision"] == "allow"
    assert handler.calls == []
    assert (await engines.budget.usage(ctx())).items == []
    (event,) = (await engines.spine.list(ctx())).items
    assert (event.event_type, event.event_id, event.payload["dry_run"]) == (
        "safety",
        out["decision"]["event_id"],
        True,
    )
    # dry runs are not published where readers act on decisions
    assert (await engines.timeline.list(ctx(), "agent:a1")).items == []
    unknown = await engines.actions.check(ctx(), {**REQUEST, "action_name": "nobody"})
    assert (unknown["allowed"], unknown["registered"]) == (True, False)


async def test_check_answers_a_block_as_allowed_false() -> None:
    engines = await make_engines()
    admin = RequestContext(tenant_id="t_x", mode="lab", user_id="u_admin", roles=("admin",))
    await engines.policies.put_document(admin, "kill_switches", {"actions": ["fire"]}, expected_version=0)
    out = await engines.actions.check(ctx(), REQUEST)
    assert out["allowed"] is False
    assert (out["decision"]["code"], out["decision"]["gate"]) == (
        "gate.kill_switch.action_blocked",
        "kill_switch",
    )
    (event,) = (await engines.spine.list(ctx(), event_type="safety")).items
    assert (event.payload["decision"], event.payload["dry_run"]) == ("deny", True)


async def test_a_real_decision_is_marked_as_no_dry_run() -> None:
    engines = await make_engines()
    engines.actions.register("fire", Counting())
    out = await engines.actions.execute(ctx(), REQUEST)
    assert out["decision"]["dry_run"] is False


async def test_viewers_cannot_check() -> None:
    engines = await make_engines()
    viewer = RequestContext(tenant_id="t_x", mode="lab", user_id="u1", roles=("viewer",))
    with pytest.raises(NorthstarError) as info:
        await engines.actions.check(viewer, REQUEST)
    assert info.value.code == "auth.forbidden_role"
