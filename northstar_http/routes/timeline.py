"""The realtime timeline: append to and list a tenant's replayable event streams.

Thin handlers over ``engines.timeline`` (:class:`northstar_core.timeline.Timeline`);
subject streams (``canvas:<id>``…) are readable here but written only by the server.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, get, post
from litestar.params import JSONBody, QueryParameter

from northstar_core.kernel.paging import Page
from northstar_core.timeline import StreamEvent
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, error_responses, success
from northstar_http.routes.canvas import Cursor, ReplayableEvent


class AppendIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str
    data: dict[str, Any] = {}
    idempotency_key: str | None = None


Limit = Annotated[int, QueryParameter(ge=1, le=500)]


@post(
    "/realtime/timeline/{stream_id:str}/append",
    tags=["timeline"],
    summary="Append an event",
    responses=success(200, ReplayableEvent, "The first event with this idempotency key (replayed: true)"),
)
async def append(
    ctx: Ctx, engines: Eng, stream_id: IdPath, data: JSONBody[AppendIn]
) -> Response[ReplayableEvent]:
    event, replayed = await engines.timeline.append(
        ctx, stream_id, data.type, data.data, idempotency_key=data.idempotency_key
    )
    body = ReplayableEvent(**msgspec.structs.asdict(event), replayed=replayed)
    return Response(body, status_code=200 if replayed else 201)


@get(
    "/realtime/timeline/{stream_id:str}/list",
    tags=["timeline"],
    summary="Events after a cursor, paged",
    responses=error_responses(410),
)
async def list_events(
    ctx: Ctx, engines: Eng, stream_id: IdPath, cursor: Cursor = None, limit: Limit = 100
) -> Page[StreamEvent]:
    return await engines.timeline.list(ctx, stream_id, cursor or None, limit)


ROUTES: list[Any] = [append, list_events]
