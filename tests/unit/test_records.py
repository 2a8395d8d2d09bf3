"""Versioned records: create-only, compare-and-set, delete, history, expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from northstar_core.kernel.records import MAX_RECORD_BYTES, VersionedRecords, record_key
from northstar_core.storage import MAX_VALUE_BYTES, Absent, Item, ItemStore, Op, Put


class Interleaving(ItemStore):
    """Yields to the event loop around every call so concurrent writers really interleave."""

    def __init__(self, inner: ItemStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities

    async def get(self, partition: str, key: str) -> Item | None:
        await asyncio.sleep(0)
        item = await self.inner.get(partition, key)
        await asyncio.sleep(0)
        return item

    async def query(self, partition: str, prefix: str, **kwargs: object) -> list[Item]:  # type: ignore[override]
        await asyncio.sleep(0)
        return await self.inner.query(partition, prefix, **kwargs)  # type: ignore[arg-type]

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await asyncio.sleep(0)
        await self.inner.write(partition, ops)


def records(history: bool = False) -> VersionedRecords:
    return VersionedRecords(MemoryItemStore(), "t_a|lab|p", "notes", history=history)


def conflict(exc: pytest.ExceptionInfo[NorthstarError]) -> tuple[str, int, object]:
    return exc.value.code, exc.value.http_status, exc.value.details.get("current_version")


async def test_create_only_writes_version_one() -> None:
    recs = records()
    assert await recs.put("k", b"v", expected_version=None) == 1
    item = await recs.get("k")
    assert item is not None and (item.value, item.version) == (b"v", 1)


async def test_create_only_on_an_existing_key_is_409_with_the_current_version() -> None:
    recs = records()
    await recs.put("k", b"v", expected_version=None)
    with pytest.raises(NorthstarError) as info:
        await recs.put("k", b"other", expected_version=None)
    assert conflict(info) == ("notes.version_conflict", 409, 1)
    assert (await recs.get("k")).value == b"v"  # type: ignore[union-attr]


async def test_compare_and_set_advances_the_version() -> None:
    recs = records()
    await recs.put("k", b"v1", expected_version=None)
    assert await recs.put("k", b"v2", expected_version=1) == 2
    assert await recs.put("k", b"v3", expected_version=2) == 3


async def test_compare_and_set_with_a_stale_version_is_409_and_changes_nothing() -> None:
    recs = records()
    await recs.put("k", b"v1", expected_version=None)
    await recs.put("k", b"v2", expected_version=1)
    with pytest.raises(NorthstarError) as info:
        await recs.put("k", b"lost", expected_version=1)
    assert conflict(info) == ("notes.version_conflict", 409, 2)
    assert info.value.details["expected_version"] == 1
    assert (await recs.get("k")).value == b"v2"  # type: ignore[union-attr]


async def test_compare_and_set_on_a_missing_key_is_409_with_no_current_version() -> None:
    with pytest.raises(NorthstarError) as info:
        await records().put("k", b"v", expected_version=3)
    assert conflict(info) == ("notes.version_conflict", 409, None)


async def test_an_expected_version_below_one_is_422() -> None:
    with pytest.raises(NorthstarError) as info:
        await records().put("k", b"v", expected_version=0)
    assert (info.value.code, info.value.http_status) == ("notes.invalid_request", 422)


async def test_set_creates_then_overwrites_without_losing_a_version() -> None:
    recs = records()
    assert await recs.set("k", b"a") == 1
    assert await recs.set("k", b"b") == 2
    assert (await recs.get("k")).value == b"b"  # type: ignore[union-attr]


async def test_delete_removes_the_record() -> None:
    recs = records()
    await recs.put("k", b"v", expected_version=None)
    await recs.delete("k", expected_version=1)
    assert await recs.get("k") is None


async def test_delete_without_a_version_deletes_the_current_one() -> None:
    recs = records()
    await recs.put("k", b"v", expected_version=None)
    await recs.set("k", b"w")
    await recs.delete("k", expected_version=None)
    assert await recs.get("k") is None


async def test_delete_of_a_missing_record_is_404() -> None:
    with pytest.raises(NorthstarError) as info:
        await records().delete("k", expected_version=None)
    assert (info.value.code, info.value.http_status, info.value.details) == (
        "notes.not_found",
        404,
        {"key": "k"},
    )


async def test_delete_with_a_stale_version_is_409_and_keeps_the_record() -> None:
    recs = records()
    await recs.put("k", b"v", expected_version=None)
    await recs.set("k", b"w")
    with pytest.raises(NorthstarError) as info:
        await recs.delete("k", expected_version=1)
    assert conflict(info) == ("notes.version_conflict", 409, 2)
    assert await recs.get("k") is not None


async def test_history_keeps_every_version_in_order() -> None:
    recs = records(history=True)
    await recs.put("k", b"v1", expected_version=None)
    await recs.put("k", b"v2", expected_version=1)
    await recs.put("k", b"v3", expected_version=2)
    assert [(i.version, i.value) for i in await recs.versions("k")] == [(1, b"v1"), (2, b"v2"), (3, b"v3")]
    assert [i.version for i in await recs.versions("k", after=1, limit=1)] == [2]
    assert (await recs.get_version("k", 2)).value == b"v2"  # type: ignore[union-attr]


async def test_history_of_one_key_does_not_include_keys_it_prefixes() -> None:
    recs = records(history=True)
    await recs.put("k", b"short", expected_version=None)
    await recs.put("k2", b"long", expected_version=None)
    assert [i.value for i in await recs.versions("k")] == [b"short"]


async def test_history_survives_delete_and_a_recreated_key_continues_its_versions() -> None:
    recs = records(history=True)
    await recs.put("k", b"v1", expected_version=None)
    await recs.put("k", b"v2", expected_version=1)
    await recs.delete("k", expected_version=2)
    assert await recs.put("k", b"again", expected_version=None) == 3
    assert [i.value for i in await recs.versions("k")] == [b"v1", b"v2", b"again"]
    with pytest.raises(NorthstarError):
        await recs.put("k", b"stale", expected_version=2)


async def test_an_expired_record_is_gone_and_may_be_created_again() -> None:
    recs = records()
    await recs.put("k", b"old", expected_version=None, expires_at=time.time() - 1)
    assert await recs.get("k") is None
    assert await recs.put("k", b"new", expected_version=None) == 1


async def test_extra_ops_commit_with_the_record_or_not_at_all() -> None:
    store = MemoryItemStore()
    recs = VersionedRecords(store, "p", "notes")
    await store.write("p", [Put("index#x", b"taken")])
    with pytest.raises(NorthstarError):
        await recs.put("k", b"v", expected_version=None, extra_ops=[Put("index#x", b"k", condition=Absent())])
    assert await recs.get("k") is None
    await recs.put("k", b"v", expected_version=None, extra_ops=[Put("index#y", b"k", condition=Absent())])
    assert await store.get("p", "index#y") is not None


async def test_list_returns_records_by_key_with_paging_and_prefix() -> None:
    recs = records()
    for key in ("b", "a", "ab", "c"):
        await recs.put(key, key.encode(), expected_version=None)
    assert [record_key(i) for i in await recs.list()] == ["a", "ab", "b", "c"]
    assert [record_key(i) for i in await recs.list(after_key="ab", limit=1)] == ["b"]
    assert [record_key(i) for i in await recs.list(prefix="a")] == ["a", "ab"]


async def test_discard_deletes_only_the_version_it_names_and_keeps_history() -> None:
    recs = records(history=True)
    await recs.put("k", b"v1", expected_version=None)
    await recs.put("k", b"v2", expected_version=1)
    assert await recs.discard("k", 1) is False  # a write it did not see wins
    assert (await recs.get("k")) is not None
    assert await recs.discard("k", 2) is True
    assert await recs.get("k") is None
    assert await recs.discard("k", 2) is False  # already gone
    assert [i.version for i in await recs.versions("k")] == [1, 2]


async def test_a_discard_or_a_delete_at_a_named_version_is_one_store_call() -> None:
    calls: list[str] = []

    class Counting(Interleaving):
        async def get(self, partition: str, key: str) -> Item | None:
            calls.append("get")
            return await super().get(partition, key)

        async def write(self, partition: str, ops: Sequence[Op]) -> None:
            calls.append("write")
            await super().write(partition, ops)

    recs = VersionedRecords(Counting(MemoryItemStore()), "p", "notes")
    await recs.put("k", b"v", expected_version=None)
    calls.clear()
    assert await recs.discard("k", 1) is True
    assert calls == ["write"]
    await recs.put("k", b"v", expected_version=None)
    calls.clear()
    await recs.delete("k", expected_version=1)
    assert calls == ["write"]
    calls.clear()
    with pytest.raises(NorthstarError) as info:  # a refusal reads once to explain itself
        await recs.delete("k", expected_version=1)
    assert (info.value.code, calls) == ("notes.not_found", ["write", "get"])


def test_a_record_may_hold_what_the_storage_port_accepts() -> None:
    assert MAX_RECORD_BYTES == MAX_VALUE_BYTES


@settings(max_examples=30, deadline=None)
@given(writers=st.integers(2, 10))
def test_concurrent_sets_never_lose_a_version(writers: int) -> None:
    async def run() -> None:
        recs = VersionedRecords(Interleaving(MemoryItemStore()), "p", "notes", history=True)
        versions = await asyncio.gather(*(recs.set("k", str(w).encode()) for w in range(writers)))
        assert sorted(versions) == list(range(1, writers + 1))
        assert [i.version for i in await recs.versions("k")] == list(range(1, writers + 1))

    asyncio.run(run())


@settings(max_examples=30, deadline=None)
@given(writers=st.integers(2, 10))
def test_concurrent_compare_and_sets_on_one_version_have_one_winner(writers: int) -> None:
    async def run() -> None:
        recs = VersionedRecords(Interleaving(MemoryItemStore()), "p", "notes")
        await recs.put("k", b"base", expected_version=None)

        async def attempt(w: int) -> bool:
            try:
                await recs.put("k", str(w).encode(), expected_version=1)
            except NorthstarError as exc:
                assert exc.http_status == 409
                return False
            return True

        assert sum(await asyncio.gather(*(attempt(w) for w in range(writers)))) == 1

    asyncio.run(run())


operations = st.lists(
    st.tuples(
        st.sampled_from(["create", "cas", "delete", "set"]), st.sampled_from(["a", "b"]), st.integers(1, 4)
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=operations)
def test_records_behave_like_a_versioned_dict(ops: list[tuple[str, str, int]]) -> None:
    async def run() -> None:
        recs = records()
        model: dict[str, int] = {}
        for op, key, version in ops:
            current = model.get(key)
            try:
                if op == "create":
                    got = await recs.put(key, b"x", expected_version=None)
                    assert current is None and got == 1
                    model[key] = 1
                elif op == "cas":
                    got = await recs.put(key, b"x", expected_version=version)
                    assert current == version and got == version + 1
                    model[key] = got
                elif op == "set":
                    got = await recs.set(key, b"x")
                    assert got == (current or 0) + 1
                    model[key] = got
                else:
                    await recs.delete(key, expected_version=version)
                    assert current == version
                    del model[key]
            except NorthstarError as exc:
                expected_status = 404 if op == "delete" and current is None else 409
                assert exc.http_status == expected_status
                assert op != "set"
                if exc.http_status == 409:
                    assert exc.details["current_version"] == current
            item = await recs.get(key)
            assert (item.version if item else None) == model.get(key)

    asyncio.run(run())
