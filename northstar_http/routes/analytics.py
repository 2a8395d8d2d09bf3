"""``/analytics/events``: UX telemetry (``analytics_store``); each event also lands on the spine."""

from __future__ import annotations

from typing import Any, Final

from litestar import get, post
from litestar.params import FromQuery, JSONBody

from northstar_core.analytics import AnalyticsEvent, AnalyticsEventIn
from northstar_core.kernel.paging import Page
from northstar_http.deps import Ctx, Eng


@post("/analytics/events", tags=["analytics"], summary="Record a page view, click or custom UX event")
async def record_event(ctx: Ctx, engines: Eng, data: JSONBody[AnalyticsEventIn]) -> AnalyticsEvent:
    return await engines.analytics.record(ctx, data)


@get("/analytics/events", tags=["analytics"], summary="List the tenant's recorded UX events (paged)")
async def list_events(
    ctx: Ctx, engines: Eng, cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 100
) -> Page[AnalyticsEvent]:
    return await engines.analytics.list(ctx, cursor=cursor, limit=limit)


ROUTES: Final[list[Any]] = [record_event, list_events]
