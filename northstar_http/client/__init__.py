"""Python client for the Northstar HTTP service: the library's API over HTTP.

    async with NorthstarClient("http://127.0.0.1:8787", token) as ns:
        posted = await ns.chat.post("th_1", role="user", content="hello", idempotency_key="k1")
        async for entry in ns.chat.follow("th_1", posted.cursor):   # reconnects by itself
            ...

Each attribute mirrors the ``Engines`` service of the same name (``ns.chat`` is
``engines.chat``…): the same method names, arguments and result types (the core's msgspec
Structs, lists as :class:`~northstar_core.kernel.paging.Page`), and the same
:class:`~northstar_core.errors.NorthstarError` on failure, with ``upstream`` set. The one
difference: library methods take a ``RequestContext`` first; here the identity is the token
(and the identity headers given to the client). Each domain adds ``client/<domain>.py`` and
one attribute below.
"""

from __future__ import annotations

from typing import Any

from northstar_http.client.actions import ActionsClient
from northstar_http.client.base import BaseClient, SseMessage
from northstar_http.client.canvas import CanvasClient, TimelineClient
from northstar_http.client.chat import ChatClient
from northstar_http.client.policies import BudgetClient, PoliciesClient
from northstar_http.client.spine import SpineClient
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
        self.spine = SpineClient(self)
        self.policies = PoliciesClient(self)
        self.budget = BudgetClient(self)
        self.actions = ActionsClient(self)
        self.canvas = CanvasClient(self)
        self.timeline = TimelineClient(self)

    async def __aenter__(self) -> NorthstarClient:
        return self


__all__ = ["BaseClient", "NorthstarClient", "SseMessage"]
