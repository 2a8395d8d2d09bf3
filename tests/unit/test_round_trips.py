"""Store round trips per operation at steady state, on memory and SQLite: the structural targets.

Counts and sequential depths come from :mod:`contracts.round_trips` (an instrumented store
under every resource kind); they do not depend on timing, so they are asserted here. The bench
(``bench/p6_round_trips.py``) reports the same figures on every backend, with latencies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from contracts.round_trips import (
    BY_NAME,
    OPERATIONS,
    Call,
    RoundTrips,
    Scenario,
    Trace,
    instrumented_engines,
    measure_operations,
)
from northstar_adapters import AdapterFactory
from northstar_core.routing import Connection, Target
from northstar_core.storage import ItemStore


@pytest.fixture(params=["memory", "sqlite"])
async def measured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, RoundTrips]]:
    if request.param == "memory":
        connection = Connection(name="rt", backend="memory", params={"name": f"rt-{uuid.uuid4().hex}"})
    else:
        connection = Connection(name="rt", backend="sqlite", params={"path": str(tmp_path / "rt.db")})
    trace = Trace()
    async with instrumented_engines(AdapterFactory(), connection, trace) as engines:
        yield await measure_operations(Scenario(engines), trace)


def test_the_depth_of_a_call_counts_only_calls_finished_before_it_started() -> None:
    calls = (
        Call("chat_store", "get", "p", ("i#k",), 1),
        Call("config_store", "get", "p", ("d",), 1),
        Call("event_spine", "write", "p", ("put:e",), 2),
    )
    rt = RoundTrips(calls)
    assert (rt.total, rt.depth, rt.inputs_depth, len(rt.inputs)) == (3, 2, 1, 2)


async def test_concurrent_calls_share_a_depth_and_sequential_ones_add_up() -> None:
    trace = Trace(delay=0.001)

    async def noop() -> None:
        return None

    trace.start()
    await asyncio.gather(*(trace.call("k", "get", "p", (str(i),), noop) for i in range(3)))
    await trace.call("k", "write", "p", ("w",), noop)
    rt = trace.stop()
    assert [c.depth for c in rt.calls] == [1, 1, 1, 2]


@pytest.mark.parametrize("name", [op.name for op in OPERATIONS if op.target.bounded])
async def test_round_trips_meet_their_target(measured: dict[str, RoundTrips], name: str) -> None:
    op = BY_NAME[name]
    rt = measured[name]
    print(f"{op.label}: {rt}")
    assert op.target.met(rt), f"{op.label}: {op.target.describe()}; measured {rt}"


async def test_every_operation_reaches_the_store(measured: dict[str, RoundTrips]) -> None:
    for op in OPERATIONS:
        rt = measured[op.name]
        print(f"{op.label}: {rt}")
        assert rt.total >= 1 and any(c.method == "write" for c in rt.calls), op.label


class _WithoutAtomicChecks(AdapterFactory):
    """Memory stores declaring no atomic checks: the call shape of Firestore and Cosmos."""

    def open(self, target: Target) -> ItemStore:
        store = super().open(target)
        store.capabilities = msgspec.structs.replace(store.capabilities, atomic_checks=False)
        return store


async def test_without_atomic_checks_the_head_reads_join_the_first_round_trip() -> None:
    """Where every append needs a head read from the store, the reads are made beside the
    operation's others: the depth targets hold; the canvas command spends two more calls (the
    command log's head and the canvas stream's) than on a backend with atomic checks."""
    connection = Connection(name="rt", backend="memory", params={"name": f"rt-{uuid.uuid4().hex}"})
    trace = Trace()
    async with instrumented_engines(_WithoutAtomicChecks(), connection, trace) as engines:
        measured = await measure_operations(Scenario(engines), trace)
    keyed, canvas = measured["chat_post_keyed"], measured["canvas_command"]
    print(f"keyed chat post: {keyed}\ncanvas command: {canvas}")
    assert (keyed.depth, keyed.total) == (2, 3)
    assert (canvas.depth, canvas.total) == (4, 10)
    heads = [c for c in canvas.calls if c.method == "query" and c.keys == ("s#*",)]
    assert len(heads) == 2 and all(c.depth == 1 for c in heads)


async def test_with_the_policy_kinds_in_one_table_a_canvas_command_reads_its_policies_in_one_query() -> None:
    from northstar_core.safety.documents import DOC_KINDS

    connection = Connection(name="rt", backend="memory", params={"name": f"rt-{uuid.uuid4().hex}"})
    for tables, queries in (({}, len(DOC_KINDS)), ({kind: "safety" for kind in DOC_KINDS}, 1)):
        trace = Trace()
        async with instrumented_engines(AdapterFactory(), connection, trace, tables=tables) as engines:
            scenario = Scenario(engines)
            await scenario.setup()
            await scenario.canvas_command()
            trace.start()
            await scenario.canvas_command()
            rt = trace.stop()
        policy_reads = [c for c in rt.calls if c.method == "query" and c.kind in DOC_KINDS]
        assert len(policy_reads) == queries, rt
        assert BY_NAME["canvas_command"].target.met(rt), rt
