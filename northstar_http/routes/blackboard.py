"""``/blackboard``: shared, versioned run state (``blackboard_store``).

``PUT /blackboard/{run_id}/entries/{key}`` names the version it replaces in the body
(``expected_version``) or in ``If-Match``; without either it creates (409 if the key exists).
``GET`` one answers with an ``ETag`` that ``If-Match`` accepts back.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Response, delete, get, put
from litestar.params import FromQuery, JSONBody

from northstar_core.blackboard import BlackboardEntry
from northstar_core.bounds import MAX_PAGE
from northstar_core.kernel.paging import Page
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, error_responses, page_limit, success
from northstar_http.versions import ExpectedVersion, IfMatch, expected_version, with_etag


class BlackboardWrite(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The new value; ``expected_version`` (or ``If-Match``) names the version it replaces."""

    value: Any
    expected_version: int | None = None




@put(
    "/blackboard/{run_id:str}/entries/{key:str}",
    tags=["blackboard"],
    summary="Write a blackboard entry (create or CAS)",
    status_code=201,
    response_description="Created (no expected version was named)",
    responses={
        **success(200, BlackboardEntry, "Replaced the expected version (expected_version or If-Match)"),
        **error_responses(404, 409),
    },
)
async def put_entry(
    ctx: Ctx,
    engines: Eng,
    run_id: IdPath,
    key: IdPath,
    data: JSONBody[BlackboardWrite],
    if_match: IfMatch = None,
) -> Response[BlackboardEntry]:
    version = expected_version("blackboard", data.expected_version, if_match)
    entry = await engines.blackboard.put(ctx, run_id, key, data.value, expected_version=version)
    return with_etag(entry, entry.version, 201 if version is None else 200)


@get(
    "/blackboard/{run_id:str}/entries/{key:str}",
    tags=["blackboard"],
    summary="Read one blackboard entry",
    responses=error_responses(404),
)
async def get_entry(
    ctx: Ctx, engines: Eng, run_id: IdPath, key: IdPath
) -> Response[BlackboardEntry]:
    entry = await engines.blackboard.get(ctx, run_id, key)
    return with_etag(entry, entry.version)


@delete(
    "/blackboard/{run_id:str}/entries/{key:str}",
    tags=["blackboard"],
    summary="Delete a blackboard entry",
    responses=error_responses(404, 409),
)
async def delete_entry(
    ctx: Ctx,
    engines: Eng,
    run_id: IdPath,
    key: IdPath,
    expected_version_param: ExpectedVersion = None,
    if_match: IfMatch = None,
) -> None:
    version = expected_version("blackboard", expected_version_param, if_match)
    await engines.blackboard.delete(ctx, run_id, key, expected_version=version)


@get(
    "/blackboard/{run_id:str}/entries",
    tags=["blackboard"],
    summary="List a run's blackboard entries (paged)",
    responses=error_responses(410),
)
async def list_entries(
    ctx: Ctx,
    engines: Eng,
    run_id: IdPath,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, page_limit(MAX_PAGE)] = 50,
) -> Page[BlackboardEntry]:
    return await engines.blackboard.list(ctx, run_id, cursor=cursor, limit=limit)


ROUTES: Final[list[Any]] = [put_entry, get_entry, delete_entry, list_entries]
