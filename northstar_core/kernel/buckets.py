"""Time-bucketed, sharded logs: append-only data whose partitions never grow without bound.

A log whose items are keyed by UUIDv7 ids (time-ordered) is spread over many partitions:

* ``<base>|<bucket>|<shard>`` — the items of one **time bucket** (a UTC hour, ``YYYYMMDDHH``,
  from the id's milliseconds) and one **shard** (``00`` … ``S-1``). A partition therefore only
  ever receives one hour of one shard's share of the log: its size is bounded by the log's rate,
  never by its age (Cosmos DB's 20 GB logical-partition wall), and its write rate is the log's
  rate divided by ``S`` (DynamoDB's 1,000 WCU/s per partition key, Firestore's per-collection
  rate for increasing keys).
* ``<base>|buckets`` — the **directory**: one item ``b#<bucket>`` per bucket that holds data,
  carrying the shard count its writers use. The first writer of a bucket creates it
  (``Absent``); every later writer — in any process — reads the count from it, so a changed
  shard setting takes effect at the next bucket and readers always know where to look.
  Readers walk it to skip empty hours, so a page costs a bounded number of requests whatever
  the length of the history. It gains one small item per hour that has data.
  An entry lives as long as the items of its hour: an hour of items that expire has an entry
  that expires with its last item (rounded up to an hour's end; raised when a longer-lived item
  joins the hour, never lowered), so hours whose items have all expired drop out of the walk.

Which shard an item goes to is the caller's choice through a *shard key* (the spine uses the
run id, so that a run's copy of each event lands in one partition per bucket; the analytics
view uses the event id). ``shard_of`` is a stable hash (SHA-256), the same in every process.

Reading in time order (:meth:`BucketedLog.scan`) merges the shards of each bucket: one query
per shard, concurrently (one round trip, a fan-out of ``S`` requests), each for at most
``limit + 1`` items. Items are returned only up to the **frontier** — the smallest last id
among shards that returned a full batch (beyond it a shard may hold unread items) — so the
merged order is exact. A filter may leave a page short; the page then still says where the scan
stopped; its position moves past a bucket's end only once the bucket is closed (its hour
ended more than ``CLOSE_AFTER_SECONDS`` ago), so a writer whose clock lags a little is not
skipped by a reader that has read the bucket to its end.
Each page reads at most ``max_buckets`` buckets (sequential rounds).

Processes remember which directory entries exist (per backing store, :class:`Remembered`), so
a bucket costs its writers one extra request per process and hour (and one a minute after, to
re-check it).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar

import msgspec

from northstar_core.errors import NorthstarError
from northstar_core.kernel.ids import uuid7_floor, uuid7_ms
from northstar_core.kernel.paging import Page
from northstar_core.storage import MAX_EXPIRES_AT, Absent, ConditionFailed, Item, ItemStore, Put, VersionIs

T = TypeVar("T")

BUCKET_MS: Final = 3_600_000
DIRECTORY: Final = "buckets"
DIRECTORY_PREFIX: Final = "b#"
DEFAULT_SHARDS: Final = 8
MAX_SHARDS: Final = 256
# How long after its hour a bucket may still receive items (writers' clocks lag, requests in
# flight): until then a scan never moves its position past the bucket's end.
CLOSE_AFTER_SECONDS: Final = 120.0
DEFAULT_MAX_BUCKETS: Final = 4
# How long a process trusts that a directory entry it wrote or read still exists before it
# writes it again (an ``Absent`` put, refused when it does): a directory lost with its backend's
# data is back within this long of the next write.
DIRECTORY_RECHECK_SECONDS: Final = 5.0
# How many times a writer re-reads a directory entry that others change while it raises it.
_ENTRY_ATTEMPTS: Final = 8


class BucketEntry(msgspec.Struct, frozen=True):
    shards: int


# The last hour a bucket name can hold (datetimes end with year 9999).
_LAST_MS: Final = 253_402_297_200_000


def bucket_of_ms(ms: int) -> str:
    return datetime.fromtimestamp(min(max(ms, 0), _LAST_MS) / 1000, UTC).strftime("%Y%m%d%H")


def bucket_of(item_id: str) -> str:
    """The bucket (UTC hour ``YYYYMMDDHH``) of a UUIDv7 id."""
    return bucket_of_ms(uuid7_ms(item_id))


def bucket_start_ms(bucket: str) -> int:
    start = datetime.strptime(bucket, "%Y%m%d%H").replace(tzinfo=UTC)
    return int(start.timestamp() * 1000)


def check_position(domain: str, position: str, cursor: str) -> str:
    """A cursor's position in a bucketed log — an item id (a UUID) — or 410
    ``<domain>.cursor_invalid``."""
    try:
        uuid.UUID(position)
    except ValueError:
        raise NorthstarError(
            f"{domain}.cursor_invalid",
            "cursor is invalid: malformed position",
            410,
            details={"cursor": cursor, "reason": "malformed position"},
        ) from None
    return position


def shard_of(shard_key: str, shards: int) -> int:
    digest = hashlib.sha256(shard_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def entry_expiry(item_expires_at: float | None) -> float | None:
    """How long a directory entry must live for an item of its hour expiring at
    ``item_expires_at``: until then, rounded up to an hour's end so that the items of one
    retention written in one hour need one entry write, not one each."""
    if item_expires_at is None:
        return None
    hour = BUCKET_MS / 1000
    return min(-(-item_expires_at // hour) * hour, MAX_EXPIRES_AT)


def _covers(stored: float | None, wanted: float | None) -> bool:
    """Whether an entry expiring at ``stored`` lives at least until ``wanted`` (``None``: never
    expires)."""
    return stored is None or (wanted is not None and wanted <= stored)


def _remember_entry(shards: int, expires_at: float | None) -> str:
    return str(shards) if expires_at is None else f"{shards}@{expires_at!r}"


def _recalled_entry(value: str) -> tuple[int, float | None]:
    shards, _, expires = value.partition("@")
    return int(shards), float(expires) if expires else None


def _below(bucket: str) -> str:
    """An exclusive lower bound just below ``bucket`` among directory keys: every real bucket
    before it sorts below it (``2026120100`` → ``2026120099``)."""
    return DIRECTORY_PREFIX + str(int(bucket) - 1).zfill(len(bucket))


class Remembered:
    """What this process knows exists in a store (directory entries, run starts), to skip
    writing it again: bounded (least recently used out), each entry re-checked after its
    ``max_age``, and all forgotten whenever the store fails (:func:`forget`) — a backend that
    lost its data (a restarted emulator, a restored table) is then written to again rather than
    trusted."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> str | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        value, until = hit
        if time.monotonic() > until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: str, max_age: float) -> None:
        self._entries[key] = (value, time.monotonic() + max_age)
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


_REMEMBERED: weakref.WeakKeyDictionary[ItemStore, Remembered] = weakref.WeakKeyDictionary()


def remembered(store: ItemStore) -> Remembered:
    """The process's memory of what exists in the data behind ``store``."""
    backing = store.backing
    memo = _REMEMBERED.get(backing)
    if memo is None:
        memo = _REMEMBERED[backing] = Remembered()
    return memo


def forget(store: ItemStore) -> None:
    """The data behind ``store`` may have changed behind this process's back (the backend
    failed): forget what was remembered about it."""
    memo = _REMEMBERED.get(store.backing)
    if memo is not None:
        memo.clear()


class Scanned(msgspec.Struct, frozen=True):
    """What a scan found: ``items`` (matching, in id order, at most the limit asked for) and
    their ``ids``; ``position`` — the id bound the scan reached (resume strictly after it), or
    ``None`` when it read nothing and may not move. ``more``: a later scan may find more now."""

    items: list[Item]
    ids: list[str]
    position: str | None
    more: bool


def page_of_scan(
    scanned: Scanned,
    limit: int,
    encode: Callable[[str], str],
    convert: Callable[[Item], T],
    *,
    resume_from: str | None,
) -> Page[T]:
    """The page for a scan that asked for ``limit + 1`` items (the paging rule of
    :mod:`~northstar_core.kernel.paging` for a stream): ``encode`` turns a position (an id)
    into a cursor. A short page continues where the scan stopped; at the end of the log the
    cursor stays where the read started (``resume_from``) so a poller resumes there."""
    items = scanned.items
    if len(items) > limit:
        return Page([convert(item) for item in items[:limit]], encode(scanned.ids[limit - 1]), True)
    position = scanned.position if scanned.position is not None else resume_from
    return Page(
        [convert(item) for item in items], encode(position) if position is not None else None, scanned.more
    )


class BucketedLog:
    """One time-bucketed, sharded log under ``base`` in an item store (see module doc)."""

    def __init__(self, store: ItemStore, base: str, *, domain: str, shards: int = DEFAULT_SHARDS) -> None:
        """``domain`` names the log's errors (``<domain>.contention``)."""
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be between 1 and {MAX_SHARDS}")
        self.store = store
        self.base = base
        self.domain = domain
        self.shards = shards
        self._known = remembered(store)

    def partition(self, bucket: str, shard: int) -> str:
        return f"{self.base}|{bucket}|{shard:02d}"

    @property
    def directory(self) -> str:
        return f"{self.base}|{DIRECTORY}"

    # --- the directory -------------------------------------------------------------------

    async def open_bucket(self, bucket: str, expires_at: float | None = None) -> int:
        """Make sure ``bucket`` is in the directory for as long as an item of it that expires at
        ``expires_at`` (``None``: never) lives; its shard count (this log's for a new bucket,
        else the one its first writer recorded)."""
        key = DIRECTORY_PREFIX + bucket
        wanted = entry_expiry(expires_at)
        cached = self._known.get((self.base, key))
        if cached is not None:
            shards, stored = _recalled_entry(cached)
            if _covers(stored, wanted):
                return shards
        new = Put(key, msgspec.json.encode(BucketEntry(self.shards)), expires_at=wanted, condition=Absent())
        for _ in range(_ENTRY_ATTEMPTS):
            try:
                await self.store.write(self.directory, [new])
                return self._remember(key, self.shards, wanted)
            except ConditionFailed:
                item = await self.store.get(self.directory, key)
            if item is None:  # it expired in between: create it again
                continue
            shards = msgspec.json.decode(item.value, type=BucketEntry).shards
            if _covers(item.expires_at, wanted):
                return self._remember(key, shards, item.expires_at)
            # An item that outlives the entry joins the hour: the entry must live as long.
            condition = VersionIs(item.version)
            try:
                await self.store.write(
                    self.directory,
                    [Put(key, item.value, version=item.version + 1, expires_at=wanted, condition=condition)],
                )
            except ConditionFailed:
                continue
            return self._remember(key, shards, wanted)
        raise NorthstarError(
            f"{self.domain}.contention", "could not record the hour in the log's directory; retry", 503,
            headers={"Retry-After": "1"},
        )

    def _remember(self, key: str, shards: int, expires_at: float | None) -> int:
        self._known.put((self.base, key), _remember_entry(shards, expires_at), DIRECTORY_RECHECK_SECONDS)
        return shards

    async def shards_of(self, bucket: str) -> int | None:
        """The shard count of ``bucket`` if it holds data, else ``None``."""
        cached = self._known.get((self.base, DIRECTORY_PREFIX + bucket))
        if cached is not None:
            return _recalled_entry(cached)[0]
        item = await self.store.get(self.directory, DIRECTORY_PREFIX + bucket)
        if item is None:
            return None
        shards = msgspec.json.decode(item.value, type=BucketEntry).shards
        return self._remember(item.key, shards, item.expires_at)

    async def buckets(self, start: str | None, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` buckets holding data, from ``start`` (inclusive) on, oldest first."""
        items = await self.store.query(
            self.directory, DIRECTORY_PREFIX, after=_below(start) if start else None, limit=limit
        )
        out: list[tuple[str, int]] = []
        for item in items:
            bucket = item.key[len(DIRECTORY_PREFIX) :]
            shards = msgspec.json.decode(item.value, type=BucketEntry).shards
            out.append((bucket, self._remember(item.key, shards, item.expires_at)))
        return out

    # --- reading -------------------------------------------------------------------------

    async def scan(
        self,
        prefix: str,
        *,
        after: str | None,
        before: str | None,
        limit: int,
        now: float,
        shards: Callable[[int], Sequence[int]] | None = None,
        match: Callable[[Item], bool] | None = None,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        start_bucket: str | None = None,
    ) -> Scanned:
        """Items ``prefix + <id>`` with ``after < id < before``, in id order across buckets and
        shards, at most ``limit`` of those ``match`` accepts (see module doc).

        ``shards(n)`` picks the shards to read in a bucket of ``n`` shards (default: all);
        ``start_bucket`` starts the walk there when there is no ``after`` position.
        """
        start = bucket_of(after) if after is not None else start_bucket
        last_bucket = bucket_of(before) if before is not None else None
        buckets = await self.buckets(start, max_buckets + 1)
        more_buckets = len(buckets) > max_buckets
        found: list[Item] = []
        ids: list[str] = []
        position = after
        for bucket, count in buckets[:max_buckets]:
            if last_bucket is not None and bucket > last_bucket:
                return Scanned(found, ids, position, False)
            picked = list(shards(count)) if shards is not None else list(range(count))
            batch = limit + 1
            results = await asyncio.gather(
                *(
                    self.store.query(
                        self.partition(bucket, shard),
                        prefix,
                        after=prefix + after if after is not None else None,
                        before=prefix + before if before is not None else None,
                        limit=batch,
                    )
                    for shard in picked
                )
            )
            full = [r[-1].key for r in results if len(r) == batch]
            frontier = min(full) if full else None
            merged = sorted((item for r in results for item in r), key=lambda item: item.key)
            for item in merged:
                if frontier is not None and item.key > frontier:
                    break
                position = item.key[len(prefix) :]
                if match is None or match(item):
                    found.append(item)
                    ids.append(position)
                    if len(found) >= limit:
                        return Scanned(found, ids, position, True)
            if frontier is not None:
                return Scanned(found, ids, position, True)
            # The bucket is read to its end. The position passes its end only once no writer
            # can add to it any more; the walk goes on either way (a later bucket may already
            # hold items of writers whose clocks run ahead).
            end_ms = bucket_start_ms(bucket) + BUCKET_MS
            if end_ms / 1000 + CLOSE_AFTER_SECONDS <= now:
                floor = uuid7_floor(end_ms)
                if position is None or floor > position:
                    position = floor
            if before is not None and position is not None and position >= before:
                return Scanned(found, ids, position, False)
        return Scanned(found, ids, position, more_buckets)

    async def create(
        self, prefix: str, item_id: str, shard_key: str, value: bytes, *, expires_at: float | None = None
    ) -> bytes | None:
        """Write ``prefix + item_id`` once in its bucket and the shard of ``shard_key``, expiring
        at ``expires_at`` (``None``: never): ``None`` when this call stored it, else the value
        stored before (never replaced while it lives)."""
        bucket = bucket_of(item_id)
        try:
            count = await self.open_bucket(bucket, expires_at)
            partition = self.partition(bucket, shard_of(shard_key, count))
            put = Put(prefix + item_id, value, expires_at=expires_at, condition=Absent())
            try:
                await self.store.write(partition, [put])
            except ConditionFailed:
                existing = await self.store.get(partition, prefix + item_id)
                if existing is None:  # it expired in between, or the store broke its own condition
                    raise
                return existing.value
        except Exception:
            self._known.clear()
            raise
        return None

    async def find(self, prefix: str, item_id: str) -> Item | None:
        """The item ``prefix + item_id`` in whichever shard of its bucket holds it."""
        bucket = bucket_of(item_id)
        count = await self.shards_of(bucket)
        if count is None:
            return None
        results = await asyncio.gather(
            *(self.store.get(self.partition(bucket, shard), prefix + item_id) for shard in range(count))
        )
        return next((item for item in results if item is not None), None)


__all__ = [
    "BUCKET_MS",
    "CLOSE_AFTER_SECONDS",
    "DEFAULT_MAX_BUCKETS",
    "DEFAULT_SHARDS",
    "MAX_SHARDS",
    "BucketedLog",
    "Remembered",
    "Scanned",
    "bucket_of",
    "bucket_of_ms",
    "bucket_start_ms",
    "check_position",
    "entry_expiry",
    "forget",
    "page_of_scan",
    "remembered",
    "shard_of",
]
