"""The event spine over HTTP: append, replay by run, list by type/source/time."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import get, post
from litestar.params import JSONBody, QueryParameter

from northstar_core.kernel.paging import Page
from northstar_core.spine import Event, EventIn
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import body_schema, error_responses

Cursor = Annotated[str | None, QueryParameter(description="opaque position; reads are exclusive")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=500)]
Text = Annotated[str | None, QueryParameter()]


# The spine validates the body itself (``event_spine.invalid_event``): it is read as a mapping
# and documented as the EventIn the spine decodes it into.
@post(
    "/events/append",
    tags=["events"],
    summary="Append one event to the spine (append-only)",
    operation_class=body_schema(EventIn),
)
async def append_event(ctx: Ctx, engines: Eng, data: JSONBody[dict[str, Any]]) -> Event:
    return await engines.spine.append(ctx, data, client=True)


@get(
    "/events/replay",
    tags=["events"],
    summary="A run's events in order, after a cursor",
    responses=error_responses(410),
)
async def replay_events(
    ctx: Ctx, engines: Eng, run_id: Text = None, cursor: Cursor = None, limit: Limit = None
) -> Page[Event]:
    return await engines.spine.replay(ctx, run_id, cursor=cursor, limit=limit)


@get(
    "/events/list",
    tags=["events"],
    summary="Events by type/source/time, oldest first, paged",
    responses=error_responses(410),
)
async def list_events(
    ctx: Ctx,
    engines: Eng,
    event_type: Text = None,
    source: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[Event]:
    return await engines.spine.list(
        ctx, event_type=event_type, source=source, since=since, until=until, cursor=cursor, limit=limit
    )


ROUTES: Final[list[Any]] = [append_event, replay_events, list_events]
