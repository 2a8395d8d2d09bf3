"""What a gate decision costs in store round trips: every call is counted and given its
sequential depth (1 + the deepest call that finished before it started), on stores that each
hold one resource kind (as deployed: one table per kind) and on one store holding them all.

The policy inputs of a decision are read in at most two sequential round trips (the documents,
then what they call for, concurrently), and the recording (spine ‖ subject stream) is one more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RoutingRegistry, Target
from northstar_core.storage import Item, ItemStore, Op

DELAY = 0.002  # per call: concurrent calls overlap, sequential ones do not


class Trace:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []  # (op, start of the key, depth)
        self.finished: list[int] = []

    def reset(self) -> None:
        self.calls.clear()
        self.finished.clear()

    @property
    def depth(self) -> int:
        return max((d for _, _, d in self.calls), default=0)


class DepthStore(ItemStore):
    """Passes every call to ``inner``, after a short sleep, recording its sequential depth."""

    def __init__(self, inner: ItemStore, trace: Trace) -> None:
        self.inner = inner
        self.trace = trace
        self.capabilities = inner.capabilities

    async def _call(self, op: str, what: str, call: Any) -> Any:
        depth = 1 + max(self.trace.finished, default=0)
        self.trace.calls.append((op, what, depth))
        await asyncio.sleep(DELAY)
        try:
            return await call
        finally:
            self.trace.finished.append(depth)

    async def get(self, partition: str, key: str) -> Item | None:
        result: Item | None = await self._call("get", key[:4], self.inner.get(partition, key))
        return result

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        result: list[Item] = await self._call("query", prefix[:4], self.inner.query(partition, prefix, **kw))
        return result

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await self._call("write", ops[0].key[:4], self.inner.write(partition, ops))


class Factory:
    def __init__(self, trace: Trace, *, shared: bool) -> None:
        self.trace = trace
        self.one = DepthStore(MemoryItemStore(), trace) if shared else None

    def open(self, target: Target) -> ItemStore:
        return self.one or DepthStore(MemoryItemStore(), self.trace)


async def rig(*, shared: bool) -> tuple[Engines, Trace]:
    trace = Trace()
    registry = RoutingRegistry(
        MemoryItemStore(),
        Factory(trace, shared=shared),
        connections={"mem": Connection(name="mem", backend="memory")},
        deployment_mode="lab",
    )
    for kind in RESOURCE_KINDS:
        await registry.set_route(Route(resource_kind=kind, connection="mem"))
    return Engines(registry, CursorCodec(b"round-trip-secret-0123456789ab"), ManualClock()), trace


def admin(user: str = "u_admin") -> RequestContext:
    return RequestContext(tenant_id="t_r", mode="lab", user_id=user, roles=("admin",), run_id="r1")


AGENT = RequestContext(tenant_id="t_r", mode="lab", user_id="u_agent", roles=("member",), run_id="r1")


async def put(engines: Engines, name: str, body: dict[str, Any]) -> None:
    doc = await engines.policies.get_document(admin(), name)
    await engines.policies.put_document(admin(), name, body, expected_version=doc.version)


async def default(engines: Engines) -> None:
    return None


async def firearms(engines: Engines) -> None:
    await put(engines, "firearms_policy", {"bindings": [{"action_name": "fire", "licence_type": "l1"}]})
    await put(engines, "firearms_grants", {"grants": [{"licence_type": "l1", "subject_type": "agent"}]})
    await engines.policies.issue_licence(
        admin(), {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"}
    )


async def strategy_lock(engines: Engines) -> None:
    await put(engines, "strategy_lock_policy", {"rules": [{"action_name": "fire"}], "required_approvals": 1})
    lock = await engines.policies.create_lock(admin("u_req"), {"action_name": "fire", "surface_id": "s1"})
    await engines.policies.review_lock(admin(), lock.lock_id, "approve")


async def budget(engines: Engines) -> None:
    await put(engines, "budget_policy", {"limits": [{"period": "day", "limit": 100}]})
    await engines.budget.record(admin(), {"amount": 1})


async def everything(engines: Engines) -> None:
    await firearms(engines)
    await strategy_lock(engines)
    await budget(engines)


async def measure(setup: Any, *, shared: bool) -> dict[str, tuple[int, int]]:
    """(calls, depth) of prepare and of a whole check, warm (the subject stream exists)."""
    engines, trace = await rig(shared=shared)
    await setup(engines)
    kw: dict[str, Any] = {"action_name": "fire", "subject_type": "agent", "subject_id": "a1"}
    kw["surface_id"] = "s1"
    await engines.gate.check(AGENT, **kw)  # warm: routes resolved, the stream's head seen
    trace.reset()
    prepared = await engines.gate.prepare(AGENT, **kw)
    read = (len(trace.calls), trace.depth)
    trace.reset()
    await engines.gate.decide(prepared)
    recorded = (len(trace.calls), trace.depth)
    trace.reset()
    decision = await engines.gate.check(AGENT, **kw)
    assert decision["decision"] == "allow"
    checked = (len(trace.calls), trace.depth)
    await engines.close()
    return {"prepare": read, "decide": recorded, "check": checked}


CASES = {
    "default": default,
    "firearms": firearms,
    "strategy_lock": strategy_lock,
    "budget": budget,
    "everything": everything,
}


@pytest.mark.parametrize("shared", [False, True], ids=["table per kind", "one table"])
@pytest.mark.parametrize("case", list(CASES))
async def test_policy_inputs_take_at_most_two_round_trips_and_recording_one(case: str, shared: bool) -> None:
    cost = await measure(CASES[case], shared=shared)
    second_round = case != "default"
    assert cost["prepare"][1] == (2 if second_round else 1)
    assert cost["decide"] == (2, 1)  # the spine event ‖ the stream publication
    assert cost["check"][1] == cost["prepare"][1] + 1
    assert cost["check"][0] == cost["prepare"][0] + 2


async def test_the_documents_are_one_query_per_table() -> None:
    for shared, queries in ((True, 1), (False, 4)):
        engines, trace = await rig(shared=shared)
        await engines.gate.check(AGENT, action_name="fire", subject_type="agent", subject_id="a1")
        trace.reset()
        await engines.gate.prepare(AGENT, action_name="fire", subject_type="agent", subject_id="a1")
        assert [(op, what, depth) for op, what, depth in trace.calls] == [("query", "r#do", 1)] * queries
        await engines.close()
