"""``POST /actions/execute`` (gate chain, handler, budget) and ``POST /actions/check`` (dry run)."""

from __future__ import annotations

from typing import Any, Final

from litestar import post
from litestar.params import JSONBody

from northstar_http.deps import Ctx, Eng


@post("/actions/execute", tags=["actions"], summary="Run an action through the gate chain", status_code=200)
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
)
async def check_action(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return await engines.actions.check(ctx, data)


ROUTES: Final[list[Any]] = [execute_action, check_action]
