"""Live tail of sequenced streams: the store is the bus.

Every SSE stream (chat, canvas, timeline…) follows a :class:`~northstar_core.kernel.streams.
SequencedStream` through one :class:`TailHub`. A subscriber never receives an entry from memory
or from a notification: it always *reads the store* after its own position, so delivery is
exactly the stream's order, with no duplicates and no gaps, whoever appended (this process or
another process sharing the backend).

How a subscriber learns that there is something new to read:

* **local appends** call :meth:`TailHub.notify` (the domain service does it right after every
  successful append, followed or not), which wakes the stream's subscribers at once — in every
  hub of this process, so two hubs over one in-process store (the memory backend) see each
  other's appends;
* **appends by other processes** are discovered through the store's activity index
  (:mod:`northstar_core.kernel.activity`), only on stores whose capabilities say ``shared``
  (no other process can write to the others): ``notify`` also marks the stream in this
  process's activity record, which one flusher task per store writes at most every
  ``flush_interval``; one poller task per store (not per stream) reads every process's record
  with one query every ``poll_interval`` and wakes the followed streams that moved;
* **a safety net**: the same poller also reads each followed stream's head, in turn, so that
  every stream is checked once per ``safety_interval`` (an append whose process died before
  its flush is delivered then at the latest). Idle, a store with N followed streams costs
  ``1/poll_interval + N/safety_interval`` reads per second: per stream, 0.037/s at N=100 and
  0.019/s at N=1,000 with the defaults (the poller per stream it replaces read 2/s).

Sharing: all subscribers of one stream in one process share one :class:`_Channel` — one set of
waiting subscribers, all woken each time the head moves. An idle subscriber therefore costs its
own suspended generator, one future in that set and, with a heartbeat, one entry in the
channel's heartbeat queue (one timer per channel and interval, not per subscriber; no task, no
buffer, no event of its own; benchmark P5) and no store read: after a heartbeat a subscriber
waits again without reading unless the head passed it. Subscribers at the same position share
one store read per wake-up, and a wake-up reaches only the subscribers waiting below the new
head (a head the poller learns is often one they have read already). A store's poller stops
when its last followed stream has no subscriber left.

Reusing it (canvas, timeline…)::

    stream = SequencedStream(store, partition(ctx, "canvas", canvas_id), "canvas")
    async for item in engines.tails.follow(stream, after_seq=position, heartbeat=15):
        if item is None:      # nothing new for `heartbeat` seconds: send a keep-alive
            ...
        else:                 # item.key is s#<seq>; decode item.value
            ...

and after every successful append on such a stream call
``engines.tails.notify(stream, appended.last_seq)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import secrets
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Coroutine, Iterable
from typing import Any, Final

from northstar_core.kernel.activity import (
    ACTIVITY_PARTITION,
    RECORD_PREFIX,
    RECORD_TTL,
    ActivityFeed,
    ActivityLog,
    Counter,
    record_key,
)
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.observe import current as observer
from northstar_core.storage import Item, ItemStore, Put

DEFAULT_POLL_INTERVAL: Final = 0.5
DEFAULT_FLUSH_INTERVAL: Final = 0.2
# 60 s, not 30: at 100 followed streams 1/0.5 s / 100 + 1/30 s = 0.053 reads/s per stream, over
# the 0.05 budget; with 60 s it is 0.037 (and the activity index leaves the safety net almost
# nothing to catch: a writer dying between an append and its flush, at most 0.2 s later).
DEFAULT_SAFETY_INTERVAL: Final = 60.0
READ_BATCH: Final = 100
# Safety reads (and the reads after a lost activity entry) in flight at once per store.
_SAFETY_CONCURRENCY: Final = 32
# A store's flusher task ends after this long without anything to publish (a later append
# starts a new one); its record expires on its own.
_WRITER_IDLE: Final = RECORD_TTL
# close() waits this long at most for a last flush of what this process appended.
_CLOSE_FLUSH_TIMEOUT: Final = 2.0
# A timer may fire this early by the loop's clock (its resolution is a millisecond).
_TIMER_SLACK: Final = 0.001


def _channel_key(stream: SequencedStream) -> tuple[str, str, int]:
    # The store holding the items is part of the key, so that a tenant re-routed to another
    # backend is tailed on the backend that now holds its data. Its identity is stable while
    # the channel lives: the channel keeps the stream, and so the store, alive.
    return (stream.domain, stream.partition, id(stream.store.backing))


class _Heartbeats:
    """The waiters of one channel with the same heartbeat interval, in deadline order (they
    join in time order), and one timer for the earliest: an idle subscriber's heartbeat costs
    a queue entry, not a timer handle of its own. Waking every waiter of the channel drops
    them all."""

    __slots__ = ("interval", "queue", "timer")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.queue: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[bool]) -> None:
        deadline = loop.time() + self.interval
        self.queue.append((deadline, waiter))
        if self.timer is None:
            self.timer = loop.call_at(deadline, self.expire, loop)

    def expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Resolve (False: a heartbeat is due) every waiter whose deadline has passed."""
        self.timer = None
        queue = self.queue
        due = loop.time() + _TIMER_SLACK
        while queue and queue[0][0] <= due:
            waiter = queue.popleft()[1]
            if not waiter.done():  # else woken, or its subscriber left
                waiter.set_result(False)
        if queue:
            self.timer = loop.call_at(queue[0][0], self.expire, loop)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Channel:
    """Shared state of one followed stream in this process."""

    __slots__ = ("head", "heartbeats", "key", "reads", "stream", "subscribers", "waiters", "wakeups")

    def __init__(self, key: tuple[str, str, int], stream: SequencedStream) -> None:
        self.key = key
        self.stream = stream
        self.head = 0
        self.subscribers = 0
        # Counts head moves: a subscriber that saw it change during its read reads again
        # instead of waiting.
        self.wakeups = 0
        # The futures of the subscribers waiting for the head to pass their position (result:
        # True), or for their heartbeat (result: False; by heartbeat interval in
        # `heartbeats`), by position (subscribers mostly wait together at the head).
        self.waiters: dict[int, set[asyncio.Future[bool]]] = {}
        self.heartbeats: dict[float, _Heartbeats] = {}
        # Store reads in flight since the last wake-up, by (after_seq, batch): subscribers at
        # the same position share one read instead of each doing their own.
        self.reads: dict[tuple[int, int], asyncio.Future[list[Item]]] = {}

    def wait(self, position: int, waiter: asyncio.Future[bool]) -> None:
        self.waiters.setdefault(position, set()).add(waiter)

    def unwait(self, position: int, waiter: asyncio.Future[bool]) -> None:
        same = self.waiters.get(position)
        if same is not None:
            same.discard(waiter)
            if not same:
                del self.waiters[position]

    def advance(self, head: int) -> None:
        """The stream's head is at least ``head``: wake every subscriber waiting below it.

        Only those: a head learnt from the store (a safety read, the activity index) is often
        one the subscribers have read already, and waking them would cost a read for nothing.
        """
        if head > self.head:
            self.head = head
            self.wakeups += 1
            # A read started before this wake-up may miss the new entries: never share it
            # with subscribers that wake up now.
            self.reads = {}
        waiters = self.waiters
        below = [position for position in waiters if position < head]
        for position in below:
            for waiter in waiters.pop(position):
                if not waiter.done():
                    waiter.set_result(True)
        if below and not waiters:
            # every waiter woke: the heartbeats pending for them are moot
            self.stop_heartbeats()

    def heartbeat(self, interval: float) -> _Heartbeats:
        beats = self.heartbeats.get(interval)
        if beats is None:
            beats = self.heartbeats[interval] = _Heartbeats(interval)
        return beats

    def stop_heartbeats(self) -> None:
        for beats in self.heartbeats.values():
            beats.stop()
        self.heartbeats.clear()

    async def read(self, stream: SequencedStream, after_seq: int, batch: int) -> list[Item]:
        """``stream.read(after_seq, batch)``, shared with the subscribers reading the same
        position since the last wake-up (a read they join started after the wake-up they
        captured, so it sees every entry they were woken for)."""
        reads, key = self.reads, (after_seq, batch)
        shared = reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(stream.read(after_seq, batch))
            reads[key] = shared

            def done(fut: asyncio.Future[list[Item]]) -> None:
                if reads.get(key) is fut:
                    del reads[key]
                if not fut.cancelled():
                    fut.exception()  # retrieved here too: every reader may have left

            shared.add_done_callback(done)
        # shield: a subscriber leaving (cancelled) does not cancel the read for the others
        return await asyncio.shield(shared)


# Activity records read per query page (one page unless that many processes share the store).
_RECORDS_PAGE: Final = 100


class _Writer:
    """This process's activity record on one shared store (see :mod:`~northstar_core.kernel.
    activity`) and the task that publishes it."""

    __slots__ = ("dirty", "flushed_at", "key", "log", "store", "task")

    def __init__(self, store: ItemStore, key: str, counter: Counter) -> None:
        # A strong reference: the store's identity keys this writer while it lives.
        self.store = store
        self.key = key
        self.log = ActivityLog(counter)
        self.dirty = asyncio.Event()
        self.flushed_at = -math.inf
        self.task: asyncio.Task[None] | None = None

    async def flush(self) -> None:
        """Publish the record now; on failure it stays dirty (the next interval retries)."""
        self.dirty.clear()
        value = self.log.record(time.monotonic())
        try:
            # Unconditional: only this process writes its record. The wall clock, as every
            # backend compares expiry with it.
            put = Put(self.key, value, expires_at=time.time() + RECORD_TTL)
            await self.store.write(ACTIVITY_PARTITION, [put])
        except BaseException:
            self.dirty.set()
            raise
        finally:
            self.flushed_at = time.monotonic()


class _Reader:
    """The followed streams of one shared store in this process, and its poller's state."""

    __slots__ = ("by_partition", "channels", "credit", "feed", "rotation", "store", "task")

    def __init__(self, store: ItemStore, own: str) -> None:
        self.store = store
        self.feed = ActivityFeed(own)
        self.channels: set[_Channel] = set()
        self.by_partition: dict[str, list[_Channel]] = {}
        # Safety reads go round the channels in turn; channels that left are skipped lazily.
        self.rotation: deque[_Channel] = deque()
        self.credit = 0.0
        self.task: asyncio.Task[None] | None = None

    def add(self, channel: _Channel) -> None:
        self.channels.add(channel)
        self.by_partition.setdefault(channel.stream.partition, []).append(channel)
        self.rotation.append(channel)

    def remove(self, channel: _Channel) -> None:
        self.channels.discard(channel)
        partition = channel.stream.partition
        same = self.by_partition.get(partition)
        if same is not None:
            with contextlib.suppress(ValueError):
                same.remove(channel)
            if not same:
                del self.by_partition[partition]
        if len(self.rotation) > 2 * len(self.channels) + 64:
            self.rotation = deque(c for c in self.rotation if c in self.channels)

    def due(self, share: float) -> list[_Channel]:
        """The channels whose safety read is due at this poll: ``share`` of all of them per
        poll, in turn, so each is read once per safety interval and the reads are spread
        evenly instead of coming in bursts."""
        channels = self.channels
        self.credit = min(self.credit + len(channels) * share, float(len(channels)))
        out: list[_Channel] = []
        rotation = self.rotation
        while self.credit >= 1 and rotation:
            channel = rotation.popleft()
            if channel not in channels:
                continue  # left since
            rotation.append(channel)
            out.append(channel)
            self.credit -= 1
        return out


async def _records(store: ItemStore) -> list[Item]:
    """Every process's activity record on ``store``."""
    items = await store.query(ACTIVITY_PARTITION, RECORD_PREFIX, limit=_RECORDS_PAGE)
    out = items
    while len(items) == _RECORDS_PAGE:
        items = await store.query(
            ACTIVITY_PARTITION, RECORD_PREFIX, after=items[-1].key, limit=_RECORDS_PAGE
        )
        out = out + items
    return out


# Every hub of this process: a local append wakes the stream's subscribers in each of them.
_HUBS: weakref.WeakSet[TailHub] = weakref.WeakSet()


class TailHub:
    """Per-process registry of followed streams (see module doc).

    ``poll_interval``: seconds between two reads of a shared store's activity index (and the
    most a cross-process append waits for it, beyond the flush); ``flush_interval``: the least
    time between two writes of this process's activity record on one store;
    ``safety_interval``: each followed stream's own head is read once per this many seconds.
    """

    def __init__(
        self,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        safety_interval: float = DEFAULT_SAFETY_INTERVAL,
    ) -> None:
        for name, value in (
            ("poll_interval", poll_interval),
            ("flush_interval", flush_interval),
            ("safety_interval", safety_interval),
        ):
            if isinstance(value, bool) or not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.poll_interval = float(poll_interval)
        self.flush_interval = float(flush_interval)
        self.safety_interval = float(safety_interval)
        # Names this process's activity records: random, so a restarted process never passes
        # for its predecessor (whose counters readers remember).
        self.process_id = secrets.token_hex(8)
        self._counter = Counter()
        self._channels: dict[tuple[str, str, int], _Channel] = {}
        # The same channels by stream name: a subscriber keeps its channel when its kind moves
        # to another table (its store handle then reads the new one), and an append made
        # through the new table must still wake it.
        self._named: dict[tuple[str, str], set[_Channel]] = {}
        self._readers: dict[int, _Reader] = {}
        self._writers: dict[int, _Writer] = {}
        # Every task this hub started and that has not ended (close() waits for them).
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        _HUBS.add(self)

    @property
    def active_streams(self) -> int:
        return len(self._channels)

    def subscribers(self, stream: SequencedStream) -> int:
        channel = self._channels.get(_channel_key(stream))
        return channel.subscribers if channel else 0

    @property
    def waiting(self) -> int:
        """Subscribers (of every stream) that have read everything stored and wait for news."""
        return sum(len(same) for channel in self._channels.values() for same in channel.waiters.values())

    def notify(self, stream: SequencedStream, head: int) -> None:
        """A local append made ``head`` the stream's head: wake its subscribers in this process
        now, and publish it to the other processes sharing the store (call it after every
        successful append, whether or not the stream is followed here)."""
        name = (stream.domain, stream.partition)
        for hub in list(_HUBS):
            for channel in hub._named.get(name, ()):
                channel.advance(head)
        store = stream.store
        if store.capabilities.shared and not self._closed:
            self._mark(store, stream.partition, head)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # A fresh context: the task serves every subscriber of the store, not the request that
        # happened to start it (its reads are not part of that request's trace).
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- publishing this process's appends -------------------------------------------------

    def _mark(self, store: ItemStore, partition: str, head: int) -> None:
        backing = id(store.backing)
        writer = self._writers.get(backing)
        if writer is None:
            writer = self._writers[backing] = _Writer(store, record_key(self.process_id), self._counter)
        if not writer.log.mark(partition, head, time.monotonic()):
            return
        writer.dirty.set()
        if writer.task is None or writer.task.done():
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # no running loop: the record goes out with the next mark made in one
            writer.task = self._spawn(self._publish(backing, writer))

    def _handed_over(self, backing: int, writer: _Writer) -> bool:
        """Whether ``writer``'s store now routes to another table than ``backing`` (a
        migration's cutover); if so its marks go to the writer for that table, and it is
        forgotten: its record, written there under this process's key, would replace that
        writer's and hide marks the readers have not seen yet."""
        if id(writer.store.backing) == backing:
            return False
        if self._writers.get(backing) is writer:
            del self._writers[backing]
        for partition, head in writer.log.heads():
            self._mark(writer.store, partition, head)
        return True

    async def _publish(self, backing: int, writer: _Writer) -> None:
        """Write the store's activity record whenever it changed, at most once per flush
        interval; end after a long idle spell (a later append starts again)."""
        while True:
            try:
                # (not wait_for: on 3.11 it can swallow a cancellation that races the event)
                async with asyncio.timeout(_WRITER_IDLE):
                    await writer.dirty.wait()
            except TimeoutError:
                if writer.dirty.is_set():
                    continue
                if self._writers.get(backing) is writer:
                    # Forgotten with its log: marks keep their process-wide numbering, so a
                    # new writer's entries are still news to every reader.
                    del self._writers[backing]
                return
            wait = writer.flushed_at + self.flush_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._handed_over(backing, writer):
                return
            with contextlib.suppress(Exception):
                # A failed write is retried at the next interval (the record stays dirty); the
                # followers' own reads surface a persistent outage.
                await writer.flush()

    # --- following the other processes' appends --------------------------------------------

    async def _poll(self, reader: _Reader) -> None:
        observer().tail_pollers(1)
        checking: asyncio.Task[None] | None = None
        try:
            share = self.poll_interval / self.safety_interval
            while reader.channels:
                # Safety reads run beside the index reads, never in their way (the index is
                # what delivers promptly); on a backend too slow to finish a batch within a
                # poll interval they slow down instead of piling up.
                if checking is None or checking.done():
                    due = reader.due(share)
                    checking = self._spawn(self._check(due)) if due else None
                await self._read_activity(reader)
                await asyncio.sleep(self.poll_interval)
        finally:
            if checking is not None:
                checking.cancel()
            observer().tail_pollers(-1)

    async def _read_activity(self, reader: _Reader) -> None:
        try:
            items = await _records(reader.store)
        except Exception:
            return  # the backend is briefly unavailable: the next poll retries
        moved, lost = reader.feed.read(items, time.monotonic())
        for partition, head in moved.items():
            for channel in tuple(reader.by_partition.get(partition, ())):
                channel.advance(head)
        if lost:
            # Some process dropped entries this reader never saw: every stream looks itself.
            self._spawn(self._check(list(reader.channels)))

    async def _check(self, channels: Iterable[_Channel]) -> None:
        """Read the heads of ``channels`` (a few at a time) and wake those that moved."""
        gate = asyncio.Semaphore(_SAFETY_CONCURRENCY)

        async def check(channel: _Channel) -> None:
            async with gate:
                try:
                    channel.advance(await channel.stream.head())
                except Exception:
                    # Its next turn retries; the subscribers' own reads surface persistent
                    # failures.
                    pass

        await asyncio.gather(*(check(channel) for channel in channels))

    def _join(self, stream: SequencedStream) -> _Channel:
        key = _channel_key(stream)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(key, stream)
            self._named.setdefault(key[:2], set()).add(channel)
            store = stream.store
            # A store no other process can write to needs no poller: every append to it is
            # notified in this process.
            if store.capabilities.shared:
                reader = self._readers.get(key[2])
                if reader is None:
                    reader = self._readers[key[2]] = _Reader(store, self.process_id)
                reader.add(channel)
                if reader.task is None or reader.task.done():
                    reader.task = self._spawn(self._poll(reader))
        channel.subscribers += 1
        return channel

    def _leave(self, channel: _Channel) -> None:
        channel.subscribers -= 1
        if channel.subscribers <= 0:
            if self._channels.get(channel.key) is channel:
                del self._channels[channel.key]
            named = self._named.get(channel.key[:2])
            if named is not None:
                named.discard(channel)
                if not named:
                    del self._named[channel.key[:2]]
            channel.stop_heartbeats()
            reader = self._readers.get(channel.key[2])
            if reader is not None:
                reader.remove(channel)
                if not reader.channels:
                    del self._readers[channel.key[2]]
                    if reader.task is not None:
                        reader.task.cancel()

    async def follow(
        self,
        stream: SequencedStream,
        after_seq: int,
        *,
        heartbeat: float | None = None,
        batch: int = READ_BATCH,
    ) -> AsyncGenerator[Item | None, None]:
        """Yield the stream's entries with ``seq > after_seq`` in order, forever.

        Entries already stored are replayed first, then new ones as they are appended, by this
        process or any other sharing the backend. With ``heartbeat``, ``None`` is yielded after
        that many idle seconds so the caller can send a keep-alive. Each entry is yielded
        exactly once. Closing the generator (or cancelling its consumer) unsubscribes.
        """
        loop = asyncio.get_running_loop()
        channel = self._join(stream)
        position = after_seq
        read = True
        try:
            while True:
                if read:
                    # Count wake-ups before reading: one that happens during the read (or while
                    # the entries are being consumed) makes the check below read again at once
                    # instead of missing it.
                    wakeups = channel.wakeups
                    items = await channel.read(stream, position, batch)
                    for item in items:
                        position = seq_of(item.key)
                        yield item
                    if len(items) == batch or channel.wakeups != wakeups:
                        continue  # more may be stored already
                # Nothing new: sleep until an append (local or polled) or the heartbeat, on one
                # future (no coroutine, task, timeout or timer of this subscriber's own).
                waiter: asyncio.Future[bool] = loop.create_future()
                channel.wait(position, waiter)
                if heartbeat is not None:
                    channel.heartbeat(heartbeat).add(loop, waiter)
                try:
                    woken = await waiter
                finally:
                    channel.unwait(position, waiter)
                read = woken
                if not woken:
                    yield None
                    # Only a heartbeat: nothing moved while this subscriber waited, so it waits
                    # again without a store read (an idle stream would otherwise cost one read
                    # per heartbeat) — unless the head passed it while the keep-alive went out
                    # (any wake-up past its position raises the channel's head past it).
                    read = channel.head > position
        finally:
            self._leave(channel)

    async def close(self) -> None:
        """Stop every task of the hub; what this process appended but has not published yet
        is published first (bounded by a short timeout)."""
        self._closed = True
        _HUBS.discard(self)
        for channel in self._channels.values():
            channel.stop_heartbeats()
        self._channels.clear()
        self._named.clear()
        self._readers.clear()
        for backing, writer in list(self._writers.items()):
            self._handed_over(backing, writer)
        writers = list(self._writers.values())
        self._writers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        pending = [writer for writer in writers if writer.dirty.is_set()]
        if pending:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_FLUSH_TIMEOUT):
                    await asyncio.gather(*(w.flush() for w in pending), return_exceptions=True)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(t for t in tasks if t.get_loop() is loop), return_exceptions=True)
