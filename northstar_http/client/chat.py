"""Chat over HTTP: ``engines.chat`` with the same methods, arguments and result types.

The one difference from the library: there is no ``ctx`` argument; the caller's identity is
the client's token (and its identity headers).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import msgspec

from northstar_core.chat import ChatEntry, ChatMessage, PostedMessage, Snapshot, ThreadEntry
from northstar_core.errors import NorthstarError
from northstar_core.kernel.paging import Page
from northstar_http.client.base import BaseClient, SseMessage


def _seg(value: str) -> str:
    return quote(value, safe=":")


class _Posted(ChatMessage, frozen=True, kw_only=True):
    """The wire form of a posted message: the message, its cursor and ``replayed``."""

    cursor: str
    replayed: bool


class ChatClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    def _messages(self, thread_id: str) -> str:
        return f"/chat/threads/{_seg(thread_id)}/messages"

    async def post(
        self, thread_id: str, *, role: str, content: Any, idempotency_key: str | None = None
    ) -> PostedMessage:
        """Append one message (member role or above). Idempotent by ``idempotency_key``."""
        body: dict[str, Any] = {"role": role, "content": content}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        wire = await self._base.call(_Posted, "POST", self._messages(thread_id), json=body)
        fields = msgspec.structs.asdict(wire)
        cursor, replayed = fields.pop("cursor"), fields.pop("replayed")
        return PostedMessage(message=ChatMessage(**fields), cursor=cursor, replayed=replayed)

    async def list_messages(
        self, thread_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[ChatEntry]:
        """Messages strictly after ``cursor`` (from the start without one), oldest first."""
        params = {"cursor": cursor, "limit": limit}
        return await self._base.call(Page[ChatEntry], "GET", self._messages(thread_id), params=params)

    async def snapshot(self, thread_id: str, *, last: int | None = None) -> Snapshot:
        """Thread metadata, its last ``last`` messages and the head cursor (404 if no thread)."""
        path = f"/chat/threads/{_seg(thread_id)}/snapshot"
        return await self._base.call(Snapshot, "GET", path, params={"last": last})

    async def list_threads(
        self, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[ThreadEntry]:
        """The threads the caller posted to, ordered by thread id."""
        params = {"cursor": cursor, "limit": limit}
        return await self._base.call(Page[ThreadEntry], "GET", "/chat/threads", params=params)

    async def head_cursor(self, thread_id: str) -> str:
        """The cursor of the thread's last message (of its start while it has none): readers
        starting there see only new messages."""
        while True:
            try:
                return (await self.snapshot(thread_id, last=1)).head_cursor
            except NorthstarError as exc:
                if exc.code != "chat.not_found":
                    raise
            page = await self.list_messages(thread_id, limit=1)
            if not page.items and page.next_cursor is not None:  # no thread: its start is its head
                return page.next_cursor
            # the thread was created in between: its snapshot answers now

    def follow(self, thread_id: str, cursor: str | None = None) -> AsyncGenerator[ChatEntry, None]:
        """Messages after ``cursor`` (from the current head without one), then live ones, each
        once and in order, until the consumer stops iterating — across dropped connections
        and server restarts (see :meth:`BaseClient.follow`)."""
        return self._base.follow(
            f"/sse/chat/{_seg(thread_id)}",
            _decode_entry,
            cursor=cursor,
            start=lambda: self.head_cursor(thread_id),
        )


def _decode_entry(message: SseMessage) -> ChatEntry:
    return msgspec.json.decode(message.data, type=ChatEntry)
