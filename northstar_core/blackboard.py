"""The blackboard: shared, versioned run state (resource kind ``blackboard_store``).

Scope: tenant / mode / project / run (the partition name). Every write names the version it
replaces, or creates (409 ``blackboard.version_conflict`` if the key exists): there is no
silent overwrite, ever. Versions of a key only grow, also across a delete and re-create, so a
writer holding a version from before a delete cannot overwrite the new entry. Each value is
limited in size by the route (``route.options.max_value_bytes``), answered with 413
``blackboard.value_too_large``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_VERSION, check_int
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, invalid, not_found
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.kernel.records import VersionedRecords, record_key
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition
from northstar_core.storage import MAX_VALUE_BYTES, Item

KIND: Final = "blackboard_store"
DOMAIN: Final = "blackboard"
DEFAULT_MAX_VALUE_BYTES: Final = 64 * 1024
VALUE_LIMIT_CEILING: Final = MAX_VALUE_BYTES - 8192  # room for the fields around the value
NO_PROJECT: Final = "~"  # not a valid id, so it never collides with a real project
MAX_PAGE: Final = 200

def check_limit(domain: str, limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise invalid(domain, f"limit must be between 1 and {MAX_PAGE}", field="limit", limit=limit)
    return limit


def check_expected_version(domain: str, expected_version: int | None, *, delete: bool = False) -> int | None:
    """``expected_version`` if absent or within range (422 naming it if not).

    A write's must be a version a record can have: it is followed by ``expected_version + 1``,
    which must stay storable. A delete's only has to be representable: one below 1 never
    matches a record and answers as stale (409), as any other mismatch does.
    """
    if expected_version is not None:
        if delete:
            check_int(domain, "expected_version", expected_version, lo=-MAX_VERSION, hi=MAX_VERSION)
        else:
            check_int(domain, "expected_version", expected_version, lo=1, hi=MAX_VERSION - 1)
    return expected_version


async def records_page(
    records: VersionedRecords,
    cursors: CursorCodec,
    ctx: RequestContext,
    *,
    domain: str,
    stream: str,
    cursor: str | None,
    limit: int,
) -> tuple[list[Item], str | None, bool]:
    """A page of live records after a signed cursor bound to ``stream`` (tenant and mode)."""
    check_limit(domain, limit)
    after = cursors.decode(domain, ctx.tenant_id, ctx.mode, stream, cursor) if cursor else None
    items = await records.list(after_key=after, limit=limit + 1)
    has_more = len(items) > limit
    items = items[:limit]
    next_cursor = (
        cursors.encode(domain, ctx.tenant_id, ctx.mode, stream, record_key(items[-1])) if items else cursor
    )
    return items, next_cursor, has_more


def route_misconfigured(domain: str, kind: str, param: str, value: Any) -> NorthstarError:
    """503 ``<domain>.route_misconfigured``: a route parameter this domain reads is unusable."""
    return NorthstarError(
        f"{domain}.route_misconfigured",
        f"the route of '{kind}' has an invalid '{param}' parameter",
        503,
        details={"resource_kind": kind, "param": param, "value": str(value)[:100]},
        headers={"Retry-After": "30"},
    )


def json_bytes(domain: str, value: Any) -> bytes:
    """``value`` as JSON, or 422 ``<domain>.invalid_request`` if it is not JSON-encodable."""
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise invalid(domain, f"the value is not JSON-encodable: {exc}") from None


class BlackboardEntry(msgspec.Struct, kw_only=True):
    run_id: str
    key: str
    value: Any
    version: int = 1
    created_at: str
    updated_at: str
    updated_by: str
    tenant_id: str
    mode: str
    project_id: str | None = None


class Blackboard:
    """Read, write (compare-and-set), delete and list entries of a run's blackboard."""

    def __init__(self, registry: RoutingRegistry, cursors: CursorCodec, clock: Clock) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock

    async def _records(self, ctx: RequestContext, run_id: str) -> tuple[VersionedRecords, int]:
        check_id(DOMAIN, "run_id", run_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        part = partition(ctx, "blackboard", ctx.project_id or NO_PROJECT, run_id)
        configured = store.route.options.max_value_bytes
        raw = DEFAULT_MAX_VALUE_BYTES if configured is None else configured
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            # A bad route is an operator error: refuse loudly rather than guess a limit.
            raise route_misconfigured(DOMAIN, KIND, "max_value_bytes", raw)
        return VersionedRecords(store, part, DOMAIN, history=True), min(raw, VALUE_LIMIT_CEILING)

    @staticmethod
    def _decode(item: Item) -> BlackboardEntry:
        entry = msgspec.json.decode(item.value, type=BlackboardEntry)
        entry.version = item.version
        return entry

    async def put(
        self,
        ctx: RequestContext,
        run_id: str,
        key: str,
        value: Any,
        *,
        expected_version: int | None,
    ) -> BlackboardEntry:
        """Write ``value``: create-only when ``expected_version`` is None, else compare-and-set.

        409 ``blackboard.version_conflict`` (with ``details.current_version``) when the key
        exists on create or its version is not ``expected_version``; nothing is written.
        """
        ctx.require_role("member")
        check_id(DOMAIN, "key", key)
        check_expected_version(DOMAIN, expected_version)
        records, limit = await self._records(ctx, run_id)
        encoded_value = json_bytes(DOMAIN, value)
        if len(encoded_value) > limit:
            raise NorthstarError(
                f"{DOMAIN}.value_too_large",
                f"the value is {len(encoded_value)} bytes; this route allows {limit} per key",
                413,
                details={"size": len(encoded_value), "limit": limit, "key": key},
            )
        now = iso(self.clock.now())
        created_at = now
        if expected_version is not None:
            current = await records.get(key)
            if current is not None and current.version == expected_version:
                created_at = self._decode(current).created_at
        entry = BlackboardEntry(
            run_id=run_id,
            key=key,
            value=msgspec.Raw(encoded_value),
            created_at=created_at,
            updated_at=now,
            updated_by=ctx.agent_id or ctx.user_id,
            tenant_id=ctx.tenant_id,
            mode=ctx.mode,
            project_id=ctx.project_id,
        )
        entry.version = await records.put(key, msgspec.json.encode(entry), expected_version=expected_version)
        entry.value = value
        return entry

    async def get(self, ctx: RequestContext, run_id: str, key: str) -> BlackboardEntry:
        """The current entry, or 404 ``blackboard.not_found``."""
        check_id(DOMAIN, "key", key)
        records, _ = await self._records(ctx, run_id)
        item = await records.get(key)
        if item is None:
            raise not_found(DOMAIN, f"blackboard entry '{key}'", run_id=run_id, key=key)
        return self._decode(item)

    async def delete(
        self, ctx: RequestContext, run_id: str, key: str, *, expected_version: int | None = None
    ) -> None:
        """Delete the entry (at ``expected_version`` when given: 409 if stale; 404 if absent)."""
        ctx.require_role("member")
        check_id(DOMAIN, "key", key)
        check_expected_version(DOMAIN, expected_version, delete=True)
        records, _ = await self._records(ctx, run_id)
        await records.delete(key, expected_version=expected_version)

    async def list(
        self, ctx: RequestContext, run_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[BlackboardEntry]:
        """Entries of the run ordered by key, a page at a time."""
        records, _ = await self._records(ctx, run_id)
        items, next_cursor, has_more = await records_page(
            records,
            self.cursors,
            ctx,
            domain=DOMAIN,
            stream=f"{ctx.project_id or NO_PROJECT}/{run_id}",
            cursor=cursor,
            limit=limit,
        )
        return Page([self._decode(i) for i in items], next_cursor, has_more)
