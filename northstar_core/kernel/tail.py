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
poller task and one :class:`asyncio.Event` that is replaced each time the head moves. An idle
subscriber therefore costs its own suspended generator and one waiter on that shared event
(no task, no queue, no buffer of its own); 1,000 idle subscribers on one stream do one head
read per poll interval between them, and subscribers at the same position share one store read
per wake-up (measured in-process: about 3 KB per idle subscriber; heartbeats use
``asyncio.timeout``, so they add no task). The poller stops when the last subscriber leaves.

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
from collections.abc import AsyncGenerator
from typing import Final

from northstar_core.errors import NorthstarError
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.observe import current as observer
from northstar_core.storage import Item

DEFAULT_POLL_INTERVAL: Final = 0.5
READ_BATCH: Final = 100


def _channel_key(stream: SequencedStream) -> tuple[str, str, int]:
    # The store holding the items is part of the key, so that a tenant re-routed to another
    # backend is tailed on the backend that now holds its data. Its identity is stable while
    # the channel lives: the channel keeps the stream, and so the store, alive.
    return (stream.domain, stream.partition, id(stream.store.backing))


class _Channel:
    """Shared state of one followed stream in this process."""

    __slots__ = ("changed", "head", "key", "poller", "reads", "stream", "subscribers")

    def __init__(self, key: tuple[str, str, int], stream: SequencedStream) -> None:
        self.key = key
        self.stream = stream
        self.head = 0
        self.subscribers = 0
        self.changed = asyncio.Event()
        self.poller: asyncio.Task[None] | None = None
        # Store reads in flight since the last wake-up, by (after_seq, batch): subscribers at
        # the same position share one read instead of each doing their own.
        self.reads: dict[tuple[int, int], asyncio.Future[list[Item]]] = {}

    def advance(self, head: int) -> None:
        """Record a new head; wake every subscriber waiting on the old event."""
        if head > self.head:
            self.head = head
            old, self.changed = self.changed, asyncio.Event()
            # A read started before this wake-up may miss the new entries: never share it
            # with subscribers that wake up now.
            self.reads = {}
            old.set()

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
        channel = self._join(stream)
        position = after_seq
        try:
            while True:
                # Take the event before reading: a wake-up that happens during the read sets
                # this event, so the wait below returns at once instead of missing it.
                changed = channel.changed
                items = await channel.read(stream, position, batch)
                for item in items:
                    position = seq_of(item.key)
                    yield item
                if len(items) == batch:
                    continue  # more may be stored already
                # `changed` was taken before the read, so a wake-up during the read is not lost;
                # with nothing new we sleep until an append (local or polled) replaces it.
                try:
                    if heartbeat is None:
                        await changed.wait()
                    else:
                        # asyncio.timeout, not wait_for: no extra task per idle subscriber.
                        async with asyncio.timeout(heartbeat):
                            await changed.wait()
                except TimeoutError:
                    yield None
        finally:
            self._leave(channel)

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            if channel.poller is not None:
                channel.poller.cancel()
        self._channels.clear()
