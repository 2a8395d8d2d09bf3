"""The budget ledger: running totals per month/day and surface match a reference model."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts.suite.spine import safety_rig
from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.safety.budget import day_of, month_of


def ctx(tenant: str = "t_a") -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u1", roles=("member",))


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.rig = self.loop.run_until_complete(safety_rig(MemoryItemStore()))
        self.spent: dict[tuple[str, str], float] = defaultdict(float)  # (period key, surface|*) -> sum
        self.entries = 0
        self.count: dict[str, int] = defaultdict(int)  # entries per day

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @rule(amount=st.integers(0, 1000).map(lambda c: c / 4), surface=st.sampled_from([None, "s1", "s2"]))
    def record(self, amount: float, surface: str | None) -> None:
        body: dict[str, Any] = {"amount": amount}
        if surface:
            body["surface_id"] = surface
        self.run(self.rig.budget.record(ctx(), body))
        now = self.rig.clock.now()
        for period in (month_of(now), day_of(now)):
            self.spent[(period, "*")] += amount
            if surface:
                self.spent[(period, surface)] += amount
        self.entries += 1
        self.count[day_of(now)] += 1

    @rule(hours=st.sampled_from([1, 7, 30, 24 * 20]))
    def time_passes(self, hours: int) -> None:
        self.rig.clock.advance(hours * 3600)

    @invariant()
    def totals_match(self) -> None:
        now = self.rig.clock.now()
        for surface in (None, "s1", "s2"):
            key = surface or "*"
            month = self.run(self.rig.budget.spend(ctx(), "month", surface))
            day = self.run(self.rig.budget.spend(ctx(), "day", surface))
            assert month == self.spent.get((month_of(now), key), 0.0)
            assert day == self.spent.get((day_of(now), key), 0.0)
        page = self.run(self.rig.budget.usage(ctx(), day_of(now), limit=500))
        assert page.total == self.spent.get((day_of(now), "*"), 0.0)
        for day in [d for d in self.count if d.startswith(month_of(now))]:  # past days too
            items: list[Any] = []
            cursor = None
            while True:
                page = self.run(self.rig.budget.usage(ctx(), day, cursor=cursor, limit=3))
                items += page.items
                cursor = page.next_cursor
                if not page.has_more:
                    break
            assert page.total == self.spent[(day, "*")]
            surfaces = {k: v for (d, k), v in self.spent.items() if d == day and k != "*"}
            assert page.by_surface == surfaces
            assert [e.day for e in items] == [day] * self.count[day]

    def teardown(self) -> None:
        self.loop.close()


TestLedgerModel = LedgerMachine.TestCase
TestLedgerModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


async def test_concurrent_records_lose_nothing() -> None:
    rig = await safety_rig(MemoryItemStore())
    await asyncio.gather(*(rig.budget.record(ctx(), {"amount": 1, "surface_id": "s1"}) for _ in range(50)))
    assert await rig.budget.spend(ctx(), "month", None) == 50
    page = await rig.budget.usage(ctx(), limit=500)
    assert len(page.items) == 50 and not page.has_more
    for shard in {e.shard for e in page.items}:  # each shard's sequence is gap-free
        assert sorted(e.seq for e in page.items if e.shard == shard) == list(
            range(1, 1 + sum(e.shard == shard for e in page.items))
        )
    assert (await rig.budget.usage(ctx("t_b"))).items == []


@pytest.mark.parametrize(
    "body", [{"amount": -1}, {"amount": float("inf")}, {"amount": 1, "surface_id": "a b"}, {}]
)
async def test_bad_usage_is_422_and_writes_nothing(body: dict[str, Any]) -> None:
    rig = await safety_rig(MemoryItemStore())
    with pytest.raises(NorthstarError) as info:
        await rig.budget.record(ctx(), body)
    assert (info.value.http_status, info.value.code) == (422, "budget.invalid_request")
    assert (await rig.budget.usage(ctx())).items == []
    assert (await rig.spine.list(ctx())).items == []


async def test_usage_pages_with_cursors_bound_to_tenant_and_period() -> None:
    rig = await safety_rig(MemoryItemStore())
    for i in range(5):  # a millisecond apart: entries are listed by time, then shard
        await rig.budget.record(ctx(), {"amount": i})
        rig.clock.advance(0.001)
    first = await rig.budget.usage(ctx(), limit=2)
    second = await rig.budget.usage(ctx(), cursor=first.next_cursor, limit=10)
    assert [e.amount for e in first.items + second.items] == [0, 1, 2, 3, 4]
    assert first.has_more and not second.has_more
    with pytest.raises(NorthstarError) as info:
        await rig.budget.usage(ctx("t_b"), cursor=first.next_cursor)
    assert info.value.code == "budget.cursor_invalid"


async def test_every_recorded_usage_is_a_budget_event_on_the_spine() -> None:
    rig = await safety_rig(MemoryItemStore())
    await rig.budget.record(ctx(), {"amount": 2, "idempotency_key": "k"})
    await rig.budget.record(ctx(), {"amount": 2, "idempotency_key": "k"})  # replay writes nothing
    events = (await rig.spine.list(ctx(), event_type="budget")).items
    assert [e.payload["usage"]["amount"] for e in events] == [2]
