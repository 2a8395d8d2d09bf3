"""Chat over HTTP: the same operations as ``engines.chat``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from northstar_http.client.base import BaseClient, SseMessage


class ChatClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def post(
        self, thread_id: str, content: Any, *, role: str = "user", idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"role": role, "content": content}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        path = f"/chat/threads/{thread_id}/messages"
        result: dict[str, Any] = await self._base.request("POST", path, json=body)
        return result

    async def list(
        self, thread_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._base.request(
            "GET", f"/chat/threads/{thread_id}/messages", params={"cursor": cursor, "limit": limit}
        )
        return result

    async def snapshot(self, thread_id: str, *, last: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._base.request(
            "GET", f"/chat/threads/{thread_id}/snapshot", params={"last": last}
        )
        return result

    async def threads(self, *, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._base.request(
            "GET", "/chat/threads", params={"cursor": cursor, "limit": limit}
        )
        return result

    def follow(
        self, thread_id: str, *, cursor: str | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[SseMessage]:
        """Live messages of a thread (SSE); each message's ``id`` is its resume cursor."""
        return self._base.sse(
            f"/sse/chat/{thread_id}", params={"cursor": cursor}, last_event_id=last_event_id
        )
