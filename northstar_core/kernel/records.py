"""Versioned records (compare-and-set, optional TTL and history) on the item primitive.

Layout inside one partition:

* ``r#<key>``               — the live record; ``Item.version`` is its version (1, 2, …);
* ``h#<key>#<version:010>`` — an immutable copy of each version when history is kept.

No write is ever a silent overwrite: a write names the version it replaces (``VersionIs``) or
asserts the key is new (``Absent``), and the store enforces it atomically. A conflict answers
409 ``<domain>.version_conflict`` with the current version in ``details``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import msgspec

from northstar_core.bounds import MAX_VERSION, check_int
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, cursor_invalid, version_conflict
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page, page_of
from northstar_core.storage import (
    MAX_VALUE_BYTES,
    Absent,
    ConditionFailed,
    Delete,
    Item,
    ItemStore,
    Op,
    Put,
    VersionIs,
)

T = TypeVar("T")

RECORD_PREFIX: Final = "r#"
# The largest value a record holds: the storage port's per-item limit. (Records are read as the
# port's Item: ``value``, ``version``, ``expires_at``; :func:`record_key` names its key.)
MAX_RECORD_BYTES: Final = MAX_VALUE_BYTES
HISTORY_PREFIX: Final = "h#"
_CAS_ATTEMPTS: Final = 32


def history_key(key: str, version: int) -> str:
    return f"{HISTORY_PREFIX}{key}#{version:010d}"


class RecordChange(msgspec.Struct, frozen=True, kw_only=True):
    """One record's part of :meth:`VersionedRecords.write_many`.

    ``value`` ``None`` deletes the live record. ``expected_version`` is the live version it
    replaces (``None``: the key must not exist). A put writes ``version``, by default the
    next one (``expected_version + 1``, or 1 for a new key).
    """

    key: str
    value: bytes | None = None
    expected_version: int | None = None
    version: int | None = None


class VersionedRecords:
    """Records in one partition of an item store, each with a version."""

    def __init__(
        self,
        store: ItemStore,
        partition: str,
        domain: str,
        *,
        history: bool = False,
        ttl_seconds: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``ttl_seconds`` (with ``clock``): the kind's retention — a write given no expiry of
        its own expires that long after it (the record and its history entry alike)."""
        self.store = store
        self.partition = partition
        self.domain = domain
        self.history = history
        if ttl_seconds is not None and clock is None:
            raise ValueError("a retention needs a clock")
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    async def get(self, key: str) -> Item | None:
        return await self.store.get(self.partition, RECORD_PREFIX + key)

    async def get_version(self, key: str, version: int) -> Item | None:
        """A past version (only when history is kept)."""
        check_int(self.domain, "version", version, lo=1, hi=MAX_VERSION)
        return await self.store.get(self.partition, history_key(key, version))

    async def versions(self, key: str, *, after: int = 0, limit: int = 100) -> list[Item]:
        check_int(self.domain, "after", after, lo=0, hi=MAX_VERSION)
        check_int(self.domain, "limit", limit, lo=1, hi=1000)
        return await self.store.query(
            self.partition, f"{HISTORY_PREFIX}{key}#", after=history_key(key, after), limit=limit
        )

    async def _last_history_version(self, key: str) -> int:
        last = await self.store.query(self.partition, f"{HISTORY_PREFIX}{key}#", limit=1, descending=True)
        return last[0].version if last else 0

    async def _current_version(self, key: str) -> int | None:
        item = await self.get(key)
        return item.version if item else None

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expected_version: int | None,
        expires_at: float | None = None,
        extra_ops: list[Op] | None = None,
    ) -> int:
        """Write ``value``; returns the new version.

        ``expected_version=None`` means create-only (409 if the key exists); otherwise the
        live record must have exactly that version (409 with the current one if not).
        """
        if expected_version is None:
            condition: Absent | VersionIs = Absent()
            # With history, a key re-created after a delete continues its version sequence,
            # so its old history entries are never overwritten and a stale version never
            # matches the new incarnation.
            version = await self._last_history_version(key) + 1 if self.history else 1
        else:
            if expected_version < 1:
                raise NorthstarError(
                    f"{self.domain}.invalid_request",
                    "expected_version must be 1 or more (omit it to create)",
                    422,
                    details={"field": "expected_version", "expected_version": expected_version},
                )
            # The new version is expected_version + 1, so it too must stay representable.
            check_int(self.domain, "expected_version", expected_version, lo=1, hi=MAX_VERSION - 1)
            condition = VersionIs(expected_version)
            version = expected_version + 1
        if expires_at is None and self.ttl_seconds is not None and self._clock is not None:
            expires_at = self._clock() + self.ttl_seconds
        ops: list[Op] = [
            Put(RECORD_PREFIX + key, value, version=version, expires_at=expires_at, condition=condition)
        ]
        if self.history:
            # a version lives no longer than the record did when it was written
            entry = history_key(key, version)
            ops.append(Put(entry, value, version=version, expires_at=expires_at, condition=Absent()))
        ops.extend(extra_ops or [])
        try:
            await self.store.write(self.partition, ops)
        except ConditionFailed:
            raise version_conflict(self.domain, await self._current_version(key), expected_version) from None
        return version

    async def set(self, key: str, value: bytes, *, expires_at: float | None = None) -> int:
        """Last-writer-wins write that still never loses a version number (CAS loop)."""
        for attempt in range(_CAS_ATTEMPTS):
            current = await self._current_version(key)
            try:
                return await self.put(key, value, expected_version=current, expires_at=expires_at)
            except NorthstarError as exc:
                if exc.http_status != 409:
                    raise
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.05)))
        raise NorthstarError(
            f"{self.domain}.contention", "too much write contention; retry", 503,
            headers={"Retry-After": "1"},
        )

    async def delete(self, key: str, *, expected_version: int | None) -> None:
        """Delete the live record (history is kept). 404 if absent, 409 if the version is stale."""
        if expected_version is not None:
            check_int(self.domain, "expected_version", expected_version, lo=-MAX_VERSION, hi=MAX_VERSION)
        if expected_version is not None and expected_version >= 1:
            # The version is named: delete at once (one round trip); read only to explain a refusal.
            if await self.discard(key, expected_version):
                return
            current = await self._current_version(key)
            if current is None:
                raise self._not_found(key)
            raise version_conflict(self.domain, current, expected_version)
        current = await self._current_version(key)
        if current is None:
            raise self._not_found(key)
        if expected_version is not None:  # below 1: never a version, so stale
            raise version_conflict(self.domain, current, expected_version)
        if not await self.discard(key, current):
            raise version_conflict(self.domain, await self._current_version(key), None)

    def _not_found(self, key: str) -> NorthstarError:
        return NorthstarError(f"{self.domain}.not_found", f"'{key}' not found", 404, details={"key": key})

    async def discard(self, key: str, version: int) -> bool:
        """Delete the live record if it is still at ``version``; ``False`` if it changed or is
        gone (a concurrent write wins over a delete that did not see it). One store call."""
        try:
            await self.store.write(
                self.partition, [Delete(RECORD_PREFIX + key, condition=VersionIs(version))]
            )
        except ConditionFailed:
            return False
        return True

    async def write_many(self, changes: Sequence[RecordChange]) -> None:
        """Apply ``changes`` to several records of the partition atomically (one store call).

        Each change names the version it replaces (or ``None``: the key must not exist), as a
        single write does; if any does not hold, nothing is written and the answer is 409
        ``<domain>.version_conflict`` naming the first change's ``expected_version``.
        """
        ops: list[Op] = []
        for change in changes:
            key = RECORD_PREFIX + change.key
            condition: Absent | VersionIs = (
                Absent() if change.expected_version is None else VersionIs(change.expected_version)
            )
            if change.value is None:
                ops.append(Delete(key, condition=condition))
                continue
            version = change.version or (change.expected_version or 0) + 1
            ops.append(Put(key, change.value, version=version, condition=condition))
            if self.history:
                history = history_key(change.key, version)
                ops.append(Put(history, change.value, version=version, condition=Absent()))
        try:
            await self.store.write(self.partition, ops)
        except ConditionFailed:
            expected = changes[0].expected_version if changes else None
            raise version_conflict(self.domain, None, expected) from None

    async def list(
        self, *, after_key: str | None = None, limit: int = 100, prefix: str = "", descending: bool = False
    ) -> list[Item]:
        return await self.store.query(
            self.partition,
            RECORD_PREFIX + prefix,
            after=RECORD_PREFIX + after_key if after_key is not None else None,
            limit=limit,
            descending=descending,
        )


def record_key(item: Item) -> str:
    return item.key[len(RECORD_PREFIX) :]


class RecordListing:
    """A listing of records in key order, paged after signed cursors.

    A cursor names a record key and is bound to ``domain``, the caller's tenant and mode and
    ``stream`` (the listing's name), so it cannot be replayed against another listing or
    tenant; a cursor whose key lies outside ``prefix`` is refused (410) rather than silently
    continuing somewhere else. The listing is resumable: a page at the end still continues
    after its last record (:func:`~northstar_core.kernel.paging.page_of` with ``stream``).
    """

    def __init__(
        self,
        records: VersionedRecords,
        codec: CursorCodec,
        ctx: RequestContext,
        stream: str,
        prefix: str = "",
    ) -> None:
        self.records = records
        self.codec = codec
        self.ctx = ctx
        self.stream = stream
        self.prefix = prefix

    def cursor(self, key: str) -> str:
        ctx = self.ctx
        return self.codec.encode(self.records.domain, ctx.tenant_id, ctx.mode, self.stream, key)

    async def page(self, cursor: str | None, limit: int, convert: Callable[[Item], T]) -> Page[T]:
        """Up to ``limit`` records after ``cursor`` (from the first without one)."""
        ctx, domain = self.ctx, self.records.domain
        after: str | None = None
        if cursor:
            after = self.codec.decode(domain, ctx.tenant_id, ctx.mode, self.stream, cursor)
            if not after.startswith(self.prefix):
                raise cursor_invalid(domain, cursor, "foreign position")
        items = await self.records.list(prefix=self.prefix, after_key=after, limit=limit + 1)
        return page_of(
            items,
            limit,
            lambda item: self.cursor(record_key(item)),
            convert,
            resume_from=cursor or None,
            stream=True,
        )


__all__ = [
    "HISTORY_PREFIX",
    "MAX_RECORD_BYTES",
    "RECORD_PREFIX",
    "Item",
    "RecordChange",
    "RecordListing",
    "VersionedRecords",
    "history_key",
    "record_key",
]
