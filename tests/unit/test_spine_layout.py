"""The spine's cloud layout: time buckets and shards, two items per event, idempotency claims,
run starts, and reads that merge shards and walk buckets without losing or repeating an event."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.round_trips import InstrumentedStore, Trace
from northstar_adapters.memory import MemoryItemStore
from northstar_core.analytics import AnalyticsService
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.buckets import BUCKET_MS, DEFAULT_MAX_BUCKETS, bucket_of, shard_of
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RouteOptions, RoutingRegistry, Target
from northstar_core.spine import EventSpine
from northstar_core.storage import BackendUnavailable, ItemStore, Op

SECRET = b"spine-layout-secret-0123456789"
HOUR = BUCKET_MS / 1000


class _OneStore:
    def __init__(self, store: ItemStore) -> None:
        self.store = store

    def open(self, target: Target) -> ItemStore:
        return self.store


async def make_registry(store: ItemStore, shards: int | None = None) -> RoutingRegistry:
    registry = RoutingRegistry(
        MemoryItemStore(),
        _OneStore(store),
        connections={"mem": Connection(name="mem", backend="memory")},
        deployment_mode="lab",
    )
    for kind in RESOURCE_KINDS:
        options = RouteOptions(shards=shards) if kind == "event_spine" and shards else RouteOptions()
        await registry.set_route(Route(resource_kind=kind, connection="mem", options=options))
    return registry


def ctx(tenant: str = "t_a", *, run_id: str | None = "run1") -> RequestContext:
    return RequestContext(
        tenant_id=tenant, mode="lab", user_id="u1", roles=("member",), run_id=run_id, step_id="s1",
        request_id="req-1",
    )


async def drain(fetch: Any) -> tuple[list[str], int]:
    """Every event id of a paged read, following cursors while ``has_more``; and the pages."""
    out: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await fetch(cursor)
        pages += 1
        assert pages < 500, "paging does not advance"
        out += [e.event_id for e in page.items]
        if not page.has_more:
            return out, pages
        assert page.next_cursor is not None
        cursor = page.next_cursor


async def test_an_event_is_two_items_in_the_partition_of_its_hour_and_its_runs_shard() -> None:
    store = MemoryItemStore()
    spine = EventSpine(await make_registry(store, shards=5), CursorCodec(SECRET), clock=ManualClock())
    event = await spine.append(ctx(run_id="run-x"), {"event_type": "rl", "source": "agent"})
    partition = f"t_a|lab|spine|{bucket_of(event.event_id)}|{shard_of('run-x', 5):02d}"
    keys = [item.key for item in await store.query(partition, "", limit=10)]
    assert keys == [f"er#run-x#{event.event_id}", f"ev#{event.event_id}"]
    # the hour is in the directory with its shard count, the run's start in the registry
    directory = await store.query("t_a|lab|spine|buckets", "b#", limit=10)
    assert [(i.key, msgspec.json.decode(i.value)) for i in directory] == [
        (f"b#{bucket_of(event.event_id)}", {"shards": 5})
    ]


appends = st.lists(
    st.tuples(
        st.sampled_from(["t_a", "t_b"]),
        st.sampled_from(["r1", "r2", "r3"]),
        st.sampled_from(["rl", "analytics", "tuning"]),
        st.sampled_from(["ui", "agent"]),
        # seconds to advance first: same millisecond, same hour, the next hours, days later
        st.sampled_from([0, 0.5, 1, 600, HOUR, 2 * HOUR + 7, 3 * 86_400]),
        st.booleans(),  # change the shard count before this append
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(appends, st.integers(1, 6), st.sampled_from([0, 1, HOUR + 121, 30 * 86_400]))
def test_replay_and_list_match_a_reference_log_across_hours_and_shard_counts(
    ops: list[tuple[str, str, str, str, float, bool]], page: int, read_later: float
) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        store = MemoryItemStore()
        registry = await make_registry(store, shards=3)
        spine = EventSpine(registry, CursorCodec(SECRET), clock=clock)
        log: list[tuple[str, str, str, str, str, float]] = []
        shards = 3
        for tenant, run, etype, source, wait, reshard in ops:
            clock.advance(wait)
            if reshard:
                shards = 1 + shards % 7
                await registry.set_route(
                    Route(resource_kind="event_spine", connection="mem", options=RouteOptions(shards=shards))
                )
            e = await spine.append(ctx(tenant, run_id=run), {"event_type": etype, "source": source})
            log.append((tenant, run, etype, source, e.event_id, clock.now()))
        clock.advance(read_later)  # read while the last hour is open, just closed, long closed
        for tenant in ("t_a", "t_b"):
            c = ctx(tenant)
            for run in ("r1", "r2", "r3"):
                got, _ = await drain(lambda cur, run=run, c=c: spine.replay(c, run, cursor=cur, limit=page))
                assert got == [x[4] for x in log if x[0] == tenant and x[1] == run]
            for etype in (None, "rl"):
                for source in (None, "agent"):
                    got, _ = await drain(
                        lambda cur, c=c, etype=etype, source=source: spine.list(
                            c, event_type=etype, source=source, cursor=cur, limit=page
                        )
                    )
                    assert got == [
                        x[4]
                        for x in log
                        if x[0] == tenant and etype in (None, x[2]) and source in (None, x[3])
                    ]
            if log:
                # a time window: [since, until) by the events' own timestamps
                mid = log[len(log) // 2]
                since = (await spine.get(ctx(mid[0]), mid[4]))
                assert since is not None
                got, _ = await drain(
                    lambda cur, c=c, s=since.timestamp: spine.list(c, since=s, cursor=cur, limit=page)
                )
                assert got == [x[4] for x in log if x[0] == tenant and x[4] >= _floor_of(since.event_id)]

    asyncio.run(scenario())


def _floor_of(event_id: str) -> str:
    from northstar_core.kernel.ids import uuid7_floor, uuid7_ms

    return uuid7_floor(uuid7_ms(event_id))


async def test_a_poller_at_the_end_gets_each_later_event_once_also_across_an_hour() -> None:
    clock = ManualClock(1_800_000_000.0 - 5)  # 5 s before an hour ends
    spine = EventSpine(await make_registry(MemoryItemStore(), shards=4), CursorCodec(SECRET), clock=clock)
    seen: list[str] = []
    written: list[str] = []
    cursor = None
    for step in range(12):
        for _ in range(step % 3):
            event = await spine.append(ctx(run_id=f"r{step}"), {"event_type": "rl", "source": "ui"})
            written.append(event.event_id)
        page = await spine.list(ctx(), cursor=cursor, limit=2)
        seen += [e.event_id for e in page.items]
        cursor = page.next_cursor or cursor
        clock.advance(1)
    while True:
        page = await spine.list(ctx(), cursor=cursor, limit=2)
        seen += [e.event_id for e in page.items]
        cursor = page.next_cursor or cursor
        if not page.items:
            break
    assert seen == written and len({bucket_of(i) for i in written}) == 2


async def test_a_filtered_page_over_a_long_quiet_history_costs_a_bounded_number_of_requests() -> None:
    clock = ManualClock()
    inner = MemoryItemStore()
    trace = Trace(delay=0)
    shards = 6
    spine = EventSpine(
        await make_registry(InstrumentedStore(inner, "event_spine", trace), shards=shards),
        CursorCodec(SECRET),
        clock=clock,
    )
    for _ in range(40):  # one event an hour, none of them of the type asked for
        await spine.append(ctx(), {"event_type": "rl", "source": "ui"})
        clock.advance(HOUR)
    wanted = await spine.append(ctx(), {"event_type": "tuning", "source": "ui"})
    costs: list[int] = []

    async def fetch(cursor: str | None) -> Any:
        trace.start()
        page = await spine.list(ctx(), event_type="tuning", cursor=cursor, limit=10)
        costs.append(trace.stop().total)
        return page

    got, pages = await drain(fetch)
    assert got == [wanted.event_id]
    # each page: the directory, then every shard of at most DEFAULT_MAX_BUCKETS hours
    assert max(costs) <= 1 + DEFAULT_MAX_BUCKETS * shards
    assert pages >= 40 // DEFAULT_MAX_BUCKETS


class _DropsEvents(MemoryItemStore):
    """Fault injection: the next write of an event's items fails as a lost connection."""

    fail_next = False

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        if self.fail_next and any(op.key.startswith("ev#") for op in ops):
            self.fail_next = False
            raise BackendUnavailable("connection reset")
        await super().write(partition, ops)


async def test_a_keyed_append_cut_between_claim_and_event_is_completed_once_by_its_retry() -> None:
    store = _DropsEvents()
    spine = EventSpine(await make_registry(store), CursorCodec(SECRET), clock=ManualClock())
    body = {"event_type": "rl", "source": "agent", "idempotency_key": "k-1", "payload": {"n": 1}}
    store.fail_next = True
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(), body)
    assert info.value.http_status == 503
    assert (await spine.replay(ctx(), "run1")).items == []  # nothing acknowledged, nothing listed
    first = await spine.append(ctx(), body)
    again = await spine.append(ctx(), body)
    assert first == again
    assert [e.event_id for e in (await spine.replay(ctx(), "run1")).items] == [first.event_id]
    assert [e.event_id for e in (await spine.list(ctx())).items] == [first.event_id]


async def test_concurrent_keyed_appends_store_one_event_and_all_answer_it() -> None:
    registry = await make_registry(MemoryItemStore(), shards=4)
    spine = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock())
    body = {"event_type": "rl", "source": "agent", "idempotency_key": "k-2"}
    results = await asyncio.gather(*(spine.append(ctx(), body) for _ in range(16)))
    assert len({r.event_id for r in results}) == 1
    assert len((await spine.list(ctx())).items) == 1
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(), {**body, "payload": {"other": True}})
    assert info.value.code == "event_spine.idempotency_mismatch"


async def test_an_idempotency_key_is_remembered_for_a_day() -> None:
    clock = ManualClock()
    store = MemoryItemStore(clock=clock.now)  # the store expires items on the same clock
    spine = EventSpine(await make_registry(store), CursorCodec(SECRET), clock=clock)
    body = {"event_type": "rl", "source": "agent", "idempotency_key": "k-3"}
    first = await spine.append(ctx(), body)
    clock.advance(86_400 - 1)
    assert await spine.append(ctx(), body) == first
    clock.advance(2)
    later = await spine.append(ctx(), body)
    assert later.event_id != first.event_id


async def test_a_run_whose_earlier_event_lands_later_still_replays_from_its_start() -> None:
    store = MemoryItemStore()
    registry = await make_registry(store, shards=3)
    ahead = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock(1_800_000_000.0 + 2 * HOUR))
    behind = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock(1_800_000_000.0))
    late = await ahead.append(ctx(run_id="r-skew"), {"event_type": "rl", "source": "agent"})
    early = await behind.append(ctx(run_id="r-skew"), {"event_type": "rl", "source": "agent"})
    fresh = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock(1_800_000_000.0 + 3 * HOUR))
    got, _ = await drain(lambda cur: fresh.replay(ctx(), "r-skew", cursor=cur, limit=1))
    assert got == [early.event_id, late.event_id]


async def test_server_events_outside_a_run_replay_by_their_request_run() -> None:
    spine = EventSpine(await make_registry(MemoryItemStore()), CursorCodec(SECRET), clock=ManualClock())
    no_run = ctx(run_id=None)
    a = await spine.record(no_run, "safety", {"n": 1})
    b = await spine.record(no_run, "safety", {"n": 2})
    assert a.run_id == b.run_id and a.run_id.startswith("request:")
    assert [e.event_id for e in (await spine.replay(ctx(), a.run_id)).items] == [a.event_id, b.event_id]


async def test_a_filtered_page_never_passes_an_unread_event_of_a_full_shard() -> None:
    # two runs on two different shards: the first holds many events the filter rejects, then
    # one it accepts; the second shard's accepted event comes after all of them
    shards = 2
    busy = "run-a"
    quiet = next(r for r in (f"run-{i}" for i in range(100)) if shard_of(r, shards) != shard_of(busy, shards))
    clock = ManualClock()
    registry = await make_registry(MemoryItemStore(), shards=shards)
    spine = EventSpine(registry, CursorCodec(SECRET), clock=clock)
    for _ in range(5):
        await spine.append(ctx(run_id=busy), {"event_type": "tuning", "source": "ui"})
        clock.advance(1)
    a = await spine.append(ctx(run_id=busy), {"event_type": "rl", "source": "ui"})
    clock.advance(1)
    b = await spine.append(ctx(run_id=quiet), {"event_type": "rl", "source": "ui"})
    got, _ = await drain(lambda cur: spine.list(ctx(), event_type="rl", cursor=cur, limit=1))
    assert got == [a.event_id, b.event_id]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from([0, 0.5, 900, HOUR, 5 * 86_400]), max_size=25),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_analytics_events_spread_over_hours_and_shards_list_in_arrival_order(
    waits: list[float], shards: int, page: int
) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        store = MemoryItemStore()
        registry = await make_registry(store)
        await registry.set_route(
            Route(resource_kind="analytics_store", connection="mem", options=RouteOptions(shards=shards))
        )
        spine = EventSpine(registry, CursorCodec(SECRET), clock=clock)
        analytics = AnalyticsService(registry, CursorCodec(SECRET), clock, spine)
        ids: list[str] = []
        for i, wait in enumerate(waits):
            clock.advance(wait)
            body = {"kind": "custom", "name": f"e{i}", "idempotency_key": f"k{i}"}
            ids.append((await analytics.record(ctx(), body)).event_id)
            # a retry answers the stored event and stores nothing more
            assert (await analytics.record(ctx(), body)).event_id == ids[-1]
        got, _ = await drain(lambda cur: analytics.list(ctx(), cursor=cur, limit=page))
        assert got == ids
        # one item per event, each in the partition of its hour and shard
        for event_id in ids:
            bucket = bucket_of(event_id)
            partition = f"t_a|lab|analytics|{bucket}|{shard_of(event_id, shards):02d}"
            assert await store.get(partition, f"e#{event_id}") is not None
        assert (await analytics.list(ctx("t_b"))).items == []

    asyncio.run(scenario())


async def test_a_client_run_named_like_a_request_run_still_replays_from_its_first_event() -> None:
    registry = await make_registry(MemoryItemStore(), shards=3)
    spine = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock(1_800_000_000.0))
    later_hour = bucket_of(spine.new_event_id())[:-1] + "9"  # names an hour after its events
    run = f"request:{later_hour}:x"
    a = await spine.append(ctx(run_id=run), {"event_type": "rl", "source": "agent"})
    b = await spine.append(ctx(run_id=run), {"event_type": "rl", "source": "agent"})
    assert [e.event_id for e in (await spine.replay(ctx(), run)).items] == [a.event_id, b.event_id]


async def test_a_run_named_by_a_uuid7_needs_no_registry_entry_and_replays_from_its_hour() -> None:
    store = MemoryItemStore()
    clock = ManualClock()
    spine = EventSpine(await make_registry(store, shards=3), CursorCodec(SECRET), clock=clock)
    run = f"agent:{spine.new_event_id()}"
    a = await spine.append(ctx(run_id=run), {"event_type": "rl", "source": "agent"})
    clock.advance(3 * HOUR)
    b = await spine.append(ctx(run_id=run), {"event_type": "rl", "source": "agent"})
    plain = await spine.append(ctx(run_id="plain-run"), {"event_type": "rl", "source": "agent"})
    registered = [
        item.key for slot in range(64) for item in await store.query(f"t_a|lab|spine|runs|{slot:02d}", "r#")
    ]
    assert registered == ["r#plain-run"]
    assert [e.event_id for e in (await spine.replay(ctx(), run)).items] == [a.event_id, b.event_id]
    assert [e.event_id for e in (await spine.replay(ctx(), "plain-run")).items] == [plain.event_id]


class _Restarts(MemoryItemStore):
    """Fault injection: a backend that goes down and comes back empty (a restarted emulator)."""

    down = False

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        if self.down:
            raise BackendUnavailable("connection refused")
        await super().write(partition, ops)

    async def ping(self) -> None:
        if self.down:
            raise BackendUnavailable("connection refused")
        await super().ping()

    def restart_empty(self) -> None:
        self._parts.clear()
        self.down = False


async def test_after_the_backend_lost_its_data_new_events_are_listed_and_replayed() -> None:
    store = _Restarts()
    spine = EventSpine(await make_registry(store, shards=3), CursorCodec(SECRET), clock=ManualClock())
    await spine.append(ctx(run_id="plain-run"), {"event_type": "rl", "source": "agent"})
    store.down = True
    with pytest.raises(NorthstarError) as info:
        await spine.append(ctx(run_id="plain-run"), {"event_type": "rl", "source": "agent"})
    assert info.value.http_status == 503
    store.restart_empty()
    after = await spine.append(ctx(run_id="plain-run"), {"event_type": "rl", "source": "agent"})
    assert [e.event_id for e in (await spine.list(ctx())).items] == [after.event_id]
    assert [e.event_id for e in (await spine.replay(ctx(), "plain-run")).items] == [after.event_id]


async def test_an_outage_seen_only_by_a_readiness_ping_still_makes_the_spine_write_its_hour_again() -> None:
    store = _Restarts()
    registry = await make_registry(store, shards=3)
    spine = EventSpine(registry, CursorCodec(SECRET), clock=ManualClock())
    await spine.append(ctx(run_id="plain-run"), {"event_type": "rl", "source": "agent"})
    store.down = True
    with pytest.raises(NorthstarError):
        await (await registry.store_for("event_spine", "t_a")).ping()
    store.restart_empty()
    after = await spine.append(ctx(run_id="plain-run"), {"event_type": "rl", "source": "agent"})
    assert [e.event_id for e in (await spine.list(ctx())).items] == [after.event_id]
    assert [e.event_id for e in (await spine.replay(ctx(), "plain-run")).items] == [after.event_id]
