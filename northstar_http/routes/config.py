"""``/config/{scope}``: toggles by scope (``config_store``), versioned documents.

``surface`` scope takes ``surface_id`` from the query or ``X-Surface-Id``. Writes name the
version they replace (``expected_version`` or ``If-Match``; absent or 0 = create-only).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Response, get, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from northstar_core.config import SCOPES, ConfigDocument
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import error_responses, success
from northstar_http.versions import IfMatch, expected_version, with_etag


class ConfigWrite(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    values: dict[str, Any]
    expected_version: int | None = None


ConfigScope = Annotated[
    str, PathParameter(description="system, tenant or surface", schema_extra={"enum": list(SCOPES)})
]
SurfaceId = Annotated[
    str | None, QueryParameter(name="surface_id", required=False, description="needed by the surface scope")
]


@get(
    "/config/{config_scope:str}",
    tags=["config"],
    summary="Read a config scope (system|tenant|surface)",
    responses=error_responses(404),
)
async def get_config(
    ctx: Ctx, engines: Eng, config_scope: ConfigScope, surface_id: SurfaceId = None
) -> Response[ConfigDocument]:
    doc = await engines.config.get(ctx, config_scope, surface_id=surface_id or ctx.surface_id)
    return with_etag(doc, doc.version)


@put(
    "/config/{config_scope:str}",
    tags=["config"],
    summary="Replace a scope's values (versioned)",
    status_code=201,
    response_description="Created (version 1)",
    responses={**success(200, ConfigDocument, "Replaced the expected version"), **error_responses(404, 409)},
)
async def put_config(
    ctx: Ctx,
    engines: Eng,
    config_scope: ConfigScope,
    data: JSONBody[ConfigWrite],
    surface_id: SurfaceId = None,
    if_match: IfMatch = None,
) -> Response[ConfigDocument]:
    version = expected_version("config", data.expected_version, if_match)
    doc = await engines.config.put(
        ctx, config_scope, data.values, expected_version=version, surface_id=surface_id or ctx.surface_id
    )
    return with_etag(doc, doc.version, 201 if doc.version == 1 else 200)


ROUTES: Final[list[Any]] = [get_config, put_config]
