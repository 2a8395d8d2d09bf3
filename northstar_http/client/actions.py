"""``POST /actions/execute`` and ``POST /actions/check`` over HTTP, with the library's signatures
less the context (a gate block on execute arrives as the 403 ``NorthstarError``; check answers
it as ``allowed: false``). The body is an :class:`~northstar_core.safety.actions.ActionRequest` or the
same fields as a mapping, exactly what ``engines.actions.execute(ctx, body)`` takes."""

from __future__ import annotations

from typing import Any

import msgspec

from northstar_http.client.base import BaseClient


def _json(body: Any) -> Any:
    return msgspec.to_builtins(body) if isinstance(body, msgspec.Struct) else body


class ActionsClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def check(self, body: Any) -> dict[str, Any]:
        """The gate chain's decision without executing: ``{action_name, allowed, dry_run,
        registered, decision}`` (recorded on the spine as a dry run)."""
        result: dict[str, Any] = await self._base.request("POST", "/actions/check", json=_json(body))
        return result

    async def execute(self, body: Any) -> dict[str, Any]:
        """Run the action; with ``idempotency_key`` a retry returns the first result
        (``replayed: true``) and never runs the handler or charges the budget again."""
        result: dict[str, Any] = await self._base.request("POST", "/actions/execute", json=_json(body))
        return result
