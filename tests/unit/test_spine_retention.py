"""Retention by event type on the spine and the analytics view: which rule an event takes, the
expiry stored on every item of an event (and on its hour's directory entry), and reads —
list, filters, replay, get, cursors — that skip expired events and stay bounded over hours
whose events have all expired."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar_adapters import sqlite as sqlite_adapter
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.analytics import AnalyticsService
from northstar_core.clock import ManualClock, parse_iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.buckets import BUCKET_MS, bucket_of, shard_of
from northstar_core.kernel.retention import Retention
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RouteOptions, RoutingRegistry, Target
from northstar_core.spine import Event, EventSpine, spine_retention
from northstar_core.storage import BackendUnavailable, ConditionFailed, Item, ItemStore, Op, Put

SECRET = b"spine-retention-secret-0123456789"
HOUR = BUCKET_MS / 1000
DAY = 86_400.0
SPINE = "t_a|lab|spine"


class _OneStore:
    def __init__(self, store: ItemStore) -> None:
        self.store = store

    def open(self, target: Target) -> ItemStore:
        return self.store


async def make_registry(store: ItemStore, shards: int = 3) -> RoutingRegistry:
    registry = RoutingRegistry(
        MemoryItemStore(),
        _OneStore(store),
        connections={"mem": Connection(name="mem", backend="memory")},
        deployment_mode="lab",
    )
    for kind in RESOURCE_KINDS:
        bucketed = kind in ("event_spine", "analytics_store")
        options = RouteOptions(shards=shards) if bucketed else RouteOptions()
        await registry.set_route(Route(resource_kind=kind, connection="mem", options=options))
    return registry


def ctx(*, run_id: str | None = "run1") -> RequestContext:
    return RequestContext(
        tenant_id="t_a", mode="lab", user_id="u1", roles=("member",), run_id=run_id, step_id="s1",
        request_id="req-1",
    )


async def rig(
    days: dict[str, int], clock: ManualClock, store: ItemStore | None = None
) -> tuple[EventSpine, ItemStore]:
    # the store hides expired items by the same clock the spine stamps events with
    store = store or MemoryItemStore(clock=clock.now)
    retention = spine_retention(days)
    spine = EventSpine(await make_registry(store), CursorCodec(SECRET), clock=clock, retention=retention)
    return spine, store


async def drain(fetch: Any) -> list[str]:
    out: list[str] = []
    cursor = None
    for _ in range(500):
        page = await fetch(cursor)
        out += [e.event_id for e in page.items]
        if not page.has_more:
            return out
        cursor = page.next_cursor
    raise AssertionError("paging does not advance")


async def items_of(store: ItemStore, event: Event, run_id: str = "run1", shards: int = 3) -> dict[str, Item]:
    partition = f"{SPINE}|{bucket_of(event.event_id)}|{shard_of(run_id, shards):02d}"
    found = await store.query(partition, "", limit=100)
    return {item.key: item for item in found if item.key.endswith(event.event_id)}


async def directory(store: ItemStore, base: str = SPINE) -> dict[str, float | None]:
    return {item.key: item.expires_at for item in await store.query(f"{base}|buckets", "b#", limit=1000)}


def hour_end_after(t: float) -> float:
    return math.ceil(t / HOUR) * HOUR


# --- which rule an event takes -------------------------------------------------------------------


def reference_days(rules: dict[str, int], event_type: str) -> int | None:
    """The documented precedence, written out plainly: exact type > longest family > ``*``."""
    if event_type in rules:
        return rules[event_type]
    families = [key for key in rules if key.endswith(".*") and event_type.startswith(key[:-1])]
    if families:
        return rules[max(families, key=len)]
    return rules.get("*")


RULE_KEYS = ["rl", "note", "note.*", "note.draft", "note.draft.*", "note.draft.x.*", "analytics", "*"]
TYPES = [
    "rl", "note", "note.a", "note.draft", "note.draft.x", "note.draft.x.y", "analytics", "notes", "tuning",
]


@given(st.dictionaries(st.sampled_from(RULE_KEYS), st.integers(1, 36_500)), st.sampled_from(TYPES))
def test_an_event_takes_its_exact_type_then_its_longest_family_then_the_wildcard(
    rules: dict[str, int], event_type: str
) -> None:
    retention = spine_retention(rules)
    days = reference_days(rules, event_type)
    assert retention.seconds(event_type) == (None if days is None else days * DAY)
    assert retention.expires_at(event_type, 1_800_000_000.0) == (
        None if days is None else 1_800_000_000.0 + days * DAY
    )


def test_a_family_covers_its_sub_types_at_any_depth_but_not_the_type_itself() -> None:
    retention = spine_retention({"note.*": 30, "note.draft.*": 7, "*": 3650})
    assert retention.seconds("note.saved") == 30 * DAY
    assert retention.seconds("note.draft.autosave") == 7 * DAY
    assert retention.seconds("note.draft") == 30 * DAY  # a sub-type of note, not of note.draft
    assert retention.seconds("note") == 3650 * DAY
    assert retention.seconds("notes.x") == 3650 * DAY
    assert spine_retention({}).keeps_everything and spine_retention({}).seconds("rl") is None


@pytest.mark.parametrize(
    ("days", "complaint"),
    [
        ({"Note": 1}, "'Note'"),
        ({"note*": 1}, "'note*'"),
        ({".*": 1}, "'.*'"),
        ({"*.x": 1}, "'*.x'"),
        ({"note.**": 1}, "'note.**'"),
        ({"": 1}, "''"),
        ({"rl": 0}, "'rl': days must be an integer from 1 to 36500"),
        ({"rl": 36_501}, "'rl': days"),
        ({"rl": True}, "'rl': days"),
        ({"rl": 1.5}, "'rl': days"),
    ],
)
def test_invalid_rules_are_refused_naming_the_key(days: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        spine_retention(days)


def test_the_latest_expiry_is_the_last_instant_every_backend_stores() -> None:
    retention = Retention({"*": 36_500}, type_pattern=re.compile(r"[a-z]+"))
    assert retention.expires_at("x", 253_402_000_000.0) == 253_402_300_799.0


# --- what is stored ------------------------------------------------------------------------------


async def test_every_item_of_an_event_and_its_hours_directory_entry_carry_the_expiry() -> None:
    clock = ManualClock(1_800_000_000.0 + 600)
    spine, store = await rig({"note.*": 30, "analytics": 90}, clock)
    note = await spine.append(ctx(), {"event_type": "note.saved", "source": "agent"})
    items = await items_of(store, note)
    at = parse_iso(note.timestamp)
    assert sorted(items) == [f"er#run1#{note.event_id}", f"ev#{note.event_id}"]
    assert {item.expires_at for item in items.values()} == {at + 30 * DAY}
    assert spine.expires_at(note) == at + 30 * DAY
    bucket = bucket_of(note.event_id)
    assert await directory(store) == {f"b#{bucket}": hour_end_after(at + 30 * DAY)}
    # a type without a rule (and no "*") is kept forever; its hour's entry then never expires
    kept = await spine.append(ctx(), {"event_type": "rl", "source": "agent"})
    assert {item.expires_at for item in (await items_of(store, kept)).values()} == {None}
    assert await directory(store) == {f"b#{bucket}": None}
    # a shorter-lived event later in the hour never lowers the entry
    await spine.append(ctx(), {"event_type": "note.x", "source": "agent"})
    assert await directory(store) == {f"b#{bucket}": None}


async def test_without_rules_nothing_expires() -> None:
    clock = ManualClock()
    spine, store = await rig({}, clock)
    event = await spine.append(ctx(), {"event_type": "rl", "source": "agent"})
    assert {item.expires_at for item in (await items_of(store, event)).values()} == {None}
    assert set((await directory(store)).values()) == {None}
    clock.advance(100 * 365 * DAY)
    assert [e.event_id for e in (await spine.list(ctx())).items] == [event.event_id]


async def test_an_hours_entry_is_raised_for_a_longer_lived_event_of_another_configuration() -> None:
    # A rolling change of the rules: two processes with different retention write one hour.
    clock = ManualClock(1_800_000_000.0 + 60)
    store = MemoryItemStore(clock=clock.now)
    before, _ = await rig({"*": 30}, clock, store)
    after, _ = await rig({"*": 90}, clock, store)
    short = await before.append(ctx(), {"event_type": "rl", "source": "agent"})
    clock.advance(1)
    long = await after.append(ctx(), {"event_type": "rl", "source": "agent"})
    assert await directory(store) == {f"b#{bucket_of(long.event_id)}": hour_end_after(clock.now() + 90 * DAY)}
    clock.advance(31 * DAY)
    assert [e.event_id for e in (await after.list(ctx())).items] == [long.event_id]
    assert await after.get(ctx(), long.event_id) == long
    assert await after.get(ctx(), short.event_id) is None


async def test_a_keyed_append_completed_by_its_retry_expires_by_the_claimed_events_time() -> None:
    clock = ManualClock()

    class DropsEvents(MemoryItemStore):
        fail_next = False

        async def write(self, partition: str, ops: Sequence[Op]) -> None:
            if self.fail_next and any(op.key.startswith("ev#") for op in ops):
                self.fail_next = False
                raise BackendUnavailable("connection reset")
            await super().write(partition, ops)

    store = DropsEvents(clock=clock.now)
    spine, _ = await rig({"*": 1}, clock, store)
    body = {"event_type": "rl", "source": "agent", "idempotency_key": "k-1"}
    claimed_at = clock.now()
    store.fail_next = True
    with pytest.raises(NorthstarError):
        await spine.append(ctx(), body)
    clock.advance(10)
    event = await spine.append(ctx(), body)
    assert parse_iso(event.timestamp) == claimed_at
    assert {item.expires_at for item in (await items_of(store, event)).values()} == {claimed_at + DAY}
    # the key's claim keeps its own day, whatever the event's retention
    claims = [item for p in range(64) for item in await store.query(f"{SPINE}|keys|{p:02d}", "i#")]
    assert [item.expires_at for item in claims] == [claimed_at + 86_400]


# --- reads over expired events -------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(["rl", "note.a", "note.draft.b", "analytics"]),
        st.sampled_from(["ui", "agent"]),
        st.sampled_from([0, 0.5, 600, HOUR, 2 * HOUR + 7, DAY, 2 * DAY + 5]),
    ),
    max_size=30,
)
RULES = st.dictionaries(st.sampled_from(["rl", "note.*", "note.draft.*", "*"]), st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@given(OPS, RULES, st.integers(1, 5), st.sampled_from([0, DAY, 2 * DAY + 1, 3 * DAY + HOUR, 400 * DAY]))
def test_list_filters_replay_and_get_return_exactly_the_events_within_their_retention(
    ops: list[tuple[str, str, str, float]], rules: dict[str, int], page: int, read_later: float
) -> None:
    async def scenario() -> None:
        clock = ManualClock()
        spine, _ = await rig(rules, clock)
        log: list[tuple[str, str, str, str, float]] = []  # run, type, source, id, expires
        for run, event_type, source, wait in ops:
            clock.advance(wait)
            event = await spine.append(ctx(run_id=run), {"event_type": event_type, "source": source})
            days = reference_days(rules, event_type)
            expires = math.inf if days is None else clock.now() + days * DAY
            log.append((run, event_type, source, event.event_id, expires))
        # a first page (and its cursor) taken before the wait, over what is live then
        first = await spine.list(ctx(), limit=page)
        got = [e.event_id for e in first.items]  # may be short: a page walks a bounded number of hours
        assert len(got) <= page and got == [x[3] for x in log if x[4] > clock.now()][: len(got)]
        clock.advance(read_later)
        live = [x for x in log if x[4] > clock.now()]
        seen = first.items[-1].event_id if first.items else ""
        resumed = await drain(lambda cur: spine.list(ctx(), cursor=cur or first.next_cursor, limit=page))
        assert resumed == [x[3] for x in live if x[3] > seen]
        for event_type in (None, "rl", "note.a"):
            for source in (None, "agent"):
                got = await drain(
                    lambda cur, t=event_type, s=source: spine.list(
                        ctx(), event_type=t, source=s, cursor=cur, limit=page
                    )
                )
                assert got == [x[3] for x in live if event_type in (None, x[1]) and source in (None, x[2])]
        for run in ("r1", "r2"):
            got = await drain(lambda cur, run=run: spine.replay(ctx(), run, cursor=cur, limit=page))
            assert got == [x[3] for x in live if x[0] == run]
        for x in log:
            assert (await spine.get(ctx(), x[3]) is not None) == (x[4] > clock.now())

    asyncio.run(scenario())


async def test_cursors_taken_before_an_expiry_resume_past_the_expired_events() -> None:
    clock = ManualClock(1_800_000_000.0)
    spine, _ = await rig({"note.*": 1}, clock)
    written = []
    for hour in range(6):  # hours 1 to 3 hold only notes
        for event_type in (["rl"] if hour in (0, 4, 5) else []) + ["note.x", "note.y"]:
            written.append(await spine.append(ctx(), {"event_type": event_type, "source": "agent"}))
            clock.advance(1)
        clock.advance(HOUR)
    first = await spine.list(ctx(), limit=2)
    by_run = await spine.replay(ctx(), "run1", limit=2)
    only_rl = await spine.list(ctx(), event_type="rl", limit=1)
    clock.advance(DAY + 6 * HOUR)  # every note has expired
    kept = [e.event_id for e in written if e.event_type == "rl"]
    assert [e.event_id for e in first.items + by_run.items] == [e.event_id for e in written[:2]] * 2
    rest = await drain(lambda cur: spine.list(ctx(), cursor=cur or first.next_cursor, limit=2))
    assert rest == kept[1:]
    rest = await drain(lambda cur: spine.replay(ctx(), "run1", cursor=cur or by_run.next_cursor, limit=2))
    assert rest == kept[1:]
    rest = await drain(lambda cur: spine.list(ctx(), event_type="rl", cursor=cur or only_rl.next_cursor))
    assert rest == kept[1:]
    # since: an instant inside an hour whose events expired starts at the next live hour
    since = written[4].timestamp
    assert await drain(lambda cur: spine.list(ctx(), since=since, cursor=cur)) == kept[1:]


async def test_hours_whose_events_all_expired_leave_the_directory_so_a_read_is_one_page() -> None:
    clock = ManualClock()
    spine, store = await rig({"note.*": 30, "analytics": 2}, clock)
    for _ in range(40):  # an hour each, all of them expiring
        await spine.append(ctx(), {"event_type": "note.x", "source": "agent"})
        await spine.append(ctx(), {"event_type": "analytics", "source": "ui"})
        clock.advance(HOUR)
    kept = await spine.append(ctx(), {"event_type": "rl", "source": "agent"})
    clock.advance(31 * DAY)
    assert list(await directory(store)) == [f"b#{bucket_of(kept.event_id)}"]
    for filtered in (None, "note.x", "rl"):
        page = await spine.list(ctx(), event_type=filtered)
        assert [e.event_id for e in page.items] == ([kept.event_id] if filtered != "note.x" else [])
        assert not page.has_more
    replayed = await spine.replay(ctx(), "run1")
    assert [e.event_id for e in replayed.items] == [kept.event_id] and not replayed.has_more


async def test_a_poller_at_the_end_sees_new_events_once_while_older_ones_expire() -> None:
    clock = ManualClock()
    spine, _ = await rig({"*": 1}, clock)
    cursor = None
    seen: list[str] = []
    written: list[str] = []
    for _ in range(30):  # every 2 hours, for 2.5 days
        written.append((await spine.append(ctx(), {"event_type": "rl", "source": "ui"})).event_id)
        page = await spine.list(ctx(), cursor=cursor, limit=5)
        seen += [e.event_id for e in page.items]
        cursor = page.next_cursor or cursor
        clock.advance(2 * HOUR)
    assert seen == written


# --- the analytics view --------------------------------------------------------------------------


async def test_the_analytics_view_expires_with_its_spine_event() -> None:
    clock = ManualClock()
    store = MemoryItemStore(clock=clock.now)
    registry = await make_registry(store)
    codec = CursorCodec(SECRET)
    spine = EventSpine(registry, codec, clock=clock, retention=spine_retention({"analytics": 2, "*": 30}))
    analytics = AnalyticsService(registry, codec, clock, spine)
    first = await analytics.record(ctx(), {"kind": "click", "target": "#buy"})
    clock.advance(DAY)
    second = await analytics.record(ctx(), {"kind": "click", "target": "#buy", "idempotency_key": "c-1"})
    again = await analytics.record(ctx(), {"kind": "click", "target": "#buy", "idempotency_key": "c-1"})
    assert again.event_id == second.event_id
    views = {
        item.key: item.expires_at
        for p in range(3)
        for b in {bucket_of(first.event_id), bucket_of(second.event_id)}
        for item in await store.query(f"t_a|lab|analytics|{b}|{p:02d}", "e#")
    }
    assert views == {
        f"e#{first.event_id}": parse_iso(first.received_at) + 2 * DAY,
        f"e#{second.event_id}": parse_iso(second.received_at) + 2 * DAY,
    }
    spine_item = await items_of(store, (await spine.list(ctx())).items[0], run_id="run1")
    assert {item.expires_at for item in spine_item.values()} == {views[f"e#{first.event_id}"]}
    clock.advance(DAY + 1)  # the first has expired, the second not yet
    assert [e.event_id for e in (await analytics.list(ctx())).items] == [second.event_id]
    assert [e.event_id for e in (await spine.list(ctx(), event_type="analytics")).items] == [second.event_id]
    clock.advance(DAY)
    assert (await analytics.list(ctx())).items == [] and (await spine.list(ctx())).items == []
    assert await directory(store, "t_a|lab|analytics") == {}


# --- SQLite: the wall clock decides liveness ----------------------------------------------------


async def test_on_sqlite_expired_events_are_hidden_once_the_clock_passes_their_retention(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    # SQLite compares expiry with the wall clock: the test moves it with the spine's clock
    sqlite_time = SimpleNamespace(time=clock.now, monotonic=time.monotonic, sleep=time.sleep)
    monkeypatch.setattr(sqlite_adapter, "time", sqlite_time)
    store = SqliteItemStore(str(tmp_path / "n.db"), private=True)
    try:
        spine, _ = await rig({"note.*": 1}, clock, store)
        note = await spine.append(ctx(), {"event_type": "note.x", "source": "agent"})
        kept = await spine.append(ctx(), {"event_type": "rl", "source": "agent"})
        assert {i.expires_at for i in (await items_of(store, note)).values()} == {clock.now() + DAY}
        clock.advance(DAY)
        assert [e.event_id for e in (await spine.list(ctx())).items] == [kept.event_id]
        assert [e.event_id for e in (await spine.replay(ctx(), "run1")).items] == [kept.event_id]
    finally:
        await store.close()


async def test_an_hours_entry_that_cannot_be_raised_is_503_contention_and_nothing_is_written() -> None:
    clock = ManualClock()

    class RaisesLose(MemoryItemStore):
        """Every attempt to raise a directory entry loses to another writer."""

        async def write(self, partition: str, ops: Sequence[Op]) -> None:
            if partition.endswith("|buckets") and any(isinstance(op, Put) and op.version > 1 for op in ops):
                raise ConditionFailed(0)
            await super().write(partition, ops)

    store = RaisesLose(clock=clock.now)
    short, _ = await rig({"*": 1}, clock, store)
    long, _ = await rig({"*": 2}, clock, store)
    first = await short.append(ctx(), {"event_type": "rl", "source": "agent"})
    with pytest.raises(NorthstarError) as info:
        await long.append(ctx(), {"event_type": "rl", "source": "agent"})
    assert (info.value.http_status, info.value.code) == (503, "event_spine.contention")
    assert [e.event_id for e in (await short.list(ctx())).items] == [first.event_id]
