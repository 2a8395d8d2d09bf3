"""The routing registry: the only thing that decides which backend holds a resource kind.

Routes are data (``Route``), stored durably in the registry's own :class:`ItemStore`, which
bootstrap configuration names. A route may be set per resource kind and overridden per tenant.
There is no fallback: a kind without a route raises ``<kind>.missing_route`` (503) on use, and
outside ``lab`` the service refuses to start while any required kind is unrouted or routed to a
lab-only backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

from northstar_core.errors import NorthstarError, backend_unavailable, missing_route
from northstar_core.storage import (
    Absent,
    BackendUnavailable,
    Capabilities,
    ConditionFailed,
    InvalidItem,
    Item,
    ItemStore,
    Op,
    Put,
    VersionIs,
)

# Every resource kind the service serves. Tabular tables are kinds of their own so that
# their routes can differ (SPEC §6, issue 6).
RESOURCE_KINDS: Final[tuple[str, ...]] = (
    "chat_store",
    "canvas_command_store",
    "event_spine",
    "event_stream",
    "memory_store",
    "blackboard_store",
    "config_store",
    "firearms_policy_store",
    "strategy_policy_store",
    "budget_store",
    "notes_store",
    "flow_store",
    "graph_store",
    "overlay_store",
    "seo_config_store",
    "strategy_lock_store",
    "analytics_store",
)
LAB_ONLY_BACKENDS: Final = frozenset({"memory", "sqlite"})
CLOUD_BACKENDS: Final = frozenset({"dynamodb", "firestore", "cosmos"})
BACKENDS: Final = LAB_ONLY_BACKENDS | CLOUD_BACKENDS

# Which backends served the current request (for the lab label header).
served_by: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "northstar_served_by", default=None
)


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where one resource kind lives, optionally for one tenant only."""

    resource_kind: str
    backend: str
    params: dict[str, Any] = {}
    tenant_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} (lab)" if self.backend in LAB_ONLY_BACKENDS else self.backend


class BackendFactory(Protocol):
    """Opens an :class:`ItemStore` for a route (implemented outside the core)."""

    def open(self, route: Route) -> ItemStore: ...


class RoutingError(Exception):
    """The routing table does not allow the service to start."""


def _route_key(kind: str, tenant_id: str | None) -> str:
    return f"route#{kind}#{tenant_id or '*'}"


_PARTITION: Final = "routing_registry"


class KindStore(ItemStore):
    """An :class:`ItemStore` bound to one resource kind: adapter errors become envelopes."""

    def __init__(self, kind: str, route: Route, inner: ItemStore) -> None:
        self.kind = kind
        self.route = route
        self.inner = inner
        self.capabilities: Capabilities = inner.capabilities

    @property
    def backing(self) -> ItemStore:
        return self.inner.backing

    def _mark(self) -> None:
        current = served_by.get()
        label = self.route.label
        if current is None or label not in current:
            served_by.set((current or frozenset()) | {label})

    def _wrap(self, exc: Exception) -> NorthstarError:
        if isinstance(exc, BackendUnavailable):
            return backend_unavailable(self.kind, exc.reason, exc.retry_after)
        return NorthstarError(
            f"{self.kind}.invalid_item", str(exc), 422, details={"resource_kind": self.kind}
        )

    async def get(self, partition: str, key: str) -> Item | None:
        self._mark()
        try:
            return await self.inner.get(partition, key)
        except (BackendUnavailable, InvalidItem) as exc:
            raise self._wrap(exc) from exc

    async def query(
        self,
        partition: str,
        prefix: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> list[Item]:
        self._mark()
        try:
            return await self.inner.query(
                partition, prefix, after=after, before=before, limit=limit, descending=descending
            )
        except (BackendUnavailable, InvalidItem) as exc:
            raise self._wrap(exc) from exc

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        self._mark()
        try:
            await self.inner.write(partition, ops)
        except (BackendUnavailable, InvalidItem) as exc:
            raise self._wrap(exc) from exc

    async def ping(self) -> None:
        try:
            await self.inner.ping()
        except BackendUnavailable as exc:
            raise self._wrap(exc) from exc


class RoutingRegistry:
    """Resolves resource kinds to stores through durable routes.

    ``deployment_mode`` is the service's mode; lab-only backends are refused unless it is
    ``lab``. Routes are cached and re-read from the registry store every ``refresh_seconds``
    so that several processes sharing one registry converge.
    """

    def __init__(
        self,
        registry_store: ItemStore,
        factory: BackendFactory,
        *,
        deployment_mode: str,
        required_kinds: Sequence[str] = RESOURCE_KINDS,
        refresh_seconds: float = 5.0,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._store = registry_store
        self._factory = factory
        self.deployment_mode = deployment_mode
        self.required_kinds = tuple(required_kinds)
        self._routes: dict[tuple[str, str | None], tuple[Route, int]] = {}
        # keyed by the route's canonical JSON: Route holds a dict (params), so it is unhashable
        self._stores: dict[bytes, ItemStore] = {}
        self._refresh_seconds = refresh_seconds
        self._loaded_at = float("-inf")
        self._monotonic = monotonic or time.monotonic
        self._lock = asyncio.Lock()

    # --- the table -------------------------------------------------------------------------

    async def load(self) -> None:
        """Re-read every route from the registry store."""
        routes: dict[tuple[str, str | None], tuple[Route, int]] = {}
        after: str | None = None
        while True:
            try:
                page = await self._store.query(_PARTITION, "route#", after=after, limit=200)
            except BackendUnavailable as exc:
                raise backend_unavailable("routing_registry", exc.reason, exc.retry_after) from exc
            for item in page:
                route = msgspec.json.decode(item.value, type=Route)
                routes[(route.resource_kind, route.tenant_id)] = (route, item.version)
            if len(page) < 200:
                break
            after = page[-1].key
        self._routes = routes
        self._loaded_at = self._monotonic()

    async def _fresh(self) -> None:
        if self._monotonic() - self._loaded_at >= self._refresh_seconds:
            async with self._lock:
                if self._monotonic() - self._loaded_at >= self._refresh_seconds:
                    try:
                        await self.load()
                    except NorthstarError:
                        if self._loaded_at == float("-inf"):
                            raise  # never loaded: nothing to serve from
                        # The registry's store is unreachable but routes are known: keep
                        # serving them (retrying the refresh next interval), so each kind
                        # reports its own backend's state (`<kind>.backend_unavailable` when it
                        # shares the outage) and kinds on healthy backends keep working.
                        self._loaded_at = self._monotonic()

    def routes(self) -> list[tuple[Route, int]]:
        return sorted(self._routes.values(), key=lambda rv: (rv[0].resource_kind, rv[0].tenant_id or ""))

    def validate(self, route: Route) -> None:
        """Reject a route the deployment may not use (400/422 envelopes)."""
        if route.resource_kind not in RESOURCE_KINDS:
            raise NorthstarError(
                "routing.unknown_resource_kind",
                f"unknown resource kind '{route.resource_kind}'",
                422,
                details={"resource_kind": route.resource_kind, "known": list(RESOURCE_KINDS)},
            )
        if route.backend not in BACKENDS:
            raise NorthstarError(
                "routing.unknown_backend",
                f"unknown backend '{route.backend}'",
                422,
                details={"backend": route.backend, "known": sorted(BACKENDS)},
            )
        if route.backend in LAB_ONLY_BACKENDS and self.deployment_mode != "lab":
            raise NorthstarError(
                "routing.lab_backend_forbidden",
                f"backend '{route.backend}' is allowed only in lab mode",
                422,
                details={"backend": route.backend, "deployment_mode": self.deployment_mode},
            )

    async def set_route(self, route: Route, expected_version: int | None = None) -> int:
        """Store ``route`` durably; returns its new version. 409 if ``expected_version`` is stale."""
        self.validate(route)
        key = _route_key(route.resource_kind, route.tenant_id)
        current = await self._store.get(_PARTITION, key)
        if expected_version is not None and (current.version if current else 0) != expected_version:
            raise NorthstarError(
                "routing.version_conflict",
                "the route changed since the version you read",
                409,
                details={"current_version": current.version if current else 0},
            )
        version = (current.version + 1) if current else 1
        condition = VersionIs(current.version) if current else Absent()
        try:
            await self._store.write(
                _PARTITION,
                [Put(key, msgspec.json.encode(route), version=version, condition=condition)],
            )
        except ConditionFailed:
            latest = await self._store.get(_PARTITION, key)
            raise NorthstarError(
                "routing.version_conflict",
                "the route changed concurrently",
                409,
                details={"current_version": latest.version if latest else 0},
            ) from None
        await self.load()
        return version

    # --- resolution ------------------------------------------------------------------------

    def _resolve(self, kind: str, tenant_id: str | None) -> Route | None:
        if tenant_id is not None and (kind, tenant_id) in self._routes:
            return self._routes[(kind, tenant_id)][0]
        hit = self._routes.get((kind, None))
        return hit[0] if hit else None

    async def store_for(self, kind: str, tenant_id: str | None = None) -> KindStore:
        """The store serving ``kind`` (for ``tenant_id``), or 503 ``<kind>.missing_route``."""
        await self._fresh()
        route = self._resolve(kind, tenant_id)
        if route is None:
            raise missing_route(kind)
        if route.backend in LAB_ONLY_BACKENDS and self.deployment_mode != "lab":
            # A route written by a lab deployment is never honoured by a sellable one.
            raise missing_route(kind)
        store_key = msgspec.json.encode(route, order="sorted")
        inner = self._stores.get(store_key)
        if inner is None:
            inner = self._factory.open(route)
            self._stores[store_key] = inner
        return KindStore(kind, route, inner)

    def check_startup(self) -> None:
        """Raise :class:`RoutingError` if this deployment may not start (SPEC §2.3)."""
        if self.deployment_mode == "lab":
            return
        problems: list[str] = []
        for kind in self.required_kinds:
            route = self._resolve(kind, None)
            if route is None:
                problems.append(f"{kind}: no route")
            elif route.backend in LAB_ONLY_BACKENDS:
                problems.append(f"{kind}: routed to lab-only backend '{route.backend}'")
        for (kind, tenant), (route, _) in self._routes.items():
            if tenant is not None and route.backend in LAB_ONLY_BACKENDS:
                problems.append(f"{kind} (tenant {tenant}): routed to lab-only backend '{route.backend}'")
        if problems:
            raise RoutingError(
                f"refusing to start in mode '{self.deployment_mode}': " + "; ".join(problems)
            )

    async def diagnostics(self) -> dict[str, Any]:
        """Which kinds are routed, to what, and whether their backend answers."""
        await self._fresh()

        async def probe(kind: str) -> dict[str, Any]:
            route = self._resolve(kind, None)
            if route is None:
                return {"routed": False, "backend": None, "reachable": None}
            entry: dict[str, Any] = {"routed": True, "backend": route.label, "reachable": True}
            try:
                store = await self.store_for(kind)
                await asyncio.wait_for(store.ping(), timeout=5)
            except NorthstarError as exc:
                entry.update(reachable=False, error=exc.code)
            except (TimeoutError, OSError) as exc:
                entry.update(reachable=False, error=f"{kind}.backend_unavailable: {exc!r}")
            return entry

        # Concurrently: during an outage every ping may take its full timeout, and readiness
        # must answer within one timeout, not one per kind.
        entries = await asyncio.gather(*(probe(kind) for kind in self.required_kinds))
        kinds: dict[str, Any] = dict(zip(self.required_kinds, entries, strict=True))
        return {
            "deployment_mode": self.deployment_mode,
            "kinds": kinds,
            "unrouted": [k for k, v in kinds.items() if not v["routed"]],
            "unreachable": [k for k, v in kinds.items() if v["routed"] and not v["reachable"]],
            "overrides": [
                {"resource_kind": r.resource_kind, "tenant_id": r.tenant_id, "backend": r.label}
                for (_, t), (r, _) in sorted(self._routes.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
                if t is not None
            ],
        }

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
        self._stores.clear()


def routes_from_mapping(data: Mapping[str, Any]) -> list[Route]:
    """Parse ``{"routes": [...]}`` (a bootstrap/config file) into routes."""
    return msgspec.convert(list(data.get("routes", [])), type=list[Route])
