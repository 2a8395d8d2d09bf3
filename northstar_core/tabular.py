"""Tabular stores: flows, graphs, overlays/lenses, SEO config and strategy-lock snapshots.

Each table is its own resource kind so that routes can differ (``TABLES``). A record is
``{id, table, scope, json_blob, version, created_at, updated_at}``; its scope is
tenant / mode / project (the partition) plus the surface, app and user it was written from.
Writes are versioned: create-only without ``expected_version`` (409 if the id exists), else
compare-and-set (409 ``tabular.version_conflict`` with the current version). Every version is
kept (``?version=`` reads one, ``/versions`` lists them) and versions only grow, also across a
delete and re-create.

Strategy-lock snapshots are also on the event spine (SPEC: "tabular_store + event_spine emit"):
every write and delete of ``strategy_lock_snapshots`` appends a ``strategy_lock`` event (source
``system``) after the record is stored, naming the record, its version and a SHA-256 of its
``json_blob`` (the blob itself stays in the table, where every version remains readable, so an
event never outgrows the spine's item limit).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_VERSION, check_expected_version, check_int, check_limit, json_bytes
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, invalid, not_found, value_too_large
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page, page_of
from northstar_core.kernel.records import MAX_RECORD_BYTES, Item, RecordListing, VersionedRecords
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition, project_segment
from northstar_core.spine import EventSpine

DOMAIN: Final = "tabular"
TABLES: Final[dict[str, str]] = {
    "flows": "flow_store",
    "graphs": "graph_store",
    "overlays": "overlay_store",
    "seo_config": "seo_config_store",
    "strategy_lock_snapshots": "strategy_lock_store",
}
_RECORD_LIMIT: Final = MAX_RECORD_BYTES - 8192
# Tables whose writes are also events on the spine: table -> spine event type.
SPINE_TABLES: Final[dict[str, str]] = {"strategy_lock_snapshots": "strategy_lock"}


class TabularScope(msgspec.Struct, kw_only=True):
    tenant_id: str
    mode: str
    project_id: str | None = None
    surface_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None


class TabularRecord(msgspec.Struct, kw_only=True):
    id: str
    table: str
    scope: TabularScope
    json_blob: Any
    version: int = 1
    created_at: str
    updated_at: str


class VersionInfo(msgspec.Struct, kw_only=True):
    version: int
    updated_at: str


def encoded_blob(json_blob: Any) -> bytes:
    """A blob's canonical JSON (sorted keys): what ``json_blob_sha256`` in spine events hashes."""
    return msgspec.json.encode(json_blob, order="sorted")


def table_kind(table: str) -> str:
    """The resource kind of ``table``, or 404 ``tabular.unknown_table``."""
    kind = TABLES.get(table)
    if kind is None:
        raise NorthstarError(
            f"{DOMAIN}.unknown_table",
            f"unknown table '{table[:100]}'",
            404,
            details={"table": table[:200], "known": sorted(TABLES)},
        )
    return kind


class TabularStore:
    """Versioned records with history in the five tabular tables."""

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        clock: Clock,
        *,
        spine: EventSpine | None = None,
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.spine = spine

    async def _emit(self, ctx: RequestContext, table: str, payload: dict[str, Any]) -> None:
        """The spine event of a write to a table listed in ``SPINE_TABLES`` (raises if it cannot
        be recorded: the caller learns that the snapshot is not on the spine and may retry)."""
        event_type = SPINE_TABLES.get(table)
        if event_type is None:
            return
        if self.spine is None:
            raise NorthstarError(
                "event_spine.unavailable", "no event spine is wired to record strategy-lock snapshots", 503
            )
        await self.spine.record(ctx, event_type, {"table": table, **payload})

    async def _records(self, ctx: RequestContext, table: str) -> VersionedRecords:
        kind = table_kind(table)
        store = await self.registry.store_for(kind, ctx.tenant_id)
        part = partition(ctx, "tabular", table, project_segment(ctx))
        return VersionedRecords(
            store, part, DOMAIN, history=True, ttl_seconds=store.route.options.default_ttl_seconds,
            clock=self.clock.now,
        )

    @staticmethod
    def _decode(item: Item) -> TabularRecord:
        record = msgspec.json.decode(item.value, type=TabularRecord)
        record.version = item.version
        return record

    async def put(
        self,
        ctx: RequestContext,
        table: str,
        record_id: str,
        json_blob: Any,
        *,
        expected_version: int | None,
    ) -> TabularRecord:
        """Create (``expected_version`` None) or replace at ``expected_version``."""
        ctx.require_role("member")
        records = await self._records(ctx, table)
        check_id(DOMAIN, "id", record_id)
        check_expected_version(DOMAIN, expected_version)
        now = iso(self.clock.now())
        created_at = now
        if expected_version is not None:
            current = await records.get(record_id)
            if current is not None and current.version == expected_version:
                created_at = self._decode(current).created_at
        record = TabularRecord(
            id=record_id,
            table=table,
            scope=TabularScope(
                tenant_id=ctx.tenant_id,
                mode=ctx.mode,
                project_id=ctx.project_id,
                surface_id=ctx.surface_id,
                app_id=ctx.app_id,
                user_id=ctx.user_id,
            ),
            json_blob=json_blob,
            created_at=created_at,
            updated_at=now,
        )
        encoded = json_bytes(DOMAIN, record)
        if len(encoded) > _RECORD_LIMIT:
            raise value_too_large(
                DOMAIN,
                f"the record is {len(encoded)} bytes; the limit is {_RECORD_LIMIT}",
                size=len(encoded),
                limit=_RECORD_LIMIT,
            )
        record.version = await records.put(record_id, encoded, expected_version=expected_version)
        await self._emit(
            ctx,
            table,
            {
                "action": "snapshot.written",
                "id": record_id,
                "version": record.version,
                "project_id": ctx.project_id,
                "json_blob_sha256": hashlib.sha256(encoded_blob(json_blob)).hexdigest(),
                "updated_at": record.updated_at,
            },
        )
        return record

    async def get(
        self, ctx: RequestContext, table: str, record_id: str, *, version: int | None = None
    ) -> TabularRecord:
        """The latest record, or the given past ``version``; 404 ``tabular.not_found`` if absent.

        A past version stays readable after the record is deleted (history is append-only).
        """
        records = await self._records(ctx, table)
        check_id(DOMAIN, "id", record_id)
        if version is None:
            item = await records.get(record_id)
        else:
            if version < 1:
                raise invalid(DOMAIN, "version must be 1 or more", field="version", version=version)
            check_int(DOMAIN, "version", version, lo=1, hi=MAX_VERSION)
            item = await records.get_version(record_id, version)
        if item is None:
            raise not_found(
                DOMAIN, f"{table} record '{record_id}'", table=table, id=record_id, version=version
            )
        return self._decode(item)

    async def delete(
        self, ctx: RequestContext, table: str, record_id: str, *, expected_version: int | None = None
    ) -> None:
        ctx.require_role("member")
        records = await self._records(ctx, table)
        check_id(DOMAIN, "id", record_id)
        check_expected_version(DOMAIN, expected_version, delete=True)
        await records.delete(record_id, expected_version=expected_version)
        await self._emit(
            ctx,
            table,
            {
                "action": "snapshot.deleted",
                "id": record_id,
                "version": expected_version,
                "project_id": ctx.project_id,
            },
        )

    async def versions(
        self,
        ctx: RequestContext,
        table: str,
        record_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[VersionInfo]:
        """Every stored version of the record, oldest first, a page at a time."""
        check_limit(DOMAIN, limit)
        records = await self._records(ctx, table)
        check_id(DOMAIN, "id", record_id)
        stream = f"{table}/{project_segment(ctx)}/{record_id}/versions"
        after = 0
        if cursor:
            position = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, stream, cursor)
            after = int(position) if position.isdigit() and int(position) <= MAX_VERSION else 0
        items = await records.versions(record_id, after=after, limit=limit + 1)
        if not items and after == 0:
            raise not_found(DOMAIN, f"{table} record '{record_id}'", table=table, id=record_id)
        return page_of(
            items,
            limit,
            lambda item: self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, stream, str(item.version)),
            lambda item: VersionInfo(version=item.version, updated_at=self._decode(item).updated_at),
            resume_from=cursor,
            stream=True,  # a page at the end still continues from its last version
        )

    async def list(
        self, ctx: RequestContext, table: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[TabularRecord]:
        """The table's live records in the caller's tenant/mode/project, ordered by id."""
        records = await self._records(ctx, table)
        check_limit(DOMAIN, limit)
        listing = RecordListing(records, self.cursors, ctx, f"{table}/{project_segment(ctx)}")
        return await listing.page(cursor, limit, self._decode)
