"""The budget usage ledger: append-only spend per tenant, with running totals, in shards.

A tenant+mode's ledger of one calendar month (UTC) is ``SHARDS`` independent
:class:`~northstar_core.kernel.streams.SequencedStream` s, in ``budget_store`` partitions
``<tenant>|<mode>|budget|<YYYY-MM>|<shard>`` (``shard`` two digits, ``00``…). Each entry
carries, beside its own amount, its **shard's** running totals of the month and of its day,
all surfaces (``*``) and per surface; the period's spend is the **sum of the shards' last
entries** (an entry's ``seq`` and totals are its shard's, never the tenant's).

Why shards: an entry is appended at exactly the head it was computed from (``expected_head``),
so concurrent recorders never lose an amount — but every append on one stream serialises on
its head. Spread over ``SHARDS`` streams, a tenant's concurrent gated actions contend
``SHARDS`` times less, and no single partition takes all of a tenant's writes.

* Recording: a keyed entry goes to shard ``sha256(idempotency_key) mod SHARDS`` (a stable hash,
  the same in every process), so a retry lands on the shard holding its idempotency record
  and replays it; an unkeyed entry goes to a random shard among those this process is not
  appending to already, and after losing a race to a concurrent writer retries on another. A
  record reads only its own shard's head (a keyed one with its idempotency record, in the same
  round trip).
* Reading a period's spend (the gate, :meth:`BudgetLedger.totals`): the last entry of every
  shard, read concurrently — one round trip of ``SHARDS`` queries, whatever the length of the
  ledger. The day's totals come only from shards whose last entry is of that day.
* Listing (``GET /budget/usage``): the shards' entries merged in order of (``at``, ``shard``,
  ``seq``); the signed cursor holds every shard's position, and a page reads at most
  ``limit`` entries per shard, all shards concurrently. Within a shard ``at`` never goes
  backwards (an entry's time is at least its predecessor's), so each shard is already in
  that order and the merge is exact. A past day's entries are found per shard by binary search
  over the month's sequence, shards concurrently, so its cost grows with the logarithm of the
  month's entries, never linearly.

Nothing is updated or deleted: amounts are zero or more, and every recorded amount is also a
``budget`` event on the spine.

Bounds: one amount is at most ``MAX_AMOUNT`` (1e12), and a shard's month total at most
``MAX_TOTAL / shards`` (the shard count is a power of two, so that bound is exact); an entry
that would take its shard beyond it is refused (422 ``budget.invalid_request``, nothing
written). An unkeyed amount that does not fit its random shard goes to the shard with the most
room, if any has enough (a keyed one must stay on its shard). The tenant's total — a sum of
at most ``shards`` non-negative floats, each at most ``MAX_TOTAL / shards`` — therefore stays
at most ``MAX_TOTAL`` (rounded addition is monotone, and ``k · MAX_TOTAL / shards`` is exact
for every ``k``), and no total can become infinite or NaN — one that overflowed would be stored
as JSON ``null`` and break every later read of the month.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import random
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from northstar_core.bounds import MAX_AMOUNT, MAX_TOTAL, check_float
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, invalid
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page
from northstar_core.kernel.streams import HeadMoved, SequencedStream, seq_of
from northstar_core.routing import KindStore, RoutingRegistry
from northstar_core.scope import partition
from northstar_core.spine import EventSpine

KIND: Final = "budget_store"
DOMAIN: Final = "budget"
TOTAL: Final = "*"
PERIOD_PATTERN: Final = re.compile(r"^[0-9]{4}-[0-9]{2}(-[0-9]{2})?$")
_ATTEMPTS: Final = 64
MAX_PAGE: Final = 500
# Independent streams per tenant+mode+month. A power of two (the per-shard bound
# MAX_TOTAL / SHARDS is then exact) of at most 64 (the shard is a two-digit segment).
SHARDS: Final = 64
MAX_SHARDS: Final = 64
# Shards whose last entry a process remembers (least recently used out).
_REMEMBERED_SHARDS: Final = 65_536
# How long a shard whose remembered last entry turned out stale is read before each append.
_CONTENDED_SECONDS: Final = 10.0


class _Unknown:
    """A shard whose last entry this process does not remember (``None``: remembered empty)."""


_UNKNOWN: Final = _Unknown()
# A cursor's position: every shard's sequence, in hex, dot-separated (at most 14 hex digits
# each: MAX_SEQ < 16**14).
_POSITION: Final = re.compile(r"^[0-9a-f]{1,14}(\.[0-9a-f]{1,14})*$")


class UsageIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount: float
    surface_id: str | None = None
    action_name: str | None = None
    idempotency_key: str | None = None
    note: str | None = None


class UsageEntry(msgspec.Struct, kw_only=True):
    seq: int = 0  # within its shard
    shard: int = 0
    amount: float
    surface_id: str | None
    action_name: str | None
    actor_id: str
    at: str
    day: str
    run_id: str | None = None
    note: str | None = None
    month_totals: dict[str, float] = {}
    day_totals: dict[str, float] = {}


class UsagePage(Page[UsageEntry], kw_only=True):
    """The one page shape, plus the period's totals (what the budget gate reads)."""

    period: str
    total: float
    by_surface: dict[str, float]


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def shard_of_key(idempotency_key: str, shards: int = SHARDS) -> int:
    """The shard of a keyed entry: stable across processes (not Python's salted ``hash``)."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def _summed(totals: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for one in totals:
        for key, value in one.items():
            out[key] = out.get(key, 0.0) + value
    return out


def _position_invalid(cursor: str) -> NorthstarError:
    return NorthstarError(
        f"{DOMAIN}.cursor_invalid",
        "cursor is invalid: malformed or ahead of the ledger",
        410,
        details={"cursor": cursor, "reason": "malformed or ahead of the ledger"},
    )


class BudgetLedger:
    """Record usage and read a period's spend (see module doc)."""

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        clock: Clock,
        spine: EventSpine,
        *,
        shards: int = SHARDS,
    ) -> None:
        if not 1 <= shards <= MAX_SHARDS or shards & (shards - 1):
            raise ValueError(f"shards must be a power of two from 1 to {MAX_SHARDS}")
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.spine = spine
        # appends this process has in flight per (tenant, mode, month, shard): an unkeyed entry
        # goes to a shard none of them is appending to, so this process's own concurrent
        # recorders do not race each other for a head
        self._in_flight: dict[tuple[str, str, str, int], int] = {}
        # every shard's last entry as this process last read or wrote it (see record)
        self._last_seen: OrderedDict[tuple[int, str], UsageEntry | None] = OrderedDict()
        self._contended: dict[tuple[int, str], float] = {}
        self.shards = shards
        # exact: MAX_TOTAL divided by a power of two
        self.shard_max_total = MAX_TOTAL / shards

    def _stream(self, store: KindStore, ctx: RequestContext, month: str, shard: int) -> SequencedStream:
        return SequencedStream(store, partition(ctx, "budget", month, f"{shard:02d}"), DOMAIN)

    async def _streams(self, ctx: RequestContext, month: str) -> list[SequencedStream]:
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return [self._stream(store, ctx, month, shard) for shard in range(self.shards)]

    @staticmethod
    def _decode(value: bytes, seq: int, shard: int) -> UsageEntry:
        entry = msgspec.json.decode(value, type=UsageEntry)
        entry.seq, entry.shard = seq, shard
        return entry

    async def _last(self, stream: SequencedStream, shard: int) -> UsageEntry | None:
        last = await stream.read_last(1)
        entry = self._decode(last[0].value, seq_of(last[0].key), shard) if last else None
        self._remember(stream, entry)
        return entry

    @staticmethod
    def _slot(stream: SequencedStream) -> tuple[int, str]:
        return (id(stream.store.backing), stream.partition)

    def _remember(self, stream: SequencedStream, entry: UsageEntry | None) -> None:
        slot = self._slot(stream)
        self._last_seen[slot] = entry
        self._last_seen.move_to_end(slot)
        if len(self._last_seen) > _REMEMBERED_SHARDS:
            self._last_seen.popitem(last=False)

    def _forget(self, stream: SequencedStream, *, contended: bool = False) -> None:
        slot = self._slot(stream)
        self._last_seen.pop(slot, None)
        if contended:
            # another process writes this shard: a remembered entry would mostly cost a failed
            # write, so for a while the shard is read before each append
            self._contended[slot] = time.monotonic() + _CONTENDED_SECONDS
            if len(self._contended) > _REMEMBERED_SHARDS:
                now = time.monotonic()
                self._contended = {k: v for k, v in self._contended.items() if v > now}

    def _remembered(self, stream: SequencedStream) -> UsageEntry | _Unknown | None:
        slot = self._slot(stream)
        until = self._contended.get(slot)
        if until is not None:
            if time.monotonic() < until:
                return _UNKNOWN
            del self._contended[slot]
        return self._last_seen.get(slot, _UNKNOWN)

    async def _lasts(self, streams: Sequence[SequencedStream]) -> list[UsageEntry | None]:
        """Every shard's last entry, read concurrently: one round trip."""
        return list(await asyncio.gather(*(self._last(s, i) for i, s in enumerate(streams))))

    def _room(self, last: UsageEntry | None) -> float:
        """What the shard's month total may still grow by."""
        return self.shard_max_total - (last.month_totals.get(TOTAL, 0.0) if last else 0.0)

    async def record(self, ctx: RequestContext, body: Any) -> tuple[UsageEntry, bool]:
        """Append one usage entry; returns it and whether it was an idempotent replay.

        Writes need member or above. The same ``idempotency_key`` twice records once.
        """
        ctx.require_role("member")
        try:
            usage = msgspec.convert(body, type=UsageIn) if not isinstance(body, UsageIn) else body
        except msgspec.ValidationError as exc:
            raise invalid(DOMAIN, f"invalid usage: {exc}", reason=str(exc)) from None
        amount = check_float(DOMAIN, "amount", usage.amount, lo=0.0, hi=MAX_AMOUNT)
        usage = msgspec.structs.replace(usage, amount=amount)
        for field in ("surface_id", "action_name", "idempotency_key"):
            value = getattr(usage, field)
            if value is not None and not ID_PATTERN.fullmatch(value):
                raise invalid(DOMAIN, f"'{field}' must match {ID_PATTERN.pattern}", field=field)
        now = self.clock.now()
        month = month_of(now)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        key = usage.idempotency_key
        fp = fingerprint(msgspec.to_builtins(usage))
        shard = shard_of_key(key, self.shards) if key is not None else self._idle_shard(ctx, month)
        known: UsageEntry | None = None
        have_known = False  # ``known`` is the shard's last entry, read in this attempt
        key_checked = False  # the key was looked up and found unused (its shard never changes)
        for attempt in range(_ATTEMPTS):
            with self._writing(ctx, month, shard):
                stream = self._stream(store, ctx, month, shard)
                # the shard's last entry as this process last saw it: where the batch checks the
                # head it appends at, an append on top of it needs no read first (a stale one
                # fails that check, and the shard is read again)
                remembered = self._remembered(stream) if store.capabilities.atomic_checks else _UNKNOWN
                fresh = True  # ``last`` was read from the store in this attempt
                if have_known:
                    last, have_known = known, False
                elif key is not None and not key_checked:
                    if isinstance(remembered, _Unknown):
                        # the key's record and the head in one round trip
                        prior, last = await asyncio.gather(
                            stream.idempotent_result(key, fp), self._last(stream, shard)
                        )
                    else:
                        prior, last, fresh = await stream.idempotent_result(key, fp), remembered, False
                    if prior is not None:
                        return self._entry_of(prior.result, prior.first_seq, shard), True
                    key_checked = True
                elif not isinstance(remembered, _Unknown):
                    last, fresh = remembered, False
                else:
                    last = await self._last(stream, shard)
                # The shard's month total bounds its other totals (amounts are >= 0). Compared as
                # headroom, which is exact near the bound, so even an amount too small to change a
                # float total of ~1e13 cannot slip past it.
                if usage.amount > self._room(last) and not fresh:
                    self._forget(stream)  # a refusal is decided on what the store holds now
                    continue
                if usage.amount > self._room(last):
                    if key is not None:
                        prior = await stream.idempotent_result(key, fp)
                        if prior is not None:  # recorded before the shard filled up: a replay
                            return self._entry_of(prior.result, prior.first_seq, shard), True
                        raise self._refused(usage.amount, last, shard)
                    # unkeyed: any shard will do — the one with the most room, if it is enough
                    lasts = await self._lasts(await self._streams(ctx, month))
                    roomiest = max(range(self.shards), key=lambda s: self._room(lasts[s]))
                    if usage.amount > self._room(lasts[roomiest]):
                        raise self._refused(usage.amount, lasts[roomiest], roomiest)
                    shard, known, have_known = roomiest, lasts[roomiest], True
                    continue
                head = last.seq if last else 0
                entry = self._next_entry(ctx, usage, now, shard, last)
                data = msgspec.json.encode(entry)
                body_dict: dict[str, Any] = msgspec.json.decode(data)

                def build(_first: int, data: bytes = data) -> list[bytes]:
                    return [data]

                def outcome(_first: int, _last: int, body: dict[str, Any] = body_dict) -> dict[str, Any]:
                    return {"entry": body}

                try:
                    appended = await stream.append(
                        build,
                        now=now,
                        expected_head=head,
                        # read from the store just now, in this operation: on a backend without
                        # atomic checks the append goes straight to its batch (a remembered head
                        # only ever serves where the batch checks it)
                        known_head=head if fresh else None,
                        idempotency_key=key,
                        payload_fingerprint=fp,
                        # a concurrent attempt with the key since the look-up fails the batch's
                        # condition on the key's record, and the append answers its result
                        key_checked=key_checked,
                        result=outcome,
                    )
                except HeadMoved:
                    # stale although no other append of this process was on the shard: another
                    # process writes it
                    alone = self._in_flight.get((ctx.tenant_id, ctx.mode, month, shard), 0) <= 1
                    self._forget(stream, contended=not fresh and alone)
                    await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.05)))
                    if key is None:  # an unkeyed entry may go anywhere: away from the contended head
                        shard = self._idle_shard(ctx, month)
                    continue
                stored = self._entry_of(appended.result, appended.first_seq, shard)
                if not appended.replayed:
                    self._remember(stream, stored)
                    usage_event = {"usage": msgspec.to_builtins(stored), "month": month}
                    await self.spine.record(ctx, "budget", usage_event)
                return stored, appended.replayed
        raise NorthstarError(
            f"{DOMAIN}.contention",
            "the ledger is under too much write contention; retry",
            503,
            headers={"Retry-After": "1"},
        )

    def _idle_shard(self, ctx: RequestContext, month: str) -> int:
        """A random shard among those with the fewest appends in flight in this process."""
        counts = [self._in_flight.get((ctx.tenant_id, ctx.mode, month, s), 0) for s in range(self.shards)]
        fewest = min(counts)
        return random.choice([s for s, n in enumerate(counts) if n == fewest])

    @contextlib.contextmanager
    def _writing(self, ctx: RequestContext, month: str, shard: int) -> Iterator[None]:
        slot = (ctx.tenant_id, ctx.mode, month, shard)
        self._in_flight[slot] = self._in_flight.get(slot, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[slot] - 1
            if left:
                self._in_flight[slot] = left
            else:
                del self._in_flight[slot]

    def _next_entry(
        self, ctx: RequestContext, usage: UsageIn, now: float, shard: int, last: UsageEntry | None
    ) -> UsageEntry:
        """The entry on top of ``last``. Its time is never before its predecessor's (clocks of
        two processes differ), so a shard is in time order and its days are contiguous."""
        at = max(iso(now), last.at) if last else iso(now)
        day = at[:10]
        month_totals = dict(last.month_totals) if last else {}
        day_totals = dict(last.day_totals) if last and last.day == day else {}
        for totals in (month_totals, day_totals):
            totals[TOTAL] = totals.get(TOTAL, 0.0) + usage.amount
            if usage.surface_id is not None:
                totals[usage.surface_id] = totals.get(usage.surface_id, 0.0) + usage.amount
        return UsageEntry(
            shard=shard,
            amount=usage.amount,
            surface_id=usage.surface_id,
            action_name=usage.action_name,
            actor_id=ctx.user_id,
            at=at,
            day=day,
            run_id=ctx.run_id,
            note=usage.note,
            month_totals=month_totals,
            day_totals=day_totals,
        )

    def _refused(self, amount: float, last: UsageEntry | None, shard: int) -> NorthstarError:
        return invalid(
            DOMAIN,
            f"this amount would take the month's total of ledger shard {shard} beyond "
            f"{self.shard_max_total:g} ({MAX_TOTAL:g} over {self.shards} shards)",
            field="amount",
            amount=amount,
            total=last.month_totals.get(TOTAL, 0.0) if last else 0.0,
            max_total=self.shard_max_total,
            shard=shard,
        )

    @staticmethod
    def _entry_of(result: bytes, first_seq: int, shard: int) -> UsageEntry:
        """The entry stored in an append's result (its idempotency record)."""
        stored = msgspec.convert(msgspec.json.decode(result)["entry"], type=UsageEntry)
        stored.seq, stored.shard = first_seq, shard
        return stored

    async def totals(self, ctx: RequestContext) -> tuple[dict[str, float], dict[str, float]]:
        """The current month's and day's totals (``*`` = tenant, else per surface): the sum of
        every shard's last entry, read concurrently (one round trip)."""
        now = self.clock.now()
        lasts = [e for e in await self._lasts(await self._streams(ctx, month_of(now))) if e is not None]
        today = day_of(now)
        return _summed(e.month_totals for e in lasts), _summed(e.day_totals for e in lasts if e.day == today)

    async def spend(
        self, ctx: RequestContext, period: Literal["day", "month"], surface_id: str | None
    ) -> float:
        """The current day's or month's spend (tenant-wide or one surface): one round trip."""
        month, day = await self.totals(ctx)
        return (month if period == "month" else day).get(surface_id or TOTAL, 0.0)

    async def _entry(self, stream: SequencedStream, seq: int, shard: int) -> UsageEntry:
        items = await stream.read(seq - 1, 1, before_seq=seq + 1)
        if not items:  # entries are never deleted; a gap would be a broken ledger
            raise NorthstarError(f"{DOMAIN}.ledger_gap", f"ledger entry {seq} is missing", 503)
        return self._decode(items[0].value, seq, shard)

    async def _first_after(
        self, stream: SequencedStream, shard: int, lo: int, head: int, day: str, *, inclusive: bool
    ) -> int:
        """The first sequence in ``lo..head`` whose day is >= ``day`` (``inclusive``) or > ``day``
        (``head + 1`` if none) — O(log n) reads, since a shard's days never go backwards."""
        hi = head + 1
        while lo < hi:
            mid = (lo + hi) // 2
            found = (await self._entry(stream, mid, shard)).day
            if found < day or (not inclusive and found == day):
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def _day_range(
        self, stream: SequencedStream, shard: int, last: UsageEntry | None, day: str
    ) -> tuple[int, int, dict[str, float]]:
        """One shard's (first, last) sequence of ``day`` and its day totals; ``first > last``
        when the shard has no entry of that day."""
        if last is None:
            return 1, 0, {}
        head = last.seq
        if last.day < day:  # days never go backwards in a shard: none of ``day`` yet
            return head + 1, head, {}
        first = await self._first_after(stream, shard, 1, head, day, inclusive=True)
        if last.day == day:
            return first, head, last.day_totals
        end = await self._first_after(stream, shard, first, head, day, inclusive=False) - 1
        totals = (await self._entry(stream, end, shard)).day_totals if end >= first else {}
        return first, end, totals

    def _positions(self, ctx: RequestContext, binding: str, cursor: str, heads: Sequence[int]) -> list[int]:
        """The per-shard positions in a cursor of this tenant, mode and period (410 otherwise)."""
        position = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, binding, cursor)
        if not _POSITION.fullmatch(position):
            raise _position_invalid(cursor)
        positions = [int(part, 16) for part in position.split(".")]
        if len(positions) != self.shards or any(p > h for p, h in zip(positions, heads, strict=True)):
            raise _position_invalid(cursor)
        return positions

    async def usage(
        self,
        ctx: RequestContext,
        period: str | None = None,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> UsagePage:
        """Entries of a month (``YYYY-MM``) or day (``YYYY-MM-DD``) from every shard, in order of
        (``at``, ``shard``, ``seq``), paged, with the period's totals (tenant ``total`` and
        ``by_surface``, summed over the shards)."""
        period = period or month_of(self.clock.now())
        if not PERIOD_PATTERN.fullmatch(period):
            raise invalid(DOMAIN, "'period' must be YYYY-MM or YYYY-MM-DD", field="period", value=period[:50])
        if not 1 <= limit <= MAX_PAGE:
            raise invalid(DOMAIN, f"'limit' must be between 1 and {MAX_PAGE}", field="limit")
        month = period[:7]
        day = period if len(period) == 10 else None
        binding = f"budget:{period}"
        streams = await self._streams(ctx, month)
        lasts = await self._lasts(streams)
        heads = [e.seq if e else 0 for e in lasts]
        if day is None:
            ranges = [(1, head, e.month_totals if e else {}) for head, e in zip(heads, lasts, strict=True)]
        else:
            ranges = list(
                await asyncio.gather(*(self._day_range(s, i, lasts[i], day) for i, s in enumerate(streams)))
            )
        totals = _summed(r[2] for r in ranges)
        ends = [r[1] for r in ranges]
        after = [r[0] - 1 for r in ranges]
        if cursor:
            positions = self._positions(ctx, binding, cursor, heads)
            after = [max(a, p) for a, p in zip(after, positions, strict=True)]

        async def page_of(i: int) -> list[UsageEntry]:
            want = min(limit, ends[i] - after[i])
            if want <= 0:
                return []
            items = await streams[i].read(after[i], want, before_seq=ends[i] + 1)
            return [self._decode(item.value, seq_of(item.key), i) for item in items]

        fetched = await asyncio.gather(*(page_of(i) for i in range(self.shards)))
        # each shard is in (at, seq) order, so the k-way merge of the first ``limit`` of each
        # is the first ``limit`` of all
        merged = heapq.merge(*fetched, key=lambda e: (e.at, e.shard, e.seq))
        entries = list(itertools.islice(merged, limit))
        for entry in entries:
            after[entry.shard] = entry.seq
        next_cursor = (
            self.cursors.encode(
                DOMAIN, ctx.tenant_id, ctx.mode, binding, ".".join(format(p, "x") for p in after)
            )
            if any(after)
            else None
        )
        return UsagePage(
            period=period,
            total=totals.get(TOTAL, 0.0),
            by_surface={k: v for k, v in totals.items() if k != TOTAL},
            items=entries,
            next_cursor=next_cursor,
            has_more=any(a < end for a, end in zip(after, ends, strict=True)),
        )
