"""The routing registry: the only thing that decides which backend holds a resource kind.

Routes are data (``Route``), stored durably in the registry's own :class:`ItemStore`, which
bootstrap configuration names. A route may be set per resource kind and overridden per tenant.
There is no fallback: a kind without a route raises ``<kind>.missing_route`` (503) on use, and
outside ``lab`` the service refuses to start while any required kind is unrouted or routed to a
lab-only backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec

from northstar_core.errors import NorthstarError, backend_unavailable, missing_route
from northstar_core.identity import TENANT_PATTERN
from northstar_core.kernel.activity import ACTIVITY_PARTITION
from northstar_core.kernel.buckets import MAX_SHARDS, forget
from northstar_core.observe import current as observer
from northstar_core.storage import (
    MAX_SCAN_PAGE,
    MAX_VERSION,
    Absent,
    BackendUnavailable,
    Capabilities,
    Check,
    ConditionFailed,
    InvalidItem,
    Item,
    ItemStore,
    Op,
    Put,
    ScanPage,
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
# The data layout each kind's services write (key and partition scheme). A route records the
# layout of the data behind it when it is stored; a route written for another layout is reported
# and not served, rather than read with the wrong scheme. There is no migration between layouts:
# a layout change ships with a new number and the routes are written again.
DATA_LAYOUTS: Final[Mapping[str, int]] = {
    **{kind: 1 for kind in RESOURCE_KINDS},
    # 2: time-bucketed, sharded partitions (kernel/buckets.py)
    "event_spine": 2,
    "analytics_store": 2,
    # 2: the month's ledger in shards (safety/budget.py)
    "budget_store": 2,
}
# Routes stored before layouts were recorded carry none: they were written in layout 1.
UNRECORDED_LAYOUT: Final = 1
MAX_LAYOUT: Final = 1_000
LAB_ONLY_BACKENDS: Final = frozenset({"memory", "sqlite"})
CLOUD_BACKENDS: Final = frozenset({"dynamodb", "firestore", "cosmos"})
BACKENDS: Final = LAB_ONLY_BACKENDS | CLOUD_BACKENDS

# Which backends served the current request (for the lab label header).
served_by: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "northstar_served_by", default=None
)


# A table / container / collection / namespace name inside a connection. One grammar that every
# backend accepts as part of a physical name (DynamoDB tables, Cosmos containers, Firestore
# collection ids, SQLite namespaces), so a route can never smuggle a path or a separator.
TABLE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{1,62}")
CONNECTION_PATTERN: Final = re.compile(r"[a-z][a-z0-9_\-]{0,62}")

# Kinds a tenant admin may never re-route for its own tenant: the audit trail and everything
# the gate chain reads (kill switches and corridors live in config_store). Moving them to an
# empty table would silence the tenant's audit or lift the operator's safety settings.
PROTECTED_KINDS: Final = frozenset(
    {
        "event_spine",
        "config_store",
        "firearms_policy_store",
        "strategy_policy_store",
        "budget_store",
        "strategy_lock_store",
    }
)

MAX_ROUTE_VALUE_BYTES: Final = 4 * 1024 * 1024
MAX_ROUTE_TTL_SECONDS: Final = 10 * 365 * 86_400


class Connection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A backend connection the operator defined in configuration, referred to by name.

    Only configuration creates connections: endpoints, regions, credential sources and file
    paths (``params``, validated by the backend's adapter) never come from a request.
    ``tenant_overrides`` says whether tenant admins may route their own tenant's kinds here.
    """

    name: str
    backend: str
    params: dict[str, Any] = {}
    tenant_overrides: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend} (lab)" if self.backend in LAB_ONLY_BACKENDS else self.backend

    def target(self, resource_kind: str, table: str) -> Target:
        """What an adapter opens for ``table`` on this connection."""
        return Target(
            resource_kind=resource_kind, backend=self.backend, params=dict(self.params), table=table
        )


class RouteOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-route settings read by the core's services (not by adapters)."""

    max_value_bytes: Annotated[int, msgspec.Meta(ge=1, le=MAX_ROUTE_VALUE_BYTES)] | None = None
    default_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_ROUTE_TTL_SECONDS)] | None = None
    canvas_limits: dict[str, Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]] | None = None
    # Shards of a time-bucketed log (event spine, analytics): a list page reads one bucket's
    # shards concurrently, so this is the fan-out of a page; writes spread over as many
    # partitions. Takes effect at the next hour's bucket.
    shards: Annotated[int, msgspec.Meta(ge=1, le=MAX_SHARDS)] | None = None


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Where one resource kind lives, optionally for one tenant only: a named connection and a
    table name inside it (default: the kind's own name)."""

    resource_kind: str
    connection: str
    table: str | None = None
    tenant_id: str | None = None
    options: RouteOptions = RouteOptions()
    # The data layout of the kind when the route was stored (DATA_LAYOUTS); the registry
    # records it, a caller may only name the current one.
    layout: Annotated[int, msgspec.Meta(ge=1, le=MAX_LAYOUT)] | None = None

    @property
    def table_name(self) -> str:
        return self.table or self.resource_kind

    @property
    def data_layout(self) -> int:
        return self.layout if self.layout is not None else UNRECORDED_LAYOUT


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What an adapter opens: a backend, the operator's connection params, and a table name.

    Built by the registry from a :class:`Route` and its :class:`Connection` (or by code that
    opens a backend directly, such as tests and benchmarks); never decoded from a request.
    """

    resource_kind: str
    backend: str
    params: dict[str, Any] = {}
    table: str | None = None

    @property
    def table_name(self) -> str:
        return self.table or self.resource_kind


class BackendFactory(Protocol):
    """Opens :class:`ItemStore` objects (implemented outside the core). ``open`` validates the
    target's params against the backend's declared settings and raises :class:`ValueError`
    naming the offending field."""

    def open(self, target: Target) -> ItemStore: ...


class RoutingError(Exception):
    """The routing table does not allow the service to start."""


async def holds_any(store: ItemStore, prefix: str) -> bool:
    """Whether ``store`` holds a live item in a partition named ``prefix…`` (a page may be
    empty without being the last, so this can read much of a shared table)."""
    token: str | None = None
    while True:
        page = await store.scan(prefix, token=token, limit=MAX_SCAN_PAGE)
        if page.items:
            return True
        if page.token is None:
            return False
        token = page.token


def route_key(kind: str, tenant_id: str | None) -> str:
    return f"route#{kind}#{tenant_id or '*'}"


class RetiredTenant(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant whose data is being (``erasing``) or was (``erased``) erased: no request of it
    is served again, so a token still valid for it cannot write anything back."""

    tenant_id: str
    state: str
    at: float
    items_deleted: int = 0


def _tenant_key(tenant_id: str) -> str:
    return f"tenant#{tenant_id}"


class Endpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A table on a named connection: one side of a migration."""

    connection: str
    table: str


# The phases of a migration (kernel/migration.py). In ``dual`` the source serves and every
# write is journaled before it is made; in ``switched`` the target serves and writes are
# journaled for a rollback; in the two frozen phases writes wait while the journal is drained
# and the routes are flipped.
JOURNALED_PHASES: Final = frozenset({"dual", "switched"})
FROZEN_PHASES: Final = frozenset({"frozen", "frozen_back"})
MIGRATION_PHASES: Final = JOURNALED_PHASES | FROZEN_PHASES


class Migration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A move of ``kinds`` (the kinds sharing one table) from ``source`` to ``target``, for one
    tenant or for the deployment, as every process sharing the registry sees it.

    ``original`` holds each kind's route before the move (``None``: the tenant had no override
    of its own), restored by a rollback. ``excluded_tenants`` (deployment-wide moves) have
    overrides of their own: their data stays where it is. ``fence_seconds``: every process
    re-reads the registry at least this often while it serves a migrating kind;
    ``settle_seconds``: the longest a journaled write may take; ``lease_seconds``: how long a
    process may serve from a registry view it could not refresh (writes stop after it).
    """

    id: str
    kinds: tuple[str, ...]
    tenant_id: str | None
    source: Endpoint
    target: Endpoint
    original: dict[str, Route | None]
    excluded_tenants: tuple[str, ...] = ()
    phase: Literal["dual", "frozen", "switched", "frozen_back"]
    phase_at: float
    started_at: float
    fence_seconds: float
    settle_seconds: float
    lease_seconds: float

    def covers(self, kind: str, tenant_id: str | None) -> bool:
        if kind not in self.kinds:
            return False
        if self.tenant_id is not None:
            return tenant_id == self.tenant_id
        return tenant_id is None or tenant_id not in self.excluded_tenants

    def in_scope(self, partition: str) -> bool:
        """Whether ``partition`` (of the source or target table) is moved by this migration.
        The activity index is the processes' own bookkeeping, which each side keeps for itself;
        every other partition is data, including the deployment's own ones outside any tenant
        (``~system|<mode>|config``), which a deployment-wide migration moves."""
        if partition == ACTIVITY_PARTITION:
            return False
        tenant = partition.split("|", 1)[0]
        if self.tenant_id is not None:
            return tenant == self.tenant_id and "|" in partition
        return tenant not in self.excluded_tenants


def migration_key(migration_id: str) -> str:
    return f"migration#{migration_id}"


# The journal of a migration: one item per partition written since the item was last
# drained, spread over a few partitions of the registry's table (a hot kind must not turn one
# registry partition into its bottleneck).
JOURNAL_SHARDS: Final = 16


def journal_partition(migration_id: str, shard: int) -> str:
    return f"migration|{migration_id}|j{shard}"


def journal_shard(partition: str) -> int:
    return zlib.crc32(partition.encode()) % JOURNAL_SHARDS


class JournalMark(msgspec.Struct, frozen=True):
    """When a process last announced a write to a partition (its wall clock)."""

    at: float


# While a migration's routes are being flipped, a process serving the kind re-reads the
# registry at least this often, so it reads from the new side within this long.
FROZEN_REFRESH_SECONDS: Final = 0.25
# Beyond the fence and settle time, how long a write waits for a cutover to finish before it
# is answered 503 (a migrator that died mid-cutover is resumed by running it again).
CUTOVER_WAIT_SECONDS: Final = 30.0


def tenant_erased(tenant_id: str) -> NorthstarError:
    return NorthstarError(
        "tenant.erased", "this tenant's data was erased; it is served no more", 410,
        details={"tenant_id": tenant_id},
    )


_PARTITION: Final = "routing_registry"
# A store no route uses any more is closed this long after it was replaced, so requests that
# resolved it just before the change finish on it.
RETIRE_GRACE_SECONDS: Final = 30.0
# Partitions this process remembers having journaled (forgotten all at once beyond it).
_JOURNALED_MAX: Final = 100_000


def route_misconfigured(kind: str, reason: str, **details: Any) -> NorthstarError:
    """503 ``<kind>.route_misconfigured``: the stored route cannot be served as it stands."""
    return NorthstarError(
        f"{kind}.route_misconfigured",
        f"the route of '{kind}' cannot be served: {reason}",
        503,
        details={"resource_kind": kind, "reason": reason, **details},
        headers={"Retry-After": "30"},
    )


def invalid_params(reason: str, field: str, **details: Any) -> NorthstarError:
    return NorthstarError(
        "routing.invalid_params",
        f"the route is not valid: {reason}",
        422,
        details={"field": field, "reason": reason, **details},
    )


def _field_of(exc: Exception) -> str:
    """The field a msgspec validation message names (``... - at `$.synchronous` ``)."""
    text = str(exc)
    if "unknown field `" in text:
        return text.split("unknown field `", 1)[1].split("`", 1)[0]
    marker = "at `$."
    if marker in text:
        return text.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0]
    return "params"


class KindStore(ItemStore):
    """An :class:`ItemStore` bound to one resource kind: adapter errors become envelopes.

    Opened by :meth:`RoutingRegistry.store_for`, it always serves the kind's *current* route:
    a handle kept across a route change (an SSE subscriber's stream, a long request) passes its
    calls to the store now serving, so it never reads a table the kind has left. While the
    kind is being migrated it also keeps the migration's rules (see :class:`Migration`).
    """

    def __init__(
        self,
        kind: str,
        route: Route,
        connection: Connection,
        inner: ItemStore,
        *,
        registry: RoutingRegistry | None = None,
        tenant_id: str | None = None,
        migration: Migration | None = None,
        retired_ok: bool = False,
    ) -> None:
        self.kind = kind
        self.route = route
        self.backend = connection.backend
        self.label = connection.label
        self.inner = inner
        self.tenant_id = tenant_id
        self.migration = migration
        self._registry = registry
        self._retired_ok = retired_ok
        self._serves = _serving_key(route, migration)
        self._successor: KindStore | None = None

    @property
    def backing(self) -> ItemStore:
        if self._successor is not None:
            return self._successor.backing
        return self.inner.backing

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]  # follows the serving store
        if self._successor is not None:
            return self._successor.capabilities
        return self.inner.capabilities

    @property
    def options(self) -> RouteOptions:
        return self.route.options

    def _mark(self) -> None:
        current = served_by.get()
        label = self.label
        if current is None or label not in current:
            served_by.set((current or frozenset()) | {label})

    def _wrap(self, exc: Exception) -> NorthstarError:
        if isinstance(exc, BackendUnavailable):
            # what this process remembers about the data may not survive the outage
            forget(self.inner)
            return backend_unavailable(self.kind, exc.reason, exc.retry_after)
        return NorthstarError(
            f"{self.kind}.invalid_item", str(exc), 422, details={"resource_kind": self.kind}
        )

    async def _serving(self) -> KindStore:
        """This store if it still serves the kind, else the one that does now."""
        registry = self._registry
        if registry is None:
            return self
        if self._successor is not None:
            return await self._successor._serving()
        migration = self.migration
        if migration is None:
            await registry._fresh()
        else:
            fence = FROZEN_REFRESH_SECONDS if migration.phase in FROZEN_PHASES else migration.fence_seconds
            await registry.ensure_fresh(fence)
        if registry.serving_key(self.kind, self.tenant_id) == self._serves:
            return self
        successor = await registry.store_for(self.kind, self.tenant_id, retired_ok=self._retired_ok)
        self._successor = successor
        return await successor._serving()

    # Every call is timed and traced through the process's observer (a no-op unless the shell
    # installed one), labelled by kind and backend: that is what an operator compares.

    async def get(self, partition: str, key: str) -> Item | None:
        store = await self._serving()
        store._mark()
        with observer().store_call(store.kind, store.backend, "get"):
            try:
                return await store.inner.get(partition, key)
            except (BackendUnavailable, InvalidItem) as exc:
                raise store._wrap(exc) from exc

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
        store = await self._serving()
        store._mark()
        with observer().store_call(store.kind, store.backend, "query"):
            try:
                return await store.inner.query(
                    partition, prefix, after=after, before=before, limit=limit, descending=descending
                )
            except (BackendUnavailable, InvalidItem) as exc:
                raise store._wrap(exc) from exc

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        store = await self._serving()
        if store is not self:
            _refuse_unplanned_checks(store, ops)
        registry = store._registry
        migration = store.migration
        if registry is None:
            await store._write(partition, ops, None)
            return
        if migration is None:
            # This process knows of no migration, so the write is not journaled. A migration
            # recorded since the routes were last read copies only after waiting for every view
            # older than its record to expire (``lease_seconds``, this registry's
            # ``max_view_seconds``) plus its ``settle_seconds``: the write must end before its
            # view expires. The settle margin is left for what the timeout cannot stop: a
            # request the backend already received may still be applied after the write gave
            # up (its outcome unknown, as with any timeout).
            await store._write(partition, ops, registry.check_view_for_writes(store.kind))
            return
        if migration.phase in FROZEN_PHASES:
            store = await registry.after_cutover(store)
            _refuse_unplanned_checks(store, ops)
            await store.write(partition, ops)
            return
        # One deadline, from the moment this process confirmed the phase (its view of the
        # routes at most ``fence_seconds`` old), for the journal mark AND the write: the
        # migrator waits ``fence_seconds + settle_seconds`` after freezing before its final
        # drain, and drops a mark (after copying its partition again) only once it is two
        # ``settle_seconds`` old, so a write that confirmed ``dual`` and landed within
        # ``settle_seconds`` is in a copy made after it landed. A deadline started after a
        # slow journal mark would let the write land after the cutover, on the side that no
        # longer serves. (Re-confirming the phase after the mark would also be sound, but costs
        # a registry read whenever a mark is slow, and the client would wait without bound.)
        journaled = migration.phase in JOURNALED_PHASES and migration.in_scope(partition)
        await store._write(partition, ops, migration.settle_seconds, journal=migration if journaled else None)

    async def _write(
        self,
        partition: str,
        ops: Sequence[Op],
        limit: float | None,
        *,
        journal: Migration | None = None,
    ) -> None:
        """Announce the write in ``journal`` (announced before it is made: the migrator copies
        the partition again after every write it may have missed), then make it; both within
        ``limit`` seconds (503, outcome unknown, beyond: the client retries with its
        idempotency key)."""
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                if journal is not None:
                    assert self._registry is not None
                    await self._registry.journal(journal, partition)
                self._mark()
                with observer().store_call(self.kind, self.backend, "write"):
                    try:
                        await self.inner.write(partition, ops)
                    except (BackendUnavailable, InvalidItem) as exc:
                        raise self._wrap(exc) from exc
        except TimeoutError:
            if not deadline.expired():
                raise
            reason = "write timed out during a migration" if self.migration is not None else (
                "write timed out: it outlasted this process's view of the routing table"
            )
            raise backend_unavailable(self.kind, reason, 1) from None

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        store = await self._serving()
        store._mark()
        with observer().store_call(store.kind, store.backend, "scan"):
            try:
                return await store.inner.scan(prefix, token=token, limit=limit)
            except (BackendUnavailable, InvalidItem) as exc:
                raise store._wrap(exc) from exc

    async def ping(self) -> None:
        with observer().store_call(self.kind, self.backend, "ping"):
            try:
                await self.inner.ping()
            except BackendUnavailable as exc:
                raise self._wrap(exc) from exc


def _refuse_unplanned_checks(store: KindStore, ops: Sequence[Op]) -> None:
    """A batch planned for the table a kind was on may carry :class:`Check` operations the
    table it is on now (after a migration's cutover) cannot evaluate: it is refused whole, as a
    failed condition (nothing written), and its writer plans it again (streams do)."""
    if not store.inner.capabilities.atomic_checks and any(isinstance(op, Check) for op in ops):
        raise ConditionFailed(message="the kind moved to a backend without atomic checks; plan again")


def _serving_key(route: Route, migration: Migration | None) -> tuple[object, ...]:
    """What a store handle serves: its route's table and the migration phase it obeys."""
    return (
        route.connection,
        route.table_name,
        None if migration is None else (migration.id, migration.phase),
    )


class _Broken(msgspec.Struct, frozen=True):
    """A stored route that no longer decodes (written by another version): reported, not served."""

    resource_kind: str
    tenant_id: str | None
    reason: str


class RoutingRegistry:
    """Resolves resource kinds to stores through durable routes over named connections.

    ``connections`` are the operator's (configuration only); a route names one of them.
    ``deployment_mode`` is the service's mode; lab-only backends are refused unless it is
    ``lab``. Routes are cached and re-read from the registry store every ``refresh_seconds``
    so that several processes sharing one registry converge.
    """

    def __init__(
        self,
        registry_store: ItemStore,
        factory: BackendFactory,
        *,
        connections: Mapping[str, Connection],
        deployment_mode: str,
        required_kinds: Sequence[str] = RESOURCE_KINDS,
        refresh_seconds: float = 5.0,
        max_view_seconds: float | None = None,
        monotonic: Callable[[], float] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self._store = registry_store
        self._factory = factory
        self.connections: dict[str, Connection] = dict(connections)
        self.deployment_mode = deployment_mode
        self.required_kinds = tuple(required_kinds)
        self._routes: dict[tuple[str, str | None], tuple[Route, int]] = {}
        self._broken: dict[tuple[str, str | None], _Broken] = {}
        self._retired_tenants: dict[str, RetiredTenant] = {}
        # One store per (connection, table): stores on one connection share its client.
        self._stores: dict[tuple[str, str], ItemStore] = {}
        self._retired: dict[tuple[str, str], float] = {}
        self._migrations: dict[str, tuple[Migration, int]] = {}
        self._refresh_seconds = refresh_seconds
        if max_view_seconds is None:
            max_view_seconds = max(30.0, 6 * refresh_seconds)
        if not max_view_seconds > refresh_seconds:
            raise ValueError("max_view_seconds must be longer than refresh_seconds")
        # A process that could not re-read the routes for this long stops writing (reads go
        # on): a migration waits this long before it relies on every writer journaling.
        self.max_view_seconds = max_view_seconds
        self._loaded_at = float("-inf")
        # when the routes were last read successfully (``_loaded_at`` also moves on a failed
        # refresh, so that a registry outage is retried once per interval, not per call)
        self._confirmed_at = float("-inf")
        self._monotonic = monotonic or time.monotonic
        self._wall = wall or time.time
        self._lock = asyncio.Lock()
        # Tables a caller works on outside any route (a migration's old side being deleted):
        # not closed as unused meanwhile.
        self._held: dict[tuple[str, str], int] = {}
        # (migration id, phase, partition) → when this process last journaled a write to it
        self._journaled: dict[tuple[str, str, str], float] = {}

    # --- the table -------------------------------------------------------------------------

    async def load(self) -> None:
        """Re-read every route, retired tenant and migration from the registry store (one
        paged query: processes serving a migrating kind do this every ``fence_seconds``)."""
        routes: dict[tuple[str, str | None], tuple[Route, int]] = {}
        broken: dict[tuple[str, str | None], _Broken] = {}
        stored: dict[str, list[Item]] = {"route#": [], "tenant#": [], "migration#": []}
        for item in await self._read_all(""):
            kind_of_item = item.key.split("#", 1)[0] + "#"
            if kind_of_item in stored:
                stored[kind_of_item].append(item)
        for item in stored["route#"]:
            try:
                route = msgspec.json.decode(item.value, type=Route)
            except msgspec.DecodeError as exc:
                _, kind, tenant = [*item.key.split("#", 2), "", ""][:3]
                tenant_id = None if tenant in ("", "*") else tenant
                broken[(kind, tenant_id)] = _Broken(kind, tenant_id, f"stored route unreadable: {exc}")
                continue
            expected = DATA_LAYOUTS.get(route.resource_kind)
            if expected is not None and route.data_layout != expected:
                broken[(route.resource_kind, route.tenant_id)] = _Broken(
                    route.resource_kind,
                    route.tenant_id,
                    f"the route's data is in layout {route.data_layout}; this build reads "
                    f"layout {expected} (store the route again for an empty table)",
                )
                continue
            routes[(route.resource_kind, route.tenant_id)] = (route, item.version)
        retired: dict[str, RetiredTenant] = {}
        for item in stored["tenant#"]:
            tenant = item.key[len("tenant#") :]
            try:
                retired[tenant] = msgspec.json.decode(item.value, type=RetiredTenant)
            except msgspec.DecodeError:  # unreadable: still retired, never served
                retired[tenant] = RetiredTenant(tenant_id=tenant, state="erasing", at=0.0)
        migrations: dict[str, tuple[Migration, int]] = {}
        for item in stored["migration#"]:
            try:
                migration = msgspec.json.decode(item.value, type=Migration)
            except msgspec.DecodeError as exc:
                # Written by another version: the kind it names (``<kind>@<tenant or *>``) is
                # not served by this one, rather than served without the migration's rules.
                kind, _, scope = item.key[len("migration#") :].partition("@")
                tenant_id = None if scope in ("", "*") else scope
                reason = f"its migration record is unreadable: {exc}"
                broken[(kind, tenant_id)] = _Broken(kind, tenant_id, reason)
                routes.pop((kind, tenant_id), None)
                continue
            migrations[migration.id] = (migration, item.version)
        self._routes = routes
        self._broken = broken
        self._retired_tenants = retired
        self._migrations = migrations
        self._loaded_at = self._confirmed_at = self._monotonic()
        await self._retire_unused()

    async def _read_all(self, prefix: str) -> list[Item]:
        """Every item ``prefix…`` of the routing table (503 if its store does not answer)."""
        out: list[Item] = []
        after: str | None = None
        while True:
            try:
                page = await self._store.query(_PARTITION, prefix, after=after, limit=200)
            except BackendUnavailable as exc:
                raise backend_unavailable("routing_registry", exc.reason, exc.retry_after) from exc
            out += page
            if len(page) < 200:
                return out
            after = page[-1].key

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

    async def ensure_fresh(self, max_age: float) -> None:
        """Re-read the routes unless they were read successfully within ``max_age`` seconds
        (503 if the registry does not answer: the caller cannot go on without them)."""
        if self._monotonic() - self._confirmed_at > max_age:
            async with self._lock:
                if self._monotonic() - self._confirmed_at > max_age:
                    await self.load()

    def check_view_for_writes(self, kind: str) -> float:
        """503 if the routes could not be confirmed for ``max_view_seconds``: a migration may
        have started meanwhile, and a write it does not know of would be left behind. Else how
        many seconds the view stays valid: a write it allows must end by then."""
        age = self._monotonic() - self._confirmed_at
        if age > self.max_view_seconds:
            raise NorthstarError(
                "routing_registry.backend_unavailable",
                f"the routing table could not be read for {age:.0f} s: writes to '{kind}' wait "
                "until it can",
                503,
                details={"resource_kind": kind},
                headers={"Retry-After": "5"},
            )
        return self.max_view_seconds - age

    def serving_key(self, kind: str, tenant_id: str | None) -> tuple[object, ...] | None:
        route = self._resolve(kind, tenant_id)
        if route is None:
            return None
        return _serving_key(route, self.migration_for(kind, tenant_id))

    # --- migrations ------------------------------------------------------------------------

    def migrations(self) -> list[tuple[Migration, int]]:
        return sorted(self._migrations.values(), key=lambda mv: mv[0].id)

    def migration(self, migration_id: str) -> tuple[Migration, int] | None:
        return self._migrations.get(migration_id)

    def migration_for(self, kind: str, tenant_id: str | None) -> Migration | None:
        """The migration moving ``kind``'s data for ``tenant_id``, if one is under way."""
        for migration, _ in self._migrations.values():
            if migration.covers(kind, tenant_id):
                return migration
        return None

    async def journal(self, migration: Migration, partition: str) -> None:
        """Record that ``partition`` is about to be written (see kernel/migration.py).

        One registry write per partition and ``settle_seconds`` at most: a mark made that
        recently still covers the write, because the migrator drops a mark only once it is
        two ``settle_seconds`` old, after copying the partition again."""
        now = self._wall()
        key = (migration.id, migration.phase, partition)
        last = self._journaled.get(key)
        if last is not None and now - last < migration.settle_seconds:
            return
        mark = Put(
            f"p#{partition}",
            msgspec.json.encode(JournalMark(at=now)),
            # a fresh version each time: the migrator drops the mark only if it is unchanged
            version=random.randint(1, MAX_VERSION),
        )
        try:
            await self._store.write(journal_partition(migration.id, journal_shard(partition)), [mark])
        except BackendUnavailable as exc:
            raise backend_unavailable("routing_registry", exc.reason, exc.retry_after) from exc
        if len(self._journaled) >= _JOURNALED_MAX:
            self._journaled.clear()
        self._journaled[key] = now

    async def after_cutover(self, store: KindStore) -> KindStore:
        """Wait while ``store``'s kind is frozen for a cutover, then the store serving it."""
        migration = store.migration
        assert migration is not None
        wait = migration.fence_seconds + migration.settle_seconds + CUTOVER_WAIT_SECONDS
        deadline = self._monotonic() + wait
        while self._monotonic() < deadline:
            await asyncio.sleep(FROZEN_REFRESH_SECONDS / 2)
            await self.ensure_fresh(FROZEN_REFRESH_SECONDS)
            now = self.migration_for(store.kind, store.tenant_id)
            if now is None or now.phase not in FROZEN_PHASES:
                return await self.store_for(store.kind, store.tenant_id, retired_ok=store._retired_ok)
        raise NorthstarError(
            "migration.cutover_in_progress",
            f"'{store.kind}' is being moved to another table and its writes wait for the cutover",
            503,
            details={"resource_kind": store.kind, "migration": migration.id},
            headers={"Retry-After": "5"},
        )

    async def commit(self, ops: Sequence[Op]) -> None:
        """Write ``ops`` to the routing table atomically and re-read it (a migration's steps:
        its record, its phase and the routes it flips change together or not at all).
        :class:`ConditionFailed` when another writer changed one of them first."""
        try:
            await self._store.write(_PARTITION, ops)
        except BackendUnavailable as exc:
            raise backend_unavailable("routing_registry", exc.reason, exc.retry_after) from exc
        await self.load()

    @property
    def store(self) -> ItemStore:
        """The routing table's own store (journals and progress of migrations live there)."""
        return self._store

    @contextlib.contextmanager
    def holding(self, route: Route) -> Iterator[ItemStore]:
        """The adapter store behind ``route``, kept open while the block runs even if no route
        uses its table any more."""
        key = (route.connection, route.table_name)
        self._held[key] = self._held.get(key, 0) + 1
        try:
            yield self.opened(route)
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]

    def opened(self, route: Route) -> ItemStore:
        """The adapter store behind ``route`` (opened if needed), without a kind's wrapping."""
        connection = self.connections.get(route.connection)
        if connection is None:
            reason = f"connection '{route.connection}' is not configured"
            raise route_misconfigured(route.resource_kind, reason)
        return self._open(route, connection)

    def routes(self) -> list[tuple[Route, int]]:
        return sorted(self._routes.values(), key=lambda rv: (rv[0].resource_kind, rv[0].tenant_id or ""))

    def label_of(self, route: Route) -> str:
        connection = self.connections.get(route.connection)
        return connection.label if connection is not None else f"{route.connection} (unknown connection)"

    def backend_of(self, route: Route) -> str | None:
        connection = self.connections.get(route.connection)
        return connection.backend if connection is not None else None

    def validate(self, route: Route, *, by_system: bool = True) -> Connection:
        """Reject a route the deployment (or this caller) may not use; returns its connection.

        ``by_system=False`` is a tenant admin overriding its own tenant: only connections the
        operator opened to tenant overrides, never a protected kind, no options.
        """
        try:
            # A Route built in code skips its declared constraints; the stored form must pass them.
            msgspec.convert(msgspec.to_builtins(route), type=Route, strict=True)
        except msgspec.ValidationError as exc:
            raise invalid_params(str(exc), _field_of(exc)) from None
        if route.resource_kind not in RESOURCE_KINDS:
            raise NorthstarError(
                "routing.unknown_resource_kind",
                f"unknown resource kind '{route.resource_kind}'",
                422,
                details={"resource_kind": route.resource_kind, "known": list(RESOURCE_KINDS)},
            )
        current_layout = DATA_LAYOUTS[route.resource_kind]
        if route.layout is not None and route.layout != current_layout:
            raise invalid_params(
                f"layout {route.layout} is not the data layout this build writes for "
                f"'{route.resource_kind}' ({current_layout})",
                "layout",
                layout=route.layout,
                current_layout=current_layout,
            )
        connection = self.connections.get(route.connection)
        if connection is None:
            raise NorthstarError(
                "routing.unknown_connection",
                f"no connection named '{route.connection[:80]}' is configured",
                422,
                details={"field": "connection", "known": sorted(self.connections) if by_system else
                         sorted(n for n, c in self.connections.items() if c.tenant_overrides)},
            )
        if route.tenant_id is not None and not TENANT_PATTERN.fullmatch(route.tenant_id):
            raise invalid_params(f"tenant_id must match {TENANT_PATTERN.pattern}", "tenant_id")
        if route.table is not None and not TABLE_PATTERN.fullmatch(route.table):
            raise invalid_params(
                f"table must match {TABLE_PATTERN.pattern}", "table", pattern=TABLE_PATTERN.pattern
            )
        if connection.backend in LAB_ONLY_BACKENDS and self.deployment_mode != "lab":
            raise NorthstarError(
                "routing.lab_backend_forbidden",
                f"backend '{connection.backend}' is allowed only in lab mode",
                422,
                details={"backend": connection.backend, "deployment_mode": self.deployment_mode},
            )
        if not by_system:
            reason = None
            if route.tenant_id is None:
                reason = "only the system operator may change a deployment-wide route"
            elif route.resource_kind in PROTECTED_KINDS:
                reason = f"'{route.resource_kind}' is routed by the operator only"
            elif not connection.tenant_overrides:
                reason = f"connection '{route.connection}' is not open to tenant overrides"
            elif route.options != RouteOptions():
                reason = "route options are set by the operator only"
            if reason is not None:
                raise NorthstarError(
                    "routing.override_forbidden",
                    reason,
                    403,
                    details={"resource_kind": route.resource_kind, "connection": route.connection},
                )
        return connection

    def target(self, route: Route, connection: Connection | None = None) -> Target:
        connection = connection or self.connections[route.connection]
        return connection.target(route.resource_kind, route.table_name)

    async def set_route(
        self,
        route: Route,
        expected_version: int | None = None,
        *,
        by_system: bool = True,
        probe: bool = True,
        force: bool = False,
    ) -> int:
        """Validate, test-open and store ``route`` durably; returns its new version.

        422 ``routing.invalid_params`` when the adapter refuses it, 503
        ``routing.backend_unavailable`` when its backend does not answer (``probe``; the
        operator's own configured routes are seeded before ``provision`` may have run, so they
        are opened but not pinged), 409 when ``expected_version`` is stale. Nothing is stored
        unless the route opens (and answers). A route that moves a kind to another table while
        the table serving it now holds data would leave that data behind: 409
        ``routing.would_strand``, unless the system operator ``force``s it.
        """
        connection = self.validate(route, by_system=by_system)
        if expected_version is not None and not 0 <= expected_version < 2**63:
            raise invalid_params("expected_version must be between 0 and 2**63-1", "expected_version")
        if force and not by_system:
            raise NorthstarError("auth.system_required", "forcing a route change needs the system flag", 403)
        await self._fresh()
        moving = next((m for m, _ in self._migrations.values() if route.resource_kind in m.kinds), None)
        if moving is not None:
            raise NorthstarError(
                "migration.in_progress",
                f"'{route.resource_kind}' is being migrated ({moving.id}); its routes change only "
                "through the migration until it is released or rolled back",
                409,
                details={"resource_kind": route.resource_kind, "migration": moving.id},
            )
        await self._test_open(route, connection, probe=probe)
        if not force:
            await self._refuse_stranding(route, probe=probe)
        route = msgspec.structs.replace(route, layout=DATA_LAYOUTS[route.resource_kind])
        key = route_key(route.resource_kind, route.tenant_id)
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

    async def _refuse_stranding(self, route: Route, *, probe: bool) -> None:
        """409 if ``route`` takes its kind (for its tenant, or for every tenant) away from a table
        that holds data: those items would no longer be read by anything. Without ``probe``
        (configured routes seeded at startup, possibly before ``provision``) a table that does
        not answer is taken as holding nothing, as it is not pinged either."""
        await self._fresh()
        old = self._resolve(route.resource_kind, route.tenant_id)
        if old is None or (old.connection, old.table_name) == (route.connection, route.table_name):
            return
        connection = self.connections.get(old.connection)
        if connection is None:
            return  # the old connection is gone from the configuration: nothing reads it anyway
        # a tenant's override moves that tenant's items only; the deployment-wide route moves
        # every tenant's that has no override of its own (any item counts: conservative)
        prefix = f"{route.tenant_id}|" if route.tenant_id is not None else ""
        try:
            holds = await holds_any(self._open(old, connection), prefix)
        except BackendUnavailable as exc:
            if not probe:
                return
            raise NorthstarError(
                "routing.backend_unavailable",
                f"cannot tell whether the table serving {route.resource_kind} now holds data "
                f"({exc.reason}); the system operator may force the change",
                503,
                details={"resource_kind": route.resource_kind},
                headers={"Retry-After": str(exc.retry_after)},
            ) from exc
        if holds:
            raise NorthstarError(
                "routing.would_strand",
                f"{route.resource_kind} data is in {self.label_of(old)} table '{old.table_name}': "
                "moving the route would leave it behind (export and import it, or erase it, "
                "first; the system operator may force the change)",
                409,
                details={
                    "resource_kind": route.resource_kind,
                    "tenant_id": route.tenant_id,
                    "table": old.table_name,
                    "connection": old.connection,
                },
            )

    async def _test_open(self, route: Route, connection: Connection, *, probe: bool) -> None:
        try:
            store = self._open(route, connection)
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            raise invalid_params(str(exc), _field_of(exc), connection=route.connection) from None
        try:
            if probe:
                await asyncio.wait_for(store.ping(), timeout=10)
        except (BackendUnavailable, TimeoutError, OSError) as exc:
            reason = exc.reason if isinstance(exc, BackendUnavailable) else repr(exc)
            raise NorthstarError(
                "routing.backend_unavailable",
                f"the route's backend did not answer: {reason}",
                503,
                details={"connection": route.connection, "table": route.table_name, "reason": reason},
                headers={"Retry-After": "5"},
            ) from None
        finally:
            # Not in use by any route yet: closed with the next sweep unless a route adopts it.
            key = (route.connection, route.table_name)
            if not self._in_use(key):
                self._retired.setdefault(key, self._monotonic())

    def _in_use(self, key: tuple[str, str]) -> bool:
        if key in self._held or any((r.connection, r.table_name) == key for r, _ in self._routes.values()):
            return True
        # both sides of a migration stay open until it ends
        return any(
            key in ((m.source.connection, m.source.table), (m.target.connection, m.target.table))
            for m, _ in self._migrations.values()
        )

    def _open(self, route: Route, connection: Connection) -> ItemStore:
        key = (route.connection, route.table_name)
        inner = self._stores.get(key)
        if inner is None:
            inner = self._factory.open(self.target(route, connection))
            self._stores[key] = inner
        return inner

    async def _retire_unused(self) -> None:
        """Close stores no route has used for ``RETIRE_GRACE_SECONDS``."""
        now = self._monotonic()
        for key in [k for k in self._retired if k not in self._stores]:
            del self._retired[key]
        for key in list(self._stores):
            if self._in_use(key):
                self._retired.pop(key, None)
                continue
            since = self._retired.setdefault(key, now)
            if now - since >= RETIRE_GRACE_SECONDS:
                store = self._stores.pop(key)
                self._retired.pop(key, None)
                try:
                    await store.close()
                except Exception:  # a failing close must not break routing
                    pass

    # --- resolution ------------------------------------------------------------------------

    def _resolve(self, kind: str, tenant_id: str | None) -> Route | None:
        if tenant_id is not None and (kind, tenant_id) in self._routes:
            return self._routes[(kind, tenant_id)][0]
        hit = self._routes.get((kind, None))
        return hit[0] if hit else None

    def _broken_for(self, kind: str, tenant_id: str | None) -> _Broken | None:
        if tenant_id is not None and (kind, tenant_id) in self._broken:
            return self._broken[(kind, tenant_id)]
        return self._broken.get((kind, None))

    # --- retired tenants -----------------------------------------------------------------

    def retired(self, tenant_id: str) -> RetiredTenant | None:
        """The retirement record of ``tenant_id`` as last loaded (``None``: served)."""
        return self._retired_tenants.get(tenant_id)

    async def retire_tenant(self, tenant_id: str, now: float) -> RetiredTenant:
        """Record durably that ``tenant_id`` is being erased (kept if it already is): every
        process sharing this registry refuses its requests from its next refresh on."""
        key = _tenant_key(tenant_id)
        record = RetiredTenant(tenant_id=tenant_id, state="erasing", at=now)
        try:
            await self._store.write(_PARTITION, [Put(key, msgspec.json.encode(record), condition=Absent())])
        except ConditionFailed:
            pass  # retired before (an erasure resumed)
        except BackendUnavailable as exc:
            raise backend_unavailable("routing_registry", exc.reason, exc.retry_after) from exc
        await self.load()
        return self._retired_tenants[tenant_id]

    async def complete_retirement(self, tenant_id: str, now: float, items_deleted: int) -> None:
        """Mark the erasure of ``tenant_id`` complete (it stays retired)."""
        record = RetiredTenant(tenant_id=tenant_id, state="erased", at=now, items_deleted=items_deleted)
        try:
            await self._store.write(_PARTITION, [Put(_tenant_key(tenant_id), msgspec.json.encode(record))])
        except BackendUnavailable as exc:
            raise backend_unavailable("routing_registry", exc.reason, exc.retry_after) from exc
        await self.load()

    async def store_for(
        self, kind: str, tenant_id: str | None = None, *, retired_ok: bool = False
    ) -> KindStore:
        """The store serving ``kind`` (for ``tenant_id``): 503 ``<kind>.missing_route`` if none,
        503 ``<kind>.route_misconfigured`` if its route cannot be served as stored, 410
        ``tenant.erased`` for a retired tenant (unless ``retired_ok``: the erasure itself)."""
        await self._fresh()
        if tenant_id is not None and not retired_ok and tenant_id in self._retired_tenants:
            raise tenant_erased(tenant_id)
        route = self._resolve(kind, tenant_id)
        if route is None:
            broken = self._broken_for(kind, tenant_id)
            if broken is not None:
                raise route_misconfigured(kind, broken.reason)
            raise missing_route(kind)
        connection = self.connections.get(route.connection)
        if connection is None:
            raise route_misconfigured(kind, f"connection '{route.connection}' is not configured")
        if connection.backend in LAB_ONLY_BACKENDS and self.deployment_mode != "lab":
            # A route written by a lab deployment is never honoured by a sellable one.
            raise missing_route(kind)
        try:
            inner = self._open(route, connection)
        except Exception as exc:  # any adapter refusal is a misconfiguration
            raise route_misconfigured(kind, f"{type(exc).__name__}: {exc}"[:300]) from None
        return KindStore(
            kind,
            route,
            connection,
            inner,
            registry=self,
            tenant_id=tenant_id,
            migration=self.migration_for(kind, tenant_id),
            retired_ok=retired_ok,
        )

    def check_startup(self) -> None:
        """Raise :class:`RoutingError` if this deployment may not start (SPEC §2.3)."""
        problems: list[str] = []
        def order(kv: tuple[tuple[str, str | None], Any]) -> tuple[str, str]:
            return (kv[0][0], kv[0][1] or "")

        for (kind, tenant), broken in sorted(self._broken.items(), key=order):
            problems.append(f"{kind}{f' (tenant {tenant})' if tenant else ''}: {broken.reason}")
        for (kind, tenant), (route, _) in sorted(self._routes.items(), key=order):
            if route.connection not in self.connections:
                where = f" (tenant {tenant})" if tenant else ""
                problems.append(f"{kind}{where}: connection '{route.connection}' is not configured")
        if self.deployment_mode == "lab":
            return  # lab serves what it can; a broken route answers 503 route_misconfigured
        for kind in self.required_kinds:
            default = self._resolve(kind, None)
            if default is None:
                if (kind, None) not in self._broken:
                    problems.append(f"{kind}: no route")
            elif self.backend_of(default) in LAB_ONLY_BACKENDS:
                problems.append(f"{kind}: routed to lab-only backend '{self.backend_of(default)}'")
        for (kind, tenant), (route, _) in self._routes.items():
            if tenant is not None and self.backend_of(route) in LAB_ONLY_BACKENDS:
                problems.append(
                    f"{kind} (tenant {tenant}): routed to lab-only backend '{self.backend_of(route)}'"
                )
        if problems:
            raise RoutingError(
                f"refusing to start in mode '{self.deployment_mode}': " + "; ".join(problems)
            )

    async def diagnostics(self) -> dict[str, Any]:
        """Which kinds are routed, to what, and whether their backend answers. Never raises
        for a route's sake: a broken route is reported in its kind's entry."""
        await self._fresh()

        async def probe(kind: str) -> dict[str, Any]:
            route = self._resolve(kind, None)
            if route is None:
                broken = self._broken_for(kind, None)
                if broken is not None:
                    return {"routed": True, "backend": None, "reachable": False,
                            "error": f"{kind}.route_misconfigured"}
                return {"routed": False, "backend": None, "reachable": None}
            entry: dict[str, Any] = {
                "routed": True, "backend": self.label_of(route), "connection": route.connection,
                "reachable": True,
            }
            try:
                store = await self.store_for(kind)
                await asyncio.wait_for(store.ping(), timeout=5)
            except NorthstarError as exc:
                entry.update(reachable=False, error=exc.code)
            except (TimeoutError, OSError) as exc:
                entry.update(reachable=False, error=f"{kind}.backend_unavailable: {exc!r}")
            except Exception as exc:  # diagnostics report, they never fail
                entry.update(reachable=False, error=f"{kind}.route_misconfigured: {type(exc).__name__}")
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
                {"resource_kind": r.resource_kind, "tenant_id": r.tenant_id, "backend": self.label_of(r),
                 "connection": r.connection}
                for (_, t), (r, _) in sorted(self._routes.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
                if t is not None
            ],
        }

    async def close(self) -> None:
        """Close every store this registry opened, and the registry's own store (it was handed
        over at construction: nothing else closes it)."""
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
        self._retired.clear()
        await self._store.close()
