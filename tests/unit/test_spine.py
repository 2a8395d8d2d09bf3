"""The event spine: validated append-only events, replay by run, list by type/source/time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.ids import UUIDv7Generator, uuid7_ms
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RoutingRegistry, Target
from northstar_core.spine import EventSpine
from northstar_core.storage import ItemStore

SECRET = b"spine-test-secret-0123456789"


class _OneStore:
    def __init__(self, store: ItemStore) -> None:
        self.store = store

    def open(self, target: Target) -> ItemStore:
        return self.store


async def make_registry(store: ItemStore) -> RoutingRegistry:
    connections = {"mem": Connection(name="mem", backend="memory")}
    registry = RoutingRegistry(
        MemoryItemStore(), _OneStore(store), connections=connections, deployment_mode="lab"
    )
    for kind in RESOURCE_KINDS:
        await registry.set_route(Route(resource_kind=kind, connection="mem"))
    return registry


def ctx(tenant: str = "t_a", *, run_id: str | None = "run1", **kw: object) -> RequestContext:
    base: dict[str, object] = dict(
        tenant_id=tenant,
        mode="lab",
        user_id="u1",
        roles=("member",),
        run_id=run_id,
        step_id="s1",
        request_id="req-1",
    )
    base.update(kw)
    return RequestContext(**base)  # type: ignore[arg-type]


@pytest.fixture
async def spine() -> EventSpine:
    return EventSpine(await make_registry(MemoryItemStore()), CursorCodec(SECRET), clock=ManualClock())


async def test_append_assigns_id_route_timestamp_and_identity_from_context(spine: EventSpine) -> None:
    event = await spine.append(ctx(), {"event_type": "analytics", "source": "ui", "payload": {"k": 1}})
    assert uuid.UUID(event.event_id).version == 7
    assert event.route == "event_spine:memory"
    assert (event.tenant_id, event.mode, event.user_id) == ("t_a", "lab", "u1")
    assert (event.run_id, event.step_id) == ("run1", "s1")
    assert event.timestamp == iso(ManualClock().now())
    assert await spine.get(ctx(), event.event_id) == event


@pytest.mark.parametrize(
    "body",
    [
        {"source": "ui"},
        {"event_type": "analytics"},
        {"event_type": "analytics", "source": "nowhere"},
        {"event_type": "Bad Type", "source": "ui"},
        {"event_type": "analytics", "source": "ui", "payload": [1]},
        {"event_type": "analytics", "source": "ui", "event_id": "x"},
        {"event_type": "analytics", "source": "ui", "run_id": "bad id with spaces"},
        {"event_type": "analytics", "source": "ui", "parent_event_id": "not-a-uuid"},
    ],
)
async def test_invalid_events_are_422_and_nothing_is_written(
    spine: EventSpine, body: dict[str, object]
) -> None:
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(), body)
    assert (info.value.http_status, info.value.code) == (422, "event_spine.invalid_event")
    assert (await spine.list(ctx())).items == []


async def test_run_id_is_required_from_body_or_context(spine: EventSpine) -> None:
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(run_id=None), {"event_type": "rl", "source": "agent"})
    assert info.value.details["field"] == "run_id"
    event = await spine.append(ctx(run_id=None), {"event_type": "rl", "source": "agent", "run_id": "r9"})
    assert event.run_id == "r9"


async def test_body_identity_contradicting_the_context_is_refused_and_audited(spine: EventSpine) -> None:
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(), {"event_type": "rl", "source": "agent", "tenant_id": "t_other"})
    assert (info.value.http_status, info.value.code) == (403, "auth.identity_mismatch")
    page = await spine.list(ctx())
    assert [e.event_type for e in page.items] == ["audit"]


async def test_clients_cannot_forge_server_only_event_types(spine: EventSpine) -> None:
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(), {"event_type": "safety", "source": "ui"}, client=True)
    assert info.value.code == "event_spine.reserved_event_type"
    system = ctx(is_system=True)
    assert (await spine.append(system, {"event_type": "safety", "source": "system"}, client=True)).event_type


async def test_replay_returns_a_runs_events_in_order_across_pages(spine: EventSpine) -> None:
    ids = [
        (await spine.append(ctx(), {"event_type": "rl", "source": "agent", "payload": {"i": i}})).event_id
        for i in range(7)
    ]
    await spine.append(ctx(run_id="other"), {"event_type": "rl", "source": "agent"})
    seen: list[str] = []
    cursor = None
    while True:
        page = await spine.replay(ctx(), "run1", cursor=cursor, limit=3)
        seen += [e.event_id for e in page.items]
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert seen == ids
    # a later append is found after the last cursor, nothing repeated
    late = await spine.append(ctx(), {"event_type": "rl", "source": "agent"})
    assert [e.event_id for e in (await spine.replay(ctx(), "run1", cursor=cursor)).items] == [late.event_id]


async def test_list_filters_by_type_source_and_time(spine: EventSpine) -> None:
    clock = spine.clock
    assert isinstance(clock, ManualClock)
    a = await spine.append(ctx(), {"event_type": "analytics", "source": "ui"})
    clock.advance(10)
    b = await spine.append(ctx(), {"event_type": "analytics", "source": "agent"})
    clock.advance(10)
    c = await spine.append(ctx(), {"event_type": "rl", "source": "agent"})
    ids = lambda page: [e.event_id for e in page.items]  # noqa: E731
    assert ids(await spine.list(ctx(), event_type="analytics")) == [a.event_id, b.event_id]
    assert ids(await spine.list(ctx(), source="agent")) == [b.event_id, c.event_id]
    assert ids(await spine.list(ctx(), event_type="analytics", source="agent")) == [b.event_id]
    assert ids(await spine.list(ctx(), since=b.timestamp)) == [b.event_id, c.event_id]
    assert ids(await spine.list(ctx(), until=b.timestamp)) == [a.event_id]
    assert ids(await spine.list(ctx(), since=a.timestamp, until=c.timestamp)) == [a.event_id, b.event_id]


async def test_reads_and_cursors_never_cross_tenants(spine: EventSpine) -> None:
    await spine.append(ctx("t_a"), {"event_type": "rl", "source": "agent"})
    await spine.append(ctx("t_a"), {"event_type": "rl", "source": "agent"})
    assert (await spine.list(ctx("t_b"))).items == []
    assert (await spine.replay(ctx("t_b"), "run1")).items == []
    page = await spine.replay(ctx("t_a"), "run1", limit=1)
    assert page.next_cursor
    with pytest.raises(NorthstarError) as info:
        await spine.replay(ctx("t_b"), "run1", cursor=page.next_cursor)
    assert (info.value.http_status, info.value.code) == (410, "event_spine.cursor_invalid")
    with pytest.raises(NorthstarError):  # a run cursor is not a list cursor either
        await spine.list(ctx("t_a"), cursor=page.next_cursor)
    with pytest.raises(NorthstarError):
        await spine.replay(ctx("t_a"), "other-run", cursor=page.next_cursor)


async def test_concurrent_appends_are_all_stored_in_id_order(spine: EventSpine) -> None:
    events = await asyncio.gather(
        *(
            spine.append(ctx(), {"event_type": "rl", "source": "agent", "payload": {"i": i}})
            for i in range(200)
        )
    )
    stored = (await spine.replay(ctx(), "run1", limit=500)).items
    assert len(stored) == 200
    assert sorted(e.event_id for e in events) == [e.event_id for e in stored]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=1e9, max_value=4e9, allow_nan=False), min_size=2, max_size=50))
def test_uuid7_ids_strictly_increase_within_a_process_even_if_the_clock_goes_back(times: list[float]) -> None:
    gen = UUIDv7Generator()
    ids = [gen.next(t) for t in times]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert uuid7_ms(ids[0]) == int(times[0] * 1000)


appends = st.lists(
    st.tuples(
        st.sampled_from(["t_a", "t_b"]),
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(["rl", "analytics", "tuning"]),
        st.sampled_from(["ui", "agent"]),
        st.integers(0, 3),  # seconds to advance first
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(appends, st.integers(1, 7))
def test_replay_and_list_match_a_reference_log(ops: list[tuple[str, str, str, str, int]], page: int) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        spine = EventSpine(await make_registry(MemoryItemStore()), CursorCodec(SECRET), clock=clock)
        log: list[tuple[str, str, str, str, str]] = []
        for tenant, run, etype, source, wait in ops:
            clock.advance(wait)
            e = await spine.append(ctx(tenant, run_id=run), {"event_type": etype, "source": source})
            log.append((tenant, run, etype, source, e.event_id))

        async def drain(fetch: Any) -> list[str]:
            out: list[str] = []
            cursor = None
            while True:
                p = await fetch(cursor)
                out += [e.event_id for e in p.items]
                cursor = p.next_cursor
                if not p.has_more:
                    return out

        for tenant in ("t_a", "t_b"):
            c = ctx(tenant)
            for run in ("r1", "r2"):
                got = await drain(lambda cur, run=run, c=c: spine.replay(c, run, cursor=cur, limit=page))
                assert got == [x[4] for x in log if x[0] == tenant and x[1] == run]
            for etype in (None, "rl"):
                for source in (None, "agent"):
                    got = await drain(
                        lambda cur, c=c, etype=etype, source=source: spine.list(
                            c, event_type=etype, source=source, cursor=cur, limit=page
                        )
                    )
                    assert got == [
                        x[4]
                        for x in log
                        if x[0] == tenant and etype in (None, x[2]) and source in (None, x[3])
                    ]

    asyncio.run(scenario())


async def test_a_retried_append_with_the_same_key_returns_the_first_event_and_writes_nothing(
    spine: EventSpine,
) -> None:
    body = {"event_type": "rl", "source": "agent", "payload": {"reward": 1}, "idempotency_key": "k1"}
    first = await spine.append(ctx(), body)
    again = await spine.append(ctx(), body)
    assert again == first
    assert [e.event_id for e in (await spine.replay(ctx(), run_id="run1")).items] == [first.event_id]


async def test_the_same_key_with_a_different_event_is_422_and_writes_nothing(spine: EventSpine) -> None:
    body = {"event_type": "rl", "source": "agent", "payload": {"r": 1}, "idempotency_key": "k"}
    await spine.append(ctx(), body)
    with pytest.raises(NorthstarError) as info:
        await spine.append(
            ctx(), {"event_type": "rl", "source": "agent", "payload": {"r": 2}, "idempotency_key": "k"}
        )
    assert (info.value.code, info.value.http_status) == ("event_spine.idempotency_mismatch", 422)
    assert len((await spine.replay(ctx(), run_id="run1")).items) == 1


async def test_concurrent_retries_of_one_keyed_append_store_one_event(spine: EventSpine) -> None:
    body = {"event_type": "tuning", "source": "agent", "payload": {"lr": 0.1}, "idempotency_key": "same"}
    events = await asyncio.gather(*(spine.append(ctx(), body) for _ in range(8)))
    assert len({e.event_id for e in events}) == 1
    assert len((await spine.replay(ctx(), run_id="run1")).items) == 1


async def test_idempotency_keys_are_scoped_to_the_tenant(spine: EventSpine) -> None:
    body = {"event_type": "rl", "source": "agent", "payload": {"r": 1}, "idempotency_key": "shared"}
    a = await spine.append(ctx("t_a"), body)
    b = await spine.append(ctx("t_b"), {**body, "payload": {"r": 2}})
    assert a.event_id != b.event_id and b.tenant_id == "t_b"


async def test_a_caller_made_id_is_the_events_id_and_is_written_once(spine: EventSpine) -> None:
    event_id = spine.new_event_id()
    assert uuid.UUID(event_id).version == 7
    event = await spine.record(ctx(), "safety", {"decision": "allow"}, event_id=event_id)
    assert event.event_id == event_id
    assert await spine.get(ctx(), event_id) == event
    with pytest.raises(NorthstarError) as info:
        await spine.record(ctx(), "safety", {"decision": "deny"}, event_id=event_id)
    assert (info.value.http_status, info.value.code) == (503, "event_spine.contention")
    stored = (await spine.list(ctx(), event_type="safety")).items
    assert [e.payload for e in stored] == [{"decision": "allow"}]


async def test_a_caller_made_id_must_be_an_event_id(spine: EventSpine) -> None:
    with pytest.raises(NorthstarError) as info:
        await spine.record(ctx(), "safety", {}, event_id="not-a-uuid")
    assert (info.value.http_status, info.value.code) == (422, "event_spine.invalid_event")


async def test_a_keyed_record_replays_its_first_event(spine: EventSpine) -> None:
    first = await spine.record(ctx(), "audit", {"a": 1}, idempotency_key="once", request_fingerprint="fp")
    again = await spine.record(ctx(), "audit", {"a": 2}, idempotency_key="once", request_fingerprint="fp")
    assert again == first
    with pytest.raises(NorthstarError) as info:
        await spine.record(ctx(), "audit", {"a": 1}, idempotency_key="once", request_fingerprint="other")
    assert info.value.code == "event_spine.idempotency_mismatch"
    assert len((await spine.list(ctx(), event_type="audit")).items) == 1
