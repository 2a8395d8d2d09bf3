"""Python client for the Northstar HTTP service.

    async with NorthstarClient("http://127.0.0.1:8787", token) as ns:
        posted = await ns.chat.post("th_1", "hello", idempotency_key="k1")

Errors arrive as :class:`northstar_core.errors.NorthstarError` with ``upstream`` set. Each
domain adds ``client/<domain>.py`` and one attribute below.
"""

from __future__ import annotations

from typing import Any

from northstar_http.client.actions import ActionsClient
from northstar_http.client.base import BaseClient, SseMessage
from northstar_http.client.canvas import CanvasClient, TimelineClient
from northstar_http.client.chat import ChatClient
from northstar_http.client.events import EventsClient
from northstar_http.client.policies import PoliciesClient
from northstar_http.client.stores import (
    AnalyticsClient,
    BlackboardClient,
    ConfigClient,
    MemoryClient,
    NotesClient,
    TabularClient,
)


class NorthstarClient(BaseClient):
    def __init__(self, base_url: str, token: str, **kwargs: Any) -> None:
        super().__init__(base_url, token, **kwargs)
        self.chat = ChatClient(self)
        self.memory = MemoryClient(self)
        self.blackboard = BlackboardClient(self)
        self.config = ConfigClient(self)
        self.notes = NotesClient(self)
        self.tabular = TabularClient(self)
        self.analytics = AnalyticsClient(self)
        self.events = EventsClient(self)
        self.policies = PoliciesClient(self)
        self.actions = ActionsClient(self)
        self.canvas = CanvasClient(self)
        self.timeline = TimelineClient(self)

    async def __aenter__(self) -> NorthstarClient:
        return self


__all__ = ["BaseClient", "NorthstarClient", "SseMessage"]
