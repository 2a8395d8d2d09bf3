"""Live tails across processes through the store's activity index (``kernel.activity``).

Two :class:`TailHub` instances over one shared store stand for two processes (each on its own
store object: a private SQLite connection, or its own emulator client). What is checked:

* the index's rules (a stateful model): a reader is told of every append another process
  published after the reader started, or told that it missed some — never silently not;
  a record stays within its bounds;
* delivery across hubs, once and in order, through the index alone (the safety read so rare
  it cannot fire during the test), and through the safety read alone when the writer's
  record never reaches the store (a store wrapper drops it);
* a record that lost entries a reader had not seen makes that reader check every stream;
* the idle cost, counted: store reads per followed stream per poll, at the default ratio of
  intervals, within the budget of 0.05 reads/s per stream (at 0.5 s polls);
* a backend outage: the hub keeps polling, delivery resumes afterwards; ``close()`` stops
  every task and publishes what it had not yet;
* a memory store (not shared): no poller at all; hubs of one process wake each other;
* the same cross-process delivery on the DynamoDB, Firestore and Cosmos DB emulators.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts.round_trips import InstrumentedStore, Trace
from northstar_adapters import AdapterFactory
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core import observe
from northstar_core.kernel.activity import (
    ACTIVITY_PARTITION,
    RECORD_PREFIX,
    ActivityFeed,
    ActivityLog,
    Counter,
    Record,
    record_key,
)
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.kernel.tail import DEFAULT_POLL_INTERVAL, DEFAULT_SAFETY_INTERVAL, TailHub
from northstar_core.routing import Target
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op, Put
from tests.e2e.cloud import CLOUD_BACKENDS, cloud_target
from tests.emulators.cosmos import cosmos_endpoint, cosmos_server  # noqa: F401 - session fixtures
from tests.emulators.firestore import firestore_emulator  # noqa: F401
from tests.emulators.moto import dynamodb_endpoint, moto_server  # noqa: F401

WAIT = 20.0  # seconds: only a bound on a wait that must end, never an assertion on speed
NEVER = 3600.0  # a safety interval that cannot come round during a test
IDLE_BUDGET = 0.05  # store reads per second per followed stream, per process


# --- the index's rules -------------------------------------------------------------------


class IndexModel(RuleBasedStateMachine):
    """Two writers' logs (small bounds, so entries get dropped) and one reader.

    The store holds each writer's latest flushed record only (a flush overwrites). The reader
    starts at its first read; every mark made after that and published by a flush must reach
    it — as a head at least as high for that partition — at the next read, unless that read
    reports entries lost (then the reader checks every stream itself)."""

    PARTITIONS = ("p1", "p2", "p3", "p4", "p5", "p6")

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.logs = {
            w: ActivityLog(Counter(), window=3.0, max_entries=3, max_bytes=130) for w in ("w1", "w2")
        }
        self.heads = {p: 0 for p in self.PARTITIONS}
        self.stored: dict[str, bytes] = {}
        self.feed = ActivityFeed("me")
        self.started = False
        # marks made since the reader started, not yet flushed / flushed but not yet read
        self.pending: dict[str, dict[str, int]] = {"w1": {}, "w2": {}}
        self.owed: dict[str, int] = {}

    @rule(writer=st.sampled_from(["w1", "w2"]), partition=st.sampled_from(PARTITIONS), late=st.booleans())
    def mark(self, writer: str, partition: str, late: bool) -> None:
        if late and self.heads[partition] > 0:
            head = self.heads[partition]  # a notify arriving after a later append's
        else:
            head = self.heads[partition] = self.heads[partition] + 1
        news = self.logs[writer].mark(partition, head, self.now)
        # not news: the log holds a head as high, published or to be published like any other
        if news and self.started:
            known = self.pending[writer].get(partition, 0)
            self.pending[writer][partition] = max(known, head)

    @rule(seconds=st.floats(0, 2))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(writer=st.sampled_from(["w1", "w2"]))
    def flush(self, writer: str) -> None:
        self.stored[writer] = self.logs[writer].record(self.now)
        for partition, head in self.pending[writer].items():
            self.owed[partition] = max(self.owed.get(partition, 0), head)
        self.pending[writer] = {}

    @rule()
    def read(self) -> None:
        items = [Item(record_key(w), value) for w, value in sorted(self.stored.items())]
        moved, lost = self.feed.read(items, self.now)
        if self.started and not lost:
            for partition, head in self.owed.items():
                assert moved.get(partition, 0) >= head, (partition, head, moved)
        self.owed = {}
        self.started = True

    @rule()
    def own_record_is_ignored(self) -> None:
        value = self.logs["w1"].record(self.now)
        moved, lost = ActivityFeed("w1").read([Item(record_key("w1"), value)], self.now)
        assert (moved, lost) == ({}, False)

    @invariant()
    def records_stay_bounded(self) -> None:
        for log in self.logs.values():
            assert len(log) <= log.max_entries
            assert len(log.record(self.now)) <= log.max_bytes


IndexModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestIndexModel = IndexModel.TestCase


def test_a_record_of_many_long_partitions_stays_under_its_byte_limit_and_raises_its_floor() -> None:
    log = ActivityLog(Counter())
    for i in range(5000):
        log.mark(f"t_tenant_{i:05d}|lab|stream|" + "x" * 80, 1, 0.0)
    value = log.record(0.0)
    assert len(value) <= log.max_bytes
    assert 0 < len(log) < 5000
    assert log.floor == 5000 - len(log)  # the oldest went first


def test_a_record_another_version_wrote_is_ignored() -> None:
    moved, lost = ActivityFeed("me").read([Item(RECORD_PREFIX + "other", b"\x00not msgpack")], 0.0)
    assert (moved, lost) == ({}, False)


# --- two hubs over one SQLite file ---------------------------------------------------------


class PassThrough(ItemStore):
    """Passes every call on to ``inner`` (the fault-injecting wrappers below change some)."""

    def __init__(self, inner: ItemStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities

    @property
    def backing(self) -> ItemStore:
        return self.inner.backing

    async def get(self, partition: str, key: str) -> Item | None:
        return await self.inner.get(partition, key)

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        return await self.inner.query(partition, prefix, **kw)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await self.inner.write(partition, ops)


class DropActivity(PassThrough):
    """Passes every call on, except writes to the activity partition, which it drops: the
    writer's record never reaches the store (as if it died right after its append)."""

    def __init__(self, inner: ItemStore) -> None:
        super().__init__(inner)
        self.dropped = 0

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        if partition == ACTIVITY_PARTITION:
            self.dropped += 1
            return
        await super().write(partition, ops)


class Outage(PassThrough):
    """Passes every call on unless ``down``: then each raises :class:`BackendUnavailable`."""

    def __init__(self, inner: ItemStore) -> None:
        super().__init__(inner)
        self.down = False
        self.refused = 0

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise BackendUnavailable("injected outage")

    async def get(self, partition: str, key: str) -> Item | None:
        self._check()
        return await super().get(partition, key)

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        self._check()
        return await super().query(partition, prefix, **kw)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        self._check()
        await super().write(partition, ops)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "shared.sqlite3"


def sqlite(path: Path) -> SqliteItemStore:
    # private: its own connections, as another process would have
    return SqliteItemStore(path, namespace="ns", private=True)


async def append(hub: TailHub, stream: SequencedStream, value: bytes) -> int:
    done = await stream.append(lambda _first: [value], now=0.0)
    hub.notify(stream, done.last_seq)
    return done.last_seq


async def collect(follower: Any, n: int) -> list[Item]:
    out: list[Item] = []
    async with asyncio.timeout(WAIT):
        while len(out) < n:
            item = await anext(follower)
            if item is not None:
                out.append(item)
    return out


@contextmanager
def pollers() -> Iterator[list[int]]:
    """The live-tail pollers reported to the observer while the block runs: ``[running]``."""

    class Count(observe.NoopObserver):
        def tail_pollers(self, delta: int) -> None:
            running[0] += delta

    running = [0]
    previous = observe.install(Count())
    try:
        yield running
    finally:
        observe.install(previous)


@pytest.fixture
async def hubs() -> AsyncIterator[list[TailHub]]:
    made: list[TailHub] = []
    yield made
    for hub in made:
        await hub.close()


def hub(made: list[TailHub], **kw: Any) -> TailHub:
    kw.setdefault("poll_interval", 0.02)
    kw.setdefault("safety_interval", NEVER)
    kw.setdefault("flush_interval", 0.01)
    made.append(one := TailHub(**kw))
    return one


PART = "t_a|lab|thread|th"


async def test_a_follower_gets_another_hubs_appends_once_in_order_through_the_index(
    db: Path, hubs: list[TailHub]
) -> None:
    a, b = hub(hubs), hub(hubs)
    store_a, store_b = sqlite(db), sqlite(db)
    reader = SequencedStream(store_a, PART, "chat")
    writer = SequencedStream(store_b, PART, "chat")
    await append(b, writer, b"before")
    with pollers() as running:
        follower = a.follow(reader, 0, heartbeat=0.05)
        first = await collect(follower, 1)  # replayed from the store
        assert running == [1]  # one activity poller for the store
        for i in range(10):
            await append(b, writer, f"m{i}".encode())
        # several appends between two polls: each still delivered, once
        await asyncio.gather(*(append(b, writer, b"burst") for _ in range(5)))
        rest = await collect(follower, 15)
        await follower.aclose()
        assert a.active_streams == 0
        await a.close()
        assert running == [0]
    got = first + rest
    assert [seq_of(i.key) for i in got] == list(range(1, 17))
    assert [i.value for i in got[:11]] == [b"before", *(f"m{i}".encode() for i in range(10))]
    records = await store_a.query(ACTIVITY_PARTITION, RECORD_PREFIX)
    assert [r.key for r in records] == [record_key(b.process_id)]


async def test_without_the_writers_record_the_safety_read_still_delivers(
    db: Path, hubs: list[TailHub]
) -> None:
    # one safety read per stream every 0.2 s (each 10th poll), the index never says anything
    a, b = hub(hubs, safety_interval=0.2), hub(hubs)
    store_b = DropActivity(sqlite(db))
    reader = SequencedStream(sqlite(db), PART, "chat")
    writer = SequencedStream(store_b, PART, "chat")
    follower = a.follow(reader, 0, heartbeat=0.05)
    assert await anext(follower) is None  # subscribed
    for i in range(3):
        await append(b, writer, f"m{i}".encode())
    got = await collect(follower, 3)
    assert [(seq_of(i.key), i.value) for i in got] == [(1, b"m0"), (2, b"m1"), (3, b"m2")]
    assert store_b.dropped >= 1
    assert await reader.store.query(ACTIVITY_PARTITION, RECORD_PREFIX) == []
    await follower.aclose()


async def test_a_record_that_dropped_unseen_entries_makes_every_stream_check_its_head(
    db: Path, hubs: list[TailHub]
) -> None:
    a = hub(hubs)
    store = sqlite(db)
    streams = [SequencedStream(store, f"t_a|lab|thread|th{i}", "chat") for i in range(3)]
    followers = [a.follow(s, 0, heartbeat=0.05) for s in streams]
    for f in followers:
        assert await anext(f) is None

    async def publish(record: Record) -> None:
        value = msgspec.msgpack.encode(record)
        await store.write(ACTIVITY_PARTITION, [Put(record_key("other"), value)])

    await publish(Record(0, [(1, "t_a|lab|thread|elsewhere", 1)]))
    await asyncio.sleep(0.1)  # the reader sees the other process at counter 1
    for s in streams:  # appended without any notify or entry of their own
        await s.append(lambda _first: [b"quiet"], now=0.0)
    await publish(Record(7, []))  # entries 2..7 were dropped before the reader saw them
    for f in followers:
        got = await collect(f, 1)
        assert [(seq_of(i.key), i.value) for i in got] == [(1, b"quiet")]
        await f.aclose()


async def test_idle_followed_streams_cost_under_budget_in_reads_per_stream(
    db: Path, hubs: list[TailHub]
) -> None:
    """Counted, not timed: store calls per poll of the hub, converted to reads per second at
    the default poll interval. Intervals keep the default ratio (safety / poll)."""
    n, polls = 100, 60
    poll = 0.01
    a = hub(hubs, poll_interval=poll, safety_interval=poll * DEFAULT_SAFETY_INTERVAL / DEFAULT_POLL_INTERVAL)
    trace = Trace(delay=0)
    store = InstrumentedStore(sqlite(db), "chat_store", trace)
    streams = [SequencedStream(store, f"t_a|lab|thread|th{i}", "chat") for i in range(n)]
    for s in streams[: n // 2]:  # half of them hold an entry already
        await s.append(lambda _first: [b"old"], now=0.0)
    # heartbeats every 4 polls: a keep-alive costs no store read
    followers = [a.follow(s, 0, heartbeat=poll * 4) for s in streams]
    items = [0] * n
    beats = [0] * n

    async def consume(i: int) -> None:
        async for item in followers[i]:
            if item is None:
                beats[i] += 1
            else:
                items[i] += 1

    consumers = [asyncio.ensure_future(consume(i)) for i in range(n)]
    async with asyncio.timeout(WAIT):
        while sum(items) < n // 2:  # noqa: ASYNC110 - the stored entries replayed: all idle now
            await asyncio.sleep(poll)
    await asyncio.sleep(poll * 5)
    trace.start()
    await asyncio.sleep(poll * polls)
    rt = trace.stop()
    activity = sum(c.partition == ACTIVITY_PARTITION for c in rt.calls)
    reads = [c for c in rt.calls if c.method in ("get", "query")]
    assert [c for c in rt.calls if c.method == "write"] == []  # nothing to publish: no flush
    # Per stream and second at the default 0.5 s poll: one index query per poll between all of
    # them, plus each stream's own head once per safety interval.
    per_stream_per_s = len(reads) / n / (activity * DEFAULT_POLL_INTERVAL)
    assert per_stream_per_s <= IDLE_BUDGET, (len(reads), activity, [c.describe() for c in reads])
    assert per_stream_per_s < 2.0 / 20  # the per-stream poller read 2/s: 20x less at least
    # Besides the index, only safety reads, going round the streams: none read twice (the
    # window is shorter than a safety interval), so no heartbeat and no wake-up read anything.
    heads = [c.partition for c in reads if c.partition != ACTIVITY_PARTITION]
    assert len(heads) == len(set(heads)) > 0
    assert items == [1] * (n // 2) + [0] * (n - n // 2)
    assert min(beats) > 0
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)


async def test_an_outage_neither_stops_the_hub_nor_loses_appends(db: Path, hubs: list[TailHub]) -> None:
    a, b = hub(hubs), hub(hubs)
    reader_store, writer_store = Outage(sqlite(db)), Outage(sqlite(db))
    reader = SequencedStream(reader_store, PART, "chat")
    writer = SequencedStream(writer_store, PART, "chat")
    with pollers() as running:
        follower = a.follow(reader, 0, heartbeat=0.05)
        assert await anext(follower) is None
        await append(b, writer, b"one")
        assert [i.value for i in await collect(follower, 1)] == [b"one"]
        reader_store.down = True
        await append(b, writer, b"two")  # published, but the reader cannot read the index
        refused = reader_store.refused
        await asyncio.sleep(0.2)
        assert reader_store.refused >= refused + 3  # polls keep failing, the hub keeps polling
        assert running == [1]
        writer_store.down = True
        with pytest.raises(BackendUnavailable):
            await append(b, writer, b"never")
        reader_store.down = writer_store.down = False
        await append(b, writer, b"three")
        got = await collect(follower, 2)
        assert [(seq_of(i.key), i.value) for i in got] == [(2, b"two"), (3, b"three")]
        await follower.aclose()


async def test_an_unpublished_append_is_published_on_close(db: Path, hubs: list[TailHub]) -> None:
    a, b = hub(hubs), hub(hubs, flush_interval=NEVER)  # b flushes once, then never again
    reader = SequencedStream(sqlite(db), PART, "chat")
    writer = SequencedStream(sqlite(db), PART, "chat")
    follower = a.follow(reader, 0, heartbeat=0.05)
    assert await anext(follower) is None
    await append(b, writer, b"first")  # published at once
    assert [i.value for i in await collect(follower, 1)] == [b"first"]
    await append(b, writer, b"second")  # waits for the next flush interval
    await b.close()  # publishes it
    assert [i.value for i in await collect(follower, 1)] == [b"second"]
    await follower.aclose()


async def test_on_a_memory_store_there_is_no_poller_and_hubs_wake_each_other() -> None:
    store = MemoryItemStore()
    a, b = TailHub(poll_interval=0.01), TailHub(poll_interval=0.01)
    stream = SequencedStream(store, PART, "chat")
    with pollers() as running:
        follower = a.follow(stream, 0, heartbeat=0.05)
        assert await anext(follower) is None
        assert running == [0]
        await append(b, stream, b"x")
        assert [i.value for i in await collect(follower, 1)] == [b"x"]
        await follower.aclose()
    await a.close()
    await b.close()


def test_intervals_must_be_positive() -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError):
            TailHub(poll_interval=bad)
        with pytest.raises(ValueError):
            TailHub(safety_interval=bad)


# --- two hubs over one cloud emulator -------------------------------------------------------


@pytest.fixture(params=CLOUD_BACKENDS)
async def cloud_pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ItemStore, ItemStore]]:
    target = cloud_target(request.param, request)
    kind = Target(resource_kind="chat_store", backend=target.backend, params=target.params)
    with _env(target.env):
        await AdapterFactory().provision(kind, dry_run=False)
        first, second = AdapterFactory().open(kind), AdapterFactory().open(kind)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()
            await target.cleanup()


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        yield


async def test_cross_process_delivery_on_each_cloud_emulator(
    cloud_pair: tuple[ItemStore, ItemStore], hubs: list[TailHub]
) -> None:
    store_a, store_b = cloud_pair
    assert store_a.backing is not store_b.backing
    a, b = hub(hubs, poll_interval=0.1), hub(hubs, flush_interval=0.05)
    part = f"t_a|lab|thread|{uuid.uuid4().hex[:8]}"
    reader = SequencedStream(store_a, part, "chat")
    writer = SequencedStream(store_b, part, "chat")
    follower = a.follow(reader, 0, heartbeat=0.2)
    assert await anext(follower) is None
    for i in range(6):
        await append(b, writer, f"m{i}".encode())
    got = await collect(follower, 6)
    assert [(seq_of(i.key), i.value) for i in got] == [(i + 1, f"m{i}".encode()) for i in range(6)]
    await follower.aclose()



async def _record_of(store: ItemStore, process_id: str) -> Item:
    for _ in range(int(WAIT / 0.01)):
        item = await store.get(ACTIVITY_PARTITION, record_key(process_id))
        if item is not None:
            return item
        await asyncio.sleep(0.01)
    raise AssertionError(f"{process_id} published no record")


async def _published(store: ItemStore, process_id: str) -> dict[str, int]:
    item = await _record_of(store, process_id)
    record = msgspec.msgpack.decode(item.value, type=Record)
    return {partition: head for _, partition, head in record.entries}


@pytest.mark.parametrize("closing", [False, True], ids=["flushed", "on-close"])
async def test_after_a_cutover_only_the_new_tables_writer_publishes_this_processs_record(
    tmp_path: Path, hubs: list[TailHub], closing: bool
) -> None:
    # Marks made before the cutover and published after it must not replace the record the
    # writer for the new table published: a reader of the new table would lose marks it has
    # not seen (the follower then waits for the safety read).
    old, new = sqlite(tmp_path / "old.sqlite3"), sqlite(tmp_path / "new.sqlite3")
    # a store handle whose kind moves to another table, as a routed handle does at a cutover
    handle = PassThrough(old)
    w = hub(hubs, flush_interval=0.3)
    stream = SequencedStream(handle, PART, "chat")
    w.notify(stream, 1)  # published at once
    await _record_of(old, w.process_id)
    w.notify(stream, 2)  # waits for the flush interval: still unpublished at the cutover
    handle.inner = new
    other = "t_a|lab|thread|other"
    w.notify(SequencedStream(handle, other, "chat"), 7)  # the new table's writer publishes at once
    await _record_of(new, w.process_id)
    if closing:
        await w.close()
    else:
        await asyncio.sleep(0.6)  # past the old writer's flush interval
    published = await _published(new, w.process_id)
    # the new table's record names both: the mark made there, and the one made before the
    # cutover (handed over, not written over it)
    assert published.get(other) == 7 and published.get(PART) == 2, published
