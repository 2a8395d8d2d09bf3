"""The gate chain: every gate through allow and each block reason, each decision recorded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from contracts.suite import make_registry
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.tail import TailHub
from northstar_core.safety.budget import BudgetLedger
from northstar_core.safety.gates import GateChain
from northstar_core.safety.policies import PolicyStores
from northstar_core.spine import EventSpine
from northstar_core.timeline import Timeline

SECRET = b"gate-test-secret-0123456789abcdef"


def ctx(user: str = "admin1", role: str = "admin", tenant: str = "t_a", **kw: Any) -> RequestContext:
    return RequestContext(
        tenant_id=tenant, mode="lab", user_id=user, roles=(role,), run_id="run1", step_id="s1",
        request_id="req", **kw,
    )


@dataclass
class Safety:
    clock: ManualClock
    spine: EventSpine
    policies: PolicyStores
    budget: BudgetLedger
    timeline: Timeline
    gate: GateChain


@pytest.fixture
async def safety() -> Safety:
    registry = await make_registry(MemoryItemStore())
    clock = ManualClock()
    codec = CursorCodec(SECRET)
    spine = EventSpine(registry, codec, clock=clock)
    policies = PolicyStores(registry, clock, spine)
    budget = BudgetLedger(registry, codec, clock, spine)
    timeline = Timeline(registry, codec, clock, tails=TailHub())
    gate = GateChain(policies, budget, spine, clock, timeline)
    return Safety(clock, spine, policies, budget, timeline, gate)


async def put(s: Safety, name: str, body: dict[str, Any]) -> None:
    current = await s.policies.get_document(ctx(), name)
    await s.policies.put_document(ctx(), name, body, expected_version=current.version)


async def licence(s: Safety, **kw: Any) -> str:
    await put(s, "firearms_policy", {"bindings": [{"action_name": "fire", "licence_type": "l1"}]})
    await put(s, "firearms_grants", {"grants": [{"licence_type": "l1", "subject_type": "agent"}]})
    lic = await s.policies.issue_licence(
        ctx(), {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1", **kw}
    )
    return lic.licence_id


async def lock(s: Safety, approvals: int, *, reject: bool = False, ttl: float | None = None) -> str:
    await put(s, "strategy_lock_policy", {"rules": [{"action_name": "fire"}], "required_approvals": 2})
    body: dict[str, Any] = {"action_name": "fire"}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    made = await s.policies.create_lock(ctx("requester", "member"), body)
    for i in range(approvals):
        await s.policies.review_lock(ctx(f"reviewer{i}"), made.lock_id, "approve")
    if reject:
        await s.policies.review_lock(ctx("reviewer9"), made.lock_id, "reject")
    return made.lock_id


Setup = Callable[[Safety], Awaitable[Any]]


async def nothing(s: Safety) -> None:
    return None


async def ks_tenant(s: Safety) -> None:
    await put(s, "kill_switches", {"tenant_blocked": True, "reason": "incident"})


async def ks_provider(s: Safety) -> None:
    await put(s, "kill_switches", {"providers": ["openai"]})


async def ks_action(s: Safety) -> None:
    await put(s, "kill_switches", {"actions": ["fire"]})


async def ks_other_action(s: Safety) -> None:
    await put(s, "kill_switches", {"actions": ["other"], "providers": ["other"]})


async def fa_required(s: Safety) -> None:
    await put(s, "firearms_policy", {"bindings": [{"action_name": "fire", "licence_type": "l1"}]})


async def fa_licensed(s: Safety) -> None:
    await licence(s)


async def fa_revoked(s: Safety) -> None:
    await s.policies.revoke_licence(ctx(), await licence(s), reason="misuse")


async def fa_expired(s: Safety) -> None:
    await licence(s, ttl_seconds=60)
    s.clock.advance(61)


async def fa_other_type(s: Safety) -> None:
    await licence(s)
    await put(s, "firearms_policy", {"bindings": [{"action_name": "fire", "licence_type": "l2"}]})


async def sl_required(s: Safety) -> None:
    await put(s, "strategy_lock_policy", {"rules": [{"action_name": "fire"}]})


async def sl_pending(s: Safety) -> None:
    await lock(s, approvals=1)


async def sl_approved(s: Safety) -> None:
    await lock(s, approvals=2)


async def sl_expired(s: Safety) -> None:
    await lock(s, approvals=2, ttl=30)
    s.clock.advance(31)


async def sl_rejected(s: Safety) -> None:
    await lock(s, approvals=1, reject=True)


async def sl_surface_rule_other_surface(s: Safety) -> None:
    await put(s, "strategy_lock_policy", {"rules": [{"surface_id": "surf9"}]})


async def bu_exceeded(s: Safety) -> None:
    await put(s, "budget_policy", {"limits": [{"period": "day", "limit": 10}]})
    await s.budget.record(ctx(), {"amount": 8})


async def bu_within(s: Safety) -> None:
    await put(s, "budget_policy", {"limits": [{"period": "month", "limit": 10}]})
    await s.budget.record(ctx(), {"amount": 7})


async def bu_surface(s: Safety) -> None:
    await put(s, "budget_policy", {"limits": [{"period": "month", "limit": 1, "surface_id": "surf1"}]})


async def kpi(s: Safety) -> None:
    await put(s, "kpi_corridors", {"corridors": [{"parameter": "ctr", "min": 0.1, "max": 0.9}]})


async def temp(s: Safety) -> None:
    await put(s, "temperature_corridors", {"corridors": [{"parameter": "temperature", "max": 1.0}]})


async def kill_and_firearms(s: Safety) -> None:
    await fa_required(s)
    await ks_action(s)


CASES: list[tuple[str, Setup, dict[str, Any], tuple[str, str] | None]] = [
    ("no policy allows", nothing, {}, None),
    ("kill switch: tenant", ks_tenant, {}, ("kill_switch", "gate.kill_switch.tenant_blocked")),
    ("kill switch: provider", ks_provider, {"params": {"provider": "openai"}},
     ("kill_switch", "gate.kill_switch.provider_blocked")),
    ("kill switch: action", ks_action, {}, ("kill_switch", "gate.kill_switch.action_blocked")),
    ("kill switch: others pass", ks_other_action, {"params": {"provider": "openai"}}, None),
    ("firearms: licence required", fa_required, {}, ("firearms", "gate.firearms.licence_required")),
    ("firearms: licensed", fa_licensed, {}, None),
    ("firearms: revoked", fa_revoked, {}, ("firearms", "gate.firearms.licence_revoked")),
    ("firearms: expired", fa_expired, {}, ("firearms", "gate.firearms.licence_expired")),
    ("firearms: wrong licence type", fa_other_type, {}, ("firearms", "gate.firearms.licence_required")),
    ("strategy lock: required", sl_required, {}, ("strategy_lock", "gate.strategy_lock.lock_required")),
    ("strategy lock: pending", sl_pending, {}, ("strategy_lock", "gate.strategy_lock.pending_review")),
    ("strategy lock: approved", sl_approved, {}, None),
    ("strategy lock: expired", sl_expired, {}, ("strategy_lock", "gate.strategy_lock.lock_expired")),
    ("strategy lock: rejected", sl_rejected, {}, ("strategy_lock", "gate.strategy_lock.lock_rejected")),
    ("strategy lock: other surface", sl_surface_rule_other_surface, {"surface_id": "surf1"}, None),
    ("budget: exceeded", bu_exceeded, {"estimated_cost": 3}, ("budget", "gate.budget.limit_exceeded")),
    ("budget: within", bu_within, {"estimated_cost": 3}, None),
    ("budget: surface limit", bu_surface, {"estimated_cost": 2, "surface_id": "surf1"},
     ("budget", "gate.budget.limit_exceeded")),
    ("budget: other surface", bu_surface, {"estimated_cost": 2, "surface_id": "surf2"}, None),
    ("kpi: out of corridor", kpi, {"params": {"ctr": 0.95}}, ("kpi", "gate.kpi.out_of_corridor")),
    ("kpi: not numeric", kpi, {"params": {"ctr": "high"}}, ("kpi", "gate.kpi.out_of_corridor")),
    ("kpi: inside", kpi, {"params": {"ctr": 0.5}}, None),
    ("temperature: out", temp, {"params": {"temperature": 1.5}},
     ("temperature", "gate.temperature.out_of_corridor")),
    ("temperature: inside", temp, {"params": {"temperature": 0.7}}, None),
    ("first block wins", kill_and_firearms, {}, ("kill_switch", "gate.kill_switch.action_blocked")),
]


@pytest.mark.parametrize(("name", "setup", "request_kw", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_each_gate_allows_or_blocks_and_records_the_decision(
    safety: Safety, name: str, setup: Setup, request_kw: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    await setup(safety)
    caller = ctx("agent-user", "member")
    kw: dict[str, Any] = {"action_name": "fire", "subject_type": "agent", "subject_id": "a1", **request_kw}
    if expected is None:
        decision = await safety.gate.check(caller, **kw)
        assert decision["decision"] == "allow"
    else:
        with pytest.raises(NorthstarError) as info:
            await safety.gate.check(caller, **kw)
        assert (info.value.http_status, info.value.gate, info.value.code) == (403, *expected)
        assert info.value.envelope()["error"]["gate"] == expected[0]
    recorded = (await safety.spine.list(caller, event_type="safety")).items
    assert len(recorded) == 1
    payload = recorded[0].payload
    assert payload["decision"] == ("allow" if expected is None else "deny")
    assert payload["gate"] == (expected[0] if expected else None)
    assert payload["code"] == (expected[1] if expected else None)
    assert set(payload["policy_versions"]) >= {"kill_switches"}
    published = (await safety.timeline.list(caller, "agent:a1")).items
    assert [e.type for e in published] == ["safety_decision"]
    assert published[0].data["event_id"] == recorded[0].event_id
    assert published[0].data["code"] == payload["code"]


async def test_the_decision_records_the_version_of_every_policy_read(safety: Safety) -> None:
    await put(safety, "kill_switches", {"actions": []})
    await put(safety, "kill_switches", {"actions": ["x"]})
    decision = await safety.gate.check(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    assert decision["policy_versions"] == {
        "kill_switches": 2, "firearms_policy": 0, "strategy_lock_policy": 0, "budget_policy": 0,
        "kpi_corridors": 0, "temperature_corridors": 0,
    }


class _BrokenSpine(EventSpine):
    async def record(self, *args: Any, **kwargs: Any) -> Any:
        raise NorthstarError("event_spine.backend_unavailable", "down", 503)


async def test_no_decision_without_the_spine_recording_it(safety: Safety) -> None:
    broken = _BrokenSpine(safety.spine.registry, safety.spine.cursors)
    gate = GateChain(safety.policies, safety.budget, broken, safety.clock, safety.timeline)
    with pytest.raises(NorthstarError) as info:
        await gate.check(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    assert (info.value.http_status, info.value.code) == (503, "gate.decision_unrecorded")
    assert info.value.details["cause"] == "event_spine.backend_unavailable"
    # The stream is written at the same time as the spine: it may carry the notification of a
    # decision whose action did not run, never a spine event that exists.
    for event in (await safety.timeline.list(ctx(), "agent:a1")).items:
        assert await safety.spine.get(ctx(), event.data["event_id"]) is None


class _BrokenStreams(Timeline):
    async def publish(self, *args: Any, **kwargs: Any) -> str:
        raise NorthstarError("event_stream.backend_unavailable", "down", 503)


async def test_an_allow_the_stream_did_not_get_does_not_run_and_a_deny_stays_a_deny(safety: Safety) -> None:
    broken = _BrokenStreams(safety.spine.registry, safety.spine.cursors, safety.clock, tails=TailHub())
    gate = GateChain(safety.policies, safety.budget, safety.spine, safety.clock, broken)
    with pytest.raises(NorthstarError) as info:
        await gate.check(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    assert (info.value.http_status, info.value.code) == (503, "gate.decision_unrecorded")
    assert info.value.details["cause"] == "event_stream.backend_unavailable"
    await put(safety, "kill_switches", {"actions": ["fire"]})
    with pytest.raises(NorthstarError) as info:
        await gate.check(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    assert (info.value.http_status, info.value.code) == (403, "gate.kill_switch.action_blocked")
    recorded = (await safety.spine.list(ctx(), event_type="safety")).items
    assert [e.payload["decision"] for e in recorded] == ["allow", "deny"]
    assert info.value.details["event_id"] == recorded[1].event_id


async def test_prepare_reads_and_writes_nothing_then_decide_records(safety: Safety) -> None:
    await put(safety, "kill_switches", {"actions": ["other"]})
    prepared = await safety.gate.prepare(
        ctx(), action_name="fire", subject_type="agent", subject_id="a1", params={"k": 1}
    )
    assert (await safety.spine.list(ctx(), event_type="safety")).items == []
    assert (prepared.licences, prepared.locks, prepared.totals) == (None, None, None)
    decision = await safety.gate.decide(prepared)
    assert decision["decision"] == "allow" and decision["policy_versions"]["kill_switches"] == 1
    (event,) = (await safety.spine.list(ctx(), event_type="safety")).items
    assert event.event_id == decision["event_id"]
    (published,) = (await safety.timeline.list(ctx(), "agent:a1")).items
    assert published.data == {**event.payload, "event_id": event.event_id}
    assert decision["stream_cursor"] == published.event_id


async def test_an_unpublished_allow_is_on_the_spine_only_and_comes_with_its_stream_event(
    safety: Safety,
) -> None:
    prepared = await safety.gate.prepare(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    decision, event = await safety.gate.decide_unpublished(prepared)
    (recorded,) = (await safety.spine.list(ctx(), event_type="safety")).items
    assert (decision["decision"], decision["event_id"]) == ("allow", recorded.event_id)
    assert "stream_cursor" not in decision
    assert (await safety.timeline.list(ctx(), "agent:a1")).items == []
    assert event is not None
    assert (event.stream_id, event.type, event.idempotency_key) == (
        "agent:a1", "safety_decision", f"safety-{recorded.event_id}"
    )
    assert event.data == {**recorded.payload, "event_id": recorded.event_id} == decision


async def test_an_unpublished_deny_is_still_recorded_published_and_raised(safety: Safety) -> None:
    await put(safety, "kill_switches", {"actions": ["fire"]})
    prepared = await safety.gate.prepare(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    with pytest.raises(NorthstarError) as info:
        await safety.gate.decide_unpublished(prepared)
    assert info.value.code == "gate.kill_switch.action_blocked"
    (recorded,) = (await safety.spine.list(ctx(), event_type="safety")).items
    (published,) = (await safety.timeline.list(ctx(), "agent:a1")).items
    assert published.data == {**recorded.payload, "event_id": recorded.event_id}


async def test_prepare_reads_only_what_the_documents_call_for(safety: Safety) -> None:
    await licence(safety)
    await put(safety, "budget_policy", {"limits": [{"period": "day", "limit": 10}]})
    prepared = await safety.gate.prepare(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    assert prepared.licences is not None and len(prepared.licences) == 1
    assert (prepared.locks, prepared.totals) == (None, ({}, {}))
    await put(safety, "kill_switches", {"tenant_blocked": True})
    blocked = await safety.gate.prepare(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    assert (blocked.licences, blocked.locks, blocked.totals) == (None, None, None)
    with pytest.raises(NorthstarError) as info:
        await safety.gate.decide(blocked)
    assert info.value.details["policy_versions"] == {"kill_switches": 1}


async def test_a_dry_run_returns_its_deny_and_publishes_nothing(safety: Safety) -> None:
    await put(safety, "kill_switches", {"actions": ["fire"]})
    prepared = await safety.gate.prepare(ctx(), action_name="fire", subject_type="agent", subject_id="a1")
    decision = await safety.gate.decide(prepared, dry_run=True)
    assert (decision["decision"], decision["dry_run"]) == ("deny", True)
    assert "stream_cursor" not in decision
    assert (await safety.timeline.list(ctx(), "agent:a1")).items == []


@pytest.mark.parametrize(
    "kw",
    [
        {"action_name": "bad name"},
        {"subject_id": ""},
        {"estimated_cost": -1},
        {"estimated_cost": float("nan")},
        {"estimated_cost": 1e308},
        {"surface_id": "bad/surface"},
        {"subject_id": "a1\n"},
        # ("agent:x", "a1") would share the subject stream "agent:x:a1" with ("agent", "x:a1")
        {"subject_type": "agent:x"},
    ],
)
async def test_malformed_checks_are_422_and_record_nothing(safety: Safety, kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"action_name": "fire", "subject_type": "agent", "subject_id": "a1", **kw}
    with pytest.raises(NorthstarError) as info:
        await safety.gate.check(ctx(), **args)
    assert info.value.http_status == 422
    assert (await safety.spine.list(ctx())).items == []


def test_nothing_outside_the_policy_stores_lists_dangerous_actions() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for package in ("northstar_core", "northstar_http", "northstar_adapters")
        for path in (root / package).rglob("*.py")
        if "DANGEROUS_ACTIONS" in path.read_text() or "DANGEROUS =" in path.read_text()
    ]
    assert offenders == []
