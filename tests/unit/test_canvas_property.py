"""Property: any interleaving of several editors, with conflicts, rebases and lost responses,
ends with every editor's state equal to a reference model of the committed log, and no
command applied twice.

Editors are :class:`CanvasSession` s (the embeddable client flow) over the embedded service.
Hypothesis draws each editor's intents (op templates materialised against its local state at
send time), the scheduling (how many times each call yields to the event loop before and after
reaching the service, which decides who wins each revision) and which responses are lost (the
command ran, the editor never heard back, and retries with the same key).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.suite.canvas import canvas_rig, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.canvas import CanvasLimits, CanvasOp, CanvasState, CommandIn, CommitResult, Snapshot
from northstar_core.kernel.paging import Page
from northstar_core.timeline import StreamEvent
from northstar_http.client.canvas import CanvasSession, EmbeddedCanvasApi, SubmitOutcome

CANVAS = "shared"
Template = tuple[int, int, int]


class FlakyApi:
    """Delays calls by drawn numbers of event-loop yields and loses drawn responses."""

    def __init__(self, inner: EmbeddedCanvasApi, yields: list[int], losses: list[bool]) -> None:
        self.inner = inner
        self.yields = yields
        self.losses = losses
        self.calls = 0
        self.lost_last = False

    async def _yield(self) -> None:
        for _ in range(self.yields[self.calls % len(self.yields)]):
            await asyncio.sleep(0)

    async def commit(self, canvas_id: str, command: CommandIn) -> CommitResult:
        await self._yield()
        lose = self.losses[self.calls % len(self.losses)] and not self.lost_last
        self.calls += 1
        self.lost_last = lose
        try:
            result = await self.inner.commit(canvas_id, command)
        except Exception:
            if lose:
                raise ConnectionError("response lost") from None
            raise
        await self._yield()
        if lose:
            raise ConnectionError("response lost")
        return result

    async def snapshot(self, canvas_id: str) -> Snapshot:
        await self._yield()
        return await self.inner.snapshot(canvas_id)

    async def replay(
        self,
        canvas_id: str,
        cursor: str | None = None,
        limit: int = 100,
        *,
        types: frozenset[str] | None = None,
    ) -> Page[StreamEvent]:
        await self._yield()
        return await self.inner.replay(canvas_id, cursor, limit, types=types)


def materialise(
    state: CanvasState, templates: list[Template], editor: int, serial: list[int]
) -> list[dict[str, Any]]:
    """Turn templates into ops valid on ``state`` (the editor's local view)."""
    trial = state.copy()
    ops: list[dict[str, Any]] = []
    for kind, a, b in templates:
        order = trial.order
        if kind == 0 or not order:
            serial[0] += 1
            op: dict[str, Any] = {
                "op": "create",
                "atom_id": f"e{editor}-{serial[0]}",
                "kind": "box",
                "props": {"v": a, "nested": {"k": b}},
            }
        elif kind == 1:
            op = {
                "op": "update",
                "atom_id": order[a % len(order)],
                "patch": {f"k{b % 3}": None if a == 0 else a, "nested": {"k": None if b == 0 else b}},
            }
        elif kind == 2:
            op = {"op": "delete", "atom_id": order[a % len(order)]}
        else:
            op = {"op": "move", "atom_id": order[a % len(order)], "index": b % len(order)}
        trial.apply([msgspec.convert(op, CanvasOp)], CanvasLimits())
        ops.append(op)
    return ops


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def reference_model(log: list[dict[str, Any]]) -> dict[str, Any]:
    """An independent fold of the committed log (the spec's semantics, written plainly)."""
    atoms: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for record in log:
        for op in record["ops"]:
            aid = op["atom_id"]
            if op["op"] == "create":
                atoms[aid] = {"kind": op["kind"], "props": op.get("props", {})}
                order.append(aid)
            elif op["op"] == "update":
                atoms[aid] = {**atoms[aid], "props": _merge(atoms[aid]["props"], op["patch"])}
            elif op["op"] == "delete":
                del atoms[aid]
                order.remove(aid)
            else:
                order.remove(aid)
                order.insert(op["index"], aid)
    return {"head_rev": len(log), "atoms": atoms, "order": order}


templates = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=3
)
editor_plan = st.fixed_dictionaries(
    {
        "intents": st.lists(templates, min_size=1, max_size=4),
        "yields": st.lists(st.integers(0, 4), min_size=1, max_size=6),
        "losses": st.lists(st.booleans(), min_size=1, max_size=5),
    }
)


async def run_scenario(plans: list[dict[str, Any]], checkpoint_every: int, recovery_cap: int) -> None:
    limits = CanvasLimits(checkpoint_every=checkpoint_every, recovery_cap=recovery_cap)
    rig = await canvas_rig(MemoryItemStore(), limits=limits)
    sessions = [
        CanvasSession(
            FlakyApi(EmbeddedCanvasApi(rig.canvas, make_ctx(user=f"editor{i}")), p["yields"], p["losses"]),
            CANVAS,
        )
        for i, p in enumerate(plans)
    ]
    for s in sessions:
        await s.open()
    outcomes: list[SubmitOutcome] = []

    async def editor(i: int, session: CanvasSession, intents: list[list[Template]]) -> None:
        serial = [0]
        for intent in intents:
            ops = materialise(session.state, intent, i, serial)
            outcomes.append(await session.submit(ops))

    await asyncio.gather(
        *(editor(i, s, p["intents"]) for i, (s, p) in enumerate(zip(sessions, plans, strict=True)))
    )

    ctx = make_ctx()
    log: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await rig.canvas.replay(ctx, CANVAS, cursor, 500, types=frozenset({"op_committed"}))
        log += [e.data for e in page.items]
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert [r["rev"] for r in log] == list(range(1, len(log) + 1))  # published in order, once
    model = reference_model(log)
    snap = msgspec.to_builtins(await rig.canvas.snapshot(ctx, CANVAS))
    assert {k: snap[k] for k in ("head_rev", "atoms", "order")} == model
    for session in sessions:
        await session.sync()
        assert session.state.to_wire() == model
    # no command applied twice: one revision per committed submit, under its own key
    keys = [r["idempotency_key"] for r in log]
    assert len(keys) == len(set(keys))
    committed = [o for o in outcomes if o.committed_rev is not None]
    assert len(committed) == len(log)
    by_rev = {r["rev"]: r for r in log}
    for o in committed:
        assert o.committed_rev is not None
        assert by_rev[o.committed_rev]["idempotency_key"] == o.idempotency_key
        if o.ops:
            assert by_rev[o.committed_rev]["ops"] == o.ops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=st.lists(editor_plan, min_size=2, max_size=3),
    checkpoint_every=st.integers(2, 5),
    recovery_cap=st.integers(1, 6),
)
def test_any_interleaving_of_editors_converges_on_the_reference_model_once_each(
    plans: list[dict[str, Any]], checkpoint_every: int, recovery_cap: int
) -> None:
    asyncio.run(run_scenario(plans, checkpoint_every, recovery_cap))
