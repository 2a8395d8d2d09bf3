"""The event-stream timeline: ordered tenant-scoped streams, signed cursors, exactly-once
publishing, ordered series, live follow."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.suite.canvas import canvas_rig, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from northstar_core.scope import is_subject_stream, subject_stream
from northstar_core.timeline import PendingEvent


async def test_events_carry_type_data_time_and_routing_ids_and_event_id_is_the_cursor() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx(run_id="run1", step_id="st1", trace_id="tr1", request_id="req-9")
    cursor = await rig.timeline.publish(ctx, "s1", "note", {"a": 1})
    (event,) = (await rig.timeline.list(ctx, "s1")).items
    assert (event.event_id, event.seq, event.type, event.data) == (cursor, 1, "note", {"a": 1})
    assert (event.request_id, event.run_id, event.step_id, event.trace_id) == ("req-9", "run1", "st1", "tr1")
    assert event.actor_id == "u1" and event.ts.endswith("Z")


async def test_same_key_with_other_data_is_422_idempotency_mismatch() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx()
    await rig.timeline.publish(ctx, "s1", "note", {"a": 1}, idempotency_key="k")
    with pytest.raises(NorthstarError) as err:
        await rig.timeline.publish(ctx, "s1", "note", {"a": 2}, idempotency_key="k")
    assert (err.value.code, err.value.http_status) == ("event_stream.idempotency_mismatch", 422)


@pytest.mark.parametrize(
    ("stream_id", "event_type", "data", "code", "status"),
    [
        ("bad id!", "note", {}, "event_stream.invalid_id", 422),
        ("s1", "Bad Type", {}, "event_stream.invalid_event_type", 422),
        ("s1", "note", {"blob": "x" * 70_000}, "event_stream.event_too_large", 413),
    ],
)
async def test_bad_event_is_an_error_and_writes_nothing(
    stream_id: str, event_type: str, data: dict[str, Any], code: str, status: int
) -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx()
    with pytest.raises(NorthstarError) as err:
        await rig.timeline.publish(ctx, stream_id, event_type, data)
    assert (err.value.code, err.value.http_status) == (code, status)
    assert (await rig.timeline.list(ctx, "s1")).items == []


async def test_cursor_ahead_of_the_head_or_of_another_mode_is_410() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx()
    await rig.timeline.publish(ctx, "s1", "note", {})
    ahead = rig.timeline.cursor(ctx, "s1", 5)
    with pytest.raises(NorthstarError) as err:
        await rig.timeline.list(ctx, "s1", ahead)
    assert (err.value.code, err.value.details["cursor"]) == ("event_stream.cursor_invalid", ahead)
    other_mode = make_ctx(mode="saas")
    with pytest.raises(NorthstarError):
        await rig.timeline.list(other_mode, "s1", rig.timeline.cursor(ctx, "s1", 1))


async def test_streams_of_two_tenants_with_one_id_are_separate() -> None:
    rig = await canvas_rig(MemoryItemStore())
    await rig.timeline.publish(make_ctx("t_a"), "s1", "note", {"who": "a"})
    await rig.timeline.publish(make_ctx("t_b"), "s1", "note", {"who": "b"})
    assert [e.data["who"] for e in (await rig.timeline.list(make_ctx("t_a"), "s1")).items] == ["a"]
    assert [e.data["who"] for e in (await rig.timeline.list(make_ctx("t_b"), "s1")).items] == ["b"]


async def test_client_append_needs_member_and_may_not_write_subject_streams() -> None:
    rig = await canvas_rig(MemoryItemStore())
    with pytest.raises(NorthstarError) as err:
        await rig.timeline.append(make_ctx(roles=("viewer",)), "s1", "note", {})
    assert err.value.code == "auth.forbidden_role"
    assert is_subject_stream(subject_stream("canvas", "c1"))
    with pytest.raises(NorthstarError) as err:
        await rig.timeline.append(make_ctx(), "canvas:c1", "op_committed", {"rev": 1})
    assert (err.value.code, err.value.http_status) == ("event_stream.reserved_stream", 403)
    event, replayed = await rig.timeline.append(make_ctx(is_system=True), "canvas:c1", "system", {"m": 1})
    assert (event.type, replayed) == ("system", False)
    again, replayed = await rig.timeline.append(make_ctx(), "s1", "note", {}, idempotency_key="k")
    same, replayed2 = await rig.timeline.append(make_ctx(), "s1", "note", {}, idempotency_key="k")
    assert (replayed, replayed2, same.event_id) == (False, True, again.event_id)


async def test_ordered_series_publishes_each_position_once_in_order() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx()
    with pytest.raises(ValueError):
        await rig.timeline.publish_ordered(ctx, "s1", "op_committed", {"rev": 2}, series="ops", position=2)
    cursors = await asyncio.gather(
        *(
            rig.timeline.publish_ordered(ctx, "s1", "op_committed", {"rev": 1}, series="ops", position=1)
            for _ in range(5)
        )
    )
    assert len(set(cursors)) == 1
    await rig.timeline.publish(ctx, "s1", "gesture", {})
    await rig.timeline.publish_ordered(ctx, "s1", "op_committed", {"rev": 2}, series="ops", position=2)
    assert await rig.timeline.published(ctx, "s1", "ops") == 2
    assert await rig.timeline.ordered_cursor(ctx, "s1", "ops", 1) == cursors[0]
    assert await rig.timeline.ordered_cursor(ctx, "s1", "ops", 3) is None
    page = await rig.timeline.list(ctx, "s1")
    assert [(e.type, e.data.get("rev")) for e in page.items] == [
        ("op_committed", 1),
        ("gesture", None),
        ("op_committed", 2),
    ]


async def test_events_preceding_a_position_go_on_the_stream_with_it_once() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx()
    decision = PendingEvent(
        stream_id="s1", type="safety_decision", data={"decision": "allow"}, idempotency_key="safety-e1"
    )
    cursors = await asyncio.gather(
        *(
            rig.timeline.publish_ordered(
                ctx, "s1", "op_committed", {"rev": 1}, series="ops", position=1, preceded_by=[decision]
            )
            for _ in range(3)
        )
    )
    assert len(set(cursors)) == 1
    page = await rig.timeline.list(ctx, "s1")
    assert [e.type for e in page.items] == ["safety_decision", "op_committed"]
    assert cursors[0] == page.items[1].event_id  # the position's own cursor
    # the preceding event is a keyed publish: its key answers a repeat
    again = await rig.timeline.publish(
        ctx, "s1", "safety_decision", {"decision": "allow"}, idempotency_key="safety-e1"
    )
    assert again == page.items[0].event_id
    elsewhere = msgspec.structs.replace(decision, stream_id="s2")
    with pytest.raises(ValueError):
        await rig.timeline.publish_ordered(
            ctx, "s1", "op_committed", {"rev": 2}, series="ops", position=2, preceded_by=[elsewhere]
        )


async def test_follow_replays_then_delivers_live_events_once_in_order() -> None:
    rig = await canvas_rig(MemoryItemStore())
    ctx = make_ctx()
    await rig.timeline.publish(ctx, "s1", "note", {"i": 0})
    await rig.timeline.publish(ctx, "s1", "note", {"i": 1})
    got: list[int] = []

    async def consume() -> None:
        async for event in rig.timeline.follow(ctx, "s1", 1, heartbeat=5):
            if event is not None:
                got.append(event.data["i"])
                if len(got) == 3:
                    return

    task = asyncio.create_task(consume())
    for _ in range(200):
        if rig.tails.active_streams:
            break
        await asyncio.sleep(0.01)
    await rig.timeline.publish(ctx, "s1", "note", {"i": 2})
    await rig.timeline.publish(ctx, "s1", "note", {"i": 2}, idempotency_key=None)  # a new event
    await asyncio.wait_for(task, 10)
    assert got == [1, 2, 2]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 3)), max_size=25),
    st.integers(1, 7),
)
def test_pages_concatenate_to_the_published_events_with_each_key_once(
    publishes: list[tuple[str | None, int]], page_size: int
) -> None:
    async def scenario() -> None:
        rig = await canvas_rig(MemoryItemStore())
        ctx = make_ctx()
        model: list[dict[str, Any]] = []
        used: dict[str, dict[str, Any]] = {}
        for key, value in publishes:
            data = {"v": value}
            if key is not None and key in used:
                if used[key] != data:
                    with pytest.raises(NorthstarError):
                        await rig.timeline.publish(ctx, "s", "note", data, idempotency_key=key)
                else:
                    await rig.timeline.publish(ctx, "s", "note", data, idempotency_key=key)
                continue
            await rig.timeline.publish(ctx, "s", "note", data, idempotency_key=key)
            if key is not None:
                used[key] = data
            model.append(data)
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await rig.timeline.list(ctx, "s", cursor, page_size)
            seen += [e.data for e in page.items]
            cursor = page.next_cursor
            if not page.has_more:
                break
        assert seen == model

    asyncio.run(scenario())
