"""``POST /actions/execute`` over HTTP (a gate block arrives as the 403 ``NorthstarError``)."""

from __future__ import annotations

from typing import Any

from northstar_http.client.base import BaseClient


class ActionsClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def execute(
        self,
        action_name: str,
        subject_type: str,
        subject_id: str,
        *,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
        surface_id: str | None = None,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action_name": action_name,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "params": params or {},
            "estimated_cost": estimated_cost,
        }
        if surface_id is not None:
            body["surface_id"] = surface_id
        if app_id is not None:
            body["app_id"] = app_id
        result: dict[str, Any] = await self._base.request("POST", "/actions/execute", json=body)
        return result
