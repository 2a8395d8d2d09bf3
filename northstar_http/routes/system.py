"""Registry and health endpoints: routes, diagnostics, liveness, readiness.

``/healthz`` and ``/readyz`` need no token. ``/readyz`` answers from a report at most
``http.ready_cache_seconds`` old, and shows what is unrouted or unreachable (kinds, backends,
errors) only to a system token.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody

from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import TENANT_PATTERN, RequestContext
from northstar_core.routing import DATA_LAYOUTS, TABLE_PATTERN, Route, RouteOptions
from northstar_http.auth import TokenVerifier, raw_header
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import error_responses, success

# Full match: `$` alone would accept a trailing newline (the registry re-checks with fullmatch).
TABLE_SCHEMA_PATTERN = "^" + TABLE_PATTERN.pattern + r"$(?!\n)"
READINESS_STATE_KEY: Final = "readiness"


class RouteIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /routing/routes`` body: a route (a configured connection and a table name in it,
    never an endpoint, path or credential), and the version it replaces (optional)."""

    resource_kind: Annotated[str, msgspec.Meta(max_length=100)]
    connection: Annotated[str, msgspec.Meta(max_length=100)]
    table: Annotated[str, msgspec.Meta(pattern=TABLE_SCHEMA_PATTERN, max_length=63)] | None = None
    tenant_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    options: RouteOptions | None = None
    expected_version: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    # system only: store the route even though its kind's data would stay in the old table
    force: bool = False


class RouteOut(Route, frozen=True, kw_only=True):
    """A route as answered: its fields (those at their default omitted), its version in the
    routing table and the label of the backend it names."""

    version: int
    label: str


class RoutesOut(msgspec.Struct, kw_only=True):
    routes: list[RouteOut]
    deployment_mode: str


# The registry's diagnostics are built by the core as mappings; these Structs document them.


class KindDiagnosis(msgspec.Struct, kw_only=True):
    """One required kind: routed? to which backend? does it answer (null: not routed)?"""

    routed: bool
    backend: str | None
    reachable: bool | None
    connection: str | msgspec.UnsetType = msgspec.UNSET
    error: str | msgspec.UnsetType = msgspec.UNSET


class RouteOverride(msgspec.Struct, kw_only=True):
    resource_kind: str
    tenant_id: str | None
    backend: str
    connection: str


class Diagnostics(msgspec.Struct, kw_only=True):
    deployment_mode: str
    kinds: dict[str, KindDiagnosis]
    unrouted: list[str]
    unreachable: list[str]
    overrides: list[RouteOverride]


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


class ReadyReport(msgspec.Struct, kw_only=True):
    """Ready. The diagnostics (and their age) only for a system token."""

    status: Literal["ready"]
    deployment_mode: str | msgspec.UnsetType = msgspec.UNSET
    kinds: dict[str, KindDiagnosis] | msgspec.UnsetType = msgspec.UNSET
    unrouted: list[str] | msgspec.UnsetType = msgspec.UNSET
    unreachable: list[str] | msgspec.UnsetType = msgspec.UNSET
    overrides: list[RouteOverride] | msgspec.UnsetType = msgspec.UNSET
    checked_seconds_ago: float | msgspec.UnsetType = msgspec.UNSET


def _route_out(engines: Engines, route: Route, version: int) -> RouteOut:
    return RouteOut(**msgspec.structs.asdict(route), version=version, label=engines.registry.label_of(route))


def _require_route_admin(ctx: RequestContext, tenant_id: str | None) -> None:
    # A tenant admin may override routes of its own tenant (within what the registry allows
    # tenant overrides); the deployment-wide table and other tenants need the system flag.
    ctx.require_role("admin")
    if tenant_id != ctx.tenant_id:
        ctx.require_system()
    if tenant_id is not None and not TENANT_PATTERN.fullmatch(tenant_id):
        raise NorthstarError(
            "routing.invalid_params", "tenant_id is not a tenant id", 422, details={"field": "tenant_id"}
        )


@get("/routing/routes", tags=["routing"], summary="List the routing table")
async def list_routes(ctx: Ctx, engines: Eng) -> RoutesOut:
    ctx.require_role("admin")
    await engines.registry.load()
    routes = [
        _route_out(engines, r, v)
        for r, v in engines.registry.routes()
        if ctx.is_system or r.tenant_id in (None, ctx.tenant_id)
    ]
    return RoutesOut(routes=routes, deployment_mode=engines.registry.deployment_mode)


@post(
    "/routing/routes",
    tags=["routing"],
    summary="Set the route of a resource kind",
    status_code=200,
    responses=error_responses(409),
)
async def set_route(ctx: Ctx, engines: Eng, data: JSONBody[RouteIn]) -> RouteOut:
    _require_route_admin(ctx, data.tenant_id)
    route = Route(
        resource_kind=data.resource_kind,
        connection=data.connection,
        table=data.table,
        tenant_id=data.tenant_id,
        options=data.options or RouteOptions(),
    )
    version = await engines.registry.set_route(
        route, data.expected_version, by_system=ctx.is_system, force=data.force
    )
    stored = msgspec.structs.replace(route, layout=DATA_LAYOUTS[route.resource_kind])
    return _route_out(engines, stored, version)


@get(
    "/routing/diagnostics",
    tags=["routing"],
    summary="Unrouted and unreachable kinds",
    responses=success(200, Diagnostics, "Every required kind's route and reachability"),
)
async def diagnostics(ctx: Ctx, engines: Eng) -> dict[str, Any]:
    report = await engines.registry.diagnostics()
    # Like the routes list: another tenant's overrides (its id, its backend) are not the
    # caller's business unless the caller operates the deployment.
    if not ctx.is_system:
        report["overrides"] = [o for o in report["overrides"] if o["tenant_id"] in (None, ctx.tenant_id)]
    return report


@get("/healthz", tags=["health"], summary="Liveness", exclude_from_auth=True)
async def healthz() -> Health:
    return Health(status="ok")


class Readiness:
    """One app's last readiness report, reused while it is younger than ``max_age`` seconds.

    A check pings the backend of every required kind; probes come from every load balancer
    and orchestrator, often several a second, and must not multiply that load. Concurrent
    probes of a stale report share one check.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._report: dict[str, Any] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def report(self, engines: Engines) -> tuple[dict[str, Any], float]:
        """The report and its age in seconds."""
        loop = asyncio.get_running_loop()
        if self._report is None or loop.time() - self._checked >= self.max_age:
            async with self._lock:
                if self._report is None or loop.time() - self._checked >= self.max_age:
                    self._report = await engines.registry.diagnostics()
                    self._checked = loop.time()
        return self._report, loop.time() - self._checked


def _readiness(state: State) -> Readiness:
    readiness = state.get(READINESS_STATE_KEY)
    if readiness is None:
        http = getattr(state.get("settings"), "http", None)
        readiness = state[READINESS_STATE_KEY] = Readiness(getattr(http, "ready_cache_seconds", 2.0))
    assert isinstance(readiness, Readiness)
    return readiness


async def _is_system_caller(request: Request[Any, Any, Any], state: State) -> bool:
    """Whether the request carries a valid token with the system flag. /readyz needs no token
    (probes have none), so it is verified here; a token that is sent must be valid (401)."""
    header = raw_header(request.scope, b"authorization")
    if header is None:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NorthstarError("auth.missing_token", "an 'Authorization: Bearer' token is required", 401)
    verifier: TokenVerifier = state.verifier
    claims = await verifier.verify(token.strip())
    return claims.system


@get(
    "/readyz",
    tags=["health"],
    summary="Readiness: every required kind routed and reachable",
    exclude_from_auth=True,
    responses=success(200, ReadyReport, "Ready (the diagnostics only for a system token)"),
)
async def readyz(request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    # Without a token: the status only. Which kinds, backends and errors: system tokens only.
    details = await _is_system_caller(request, state)
    report, age = await _readiness(state).report(state.engines)
    if report["unrouted"] or report["unreachable"]:
        raise NorthstarError(
            "routing.not_ready",
            "some required resource kinds are unrouted or unreachable"
            + ("" if details else " (a system token shows which)"),
            503,
            details={k: report[k] for k in ("unrouted", "unreachable", "kinds")} if details else {},
            headers={"Retry-After": "5"},
        )
    if not details:
        return Response({"status": "ready"})
    return Response({"status": "ready", **report, "checked_seconds_ago": round(age, 3)})


ROUTES: list[Any] = [list_routes, set_route, diagnostics, healthz, readyz]
