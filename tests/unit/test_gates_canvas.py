"""Canvas commands and gestures go through the real gate chain: decisions on the spine and on
the canvas's own stream (what its SSE serves)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts.suite import make_registry
from northstar_adapters.memory import MemoryItemStore
from northstar_core.canvas import CommandIn
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext


def ctx(role: str = "member", user: str = "u1") -> RequestContext:
    return RequestContext(tenant_id="t_c", mode="lab", user_id=user, roles=(role,), run_id="r1")


@pytest.fixture
async def engines() -> AsyncIterator[Engines]:
    e = Engines(
        await make_registry(MemoryItemStore()), CursorCodec(b"canvas-gate-secret-0123456789"), ManualClock()
    )
    yield e
    await e.close()


def create(atom: str) -> dict[str, object]:
    return {"op": "create", "atom_id": atom, "kind": "box", "props": {}}


async def test_engines_gate_is_the_gate_chain_wired_to_streams(engines: Engines) -> None:
    assert engines.gate.timeline is engines.timeline
    assert engines.audit is engines.spine


async def test_a_kill_switch_on_canvas_command_blocks_commits_and_is_on_the_canvas_stream(
    engines: Engines,
) -> None:
    ok = await engines.canvas.commit(
        ctx(), "c1", CommandIn(base_rev=0, ops=[create("a")], idempotency_key="k1")
    )
    assert ok.head_rev == 1
    await engines.policies.put_document(
        ctx("admin"), "kill_switches", {"actions": ["canvas_command"]}, expected_version=0
    )
    with pytest.raises(NorthstarError) as info:
        await engines.canvas.commit(
            ctx(), "c1", CommandIn(base_rev=1, ops=[create("b")], idempotency_key="k2")
        )
    assert (info.value.http_status, info.value.gate, info.value.code) == (
        403,
        "kill_switch",
        "gate.kill_switch.action_blocked",
    )
    stream = (await engines.timeline.list(ctx(), "canvas:c1")).items
    decisions = [e.data["decision"] for e in stream if e.type == "safety_decision"]
    assert decisions == ["allow", "deny"]
    assert "op_committed" in [e.type for e in stream]
    safety = (await engines.spine.list(ctx(), event_type="safety")).items
    assert [(e.payload["action_name"], e.payload["decision"]) for e in safety] == [
        ("canvas_command", "allow"),
        ("canvas_command", "deny"),
    ]


async def test_gestures_pass_the_chain_with_their_own_action_name(engines: Engines) -> None:
    await engines.policies.put_document(
        ctx("admin"), "kill_switches", {"actions": ["canvas_gesture"]}, expected_version=0
    )
    with pytest.raises(NorthstarError) as info:
        await engines.canvas.gesture(ctx(), "c1", "point", {"x": 1})
    assert info.value.code == "gate.kill_switch.action_blocked"
    ok = await engines.canvas.commit(
        ctx(), "c1", CommandIn(base_rev=0, ops=[create("a")], idempotency_key="k1")
    )
    assert ok.head_rev == 1


async def test_an_allow_reaches_the_canvas_stream_with_its_commit_or_alone_after_a_lost_race() -> None:
    store = MemoryItemStore()
    codec = CursorCodec(b"canvas-gate-secret-0123456789")
    ours = Engines(await make_registry(store), codec, ManualClock())
    theirs = Engines(await make_registry(store), codec, ManualClock())  # another process
    try:
        await ours.canvas.commit(ctx(), "c1", CommandIn(base_rev=0, ops=[create("a")], idempotency_key="k1"))
        await theirs.canvas.commit(
            ctx(), "c1", CommandIn(base_rev=1, ops=[create("b")], idempotency_key="k2")
        )
        with pytest.raises(NorthstarError) as info:  # ours still holds rev 1: only the commit sees rev 2
            await ours.canvas.commit(
                ctx(), "c1", CommandIn(base_rev=1, ops=[create("c")], idempotency_key="k3")
            )
        assert info.value.code == "canvas.rev_conflict"
        stream = (await ours.timeline.list(ctx(), "canvas:c1")).items
        assert [e.type for e in stream] == [
            "safety_decision", "op_committed", "safety_decision", "op_committed", "safety_decision"
        ]
        safety = (await ours.spine.list(ctx(), event_type="safety")).items
        # (two processes on one manual clock: the spine's id order is not the commit order)
        assert sorted(e.data["event_id"] for e in stream if e.type == "safety_decision") == sorted(
            e.event_id for e in safety
        )
        # each allow is published right before the op_committed of the revision it allowed
        assert [e.data["rev"] for e in stream if e.type == "op_committed"] == [1, 2]
        assert all(e.data["decision"] == "allow" for e in stream if e.type == "safety_decision")
    finally:
        await ours.close()
        await theirs.close()
