"""The gate chain agrees with a tiny reference model of the six gates on random policy states."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.suite.spine import safety_rig
from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext

ACTION = "fire"


def ctx(user: str = "u_admin", role: str = "admin") -> RequestContext:
    return RequestContext(tenant_id="t_m", mode="lab", user_id=user, roles=(role,), run_id="r1")


world = st.fixed_dictionaries(
    {
        "tenant_blocked": st.booleans(),
        "blocked_action": st.booleans(),
        "blocked_provider": st.booleans(),
        "dangerous": st.booleans(),
        "licence": st.sampled_from(["none", "active", "revoked", "expired"]),
        "lock_rule": st.booleans(),
        "lock": st.sampled_from(["none", "pending", "approved", "expired", "rejected"]),
        "limit": st.none() | st.integers(0, 20),
        "spent": st.integers(0, 20),
        "cost": st.integers(0, 10),
        "kpi": st.none() | st.integers(-5, 5),
        "temperature": st.none() | st.integers(-5, 5),
    }
)


def model(w: dict[str, Any]) -> str:
    """The decision the spec demands, gate by gate, first block wins."""
    if w["tenant_blocked"]:
        return "gate.kill_switch.tenant_blocked"
    if w["blocked_provider"]:
        return "gate.kill_switch.provider_blocked"
    if w["blocked_action"]:
        return "gate.kill_switch.action_blocked"
    if w["dangerous"] and w["licence"] != "active":
        return {
            "none": "gate.firearms.licence_required",
            "revoked": "gate.firearms.licence_revoked",
            "expired": "gate.firearms.licence_expired",
        }[w["licence"]]
    if w["lock_rule"] and w["lock"] != "approved":
        return {
            "none": "gate.strategy_lock.lock_required",
            "pending": "gate.strategy_lock.pending_review",
            "expired": "gate.strategy_lock.lock_expired",
            "rejected": "gate.strategy_lock.lock_rejected",
        }[w["lock"]]
    if w["limit"] is not None and w["spent"] + w["cost"] > w["limit"]:
        return "gate.budget.limit_exceeded"
    if w["kpi"] is not None and not -2 <= w["kpi"] <= 2:
        return "gate.kpi.out_of_corridor"
    if w["temperature"] is not None and w["temperature"] > 1:
        return "gate.temperature.out_of_corridor"
    return "allow"


async def build_and_decide(w: dict[str, Any]) -> tuple[str, int, int]:
    rig = await safety_rig(MemoryItemStore())
    p = rig.policies
    await p.put_document(
        ctx(),
        "kill_switches",
        {
            "tenant_blocked": w["tenant_blocked"],
            "actions": [ACTION] if w["blocked_action"] else ["other"],
            "providers": ["prov"] if w["blocked_provider"] else [],
        },
        expected_version=0,
    )
    await p.put_document(
        ctx(),
        "firearms_grants",
        {"grants": [{"licence_type": "l1", "subject_type": "agent"}]},
        expected_version=0,
    )
    if w["dangerous"]:
        await p.put_document(
            ctx(),
            "firearms_policy",
            {"bindings": [{"action_name": ACTION, "licence_type": "l1"}]},
            expected_version=0,
        )
    if w["licence"] != "none":
        lic = await p.issue_licence(
            ctx(), {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1", "ttl_seconds": 100}
        )
        if w["licence"] == "revoked":
            await p.revoke_licence(ctx(), lic.licence_id)
    await p.put_document(
        ctx(),
        "strategy_lock_policy",
        {
            "rules": [{"action_name": ACTION}] if w["lock_rule"] else [],
            "required_approvals": 1,
        },
        expected_version=0,
    )
    if w["lock"] != "none":
        lock = await p.create_lock(ctx("u_req", "member"), {"action_name": ACTION, "ttl_seconds": 100})
        if w["lock"] in ("approved", "expired"):
            await p.review_lock(ctx(), lock.lock_id, "approve")
        if w["lock"] == "rejected":
            await p.review_lock(ctx(), lock.lock_id, "reject")
    if w["limit"] is not None:
        await p.put_document(
            ctx(), "budget_policy", {"limits": [{"period": "month", "limit": w["limit"]}]}, expected_version=0
        )
    if w["spent"]:
        await rig.budget.record(ctx(), {"amount": w["spent"]})
    await p.put_document(
        ctx(), "kpi_corridors", {"corridors": [{"parameter": "kpi", "min": -2, "max": 2}]}, expected_version=0
    )
    await p.put_document(
        ctx(),
        "temperature_corridors",
        {"corridors": [{"parameter": "temperature", "max": 1}]},
        expected_version=0,
    )
    if w["licence"] == "expired" or w["lock"] == "expired":
        rig.clock.advance(100)  # both were issued for 100 s
    params: dict[str, Any] = {"provider": "prov"}
    if w["kpi"] is not None:
        params["kpi"] = w["kpi"]
    if w["temperature"] is not None:
        params["temperature"] = w["temperature"]
    caller = ctx("u_agent", "member")
    try:
        await rig.gate.check(
            caller,
            action_name=ACTION,
            subject_type="agent",
            subject_id="a1",
            params=params,
            estimated_cost=w["cost"],
        )
        outcome = "allow"
    except NorthstarError as exc:
        outcome = exc.code
    safety = len((await rig.spine.list(caller, event_type="safety")).items)
    published = len((await rig.timeline.list(caller, "agent:a1")).items)
    return outcome, safety, published


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world)
def test_the_chain_matches_the_reference_model(w: dict[str, Any]) -> None:
    # An expired licence or lock is made by one 100 s clock jump, which expires everything issued
    # for 100 s: an active licence, and a lock whatever its review state (expiry wins over it).
    if "expired" in (w["licence"], w["lock"]):
        if w["licence"] == "active":
            w = {**w, "licence": "expired"}
        if w["lock"] in ("approved", "pending", "rejected"):
            w = {**w, "lock": "expired"}
    outcome, safety, published = asyncio.run(build_and_decide(w))
    assert outcome == model(w)
    assert (safety, published) == (1, 1)
