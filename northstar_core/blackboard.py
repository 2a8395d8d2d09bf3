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

from northstar_core.bounds import check_expected_version, check_limit, json_bytes
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import not_found, route_option_invalid, value_too_large
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.kernel.records import MAX_RECORD_BYTES, Item, RecordListing, VersionedRecords
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition, project_segment

KIND: Final = "blackboard_store"
DOMAIN: Final = "blackboard"
DEFAULT_MAX_VALUE_BYTES: Final = 64 * 1024
VALUE_LIMIT_CEILING: Final = MAX_RECORD_BYTES - 8192  # room for the fields around the value


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
        part = partition(ctx, "blackboard", project_segment(ctx), run_id)
        configured = store.route.options.max_value_bytes
        raw = DEFAULT_MAX_VALUE_BYTES if configured is None else configured
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise route_option_invalid(DOMAIN, KIND, "max_value_bytes", raw)
        records = VersionedRecords(
            store, part, DOMAIN, history=True, ttl_seconds=store.route.options.default_ttl_seconds,
            clock=self.clock.now,
        )
        return records, min(raw, VALUE_LIMIT_CEILING)

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
            raise value_too_large(
                DOMAIN,
                f"the value is {len(encoded_value)} bytes; this route allows {limit} per key",
                size=len(encoded_value),
                limit=limit,
                key=key,
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
        check_limit(DOMAIN, limit)
        listing = RecordListing(records, self.cursors, ctx, f"{project_segment(ctx)}/{run_id}")
        return await listing.page(cursor, limit, self._decode)
