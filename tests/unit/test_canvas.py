"""Canvas command store: the rules of issue 3 on the memory (and sqlite) backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts.suite.canvas import RecordingGate, canvas_rig, command, create, make_ctx, update
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.canvas import (
    CanvasLimits,
    CanvasState,
    CommandIn,
    CreateOp,
    DeleteOp,
    MoveOp,
    RecordIn,
    UpdateOp,
    merge_patch,
    rebase,
)
from northstar_core.errors import NorthstarError
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RouteOptions, RoutingRegistry, Target
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op


class CountingStore(ItemStore):
    """Wraps a store and counts the items every read returns (and the read calls)."""

    def __init__(self, inner: ItemStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.items_read = 0
        self.reads = 0

    def reset(self) -> None:
        self.items_read = self.reads = 0

    async def get(self, partition: str, key: str) -> Item | None:
        self.reads += 1
        item = await self.inner.get(partition, key)
        self.items_read += item is not None
        return item

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        self.reads += 1
        items = await self.inner.query(partition, prefix, **kw)
        self.items_read += len(items)
        return items

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await self.inner.write(partition, ops)


class FailingWrites(ItemStore):
    """Fault injection: writes fail with BackendUnavailable while ``down`` (reads still work)."""

    def __init__(self, inner: ItemStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.down = False

    async def get(self, partition: str, key: str) -> Item | None:
        return await self.inner.get(partition, key)

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        return await self.inner.query(partition, prefix, **kw)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        if self.down:
            raise BackendUnavailable("injected outage")
        await self.inner.write(partition, ops)


class _ByKind:
    def __init__(self, default: ItemStore, stores: dict[str, ItemStore]) -> None:
        self.default, self.stores = default, stores

    def open(self, target: Target) -> ItemStore:
        return self.stores.get(target.resource_kind, self.default)


async def registry_by_kind(default: ItemStore, **stores: ItemStore) -> RoutingRegistry:
    """A lab registry routing the named kinds to their own stores (another backend)."""
    connections = {"mem": Connection(name="mem", backend="memory")}
    registry = RoutingRegistry(
        MemoryItemStore(), _ByKind(default, stores), connections=connections, deployment_mode="lab"
    )
    for kind in RESOURCE_KINDS:
        await registry.set_route(Route(resource_kind=kind, connection="mem"))
    return registry


PUBLISHED_EVENTS = json.loads((Path(__file__).resolve().parents[2] / "contracts" / "events.json").read_text())


def cid() -> str:
    return f"cv{uuid.uuid4().hex[:8]}"


# --- merge patch (RFC 7386 appendix A) -------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_update_applies_rfc7386_merge_patch(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


# --- validation: 422/413 with nothing written -----------------------------------------------


@pytest.mark.parametrize(
    ("ops", "code", "status", "index"),
    [
        ([{"op": "explode", "atom_id": "a"}], "canvas.op_invalid", 422, 0),
        ([create("a"), {"op": "create", "atom_id": "b"}], "canvas.op_invalid", 422, 1),
        ([create("a"), create("bad id!")], "canvas.op_invalid", 422, 1),
        ([create("a"), create("a")], "canvas.op_invalid", 422, 1),
        ([update("ghost", x=1)], "canvas.op_invalid", 422, 0),
        ([create("a"), {"op": "move", "atom_id": "a", "index": 5}], "canvas.op_invalid", 422, 1),
        (
            [create("a"), {"op": "delete", "atom_id": "a"}, {"op": "delete", "atom_id": "a"}],
            "canvas.op_invalid",
            422,
            2,
        ),
        ([create("a", blob="x" * 2_000)], "canvas.props_too_large", 413, 0),
        ([create("a"), update("a", blob="x" * 2_000)], "canvas.props_too_large", 413, 1),
        ([create(f"a{i}") for i in range(11)], "canvas.too_many_ops", 422, None),
        ([], "canvas.invalid_request", 422, None),
    ],
)
async def test_bad_command_is_an_envelope_and_writes_nothing(
    ops: list[Any], code: str, status: int, index: int | None
) -> None:
    store = CountingStore(MemoryItemStore())
    rig = await canvas_rig(store, limits=CanvasLimits(max_ops_per_command=10, max_props_bytes=1_000))
    ctx, c = make_ctx(), cid()
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, CommandIn(base_rev=0, ops=ops, idempotency_key="k"))
    assert (err.value.code, err.value.http_status) == (code, status)
    if index is not None:
        assert err.value.details["op_index"] == index
    assert await rig.canvas.head(ctx, c) == 0
    assert (await rig.timeline.list(ctx, rig.canvas.stream_id(c))).items == []


async def test_whole_canvas_size_limit_is_413() -> None:
    rig = await canvas_rig(MemoryItemStore(), limits=CanvasLimits(max_canvas_bytes=500))
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, create("a", v="x" * 300)))
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(1, create("b", v="x" * 300)))
    assert (err.value.code, err.value.http_status) == ("canvas.canvas_too_large", 413)
    assert await rig.canvas.head(ctx, c) == 1


async def test_command_without_idempotency_key_is_422_and_correlation_id_is_an_alias() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, CommandIn(base_rev=0, ops=[create("a")]))
    assert err.value.code == "canvas.invalid_request"
    by_corr = CommandIn(base_rev=0, ops=[create("a")], correlation_id="corr-1")
    by_key = CommandIn(base_rev=0, ops=[create("a")], idempotency_key="corr-1")
    first = await rig.canvas.commit(ctx, c, by_corr)
    again = await rig.canvas.commit(ctx, c, by_key)
    assert (first.head_rev, again.head_rev, again.replayed) == (1, 1, True)


async def test_base_rev_ahead_of_head_is_422_rev_invalid() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(3, create("a")))
    assert (err.value.code, err.value.http_status, err.value.details["head_rev"]) == (
        "canvas.rev_invalid",
        422,
        0,
    )


async def test_body_actor_differing_from_token_is_403_audited_and_writes_nothing() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(user="alice"), cid()
    cmd = CommandIn(base_rev=0, ops=[create("a")], idempotency_key="k", actor_id="mallory")
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, cmd)
    assert (err.value.code, err.value.http_status) == ("canvas.actor_mismatch", 403)
    assert await rig.canvas.head(ctx, c) == 0
    audits = await rig.spine.list(ctx, event_type="audit")
    assert [e.payload["action"] for e in audits.items] == ["canvas.actor_mismatch"]
    same = CommandIn(base_rev=0, ops=[create("a")], idempotency_key="k", actor_id="alice")
    assert (await rig.canvas.commit(ctx, c, same)).head_rev == 1


async def test_viewer_cannot_command() -> None:
    rig = await canvas_rig(MemoryItemStore())
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(make_ctx(roles=("viewer",)), cid(), command(0, create("a")))
    assert err.value.code == "auth.forbidden_role"


# --- the gate hook ---------------------------------------------------------------------------


async def test_every_command_passes_the_gate_as_canvas_command_first() -> None:
    gate = RecordingGate()
    rig = await canvas_rig(MemoryItemStore(), gate=gate)
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, create("a")))
    assert gate.calls == [{"action_name": "canvas_command", "subject_type": "canvas", "subject_id": c}]
    gate.deny.add("canvas_command")
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(1, create("b")))
    assert (err.value.http_status, err.value.gate) == (403, "kill_switch")
    assert await rig.canvas.head(ctx, c) == 1


async def test_replays_conflicts_and_bad_revisions_are_answered_without_a_gate_decision() -> None:
    gate = RecordingGate()
    rig = await canvas_rig(MemoryItemStore(), gate=gate)
    ctx, c = make_ctx(), cid()
    first = await rig.canvas.commit(ctx, c, command(0, create("a"), key="k1"))
    await rig.canvas.commit(ctx, c, command(1, create("b"), key="k2"))
    decided = len(gate.calls)
    again = await rig.canvas.commit(ctx, c, command(0, create("a"), key="k1"))
    assert (again.replayed, again.cursor) == (True, first.cursor)
    for base_rev, code in ((1, "canvas.rev_conflict"), (7, "canvas.rev_invalid")):
        with pytest.raises(NorthstarError) as err:
            await rig.canvas.commit(ctx, c, command(base_rev, create("x"), key=f"k-{base_rev}"))
        assert err.value.code == code
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(2, update("missing", n=1), key="k-op"))
    assert err.value.code == "canvas.op_invalid"
    # the policy inputs were read alongside each command's own reads, never decided on
    assert gate.prepared >= decided + 4
    assert len(gate.calls) == decided == 2
    assert await rig.canvas.head(ctx, c) == 2


async def test_a_command_on_a_canvas_this_process_has_not_seen_rebuilds_it_from_a_checkpoint() -> None:
    store = MemoryItemStore()
    rig = await canvas_rig(store, limits=CanvasLimits(checkpoint_every=4))
    ctx, c = make_ctx(), cid()
    await _canvas_at_rev(rig, ctx, c, 10)
    fresh = await canvas_rig(store, limits=CanvasLimits(checkpoint_every=4))  # cold cache
    done = await fresh.canvas.commit(ctx, c, command(10, update("base", n=10)))
    assert done.head_rev == 11
    snap = await fresh.canvas.snapshot(ctx, c)
    assert (snap.head_rev, snap.atoms["base"].props) == (11, {"n": 10})
    assert snap == await rig.canvas.snapshot(ctx, c)


# --- conflicts and recovery ------------------------------------------------------------------


async def _canvas_at_rev(rig: Any, ctx: Any, c: str, rev: int) -> None:
    await rig.canvas.commit(ctx, c, command(0, create("base", n=0)))
    for r in range(1, rev):
        await rig.canvas.commit(ctx, c, command(r, update("base", n=r)))


async def test_two_clients_on_base_rev_5_one_commits_rev_6_other_rebases_to_the_same_snapshot() -> None:
    rig = await canvas_rig(MemoryItemStore())
    c = cid()
    alice, bob = make_ctx(user="alice"), make_ctx(user="bob")
    await _canvas_at_rev(rig, alice, c, 5)
    a_ops = [create("a1", by="alice"), update("base", owner="alice")]
    b_ops = [create("b1", by="bob"), update("base", n=None)]
    outcomes = await asyncio.gather(
        rig.canvas.commit(alice, c, command(5, *a_ops, key="ka")),
        rig.canvas.commit(bob, c, command(5, *b_ops, key="kb")),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, NorthstarError)]
    assert len(winners) == 1 and winners[0].head_rev == 6
    assert len(losers) == 1 and losers[0].code == "canvas.rev_conflict"
    loss = losers[0].details
    assert loss["expected_rev"] == 6 and loss["snapshot_required"] is False
    winner_ops = a_ops if outcomes[0] is winners[0] else b_ops
    assert [r["rev"] for r in loss["recovery_ops"]] == [6]
    assert loss["recovery_ops"][0]["ops"] == winner_ops
    assert loss["recovery_ops"][0]["actor_id"] == ("alice" if winner_ops is a_ops else "bob")
    # the loser applies the recovery ops to its local state and rebases its pending ops
    loser_ctx, loser_ops, loser_key = (bob, b_ops, "kb") if winner_ops is a_ops else (alice, a_ops, "ka")
    local = CanvasState.from_snapshot(msgspec.to_builtins(await rig.canvas.snapshot(loser_ctx, c)))
    pending = rebase(local, [msgspec.convert(op, CreateOp | UpdateOp) for op in loser_ops])
    retried = await rig.canvas.commit(
        loser_ctx, c, CommandIn(base_rev=6, ops=msgspec.to_builtins(pending), idempotency_key=loser_key)
    )
    assert retried.head_rev == 7
    snap_a, snap_b = await rig.canvas.snapshot(alice, c), await rig.canvas.snapshot(bob, c)
    assert snap_a == snap_b
    assert sorted(snap_a.atoms) == ["a1", "b1", "base"]


async def test_recovery_ops_are_capped_with_snapshot_required_beyond_the_cap() -> None:
    rig = await canvas_rig(MemoryItemStore(), limits=CanvasLimits(recovery_cap=3))
    ctx, c = make_ctx(), cid()
    await _canvas_at_rev(rig, ctx, c, 6)
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(1, create("late")))
    details = err.value.details
    assert (details["expected_rev"], details["snapshot_required"]) == (6, True)
    assert [r["rev"] for r in details["recovery_ops"]] == [2, 3, 4]
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(4, create("late")))
    assert err.value.details["snapshot_required"] is False
    assert [r["rev"] for r in err.value.details["recovery_ops"]] == [5, 6]


def test_rebase_drops_ops_on_vanished_atoms_and_clamps_moves() -> None:
    state = CanvasState(3, {}, [])
    state.apply([CreateOp("x", "box"), CreateOp("y", "box")], CanvasLimits())
    pending = [
        UpdateOp("gone", {"a": 1}),
        CreateOp("x", "box"),
        CreateOp("z", "box"),
        MoveOp("z", 9),
        DeleteOp("y"),
        UpdateOp("y", {"a": 1}),
    ]
    assert rebase(state, pending) == [CreateOp("z", "box"), MoveOp("z", 2), DeleteOp("y")]
    assert sorted(state.atoms) == ["x", "y"]


# --- idempotency across a restart ------------------------------------------------------------


async def test_retry_after_lost_response_never_creates_a_second_revision_across_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "canvas.sqlite3"
    ctx, c = make_ctx(), cid()
    store = SqliteItemStore(path, namespace="t")
    rig = await canvas_rig(store)
    cmd = command(0, create("a"), key="lost-response")
    first = await rig.canvas.commit(ctx, c, cmd)
    await rig.tails.close()
    await store.close()
    # a new process: new store object, new services, empty caches
    store2 = SqliteItemStore(path, namespace="t", private=True)
    try:
        rig2 = await canvas_rig(store2)
        again = await rig2.canvas.commit(ctx, c, cmd)
        assert (again.head_rev, again.replayed, again.cursor) == (1, True, first.cursor)
        assert await rig2.canvas.head(ctx, c) == 1
        page = await rig2.canvas.replay(ctx, c, None)
        assert [e.data["rev"] for e in page.items] == [1]
    finally:
        await store2.close()


# --- crash between commit and publish ----------------------------------------------------------


async def test_revisions_committed_while_the_stream_was_down_are_published_before_any_read() -> None:
    canvas_store = MemoryItemStore()
    stream_store = FailingWrites(MemoryItemStore())
    registry = await registry_by_kind(canvas_store, event_stream=stream_store)
    rig = await canvas_rig(registry)
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, create("a")))
    stream_store.down = True
    outage = [await rig.canvas.commit(ctx, c, command(r, update("a", n=r))) for r in (1, 2)]
    assert [o.head_rev for o in outage] == [2, 3]
    assert [o.cursor for o in outage] == [None, None]  # committed; publish deferred
    stream_store.down = False
    page = await rig.canvas.replay(ctx, c, None)
    assert [(e.type, e.data["rev"]) for e in page.items] == [("op_committed", r) for r in (1, 2, 3)]
    snap = await rig.canvas.snapshot(ctx, c)
    assert snap.cursor == page.items[-1].event_id


class LosesResponses(FailingWrites):
    """Fault injection: while ``down`` a write reaches the store, then reports an outage (the
    caller cannot tell whether it landed)."""

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await self.inner.write(partition, ops)
        if self.down:
            raise BackendUnavailable("injected lost response")


def _pairs(events: Sequence[Any]) -> list[tuple[str, Any]]:
    return [(e.type, e.data.get("rev", e.data.get("event_id"))) for e in events]


@pytest.mark.parametrize("fault", [FailingWrites, LosesResponses])
async def test_a_decision_and_op_committed_lost_to_a_stream_outage_are_published_together_later(
    fault: type[FailingWrites],
) -> None:
    stream_store = fault(MemoryItemStore())
    registry = await registry_by_kind(MemoryItemStore(), event_stream=stream_store)
    rig = await canvas_rig(registry, gate=RecordingGate(announce=True))
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, create("a")))
    stream_store.down = True
    outage = [await rig.canvas.commit(ctx, c, command(r, update("a", n=r))) for r in (1, 2)]
    assert [(o.head_rev, o.cursor) for o in outage] == [(2, None), (3, None)]  # committed
    stream_store.down = False
    page = await rig.canvas.replay(ctx, c, None)
    await rig.canvas.snapshot(ctx, c)  # a second catch-up publishes nothing again
    await rig.canvas.commit(ctx, c, command(3, update("a", n=3)))
    events = (await rig.canvas.replay(ctx, c, None)).items
    assert [e.type for e in events] == ["safety_decision", "op_committed"] * 4
    assert [e.data["rev"] for e in events[1::2]] == [1, 2, 3, 4]
    assert [e.seq for e in events] == list(range(1, 9))
    assert len({e.data["event_id"] for e in events[::2]}) == 4
    assert events[: len(page.items)] == page.items


@pytest.mark.parametrize("fault", [FailingWrites, LosesResponses])
async def test_the_decision_of_a_commit_that_failed_on_the_store_is_published_once(
    fault: type[FailingWrites],
) -> None:
    canvas_store = fault(MemoryItemStore())
    registry = await registry_by_kind(canvas_store, event_stream=MemoryItemStore())
    rig = await canvas_rig(registry, gate=RecordingGate(announce=True))
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, create("a")))
    canvas_store.down = True
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(1, update("a", n=1)))
    assert err.value.http_status == 503
    canvas_store.down = False
    landed = fault is LosesResponses  # the commit reached the store; only its answer was lost
    events = (await rig.canvas.replay(ctx, c, None)).items
    expected = ["safety_decision", "op_committed", "safety_decision"] + (["op_committed"] if landed else [])
    assert [e.type for e in events] == expected
    assert await rig.canvas.head(ctx, c) == (2 if landed else 1)
    await rig.canvas.snapshot(ctx, c)  # another catch-up repeats nothing
    assert len((await rig.canvas.replay(ctx, c, None)).items) == len(expected)


async def test_a_command_on_the_revision_this_process_holds_reads_no_log_and_a_stale_one_is_409() -> None:
    shared = MemoryItemStore()
    canvas_store = CountingStore(shared)
    stream_store = MemoryItemStore()
    ours = await canvas_rig(
        await registry_by_kind(canvas_store, event_stream=stream_store), gate=RecordingGate(announce=True)
    )
    theirs = await canvas_rig(await registry_by_kind(shared, event_stream=stream_store))
    ctx, c = make_ctx(), cid()
    await ours.canvas.commit(ctx, c, command(0, create("a")))
    canvas_store.reset()
    await ours.canvas.commit(ctx, c, command(1, update("a", n=1)))
    assert canvas_store.reads == 1  # the idempotency key only: the state at rev 1 is held
    await theirs.canvas.commit(ctx, c, command(2, update("a", n=2)))  # another process
    with pytest.raises(NorthstarError) as err:
        await ours.canvas.commit(ctx, c, command(2, update("a", n=9), key="late"))
    assert (err.value.code, err.value.http_status) == ("canvas.rev_conflict", 409)
    assert (err.value.details["expected_rev"], err.value.details["base_rev"]) == (3, 2)
    assert [r["rev"] for r in err.value.details["recovery_ops"]] == [3]
    # the decision taken for the command that lost its race is on the stream, alone
    events = (await ours.canvas.replay(ctx, c, None)).items
    assert [e.type for e in events] == [
        "safety_decision", "op_committed", "safety_decision", "op_committed", "op_committed",
        "safety_decision",
    ]
    done = await ours.canvas.commit(ctx, c, command(3, update("a", n=4)))
    assert done.head_rev == 4
    assert (await ours.canvas.snapshot(ctx, c)).atoms["a"].props == {"n": 4}


def _unchecked(store: ItemStore) -> ItemStore:
    """``store`` declaring no atomic checks (as Firestore and Cosmos do)."""
    store.capabilities = msgspec.structs.replace(store.capabilities, atomic_checks=False)
    return store


async def test_without_atomic_checks_the_head_read_beside_the_key_serves_the_commit() -> None:
    shared = _unchecked(MemoryItemStore())
    canvas_store = _unchecked(CountingStore(shared))
    stream_store = _unchecked(MemoryItemStore())
    gate = RecordingGate(announce=True)
    ours = await canvas_rig(await registry_by_kind(canvas_store, event_stream=stream_store), gate=gate)
    theirs = await canvas_rig(await registry_by_kind(shared, event_stream=stream_store))
    ctx, c = make_ctx(), cid()
    await ours.canvas.commit(ctx, c, command(0, create("a")))
    canvas_store.reset()
    await ours.canvas.commit(ctx, c, command(1, update("a", n=1)))
    assert canvas_store.reads == 2  # the key and the head, in one round trip; no log read
    await theirs.canvas.commit(ctx, c, command(2, update("a", n=2)))  # another process
    canvas_store.reset()
    with pytest.raises(NorthstarError) as err:
        await ours.canvas.commit(ctx, c, command(2, update("a", n=9), key="late"))
    assert (err.value.code, err.value.details["expected_rev"]) == ("canvas.rev_conflict", 3)
    assert [r["rev"] for r in err.value.details["recovery_ops"]] == [3]
    assert canvas_store.reads == 3  # key and head, then the missed commands: no second head read
    done = await ours.canvas.commit(ctx, c, command(3, update("a", n=4)))
    assert done.head_rev == 4
    events = (await ours.canvas.replay(ctx, c, None)).items
    assert [e.type for e in events] == [
        "safety_decision", "op_committed", "safety_decision", "op_committed", "op_committed",
        "safety_decision", "safety_decision", "op_committed",
    ]
    assert [e.seq for e in events] == list(range(1, 9))

# --- bounded snapshots -------------------------------------------------------------------------


async def test_snapshot_at_10k_revisions_reads_a_bounded_number_of_records() -> None:
    counting = CountingStore(MemoryItemStore())
    k = 64
    rig = await canvas_rig(counting, limits=CanvasLimits(checkpoint_every=k))
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, *[create(f"a{i}", i=i) for i in range(20)]))
    for rev in range(1, 10_000):
        await rig.canvas.commit(ctx, c, command(rev, update(f"a{rev % 20}", n=rev)))
    small = await canvas_rig(counting, limits=CanvasLimits(checkpoint_every=k))  # cold cache
    counting.reset()
    snap = await small.canvas.snapshot(ctx, c)
    assert snap.head_rev == 10_000
    assert snap.atoms["a7"].props == {"i": 7, "n": 9_987}
    # latest checkpoint (1 chunk) + < K commands + head/marker/cursor lookups
    print(f"snapshot at 10k revisions: {counting.items_read} items in {counting.reads} reads")
    assert counting.items_read <= k + 8, counting.items_read
    assert counting.reads <= 10, counting.reads


# --- gestures ----------------------------------------------------------------------------------


async def test_gesture_goes_to_the_canvas_stream_not_the_command_log_through_the_gate() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    event = await rig.canvas.gesture(ctx, c, "pointer", {"x": 3, "y": 4})
    assert (event.type, event.data) == (
        "gesture",
        {"gesture": "pointer", "data": {"x": 3, "y": 4}, "actor_id": "u1"},
    )
    assert await rig.canvas.head(ctx, c) == 0
    assert rig.gate.calls[-1] == {"action_name": "canvas_gesture", "subject_type": "canvas", "subject_id": c}
    page = await rig.canvas.replay(ctx, c, None)
    assert [e.event_id for e in page.items] == [event.event_id]


async def test_gesture_is_refused_when_the_toggle_is_off_and_nothing_is_published() -> None:
    rig = await canvas_rig(MemoryItemStore())
    admin, c = make_ctx(roles=("admin",)), cid()
    await rig.config.put(admin, "tenant", {"canvas.gestures_enabled": False}, expected_version=None)
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.gesture(admin, c, "pointer", {})
    assert (err.value.code, err.value.http_status) == ("canvas.gestures_disabled", 403)
    assert rig.gate.calls == []
    assert (await rig.canvas.replay(admin, c, None)).items == []


async def test_oversized_gesture_is_413() -> None:
    rig = await canvas_rig(MemoryItemStore(), limits=CanvasLimits(max_gesture_bytes=100))
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.gesture(make_ctx(), cid(), "pointer", {"blob": "x" * 200})
    assert (err.value.code, err.value.http_status) == ("canvas.gesture_too_large", 413)


# --- artifacts and audits ----------------------------------------------------------------------


async def test_record_emits_an_audit_event_on_the_spine() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    rec, _ = await rig.canvas.add_record(ctx, c, "audit", RecordIn(kind="review", uri="s3://b/k"))
    assert (rec.record_id, rec.content_hash, rec.uri) == ("aud_1", None, "s3://b/k")
    events = (await rig.spine.list(ctx, event_type="audit")).items
    assert [(e.payload["action"], e.payload["record_id"]) for e in events] == [
        ("canvas.audit_recorded", "aud_1")
    ]


async def test_an_audit_lost_to_a_spine_outage_is_recorded_by_the_retry() -> None:
    spine_store = FailingWrites(MemoryItemStore())
    rig = await canvas_rig(await registry_by_kind(MemoryItemStore(), event_spine=spine_store))
    ctx, c = make_ctx(), cid()
    spine_store.down = True
    record = RecordIn(kind="image", uri="s3://b/k", idempotency_key="r1")
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.add_record(ctx, c, "artifact", record)
    assert err.value.http_status == 503
    spine_store.down = False
    stored, replayed = await rig.canvas.add_record(ctx, c, "artifact", record)
    assert (stored.record_id, replayed) == ("art_1", True)
    events = (await rig.spine.list(ctx, event_type="audit")).items
    assert [(e.payload["record_id"], e.payload["replayed"]) for e in events] == [("art_1", True)]


@pytest.mark.parametrize(
    ("record", "code", "status"),
    [
        (RecordIn(kind="img"), "canvas.invalid_request", 422),
        (RecordIn(kind="img", uri="s3://x", body="b"), "canvas.invalid_request", 422),
        (RecordIn(kind="bad kind!", uri="s3://x"), "canvas.invalid_request", 422),
        (RecordIn(kind="img", body="x" * 101), "canvas.body_too_large", 413),
        (RecordIn(kind="img", body="!!", body_encoding="base64"), "canvas.invalid_request", 422),
        (
            RecordIn(kind="img", body="hi", content_hash="sha256:" + "0" * 64),
            "canvas.content_hash_mismatch",
            422,
        ),
        (RecordIn(kind="img", uri="s3://x", metadata={"m": "x" * 200}), "canvas.metadata_too_large", 413),
    ],
)
async def test_bad_record_is_an_envelope_and_writes_nothing(record: RecordIn, code: str, status: int) -> None:
    limits = CanvasLimits(max_inline_bytes=100, max_metadata_bytes=100)
    rig = await canvas_rig(MemoryItemStore(), limits=limits)
    ctx, c = make_ctx(), cid()
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.add_record(ctx, c, "artifact", record)
    assert (err.value.code, err.value.http_status) == (code, status)
    assert (await rig.canvas.list_records(ctx, c, "artifact")).items == []


async def test_base64_body_is_hashed_over_its_bytes_and_records_page_with_cursors() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    rec, _ = await rig.canvas.add_record(
        ctx, c, "artifact", RecordIn(kind="bin", body="AAEC", body_encoding="base64")
    )
    assert (rec.size, rec.content_hash) == (
        3,
        "sha256:ae4b3280e56e2faf83f414a6e3dabe9d5fbe18976544c05fed121accb85b53fc",
    )
    for i in range(4):
        await rig.canvas.add_record(ctx, c, "artifact", RecordIn(kind="bin", uri=f"s3://b/{i}"))
    first = await rig.canvas.list_records(ctx, c, "artifact", None, 2)
    rest = await rig.canvas.list_records(ctx, c, "artifact", first.next_cursor, 10)
    assert [r.record_id for r in first.items + rest.items] == [f"art_{i}" for i in range(1, 6)]
    assert first.has_more and not rest.has_more
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.list_records(ctx, c, "audit", first.next_cursor)
    assert err.value.code == "canvas.cursor_invalid"


# --- published event shapes ------------------------------------------------------------------


async def test_op_committed_and_gesture_payloads_have_exactly_the_published_fields() -> None:
    published = PUBLISHED_EVENTS
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    await rig.canvas.commit(ctx, c, command(0, create("a")))
    await rig.canvas.gesture(ctx, c, "pointer", {"x": 1})
    events = {e.type: e for e in (await rig.canvas.replay(ctx, c, None)).items}
    assert set(events["op_committed"].data) == set(published["payloads"]["op_committed"]["fields"])
    assert set(events["gesture"].data) == set(published["payloads"]["gesture"]["fields"])


# --- limits from the route -------------------------------------------------------------------


async def _route_canvas_limits(value: Any) -> Any:
    from contracts.suite import make_registry

    registry = await make_registry(MemoryItemStore())
    route, version = next((r, v) for r, v in registry.routes() if r.resource_kind == "canvas_command_store")
    await registry.set_route(
        msgspec.structs.replace(route, options=RouteOptions(canvas_limits=value)), expected_version=version
    )
    return await canvas_rig(registry)


async def test_limits_are_configurable_per_route() -> None:
    rig = await _route_canvas_limits({"max_ops_per_command": 2})
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(make_ctx(), cid(), command(0, create("a"), create("b"), create("c")))
    assert (err.value.code, err.value.details["limit"]) == ("canvas.too_many_ops", 2)


@pytest.mark.parametrize("value", [{"max_ops_per_command": 0}, {"nonsense": 1}])
async def test_unusable_route_limits_are_503_route_misconfigured(value: Any) -> None:
    rig = await _route_canvas_limits(value)
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(make_ctx(), cid(), command(0, create("a")))
    assert (err.value.code, err.value.http_status) == ("canvas.route_misconfigured", 503)


@pytest.mark.parametrize("value", [[1], {"max_atoms": "many"}, {"max_atoms": 2**64}])
async def test_ill_typed_route_limits_are_refused_when_the_route_is_set(value: Any) -> None:
    with pytest.raises(NorthstarError) as err:
        await _route_canvas_limits(value)
    assert (err.value.code, err.value.http_status) == ("routing.invalid_params", 422)
    assert err.value.details["field"].startswith("options.canvas_limits")


async def test_a_large_command_is_published_whole_on_the_canvas_stream() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx, c = make_ctx(), cid()
    ops = [create(f"a{i}", blob="x" * 20_000) for i in range(8)]  # ~160 KB, above a client event's cap
    done = await rig.canvas.commit(ctx, c, command(0, *ops))
    assert done.cursor is not None
    (event,) = (await rig.canvas.replay(ctx, c, None)).items
    assert (event.type, len(event.data["ops"])) == ("op_committed", 8)


async def test_command_size_limit_cannot_be_configured_beyond_one_stored_item() -> None:
    rig = await _route_canvas_limits({"max_command_bytes": 400_000})
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(make_ctx(), cid(), command(0, create("a")))
    assert err.value.code == "canvas.route_misconfigured"


async def test_recovery_ops_are_also_capped_by_size() -> None:
    rig = await canvas_rig(MemoryItemStore(), limits=CanvasLimits(max_recovery_bytes=25_000))
    ctx, c = make_ctx(), cid()
    for rev in range(4):
        await rig.canvas.commit(ctx, c, command(rev, create(f"a{rev}", blob="x" * 10_000)))
    with pytest.raises(NorthstarError) as err:
        await rig.canvas.commit(ctx, c, command(0, create("late")))
    details = err.value.details
    assert [r["rev"] for r in details["recovery_ops"]] == [1, 2]
    assert (details["expected_rev"], details["snapshot_required"]) == (4, True)
