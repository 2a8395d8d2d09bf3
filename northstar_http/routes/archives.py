"""Tenant archives over HTTP: ``GET /system/tenants/{tenant_id}/archive`` streams a tenant's
archive (system tokens only; see :mod:`northstar_core.kernel.archive` for the format).

The export is resumable: each ``mark`` line holds a cursor, and ``?cursor=`` continues after
it. Importing is the operator's command (``northstar import``), which writes straight to the
backends of its configuration and so is bounded by neither the request body limit nor its
deadline.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.params import PathParameter, QueryParameter
from litestar.response import Stream

from northstar_core.identity import TENANT_PATTERN
from northstar_core.kernel.archive import (
    MAX_CURSOR_CHARS,
    ArchiveEnd,
    ArchiveError,
    ArchiveHeader,
    ArchiveItem,
    ArchiveMark,
)
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import JSON_LINES_MEDIA_TYPE, error_responses, json_lines

MEDIA_TYPE = JSON_LINES_MEDIA_TYPE

TenantPath = Annotated[
    str,
    PathParameter(description="the tenant to export", schema_extra={"pattern": TENANT_PATTERN.pattern}),
]
ArchiveCursor = Annotated[
    str | None,
    QueryParameter(
        description="the cursor of a `mark` line: continue after it",
        # What the server issues (version, position, signature in base64url): any other string
        # is a cursor that does not resume anything (410), and a long non-ASCII one would not
        # even fit an HTTP request line once percent-encoded.
        schema_extra={"maxLength": MAX_CURSOR_CHARS, "pattern": r"^[A-Za-z0-9_\-.]*$"},
    ),
]


@get(
    "/system/tenants/{tenant_id:str}/archive",
    tags=["archives"],
    summary="Export a tenant: every item of every kind, as JSON lines (system)",
    media_type=MEDIA_TYPE,
    description=(
        "Lines tagged by `t`: `header` (format, version, tenant, data layouts, kind groups), "
        "`item` (group, partition, key, base64 value, version, expires_at), `mark` after each "
        "page (items so far, chained SHA-256 digest, a cursor to resume after it), and last "
        "`end` (items, digest) — or `error` (an envelope) if the export failed part-way: "
        "resume from the last mark. Imported with `northstar import`."
    ),
    responses=error_responses(409, 410),
    operation_class=json_lines(
        ArchiveHeader,
        ArchiveItem,
        ArchiveMark,
        ArchiveEnd,
        ArchiveError,
        description="One line of the archive",
    ),
)
async def export_tenant(ctx: Ctx, engines: Eng, tenant_id: TenantPath, cursor: ArchiveCursor = None) -> Any:
    lines = await engines.archives.export(ctx, tenant_id, cursor)
    return Stream(lines, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})


ROUTES: list[Any] = [export_tenant]
