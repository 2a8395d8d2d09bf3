"""``POST /actions/execute``: the tool choke point (gate chain, handler, budget)."""

from __future__ import annotations

from typing import Any, Final

from litestar import post
from litestar.params import JSONBody

from northstar_http.deps import Ctx, Eng


@post("/actions/execute", tags=["actions"], summary="Run an action through the gate chain", status_code=200)
async def execute_action(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return await engines.actions.execute(ctx, data)


ROUTES: Final[list[Any]] = [execute_action]
