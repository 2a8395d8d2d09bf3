"""The ItemStore contract: what every backend's adapter guarantees (see ``northstar_core.storage``).

Backend-agnostic: every test talks to stores the ``harness`` fixture opens. The classes are
named ``*Contract`` (not ``Test*``) so pytest collects them only through a backend's
``class TestX(*ALL_CONTRACTS)``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from contracts.harness import BackendHarness
from northstar_core.errors import NorthstarError
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.streams import HeadMoved, SequencedStream, head_hints, seq_of
from northstar_core.storage import (
    MAX_VALUE_BYTES,
    Absent,
    Check,
    ConditionFailed,
    Delete,
    InvalidItem,
    Item,
    ItemStore,
    Op,
    Put,
    VersionIs,
)

T = TypeVar("T")


def _partition(label: str = "p") -> str:
    # Each test also gets a fresh namespace from its harness; unique partitions keep tests
    # honest even where a harness namespace is shared (and on re-runs against real clouds).
    return f"t_contract|lab|{label}|{uuid.uuid4().hex[:12]}"


async def _put_all(store: ItemStore, partition: str, keys: list[str], chunk: int = 25) -> None:
    for i in range(0, len(keys), chunk):
        await store.write(partition, [Put(k, k.encode()) for k in keys[i : i + chunk]])


async def _all_keys(store: ItemStore, partition: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    after: str | None = None
    while True:
        page = await store.query(partition, prefix, after=after, limit=50)
        keys.extend(i.key for i in page)
        if len(page) < 50:
            return keys
        after = page[-1].key


class ItemStoreContract:
    """Single-store behaviour: get/put/delete, conditions, atomicity, ordered queries, TTL."""

    # --- get / put / delete ----------------------------------------------------------------

    async def test_get_of_missing_key_is_none(self, harness: BackendHarness) -> None:
        store = await harness.open()
        assert await store.get(_partition(), "nothing") is None

    async def test_put_then_get_returns_value_version_and_expiry(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        expires = time.time() + 3600
        await store.write(p, [Put("k", b"\x00\x01binary\xff", version=7, expires_at=expires)])
        item = await store.get(p, "k")
        assert item is not None
        assert (item.key, item.value, item.version) == ("k", b"\x00\x01binary\xff", 7)
        assert item.expires_at == pytest.approx(expires, abs=1.0)

    async def test_item_without_expiry_reads_back_without_expiry(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"v")])
        item = await store.get(p, "k")
        assert item == Item("k", b"v", 1, None)

    async def test_every_byte_value_round_trips(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("bytes", bytes(range(256))), Put("empty", b"")])
        assert (await store.get(p, "bytes")) == Item("bytes", bytes(range(256)))
        assert (await store.get(p, "empty")) == Item("empty", b"")

    async def test_largest_allowed_value_round_trips(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        value = bytes(i % 251 for i in range(MAX_VALUE_BYTES))
        await store.write(p, [Put("big", value)])
        item = await store.get(p, "big")
        assert item is not None and item.value == value

    async def test_value_over_the_limit_is_invalid_and_writes_nothing(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        with pytest.raises(InvalidItem):
            await store.write(p, [Put("a", b"x"), Put("big", b"x" * (MAX_VALUE_BYTES + 1))])
        assert await store.get(p, "a") is None

    async def test_unconditional_put_overwrites(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"one", version=1)])
        await store.write(p, [Put("k", b"two", version=5)])
        assert await store.get(p, "k") == Item("k", b"two", 5)

    async def test_delete_removes_the_item(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"v")])
        await store.write(p, [Delete("k")])
        assert await store.get(p, "k") is None
        assert await store.query(p, "") == []

    async def test_unconditional_delete_of_missing_key_succeeds(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Delete("never-there")])
        assert await store.get(p, "never-there") is None

    # --- conditions ------------------------------------------------------------------------

    async def test_absent_condition_creates_a_new_key(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"v", condition=Absent())])
        assert await store.get(p, "k") == Item("k", b"v")

    async def test_absent_condition_refuses_an_existing_key(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"first")])
        with pytest.raises(ConditionFailed):
            await store.write(p, [Put("k", b"second", condition=Absent())])
        assert await store.get(p, "k") == Item("k", b"first")

    async def test_version_condition_replaces_the_matching_version(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"v1", version=1)])
        await store.write(p, [Put("k", b"v2", version=2, condition=VersionIs(1))])
        assert await store.get(p, "k") == Item("k", b"v2", 2)

    async def test_version_condition_refuses_another_version(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"v3", version=3)])
        with pytest.raises(ConditionFailed):
            await store.write(p, [Put("k", b"x", version=3, condition=VersionIs(2))])
        assert await store.get(p, "k") == Item("k", b"v3", 3)

    async def test_version_condition_on_a_missing_key_fails(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        with pytest.raises(ConditionFailed):
            await store.write(p, [Put("k", b"x", version=2, condition=VersionIs(1))])
        assert await store.get(p, "k") is None

    async def test_conditional_delete_needs_the_matching_version(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"v", version=4)])
        with pytest.raises(ConditionFailed):
            await store.write(p, [Delete("k", condition=VersionIs(3))])
        assert await store.get(p, "k") is not None
        await store.write(p, [Delete("k", condition=VersionIs(4))])
        assert await store.get(p, "k") is None

    async def test_conditional_delete_of_a_missing_key_fails(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        with pytest.raises(ConditionFailed):
            await store.write(p, [Delete("k", condition=VersionIs(1))])

    # --- atomicity -------------------------------------------------------------------------

    async def test_failed_last_condition_leaves_nothing_of_the_earlier_ops(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("keep", b"original", version=1), Put("guard", b"g", version=5)])
        batch: list[Op] = [
            Put("new-a", b"a", condition=Absent()),
            Put("keep", b"changed", version=2, condition=VersionIs(1)),
            Put("new-b", b"b"),
            Delete("guard", condition=VersionIs(99)),
        ]
        with pytest.raises(ConditionFailed) as info:
            await store.write(p, batch)
        assert info.value.index in (None, 3)
        assert await store.get(p, "new-a") is None
        assert await store.get(p, "new-b") is None
        assert await store.get(p, "keep") == Item("keep", b"original", 1)
        assert await store.get(p, "guard") == Item("guard", b"g", 5)

    async def test_failed_first_condition_leaves_nothing_of_the_later_ops(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("taken", b"t"), Put("doomed", b"d")])
        with pytest.raises(ConditionFailed) as info:
            await store.write(
                p, [Put("taken", b"x", condition=Absent()), Put("other", b"o"), Delete("doomed")]
            )
        assert info.value.index in (None, 0)
        assert await store.get(p, "other") is None
        assert await store.get(p, "taken") == Item("taken", b"t")
        assert await store.get(p, "doomed") == Item("doomed", b"d")

    async def test_a_batch_of_puts_and_deletes_applies_together(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("old", b"o", version=2)])
        await store.write(
            p, [Delete("old", condition=VersionIs(2)), Put("new", b"n", condition=Absent()), Put("x", b"x")]
        )
        assert await _all_keys(store, p) == ["new", "x"]

    async def test_same_key_twice_in_one_batch_is_invalid(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        with pytest.raises(InvalidItem):
            await store.write(p, [Put("k", b"1"), Put("k", b"2")])
        assert await store.get(p, "k") is None

    async def test_empty_batch_is_invalid(self, harness: BackendHarness) -> None:
        store = await harness.open()
        with pytest.raises(InvalidItem):
            await store.write(_partition(), [])

    # --- ordered prefix queries ------------------------------------------------------------

    async def test_query_returns_only_the_prefix_in_key_order(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await _put_all(store, p, ["a#3", "b#1", "a#1", "a", "ab", "a#2", "a#10", "0"])
        assert [i.key for i in await store.query(p, "a#")] == ["a#1", "a#10", "a#2", "a#3"]
        assert [i.key for i in await store.query(p, "")] == [
            "0",
            "a",
            "a#1",
            "a#10",
            "a#2",
            "a#3",
            "ab",
            "b#1",
        ]

    async def test_query_orders_non_ascii_keys_by_code_point(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        keys = ["k#z", "k#\u00e9", "k#\u4e2d", "k#A", "k#~"]
        await _put_all(store, p, keys)
        assert [i.key for i in await store.query(p, "k#")] == sorted(keys)

    async def test_query_after_and_before_are_exclusive(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await _put_all(store, p, [f"s#{n:03d}" for n in range(1, 8)])
        page = await store.query(p, "s#", after="s#002", before="s#006")
        assert [i.key for i in page] == ["s#003", "s#004", "s#005"]

    async def test_query_bounds_need_not_exist_as_keys(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await _put_all(store, p, ["s#10", "s#20", "s#30"])
        page = await store.query(p, "s#", after="s#15", before="s#99")
        assert [i.key for i in page] == ["s#20", "s#30"]

    async def test_query_descending_with_limit_returns_the_last_keys(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await _put_all(store, p, [f"s#{n:03d}" for n in range(1, 10)])
        page = await store.query(p, "s#", descending=True, limit=3)
        assert [i.key for i in page] == ["s#009", "s#008", "s#007"]

    async def test_query_descending_respects_bounds(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await _put_all(store, p, [f"s#{n:03d}" for n in range(1, 10)])
        page = await store.query(p, "s#", before="s#005", after="s#001", descending=True)
        assert [i.key for i in page] == ["s#004", "s#003", "s#002"]

    async def test_query_limit_caps_the_page(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await _put_all(store, p, [f"s#{n:03d}" for n in range(1, 10)])
        assert [i.key for i in await store.query(p, "s#", limit=2)] == ["s#001", "s#002"]

    async def test_paging_with_after_visits_every_item_once_in_order(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        keys = [f"e#{n:05d}" for n in range(230)]
        await _put_all(store, p, keys[::-1])
        seen: list[str] = []
        after: str | None = None
        while True:
            page = await store.query(p, "e#", after=after, limit=37)
            seen.extend(i.key for i in page)
            if len(page) < 37:
                break
            after = page[-1].key
        assert seen == keys

    async def test_paging_backwards_with_before_visits_every_item_once(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        keys = [f"e#{n:05d}" for n in range(120)]
        await _put_all(store, p, keys)
        seen: list[str] = []
        before: str | None = None
        while True:
            page = await store.query(p, "e#", before=before, limit=25, descending=True)
            seen.extend(i.key for i in page)
            if len(page) < 25:
                break
            before = page[-1].key
        assert seen == keys[::-1]

    async def test_query_of_an_empty_partition_is_empty(self, harness: BackendHarness) -> None:
        store = await harness.open()
        assert await store.query(_partition(), "", limit=10) == []

    # --- partitions ------------------------------------------------------------------------

    async def test_partitions_are_isolated(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p1, p2 = _partition("one"), _partition("two")
        await store.write(p1, [Put("same", b"in-one", version=1)])
        await store.write(p2, [Put("same", b"in-two", version=9)])
        assert await store.get(p1, "same") == Item("same", b"in-one", 1)
        assert await store.get(p2, "same") == Item("same", b"in-two", 9)
        assert [i.value for i in await store.query(p1, "")] == [b"in-one"]
        await store.write(p1, [Delete("same")])
        assert await store.get(p2, "same") == Item("same", b"in-two", 9)
        with pytest.raises(ConditionFailed):
            await store.write(p2, [Put("same", b"x", condition=Absent())])
        await store.write(p1, [Put("same", b"again", condition=Absent())])

    async def test_partition_names_that_prefix_each_other_are_isolated(self, harness: BackendHarness) -> None:
        store = await harness.open()
        base = _partition()
        await store.write(base, [Put("k", b"short")])
        await store.write(base + "x", [Put("k", b"long")])
        assert [i.value for i in await store.query(base, "")] == [b"short"]
        assert [i.value for i in await store.query(base + "x", "")] == [b"long"]

    # --- expiry ----------------------------------------------------------------------------

    async def test_expired_item_is_invisible_to_get_and_query(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("gone", b"x", expires_at=time.time() - 5), Put("live", b"y")])
        assert await store.get(p, "gone") is None
        assert [i.key for i in await store.query(p, "")] == ["live"]
        assert [i.key for i in await store.query(p, "", descending=True)] == ["live"]

    async def test_expired_item_counts_as_absent(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"old", version=3, expires_at=time.time() - 5)])
        await store.write(p, [Put("k", b"new", version=1, condition=Absent())])
        assert await store.get(p, "k") == Item("k", b"new", 1)

    async def test_version_condition_fails_on_an_expired_item(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("k", b"old", version=3, expires_at=time.time() - 5)])
        with pytest.raises(ConditionFailed):
            await store.write(p, [Put("k", b"x", version=4, condition=VersionIs(3))])

    async def test_item_disappears_once_its_expiry_passes(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        expires = time.time() + 2.0
        await store.write(p, [Put("soon", b"x", expires_at=expires), Put("stays", b"y")])
        got = await store.get(p, "soon")
        # present while its time lasts (on a loaded machine the write and read may use it all)
        assert got is not None or time.time() >= expires
        await asyncio.sleep(max(0.0, expires - time.time()) + 0.2)
        assert await store.get(p, "soon") is None
        assert [i.key for i in await store.query(p, "")] == ["stays"]
        await store.write(p, [Put("soon", b"again", condition=Absent())])
        assert await store.get(p, "soon") == Item("soon", b"again")

    # --- batch size ------------------------------------------------------------------------

    async def test_a_batch_of_exactly_max_batch_ops_works(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        n = store.capabilities.max_batch_ops
        await store.write(p, [Put(f"b#{i:04d}", b"x", condition=Absent()) for i in range(n)])
        assert len(await _all_keys(store, p, "b#")) == n

    async def test_a_batch_over_max_batch_ops_is_invalid_and_writes_nothing(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        p = _partition()
        n = store.capabilities.max_batch_ops
        with pytest.raises(InvalidItem):
            await store.write(p, [Put(f"b#{i:04d}", b"x") for i in range(n + 1)])
        assert await store.query(p, "", limit=5) == []


class CapabilityContract:
    """Declared capabilities are checked both ways: declared works, undeclared is absent."""

    async def test_durable_is_declared_honestly(self, harness: BackendHarness) -> None:
        store = await harness.open()
        declared = store.capabilities.durable
        p = _partition()
        await store.write(p, [Put("k", b"kept?")])
        await store.close()
        reopened = await harness.open()
        found = await reopened.get(p, "k")
        if declared:
            assert found == Item("k", b"kept?"), "declares durable but lost data across reopen"
        else:
            assert found is None, "declares durable=False but data survived closing the store"

    async def test_shared_is_declared_honestly(self, harness: BackendHarness) -> None:
        store = await harness.open()
        peer = await harness.open_peer()
        declared = store.capabilities.shared
        p = _partition()
        await store.write(p, [Put("from-first", b"1")])
        await peer.write(p, [Put("from-peer", b"2")])
        peer_sees = await peer.get(p, "from-first")
        first_sees = await store.get(p, "from-peer")
        if declared:
            assert peer_sees == Item("from-first", b"1")
            assert first_sees == Item("from-peer", b"2")
        else:
            assert peer_sees is None and first_sees is None, "declares shared=False but peers share data"

    async def test_shared_stores_enforce_conditions_across_peers(self, harness: BackendHarness) -> None:
        store = await harness.open()
        if not store.capabilities.shared:
            pytest.skip(f"{harness.name}: declares shared=False (see test_shared_is_declared_honestly)")
        peer = await harness.open_peer()
        p = _partition()
        await store.write(p, [Put("k", b"v", version=1)])
        with pytest.raises(ConditionFailed):
            await peer.write(p, [Put("k", b"x", condition=Absent())])
        await peer.write(p, [Put("k", b"w", version=2, condition=VersionIs(1))])
        assert await store.get(p, "k") == Item("k", b"w", 2)

    async def test_atomic_checks_are_declared_honestly(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("guard", b"g", version=3)])
        guarded: list[Op] = [Check("guard", VersionIs(3)), Put("a", b"a", condition=Absent())]
        if not store.capabilities.atomic_checks:
            with pytest.raises(InvalidItem):
                await store.write(p, guarded)
            assert await store.get(p, "a") is None
            return
        await store.write(p, guarded)
        assert await store.get(p, "a") == Item("a", b"a")
        assert await store.get(p, "guard") == Item("guard", b"g", 3), "a Check must write nothing"
        await store.write(p, [Check("missing", Absent()), Put("b", b"b")])
        assert await store.get(p, "b") == Item("b", b"b")

    async def test_a_failed_check_applies_nothing_of_the_batch(self, harness: BackendHarness) -> None:
        store = await harness.open()
        if not store.capabilities.atomic_checks:
            pytest.skip(f"{harness.name}: declares atomic_checks=False (see the test above)")
        p = _partition()
        await store.write(p, [Put("guard", b"g", version=3), Put("old", b"o", version=1)])
        failing: list[list[Op]] = [
            [Put("x", b"x"), Check("guard", VersionIs(2)), Delete("old")],
            [Check("guard", Absent()), Put("x", b"x"), Put("old", b"n", version=2, condition=VersionIs(1))],
            [Put("x", b"x", condition=Absent()), Check("never-written", VersionIs(1))],
        ]
        for batch in failing:
            with pytest.raises(ConditionFailed):
                await store.write(p, batch)
        assert await _all_keys(store, p) == ["guard", "old"]
        assert await store.get(p, "old") == Item("old", b"o", 1)

    async def test_a_check_sees_an_expired_item_as_absent(self, harness: BackendHarness) -> None:
        store = await harness.open()
        if not store.capabilities.atomic_checks:
            pytest.skip(f"{harness.name}: declares atomic_checks=False")
        p = _partition()
        await store.write(p, [Put("gone", b"g", expires_at=time.time() - 5)])
        with pytest.raises(ConditionFailed):
            await store.write(p, [Check("gone", VersionIs(1)), Put("x", b"x")])
        await store.write(p, [Check("gone", Absent()), Put("y", b"y")])
        assert await _all_keys(store, p) == ["y"]

    async def test_a_batch_of_checks_alone_is_invalid(self, harness: BackendHarness) -> None:
        store = await harness.open()
        p = _partition()
        await store.write(p, [Put("guard", b"g")])
        with pytest.raises(InvalidItem):
            await store.write(p, [Check("guard", VersionIs(1))])

    async def test_ping_answers_on_a_reachable_backend(self, harness: BackendHarness) -> None:
        store = await harness.open()
        await store.ping()


class ConcurrencyContract:
    """N concurrent writers with the same expectation: exactly one wins, the rest fail cleanly."""

    writers: ClassVar[int] = 8

    async def _writers(self, harness: BackendHarness) -> list[ItemStore]:
        store = await harness.open()
        if not store.capabilities.shared:
            return [store] * self.writers
        peer = await harness.open_peer()
        return [store if i % 2 == 0 else peer for i in range(self.writers)]

    async def test_concurrent_create_only_puts_exactly_one_wins(self, harness: BackendHarness) -> None:
        stores = await self._writers(harness)
        p = _partition()

        async def attempt(i: int, store: ItemStore) -> bool:
            try:
                await store.write(p, [Put("contested", str(i).encode(), condition=Absent())])
            except ConditionFailed:
                return False
            return True

        won = await asyncio.gather(*(attempt(i, s) for i, s in enumerate(stores)))
        assert sum(won) == 1
        item = await stores[0].get(p, "contested")
        assert item is not None and item.value == str(won.index(True)).encode()

    async def test_concurrent_version_updates_exactly_one_wins(self, harness: BackendHarness) -> None:
        stores = await self._writers(harness)
        p = _partition()
        await stores[0].write(p, [Put("k", b"base", version=1)])

        async def attempt(i: int, store: ItemStore) -> bool:
            try:
                await store.write(p, [Put("k", str(i).encode(), version=2, condition=VersionIs(1))])
            except ConditionFailed:
                return False
            return True

        won = await asyncio.gather(*(attempt(i, s) for i, s in enumerate(stores)))
        assert sum(won) == 1
        assert await stores[0].get(p, "k") == Item("k", str(won.index(True)).encode(), 2)

    async def test_concurrent_stream_appends_at_one_head_exactly_one_wins(
        self, harness: BackendHarness
    ) -> None:
        stores = await self._writers(harness)
        p = _partition("stream")
        await SequencedStream(stores[0], p, "contract").append(lambda first: [b"seed"], now=time.time())

        async def attempt(i: int, store: ItemStore) -> bool:
            stream = SequencedStream(store, p, "contract")
            try:
                await stream.append(lambda first: [f"w{i}".encode()], now=time.time(), expected_head=1)
            except HeadMoved as moved:
                assert moved.head == 2
                return False
            return True

        won = await asyncio.gather(*(attempt(i, s) for i, s in enumerate(stores)))
        assert sum(won) == 1
        entries = await SequencedStream(stores[0], p, "contract").read(0, 100)
        assert [e.value for e in entries] == [b"seed", f"w{won.index(True)}".encode()]

    async def test_concurrent_appends_at_head_are_gap_free_and_unique(self, harness: BackendHarness) -> None:
        stores = await self._writers(harness)
        p = _partition("stream")

        async def append(i: int, store: ItemStore) -> int:
            stream = SequencedStream(store, p, "contract")
            done = await stream.append(lambda first: [f"w{i}".encode()], now=time.time())
            return done.first_seq

        seqs = await asyncio.gather(*(append(i, s) for i, s in enumerate(stores)))
        assert sorted(seqs) == list(range(1, self.writers + 1))
        entries = await SequencedStream(stores[0], p, "contract").read(0, 100)
        assert sorted(e.value for e in entries) == sorted(f"w{i}".encode() for i in range(self.writers))


    async def test_a_stream_whose_entries_expired_keeps_numbering_under_concurrent_appends(
        self, harness: BackendHarness
    ) -> None:
        # Retention: entries written an hour ago with a 60 s lifetime are gone; the stream must
        # go on from its last number (cursors held by clients point there), once per number,
        # with several writers at once.
        stores = await self._writers(harness)
        p = _partition("stream")
        old = time.time() - 3600
        first = SequencedStream(stores[0], p, "contract", ttl_seconds=60)
        for i in range(3):
            await first.append(lambda _f, i=i: [f"old{i}".encode()], now=old)  # type: ignore[misc]
        assert await first.read(0, 100) == []
        assert await SequencedStream(stores[1], p, "contract", ttl_seconds=60).head() == 3

        async def append(i: int, store: ItemStore) -> int:
            stream = SequencedStream(store, p, "contract", ttl_seconds=60)
            done = await stream.append(lambda _f: [f"w{i}".encode()], now=time.time())
            return done.first_seq

        seqs = await asyncio.gather(*(append(i, s) for i, s in enumerate(stores)))
        assert sorted(seqs) == list(range(4, 4 + self.writers))
        entries = await SequencedStream(stores[0], p, "contract", ttl_seconds=60).read(0, 100)
        assert [seq_of(e.key) for e in entries] == list(range(4, 4 + self.writers))
        assert all(e.expires_at is not None and e.expires_at > time.time() for e in entries)

    async def test_a_retained_streams_idempotency_records_expire_with_its_entries(
        self, harness: BackendHarness
    ) -> None:
        # A record holds the original result (for chat, the message itself): it must not
        # outlive the entry it answers for. Past the window, the key is a new request.
        store = await harness.open()
        p = _partition("stream")
        old = SequencedStream(store, p, "contract", ttl_seconds=60)
        first = await old.append(
            lambda _f: [b"expired"], now=time.time() - 3600, idempotency_key="k",
            result=lambda _first, _last: {"copy": "x"},
        )
        record = await store.get(p, "i#k")
        assert record is None  # expired with its entry, for every reader
        stream = SequencedStream(store, p, "contract", ttl_seconds=60)
        again = await stream.append(lambda _f: [b"new"], now=time.time(), idempotency_key="k")
        assert not again.replayed and again.first_seq == first.first_seq + 1
        fresh = await store.get(p, "i#k")
        assert fresh is not None and fresh.expires_at is not None and fresh.expires_at > time.time()
        replay = await stream.append(lambda _f: [b"new"], now=time.time(), idempotency_key="k")
        assert replay.replayed and replay.first_seq == again.first_seq

    async def test_retention_turned_on_for_an_existing_stream_continues_its_numbering(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        p = _partition("stream")
        plain = SequencedStream(store, p, "contract")
        for i in range(2):
            await plain.append(lambda _f, i=i: [f"kept{i}".encode()], now=time.time())  # type: ignore[misc]
        retained = SequencedStream(store, p, "contract", ttl_seconds=60)
        done = await retained.append(lambda _f: [b"new"], now=time.time())
        assert (done.first_seq, await retained.head()) == (3, 3)
        # and after the retained entry expired, the kept ones still number below it
        old = SequencedStream(store, p, "contract", ttl_seconds=60)
        await old.append(lambda _f: [b"gone"], now=time.time() - 3600)
        again = await SequencedStream(store, p, "contract", ttl_seconds=60).append(
            lambda _f: [b"next"], now=time.time()
        )
        assert again.first_seq == 5
        entries = await plain.read(0, 100)
        assert [(seq_of(e.key), e.value) for e in entries] == [
            (1, b"kept0"), (2, b"kept1"), (3, b"new"), (5, b"next")
        ]

    async def test_peers_alternating_on_one_stream_with_stale_head_hints_stay_gap_free(
        self, harness: BackendHarness
    ) -> None:
        # Each peer (a process, in production) remembers the head it last saw; the other
        # peer's appends make that hint stale every time. Appends must still land at the
        # true head, once each.
        stores = await self._writers(harness)
        first, second = stores[0], stores[1]
        p = _partition("stream")
        landed: list[int] = []
        for i in range(6):
            stream = SequencedStream(first if i % 2 == 0 else second, p, "contract")
            done = await stream.append(lambda _f, i=i: [f"e{i}".encode()], now=time.time())  # type: ignore[misc]
            landed.append(done.first_seq)
        assert landed == [1, 2, 3, 4, 5, 6]
        entries = await SequencedStream(first, p, "contract").read(0, 100)
        assert [e.value for e in entries] == [f"e{i}".encode() for i in range(6)]

    async def test_a_head_hint_ahead_of_the_data_never_opens_a_gap(self, harness: BackendHarness) -> None:
        # A hint is a guess (e.g. from before the data was restored from a backup): an append
        # guided by a hint beyond the real head must still land right after the real head.
        store = await harness.open()
        p = _partition("stream")
        stream = SequencedStream(store, p, "contract")
        await stream.append(lambda _f: [b"one"], now=time.time())
        head_hints(store).saw(p, 40)
        done = await stream.append(lambda _f: [b"two"], now=time.time())
        assert (done.first_seq, done.last_seq) == (2, 2)
        assert [seq_of(e.key) for e in await stream.read(0, 100)] == [1, 2]
        with pytest.raises(HeadMoved) as moved:
            await stream.append(lambda _f: [b"x"], now=time.time(), expected_head=7)
        assert moved.value.head == 2
        assert [seq_of(e.key) for e in await stream.read(0, 100)] == [1, 2]


class StreamIdempotencyContract:
    """The idempotency record commits with the append: a replay returns the first result."""

    async def test_same_key_returns_the_first_result_and_writes_nothing(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        stream = SequencedStream(store, _partition("stream"), "contract")
        payload = {"text": "hello"}
        first = await stream.append(
            lambda seq: [b"hello"],
            now=time.time(),
            idempotency_key="k1",
            payload_fingerprint=fingerprint(payload),
            result=lambda a, b: {"message_id": "m1"},
        )
        again = await stream.append(
            lambda seq: [b"hello"],
            now=time.time(),
            idempotency_key="k1",
            payload_fingerprint=fingerprint(payload),
            result=lambda a, b: {"message_id": "m2"},
        )
        assert not first.replayed and again.replayed
        assert (again.first_seq, again.last_seq, again.result) == (
            first.first_seq,
            first.last_seq,
            first.result,
        )
        assert await stream.head() == 1
        assert len(await stream.read(0, 10)) == 1

    async def test_same_key_with_another_payload_is_422_and_writes_nothing(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        stream = SequencedStream(store, _partition("stream"), "contract")
        await stream.append(
            lambda seq: [b"a"],
            now=time.time(),
            idempotency_key="k1",
            payload_fingerprint=fingerprint({"t": "a"}),
        )
        with pytest.raises(NorthstarError) as info:
            await stream.append(
                lambda seq: [b"b"],
                now=time.time(),
                idempotency_key="k1",
                payload_fingerprint=fingerprint({"t": "b"}),
            )
        assert (info.value.code, info.value.http_status) == ("contract.idempotency_mismatch", 422)
        assert await stream.head() == 1

    async def test_concurrent_retries_of_one_key_append_once(self, harness: BackendHarness) -> None:
        store = await harness.open()
        stream = SequencedStream(store, _partition("stream"), "contract")
        fp = fingerprint({"t": "once"})
        outcomes = await asyncio.gather(
            *(
                stream.append(
                    lambda seq: [b"once"], now=time.time(), idempotency_key="k", payload_fingerprint=fp
                )
                for _ in range(6)
            )
        )
        assert {(o.first_seq, o.last_seq) for o in outcomes} == {(1, 1)}
        assert sum(not o.replayed for o in outcomes) == 1
        assert await stream.head() == 1

    async def test_multi_entry_append_is_atomic_with_its_idempotency_record(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        p = _partition("stream")
        stream = SequencedStream(store, p, "contract")
        await stream.append(lambda seq: [b"1"], now=time.time())
        # A conflicting extra op makes the whole batch fail: no entries, no idempotency record.
        await store.write(p, [Put("guard", b"g")])
        with pytest.raises(HeadMoved):
            await stream.append(
                lambda seq: [b"2", b"3"],
                now=time.time(),
                expected_head=1,
                idempotency_key="k",
                payload_fingerprint="fp",
                extra_ops=lambda a, b: [Put("guard", b"x", condition=Absent())],
            )
        assert await stream.head() == 1
        assert await stream.idempotent_result("k", "fp") is None


# --- the stateful model test ----------------------------------------------------------------

_KEYS = ("k#a", "k#b", "k#aa", "k#c", "j#a", "j#b", "k", "kz")
_PREFIXES = ("", "k#", "k#a", "j#", "k", "z")
_conditions = st.one_of(st.none(), st.just(Absent()), st.builds(VersionIs, st.integers(1, 4)))


def _holds(model: dict[str, tuple[bytes, int]], key: str, cond: Absent | VersionIs | None) -> bool:
    if cond is None:
        return True
    if isinstance(cond, Absent):
        return key not in model
    return key in model and model[key][1] == cond.version


class ItemStoreModelContract:
    """A hypothesis state machine drives the store and a dict side by side.

    Lower ``model_max_examples`` / ``model_step_count`` in a backend's test class when its
    emulator is slow. The machine runs in a worker thread and sends each operation to the
    test's own event loop, so stores opened by the harness are used on the loop that made them.
    """

    model_max_examples: ClassVar[int] = 20
    model_step_count: ClassVar[int] = 20

    async def test_itemstore_behaves_like_a_dict_reference_model(self, harness: BackendHarness) -> None:
        store = await harness.open()
        loop = asyncio.get_running_loop()
        machine = _model_machine(store, loop)
        config = settings(
            max_examples=self.model_max_examples,
            stateful_step_count=self.model_step_count,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        await asyncio.to_thread(run_state_machine_as_test, machine, settings=config)


def _model_machine(store: ItemStore, loop: asyncio.AbstractEventLoop) -> type[RuleBasedStateMachine]:
    def run(coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(timeout=120)

    class ItemStoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.partition = _partition("model")
            self.model: dict[str, tuple[bytes, int]] = {}

        def _write(self, ops: list[Op]) -> None:
            ok = all(_holds(self.model, op.key, op.condition) for op in ops)
            try:
                run(store.write(self.partition, ops))
            except ConditionFailed:
                assert not ok, f"store refused a batch whose conditions hold: {ops}"
                return
            assert ok, f"store applied a batch whose conditions fail: {ops}"
            for op in ops:
                if isinstance(op, Put):
                    self.model[op.key] = (op.value, op.version)
                else:
                    self.model.pop(op.key, None)

        @rule(
            key=st.sampled_from(_KEYS),
            value=st.binary(max_size=6),
            version=st.integers(1, 4),
            cond=_conditions,
        )
        def put(self, key: str, value: bytes, version: int, cond: Absent | VersionIs | None) -> None:
            self._write([Put(key, value, version=version, condition=cond)])

        @rule(key=st.sampled_from(_KEYS), cond=_conditions)
        def delete(self, key: str, cond: Absent | VersionIs | None) -> None:
            self._write([Delete(key, condition=cond)])

        @rule(
            entries=st.lists(
                st.tuples(st.sampled_from(_KEYS), st.booleans(), st.integers(1, 4), _conditions),
                min_size=1,
                max_size=4,
                unique_by=lambda e: e[0],
            )
        )
        def batch(self, entries: list[tuple[str, bool, int, Absent | VersionIs | None]]) -> None:
            ops: list[Op] = [
                Put(key, f"{key}:{version}".encode(), version=version, condition=cond)
                if is_put
                else Delete(key, condition=cond)
                for key, is_put, version, cond in entries
            ]
            self._write(ops)

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data())
        def expired_put_counts_as_absent(self, data: Any) -> None:
            key = data.draw(st.sampled_from(sorted(self.model)))
            run(store.write(self.partition, [Put(key, b"stale", version=9, expires_at=time.time() - 60)]))
            del self.model[key]
            assert run(store.get(self.partition, key)) is None

        @rule(key=st.sampled_from(_KEYS))
        def get(self, key: str) -> None:
            item = run(store.get(self.partition, key))
            expected = self.model.get(key)
            assert (None if item is None else (item.value, item.version)) == expected

        @rule(
            prefix=st.sampled_from(_PREFIXES),
            after=st.one_of(st.none(), st.sampled_from(_KEYS)),
            before=st.one_of(st.none(), st.sampled_from(_KEYS)),
            limit=st.integers(1, 6),
            descending=st.booleans(),
        )
        def query(
            self, prefix: str, after: str | None, before: str | None, limit: int, descending: bool
        ) -> None:
            got = run(
                store.query(
                    self.partition, prefix, after=after, before=before, limit=limit, descending=descending
                )
            )
            keys = sorted(
                k
                for k in self.model
                if k.startswith(prefix) and (after is None or k > after) and (before is None or k < before)
            )
            if descending:
                keys.reverse()
            expected = [(k, *self.model[k]) for k in keys[:limit]]
            assert [(i.key, i.value, i.version) for i in got] == expected

    return ItemStoreMachine
