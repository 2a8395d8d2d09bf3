"""Live tail of sequenced streams: the store is the bus.

Every SSE stream (chat, canvas, timeline…) follows a :class:`~northstar_core.kernel.streams.
SequencedStream` through one :class:`TailHub`. A subscriber never receives an entry from memory
or from a notification: it always *reads the store* after its own position, so delivery is
exactly the stream's order, with no duplicates and no gaps, whoever appended (this process or
another process sharing the backend).

How a subscriber learns that there is something new to read:

* **local appends** call :meth:`TailHub.notify` (the domain service does it right after a
  successful append), which wakes the stream's subscribers at once;
* **appends by other processes** are discovered by one *poller per followed stream and
  process*: while the stream has at least one subscriber, the poller reads the stream's head
  (one ``query(..., descending=True, limit=1)``) every ``poll_interval`` seconds and wakes the
  subscribers when it moved.

Sharing: all subscribers of one stream in one process share one :class:`_Channel` — one
poller task and one set of waiting subscribers, all woken each time the head moves. An idle
subscriber therefore costs its own suspended generator, one future in that set and, with a
heartbeat, one entry in the channel's heartbeat queue (one timer per channel and interval, not
per subscriber; no task, no buffer, no event of its own; benchmark P5); 1,000 idle
subscribers on one stream do one head read per poll interval between them, and subscribers at
the same position share one store read per wake-up. The poller stops when the last subscriber
leaves.

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
import contextvars
from collections import deque
from collections.abc import AsyncGenerator
from typing import Final

from northstar_core.errors import NorthstarError
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.observe import current as observer
from northstar_core.storage import Item

DEFAULT_POLL_INTERVAL: Final = 0.5
READ_BATCH: Final = 100
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
    a queue entry, not a timer handle of its own. Waking the channel drops them all."""

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

    __slots__ = (
        "head", "heartbeats", "key", "poller", "reads", "stream", "subscribers", "waiters", "wakeups",
    )

    def __init__(self, key: tuple[str, str, int], stream: SequencedStream) -> None:
        self.key = key
        self.stream = stream
        self.head = 0
        self.subscribers = 0
        # Counts head moves: a subscriber that saw it change during its read reads again
        # instead of waiting.
        self.wakeups = 0
        # The futures of the subscribers waiting for the head to move (result: True), or for
        # their heartbeat (result: False; by heartbeat interval in `heartbeats`).
        self.waiters: set[asyncio.Future[bool]] = set()
        self.heartbeats: dict[float, _Heartbeats] = {}
        self.poller: asyncio.Task[None] | None = None
        # Store reads in flight since the last wake-up, by (after_seq, batch): subscribers at
        # the same position share one read instead of each doing their own.
        self.reads: dict[tuple[int, int], asyncio.Future[list[Item]]] = {}

    def advance(self, head: int) -> None:
        """Record a new head; wake every waiting subscriber."""
        if head > self.head:
            self.head = head
            self.wakeups += 1
            # A read started before this wake-up may miss the new entries: never share it
            # with subscribers that wake up now.
            self.reads = {}
            waiters, self.waiters = self.waiters, set()
            # every waiter wakes now: the heartbeats pending for them are moot
            self.stop_heartbeats()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

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


class TailHub:
    """Per-process registry of followed streams (see module doc)."""

    def __init__(self, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self.poll_interval = poll_interval
        self._channels: dict[tuple[str, str, int], _Channel] = {}

    @property
    def active_streams(self) -> int:
        return len(self._channels)

    def subscribers(self, stream: SequencedStream) -> int:
        channel = self._channels.get(_channel_key(stream))
        return channel.subscribers if channel else 0

    def notify(self, stream: SequencedStream, head: int) -> None:
        """A local append made ``head`` the stream's head: wake its subscribers now."""
        channel = self._channels.get(_channel_key(stream))
        if channel is not None:
            channel.advance(head)

    async def _poll(self, channel: _Channel) -> None:
        observer().tail_pollers(1)
        try:
            while channel.subscribers > 0:
                try:
                    channel.advance(await channel.stream.head())
                except NorthstarError:
                    # The backend is briefly unavailable: subscribers keep waiting and the next
                    # poll retries; their own reads surface persistent failures.
                    pass
                await asyncio.sleep(self.poll_interval)
        finally:
            observer().tail_pollers(-1)

    def _join(self, stream: SequencedStream) -> _Channel:
        key = _channel_key(stream)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(key, stream)
        channel.subscribers += 1
        if channel.poller is None or channel.poller.done():
            # A fresh context: the poller serves every subscriber of the stream, not the request
            # that happened to start it (its reads are not part of that request's trace).
            channel.poller = asyncio.get_running_loop().create_task(
                self._poll(channel), context=contextvars.Context()
            )
        return channel

    def _leave(self, channel: _Channel) -> None:
        channel.subscribers -= 1
        if channel.subscribers <= 0:
            self._channels.pop(channel.key, None)
            channel.stop_heartbeats()
            if channel.poller is not None:
                channel.poller.cancel()

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
        try:
            while True:
                # Count wake-ups before reading: one that happens during the read (or while the
                # entries are being consumed) makes the check below read again at once instead
                # of missing it.
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
                waiters = channel.waiters
                waiters.add(waiter)
                if heartbeat is not None:
                    channel.heartbeat(heartbeat).add(loop, waiter)
                try:
                    woken = await waiter
                finally:
                    waiters.discard(waiter)
                if not woken:
                    yield None
        finally:
            self._leave(channel)

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            channel.stop_heartbeats()
            if channel.poller is not None:
                channel.poller.cancel()
        self._channels.clear()
