"""The chat rail: post/list messages, snapshot, thread list, SSE live tail.

The pattern every route module follows: handlers declare ``ctx`` (the verified caller) and
``engines`` (the core facade), decode the input with a msgspec Struct, call one core use-case
and encode its result. No rule lives here.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import ServerSentEvent

from northstar_core.chat import ChatEntry, Role, message_to_dict
from northstar_http.deps import Ctx, Eng
from northstar_http.sse import SseEvent, resume_cursor, sse_response


class PostMessageIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A message to post; the actor comes from the token, never from the body."""

    role: Role
    content: Any
    idempotency_key: str | None = None


Cursor = Annotated[str | None, QueryParameter(description="opaque position; reads are exclusive")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=200)]


@post("/chat/threads/{thread_id:str}/messages", tags=["chat"], summary="Post a message (idempotent)")
async def post_message(
    ctx: Ctx, engines: Eng, thread_id: FromPath[str], data: JSONBody[PostMessageIn]
) -> Response[dict[str, Any]]:
    posted = await engines.chat.post(
        ctx, thread_id, role=data.role, content=data.content, idempotency_key=data.idempotency_key
    )
    body = message_to_dict(posted.message, posted.cursor, replayed=posted.replayed)
    return Response(body, status_code=200 if posted.replayed else 201)


@get("/chat/threads/{thread_id:str}/messages", tags=["chat"], summary="Messages after a cursor")
async def list_messages(
    ctx: Ctx,
    engines: Eng,
    thread_id: FromPath[str],
    cursor: Cursor = None,
    limit: Limit = None,
) -> dict[str, Any]:
    page = await engines.chat.list_messages(ctx, thread_id, cursor=cursor, limit=limit)
    body: dict[str, Any] = msgspec.to_builtins(page)
    return body


@get("/chat/threads/{thread_id:str}/snapshot", tags=["chat"], summary="Thread meta, last messages, head")
async def snapshot(
    ctx: Ctx,
    engines: Eng,
    thread_id: FromPath[str],
    last: Limit = None,
) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(await engines.chat.snapshot(ctx, thread_id, last=last))
    return body


@get("/chat/threads", tags=["chat"], summary="The caller's threads")
async def list_threads(
    ctx: Ctx,
    engines: Eng,
    cursor: Cursor = None,
    limit: Limit = None,
) -> dict[str, Any]:
    page = await engines.chat.list_threads(ctx, cursor=cursor, limit=limit)
    body: dict[str, Any] = msgspec.to_builtins(page)
    return body


def _to_sse(entry: ChatEntry) -> SseEvent:
    return SseEvent("message", entry, entry.cursor)


@get("/sse/chat/{thread_id:str}", tags=["chat"], summary="Live tail of a thread (SSE)")
async def chat_sse(
    ctx: Ctx,
    engines: Eng,
    request: Request[Any, Any, Any],
    state: State,
    thread_id: FromPath[str],
    cursor: Cursor = None,
) -> ServerSentEvent:
    # Opened (and the cursor checked) before the response starts: a bad cursor is a 410.
    tail = await engines.chat.open_tail(ctx, thread_id, resume_cursor(request, cursor))
    http = state.settings.http
    items = tail.items(heartbeat=http.sse_heartbeat_seconds)
    return sse_response(items, http, lambda item: _to_sse(tail.decode(item)))


ROUTES: list[Any] = [post_message, list_messages, snapshot, list_threads, chat_sse]
