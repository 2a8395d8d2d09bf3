"""Write-once entries: values stored once under a key the caller chooses, listed in key order.

Layout inside one partition: ``e#<key>`` — the entry, never replaced and never deleted.

A write asserts that its key is new (``Absent``), so of two writes of one key exactly one
stores its value and the other gets the stored value back (:meth:`WriteOnceEntries.create`):
a retry never duplicates an entry. Keys that sort by time (UUIDv7 ids such as the spine's event
ids) list in arrival order. The analytics view keeps its copies of spine events this way.
"""

from __future__ import annotations

from typing import Final

from northstar_core.storage import Absent, ConditionFailed, Item, ItemStore, Put

ENTRY_PREFIX: Final = "e#"


class WriteOnceEntries:
    """Entries in one partition of an item store, each written at most once."""

    def __init__(self, store: ItemStore, partition: str) -> None:
        self.store = store
        self.partition = partition

    async def create(self, key: str, value: bytes) -> bytes | None:
        """Store ``value`` at ``key`` unless the key is taken.

        ``None`` when this call stored it (one store call), else the value already stored
        (one more call to read it).
        """
        try:
            await self.store.write(self.partition, [Put(ENTRY_PREFIX + key, value, condition=Absent())])
        except ConditionFailed:
            existing = await self.store.get(self.partition, ENTRY_PREFIX + key)
            if existing is None:  # entries are never deleted: the store broke its own condition
                raise
            return existing.value
        return None

    async def claim(self, key: str, value: bytes, *, expires_at: float) -> Item | None:
        """Hold ``key`` until ``expires_at`` unless someone holds it now: ``None`` when this
        call took it, else the live holder's item (its ``expires_at`` says until when). An
        expired holder counts as absent, so the key is free again once it expires."""
        for _ in range(3):
            try:
                put = Put(ENTRY_PREFIX + key, value, expires_at=expires_at, condition=Absent())
                await self.store.write(self.partition, [put])
            except ConditionFailed:
                existing = await self.store.get(self.partition, ENTRY_PREFIX + key)
                if existing is not None:
                    return existing
                continue  # it expired between the write and the read: try again
            return None
        raise ConditionFailed(message=f"{key!r} could not be claimed")

    async def list(self, *, after_key: str | None = None, limit: int) -> list[Item]:
        """Entries with a key after ``after_key``, in key order, at most ``limit``."""
        return await self.store.query(
            self.partition,
            ENTRY_PREFIX,
            after=ENTRY_PREFIX + after_key if after_key is not None else None,
            limit=limit,
        )


def entry_key(item: Item) -> str:
    return item.key[len(ENTRY_PREFIX) :]


__all__ = ["ENTRY_PREFIX", "WriteOnceEntries", "entry_key"]
