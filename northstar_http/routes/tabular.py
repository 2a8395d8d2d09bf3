"""``/tabular/{table}``: flows, graphs, overlays, SEO config, strategy-lock snapshots.

Each table is its own resource kind (``flow_store``, ``graph_store``, ``overlay_store``,
``seo_config_store``, ``strategy_lock_store``). Writes name the version they replace
(``expected_version`` or ``If-Match``; absent = create-only); ``?version=`` reads history.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Response, delete, get, put
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter

from northstar_core.bounds import MAX_PAGE
from northstar_core.kernel.paging import Page
from northstar_core.tabular import TABLES, TabularRecord, VersionInfo
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, error_responses, page_limit, success
from northstar_http.versions import ExpectedVersion, IfMatch, expected_version, with_etag

Table = Annotated[str, PathParameter(description="the table", schema_extra={"enum": sorted(TABLES)})]
Limit = Annotated[int, page_limit(MAX_PAGE)]
Version = Annotated[int | None, QueryParameter(name="version", required=False)]


class TabularWrite(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    json_blob: Any
    expected_version: int | None = None


@put(
    "/tabular/{table:str}/{record_id:str}",
    tags=["tabular"],
    summary="Create or replace a record (versioned)",
    status_code=201,
    response_description="Created (no expected version was named)",
    responses={
        **success(200, TabularRecord, "Replaced the expected version (expected_version or If-Match)"),
        **error_responses(404, 409),
    },
)
async def put_record(
    ctx: Ctx,
    engines: Eng,
    table: Table,
    record_id: IdPath,
    data: JSONBody[TabularWrite],
    if_match: IfMatch = None,
) -> Response[TabularRecord]:
    version = expected_version("tabular", data.expected_version, if_match)
    record = await engines.tabular.put(ctx, table, record_id, data.json_blob, expected_version=version)
    return with_etag(record, record.version, 201 if version is None else 200)


@get(
    "/tabular/{table:str}/{record_id:str}",
    tags=["tabular"],
    summary="Read a record (latest, or ?version=)",
    responses=error_responses(404),
)
async def get_record(
    ctx: Ctx,
    engines: Eng,
    table: Table,
    record_id: IdPath,
    version: Version = None,
) -> Response[TabularRecord]:
    record = await engines.tabular.get(ctx, table, record_id, version=version)
    return with_etag(record, record.version)


@delete(
    "/tabular/{table:str}/{record_id:str}",
    tags=["tabular"],
    summary="Delete a record (history is kept)",
    responses=error_responses(404, 409),
)
async def delete_record(
    ctx: Ctx,
    engines: Eng,
    table: Table,
    record_id: IdPath,
    expected_version_param: ExpectedVersion = None,
    if_match: IfMatch = None,
) -> None:
    version = expected_version("tabular", expected_version_param, if_match)
    await engines.tabular.delete(ctx, table, record_id, expected_version=version)


@get(
    "/tabular/{table:str}/{record_id:str}/versions",
    tags=["tabular"],
    summary="List a record's versions (paged)",
    responses=error_responses(404, 410),
)
async def list_versions(
    ctx: Ctx,
    engines: Eng,
    table: Table,
    record_id: IdPath,
    cursor: FromQuery[str | None] = None,
    limit: Limit = 50,
) -> Page[VersionInfo]:
    return await engines.tabular.versions(ctx, table, record_id, cursor=cursor, limit=limit)


@get(
    "/tabular/{table:str}",
    tags=["tabular"],
    summary="List a table's records in the caller's scope (paged)",
    responses=error_responses(404, 410),
)
async def list_records(
    ctx: Ctx,
    engines: Eng,
    table: Table,
    cursor: FromQuery[str | None] = None,
    limit: Limit = 50,
) -> Page[TabularRecord]:
    return await engines.tabular.list(ctx, table, cursor=cursor, limit=limit)


ROUTES: Final[list[Any]] = [put_record, get_record, delete_record, list_versions, list_records]
