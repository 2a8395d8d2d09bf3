"""The event spine over HTTP: ``engines.spine`` with the same methods and result types.

Differences from the library: no ``ctx`` argument (the identity is the client's token), and
``append`` is always a caller's append (the library's ``client=True``: server-only event types
and the ``system`` source are refused unless the token has the system flag).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from northstar_core.kernel.paging import Page
from northstar_core.spine import Event, EventIn
from northstar_http.client.base import BaseClient


class SpineClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def append(self, event_in: EventIn | Mapping[str, Any] | bytes) -> Event:
        """Validate and durably append one event; returns it as stored."""
        if isinstance(event_in, bytes | bytearray | memoryview):
            body: Any = msgspec.json.decode(bytes(event_in))
        elif isinstance(event_in, EventIn):
            body = msgspec.to_builtins(event_in)
        else:
            body = dict(event_in)
        return await self._base.call(Event, "POST", "/events/append", json=body)

    async def replay(
        self, run_id: str | None, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[Event]:
        """The run's events in append order, strictly after ``cursor``."""
        params = {"run_id": run_id, "cursor": cursor, "limit": limit}
        return await self._base.call(Page[Event], "GET", "/events/replay", params=params)

    async def list(
        self,
        *,
        event_type: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Event]:
        """Events filtered by type/source and time (``since`` inclusive, ``until`` exclusive),
        oldest first."""
        params = {
            "event_type": event_type,
            "source": source,
            "since": since,
            "until": until,
            "cursor": cursor,
            "limit": limit,
        }
        return await self._base.call(Page[Event], "GET", "/events/list", params=params)
