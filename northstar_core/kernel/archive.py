"""Tenant archives: every stored item of one tenant, in every resource kind, as JSON lines, and
back into another deployment.

An archive is a sequence of lines, each one JSON object tagged by ``"t"``:

* ``header`` — first: ``format`` (``northstar.archive``), ``version`` (:data:`VERSION`), the
  tenant, the data layout version of every kind (:data:`~northstar_core.routing.DATA_LAYOUTS`)
  and the ``groups``: kinds whose routes share one backing table are exported once, as a group;
* ``item`` — one stored item, exactly as stored: its group, partition, key, value (base64),
  version and expiry. Items are the storage port's, below every domain, so an import reproduces
  ids, sequence numbers, revisions, idempotency records and signed cursors' positions exactly;
* ``mark`` — after every page of items: how many items so far, the running digest (SHA-256
  chained over the pages' item lines) and a signed ``cursor`` from which an interrupted export
  resumes (the lines after that mark, no header again);
* ``end`` — last: the item count and digest. An archive without it is truncated;
* ``error`` — instead of ``end`` when the export failed part-way (its envelope); resume from the
  last mark.

Every partition of a tenant starts with ``<tenant>|`` (:mod:`northstar_core.scope`), which is
what the export scans for and what the import insists on: a crafted archive cannot write into
another tenant. The import writes each item only where nothing is (``Absent``): into an empty
deployment, or — resuming an import that stopped — over its own earlier writes, which must be
identical (anything else is a conflict and nothing is overwritten). Items already expired are
skipped. Routes are the operator's configuration and are not part of an archive; the deployment
imported into must route the kinds of one exported group to one table (it may share more).

:meth:`Archives.erase` is the other way out: every item of the tenant deleted, by the same
scan, after the routing registry has retired the tenant (see the method).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any, Final

import msgspec

from northstar_core.clock import Clock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, invalid
from northstar_core.identity import TENANT_PATTERN, RequestContext
from northstar_core.routing import DATA_LAYOUTS, RESOURCE_KINDS, KindStore, RoutingRegistry, holds_any
from northstar_core.storage import (
    MAX_EXPIRES_AT,
    MAX_SCAN_PAGE,
    Absent,
    ConditionFailed,
    Delete,
    InvalidItem,
    Item,
    ItemStore,
    Put,
    VersionIs,
    validate_key,
)

DOMAIN: Final = "archive"
FORMAT: Final = "northstar.archive"
VERSION: Final = 1
# Items per scan page, hence between two marks; an import holds one page in memory.
PAGE: Final = 100
MAX_PAGE_ITEMS: Final = 1000
# Items per import batch (one partition each; far below every backend's batch limit).
BATCH: Final = 25
# An item line holds at most a 350 KB value in base64 plus its names.
MAX_LINE_BYTES: Final = 1_000_000
# Export cursors carry an adapter's scan token (a DynamoDB key, a partition and key...).
MAX_CURSOR_CHARS: Final = 8192
MAX_ITEM_VERSION: Final = 2**53
# Passes of an erasure over every table before it gives up (writes in flight when the tenant
# was retired are found by the second).
MAX_ERASE_PASSES: Final = 5


class ArchiveHeader(msgspec.Struct, tag_field="t", tag="header", kw_only=True):
    """The first line: what the archive is and the kinds' groups (one table each)."""

    format: str
    version: int
    tenant_id: str
    layouts: dict[str, int]
    groups: list[list[str]]


class ArchiveItem(msgspec.Struct, tag_field="t", tag="item", kw_only=True, omit_defaults=True):
    """One stored item, exactly as stored (``value`` in base64); ``group`` indexes the
    header's groups."""

    group: int
    partition: str
    key: str
    value: bytes
    version: int = 1
    expires_at: float | None = None


class ArchiveMark(msgspec.Struct, tag_field="t", tag="mark", kw_only=True):
    """After each page: items so far, the digest so far, and the cursor to resume after it."""

    items: int
    digest: str
    cursor: str


class ArchiveEnd(msgspec.Struct, tag_field="t", tag="end", kw_only=True):
    """The last line of a complete archive."""

    items: int
    digest: str


class ArchiveError(msgspec.Struct, tag_field="t", tag="error", kw_only=True):
    """Instead of the end: the export failed part-way (the error envelope's ``error``)."""

    error: dict[str, Any]


Line = ArchiveHeader | ArchiveItem | ArchiveMark | ArchiveEnd | ArchiveError

_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(Line)


class _Position(msgspec.Struct, array_like=True, frozen=True):
    """Where an export stands after a mark: the group, its scan token (``None``: the group's
    first page), the items so far and the digest so far, and which groups it was made for."""

    group: int
    token: str | None
    items: int
    digest: str
    layout: str


class EraseReport(msgspec.Struct, kw_only=True):
    tenant_id: str
    deleted: int
    passes: int


class ImportReport(msgspec.Struct, kw_only=True):
    tenant_id: str
    items: int
    written: int
    already_present: int
    expired: int
    digest: str


def _chain(digest: str, page: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(digest) + page).hexdigest()


def _truncated(report: ImportReport, **details: Any) -> NorthstarError:
    return NorthstarError(
        f"{DOMAIN}.truncated",
        "the archive ended before its end line; every page up to its last mark is written, "
        "import it again with resume to complete it",
        422,
        details={"items": report.items, "written": report.written, **details},
    )


def _conflict(partition: str, key: str) -> NorthstarError:
    return NorthstarError(
        f"{DOMAIN}.conflict",
        "an item of the archive is already here with other content",
        409,
        details={"partition": partition[:300], "key": key[:300]},
    )


def _check_tenant(tenant_id: str) -> None:
    if not isinstance(tenant_id, str) or not TENANT_PATTERN.fullmatch(tenant_id):
        raise NorthstarError(
            f"{DOMAIN}.invalid_tenant",
            f"'tenant_id' must match {TENANT_PATTERN.pattern}",
            422,
            details={"field": "tenant_id", "value": str(tenant_id)[:200]},
        )


class Archives:
    """Export, import and erasure of whole tenants (system callers only)."""

    def __init__(self, registry: RoutingRegistry, cursors: CursorCodec, clock: Clock) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock

    async def _groups(self, tenant_id: str, *, retired_ok: bool = False) -> list[tuple[list[str], KindStore]]:
        """The tenant's kinds grouped by the table that holds them, in kind order."""
        groups: dict[int, tuple[list[str], KindStore]] = {}
        for kind in RESOURCE_KINDS:
            store = await self.registry.store_for(kind, tenant_id, retired_ok=retired_ok)
            groups.setdefault(id(store.backing), ([], store))[0].append(kind)
        return list(groups.values())

    @staticmethod
    def _layout_id(groups: Sequence[tuple[list[str], KindStore]]) -> str:
        """What an export cursor's scan tokens belong to: the groups and the table each is in."""
        tables = [(kinds, store.route.connection, store.route.table_name) for kinds, store in groups]
        return hashlib.sha256(msgspec.json.encode(tables)).hexdigest()[:16]

    def _cursor(self, tenant_id: str, position: _Position) -> str:
        return self.cursors.encode(DOMAIN, tenant_id, "*", "export", msgspec.json.encode(position).decode())

    def _position(self, tenant_id: str, cursor: str) -> _Position:
        text = self.cursors.decode(DOMAIN, tenant_id, "*", "export", cursor, max_len=MAX_CURSOR_CHARS)
        try:
            return msgspec.json.decode(text, type=_Position)
        except msgspec.DecodeError:
            # signed by this deployment, so only another version could have written it
            raise NorthstarError(
                f"{DOMAIN}.cursor_invalid", "the export cursor is not one of this version", 410
            ) from None

    # --- export -----------------------------------------------------------------------------

    async def export(
        self, ctx: RequestContext, tenant_id: str, cursor: str | None = None
    ) -> AsyncIterator[bytes]:
        """The archive of ``tenant_id`` as lines (each ending in a newline), from the start or
        after the mark whose ``cursor`` is given. Checks (system caller, tenant, cursor,
        routes) are done before the first line; a failure later is the ``error`` line."""
        ctx.require_system()
        _check_tenant(tenant_id)
        groups = await self._groups(tenant_id)
        kinds = [g[0] for g in groups]
        layout = self._layout_id(groups)
        if cursor is None:
            position = _Position(0, None, 0, "00" * 32, layout)
            first: bytes | None = _encoder.encode(
                ArchiveHeader(
                    format=FORMAT,
                    version=VERSION,
                    tenant_id=tenant_id,
                    layouts=dict(DATA_LAYOUTS),
                    groups=kinds,
                )
            )
        else:
            position = self._position(tenant_id, cursor)
            if position.layout != layout or not 0 <= position.group <= len(groups):
                raise NorthstarError(
                    f"{DOMAIN}.routes_changed",
                    "the routes changed since this export began; start it again",
                    409,
                )
            first = None
        return self._lines(tenant_id, groups, position, first)

    async def _lines(
        self,
        tenant_id: str,
        groups: list[tuple[list[str], KindStore]],
        position: _Position,
        first: bytes | None,
    ) -> AsyncIterator[bytes]:
        if first is not None:
            yield first + b"\n"
        prefix = tenant_id + "|"
        items, digest, token = position.items, position.digest, position.token
        try:
            for group in range(position.group, len(groups)):
                store = groups[group][1]
                while True:
                    page = await store.scan(prefix, token=token, limit=PAGE)
                    found = [(p, item) for p, item in page.items if p.startswith(prefix)]
                    lines = b"".join(
                        _encoder.encode(
                            ArchiveItem(
                                group=group,
                                partition=partition,
                                key=item.key,
                                value=item.value,
                                version=item.version,
                                expires_at=item.expires_at,
                            )
                        )
                        + b"\n"
                        for partition, item in found
                    )
                    items += len(found)
                    digest = _chain(digest, lines)
                    token = page.token
                    # the next page: this group's, or the next group's first
                    after = (
                        _Position(group, token, items, digest, position.layout)
                        if token
                        else _Position(group + 1, None, items, digest, position.layout)
                    )
                    mark = ArchiveMark(items=items, digest=digest, cursor=self._cursor(tenant_id, after))
                    yield lines + _encoder.encode(mark) + b"\n"
                    if token is None:
                        break
            yield _encoder.encode(ArchiveEnd(items=items, digest=digest)) + b"\n"
        except NorthstarError as exc:
            yield _encoder.encode(ArchiveError(error=exc.envelope()["error"])) + b"\n"

    # --- import -----------------------------------------------------------------------------

    async def import_(
        self, ctx: RequestContext, tenant_id: str, lines: AsyncIterable[bytes], *, resume: bool = False
    ) -> ImportReport:
        """Write the archive in ``lines`` (one JSON line each) into this deployment. Without
        ``resume`` the tenant must hold nothing in any kind (409 ``archive.not_empty``); with
        it, items already there must be identical (409 ``archive.conflict`` otherwise). 422
        ``archive.truncated`` if the archive ends before its ``end`` line (what was written
        stays: import it again with ``resume``)."""
        ctx.require_system()
        _check_tenant(tenant_id)
        prefix = tenant_id + "|"
        report = ImportReport(
            tenant_id=tenant_id, items=0, written=0, already_present=0, expired=0, digest=""
        )
        targets: list[KindStore] | None = None
        digest = "00" * 32
        # One page (the items up to the next mark) is held until its digest is verified, so
        # an altered or cut page writes nothing.
        page: list[bytes] = []
        entries: list[ArchiveItem] = []
        number = 0
        async for raw in lines:
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise invalid(DOMAIN, f"line {number} is longer than {MAX_LINE_BYTES} bytes", line=number)
            if not raw.strip():
                continue
            try:
                line = _line_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise invalid(DOMAIN, f"line {number}: {exc}", line=number) from None
            if targets is None:
                if not isinstance(line, ArchiveHeader):
                    raise invalid(DOMAIN, "an archive starts with its header line", line=number)
                targets = await self._targets(tenant_id, line, resume=resume)
                continue
            if isinstance(line, ArchiveHeader):
                raise invalid(DOMAIN, "a second header line", line=number)
            if isinstance(line, ArchiveItem):
                self._check_entry(line, number, prefix, len(targets))
                if len(entries) >= MAX_PAGE_ITEMS:
                    raise invalid(DOMAIN, f"more than {MAX_PAGE_ITEMS} items between two marks", line=number)
                page.append(raw.rstrip(b"\r\n") + b"\n")
                entries.append(line)
                continue
            if isinstance(line, ArchiveError):  # the export stopped there: the archive is cut
                raise _truncated(report, export_error=line.error)
            digest = _chain(digest, b"".join(page)) if isinstance(line, ArchiveMark) or page else digest
            if (line.items, line.digest) != (report.items + len(entries), digest):
                raise invalid(DOMAIN, "the archive does not match its own digest", line=number)
            report.items += len(entries)
            await self._write_page(targets, entries, report)
            page, entries = [], []
            if isinstance(line, ArchiveEnd):
                report.digest = digest
                return report
        raise _truncated(report)

    async def _targets(self, tenant_id: str, header: ArchiveHeader, *, resume: bool) -> list[KindStore]:
        """The store each exported group goes to, after checking the header against this
        deployment (and, unless resuming, that the tenant holds nothing)."""
        if header.format != FORMAT or header.version != VERSION:
            raise invalid(DOMAIN, f"not a {FORMAT} version {VERSION} archive", format=header.format[:50])
        if header.tenant_id != tenant_id:
            raise invalid(DOMAIN, "the archive is of another tenant", archive_tenant=header.tenant_id[:130])
        if header.layouts != dict(DATA_LAYOUTS):
            raise NorthstarError(
                f"{DOMAIN}.layout_mismatch",
                "the archive was written in other data layouts than this deployment's",
                409,
                details={"archive": header.layouts, "deployment": dict(DATA_LAYOUTS)},
            )
        listed = [k for group in header.groups for k in group]
        if sorted(listed) != sorted(RESOURCE_KINDS) or len(set(listed)) != len(listed):
            raise invalid(DOMAIN, "the archive's groups do not list every resource kind once")
        targets: list[KindStore] = []
        for group in header.groups:
            stores = [await self.registry.store_for(kind, tenant_id) for kind in group]
            if len({id(s.backing) for s in stores}) != 1:
                raise NorthstarError(
                    f"{DOMAIN}.routing_mismatch",
                    "kinds exported from one table are routed to different tables here",
                    409,
                    details={"kinds": group},
                )
            targets.append(stores[0])
        if not resume:
            seen: set[int] = set()
            for store in targets:
                if id(store.backing) in seen:
                    continue
                seen.add(id(store.backing))
                if await holds_any(store, tenant_id + "|"):
                    raise NorthstarError(
                        f"{DOMAIN}.not_empty",
                        "this deployment already holds data of the tenant (resume continues an "
                        "interrupted import of the same archive)",
                        409,
                        details={"resource_kind": store.kind},
                    )
        return targets

    @staticmethod
    def _check_entry(entry: ArchiveItem, number: int, prefix: str, groups: int) -> None:
        if not 0 <= entry.group < groups:
            raise invalid(DOMAIN, f"line {number}: no such group", line=number)
        if not entry.partition.startswith(prefix) or len(entry.partition) > 1024:
            raise invalid(DOMAIN, f"line {number}: the partition is not of this tenant", line=number)
        try:
            validate_key(entry.key)
        except InvalidItem as exc:
            raise invalid(DOMAIN, f"line {number}: {exc}", line=number) from None
        if not 1 <= entry.version <= MAX_ITEM_VERSION:
            raise invalid(DOMAIN, f"line {number}: version out of range", line=number)
        if entry.expires_at is not None and not (
            math.isfinite(entry.expires_at) and 0 < entry.expires_at <= MAX_EXPIRES_AT
        ):
            raise invalid(DOMAIN, f"line {number}: expires_at out of range", line=number)

    async def _write_page(
        self, targets: list[KindStore], entries: list[ArchiveItem], report: ImportReport
    ) -> None:
        """Write a verified page: each run of one partition's items in batches."""
        run: list[ArchiveItem] = []
        for entry in entries:
            same = bool(run) and (run[0].group, run[0].partition) == (entry.group, entry.partition)
            if run and (not same or len(run) >= BATCH):
                await self._write_run(targets, run, report)
                run = []
            run.append(entry)
        if run:
            await self._write_run(targets, run, report)

    async def _write_run(
        self, targets: list[KindStore], entries: list[ArchiveItem], report: ImportReport
    ) -> None:
        """Write one partition's run of items, each only where nothing is."""
        now = self.clock.now()
        live = [e for e in entries if e.expires_at is None or e.expires_at > now]
        report.expired += len(entries) - len(live)
        if not live:
            return
        store, partition = targets[live[0].group], live[0].partition
        puts = [Put(e.key, e.value, e.version, e.expires_at, condition=Absent()) for e in live]
        try:
            await store.write(partition, puts)
            report.written += len(puts)
            return
        except ConditionFailed:
            pass
        # Some are there already (an import resumed): each on its own, identical or a conflict.
        for put in puts:
            try:
                await store.write(partition, [put])
                report.written += 1
            except ConditionFailed:
                there = await store.get(partition, put.key)
                if there == Item(put.key, put.value, put.version, put.expires_at):
                    report.already_present += 1
                else:
                    raise _conflict(partition, put.key) from None

    # --- erasure ----------------------------------------------------------------------------

    async def erase(
        self, ctx: RequestContext, tenant_id: str, *, confirm: str, settle_seconds: float
    ) -> EraseReport:
        """Delete every item of ``tenant_id`` in every kind, for good.

        The tenant is retired first (the routing registry records it): from their next routes
        refresh (``settle_seconds`` is that interval, waited once) no process serves it, so no
        request of it writes after the deletion (its still-valid tokens get 410
        ``tenant.erased``). Then every table is scanned for ``<tenant>|`` and each item found
        deleted, pass after pass until a pass finds nothing. Run again after an interruption, it
        continues; the tenant stays retired. ``confirm`` must repeat the tenant id.
        """
        ctx.require_system()
        _check_tenant(tenant_id)
        if confirm != tenant_id:
            raise invalid(DOMAIN, "'confirm' must repeat the tenant id", field="confirm")
        groups = await self._groups(tenant_id, retired_ok=True)
        record = await self.registry.retire_tenant(tenant_id, self.clock.now())
        if record.state == "erasing":
            await asyncio.sleep(settle_seconds)
        deleted = 0
        passes = 0
        while True:
            if passes == MAX_ERASE_PASSES:
                raise NorthstarError(
                    f"{DOMAIN}.erase_incomplete",
                    f"items of the tenant were still found after {MAX_ERASE_PASSES} passes; run it again",
                    409,
                    details={"deleted": deleted},
                )
            passes += 1
            found = 0
            for _, store in groups:
                found += await self._delete_all(store, tenant_id + "|")
            deleted += found
            if found == 0:
                break
        await self.registry.complete_retirement(
            tenant_id, self.clock.now(), (record.items_deleted if record.state == "erased" else 0) + deleted
        )
        return EraseReport(tenant_id=tenant_id, deleted=deleted, passes=passes)

    @staticmethod
    async def _delete_all(store: KindStore, prefix: str) -> int:
        """Delete every item a scan of ``prefix`` finds in ``store``; how many were found."""
        found = 0
        async for page in scan_pages(store, prefix):
            by_partition: dict[str, list[str]] = {}
            for partition, item in page:
                by_partition.setdefault(partition, []).append(item.key)
            for partition, keys in by_partition.items():
                await _delete_keys(store, partition, keys)
            found += len(page)
        return found


async def pages_of(
    store: ItemStore, partition: str, prefix: str = "", *, limit: int = PAGE
) -> AsyncIterator[list[Item]]:
    """The items of ``partition`` whose key starts with ``prefix``, ``limit`` at a time, in key
    order (a page's items may be deleted or replaced before the next is read)."""
    after: str | None = None
    while True:
        items = await store.query(partition, prefix, after=after, limit=limit)
        if items:
            yield items
        if len(items) < limit:
            return
        after = items[-1].key


async def scan_pages(store: KindStore, prefix: str) -> AsyncIterator[list[tuple[str, Item]]]:
    """Every live item of the partitions named ``prefix…``, a scan page at a time (an
    administrative read of the whole table)."""
    token: str | None = None
    while True:
        page = await store.scan(prefix, token=token, limit=MAX_SCAN_PAGE)
        yield [(partition, item) for partition, item in page.items if partition.startswith(prefix)]
        if page.token is None:
            return
        token = page.token


async def delete_partition(
    store: ItemStore, partition: str, prefix: str = "", which: Callable[[bytes], bool] | None = None
) -> int:
    """Delete every item of ``partition`` whose key starts with ``prefix`` (and whose value
    ``which`` selects, if given); how many."""
    deleted = 0
    async for items in pages_of(store, partition, prefix):
        chosen = [item.key for item in items if which is None or which(item.value)]
        await _delete_keys(store, partition, chosen)
        deleted += len(chosen)
    return deleted


async def _delete_keys(store: ItemStore, partition: str, keys: Sequence[str]) -> None:
    for i in range(0, len(keys), BATCH):
        await store.write(partition, [Delete(key) for key in keys[i : i + BATCH]])


async def partitions_where(store: KindStore, prefix: str, keep: Callable[[str], bool]) -> list[str]:
    """The partitions named ``prefix…`` that hold items and that ``keep`` selects (a scan)."""
    found: dict[str, None] = {}
    async for partition, _ in items_under(store, prefix, "", keep):
        found[partition] = None
    return list(found)


async def rewrite_entries(
    store: KindStore, partition: str, prefix: str, change: Callable[[bytes], bytes | None]
) -> int:
    """Replace each item ``prefix…`` of ``partition`` for which ``change`` gives a new value
    (under its version, so a concurrent change of the item is not overwritten); how many."""
    changed = 0
    async for items in pages_of(store, partition, prefix):
        for item in items:
            new = change(item.value)
            if new is None:
                continue
            condition = VersionIs(item.version)
            put = Put(item.key, new, version=item.version, expires_at=item.expires_at, condition=condition)
            await store.write(partition, [put])
            changed += 1
    return changed


async def values_of(store: KindStore, partition: str, prefix: str = "") -> list[bytes]:
    """The values of every item of ``partition`` whose key starts with ``prefix``, in key order."""
    return [item.value async for items in pages_of(store, partition, prefix) for item in items]


async def items_under(
    store: KindStore, prefix: str, key_prefix: str, keep: Callable[[str], bool] | None = None
) -> AsyncIterator[tuple[str, Item]]:
    """Every live item whose key starts with ``key_prefix`` in the partitions named ``prefix…``
    (that ``keep`` selects), by a scan: an administrative read of the whole table."""
    async for page in scan_pages(store, prefix):
        for partition, item in page:
            if item.key.startswith(key_prefix) and (keep is None or keep(partition)):
                yield partition, item
