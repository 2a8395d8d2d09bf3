"""``/analytics/events``: UX telemetry (``analytics_store``); each event also lands on the spine."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import get, post
from litestar.params import FromQuery, JSONBody

from northstar_core.analytics import AnalyticsEvent, AnalyticsEventIn
from northstar_core.bounds import MAX_PAGE
from northstar_core.kernel.paging import Page
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import error_responses, page_limit


@post("/analytics/events", tags=["analytics"], summary="Record a page view, click or custom UX event")
async def record_event(ctx: Ctx, engines: Eng, data: JSONBody[AnalyticsEventIn]) -> AnalyticsEvent:
    return await engines.analytics.record(ctx, data)


@get(
    "/analytics/events",
    tags=["analytics"],
    summary="List the tenant's recorded UX events (paged)",
    responses=error_responses(410),
)
async def list_events(
    ctx: Ctx,
    engines: Eng,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, page_limit(MAX_PAGE)] = 100,
) -> Page[AnalyticsEvent]:
    return await engines.analytics.list(ctx, cursor=cursor, limit=limit)


ROUTES: Final[list[Any]] = [record_event, list_events]
