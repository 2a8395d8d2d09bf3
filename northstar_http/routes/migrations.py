"""Migrations over HTTP: ``GET /system/migrations`` reports every migration of the deployment
and how far it got (system tokens only). Migrations are run by the operator's command
(``northstar migrate``), not over HTTP: a migration runs for as long as the data takes to copy,
beyond any request's deadline, and it writes with the operator's credentials."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get

from northstar_core.kernel.migration import MigrationStatus
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import error_responses


class MigrationList(msgspec.Struct, frozen=True, kw_only=True):
    migrations: list[MigrationStatus]


@get(
    "/system/migrations",
    tags=["migrations"],
    summary="Every migration, running or finished, with its progress (system)",
    description=(
        "One entry per migration started in this deployment: kinds, tenant (none: every tenant "
        "without an override), source and target tables, `active` (its record is in the routing "
        "table and every process obeys it), `phase` (dual, frozen, switched, frozen_back; ended), "
        "`state` (running, switched, rolling_back, rolled_back, releasing, released), counts "
        "copied, drained, verified and copied again, and its steps with their times. Started, "
        "rolled back and released with `northstar migrate`."
    ),
    responses=error_responses(),
)
async def list_migrations(ctx: Ctx, engines: Eng) -> MigrationList:
    ctx.require_system()
    return MigrationList(migrations=await engines.migrations.status())


ROUTES: list[Any] = [list_migrations]
