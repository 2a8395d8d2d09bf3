"""The budget usage ledger: append-only spend per tenant, with running totals.

One :class:`~northstar_core.kernel.streams.SequencedStream` per tenant+mode and calendar month (UTC),
in ``budget_store`` partition ``<tenant>|<mode>|budget|<YYYY-MM>``. Each entry carries, beside
its own amount, the running totals of the month and of its day, for the tenant (``*``) and per
surface. An entry is appended at exactly the head it was computed from (``expected_head``), so
concurrent recorders never lose an amount, and the gate reads a period's spend with **one**
query (the last entry), whatever the length of the ledger.

Reading a past day (``GET /budget/usage?period=YYYY-MM-DD``) finds the day's first and last
entries by binary search over the month's sequence (entries are appended in time order), so
its cost grows with the logarithm of the month's entries, never linearly.

Nothing is updated or deleted: amounts are zero or more, and every recorded amount is also a
``budget`` event on the spine.

Bounds: one amount is at most ``MAX_AMOUNT`` (1e12) and a running total at most ``MAX_TOTAL``
(1e15); an entry that would take a total beyond it is refused (422 ``budget.invalid_request``,
nothing written). Totals therefore stay finite and exact to well below a cent — a total that
overflowed to infinity would be stored as JSON ``null`` and break every later read of the month.
"""

from __future__ import annotations

import asyncio
import random
import re
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
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import partition
from northstar_core.spine import EventSpine

KIND: Final = "budget_store"
DOMAIN: Final = "budget"
TOTAL: Final = "*"
PERIOD_PATTERN: Final = re.compile(r"^[0-9]{4}-[0-9]{2}(-[0-9]{2})?$")
_ATTEMPTS: Final = 64
MAX_PAGE: Final = 500


class UsageIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount: float
    surface_id: str | None = None
    action_name: str | None = None
    idempotency_key: str | None = None
    note: str | None = None


class UsageEntry(msgspec.Struct, kw_only=True):
    seq: int = 0
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


class BudgetLedger:
    """Record usage and read a period's spend (see module doc)."""

    def __init__(
        self, registry: RoutingRegistry, cursors: CursorCodec, clock: Clock, spine: EventSpine
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.spine = spine

    async def _stream(self, ctx: RequestContext, month: str) -> SequencedStream:
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return SequencedStream(store, partition(ctx, "budget", month), DOMAIN)

    async def _last(self, stream: SequencedStream) -> UsageEntry | None:
        last = await stream.read_last(1)
        if not last:
            return None
        entry = msgspec.json.decode(last[0].value, type=UsageEntry)
        entry.seq = seq_of(last[0].key)
        return entry

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
        month, day = month_of(now), day_of(now)
        stream = await self._stream(ctx, month)
        fp = fingerprint(msgspec.to_builtins(usage))
        for attempt in range(_ATTEMPTS):
            last = await self._last(stream)
            head = last.seq if last else 0
            month_totals = dict(last.month_totals) if last else {}
            day_totals = dict(last.day_totals) if last and last.day == day else {}
            spent = month_totals.get(TOTAL, 0.0)
            # The month's tenant total bounds every other total (amounts are >= 0). Compared as
            # headroom, which is exact near the bound, so even an amount too small to change a
            # float total of ~1e15 cannot slip past it.
            if usage.amount > MAX_TOTAL - spent:
                if usage.idempotency_key is not None:
                    prior = await stream.idempotent_result(usage.idempotency_key, fp)
                    if prior is not None:  # recorded before the ledger filled up: a replay
                        return self._entry_of(prior.result, prior.first_seq), True
                raise invalid(
                    DOMAIN,
                    f"this amount would take the month's total beyond {MAX_TOTAL:g}",
                    field="amount",
                    amount=usage.amount,
                    total=spent,
                    max_total=MAX_TOTAL,
                )
            for totals in (month_totals, day_totals):
                totals[TOTAL] = totals.get(TOTAL, 0.0) + usage.amount
                if usage.surface_id is not None:
                    totals[usage.surface_id] = totals.get(usage.surface_id, 0.0) + usage.amount
            entry = UsageEntry(
                amount=usage.amount,
                surface_id=usage.surface_id,
                action_name=usage.action_name,
                actor_id=ctx.user_id,
                at=iso(now),
                day=day,
                run_id=ctx.run_id,
                note=usage.note,
                month_totals=month_totals,
                day_totals=day_totals,
            )
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
                    idempotency_key=usage.idempotency_key,
                    payload_fingerprint=fp,
                    result=outcome,
                )
            except HeadMoved:
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.05)))
                continue
            stored = self._entry_of(appended.result, appended.first_seq)
            if not appended.replayed:
                await self.spine.record(ctx, "budget", {"usage": msgspec.to_builtins(stored), "month": month})
            return stored, appended.replayed
        raise NorthstarError(
            f"{DOMAIN}.contention",
            "the ledger is under too much write contention; retry",
            503,
            headers={"Retry-After": "1"},
        )

    @staticmethod
    def _entry_of(result: bytes, first_seq: int) -> UsageEntry:
        """The entry stored in an append's result (its idempotency record)."""
        stored = msgspec.convert(msgspec.json.decode(result)["entry"], type=UsageEntry)
        stored.seq = first_seq
        return stored

    async def totals(self, ctx: RequestContext) -> tuple[dict[str, float], dict[str, float]]:
        """The current month's and day's running totals (``*`` = tenant, else per surface)."""
        now = self.clock.now()
        last = await self._last(await self._stream(ctx, month_of(now)))
        if last is None:
            return {}, {}
        return last.month_totals, (last.day_totals if last.day == day_of(now) else {})

    async def spend(
        self, ctx: RequestContext, period: Literal["day", "month"], surface_id: str | None
    ) -> float:
        """The current day's or month's spend (tenant-wide or one surface): one read."""
        now = self.clock.now()
        last = await self._last(await self._stream(ctx, month_of(now)))
        if last is None:
            return 0.0
        key = surface_id or TOTAL
        if period == "month":
            return last.month_totals.get(key, 0.0)
        return last.day_totals.get(key, 0.0) if last.day == day_of(now) else 0.0

    async def _entry(self, stream: SequencedStream, seq: int) -> UsageEntry:
        items = await stream.read(seq - 1, 1, before_seq=seq + 1)
        if not items:  # entries are never deleted; a gap would be a broken ledger
            raise NorthstarError(f"{DOMAIN}.ledger_gap", f"ledger entry {seq} is missing", 503)
        entry = msgspec.json.decode(items[0].value, type=UsageEntry)
        entry.seq = seq
        return entry

    async def _day_bounds(self, stream: SequencedStream, head: int, day: str) -> tuple[int, int]:
        """(first, last) sequence of ``day``'s entries by binary search — O(log n) reads, since
        entries are appended in time order. ``first > last`` when the day has none."""
        lo, hi = 1, head + 1  # first seq whose day >= ``day``
        while lo < hi:
            mid = (lo + hi) // 2
            if (await self._entry(stream, mid)).day < day:
                lo = mid + 1
            else:
                hi = mid
        first = lo
        lo, hi = first, head + 1  # first seq whose day > ``day``
        while lo < hi:
            mid = (lo + hi) // 2
            if (await self._entry(stream, mid)).day <= day:
                lo = mid + 1
            else:
                hi = mid
        return first, lo - 1

    async def usage(
        self,
        ctx: RequestContext,
        period: str | None = None,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> UsagePage:
        """Entries of a month (``YYYY-MM``) or day (``YYYY-MM-DD``), oldest first, paged, with
        the period's totals (tenant ``total`` and ``by_surface``)."""
        period = period or month_of(self.clock.now())
        if not PERIOD_PATTERN.fullmatch(period):
            raise invalid(DOMAIN, "'period' must be YYYY-MM or YYYY-MM-DD", field="period", value=period[:50])
        if not 1 <= limit <= MAX_PAGE:
            raise invalid(DOMAIN, f"'limit' must be between 1 and {MAX_PAGE}", field="limit")
        month = period[:7]
        day = period if len(period) == 10 else None
        stream = await self._stream(ctx, month)
        binding = f"budget:{period}"
        last = await self._last(stream)
        head = last.seq if last else 0
        first_seq, last_seq = 1, head
        totals: dict[str, float] = last.month_totals if last else {}
        if day is not None:
            if last is not None and last.day == day:
                first_seq, last_seq = (await self._day_bounds(stream, head, day))[0], head
                totals = last.day_totals
            else:
                first_seq, last_seq = await self._day_bounds(stream, head, day)
                totals = (await self._entry(stream, last_seq)).day_totals if last_seq >= first_seq else {}
        after = first_seq - 1
        if cursor:
            position = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, binding, cursor)
            if not position.isdigit() or int(position) > head:
                raise NorthstarError(
                    f"{DOMAIN}.cursor_invalid",
                    "cursor is invalid: malformed or ahead of the ledger",
                    410,
                    details={"cursor": cursor, "reason": "malformed or ahead of the ledger"},
                )
            after = max(after, int(position))
        want = max(0, min(limit, last_seq - after))
        items = await stream.read(after, want, before_seq=last_seq + 1) if want else []
        entries: list[UsageEntry] = []
        for item in items:
            entry = msgspec.json.decode(item.value, type=UsageEntry)
            entry.seq = seq_of(item.key)
            entries.append(entry)
        position_now = entries[-1].seq if entries else after
        next_cursor = (
            self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, binding, str(position_now))
            if position_now
            else None
        )
        return UsagePage(
            period=period,
            total=totals.get(TOTAL, 0.0),
            by_surface={k: v for k, v in totals.items() if k != TOTAL},
            items=entries,
            next_cursor=next_cursor,
            has_more=position_now < last_seq,
        )
