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
from typing import Final

import msgspec

from northstar_core.bounds import MAX_VERSION, check_int
from northstar_core.errors import NorthstarError, version_conflict
from northstar_core.storage import (
    Absent,
    ConditionFailed,
    Delete,
    Item,
    ItemStore,
    Op,
    Put,
    VersionIs,
)

RECORD_PREFIX: Final = "r#"
HISTORY_PREFIX: Final = "h#"
_CAS_ATTEMPTS: Final = 32


def history_key(key: str, version: int) -> str:
    return f"{HISTORY_PREFIX}{key}#{version:010d}"


class VersionedRecords:
    """Records in one partition of an item store, each with a version."""

    def __init__(self, store: ItemStore, partition: str, domain: str, *, history: bool = False) -> None:
        self.store = store
        self.partition = partition
        self.domain = domain
        self.history = history

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
        ops: list[Op] = [
            Put(RECORD_PREFIX + key, value, version=version, expires_at=expires_at, condition=condition)
        ]
        if self.history:
            ops.append(Put(history_key(key, version), value, version=version, condition=Absent()))
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
        current = await self._current_version(key)
        if current is None:
            raise NorthstarError(f"{self.domain}.not_found", f"'{key}' not found", 404, details={"key": key})
        if expected_version is not None and expected_version < 1:  # never a version: stale
            raise version_conflict(self.domain, current, expected_version)
        condition = VersionIs(expected_version if expected_version is not None else current)
        try:
            await self.store.write(self.partition, [Delete(RECORD_PREFIX + key, condition=condition)])
        except ConditionFailed:
            raise version_conflict(self.domain, await self._current_version(key), expected_version) from None

    async def list(self, *, after_key: str | None = None, limit: int = 100, prefix: str = "") -> list[Item]:
        return await self.store.query(
            self.partition,
            RECORD_PREFIX + prefix,
            after=RECORD_PREFIX + after_key if after_key is not None else None,
            limit=limit,
        )


def record_key(item: Item) -> str:
    return item.key[len(RECORD_PREFIX) :]


def decode(item: Item, type_: type[msgspec.Struct]) -> msgspec.Struct:
    return msgspec.json.decode(item.value, type=type_)
