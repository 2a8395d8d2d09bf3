"""Contracts of the canvas command store and the event-stream timeline, on every backend.

The canvas and timeline services are built on ``harness.open()`` stores through a tiny routing
registry, so each backend proves the canvas rules on its own storage: atomic commit at head+1,
exactly one winner per base revision, idempotent retries, recovery ops, bounded snapshots via
checkpoints, in-order gap-free ``op_committed`` publication, tenant isolation of canvases,
cursors and streams.

:func:`canvas_rig` and :class:`RecordingGate` are reused by the unit and HTTP tests.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from contracts.harness import BackendHarness
from northstar_core.canvas import CanvasLimits, CanvasService, CommandIn, RecordIn
from northstar_core.clock import Clock, ManualClock
from northstar_core.config import ConfigService
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.tail import TailHub
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import subject_stream
from northstar_core.spine import EventSpine
from northstar_core.storage import ItemStore
from northstar_core.timeline import PendingEvent, Timeline

SECRET = b"canvas-contract-secret-0123456789"


class RecordingGate:
    """An :class:`~northstar_core.ports.ActionGate` for tests: records every decision (in
    ``calls``; a prepared check that is never decided records nothing, like the gate chain's)
    and blocks the actions named in ``deny`` with the kill-switch envelope. With ``announce``
    an allow taken by :meth:`decide_unpublished` comes with a ``safety_decision`` event for the
    caller to publish on the subject's stream, as the gate chain's does."""

    def __init__(self, *, announce: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.prepared = 0
        self.deny: set[str] = set()
        self.announce = announce

    async def prepare(
        self,
        ctx: RequestContext,
        *,
        action_name: str,
        subject_type: str,
        subject_id: str,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
        surface_id: str | None = None,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        self.prepared += 1
        return {"action_name": action_name, "subject_type": subject_type, "subject_id": subject_id}

    async def decide(self, prepared: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self.calls.append(prepared)
        if prepared["action_name"] in self.deny:
            raise NorthstarError(
                "gate.kill_switch.action_blocked", "blocked by a test kill switch", 403,
                gate="kill_switch", details={"action_name": prepared["action_name"]},
            )
        return {"allowed": True, "action_name": prepared["action_name"]}

    async def decide_unpublished(
        self, prepared: dict[str, Any]
    ) -> tuple[dict[str, Any], PendingEvent | None]:
        decision = await self.decide(prepared)
        if not self.announce:
            return decision, None
        event_id = uuid.uuid4().hex
        event = PendingEvent(
            stream_id=subject_stream(prepared["subject_type"], prepared["subject_id"]),
            type="safety_decision",
            data={"decision": "allow", "action_name": prepared["action_name"], "event_id": event_id},
            idempotency_key=f"safety-{event_id}",
        )
        return decision, event

    async def check(
        self,
        ctx: RequestContext,
        *,
        action_name: str,
        subject_type: str,
        subject_id: str,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
        surface_id: str | None = None,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        prepared = await self.prepare(
            ctx, action_name=action_name, subject_type=subject_type, subject_id=subject_id
        )
        return await self.decide(prepared)


@dataclass
class CanvasRig:
    registry: RoutingRegistry
    canvas: CanvasService
    timeline: Timeline
    spine: EventSpine
    config: ConfigService
    gate: RecordingGate
    tails: TailHub
    clock: Clock
    cursors: CursorCodec = field(default_factory=lambda: CursorCodec(SECRET))


async def canvas_rig(
    harness_or_store: BackendHarness | ItemStore | RoutingRegistry,
    *,
    limits: CanvasLimits | None = None,
    clock: Clock | None = None,
    gate: RecordingGate | None = None,
    tails: TailHub | None = None,
) -> CanvasRig:
    """Canvas + timeline + spine (audit) + config (toggles) on one store or registry."""
    from contracts.suite import make_registry  # the package imports this module: no cycle

    registry = (
        harness_or_store
        if isinstance(harness_or_store, RoutingRegistry)
        else await make_registry(harness_or_store)
    )
    clock = clock or ManualClock()
    cursors = CursorCodec(SECRET)
    tails = tails or TailHub(0.05)
    timeline = Timeline(registry, cursors, clock, tails=tails)
    spine = EventSpine(registry, cursors, clock=clock)
    config = ConfigService(registry, clock)
    gate = gate or RecordingGate()
    canvas = CanvasService(
        registry, cursors, clock, timeline=timeline, gate=gate, audit=spine, toggles=config, limits=limits
    )
    return CanvasRig(registry, canvas, timeline, spine, config, gate, tails, clock, cursors)


def make_ctx(tenant: str = "t_a", user: str = "u1", **kw: Any) -> RequestContext:
    base: dict[str, Any] = {
        "tenant_id": tenant, "mode": "lab", "user_id": user, "roles": ("member",), "request_id": "req-1",
    }
    base.update(kw)
    return RequestContext(**base)


def create(atom_id: str, kind: str = "box", **props: Any) -> dict[str, Any]:
    return {"op": "create", "atom_id": atom_id, "kind": kind, "props": props}


def update(atom_id: str, **patch: Any) -> dict[str, Any]:
    return {"op": "update", "atom_id": atom_id, "patch": patch}


def command(base_rev: int, *ops: dict[str, Any], key: str | None = None) -> CommandIn:
    return CommandIn(base_rev=base_rev, ops=list(ops), idempotency_key=key or uuid.uuid4().hex)


def _ids() -> tuple[str, str]:
    return f"t_{uuid.uuid4().hex[:10]}", f"cv{uuid.uuid4().hex[:10]}"


class CanvasContract:
    """Canvas command store rules (issue 3) on the backend under test."""

    async def test_command_commits_at_head_plus_one_and_snapshot_rebuilds_state(
        self, harness: BackendHarness
    ) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        first = await rig.canvas.commit(ctx, cid, command(0, create("a", x=1), create("b")))
        second = await rig.canvas.commit(
            ctx, cid, command(1, update("a", x=None, y=2), {"op": "move", "atom_id": "b", "index": 0})
        )
        assert (first.head_rev, second.head_rev, second.applied_ops) == (1, 2, 2)
        snap = await rig.canvas.snapshot(ctx, cid)
        assert snap.head_rev == 2
        assert snap.order == ["b", "a"]
        assert snap.atoms["a"].props == {"y": 2}
        assert snap.cursor == second.cursor

    async def test_exactly_one_of_concurrent_commands_on_one_base_rev_commits(
        self, harness: BackendHarness
    ) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        await rig.canvas.commit(ctx, cid, command(0, create("a")))
        outcomes = await asyncio.gather(
            *(rig.canvas.commit(make_ctx(tenant, f"u{i}"), cid, command(1, update("a", w=i)))
              for i in range(4)),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, NorthstarError)]
        assert len(wins) == 1 and wins[0].head_rev == 2
        assert len(losses) == 3
        for loss in losses:
            assert (loss.code, loss.http_status) == ("canvas.rev_conflict", 409)
            assert loss.details["expected_rev"] == 2
            assert [r["rev"] for r in loss.details["recovery_ops"]] == [2]
        assert await rig.canvas.head(ctx, cid) == 2

    async def test_retry_with_same_key_returns_original_result_and_writes_nothing(
        self, harness: BackendHarness
    ) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        cmd = command(0, create("a"), key="k1")
        first = await rig.canvas.commit(ctx, cid, cmd)
        await rig.canvas.commit(ctx, cid, command(1, create("b")))
        again = await rig.canvas.commit(ctx, cid, cmd)
        assert (again.head_rev, again.replayed, first.replayed) == (1, True, False)
        assert again.cursor == first.cursor
        assert await rig.canvas.head(ctx, cid) == 2
        with pytest.raises(NorthstarError) as err:
            await rig.canvas.commit(ctx, cid, command(0, create("zzz"), key="k1"))
        assert err.value.code == "canvas.idempotency_mismatch"

    async def test_invalid_op_is_422_with_its_index_and_writes_nothing(
        self, harness: BackendHarness
    ) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        await rig.canvas.commit(ctx, cid, command(0, create("a")))
        with pytest.raises(NorthstarError) as err:
            await rig.canvas.commit(ctx, cid, command(1, create("b"), update("ghost", x=1)))
        assert (err.value.code, err.value.details["op_index"]) == ("canvas.op_invalid", 1)
        snap = await rig.canvas.snapshot(ctx, cid)
        assert (snap.head_rev, sorted(snap.atoms)) == (1, ["a"])

    async def test_snapshot_after_many_checkpoints_equals_state(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness, limits=CanvasLimits(checkpoint_every=4))
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        await rig.canvas.commit(ctx, cid, command(0, create("a", n=0)))
        for rev in range(1, 11):
            await rig.canvas.commit(ctx, cid, command(rev, update("a", n=rev)))
        fresh = await canvas_rig(rig.registry, limits=CanvasLimits(checkpoint_every=4))
        snap = await fresh.canvas.snapshot(ctx, cid)
        assert (snap.head_rev, snap.atoms["a"].props) == (11, {"n": 10})

    async def test_op_committed_events_are_published_in_order_once(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        for rev in range(3):
            await rig.canvas.commit(ctx, cid, command(rev, create(f"a{rev}")))
        page = await rig.canvas.replay(ctx, cid, None)
        assert [(e.type, e.data["rev"]) for e in page.items] == [("op_committed", r) for r in (1, 2, 3)]

    async def test_each_allow_goes_on_the_stream_with_its_op_committed_or_alone_if_it_lost(
        self, harness: BackendHarness
    ) -> None:
        rig = await canvas_rig(harness, gate=RecordingGate(announce=True))
        other = await canvas_rig(rig.registry)  # another process: its own cached states
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        for rev in range(2):
            await rig.canvas.commit(ctx, cid, command(rev, create(f"a{rev}")))
        await other.canvas.commit(ctx, cid, command(2, create("b")))
        with pytest.raises(NorthstarError) as err:  # rig holds rev 2; only its commit sees rev 3
            await rig.canvas.commit(ctx, cid, command(2, create("c")))
        assert (err.value.code, err.value.details["expected_rev"]) == ("canvas.rev_conflict", 3)
        events = (await rig.canvas.replay(ctx, cid, None)).items
        assert [(e.type, e.data.get("rev")) for e in events] == [
            ("safety_decision", None), ("op_committed", 1),
            ("safety_decision", None), ("op_committed", 2),
            ("op_committed", 3),
            ("safety_decision", None),
        ]
        assert [e.seq for e in events] == list(range(1, 7))

    async def test_canvas_is_invisible_to_another_tenant(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx, other = make_ctx(tenant), make_ctx("t_other" + tenant[2:])
        done = await rig.canvas.commit(ctx, cid, command(0, create("a")))
        snap = await rig.canvas.snapshot(other, cid)
        assert (snap.head_rev, snap.atoms) == (0, {})
        assert done.cursor is not None
        with pytest.raises(NorthstarError) as err:
            await rig.canvas.replay(other, cid, done.cursor)
        assert (err.value.code, err.value.http_status) == ("canvas.cursor_invalid", 410)

    async def test_artifact_is_durable_hashed_and_listed(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness)
        tenant, cid = _ids()
        ctx = make_ctx(tenant)
        rec, replayed = await rig.canvas.add_record(
            ctx, cid, "artifact", RecordIn(kind="image", body="hello", idempotency_key="a1")
        )
        again, replayed2 = await rig.canvas.add_record(
            ctx, cid, "artifact", RecordIn(kind="image", body="hello", idempotency_key="a1")
        )
        assert (replayed, replayed2, again.record_id) == (False, True, rec.record_id)
        assert rec.content_hash == (
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        )
        page = await rig.canvas.list_records(ctx, cid, "artifact")
        assert [r.record_id for r in page.items] == [rec.record_id]
        assert (await rig.canvas.list_records(make_ctx("t_zz" + tenant[2:]), cid, "artifact")).items == []


class TimelineContract:
    """Event-stream rules on the backend under test."""

    async def test_published_events_list_in_order_with_cursors(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness)
        tenant, sid = _ids()
        ctx = make_ctx(tenant)
        cursors = [await rig.timeline.publish(ctx, sid, "note", {"i": i}) for i in range(5)]
        first = await rig.timeline.list(ctx, sid, None, 2)
        assert [e.data["i"] for e in first.items] == [0, 1] and first.has_more
        assert [e.event_id for e in first.items] == cursors[:2]
        rest = await rig.timeline.list(ctx, sid, first.next_cursor, 10)
        assert [e.data["i"] for e in rest.items] == [2, 3, 4] and not rest.has_more

    async def test_publish_with_same_key_is_once(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness)
        tenant, sid = _ids()
        ctx = make_ctx(tenant)
        one = await rig.timeline.publish(ctx, sid, "note", {"x": 1}, idempotency_key="k")
        two = await rig.timeline.publish(ctx, sid, "note", {"x": 1}, idempotency_key="k")
        assert one == two
        assert len((await rig.timeline.list(ctx, sid)).items) == 1

    async def test_foreign_cursor_is_410(self, harness: BackendHarness) -> None:
        rig = await canvas_rig(harness)
        tenant, sid = _ids()
        cursor = await rig.timeline.publish(make_ctx(tenant), sid, "note", {})
        with pytest.raises(NorthstarError) as err:
            await rig.timeline.list(make_ctx("t_b" + tenant[2:]), sid, cursor)
        assert (err.value.code, err.value.http_status) == ("event_stream.cursor_invalid", 410)
        with pytest.raises(NorthstarError):
            await rig.timeline.list(make_ctx(tenant), sid + "x", cursor)
