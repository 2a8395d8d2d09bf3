"""The chat rail: post/list messages, snapshot, thread list, SSE live tail.

The pattern every route module follows: handlers declare ``ctx`` (the verified caller) and
``engines`` (the core facade), decode the input with a msgspec Struct, call one core use-case
and encode its result. No rule lives here.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter
from litestar.response import ServerSentEvent

from northstar_core.chat import ChatEntry, ChatTail, Role, Snapshot, ThreadEntry
from northstar_core.kernel.paging import Page
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, error_responses, sse_stream, success
from northstar_http.sse import SseEvent, resume_cursor, sse_response


class PostMessageIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A message to post; the actor comes from the token, never from the body."""

    role: Role
    content: Any
    idempotency_key: str | None = None


class ChatSnapshot(Snapshot, frozen=True, kw_only=True):
    """A thread's metadata, its last messages and the head cursor (named for the document:
    the canvas has a Snapshot too)."""


class PostedEntry(ChatEntry, frozen=True, kw_only=True):
    """A posted message as answered: the message with its cursor, and whether this answer is
    the replay of an earlier post with the same idempotency key."""

    replayed: bool


Cursor = Annotated[str | None, QueryParameter(description="opaque position; reads are exclusive")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=200)]


@post(
    "/chat/threads/{thread_id:str}/messages",
    tags=["chat"],
    summary="Post a message (idempotent)",
    responses=success(200, PostedEntry, "The first post with this idempotency key (replayed: true)"),
)
async def post_message(
    ctx: Ctx, engines: Eng, thread_id: IdPath, data: JSONBody[PostMessageIn]
) -> Response[PostedEntry]:
    posted = await engines.chat.post(
        ctx, thread_id, role=data.role, content=data.content, idempotency_key=data.idempotency_key
    )
    body = PostedEntry(
        **msgspec.structs.asdict(posted.message), cursor=posted.cursor, replayed=posted.replayed
    )
    return Response(body, status_code=200 if posted.replayed else 201)


@get(
    "/chat/threads/{thread_id:str}/messages",
    tags=["chat"],
    summary="Messages after a cursor",
    responses=error_responses(410),
)
async def list_messages(
    ctx: Ctx,
    engines: Eng,
    thread_id: IdPath,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[ChatEntry]:
    return await engines.chat.list_messages(ctx, thread_id, cursor=cursor, limit=limit)


@get(
    "/chat/threads/{thread_id:str}/snapshot",
    tags=["chat"],
    summary="Thread meta, last messages, head",
    responses=error_responses(404),
)
async def snapshot(
    ctx: Ctx,
    engines: Eng,
    thread_id: IdPath,
    last: Limit = None,
) -> ChatSnapshot:
    snap = await engines.chat.snapshot(ctx, thread_id, last=last)
    return ChatSnapshot(**msgspec.structs.asdict(snap))


@get("/chat/threads", tags=["chat"], summary="The caller's threads", responses=error_responses(410))
async def list_threads(
    ctx: Ctx,
    engines: Eng,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[ThreadEntry]:
    return await engines.chat.list_threads(ctx, cursor=cursor, limit=limit)


def _to_sse(entry: ChatEntry) -> SseEvent:
    return SseEvent("message", entry, entry.cursor)


def _item_to_sse(tail: ChatTail, item: Any) -> SseEvent:
    return _to_sse(tail.decode(item))


@get(
    "/sse/chat/{thread_id:str}",
    tags=["chat"],
    summary="Live tail of a thread (SSE)",
    media_type="text/event-stream",
    description=(
        "Messages after the cursor (`Last-Event-ID` wins over `?cursor=`; without either, from "
        "the head), then live ones. Events: `message` (data: a ChatEntry)."
    ),
    operation_class=sse_stream(ChatEntry, events=["message"]),
    responses=error_responses(410),
)
async def chat_sse(
    ctx: Ctx,
    engines: Eng,
    request: Request[Any, Any, Any],
    state: State,
    thread_id: IdPath,
    cursor: Cursor = None,
) -> ServerSentEvent:
    # Opened (and the cursor checked) before the response starts: a bad cursor is a 410.
    resume = resume_cursor(request, cursor)
    tail = await engines.chat.open_tail(ctx, thread_id, resume)
    # The stream's first frame pins the client's Last-Event-ID to where the tail starts, so a
    # reconnect before any message arrives resumes there instead of at a later head.
    start = resume or engines.chat.cursor(ctx, thread_id, tail.after_seq)
    http = state.settings.http
    items = tail.items(heartbeat=http.sse_heartbeat_seconds)
    # a partial, not a closure: one small object per subscriber for the stream's life
    return sse_response(items, http, partial(_item_to_sse, tail), start=start)


ROUTES: list[Any] = [post_message, list_messages, snapshot, list_threads, chat_sse]
