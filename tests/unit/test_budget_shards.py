"""The sharded budget ledger against a reference model, under concurrency, and with hostile input.

Amounts are multiples of 0.25 (exact binary fractions), so float sums are exact and the
ledger's totals must equal the model's exactly.
"""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contracts.suite.spine import SECRET, SafetyRig, safety_rig
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.bounds import MAX_AMOUNT, MAX_TOTAL
from northstar_core.clock import iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.safety.budget import SHARDS, BudgetLedger, UsageEntry, day_of, month_of, shard_of_key
from northstar_core.storage import ItemStore

KEYS = [f"k{i}" for i in range(12)]
SURFACES = [None, "s1", "s2"]
AMOUNTS = st.integers(0, 400).map(lambda c: c / 4)


def ctx(tenant: str = "t_a") -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u1", roles=("member",))


def ledger(rig: SafetyRig, shards: int) -> BudgetLedger:
    old = rig.budget
    return BudgetLedger(old.registry, old.cursors, old.clock, old.spine, shards=shards)


async def all_entries(budget: BudgetLedger, period: str, limit: int, tenant: str = "t_a") -> list[UsageEntry]:
    items: list[UsageEntry] = []
    cursor = None
    while True:
        page = await budget.usage(ctx(tenant), period, cursor=cursor, limit=limit)
        assert len(page.items) <= limit
        items += page.items
        cursor = page.next_cursor
        if not page.has_more:
            return items


class ShardedLedgerMachine(RuleBasedStateMachine):
    shards = SHARDS

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.rig = self.loop.run_until_complete(safety_rig(MemoryItemStore()))
        self.budget = ledger(self.rig, self.shards)
        # (month, key) -> payload, entry: a key is unique within its month's ledger
        self.keyed: dict[tuple[str, str], tuple[float, str | None, UsageEntry]] = {}
        self.entries: list[UsageEntry] = []  # every entry recorded, once
        self.spent: dict[tuple[str, str], float] = defaultdict(float)  # (month|day, surface|*) -> sum

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _body(self, amount: float, surface: str | None, key: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"amount": amount}
        if surface:
            body["surface_id"] = surface
        if key:
            body["idempotency_key"] = key
        return body

    def _count(self, entry: UsageEntry) -> None:
        assert 0 <= entry.shard < self.shards and entry.seq >= 1
        assert entry.at >= iso(self.rig.clock.now()) and entry.day == entry.at[:10]
        self.entries.append(entry)
        for period in (entry.at[:7], entry.day):
            self.spent[(period, "*")] += entry.amount
            if entry.surface_id:
                self.spent[(period, entry.surface_id)] += entry.amount

    @rule(amount=AMOUNTS, surface=st.sampled_from(SURFACES))
    def record_unkeyed(self, amount: float, surface: str | None) -> None:
        entry, replayed = self.run(self.budget.record(ctx(), self._body(amount, surface, None)))
        assert not replayed and entry.amount == amount
        self._count(entry)

    @rule(key=st.sampled_from(KEYS), amount=AMOUNTS, surface=st.sampled_from(SURFACES))
    def record_keyed(self, key: str, amount: float, surface: str | None) -> None:
        scoped = (month_of(self.rig.clock.now()), key)
        if scoped in self.keyed:  # the same key again: its first payload, answered as a replay
            amount, surface, _ = self.keyed[scoped]
        entry, replayed = self.run(self.budget.record(ctx(), self._body(amount, surface, key)))
        assert entry.shard == shard_of_key(key, self.shards)
        if scoped in self.keyed:
            assert replayed and entry == self.keyed[scoped][2]
            return
        assert not replayed
        self.keyed[scoped] = (amount, surface, entry)
        self._count(entry)

    @precondition(lambda self: any(m == month_of(self.rig.clock.now()) for m, _ in self.keyed))
    @rule(data=st.data())
    def reuse_key_with_another_payload(self, data: st.DataObject) -> None:
        month = month_of(self.rig.clock.now())
        key = data.draw(st.sampled_from(sorted(k for m, k in self.keyed if m == month)))
        amount, surface, _ = self.keyed[(month, key)]
        with pytest.raises(NorthstarError) as info:
            self.run(self.budget.record(ctx(), self._body(amount + 0.25, surface, key)))
        assert (info.value.http_status, info.value.code) == (422, "budget.idempotency_mismatch")

    @rule(seconds=st.sampled_from([0.0004, 1, 3600 * 7, 3600 * 30, 3600 * 24 * 20]))
    def time_passes(self, seconds: float) -> None:
        self.rig.clock.advance(seconds)

    @rule(limit=st.integers(1, 9), day=st.booleans())
    def page_through(self, limit: int, day: bool) -> None:
        """Paging a period with any page size returns its entries once each, in (at, shard,
        seq) order, and the period's totals."""
        now = self.rig.clock.now()
        period = day_of(now) if day else month_of(now)
        got = self.run(all_entries(self.budget, period, limit))
        expected = sorted(
            (e for e in self.entries if e.at.startswith(period)), key=lambda e: (e.at, e.shard, e.seq)
        )
        assert [(e.shard, e.seq) for e in got] == [(e.shard, e.seq) for e in expected]
        assert got == expected  # every field, totals included, as recorded
        page = self.run(self.budget.usage(ctx(), period, limit=1))
        assert page.total == self.spent.get((period, "*"), 0.0)
        surfaces = {s: v for (p, s), v in self.spent.items() if p == period and s != "*"}
        assert page.by_surface == surfaces

    @invariant()
    def totals_are_the_sum_of_every_amount_once(self) -> None:
        now = self.rig.clock.now()
        month, day = self.run(self.budget.totals(ctx()))
        for totals, period in ((month, month_of(now)), (day, day_of(now))):
            assert totals == {s: v for (p, s), v in self.spent.items() if p == period}
        for surface in SURFACES:
            key = surface or "*"
            assert self.run(self.budget.spend(ctx(), "month", surface)) == self.spent.get(
                (month_of(now), key), 0.0
            )
            assert self.run(self.budget.spend(ctx(), "day", surface)) == self.spent.get(
                (day_of(now), key), 0.0
            )

    @invariant()
    def past_days_of_the_month_keep_their_totals(self) -> None:
        month = month_of(self.rig.clock.now())
        for day in sorted({e.day for e in self.entries if e.day.startswith(month)}):
            page = self.run(self.budget.usage(ctx(), day, limit=500))
            assert page.total == self.spent[(day, "*")]
            assert sorted((e.shard, e.seq) for e in page.items) == sorted(
                (e.shard, e.seq) for e in self.entries if e.day == day
            )

    def teardown(self) -> None:
        self.loop.close()


class FourShardMachine(ShardedLedgerMachine):
    shards = 4  # fewer shards: keys and random placements collide on one shard often


TestShardedLedger = ShardedLedgerMachine.TestCase
TestShardedLedger.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestFourShardLedger = FourShardMachine.TestCase
TestFourShardLedger.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# --- concurrency ---------------------------------------------------------------------------------


async def open_store(backend: str, tmp_path: Path) -> ItemStore:
    if backend == "memory":
        return MemoryItemStore()
    return SqliteItemStore(tmp_path / "budget.sqlite3", namespace="ns")


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_64_concurrent_recorders_and_duplicates_count_every_amount_once(
    backend: str, tmp_path: Path
) -> None:
    store = await open_store(backend, tmp_path)
    try:
        await concurrent_recorders(await safety_rig(store))
    finally:
        if isinstance(store, SqliteItemStore):
            await store.close()


async def concurrent_recorders(rig: SafetyRig) -> None:
    keyed: list[dict[str, Any]] = [
        {"amount": (i + 1) / 4, "surface_id": f"s{i % 3}", "idempotency_key": f"key{i}"} for i in range(64)
    ]
    duplicates = keyed[::4] * 2  # 16 keys sent twice more, concurrently with their first
    unkeyed = [{"amount": 0.5} for _ in range(16)]
    bodies = keyed + duplicates + unkeyed
    results = await asyncio.gather(*(rig.budget.record(ctx(), b) for b in bodies))
    fresh = [entry for entry, replayed in results if not replayed]
    assert len(fresh) == 64 + 16 and sum(replayed for _, replayed in results) == 32
    by_key = {
        b["idempotency_key"]: entry
        for b, (entry, _) in zip(bodies, results, strict=False)
        if "idempotency_key" in b
    }
    for body, (entry, _) in zip(bodies, results, strict=False):
        if "idempotency_key" in body:  # a duplicate answers the one entry of its key
            assert (entry.shard, entry.seq) == (
                by_key[body["idempotency_key"]].shard,
                by_key[body["idempotency_key"]].seq,
            )
            assert entry.shard == shard_of_key(body["idempotency_key"])
    expected = sum(b["amount"] for b in keyed) + 16 * 0.5
    month, day = await rig.budget.totals(ctx())
    assert month["*"] == day["*"] == expected
    for s in range(3):
        assert month[f"s{s}"] == sum(b["amount"] for b in keyed if b["surface_id"] == f"s{s}")
    for limit in (500, 7):
        entries = await all_entries(rig.budget, month_of(rig.clock.now()), limit)
        assert sorted((e.shard, e.seq) for e in entries) == sorted((e.shard, e.seq) for e in fresh)
        assert sum(e.amount for e in entries) == expected
    for shard in {e.shard for e in fresh}:  # gap-free per shard
        seqs = sorted(e.seq for e in fresh if e.shard == shard)
        assert seqs == list(range(1, len(seqs) + 1))
    events = (await rig.spine.list(ctx(), event_type="budget", limit=500)).items
    assert len(events) == 80  # one event per entry, none for a replay


async def test_entries_of_one_instant_are_listed_by_shard_then_sequence() -> None:
    rig = await safety_rig(MemoryItemStore())
    for i in range(40):  # the clock does not move: every entry has the same time
        await rig.budget.record(ctx(), {"amount": 1, "idempotency_key": f"i{i}"})
    entries = await all_entries(rig.budget, month_of(rig.clock.now()), 3)
    assert [(e.shard, e.seq) for e in entries] == sorted((e.shard, e.seq) for e in entries)
    assert len({(e.shard, e.seq) for e in entries}) == 40


async def test_a_shards_time_never_goes_backwards() -> None:
    """A process whose clock is behind still appends after a later entry: the entry takes the
    later time, so each shard stays in time order (and day pages stay exact)."""
    rig = await safety_rig(MemoryItemStore())
    one = ledger(rig, 1)
    await one.record(ctx(), {"amount": 1})
    late = rig.clock.now()
    rig.clock.advance(-5)
    entry, _ = await one.record(ctx(), {"amount": 2})
    assert entry.at == iso(late) and (entry.seq, entry.month_totals) == (2, {"*": 3.0})


def test_the_shard_count_is_a_power_of_two_of_at_most_64() -> None:
    for bad in (0, 3, 48, 128):
        with pytest.raises(ValueError):
            BudgetLedger(None, None, None, None, shards=bad)  # type: ignore[arg-type]


# --- hostile -------------------------------------------------------------------------------------


async def recorded_rig() -> SafetyRig:
    rig = await safety_rig(MemoryItemStore())
    for i in range(6):
        await rig.budget.record(ctx(), {"amount": i, "idempotency_key": f"h{i}"})
        await rig.budget.record(ctx("t_b"), {"amount": i})
    return rig


async def first_cursor(rig: SafetyRig, period: str | None = None) -> str:
    page = await rig.budget.usage(ctx(), period, limit=2)
    assert page.has_more and page.next_cursor
    return page.next_cursor


async def assert_gone(rig: SafetyRig, cursor: str, tenant: str = "t_a", period: str | None = None) -> None:
    with pytest.raises(NorthstarError) as info:
        await rig.budget.usage(ctx(tenant), period, cursor=cursor)
    assert (info.value.http_status, info.value.code) == (410, "budget.cursor_invalid")


async def test_a_cursor_of_another_tenant_or_period_is_410() -> None:
    rig = await recorded_rig()
    cursor = await first_cursor(rig)
    await assert_gone(rig, cursor, tenant="t_b")
    await assert_gone(rig, cursor, period=day_of(rig.clock.now()))
    await assert_gone(rig, cursor, period="2020-01")
    day_cursor = await first_cursor(rig, day_of(rig.clock.now()))
    await assert_gone(rig, day_cursor)  # a day's cursor on the month


async def test_a_tampered_cursor_is_410() -> None:
    rig = await recorded_rig()
    cursor = await first_cursor(rig)
    version, position, mac = cursor.split(".")
    raw = base64.urlsafe_b64decode(position + "=" * (-len(position) % 4)).decode()
    changed = base64.urlsafe_b64encode(("1" + raw).encode()).rstrip(b"=").decode()
    for bad in (
        f"{version}.{changed}.{mac}",
        f"{version}.{position}.{mac[:-2]}AA",
        cursor[:-1],
        "x",
        "1.2.3",
    ):
        await assert_gone(rig, bad)


@pytest.mark.parametrize(
    "position",
    [
        "0",  # one shard's position where there are SHARDS
        ".".join(["0"] * (SHARDS - 1) + ["ff"]),  # ahead of that shard's ledger
        ".".join(["0"] * (SHARDS + 1)),
        ".".join(["0"] * (SHARDS - 1) + ["-1"]),
        ".".join(["0"] * (SHARDS - 1) + ["G"]),
        ".".join(["0"] * (SHARDS - 1) + ["1" * 15]),
        "",
    ],
)
async def test_a_signed_cursor_with_a_bad_position_is_410(position: str) -> None:
    """Even a correctly signed position (a leaked secret, an older layout) is checked."""
    rig = await recorded_rig()
    period = month_of(rig.clock.now())
    forged = CursorCodec(SECRET).encode("budget", "t_a", "lab", f"budget:{period}", position)
    await assert_gone(rig, forged)


async def test_a_cursor_carries_every_shards_position() -> None:
    rig = await recorded_rig()
    period = month_of(rig.clock.now())
    cursor = await first_cursor(rig)
    position = CursorCodec(SECRET).decode("budget", "t_a", "lab", f"budget:{period}", cursor)
    assert len(position.split(".")) == SHARDS


def fitting_keys(shards: int, shard: int, n: int) -> list[str]:
    keys = (f"fill{i}" for i in range(100_000))
    return [k for k in keys if shard_of_key(k, shards) == shard][:n]


async def test_a_shard_refuses_what_would_pass_its_share_of_the_bound_and_writes_nothing() -> None:
    rig = await safety_rig(MemoryItemStore())
    share = rig.budget.shard_max_total
    assert share * SHARDS == MAX_TOTAL
    keys = fitting_keys(SHARDS, 5, 34)
    whole = int(share // MAX_AMOUNT)
    for key in keys[:whole]:
        await rig.budget.record(ctx(), {"amount": MAX_AMOUNT, "idempotency_key": key})
    rest = share - whole * MAX_AMOUNT
    last, _ = await rig.budget.record(ctx(), {"amount": rest, "idempotency_key": keys[whole]})
    assert (last.shard, last.month_totals["*"]) == (5, share)
    for amount in (0.25, MAX_AMOUNT):
        with pytest.raises(NorthstarError) as info:
            await rig.budget.record(ctx(), {"amount": amount, "idempotency_key": keys[whole + 1]})
        err = info.value
        assert (err.http_status, err.code, err.details["field"], err.details["shard"]) == (
            422,
            "budget.invalid_request",
            "amount",
            5,
        )
    # the refused key was never recorded; a replay of a key recorded before the shard filled is
    again, replayed = await rig.budget.record(ctx(), {"amount": rest, "idempotency_key": keys[whole]})
    assert replayed and (again.shard, again.seq) == (last.shard, last.seq)
    assert len(await all_entries(rig.budget, month_of(rig.clock.now()), 500)) == whole + 1
    # an unkeyed amount goes to a shard with room
    entry, _ = await rig.budget.record(ctx(), {"amount": MAX_AMOUNT})
    assert (await rig.budget.totals(ctx()))[0]["*"] == share + MAX_AMOUNT
    assert entry.shard != 5 or entry.month_totals["*"] <= share


async def test_a_full_ledger_holds_exactly_max_total_and_refuses_every_amount_but_zero() -> None:
    rig = await safety_rig(MemoryItemStore())
    share = rig.budget.shard_max_total
    whole = int(share // MAX_AMOUNT)
    for _ in range(SHARDS * whole):  # unkeyed: each shard fills, then the others take the rest
        await rig.budget.record(ctx(), {"amount": MAX_AMOUNT})
    for _ in range(SHARDS):
        await rig.budget.record(ctx(), {"amount": share - whole * MAX_AMOUNT})
    month, _ = await rig.budget.totals(ctx())
    assert month["*"] == MAX_TOTAL
    results = await asyncio.gather(
        *(rig.budget.record(ctx(), {"amount": a}) for a in (0.25, 1e-3, MAX_AMOUNT) * 4),
        return_exceptions=True,
    )
    assert all(isinstance(r, NorthstarError) and r.code == "budget.invalid_request" for r in results)
    zero, replayed = await rig.budget.record(ctx(), {"amount": 0})
    assert not replayed and zero.amount == 0
    assert (await rig.budget.totals(ctx()))[0]["*"] == MAX_TOTAL


class _CountingReads(MemoryItemStore):
    """Counts reads of ledger partitions (a real memory store; nothing is faked)."""

    ledger_reads = 0

    async def query(self, partition: str, prefix: str, **kw: Any) -> Any:
        if "|budget|" in partition:
            self.ledger_reads += 1
        return await super().query(partition, prefix, **kw)


async def test_a_remembered_last_entry_saves_the_read_and_a_stale_one_costs_a_retry_not_a_total() -> None:
    store = _CountingReads()
    rig = await safety_rig(store)
    one = ledger(rig, 1)  # one shard, so the two "processes" write the same head
    other = BudgetLedger(rig.budget.registry, rig.budget.cursors, rig.clock, rig.spine, shards=1)
    await one.record(ctx(), {"amount": 1.0})
    reads = store.ledger_reads
    await one.record(ctx(), {"amount": 2.0})  # its own last entry is the head: no read
    assert store.ledger_reads == reads
    await other.record(ctx(), {"amount": 4.0})  # another process moves the head
    await one.record(ctx(), {"amount": 8.0})  # stale: the check fails, the shard is read again
    assert store.ledger_reads > reads
    reads = store.ledger_reads
    await one.record(ctx(), {"amount": 16.0})  # a shard found contended is read before appending
    assert store.ledger_reads > reads
    entries = await all_entries(one, month_of(rig.clock.now()), 10)
    assert [(e.seq, e.amount) for e in entries] == [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)]
    assert entries[-1].month_totals == {"*": 31.0}
    assert (await one.totals(ctx()))[0] == {"*": 31.0}
