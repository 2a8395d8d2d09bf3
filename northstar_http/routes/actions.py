"""``POST /actions/execute`` (gate chain, handler, budget) and ``POST /actions/check`` (dry run)."""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from litestar import post
from litestar.params import JSONBody

from northstar_core.errors import Gate
from northstar_core.safety.actions import ActionRequest
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import body_schema, error_responses, success

# The answers below are built by the core as mappings; these Structs document their shape.


class GateDecision(msgspec.Struct, kw_only=True):
    """The gate chain's recorded decision (a ``safety`` event on the spine)."""

    decision: Literal["allow", "deny"]
    gate: Gate | None
    code: str | None
    reason: str
    action_name: str
    subject_type: str
    subject_id: str
    surface_id: str | None
    app_id: str | None
    estimated_cost: float
    policy_versions: dict[str, int]
    details: dict[str, Any]
    dry_run: bool
    event_id: str
    stream_cursor: str | msgspec.UnsetType = msgspec.UNSET


class ActionUsage(msgspec.Struct, kw_only=True):
    """The recorded usage: its ledger shard and its sequence number in that shard (the month's
    totals are ``GET /budget/usage``'s)."""

    amount: float
    shard: int
    seq: int


class ActionResult(msgspec.Struct, kw_only=True):
    """An executed action: the handler's result, the decision and the recorded usage."""

    action_name: str
    result: Any
    decision: GateDecision
    usage: ActionUsage
    idempotency_key: str | None
    replayed: bool
    result_omitted: bool | msgspec.UnsetType = msgspec.UNSET


class ActionCheck(msgspec.Struct, kw_only=True):
    """A dry run: the decision the chain would take (a block is ``allowed: false``)."""

    action_name: str
    allowed: bool
    dry_run: bool
    registered: bool
    decision: GateDecision


@post(
    "/actions/execute",
    tags=["actions"],
    summary="Run an action through the gate chain",
    status_code=200,
    operation_class=body_schema(ActionRequest),
    responses={
        **success(200, ActionResult, "The action ran (or its first run is replayed)"),
        **error_responses(404, 409, 502),
    },
)
async def execute_action(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return await engines.actions.execute(ctx, data)


@post(
    "/actions/check",
    tags=["actions"],
    summary="Run the gate chain without executing (a recorded dry run)",
    description=(
        "The gate chain's decision for the same body as /actions/execute: recorded on the event "
        "spine as a safety event marked dry_run, never published on the subject's stream, "
        "nothing executed and no budget usage. A block is answered 200 with allowed=false."
    ),
    status_code=200,
    operation_class=body_schema(ActionRequest),
    responses=success(200, ActionCheck, "The decision"),
)
async def check_action(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return await engines.actions.check(ctx, data)


ROUTES: Final[list[Any]] = [execute_action, check_action]
