"""The activity index: how the processes sharing a store tell each other which streams moved.

Without it, a process following a stream learns of another process's appends only by reading
the stream's head again and again — two backend reads per second per followed stream, idle or
not. With it, each process publishes ONE item per store listing the streams it appended to in
the last few seconds, and each process reads all of those items with ONE query per poll
interval, whatever the number of streams it follows:

* item ``a#<process id>`` in the reserved partition :data:`ACTIVITY_PARTITION` (``~`` is outside
  the tenant id grammar, so no tenant partition is ever named like it), written by its process
  only (an unconditional put), at most every flush interval and only when it has something new
  to say, expiring :data:`RECORD_TTL` seconds after its last write;
* its value (:class:`Record`) holds ``(counter, partition, head)`` entries: ``counter`` numbers
  the process's marks (it only grows, across every store of the process), so a reader applies
  exactly the entries numbered after the last one it saw from that process;
* a record is bounded (:data:`MAX_ENTRIES` entries, :data:`MAX_RECORD_BYTES` bytes, entries
  older than :data:`WINDOW` seconds dropped, one entry per partition: the latest); every entry
  dropped raises the record's ``floor``, so a reader that finds ``floor`` above the last counter
  it saw from that process knows it missed something and checks every stream it follows.

The index never carries data: an entry only says "look"; the followers then read the stream
itself, so delivery keeps the stream's order, exactly once. An entry that never reaches the
index (the writer died between its append and its flush) is caught by each follower's own slow
head read (see :mod:`northstar_core.kernel.tail`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import msgspec

from northstar_core.storage import Item

ACTIVITY_PARTITION: Final = "~activity"
RECORD_PREFIX: Final = "a#"
# A record outlives its writer's last flush by this long: long enough for every reader polling
# at any sane interval to see it, short enough that dead processes' records vanish.
RECORD_TTL: Final = 60.0
# Entries older than this are dropped at the next flush (readers poll far more often).
WINDOW: Final = 5.0
MAX_ENTRIES: Final = 4096
MAX_RECORD_BYTES: Final = 300_000
# Upper bound of one entry's msgpack size beyond its partition's UTF-8 bytes: array header (1),
# two integers (9 each), string header (5).
_ENTRY_OVERHEAD: Final = 24
_RECORD_OVERHEAD: Final = 16  # array headers and the floor
# A reader forgets a process whose record has been gone this long (its counters then count as
# new again). Far above RECORD_TTL: a writer idle for a minute comes back with counters the
# readers still know.
FORGET_AFTER: Final = 600.0


class Record(msgspec.Struct, array_like=True, frozen=True):
    """The value of one process's activity item (msgpack)."""

    floor: int  # every entry this process dropped from the record had a counter <= floor
    entries: list[tuple[int, str, int]]  # (counter, partition, head), oldest first


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Record).decode


def record_key(process_id: str) -> str:
    return RECORD_PREFIX + process_id


def _entry_bytes(partition: str) -> int:
    return len(partition.encode("utf-8", "surrogatepass")) + _ENTRY_OVERHEAD


class Counter:
    """A process's mark numbers: one sequence for every store, so a store's log can be dropped
    and started again without a reader ever taking new marks for ones it already saw."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


class ActivityLog:
    """This process's recent appends on one store: what its record says."""

    __slots__ = ("_bytes", "_counter", "_entries", "floor", "max_bytes", "max_entries", "window")

    def __init__(
        self,
        counter: Counter,
        *,
        window: float = WINDOW,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self._counter = counter
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.floor = 0
        # partition -> (counter, head, marked at); insertion order is counter order
        self._entries: OrderedDict[str, tuple[int, int, float]] = OrderedDict()
        self._bytes = _RECORD_OVERHEAD

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self, partition: str, head: int, now: float) -> bool:
        """``partition``'s stream reached ``head`` (a monotonic time ``now``); False if the log
        already says as much (nothing new to publish)."""
        entries = self._entries
        known = entries.get(partition)
        if known is not None:
            if known[1] >= head:
                return False
            del entries[partition]  # re-added last: insertion order stays counter order
            self._bytes -= _entry_bytes(partition)
        entries[partition] = (self._counter.next(), head, now)
        self._bytes += _entry_bytes(partition)
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop_oldest()
        return True

    def _drop_oldest(self) -> None:
        partition, (counter, _, _) = self._entries.popitem(last=False)
        self._bytes -= _entry_bytes(partition)
        self.floor = max(self.floor, counter)

    def heads(self) -> list[tuple[str, int]]:
        """Each partition the log names, with the head it says (oldest mark first)."""
        return [(partition, head) for partition, (_, head, _) in self._entries.items()]

    def record(self, now: float) -> bytes:
        """The record to publish at monotonic time ``now`` (entries older than the window
        dropped first)."""
        entries = self._entries
        horizon = now - self.window
        while entries and next(iter(entries.values()))[2] < horizon:
            self._drop_oldest()
        return _encode(Record(self.floor, [(c, p, h) for p, (c, h, _) in entries.items()]))


class ActivityFeed:
    """What one reader has seen of the other processes' records on one store."""

    __slots__ = ("_gone", "_seen", "_started", "own")

    def __init__(self, own: str) -> None:
        self.own = own  # this process's record: its appends woke the local followers already
        self._seen: dict[str, int] = {}  # process id -> the highest counter seen
        self._gone: dict[str, float] = {}  # process id -> when its record was last missing
        self._started = False

    def read(self, items: Sequence[Item], now: float) -> tuple[dict[str, int], bool]:
        """Apply one query's records (at monotonic time ``now``): the new heads by partition,
        and whether entries were dropped before this reader saw them (then every followed
        stream must read its head)."""
        moved: dict[str, int] = {}
        lost = False
        present: set[str] = set()
        for item in items:
            pid = item.key[len(RECORD_PREFIX) :]
            if pid == self.own:
                continue
            try:
                record = _decode(item.value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                # Not a record this version understands: the followers' own head reads cover it.
                continue
            present.add(pid)
            last = self._seen.get(pid)
            if last is None:
                # A process first seen: its entries are all news to this reader (a follower that
                # joined before one of them read the store after it). Entries it dropped before
                # then were missed unless this is the reader's first look at all — a follower
                # reads the stream when it joins, after anything published before.
                lost = lost or (self._started and record.floor > 0)
                last = 0
            elif record.floor > last:
                lost = True
            top = max(last, record.floor)
            for counter, partition, head in record.entries:
                if counter > last:
                    if head > moved.get(partition, 0):
                        moved[partition] = head
                    top = max(top, counter)
            self._seen[pid] = top
        for pid in list(self._seen):
            if pid in present:
                self._gone.pop(pid, None)
                continue
            since = self._gone.setdefault(pid, now)
            if now - since >= FORGET_AFTER:
                del self._seen[pid], self._gone[pid]
        self._started = True
        return moved, lost


__all__ = [
    "ACTIVITY_PARTITION",
    "MAX_ENTRIES",
    "MAX_RECORD_BYTES",
    "RECORD_PREFIX",
    "RECORD_TTL",
    "WINDOW",
    "ActivityFeed",
    "ActivityLog",
    "Counter",
    "Record",
    "record_key",
]
