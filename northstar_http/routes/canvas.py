"""The canvas rail: commands, snapshot, replay, SSE, gestures, artifacts and audits.

Thin handlers (see ``routes/chat.py``): decode with a msgspec Struct, call one use-case of
``engines.canvas`` and encode its result. Every rule (revisions, idempotency, recovery ops,
gates, toggles, limits, cursors) lives in :mod:`northstar_core.canvas`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter
from litestar.response import ServerSentEvent

from northstar_core.canvas import (
    CanvasRecord,
    CommandIn,
    CommitResult,
    RecordIn,
    RecordType,
    Snapshot,
)
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.timeline import StreamEvent
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, error_responses, sse_stream, success
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


class CanvasSnapshot(Snapshot, frozen=True, kw_only=True):
    """The state at the head revision and the canvas-stream cursor of its ``op_committed``
    (named for the document: the chat has a Snapshot too)."""


class ReplayableEvent(StreamEvent, frozen=True, kw_only=True):
    """A published event as answered, and whether this answer is the replay of an earlier
    request with the same idempotency key."""

    replayed: bool


class RecordOut(CanvasRecord, frozen=True, kw_only=True):
    """An artifact or audit as answered after a write (``replayed``: the first write with this
    idempotency key)."""

    replayed: bool


@post(
    "/canvas/{canvas_id:str}/commands",
    tags=["canvas"],
    summary="Commit a command at head_rev + 1",
    responses={
        **success(200, CommitResult, "The first commit with this idempotency key (replayed: true)"),
        **error_responses(409),
    },
)
async def post_command(
    ctx: Ctx, engines: Eng, canvas_id: IdPath, data: JSONBody[CommandIn]
) -> Response[CommitResult]:
    result = await engines.canvas.commit(ctx, canvas_id, data)
    return Response(result, status_code=200 if result.replayed else 201)


@get("/canvas/{canvas_id:str}/snapshot", tags=["canvas"], summary="State at the head revision")
async def get_snapshot(ctx: Ctx, engines: Eng, canvas_id: IdPath) -> CanvasSnapshot:
    return CanvasSnapshot(**msgspec.structs.asdict(await engines.canvas.snapshot(ctx, canvas_id)))


@get(
    "/canvas/{canvas_id:str}/replay",
    tags=["canvas"],
    summary="Canvas events after a cursor, paged",
    responses=error_responses(410),
)
async def get_replay(
    ctx: Ctx,
    engines: Eng,
    canvas_id: IdPath,
    cursor: Cursor = None,
    after_event_id: AfterEventId = None,
    limit: Limit = 100,
    types: Types = None,
) -> Page[StreamEvent]:
    wanted = frozenset(t for t in types.split(",") if t) if types else None
    return await engines.canvas.replay(ctx, canvas_id, cursor or after_event_id or None, limit, types=wanted)


def _to_sse(event: StreamEvent) -> SseEvent:
    return SseEvent(event.type, event, event.event_id)


@get(
    "/sse/canvas/{canvas_id:str}",
    tags=["canvas"],
    summary="Live canvas events (SSE)",
    description=(
        "Events of the canvas stream after the cursor (`Last-Event-ID` wins over `?cursor=`; "
        "without either, from the head), then live ones. Each event's name is its type "
        "(`op_committed`, `gesture`, `safety_decision`…) and its data a StreamEvent."
    ),
    media_type="text/event-stream",
    operation_class=sse_stream(StreamEvent),
    responses=error_responses(410),
)
async def canvas_sse(
    ctx: Ctx,
    engines: Eng,
    request: Request[Any, Any, Any],
    state: State,
    canvas_id: IdPath,
    cursor: Cursor = None,
) -> ServerSentEvent:
    # Resolved (cursor checked, pending revisions published) before the response starts, so a
    # bad cursor is a 410 envelope and the stream never has a gap.
    resume = resume_cursor(request, cursor)
    after = await engines.canvas.subscribe_position(ctx, canvas_id, resume)
    # The first frame pins the client's Last-Event-ID to this position (see routes/chat.py).
    start = resume or engines.canvas.timeline.cursor(ctx, engines.canvas.stream_id(canvas_id), after)
    http = state.settings.http
    # the timeline's own generator with a convert function: no wrapping generator per subscriber
    timeline = engines.canvas.timeline
    stream_id = engines.canvas.stream_id(canvas_id)
    events = timeline.follow(ctx, stream_id, after, heartbeat=http.sse_heartbeat_seconds)
    return sse_response(events, http, _to_sse, start=start)


@post("/canvas/{canvas_id:str}/gestures", tags=["canvas"], summary="Publish a gesture on the canvas stream")
async def post_gesture(ctx: Ctx, engines: Eng, canvas_id: IdPath, data: JSONBody[GestureIn]) -> StreamEvent:
    return await engines.canvas.gesture(
        ctx, canvas_id, data.gesture, data.data, idempotency_key=data.idempotency_key
    )


async def _add(
    engines: Any, ctx: RequestContext, canvas_id: str, kind: RecordType, data: RecordIn
) -> Response[RecordOut]:
    record, replayed = await engines.canvas.add_record(ctx, canvas_id, kind, data)
    body = RecordOut(**msgspec.structs.asdict(record), replayed=replayed)
    return Response(body, status_code=200 if replayed else 201)


_RECORD_REPLAYED: Final = success(
    200, RecordOut, "The first record with this idempotency key (replayed: true)"
)


@post(
    "/canvas/{canvas_id:str}/artifacts",
    tags=["canvas"],
    summary="Record an artifact (idempotent by key)",
    responses=_RECORD_REPLAYED,
)
async def post_artifact(
    ctx: Ctx, engines: Eng, canvas_id: IdPath, data: JSONBody[RecordIn]
) -> Response[RecordOut]:
    return await _add(engines, ctx, canvas_id, "artifact", data)


@get(
    "/canvas/{canvas_id:str}/artifacts",
    tags=["canvas"],
    summary="Artifacts in creation order, paged",
    responses=error_responses(410),
)
async def list_artifacts(
    ctx: Ctx, engines: Eng, canvas_id: IdPath, cursor: Cursor = None, limit: Limit = 100
) -> Page[CanvasRecord]:
    return await engines.canvas.list_records(ctx, canvas_id, "artifact", cursor or None, limit)


@post(
    "/canvas/{canvas_id:str}/audits",
    tags=["canvas"],
    summary="Record an audit (idempotent by key)",
    responses=_RECORD_REPLAYED,
)
async def post_audit(
    ctx: Ctx, engines: Eng, canvas_id: IdPath, data: JSONBody[RecordIn]
) -> Response[RecordOut]:
    return await _add(engines, ctx, canvas_id, "audit", data)


@get(
    "/canvas/{canvas_id:str}/audits",
    tags=["canvas"],
    summary="Audits in creation order, paged",
    responses=error_responses(410),
)
async def list_audits(
    ctx: Ctx, engines: Eng, canvas_id: IdPath, cursor: Cursor = None, limit: Limit = 100
) -> Page[CanvasRecord]:
    return await engines.canvas.list_records(ctx, canvas_id, "audit", cursor or None, limit)


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
