"""In-process memory backend (lab and tests only; neither durable nor shared)."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence
from typing import Final

from northstar_adapters.common import key_range, parse_position_token, position_token, scan_limit
from northstar_adapters.params import MemoryParams, parse
from northstar_core.routing import Target
from northstar_core.storage import (
    Absent,
    Capabilities,
    ConditionFailed,
    Delete,
    Item,
    ItemStore,
    Op,
    Put,
    ScanPage,
    VersionIs,
    is_live,
    validate_key,
    validate_ops,
)

CAPABILITIES = Capabilities(durable=False, shared=False, max_batch_ops=100, atomic_checks=True)


class MemoryItemStore(ItemStore):
    """Items in sorted per-partition lists; one lock makes every batch atomic."""

    capabilities = CAPABILITIES

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._parts: dict[str, tuple[list[str], dict[str, Item]]] = {}
        self._lock = asyncio.Lock()
        self._clock = clock
        self.closed = False

    def _live(self, item: Item | None) -> Item | None:
        if item is None or not is_live(item.expires_at, self._clock()):
            return None
        return item

    async def get(self, partition: str, key: str) -> Item | None:
        validate_key(key)
        part = self._parts.get(partition)
        return self._live(part[1].get(key)) if part else None

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
        part = self._parts.get(partition)
        if part is None or limit <= 0:
            return []
        keys, items = part
        bounds = key_range(prefix, after, before)
        if bounds.low is None:
            lo = 0
        elif bounds.low_inclusive:
            lo = bisect.bisect_left(keys, bounds.low)
        else:
            lo = bisect.bisect_right(keys, bounds.low)
        hi = bisect.bisect_left(keys, bounds.high) if bounds.high is not None else len(keys)
        out: list[Item] = []
        rng = range(hi - 1, lo - 1, -1) if descending else range(lo, hi)
        for i in rng:
            item = self._live(items[keys[i]])
            if item is not None:
                out.append(item)
                if len(out) >= limit:
                    break
        return out

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        limit = scan_limit(limit)
        position = parse_position_token(token)
        start = "" if position is None else position[0]
        names = sorted(p for p in self._parts if p.startswith(prefix) and p >= start)
        out: list[tuple[str, Item]] = []
        for name in names:
            keys, items = self._parts[name]
            start = 0 if position is None or name > position[0] else bisect.bisect_right(keys, position[1])
            for key in keys[start:]:
                item = self._live(items[key])
                if item is None:
                    continue
                out.append((name, item))
                if len(out) == limit:
                    return ScanPage(out, position_token(name, key))
        return ScanPage(out, None)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        validate_ops(ops, self.capabilities)
        # No await inside the lock: a cancelled caller can never leave a batch half applied.
        async with self._lock:
            keys, items = self._parts.setdefault(partition, ([], {}))
            for index, op in enumerate(ops):
                current = self._live(items.get(op.key))
                if isinstance(op.condition, Absent) and current is not None:
                    raise ConditionFailed(index)
                if isinstance(op.condition, VersionIs) and (
                    current is None or current.version != op.condition.version
                ):
                    raise ConditionFailed(index)
            # The new items are built before the first change; what follows (dict and sorted
            # list updates of validated string keys) cannot fail, so a batch is applied whole
            # or, on any exception, not at all.
            puts = [Item(op.key, op.value, op.version, op.expires_at) for op in ops if isinstance(op, Put)]
            deletes = [op.key for op in ops if isinstance(op, Delete)]
            for item in puts:
                if item.key not in items:
                    bisect.insort(keys, item.key)
                items[item.key] = item
            for key in deletes:
                if key in items:
                    del items[key]
                    keys.pop(bisect.bisect_left(keys, key))

    async def close(self) -> None:
        """Forget the data: memory is not durable, so a store opened afterwards starts empty."""
        self.closed = True
        for name, known in list(_SHARED.items()):
            if known is self:
                del _SHARED[name]


_SHARED: dict[tuple[str, str], MemoryItemStore] = {}


# Nothing outlives the process, so there is nothing to create beforehand.
provision: Final = None


def open_store(target: Target) -> MemoryItemStore:
    """Stores are per process; targets naming the same connection ``name`` and table share one."""
    params = parse(MemoryParams, target.params)
    key = (params.name, target.table_name)
    store = _SHARED.get(key)
    if store is None:
        store = _SHARED[key] = MemoryItemStore()
    return store
