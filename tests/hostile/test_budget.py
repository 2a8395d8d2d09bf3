"""No member can break the tenant's budget ledger.

Amounts are finite and at most ``MAX_AMOUNT`` per entry; a running total may not pass
``MAX_TOTAL``. Both are checked before the append, so a refused amount writes nothing — before
the fix, two amounts of 1e308 made the month's total infinite, stored as JSON null, and every
budget read, write and gate check of the tenant answered 500 until the month changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from northstar_core.bounds import MAX_AMOUNT, MAX_TOTAL
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.safety.actions import ActionOutcome, ActionRequest
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings
from tests.hostile.test_bounds import (
    ADMIN,
    MEMBER,
    assert_other_tenant_still_writes,
    assert_out_of_range,
    sqlite_app,
)

BAD_AMOUNTS = st.one_of(
    st.sampled_from([1e308, 1.7976931348623157e308, MAX_AMOUNT * 1.0000001, -1e-9, -1e308]),
    st.floats(min_value=MAX_AMOUNT * 1.000001, max_value=1.7976931348623157e308),
    st.floats(max_value=-1e-300, min_value=-1.7976931348623157e308),
    st.integers(min_value=int(MAX_AMOUNT) + 1, max_value=2**80),
)


@pytest.fixture(params=["memory", "sqlite"])
def http(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient[Any]]:
    app = create_app(make_settings(tmp_path)) if request.param == "memory" else sqlite_app(tmp_path)
    with TestClient(app=app) as client:
        yield client


def usage(client: TestClient[Any]) -> dict[str, Any]:
    resp = client.get("/budget/usage", headers=MEMBER)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def register_noop(client: TestClient[Any], cost: Any = None) -> None:
    engines: Engines = client.app.state.engines

    async def handler(ctx: RequestContext, request: ActionRequest) -> Any:
        return ActionOutcome(result={"ok": True}, cost=cost)

    engines.actions.register("noop", handler)


def test_the_issue_reproduction_two_huge_amounts_leave_the_ledger_working(http: TestClient[Any]) -> None:
    for _ in range(2):
        resp = http.post("/budget/usage", json={"amount": 1e308}, headers=MEMBER)
        details = assert_out_of_range(resp, "budget.invalid_request", "amount")
        assert details["max"] == MAX_AMOUNT
    assert (usage(http)["total"], usage(http)["items"]) == (0.0, [])
    # every budget read, write and the gate still work
    assert http.post("/budget/usage", json={"amount": 5}, headers=MEMBER).status_code == 201
    assert usage(http)["total"] == 5.0
    policy = {"limits": [{"period": "month", "limit": 10}], "expected_version": 0}
    assert http.put("/budget/policy", json=policy, headers=ADMIN).status_code == 201
    register_noop(http)
    action = {"action_name": "noop", "subject_type": "agent", "subject_id": "a1", "estimated_cost": 3}
    assert http.post("/actions/execute", json=action, headers=MEMBER).status_code == 200
    denied = http.post("/actions/execute", json={**action, "estimated_cost": 8}, headers=MEMBER)
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "gate.budget.limit_exceeded")
    assert usage(http)["total"] == 8.0
    assert_other_tenant_still_writes(http)


def test_out_of_range_amounts_are_422_and_write_nothing(http: TestClient[Any]) -> None:
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(amount=BAD_AMOUNTS)
    def attempt(amount: float) -> None:
        resp = http.post("/budget/usage", json={"amount": amount, "idempotency_key": "k1"}, headers=MEMBER)
        assert_out_of_range(resp, "budget.invalid_request", "amount")
        assert usage(http)["items"] == []

    attempt()
    # the refused key was never recorded: it is free for a real amount
    resp = http.post("/budget/usage", json={"amount": MAX_AMOUNT, "idempotency_key": "k1"}, headers=MEMBER)
    assert resp.status_code == 201, resp.text
    assert usage(http)["total"] == MAX_AMOUNT


def test_a_budget_limit_is_bounded_like_the_totals_it_is_compared_with(http: TestClient[Any]) -> None:
    too_big = {"limits": [{"period": "day", "limit": MAX_TOTAL * 2}], "expected_version": 0}
    assert_out_of_range(
        http.put("/budget/policy", json=too_big, headers=ADMIN), "budget.invalid_request", "limits[0].limit"
    )
    assert http.get("/budget/policy", headers=ADMIN).json()["version"] == 0
    edge = {"limits": [{"period": "day", "limit": MAX_TOTAL}], "expected_version": 0}
    assert http.put("/budget/policy", json=edge, headers=ADMIN).status_code == 201


def test_an_estimated_cost_out_of_range_runs_nothing_and_records_nothing(http: TestClient[Any]) -> None:
    register_noop(http)
    action = {"action_name": "noop", "subject_type": "agent", "subject_id": "a1", "estimated_cost": 1e308}
    resp = http.post("/actions/execute", json=action, headers=MEMBER)
    assert_out_of_range(resp, "actions.invalid_request", "estimated_cost")
    assert usage(http)["items"] == []
    events = http.get("/events/list", params={"event_type": "safety"}, headers=MEMBER).json()["items"]
    assert events == []  # not even a gate decision


def test_a_handler_reporting_an_absurd_cost_is_charged_one_maximal_amount(http: TestClient[Any]) -> None:
    register_noop(http, cost=1e308)
    action = {"action_name": "noop", "subject_type": "agent", "subject_id": "a1", "estimated_cost": 1}
    resp = http.post("/actions/execute", json=action, headers=MEMBER)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["amount"] == MAX_AMOUNT
    assert usage(http)["total"] == MAX_AMOUNT


async def _entries(engines: Engines, ctx: RequestContext) -> int:
    count, cursor = 0, None
    while True:
        page = await engines.budget.usage(ctx, cursor=cursor, limit=500)
        count += len(page.items)
        assert page.total <= MAX_TOTAL
        if not page.has_more:
            return count
        cursor = page.next_cursor


async def test_a_total_that_would_pass_the_bound_is_refused_before_the_append(
    engines: Engines,
) -> None:
    ctx = RequestContext(tenant_id="t_full", mode="lab", user_id="u_alice", roles=("member",))
    # Each of the ledger's shards holds at most MAX_TOTAL / shards: whole amounts up to that,
    # then the rest of each shard's share, so the tenant's total reaches MAX_TOTAL exactly.
    shards, share = engines.budget.shards, engines.budget.shard_max_total
    whole = int(share // MAX_AMOUNT)
    entries = shards * (whole + 1)
    first, _ = await engines.budget.record(ctx, {"amount": MAX_AMOUNT, "idempotency_key": "first"})
    for _ in range(shards * whole - 1):  # unkeyed: a full shard's amount goes to one with room
        await engines.budget.record(ctx, {"amount": MAX_AMOUNT})
    for _ in range(shards):
        await engines.budget.record(ctx, {"amount": share - whole * MAX_AMOUNT})
    month, _ = await engines.budget.totals(ctx)
    assert month["*"] == MAX_TOTAL
    for amount in (1.0, 1e-3, MAX_AMOUNT):
        with pytest.raises(NorthstarError) as info:
            await engines.budget.record(ctx, {"amount": amount, "surface_id": "s1"})
        err = info.value
        assert (err.code, err.http_status, err.details["field"]) == ("budget.invalid_request", 422, "amount")
    assert await _entries(engines, ctx) == entries  # nothing was appended
    # a zero amount still records, and a retry of an entry recorded before the ledger filled
    # up is still answered as the replay it is
    zero, replayed = await engines.budget.record(ctx, {"amount": 0})
    assert (zero.amount, replayed) == (0, False)
    assert await _entries(engines, ctx) == entries + 1
    again, replayed = await engines.budget.record(ctx, {"amount": MAX_AMOUNT, "idempotency_key": "first"})
    assert ((again.shard, again.seq), replayed) == ((first.shard, first.seq), True)
    # concurrent recorders at the bound: every one is refused, none slips past it
    results = await asyncio.gather(
        *(engines.budget.record(ctx, {"amount": 1.0}) for _ in range(8)), return_exceptions=True
    )
    assert all(isinstance(r, NorthstarError) and r.http_status == 422 for r in results)
    assert (await engines.budget.totals(ctx))[0]["*"] == MAX_TOTAL
