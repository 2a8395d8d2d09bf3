"""``ItemStore.scan``: every live item under a partition-name prefix, exactly once, page by page.

What export, erasure and moving a kind between backends rely on: nothing of another prefix
(another tenant) is returned, nothing expired, nothing twice, and a scan always ends.
"""

from __future__ import annotations

import time
import uuid

import pytest

from contracts.harness import BackendHarness
from northstar_core.storage import MAX_SCAN_PAGE, InvalidItem, Item, ItemStore, Put

# A scan of a few dozen items ends within this many pages on every backend (a page may be
# empty without being the last, but not forever).
_MAX_PAGES = 200


async def scan_all(store: ItemStore, prefix: str, limit: int) -> list[tuple[str, Item]]:
    out: list[tuple[str, Item]] = []
    token: str | None = None
    for _ in range(_MAX_PAGES):
        page = await store.scan(prefix, token=token, limit=limit)
        assert len(page.items) <= limit
        out.extend(page.items)
        if page.token is None:
            return out
        token = page.token
    raise AssertionError(f"the scan of {prefix!r} did not end within {_MAX_PAGES} pages")


def _tenant() -> str:
    return f"t_scan{uuid.uuid4().hex[:10]}"


class ScanContract:
    async def test_scan_returns_every_live_item_under_the_prefix_once(self, harness: BackendHarness) -> None:
        store = await harness.open()
        tenant = _tenant()
        near = tenant + "0"  # a tenant whose id extends this one's must not leak in
        expected: set[tuple[str, str, bytes]] = set()
        for i in range(4):
            partition = f"{tenant}|lab|p{i}"
            keys = [f"k{j:02d}" for j in range(i * 3 + 1)]
            await store.write(partition, [Put(k, f"{partition}/{k}".encode(), 2) for k in keys])
            expected |= {(partition, k, f"{partition}/{k}".encode()) for k in keys}
        await store.write(f"{near}|lab|p0", [Put("k00", b"other tenant")])
        await store.write(f"{tenant}|lab|p0", [Put("k99", b"expired", expires_at=time.time() - 5)])
        for limit in (1, 4, MAX_SCAN_PAGE):
            seen = await scan_all(store, tenant + "|", limit)
            got = [(p, item.key, item.value) for p, item in seen]
            assert len(got) == len(set(got)), f"an item came twice (limit {limit})"
            assert set(got) == expected, f"limit {limit}"
            assert all(item.version == 2 for _, item in seen)
            for partition in {p for p, _ in seen}:
                keys = [item.key for p, item in seen if p == partition]
                assert keys == sorted(keys), "items of one partition come in key order"

    async def test_scan_of_a_prefix_with_nothing_ends_empty(self, harness: BackendHarness) -> None:
        store = await harness.open()
        assert await scan_all(store, _tenant() + "|", 10) == []

    async def test_scan_keeps_expiry_and_sees_a_peer_store_writes(self, harness: BackendHarness) -> None:
        store = await harness.open()
        tenant = _tenant()
        expires = time.time() + 3600.25
        await store.write(f"{tenant}|lab|x", [Put("a", b"1", 3, expires_at=expires)])
        [(partition, item)] = await scan_all(store, tenant + "|", 10)
        assert (partition, item) == (f"{tenant}|lab|x", Item("a", b"1", 3, expires))
        if harness_shared(store):
            peer = await harness.open_peer()
            assert [i.key for _, i in await scan_all(peer, tenant + "|", 10)] == ["a"]

    @pytest.mark.parametrize("limit", [0, -1, MAX_SCAN_PAGE + 1])
    async def test_scan_limit_out_of_range_is_invalid(self, harness: BackendHarness, limit: int) -> None:
        store = await harness.open()
        with pytest.raises(InvalidItem):
            await store.scan(_tenant() + "|", limit=limit)

    async def test_a_malformed_token_is_invalid(self, harness: BackendHarness) -> None:
        store = await harness.open()
        with pytest.raises(InvalidItem):
            await store.scan(_tenant() + "|", token="{not a token", limit=5)


def harness_shared(store: ItemStore) -> bool:
    return store.capabilities.shared
