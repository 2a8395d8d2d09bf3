"""``/analytics/events``: UX telemetry (``analytics_store``); each event also lands on the spine."""

from __future__ import annotations

from typing import Any, Final

from litestar import get, post

from northstar_core.analytics import AnalyticsEvent, AnalyticsEventIn
from northstar_core.blackboard import Page
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext


@post("/analytics/events", tags=["analytics"], summary="Record a page view, click or custom UX event")
async def record_event(ctx: RequestContext, engines: Engines, data: AnalyticsEventIn) -> AnalyticsEvent:
    return await engines.analytics.record(ctx, data)


@get("/analytics/events", tags=["analytics"], summary="List the tenant's recorded UX events (paged)")
async def list_events(
    ctx: RequestContext, engines: Engines, cursor: str | None = None, limit: int = 100
) -> Page[AnalyticsEvent]:
    return await engines.analytics.list(ctx, cursor=cursor, limit=limit)


ROUTES: Final[list[Any]] = [record_event, list_events]
