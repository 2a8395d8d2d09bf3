"""A user's own data over HTTP: ``GET /users/me/data`` streams everything the deployment holds
of the caller — the token's subject in the token's tenant, never a user named by the request —
as JSON lines (see :mod:`northstar_core.user_data`). An export reads the tenant's whole spine
and analytics, so each user may run one per ``[http] user_export_interval_seconds`` (429
otherwise). The operator exports or erases any user with ``northstar export|erase --user``."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get
from litestar.response import Stream

from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import JSON_LINES_MEDIA_TYPE, error_responses, json_lines


class UserDataHeader(msgspec.Struct, frozen=True, tag_field="t", tag="header"):
    format: str
    version: int
    tenant_id: str
    user_id: str


class UserDataRecord(msgspec.Struct, frozen=True, tag_field="t", tag="note"):
    """One record (``t``: ``note``, ``memory``, ``action_record``, ``chat_message``, ``event``,
    ``analytics``) of one mode, as stored (sealed content opened): in ``record``, ``message``
    or ``event`` according to ``t``; memory values also carry their ``session_id``."""

    mode: str
    record: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    session_id: str | None = None


class UserDataEnd(msgspec.Struct, frozen=True, tag_field="t", tag="end"):
    items: int


@get(
    "/users/me/data",
    tags=["user data"],
    summary="Export your own data, as JSON lines",
    media_type=JSON_LINES_MEDIA_TYPE,
    description=(
        "Everything this deployment holds of the caller (the token's subject, in the token's "
        "tenant, in every mode): notes, session memory values, action records, the chat "
        "messages they wrote, the spine events of their requests and their analytics events. "
        "Lines tagged by `t`: `header`, one line per record, `end` with the count. At most one "
        "export per user per `[http] user_export_interval_seconds` (429 with Retry-After)."
    ),
    responses=error_responses(429),
    operation_class=json_lines(
        UserDataHeader, UserDataRecord, UserDataEnd, description="One line of the user's data"
    ),
)
async def export_my_data(ctx: Ctx, engines: Eng) -> Any:
    lines = await engines.user_data.export_own(ctx)
    return Stream(lines, media_type=JSON_LINES_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


ROUTES: list[Any] = [export_my_data]
