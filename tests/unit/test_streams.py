"""Sequenced streams: gap-free unique sequences, conditional appends, atomic idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.errors import NorthstarError
from northstar_core.kernel.checkpoints import CHUNK_BYTES, Checkpoints, checkpoint_ops
from northstar_core.kernel.headers import header_ops, read_header
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.publication import KeyedEntry, OrderedSeries, SeriesBehind
from northstar_core.kernel.streams import (
    HeadMoved,
    SequencedStream,
    head_hints,
    operation_heads,
    seq_key,
    seq_of,
)
from northstar_core.storage import Absent, Item, ItemStore, Op, Put

NOW = 1_800_000_000.0


class Interleaving(ItemStore):
    """Yields to the event loop around every call so concurrent appends really interleave
    (the memory store never suspends on its own)."""

    def __init__(self, inner: ItemStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities

    async def get(self, partition: str, key: str) -> Item | None:
        await asyncio.sleep(0)
        return await self.inner.get(partition, key)

    async def query(self, partition: str, prefix: str, **kwargs: object) -> list[Item]:  # type: ignore[override]
        await asyncio.sleep(0)
        items = await self.inner.query(partition, prefix, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        return items

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await asyncio.sleep(0)
        await self.inner.write(partition, ops)


def entries(*values: bytes) -> object:
    return lambda first: list(values)


async def test_appends_number_entries_from_one_without_gaps() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    a = await stream.append(entries(b"a", b"b"), now=NOW)
    b = await stream.append(entries(b"c"), now=NOW)
    assert (a.first_seq, a.last_seq, b.first_seq, b.last_seq) == (1, 2, 3, 3)
    assert [seq_of(i.key) for i in await stream.read(0, 10)] == [1, 2, 3]
    assert await stream.head() == 3


async def test_build_receives_the_first_sequence_number() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    await stream.append(entries(b"x"), now=NOW)
    done = await stream.append(lambda first: [f"seq {first}".encode(), f"seq {first + 1}".encode()], now=NOW)
    assert [i.value for i in await stream.read(1, 10)] == [b"seq 2", b"seq 3"]
    assert done.first_seq == 2


async def test_an_append_at_a_stale_expected_head_raises_head_moved_with_the_head() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    await stream.append(entries(b"a", b"b"), now=NOW)
    with pytest.raises(HeadMoved) as info:
        await stream.append(entries(b"c"), now=NOW, expected_head=1)
    assert info.value.head == 2
    assert await stream.head() == 2


async def test_reads_after_a_sequence_are_exclusive_and_bounded() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    await stream.append(lambda first: [str(n).encode() for n in range(1, 11)], now=NOW)
    assert [i.value for i in await stream.read(3, 3)] == [b"4", b"5", b"6"]
    assert [i.value for i in await stream.read(3, 10, before_seq=6)] == [b"4", b"5"]
    assert await stream.read(10, 5) == []
    assert [i.value for i in await stream.read_last(2)] == [b"9", b"10"]


async def test_an_idempotent_repeat_returns_the_first_result_and_writes_nothing() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    fp = fingerprint({"text": "hi"})
    first = await stream.append(
        entries(b"hi"), now=NOW, idempotency_key="k", payload_fingerprint=fp, result=lambda a, b: {"id": "m1"}
    )
    again = await stream.append(
        entries(b"hi"), now=NOW, idempotency_key="k", payload_fingerprint=fp, result=lambda a, b: {"id": "m2"}
    )
    assert again.replayed and not first.replayed
    assert msgspec.json.decode(again.result) == {"id": "m1", "first_seq": 1, "last_seq": 1}
    assert await stream.head() == 1


async def test_an_idempotent_repeat_wins_over_a_moved_head() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    await stream.append(entries(b"a"), now=NOW, expected_head=0, idempotency_key="k", payload_fingerprint="f")
    await stream.append(entries(b"b"), now=NOW)
    again = await stream.append(
        entries(b"a"), now=NOW, expected_head=0, idempotency_key="k", payload_fingerprint="f"
    )
    assert again.replayed and again.first_seq == 1


async def test_a_reused_key_with_another_payload_is_422() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    await stream.append(
        entries(b"a"), now=NOW, idempotency_key="k", payload_fingerprint=fingerprint({"t": 1})
    )
    with pytest.raises(NorthstarError) as info:
        await stream.append(
            entries(b"b"), now=NOW, idempotency_key="k", payload_fingerprint=fingerprint({"t": 2})
        )
    assert (info.value.code, info.value.http_status) == ("chat.idempotency_mismatch", 422)
    assert info.value.details == {"idempotency_key": "k"}
    assert await stream.head() == 1


async def test_extra_ops_commit_with_the_append_or_not_at_all() -> None:
    store = MemoryItemStore()
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW, extra_ops=lambda a, b: [Put("checkpoint", b"1")])
    assert await store.get("p", "checkpoint") is not None
    with pytest.raises(HeadMoved):
        await stream.append(
            entries(b"b"),
            now=NOW,
            expected_head=1,
            idempotency_key="k",
            payload_fingerprint="f",
            extra_ops=lambda a, b: [Put("checkpoint", b"2", condition=Absent())],
        )
    assert await stream.head() == 1
    assert await stream.idempotent_result("k", "f") is None


def test_fingerprints_ignore_key_order_and_see_values() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


@given(st.integers(0, 10**15), st.integers(0, 10**15))
def test_sequence_keys_sort_like_their_numbers(a: int, b: int) -> None:
    assert (seq_key(a) < seq_key(b)) == (a < b)
    assert seq_of(seq_key(a)) == a


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=10))
def test_concurrent_appends_at_head_keep_sequences_gap_free_and_unique(sizes: list[int]) -> None:
    async def run() -> None:
        store = Interleaving(MemoryItemStore())
        stream = SequencedStream(store, "p", "chat")

        async def writer(w: int, n: int) -> tuple[int, int]:
            done = await stream.append(lambda first: [f"{w}:{i}".encode() for i in range(n)], now=NOW)
            return done.first_seq, done.last_seq

        spans = await asyncio.gather(*(writer(w, n) for w, n in enumerate(sizes)))
        stored = await stream.read(0, 1000)
        assert [seq_of(i.key) for i in stored] == list(range(1, sum(sizes) + 1))
        for w, (n, (first, last)) in enumerate(zip(sizes, spans, strict=True)):
            assert last - first + 1 == n
            # each writer's entries are contiguous at the sequences it was told
            assert [i.value for i in stored[first - 1 : last]] == [f"{w}:{i}".encode() for i in range(n)]

    asyncio.run(run())


@settings(max_examples=25, deadline=None)
@given(writers=st.integers(2, 8), head=st.integers(0, 3))
def test_concurrent_appends_at_one_expected_head_have_exactly_one_winner(writers: int, head: int) -> None:
    async def run() -> None:
        stream = SequencedStream(Interleaving(MemoryItemStore()), "p", "chat")
        if head:
            await stream.append(lambda first: [b"seed"] * head, now=NOW)

        async def attempt(w: int) -> bool:
            try:
                await stream.append(entries(str(w).encode()), now=NOW, expected_head=head)
            except HeadMoved as moved:
                assert moved.head == head + 1
                return False
            return True

        assert sum(await asyncio.gather(*(attempt(w) for w in range(writers)))) == 1
        assert await stream.head() == head + 1

    asyncio.run(run())


async def test_concurrent_appends_on_sqlite_threads_are_gap_free(tmp_path: Path) -> None:
    store = SqliteItemStore(tmp_path / "s.sqlite3", private=True)
    stream = SequencedStream(store, "p", "chat")
    spans = await asyncio.gather(*(stream.append(entries(b"x", b"y"), now=NOW) for _ in range(16)))
    assert sorted(s.first_seq for s in spans) == list(range(1, 33, 2))
    assert [seq_of(i.key) for i in await stream.read(0, 100)] == list(range(1, 33))
    await store.close()


class Calls(ItemStore):
    """Counts the store calls an append makes (round trips to a remote backend)."""

    def __init__(self, inner: ItemStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.calls: list[str] = []

    @property
    def backing(self) -> ItemStore:
        return self.inner.backing

    async def get(self, partition: str, key: str) -> Item | None:
        self.calls.append("get")
        return await self.inner.get(partition, key)

    async def query(self, partition: str, prefix: str, **kwargs: object) -> list[Item]:  # type: ignore[override]
        self.calls.append("query")
        return await self.inner.query(partition, prefix, **kwargs)  # type: ignore[arg-type]

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        self.calls.append("write")
        await self.inner.write(partition, ops)


async def test_an_append_at_a_known_head_is_one_write_with_a_check_on_the_head() -> None:
    store = Calls(MemoryItemStore())
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    assert store.calls == ["query", "write"]  # a stream this process has not seen: head read
    store.calls.clear()
    await stream.append(entries(b"b"), now=NOW)
    await SequencedStream(store, "p", "chat").append(entries(b"c"), now=NOW, expected_head=2)
    assert store.calls == ["write", "write"]
    assert [i.value for i in await stream.read(0, 10)] == [b"a", b"b", b"c"]


async def test_another_writer_makes_the_hint_stale_and_costs_one_failed_batch() -> None:
    shared = MemoryItemStore()
    ours, theirs = Calls(shared), Interleaving(shared)
    await SequencedStream(ours, "p", "chat").append(entries(b"a"), now=NOW)
    await SequencedStream(theirs, "p", "chat").append(entries(b"b", b"c"), now=NOW)
    ours.calls.clear()
    done = await SequencedStream(ours, "p", "chat").append(entries(b"d"), now=NOW)
    assert (done.first_seq, ours.calls) == (4, ["write", "query", "write"])


async def test_a_full_batch_at_a_hinted_head_reads_the_head_instead_of_checking() -> None:
    store = MemoryItemStore()
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    head_hints(store).saw("p", 9)  # stale: the batch below has no room for the head check
    n = store.capabilities.max_batch_ops
    done = await stream.append(lambda first: [b"x"] * n, now=NOW)
    assert (done.first_seq, done.last_seq) == (2, n + 1)
    assert [seq_of(i.key) for i in await stream.read(0, 1000)] == list(range(1, n + 2))


async def test_without_atomic_checks_every_append_reads_the_head_first() -> None:
    inner = MemoryItemStore()
    store = Calls(inner)
    store.capabilities = msgspec.structs.replace(inner.capabilities, atomic_checks=False)
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    head_hints(store).saw("p", 5)  # ignored: only a batch check could catch a wrong guess
    await stream.append(entries(b"b"), now=NOW)
    assert store.calls == ["query", "write", "query", "write"]
    assert [seq_of(i.key) for i in await stream.read(0, 10)] == [1, 2]



def _unchecked(inner: ItemStore) -> Calls:
    """``inner`` declaring no atomic checks (as Firestore and Cosmos do), its calls recorded."""
    store = Calls(inner)
    store.capabilities = msgspec.structs.replace(inner.capabilities, atomic_checks=False)
    return store


async def test_without_atomic_checks_a_key_look_up_reads_the_head_in_the_same_round_trip() -> None:
    store = _unchecked(MemoryItemStore())
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    store.calls.clear()
    prior, head = await stream.look_up("k", "f")
    assert (prior, head) == (None, 1)
    done = await stream.append(
        entries(b"b"), now=NOW, idempotency_key="k", payload_fingerprint="f", key_checked=True,
        known_head=head,
    )
    assert sorted(store.calls[:2]) == ["get", "query"] and store.calls[2:] == ["write"]
    assert done.first_seq == 2
    prior, head = await stream.look_up("k", "f")
    assert prior is not None and prior.replayed and prior.first_seq == 2 and head == 2
    with pytest.raises(NorthstarError) as info:
        await stream.look_up("k", "other")
    assert info.value.code == "chat.idempotency_mismatch"


async def test_with_atomic_checks_a_key_look_up_reads_only_the_record() -> None:
    store = Calls(MemoryItemStore())
    assert await SequencedStream(store, "p", "chat").look_up("k", "f") == (None, None)
    assert store.calls == ["get"]


async def test_a_known_head_other_than_the_expected_one_is_head_moved_without_a_call() -> None:
    store = _unchecked(MemoryItemStore())
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a", b"b"), now=NOW)
    store.calls.clear()
    with pytest.raises(HeadMoved) as info:
        await stream.append(entries(b"c"), now=NOW, expected_head=1, known_head=2)
    assert (info.value.head, store.calls) == (2, [])


async def test_a_known_head_overtaken_by_another_writer_fails_the_batch_and_is_read_again() -> None:
    shared = MemoryItemStore()
    ours = _unchecked(shared)
    stream = SequencedStream(ours, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    _, head = await stream.look_up("k", "f")
    await SequencedStream(_unchecked(shared), "p", "chat").append(entries(b"b"), now=NOW)
    ours.calls.clear()
    done = await stream.append(
        entries(b"c"), now=NOW, idempotency_key="k", payload_fingerprint="f", key_checked=True,
        known_head=head,
    )
    assert done.first_seq == 3 and ours.calls == ["write", "get", "query", "write"]
    with pytest.raises(HeadMoved) as info:  # at an expected head: the loser learns the real one
        await stream.append(entries(b"d"), now=NOW, expected_head=2, known_head=2)
    assert info.value.head == 3
    assert [i.value for i in await stream.read(0, 10)] == [b"a", b"b", b"c"]


@settings(max_examples=40, deadline=None)
@given(writers=st.integers(2, 8), head=st.integers(0, 3), at_expected=st.booleans())
def test_concurrent_appends_at_one_head_read_beside_their_key_have_one_winner_and_no_gap(
    writers: int, head: int, at_expected: bool
) -> None:
    """Without atomic checks, every writer reads the head beside its key's record and appends
    at it: of those at one expected head exactly one wins; without one all land, gap-free."""

    async def run() -> None:
        shared = MemoryItemStore()
        if head:
            await SequencedStream(shared, "p", "chat").append(lambda first: [b"seed"] * head, now=NOW)

        async def writer(w: int) -> bool:
            store = Interleaving(shared)
            store.capabilities = msgspec.structs.replace(shared.capabilities, atomic_checks=False)
            stream = SequencedStream(store, "p", "chat")
            _, known = await stream.look_up(f"k{w}", "f")
            try:
                await stream.append(
                    entries(str(w).encode()),
                    now=NOW,
                    expected_head=head if at_expected else None,
                    idempotency_key=f"k{w}",
                    payload_fingerprint="f",
                    key_checked=True,
                    known_head=known,
                )
            except HeadMoved as moved:
                assert moved.head > head
                return False
            return True

        won = await asyncio.gather(*(writer(w) for w in range(writers)))
        assert sum(won) == (1 if at_expected else writers)
        items = await SequencedStream(shared, "p", "chat").read(0, 100)
        assert [seq_of(i.key) for i in items] == list(range(1, len(items) + 1))
        assert len(items) == head + sum(won)

    asyncio.run(run())


async def test_a_head_read_in_an_operation_serves_its_next_append_once() -> None:
    store = _unchecked(MemoryItemStore())
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    with operation_heads():
        await SequencedStream(store, "p", "chat").head()
        store.calls.clear()
        await stream.append(entries(b"b"), now=NOW)  # the head read above, taken
        await stream.append(entries(b"c"), now=NOW)  # nothing left: read again
        assert store.calls == ["write", "query", "write"]
        await stream.head()
        store.calls.clear()
        with pytest.raises(HeadMoved) as info:  # not the expected head: read for itself
            await SequencedStream(store, "p", "chat").append(entries(b"d"), now=NOW, expected_head=0)
        assert (info.value.head, store.calls) == (3, ["query"])
    store.calls.clear()
    await stream.head()
    await stream.append(entries(b"e"), now=NOW)  # outside a scope a head read is not kept
    assert store.calls == ["query", "query", "write"]
    assert [i.value for i in await stream.read(0, 10)] == [b"a", b"b", b"c", b"e"]


Step = tuple[int, str, int]  # (process, kind, argument)
STEP = st.tuples(
    st.integers(0, 2), st.sampled_from(["append", "expect", "retry", "mislead"]), st.integers(0, 40)
)


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.lists(STEP, min_size=1, max_size=3), min_size=1, max_size=10))
def test_processes_with_stale_or_wrong_head_hints_match_a_reference_log(groups: list[list[Step]]) -> None:
    """Three 'processes' (separate store objects, so separate head hints) append concurrently
    to one stream, some at an expected head, some retrying an earlier idempotency key, some
    with hints pushed beyond the real head. The stored log must equal the reference built
    from the acknowledged outcomes: gap-free, every acknowledged entry once, replays
    returning the first outcome, losers at an expected head absent."""

    async def run() -> None:
        shared = MemoryItemStore()
        processes = [Interleaving(shared) for _ in range(3)]
        log: dict[int, bytes] = {}  # seq -> entry, from acknowledged appends
        first_of: dict[str, int] = {}  # idempotency key -> first outcome
        serial = 0

        async def step(proc: int, kind: str, arg: int, value: bytes, head: int) -> None:
            store = processes[proc]
            stream = SequencedStream(store, "p", "chat")
            if kind == "mislead":
                head_hints(store).saw("p", head + 1 + arg)
                kind = "append"
            if kind == "retry" and first_of:
                key = sorted(first_of)[arg % len(first_of)]
                done = await stream.append(
                    entries(b"ignored"), now=NOW, idempotency_key=key, payload_fingerprint=key
                )
                assert done.replayed and done.first_seq == first_of[key]
                return
            key = value.decode()
            try:
                done = await stream.append(
                    entries(value),
                    now=NOW,
                    expected_head=head if kind == "expect" else None,
                    idempotency_key=key,
                    payload_fingerprint=key,
                )
            except HeadMoved as moved:
                assert moved.head > head
                return
            assert not done.replayed and done.first_seq not in log
            log[done.first_seq] = value
            first_of[key] = done.first_seq

        for group in groups:
            head = len(log)
            tasks = []
            for proc, kind, arg in group:
                serial += 1
                tasks.append(step(proc, kind, arg, f"e{serial}".encode(), head))
            await asyncio.gather(*tasks)
            stored = await SequencedStream(shared, "p", "chat").read(0, 1000)
            assert [seq_of(i.key) for i in stored] == list(range(1, len(log) + 1))
            assert [i.value for i in stored] == [log[s] for s in sorted(log)]

    asyncio.run(run())


async def test_a_hint_beyond_the_data_is_corrected_by_the_head_read_it_causes() -> None:
    store = Calls(MemoryItemStore())
    stream = SequencedStream(store, "p", "chat")
    await stream.append(entries(b"a"), now=NOW)
    head_hints(store).saw("p", 40)  # e.g. the data was restored from an older backup
    store.calls.clear()
    await stream.append(entries(b"b"), now=NOW)
    await stream.append(entries(b"c"), now=NOW)
    assert store.calls == ["write", "query", "write", "write"]
    assert [seq_of(i.key) for i in await stream.read(0, 10)] == [1, 2, 3]


# --- ordered publication of a numbered series ------------------------------------------------


def _published(stream: SequencedStream, series: str = "ops") -> OrderedSeries:
    return OrderedSeries(stream, series)


async def test_a_publication_at_steady_state_is_one_write_and_no_read() -> None:
    store = Calls(MemoryItemStore())
    ordered = _published(SequencedStream(store, "p", "event_stream"))
    first = await ordered.publish(1, b"one", "fp1", now=NOW)
    store.calls.clear()
    second = await ordered.publish(2, b"two", "fp2", now=NOW)
    assert store.calls == ["write"]
    assert (first.first_seq, second.first_seq, second.replayed) == (1, 2, False)
    assert await ordered.published() == 2
    assert (await ordered.seq_of(2), await ordered.seq_of(3)) == (2, None)


async def test_a_position_ahead_of_the_series_is_refused_with_what_was_published() -> None:
    ordered = _published(SequencedStream(MemoryItemStore(), "p", "event_stream"))
    with pytest.raises(SeriesBehind) as info:
        await ordered.publish(3, b"three", "fp3", now=NOW)
    assert (info.value.published, info.value.position) == (0, 3)
    await ordered.publish(1, b"one", "fp1", now=NOW)
    with pytest.raises(SeriesBehind) as info:
        await ordered.publish(3, b"three", "fp3", now=NOW)
    assert info.value.published == 1
    assert [i.value for i in await ordered.stream.read(0, 10)] == [b"one"]


async def test_a_repeated_position_is_answered_from_its_record_and_another_payload_is_422() -> None:
    ordered = _published(SequencedStream(MemoryItemStore(), "p", "event_stream"))
    await ordered.publish(1, b"one", "fp1", now=NOW)
    again = await ordered.publish(1, b"one", "fp1", now=NOW)
    assert (again.first_seq, again.replayed) == (1, True)
    with pytest.raises(NorthstarError) as info:
        await ordered.publish(1, b"other", "fp-other", now=NOW)
    assert info.value.code == "event_stream.idempotency_mismatch"
    assert len(await ordered.stream.read(0, 10)) == 1


async def test_a_stale_head_hint_costs_one_failed_batch_then_publishes_once() -> None:
    shared = MemoryItemStore()
    ours = Calls(shared)
    ordered = _published(SequencedStream(ours, "p", "event_stream"))
    await ordered.publish(1, b"one", "fp1", now=NOW)
    await SequencedStream(Interleaving(shared), "p", "event_stream").append(entries(b"gesture"), now=NOW)
    ours.calls.clear()
    done = await ordered.publish(2, b"two", "fp2", now=NOW)
    # the failed batch, the head read inside the append, marker and record read together
    assert (done.first_seq, ours.calls[0], ours.calls[-1]) == (3, "write", "write")
    assert sorted(ours.calls[1:-1]) == ["get", "get", "query"]
    assert [i.value for i in await ordered.stream.read(0, 10)] == [b"one", b"gesture", b"two"]


async def test_a_preceded_position_puts_both_entries_in_one_write_each_once() -> None:
    store = Calls(MemoryItemStore())
    stream = SequencedStream(store, "p", "event_stream")
    ordered = _published(stream)
    await ordered.publish(1, b"one", "fp1", now=NOW)
    store.calls.clear()
    before = KeyedEntry(b"decision", "safety-1", "fp-d")
    done = await ordered.publish(2, b"two", "fp2", now=NOW, preceded_by=[before])
    assert store.calls == ["write"]
    assert (done.first_seq, done.last_seq, done.replayed) == (3, 3, False)  # names the position
    again = await ordered.publish(2, b"two", "fp2", now=NOW, preceded_by=[before])
    assert (again.first_seq, again.replayed) == (3, True)
    assert [i.value for i in await stream.read(0, 10)] == [b"one", b"decision", b"two"]
    assert await ordered.seq_of(2) == 3
    # the preceding entry's record is a keyed append's: a repeat of it is answered from it
    prior = await stream.idempotent_result("safety-1", "fp-d")
    assert prior is not None and (prior.first_seq, prior.last_seq) == (2, 2)


async def test_a_preceding_entry_already_on_the_stream_is_not_published_again() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "event_stream")
    ordered = _published(stream)
    await ordered.publish(1, b"one", "fp1", now=NOW)
    await stream.append(entries(b"decision"), now=NOW, idempotency_key="safety-1", payload_fingerprint="fp-d")
    before = KeyedEntry(b"decision", "safety-1", "fp-d")
    done = await ordered.publish(2, b"two", "fp2", now=NOW, preceded_by=[before])
    assert done.first_seq == 3
    assert [i.value for i in await stream.read(0, 10)] == [b"one", b"decision", b"two"]


async def test_a_preceded_position_is_all_or_nothing() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "event_stream")
    ordered = _published(stream)
    with pytest.raises(SeriesBehind):
        await ordered.publish(2, b"two", "fp2", now=NOW, preceded_by=[KeyedEntry(b"d", "safety-1", "fp-d")])
    assert await stream.read(0, 10) == []
    assert await stream.idempotent_result("safety-1", "fp-d") is None


@pytest.mark.parametrize("atomic_checks", [True, False])
@settings(max_examples=25, deadline=None)
@given(publishers=st.integers(2, 5), positions=st.integers(1, 6), noise=st.integers(0, 4))
def test_concurrent_publishers_put_each_position_on_the_stream_once_in_order(
    atomic_checks: bool, publishers: int, positions: int, noise: int
) -> None:
    """Several 'processes' (separate store objects, so separate head hints) each publish every
    position of one series as soon as they can, while other writers append to the stream: each
    position is on the stream exactly once, in order, and every publisher got its sequence."""

    async def run() -> None:
        shared = MemoryItemStore()

        def process() -> SequencedStream:
            store = Interleaving(shared)
            store.capabilities = msgspec.structs.replace(shared.capabilities, atomic_checks=atomic_checks)
            return SequencedStream(store, "p", "event_stream")

        async def publisher() -> list[int]:
            ordered = _published(process())
            seqs = []
            for position in range(1, positions + 1):
                done = await ordered.publish(position, f"op{position}".encode(), f"fp{position}", now=NOW)
                seqs.append(done.first_seq)
            return seqs

        async def other() -> None:
            for _ in range(noise):
                await process().append(entries(b"noise"), now=NOW)

        outcomes = await asyncio.gather(*(publisher() for _ in range(publishers)), other())
        stored = await SequencedStream(shared, "p", "event_stream").read(0, 1000)
        ops = [(seq_of(i.key), i.value) for i in stored if i.value != b"noise"]
        assert [value for _, value in ops] == [f"op{p}".encode() for p in range(1, positions + 1)]
        for seqs in outcomes[:publishers]:
            assert seqs == [seq for seq, _ in ops]
        assert await _published(process()).published() == positions

    asyncio.run(run())


# --- checkpoints and headers ---------------------------------------------------------------------


async def test_the_latest_checkpoint_comes_back_whole_from_its_chunks() -> None:
    store = MemoryItemStore()
    stream = SequencedStream(store, "p", "canvas")
    checkpoints = Checkpoints(stream)
    assert await checkpoints.latest() is None
    big = bytes(range(256)) * ((2 * CHUNK_BYTES) // 256 + 7)
    for seq, data in ((1, b"small"), (2, big)):
        await stream.append(
            entries(b"e"), now=NOW, extra_ops=lambda _f, _l, s=seq, d=data: checkpoint_ops(s, d)
        )
    latest = await checkpoints.latest()
    assert latest is not None and (latest.seq, latest.data) == (2, big)
    assert len(checkpoint_ops(2, big)) == 3


async def test_a_header_commits_with_the_first_entry_only() -> None:
    stream = SequencedStream(MemoryItemStore(), "p", "chat")
    assert await read_header(stream) is None
    for value in (b"first", b"second"):
        await stream.append(entries(b"e"), now=NOW, extra_ops=lambda first, _l, v=value: header_ops(first, v))
    assert await read_header(stream) == b"first"
