"""Contracts of the event spine and the safety policy stores + gate chain, on every backend.

Each backend proves on its own storage: spine events are append-only with server-assigned
time-ordered ids, replayable per run in order and listable by type/source/time, never across a
tenant; policy documents are compare-and-set; licence revocations and kill switches are seen by
a second store object (a second process) on the very next check when the backend is shared;
every gate decision lands on the spine and the subject's stream; the budget ledger never loses
a concurrent amount.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from contracts.harness import BackendHarness
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.buckets import BUCKET_MS, DEFAULT_SHARDS, bucket_of, shard_of
from northstar_core.kernel.tail import TailHub
from northstar_core.safety.budget import BudgetLedger
from northstar_core.safety.gates import GateChain
from northstar_core.safety.policies import PolicyStores
from northstar_core.spine import EventSpine, spine_retention
from northstar_core.storage import ItemStore
from northstar_core.timeline import Timeline

SECRET = b"spine-contract-secret-0123456789"


def _ctx(
    tenant: str = "t_a", user: str = "u_admin", role: str = "admin", run: str = "run1"
) -> RequestContext:
    return RequestContext(
        tenant_id=tenant, mode="lab", user_id=user, roles=(role,), run_id=run, step_id="s1", request_id="r"
    )


@dataclass
class SafetyRig:
    spine: EventSpine
    policies: PolicyStores
    budget: BudgetLedger
    timeline: Timeline
    gate: GateChain
    clock: ManualClock


async def safety_rig(store: ItemStore, clock: ManualClock | None = None) -> SafetyRig:
    """Spine, policy stores, ledger, timeline and gate chain on one store (for contracts/tests)."""
    from contracts.suite import make_registry

    registry = await make_registry(store)
    clock = clock or ManualClock()
    codec = CursorCodec(SECRET)
    spine = EventSpine(registry, codec, clock=clock)
    policies = PolicyStores(registry, clock, spine)
    budget = BudgetLedger(registry, codec, clock, spine)
    timeline = Timeline(registry, codec, clock, tails=TailHub())
    gate = GateChain(policies, budget, spine, clock, timeline)
    return SafetyRig(spine, policies, budget, timeline, gate, clock)


async def _put(rig: SafetyRig, name: str, body: dict[str, Any]) -> None:
    doc = await rig.policies.get_document(_ctx(), name)
    await rig.policies.put_document(_ctx(), name, body, expected_version=doc.version)


async def _decide(rig: SafetyRig, **kw: Any) -> str:
    args: dict[str, Any] = {"action_name": "fire", "subject_type": "agent", "subject_id": "a1", **kw}
    try:
        await rig.gate.check(_ctx(user="u_agent", role="member"), **args)
    except NorthstarError as exc:
        return exc.code
    return "allow"


class SpineContract:
    async def test_spine_events_get_server_fields_and_replay_in_order(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        appended = []
        for i in range(5):
            appended.append(
                await rig.spine.append(_ctx(), {"event_type": "rl", "source": "agent", "payload": {"i": i}})
            )
            rig.clock.advance(0.001)
        assert all(e.route.startswith("event_spine:") and e.tenant_id == "t_a" for e in appended)
        page = await rig.spine.replay(_ctx(), "run1", limit=3)
        rest = await rig.spine.replay(_ctx(), "run1", cursor=page.next_cursor)
        assert [e.event_id for e in page.items + rest.items] == [e.event_id for e in appended]
        assert [e.payload["i"] for e in page.items + rest.items] == list(range(5))
        assert page.has_more and not rest.has_more

    async def test_spine_lists_by_type_source_and_time(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        a = await rig.spine.append(_ctx(), {"event_type": "analytics", "source": "ui"})
        rig.clock.advance(5)
        b = await rig.spine.append(_ctx(), {"event_type": "analytics", "source": "agent"})
        rig.clock.advance(5)
        c = await rig.spine.append(_ctx(), {"event_type": "tuning", "source": "agent"})
        ids = lambda page: [e.event_id for e in page.items]  # noqa: E731
        assert ids(await rig.spine.list(_ctx(), event_type="analytics")) == [a.event_id, b.event_id]
        assert ids(await rig.spine.list(_ctx(), source="agent")) == [b.event_id, c.event_id]
        assert ids(await rig.spine.list(_ctx(), event_type="analytics", source="ui")) == [a.event_id]
        assert ids(await rig.spine.list(_ctx(), since=b.timestamp, until=c.timestamp)) == [b.event_id]

    async def test_spine_reads_and_cursors_stay_in_their_tenant(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        for _ in range(2):
            await rig.spine.append(_ctx("t_a"), {"event_type": "rl", "source": "agent"})
        assert (await rig.spine.replay(_ctx("t_b"), "run1")).items == []
        assert (await rig.spine.list(_ctx("t_b"))).items == []
        page = await rig.spine.replay(_ctx("t_a"), "run1", limit=1)
        with pytest.raises(NorthstarError) as info:
            await rig.spine.replay(_ctx("t_b"), "run1", cursor=page.next_cursor)
        assert (info.value.http_status, info.value.code) == (410, "event_spine.cursor_invalid")

    async def test_spine_keeps_every_concurrent_append(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        made = await asyncio.gather(
            *(
                rig.spine.append(_ctx(), {"event_type": "rl", "source": "agent", "payload": {"i": i}})
                for i in range(20)
            )
        )
        stored = (await rig.spine.replay(_ctx(), "run1", limit=100)).items
        assert sorted(e.event_id for e in made) == [e.event_id for e in stored]

    async def test_spine_events_are_visible_to_a_peer_when_shared(self, harness: BackendHarness) -> None:
        store = await harness.open()
        rig = await safety_rig(store)
        peer = await safety_rig(await harness.open_peer())
        event = await rig.spine.append(_ctx(), {"event_type": "rl", "source": "agent"})
        seen = [e.event_id for e in (await peer.spine.replay(_ctx(), "run1")).items]
        assert seen == ([event.event_id] if store.capabilities.shared else [])


    async def test_spine_takes_a_caller_made_id_once(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        event_id = rig.spine.new_event_id()
        event = await rig.spine.record(_ctx(), "safety", {"n": 1}, event_id=event_id)
        assert event.event_id == event_id and await rig.spine.get(_ctx(), event_id) == event
        with pytest.raises(NorthstarError) as info:
            await rig.spine.record(_ctx(), "safety", {"n": 2}, event_id=event_id)
        assert info.value.code == "event_spine.contention"

    async def test_spine_events_are_stored_with_their_types_expiry(self, harness: BackendHarness) -> None:
        from contracts.suite import make_registry

        store = await harness.open()
        clock = ManualClock()  # ahead of the backend's clock: nothing written here has expired
        retention = spine_retention({"note.*": 30, "*": 3650})
        spine = EventSpine(await make_registry(store), CursorCodec(SECRET), clock=clock, retention=retention)
        note = await spine.append(_ctx(), {"event_type": "note.saved", "source": "agent"})
        other = await spine.append(_ctx(), {"event_type": "rl", "source": "agent"})
        bucket = bucket_of(note.event_id)
        partition = f"t_a|lab|spine|{bucket}|{shard_of('run1', DEFAULT_SHARDS):02d}"
        stored = {item.key: item.expires_at for item in await store.query(partition, "", limit=10)}
        day = 86_400
        assert stored == {
            f"ev#{note.event_id}": clock.now() + 30 * day,
            f"er#run1#{note.event_id}": clock.now() + 30 * day,
            f"ev#{other.event_id}": clock.now() + 3650 * day,
            f"er#run1#{other.event_id}": clock.now() + 3650 * day,
        }
        # the hour's directory entry was raised to outlive its longest-lived event
        hour = BUCKET_MS // 1000
        entry = await store.get("t_a|lab|spine|buckets", f"b#{bucket}")
        assert entry is not None and entry.expires_at == -(-(clock.now() + 3650 * day) // hour) * hour
        assert [e.event_id for e in (await spine.list(_ctx())).items] == [note.event_id, other.event_id]


class SafetyContract:
    async def test_every_policy_document_comes_back_from_one_read(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        bodies: dict[str, dict[str, Any]] = {
            "kill_switches": {"actions": ["x"]},
            "kpi_corridors": {"corridors": [{"parameter": "ctr", "max": 1}]},
            "temperature_corridors": {"corridors": [{"parameter": "t", "min": 0}]},
            "firearms_policy": {"bindings": [{"action_name": "fire", "licence_type": "l1"}]},
            "firearms_grants": {"grants": [{"licence_type": "l1", "subject_type": "agent"}]},
            "strategy_lock_policy": {"required_approvals": 2},
            "budget_policy": {"limits": [{"period": "day", "limit": 5}]},
        }
        for name, body in bodies.items():
            await _put(rig, name, body)
        await _put(rig, "kill_switches", {"actions": ["y"]})
        policies = await rig.policies.read_all(_ctx())
        assert policies.versions == {name: 2 if name == "kill_switches" else 1 for name in bodies}
        assert policies.kill_switches.actions == ["y"]
        assert policies.strategy_lock_policy.required_approvals == 2
        assert (await rig.policies.read_all(_ctx("t_b"))).versions == dict.fromkeys(bodies, 0)

    async def test_policy_documents_are_compare_and_set(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        doc = await rig.policies.put_document(_ctx(), "kill_switches", {"actions": ["x"]}, expected_version=0)
        assert doc.version == 1
        with pytest.raises(NorthstarError) as info:
            await rig.policies.put_document(_ctx(), "kill_switches", {"actions": []}, expected_version=0)
        assert (info.value.http_status, info.value.details["current_version"]) == (409, 1)
        doc = await rig.policies.put_document(_ctx(), "kill_switches", {"actions": []}, expected_version=1)
        assert (await rig.policies.get_document(_ctx(), "kill_switches")).version == 2
        assert (await rig.policies.get_document(_ctx("t_b"), "kill_switches")).version == 0

    async def test_every_decision_is_on_the_spine_and_the_subject_stream(
        self, harness: BackendHarness
    ) -> None:
        rig = await safety_rig(await harness.open())
        assert await _decide(rig) == "allow"
        await _put(rig, "kill_switches", {"actions": ["fire"]})
        assert await _decide(rig) == "gate.kill_switch.action_blocked"
        safety = (await rig.spine.list(_ctx(), event_type="safety")).items
        assert [e.payload["decision"] for e in safety] == ["allow", "deny"]
        stream = (await rig.timeline.list(_ctx(), "agent:a1")).items
        assert [e.data["event_id"] for e in stream] == [e.event_id for e in safety]

    async def test_revocation_and_kill_switch_reach_a_peer_on_its_next_check(
        self, harness: BackendHarness
    ) -> None:
        store = await harness.open()
        if not store.capabilities.shared:
            pytest.skip(f"{harness.name}: declares shared=False (peers do not see each other's writes)")
        clock = ManualClock()
        rig = await safety_rig(store, clock)
        peer = await safety_rig(await harness.open_peer(), clock)
        await _put(rig, "firearms_policy", {"bindings": [{"action_name": "fire", "licence_type": "l1"}]})
        await _put(rig, "firearms_grants", {"grants": [{"licence_type": "l1", "subject_type": "agent"}]})
        lic = await rig.policies.issue_licence(
            _ctx(), {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"}
        )
        assert await _decide(peer) == "allow"
        await rig.policies.revoke_licence(_ctx(), lic.licence_id)
        assert await _decide(peer) == "gate.firearms.licence_revoked"
        await _put(rig, "kill_switches", {"tenant_blocked": True})
        assert await _decide(peer) == "gate.kill_switch.tenant_blocked"

    async def test_lock_review_and_expiry_drive_the_strategy_gate(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        await _put(rig, "strategy_lock_policy", {"rules": [{"action_name": "fire"}], "required_approvals": 2})
        assert await _decide(rig) == "gate.strategy_lock.lock_required"
        lock = await rig.policies.create_lock(
            _ctx(user="u_req", role="member"), {"action_name": "fire", "ttl_seconds": 10}
        )
        await rig.policies.review_lock(_ctx(user="u_r1"), lock.lock_id, "approve")
        assert await _decide(rig) == "gate.strategy_lock.pending_review"
        await rig.policies.review_lock(_ctx(user="u_r2"), lock.lock_id, "approve")
        assert await _decide(rig) == "allow"
        rig.clock.advance(10)
        assert await _decide(rig) == "gate.strategy_lock.lock_expired"

    async def test_budget_ledger_keeps_every_concurrent_amount(self, harness: BackendHarness) -> None:
        rig = await safety_rig(await harness.open())
        await asyncio.gather(
            *(rig.budget.record(_ctx(), {"amount": 1.5, "surface_id": "s1"}) for _ in range(8))
        )
        page = await rig.budget.usage(_ctx())
        assert (page.total, page.by_surface, len(page.items)) == (12.0, {"s1": 12.0}, 8)
        await _put(rig, "budget_policy", {"limits": [{"period": "day", "limit": 13}]})
        assert await _decide(rig, estimated_cost=1) == "allow"
        assert await _decide(rig, estimated_cost=1.5) == "gate.budget.limit_exceeded"
