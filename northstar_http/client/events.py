"""The event spine over HTTP: the same operations as ``engines.spine``."""

from __future__ import annotations

from typing import Any

from northstar_http.client.base import BaseClient


class EventsClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event (``event_type``, ``source``, ``payload``, ``run_id``, ``step_id``…)."""
        result: dict[str, Any] = await self._base.request("POST", "/events/append", json=event)
        return result

    async def replay(
        self, run_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._base.request(
            "GET", "/events/replay", params={"run_id": run_id, "cursor": cursor, "limit": limit}
        )
        return result

    async def list(
        self,
        *,
        event_type: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        params = {
            "event_type": event_type,
            "source": source,
            "since": since,
            "until": until,
            "cursor": cursor,
            "limit": limit,
        }
        result: dict[str, Any] = await self._base.request("GET", "/events/list", params=params)
        return result
