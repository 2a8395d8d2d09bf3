"""The event spine over HTTP: append, replay by run, list by type/source/time."""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Response, get, post
from litestar.params import JSONBody, QueryParameter

from northstar_core.kernel.paging import Page
from northstar_core.spine import Event, event_to_dict
from northstar_http.deps import Ctx, Eng

Cursor = Annotated[str | None, QueryParameter(description="opaque position; reads are exclusive")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=500)]
Text = Annotated[str | None, QueryParameter()]


def _page(page: Page[Event]) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(page)
    return body


@post("/events/append", tags=["events"], summary="Append one event to the spine (append-only)")
async def append_event(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> Response[dict[str, Any]]:
    event = await engines.spine.append(ctx, data, client=True)
    return Response(event_to_dict(event), status_code=201)


@get("/events/replay", tags=["events"], summary="A run's events in order, after a cursor")
async def replay_events(
    ctx: Ctx, engines: Eng, run_id: Text = None, cursor: Cursor = None, limit: Limit = None
) -> dict[str, Any]:
    return _page(await engines.spine.replay(ctx, run_id, cursor=cursor, limit=limit))


@get("/events/list", tags=["events"], summary="Events by type/source/time, oldest first, paged")
async def list_events(
    ctx: Ctx,
    engines: Eng,
    event_type: Text = None,
    source: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> dict[str, Any]:
    page = await engines.spine.list(
        ctx, event_type=event_type, source=source, since=since, until=until, cursor=cursor, limit=limit
    )
    return _page(page)


ROUTES: Final[list[Any]] = [append_event, replay_events, list_events]
