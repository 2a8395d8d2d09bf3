"""The action service: registry, gate first, handler only on allow, usage after the run."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.suite import make_registry
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.routing import RESOURCE_KINDS
from northstar_core.safety.actions import ActionRequest

REQUEST = {"action_name": "fire", "subject_type": "agent", "subject_id": "a1", "estimated_cost": 2}


def ctx() -> RequestContext:
    return RequestContext(tenant_id="t_x", mode="lab", user_id="u1", roles=("member",), run_id="r1")


async def engines_without(kind: str | None) -> Engines:
    kinds = [k for k in RESOURCE_KINDS if k != kind]
    return Engines(await make_registry(MemoryItemStore(), kinds=kinds), CursorCodec(b"a" * 32), ManualClock())


async def test_when_the_spine_cannot_record_the_action_does_not_run() -> None:
    engines = await engines_without("event_spine")
    ran: list[str] = []

    async def handler(ctx: RequestContext, request: ActionRequest) -> Any:
        ran.append(request.subject_id)
        return {}

    engines.actions.register("fire", handler)
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert (info.value.http_status, info.value.code) == (503, "gate.decision_unrecorded")
    assert info.value.details["cause"] == "event_spine.missing_route"
    assert ran == []
    assert (await engines.budget.usage(ctx())).items == []


async def test_unknown_actions_are_404_before_any_decision() -> None:
    engines = await engines_without(None)
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert (info.value.http_status, info.value.code) == (404, "actions.unknown_action")
    assert (await engines.spine.list(ctx())).items == []


async def test_the_handler_sees_the_validated_request_and_reported_cost_is_recorded() -> None:
    engines = await engines_without(None)
    seen: list[ActionRequest] = []

    async def handler(ctx: RequestContext, request: ActionRequest) -> Any:
        seen.append(request)
        return [1, 2]

    engines.actions.register("fire", handler)
    out = await engines.actions.execute(ctx(), {**REQUEST, "params": {"k": "v"}, "surface_id": "s1"})
    assert out["result"] == [1, 2] and out["usage"]["amount"] == 2
    assert seen[0].params == {"k": "v"} and seen[0].surface_id == "s1"
    assert (await engines.budget.usage(ctx())).by_surface == {"s1": 2}


async def test_a_non_json_result_is_502_but_its_cost_is_still_on_the_ledger() -> None:
    engines = await engines_without(None)

    async def handler(ctx: RequestContext, request: ActionRequest) -> Any:
        return object()

    engines.actions.register("fire", handler)
    with pytest.raises(NorthstarError) as info:
        await engines.actions.execute(ctx(), REQUEST)
    assert (info.value.http_status, info.value.code) == (502, "actions.handler_failed")
    assert (await engines.budget.usage(ctx())).total == 2
