"""The realtime timeline: append to and list a tenant's replayable event streams.

Thin handlers over ``engines.streams`` (:class:`northstar_core.timeline.EventStreamService`);
subject streams (``canvas:<id>``…) are readable here but written only by the server.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from northstar_http.deps import Ctx, Eng
from northstar_http.routes.canvas import Cursor, event_to_dict, page_to_dict


class AppendIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str
    data: dict[str, Any] = {}
    idempotency_key: str | None = None


Limit = Annotated[int, QueryParameter(ge=1, le=500)]


@post("/realtime/timeline/{stream_id:str}/append", tags=["timeline"], summary="Append an event")
async def append(
    ctx: Ctx, engines: Eng, stream_id: FromPath[str], data: JSONBody[AppendIn]
) -> Response[dict[str, Any]]:
    event, replayed = await engines.streams.append(
        ctx, stream_id, data.type, data.data, idempotency_key=data.idempotency_key
    )
    body = event_to_dict(event)
    body["replayed"] = replayed
    return Response(body, status_code=200 if replayed else 201)


@get("/realtime/timeline/{stream_id:str}/list", tags=["timeline"], summary="Events after a cursor, paged")
async def list_events(
    ctx: Ctx, engines: Eng, stream_id: FromPath[str], cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    return page_to_dict(await engines.streams.list(ctx, stream_id, cursor or None, limit))


ROUTES: list[Any] = [append, list_events]
