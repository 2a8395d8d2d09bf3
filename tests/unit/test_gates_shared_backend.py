"""Two engines ("processes") sharing one sqlite file: policy changes apply on the very next call,
and the spine keeps every decision across a restart under concurrent load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contracts.suite import make_registry
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.safety.actions import ActionRequest

SECRET = b"shared-backend-secret-0123456789"


def admin(user: str = "u_admin") -> RequestContext:
    return RequestContext(tenant_id="t_a", mode="lab", user_id=user, roles=("admin",), run_id="run1")


def agent() -> RequestContext:
    return RequestContext(tenant_id="t_a", mode="lab", user_id="u_agent", roles=("member",), run_id="run1")


async def open_engines(path: Path, clock: ManualClock, *, private: bool) -> Engines:
    store = SqliteItemStore(path, namespace="ns", private=private)
    return Engines(await make_registry(store), CursorCodec(SECRET), clock)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Engines, Engines, ManualClock]]:
    clock = ManualClock()
    a = await open_engines(tmp_path / "shared.sqlite3", clock, private=False)
    b = await open_engines(tmp_path / "shared.sqlite3", clock, private=True)
    yield a, b, clock
    await a.close()
    await b.close()


async def check(engines: Engines, **kw: Any) -> str:
    """``allow`` or the block code of one gate check made by ``engines``."""
    args: dict[str, Any] = {"action_name": "fire", "subject_type": "agent", "subject_id": "a1", **kw}
    try:
        await engines.gate.check(agent(), **args)
    except NorthstarError as exc:
        assert exc.http_status == 403, exc
        return exc.code
    return "allow"


async def put(engines: Engines, name: str, body: dict[str, Any]) -> None:
    doc = await engines.policies.get_document(admin(), name)
    await engines.policies.put_document(admin(), name, body, expected_version=doc.version)


async def test_revoking_a_licence_applies_to_the_other_process_at_once(pair: Any) -> None:
    a, b, _ = pair
    await put(a, "firearms_policy", {"bindings": [{"action_name": "fire", "licence_type": "l1"}]})
    await put(a, "firearms_grants", {"grants": [{"licence_type": "l1", "subject_type": "agent"}]})
    assert await check(b) == "gate.firearms.licence_required"
    lic = await a.policies.issue_licence(
        admin(), {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"}
    )
    assert await check(b) == "allow"
    await a.policies.revoke_licence(admin(), lic.licence_id)
    assert await check(b) == "gate.firearms.licence_revoked"


async def test_flipping_a_kill_switch_applies_to_the_other_process_at_once(pair: Any) -> None:
    a, b, _ = pair
    assert await check(b) == "allow"
    await put(a, "kill_switches", {"tenant_blocked": True})
    assert await check(b) == "gate.kill_switch.tenant_blocked"
    await put(a, "kill_switches", {"tenant_blocked": False})
    assert await check(b) == "allow"


async def test_an_expiring_lock_applies_to_the_other_process_at_once(pair: Any) -> None:
    a, b, clock = pair
    await put(a, "strategy_lock_policy", {"rules": [{"action_name": "fire"}], "required_approvals": 1})
    lock = await a.policies.create_lock(agent(), {"action_name": "fire", "ttl_seconds": 60})
    assert await check(b) == "gate.strategy_lock.pending_review"
    await a.policies.review_lock(admin(), lock.lock_id, "approve")
    assert await check(b) == "allow"
    clock.advance(60)
    assert await check(b) == "gate.strategy_lock.lock_expired"


async def test_lowering_a_budget_applies_to_the_other_process_at_once(pair: Any) -> None:
    a, b, _ = pair
    await put(a, "budget_policy", {"limits": [{"period": "month", "limit": 100}]})
    await b.budget.record(agent(), {"amount": 50})
    assert await check(b, estimated_cost=10) == "allow"
    await put(a, "budget_policy", {"limits": [{"period": "month", "limit": 55}]})
    assert await check(b, estimated_cost=10) == "gate.budget.limit_exceeded"
    await a.budget.record(agent(), {"amount": 1})
    assert await check(b, estimated_cost=4) == "allow"
    assert await check(b, estimated_cost=4.5) == "gate.budget.limit_exceeded"


async def test_every_decision_under_concurrent_load_is_replayable_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "spine.sqlite3"
    first = await open_engines(path, clock, private=False)

    async def handler(ctx: RequestContext, request: ActionRequest) -> Any:
        return {"ok": request.subject_id}

    first.actions.register("fire", handler)
    await put(first, "kill_switches", {"providers": ["blocked"]})
    n = 200

    async def one(i: int) -> str:
        body = {
            "action_name": "fire",
            "subject_type": "agent",
            "subject_id": f"a{i}",
            "estimated_cost": 0.5,
            "params": {"provider": "blocked" if i % 4 == 0 else "ok"},
        }
        try:
            return (await first.actions.execute(agent(), body))["decision"]["event_id"]
        except NorthstarError as exc:
            assert exc.code == "gate.kill_switch.provider_blocked", exc
            return str(exc.details["event_id"])

    decided = await asyncio.gather(*(one(i) for i in range(n)))
    await first.close()

    restarted = await open_engines(path, clock, private=True)
    try:
        events = []
        cursor = None
        while True:
            page = await restarted.spine.replay(agent(), "run1", cursor=cursor, limit=97)
            events += page.items
            cursor = page.next_cursor
            if not page.has_more:
                break
        safety = [e for e in events if e.event_type == "safety"]
        assert sorted(e.event_id for e in safety) == sorted(decided)
        assert len(safety) == n
        assert sum(e.payload["decision"] == "deny" for e in safety) == n // 4
        assert len([e for e in events if e.event_type == "budget"]) == n - n // 4
        assert [e.event_id for e in events] == sorted(e.event_id for e in events)
        usage = await restarted.budget.usage(agent())
        assert usage.total == 0.5 * (n - n // 4)
    finally:
        await restarted.close()
