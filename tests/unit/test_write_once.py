"""Write-once entries: the first write of a key stays, a repeat gets it back, listed in key order."""

from __future__ import annotations

import asyncio

from northstar_adapters.memory import MemoryItemStore
from northstar_core.kernel.write_once import WriteOnceEntries, entry_key


def entries() -> WriteOnceEntries:
    return WriteOnceEntries(MemoryItemStore(), "t_a|lab|analytics")


async def test_the_first_write_stores_and_a_repeat_gets_the_stored_value_back() -> None:
    log = entries()
    assert await log.create("e1", b"first") is None
    assert await log.create("e1", b"second") == b"first"
    assert [i.value for i in await log.list(limit=10)] == [b"first"]


async def test_of_concurrent_writes_of_one_key_exactly_one_stores() -> None:
    log = entries()
    outcomes = await asyncio.gather(*(log.create("k", str(n).encode()) for n in range(8)))
    stored = [o for o in outcomes if o is None]
    assert len(stored) == 1
    (item,) = await log.list(limit=10)
    assert all(o in (None, item.value) for o in outcomes)


async def test_entries_list_in_key_order_after_a_key() -> None:
    log = entries()
    for key in ("b", "a", "c"):
        await log.create(key, key.encode())
    assert [entry_key(i) for i in await log.list(limit=10)] == ["a", "b", "c"]
    assert [entry_key(i) for i in await log.list(after_key="a", limit=1)] == ["b"]
    assert await log.list(after_key="c", limit=10) == []
