"""The canvas rail: commands, snapshot, replay, SSE, gestures, artifacts and audits.

Thin handlers (see ``routes/chat.py``): decode with a msgspec Struct, call one use-case of
``engines.canvas`` and encode its result. Every rule (revisions, idempotency, recovery ops,
gates, toggles, limits, cursors) lives in :mod:`northstar_core.canvas`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import ServerSentEvent

from northstar_core.canvas import CanvasService, CommandIn, RecordIn, RecordType
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.timeline import StreamEvent
from northstar_http.deps import Ctx, Eng
from northstar_http.sse import SseEvent, resume_cursor, sse_response


class GestureIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A gesture (pointer, selection, viewport…): ephemeral, on the canvas stream only."""

    gesture: str
    data: dict[str, Any] = {}
    idempotency_key: str | None = None


Cursor = Annotated[str | None, QueryParameter(description="opaque position; reads are exclusive")]
AfterEventId = Annotated[
    str | None, QueryParameter(description="alias of cursor (an SSE event id)")
]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
Types = Annotated[
    str | None, QueryParameter(description="comma-separated event types to keep, e.g. op_committed")
]


def event_to_dict(event: StreamEvent) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(event)
    return body


def page_to_dict(page: Page[StreamEvent]) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(page)
    return body


@post("/canvas/{canvas_id:str}/commands", tags=["canvas"], summary="Commit a command at head_rev + 1")
async def post_command(
    ctx: Ctx, engines: Eng, canvas_id: FromPath[str], data: JSONBody[CommandIn]
) -> Response[dict[str, Any]]:
    result = await engines.canvas.commit(ctx, canvas_id, data)
    return Response(msgspec.to_builtins(result), status_code=200 if result.replayed else 201)


@get("/canvas/{canvas_id:str}/snapshot", tags=["canvas"], summary="State at the head revision")
async def get_snapshot(ctx: Ctx, engines: Eng, canvas_id: FromPath[str]) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(await engines.canvas.snapshot(ctx, canvas_id))
    return body


@get("/canvas/{canvas_id:str}/replay", tags=["canvas"], summary="Canvas events after a cursor, paged")
async def get_replay(
    ctx: Ctx,
    engines: Eng,
    canvas_id: FromPath[str],
    cursor: Cursor = None,
    after_event_id: AfterEventId = None,
    limit: Limit = 100,
    types: Types = None,
) -> dict[str, Any]:
    wanted = frozenset(t for t in types.split(",") if t) if types else None
    page = await engines.canvas.replay(ctx, canvas_id, cursor or after_event_id or None, limit, types=wanted)
    return page_to_dict(page)


async def _events(
    canvas: CanvasService, ctx: RequestContext, canvas_id: str, after: int, heartbeat: float
) -> AsyncIterator[SseEvent | None]:
    async for event in canvas.events.follow(ctx, canvas.stream_id(canvas_id), after, heartbeat=heartbeat):
        yield None if event is None else SseEvent(event.type, event, event.event_id)


@get("/sse/canvas/{canvas_id:str}", tags=["canvas"], summary="Live canvas events (SSE)")
async def canvas_sse(
    ctx: Ctx,
    engines: Eng,
    request: Request[Any, Any, Any],
    state: State,
    canvas_id: FromPath[str],
    cursor: Cursor = None,
) -> ServerSentEvent:
    # Resolved (cursor checked, pending revisions published) before the response starts, so a
    # bad cursor is a 410 envelope and the stream never has a gap.
    after = await engines.canvas.subscribe_position(ctx, canvas_id, resume_cursor(request, cursor))
    http = state.settings.http
    return sse_response(_events(engines.canvas, ctx, canvas_id, after, http.sse_heartbeat_seconds), http)


@post("/canvas/{canvas_id:str}/gestures", tags=["canvas"], summary="Publish a gesture on the canvas stream")
async def post_gesture(
    ctx: Ctx, engines: Eng, canvas_id: FromPath[str], data: JSONBody[GestureIn]
) -> Response[dict[str, Any]]:
    event = await engines.canvas.gesture(
        ctx, canvas_id, data.gesture, data.data, idempotency_key=data.idempotency_key
    )
    return Response(event_to_dict(event), status_code=201)


async def _add(
    engines: Any, ctx: RequestContext, canvas_id: str, kind: RecordType, data: RecordIn
) -> Response[dict[str, Any]]:
    record, replayed = await engines.canvas.add_record(ctx, canvas_id, kind, data)
    body: dict[str, Any] = msgspec.to_builtins(record)
    body["replayed"] = replayed
    return Response(body, status_code=200 if replayed else 201)


async def _list(
    engines: Any, ctx: RequestContext, canvas_id: str, kind: RecordType, cursor: str | None, limit: int
) -> dict[str, Any]:
    page = await engines.canvas.list_records(ctx, canvas_id, kind, cursor or None, limit)
    body: dict[str, Any] = msgspec.to_builtins(page)
    return body


@post("/canvas/{canvas_id:str}/artifacts", tags=["canvas"], summary="Record an artifact (idempotent by key)")
async def post_artifact(
    ctx: Ctx, engines: Eng, canvas_id: FromPath[str], data: JSONBody[RecordIn]
) -> Response[dict[str, Any]]:
    return await _add(engines, ctx, canvas_id, "artifact", data)


@get("/canvas/{canvas_id:str}/artifacts", tags=["canvas"], summary="Artifacts in creation order, paged")
async def list_artifacts(
    ctx: Ctx, engines: Eng, canvas_id: FromPath[str], cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    return await _list(engines, ctx, canvas_id, "artifact", cursor, limit)


@post("/canvas/{canvas_id:str}/audits", tags=["canvas"], summary="Record an audit (idempotent by key)")
async def post_audit(
    ctx: Ctx, engines: Eng, canvas_id: FromPath[str], data: JSONBody[RecordIn]
) -> Response[dict[str, Any]]:
    return await _add(engines, ctx, canvas_id, "audit", data)


@get("/canvas/{canvas_id:str}/audits", tags=["canvas"], summary="Audits in creation order, paged")
async def list_audits(
    ctx: Ctx, engines: Eng, canvas_id: FromPath[str], cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    return await _list(engines, ctx, canvas_id, "audit", cursor, limit)


ROUTES: list[Any] = [
    post_command,
    get_snapshot,
    get_replay,
    canvas_sse,
    post_gesture,
    post_artifact,
    list_artifacts,
    post_audit,
    list_audits,
]
