"""Round trips per operation: an instrumented store, the operations measured and their targets.

:class:`InstrumentedStore` wraps every store the routing registry opens (through
:class:`InstrumentedFactory`) and records each ``get``/``query``/``write`` into one
:class:`Trace`. While a trace records, every call first awaits ``asyncio.sleep(delay)`` and
only then reaches the backend, so calls a service issues concurrently are all in flight
together even on a backend that answers without yielding (memory). Each call gets a
*sequential depth*: 1 + the largest depth among the calls that had finished when it started.
An operation's depth is the largest depth of its calls: the number of round trips its critical
path waits for one after the other. Both figures are structural — the same on every backend
and every run — so the unit tests assert them (memory, SQLite) and the bench reports them on
every backend next to the latencies they cost (``bench/p6_round_trips.py``).

Each call also records what it moved (:class:`Moved`: the key, value size, op and condition of
every item a write sent; the key and value size of every item a read returned), which the
capacity model prices per backend (``bench/p7_capacity.py``). ``describe()`` and the round-trip
figures ignore it.

The registry's own store is opened outside the factory and never counted: its periodic route
refresh would land on whichever operation happened to run then. Neither are the live tails'
activity-index flushes (writes to partition ``~activity``): a process writes its marks there
in the background, at most every 0.2 s whatever the number of operations, on no request's path
(the index's reads, one per process and poll interval, are recorded: tests count them).

:func:`measure_operations` runs each operation once to warm the process (caches, stream head
hints, the canvas limits announcement, a thread's index), then measures the next one.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from northstar_core.canvas import CommandIn
from northstar_core.clock import SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.kernel.activity import ACTIVITY_PARTITION
from northstar_core.routing import (
    RESOURCE_KINDS,
    BackendFactory,
    Connection,
    Route,
    RoutingRegistry,
    Target,
)
from northstar_core.storage import Absent, Delete, Item, ItemStore, Op, Put, ScanPage, VersionIs

T = TypeVar("T")

DEFAULT_DELAY = 0.002
REGISTRY_KIND = "routing_registry"
# Where a gate decision goes once taken; every other kind a decision touches holds its inputs.
DECISION_OUTPUT_KINDS = frozenset({"event_spine", "event_stream"})


@dataclass(frozen=True)
class Moved:
    """One item a call sent (a write's put/delete/check) or got back (a read's result)."""

    key: str
    value_bytes: int  # 0 for a delete, a check, or an absent get
    op: str = "read"  # put | delete | check | read
    condition: str = ""  # absent | version | "" (none), for a write's op
    expires: bool = False  # a put with expires_at (backends add a TTL attribute)


def _moved_op(op: Op) -> Moved:
    condition = op.condition
    cond = ""
    if isinstance(condition, Absent):
        cond = "absent"
    elif isinstance(condition, VersionIs):
        cond = "version"
    if isinstance(op, Put):
        return Moved(op.key, len(op.value), "put", cond, op.expires_at is not None)
    return Moved(op.key, 0, "delete" if isinstance(op, Delete) else "check", cond)


def _moved_items(items: Sequence[Item] | Item | None) -> tuple[Moved, ...]:
    if items is None:
        return ()
    if isinstance(items, Item):
        items = (items,)
    return tuple(Moved(item.key, len(item.value)) for item in items)


@dataclass(frozen=True)
class Call:
    """One store call: its resource kind, method, partition, keys and sequential depth, and the
    items it moved (filled in when the call returns; see :class:`Moved`)."""

    kind: str
    method: str
    partition: str
    keys: tuple[str, ...]
    depth: int
    moved: tuple[Moved, ...] = ()

    def describe(self) -> str:
        return f"{self.depth} {self.method} {self.kind} {self.partition} {' '.join(self.keys)}"


@dataclass(frozen=True)
class RoundTrips:
    """The calls one operation made."""

    calls: tuple[Call, ...]

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def depth(self) -> int:
        return max((c.depth for c in self.calls), default=0)

    @property
    def inputs(self) -> tuple[Call, ...]:
        """The calls of a gate decision that read what it decides on (not where it is recorded)."""
        return tuple(c for c in self.calls if c.kind not in DECISION_OUTPUT_KINDS)

    @property
    def inputs_depth(self) -> int:
        return max((c.depth for c in self.inputs), default=0)

    def by_method(self) -> dict[str, int]:
        counts = Counter(c.method for c in self.calls)
        return {m: counts[m] for m in ("get", "query", "write")}

    def summary(self) -> dict[str, Any]:
        return {
            "calls": self.total,
            "depth": self.depth,
            **self.by_method(),
            "inputs_calls": len(self.inputs),
            "inputs_depth": self.inputs_depth,
            "walk": [c.describe() for c in self.calls],
        }

    def __str__(self) -> str:
        walk = "\n  ".join(c.describe() for c in self.calls)
        return f"{self.total} calls, depth {self.depth}:\n  {walk}"


class Trace:
    """Records the store calls made between :meth:`start` and :meth:`stop` (see module doc)."""

    def __init__(self, delay: float = DEFAULT_DELAY) -> None:
        self.delay = delay
        self.recording = False
        self._calls: list[Call] = []
        self._finished_depth = 0

    def start(self) -> None:
        self._calls = []
        self._finished_depth = 0
        self.recording = True

    def stop(self) -> RoundTrips:
        self.recording = False
        return RoundTrips(tuple(self._calls))

    async def call(
        self,
        kind: str,
        method: str,
        partition: str,
        keys: tuple[str, ...],
        run: Callable[[], Awaitable[T]],
        *,
        sent: tuple[Moved, ...] = (),
        returned: Callable[[T], tuple[Moved, ...]] | None = None,
    ) -> T:
        """Run one call, recording it; ``sent`` is what a write sends, ``returned`` extracts what
        a read got back (recorded once the call returns)."""
        if not self.recording or (partition == ACTIVITY_PARTITION and method == "write"):
            return await run()
        depth = self._finished_depth + 1
        call = Call(kind, method, partition, keys, depth, sent)
        index = len(self._calls)
        self._calls.append(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            result = await run()
            # the trace may have been restarted while the call was in flight: then it is not ours
            if returned is not None and index < len(self._calls) and self._calls[index] is call:
                self._calls[index] = replace(call, moved=returned(result))
            return result
        finally:
            self._finished_depth = max(self._finished_depth, depth)


class InstrumentedStore(ItemStore):
    """Passes every call to ``inner``, recording it in ``trace`` under ``kind``."""

    def __init__(self, inner: ItemStore, kind: str, trace: Trace) -> None:
        self.inner = inner
        self.kind = kind
        self.trace = trace
        self.capabilities = inner.capabilities

    @property
    def backing(self) -> ItemStore:
        return self.inner.backing

    async def get(self, partition: str, key: str) -> Item | None:
        return await self.trace.call(
            self.kind, "get", partition, (key,), lambda: self.inner.get(partition, key), returned=_moved_items
        )

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        return await self.trace.call(
            self.kind,
            "query",
            partition,
            (prefix + "*",),
            lambda: self.inner.query(partition, prefix, **kw),
            returned=_moved_items,
        )

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        keys = tuple(f"{type(op).__name__.lower()}:{op.key}" for op in ops)
        await self.trace.call(
            self.kind,
            "write",
            partition,
            keys,
            lambda: self.inner.write(partition, ops),
            sent=tuple(_moved_op(op) for op in ops),
        )

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        return await self.trace.call(
            self.kind, "scan", prefix + "*", (), lambda: self.inner.scan(prefix, token=token, limit=limit)
        )

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


class InstrumentedFactory:
    """A :class:`BackendFactory` whose stores record into one trace."""

    def __init__(self, inner: BackendFactory, trace: Trace) -> None:
        self.inner = inner
        self.trace = trace

    def open(self, target: Target) -> ItemStore:
        return InstrumentedStore(self.inner.open(target), target.resource_kind, self.trace)


@asynccontextmanager
async def instrumented_engines(
    factory: BackendFactory,
    connection: Connection,
    trace: Trace,
    tables: Mapping[str, str] | None = None,
    registry_table: str = REGISTRY_KIND,
) -> AsyncIterator[Engines]:
    """Engines with every resource kind routed to ``connection`` (in the table ``tables`` names
    for it, else its own) through stores recording into ``trace``; the registry's own store
    (``registry_table`` on the same connection) is opened uninstrumented. Everything opened is
    closed on exit."""
    registry_store = factory.open(connection.target(REGISTRY_KIND, registry_table))
    try:
        registry = RoutingRegistry(
            registry_store,
            InstrumentedFactory(factory, trace),
            connections={connection.name: connection},
            deployment_mode="lab",
        )
        engines = Engines(registry, CursorCodec(secrets.token_bytes(32)), SystemClock())
        try:
            await registry.load()
            for kind in RESOURCE_KINDS:
                table = (tables or {}).get(kind)
                route = Route(resource_kind=kind, connection=connection.name, table=table)
                await registry.set_route(route, probe=False)
            yield engines
        finally:
            await engines.close()
    finally:
        await registry_store.close()


# --- the operations ---------------------------------------------------------------------------

CTX = RequestContext(tenant_id="t_rt", mode="lab", user_id="u_rt", roles=("member", "admin"))


@dataclass(frozen=True)
class RoundTripTarget:
    """What an operation may cost; ``None`` = not bounded."""

    depth: int | None = None
    calls: int | None = None
    inputs_depth: int | None = None

    def met(self, rt: RoundTrips) -> bool:
        return (
            (self.depth is None or rt.depth <= self.depth)
            and (self.calls is None or rt.total <= self.calls)
            and (self.inputs_depth is None or rt.inputs_depth <= self.inputs_depth)
        )

    @property
    def bounded(self) -> bool:
        return (self.depth, self.calls, self.inputs_depth) != (None, None, None)

    def describe(self) -> str:
        parts = []
        if self.depth is not None:
            parts.append(f"<= {self.depth} seq")
        if self.calls is not None:
            parts.append(f"<= {self.calls} calls")
        if self.inputs_depth is not None:
            parts.append(f"inputs <= {self.inputs_depth} seq")
        return ", ".join(parts) or "(reported)"


@dataclass(frozen=True)
class Operation:
    name: str
    label: str
    target: RoundTripTarget = field(default_factory=RoundTripTarget)


OPERATIONS: tuple[Operation, ...] = (
    Operation("chat_post_keyed", "keyed chat post", RoundTripTarget(depth=2)),
    Operation("chat_post", "unkeyed chat post"),
    Operation(
        "canvas_command",
        "canvas command (existing canvas, base_rev = head)",
        RoundTripTarget(depth=4, calls=8),
    ),
    Operation("canvas_first_command", "first command on a new canvas"),
    Operation("gate_decision", "gated action decision (default policies)", RoundTripTarget(inputs_depth=2)),
    Operation(
        "gate_decision_budget", "gated action decision (budget limit set)", RoundTripTarget(inputs_depth=2)
    ),
    Operation("action_execute", "POST /actions/execute (keyed, budget limit set)"),
)
BY_NAME = {op.name: op for op in OPERATIONS}


class Scenario:
    """The operations of :data:`OPERATIONS` on one Engines, each callable again and again."""

    ACTION = "rt_action"

    def __init__(self, engines: Engines, ctx: RequestContext = CTX) -> None:
        self.engines = engines
        self.ctx = ctx
        self.n = 0
        self.heads: dict[str, int] = {}

    def _next(self) -> int:
        self.n += 1
        return self.n

    async def setup(self) -> None:
        """The thread and the canvas exist before anything is measured: their first write
        (thread index, canvas creation) is not the steady state."""
        await self.chat_post()
        await self.canvas_command()

    async def chat_post_keyed(self) -> None:
        n = self._next()
        await self.engines.chat.post(self.ctx, "th-rt", role="user", content=f"m{n}", idempotency_key=f"k{n}")

    async def chat_post(self) -> None:
        await self.engines.chat.post(self.ctx, "th-rt", role="user", content=f"m{self._next()}")

    async def commit(self, canvas_id: str) -> None:
        head = self.heads.get(canvas_id, 0)
        n = self._next()
        op = (
            {"op": "update", "atom_id": "a1", "patch": {"n": n}}
            if head
            else {"op": "create", "atom_id": "a1", "kind": "box", "props": {"n": n}}
        )
        command = CommandIn(base_rev=head, ops=[op], idempotency_key=f"c{n}")
        result = await self.engines.canvas.commit(self.ctx, canvas_id, command)
        self.heads[canvas_id] = result.head_rev

    async def canvas_command(self) -> None:
        await self.commit("cv-rt")

    async def canvas_first_command(self) -> None:
        await self.commit(f"cv-new{self._next()}")

    async def gate_decision(self) -> None:
        await self.engines.gate.check(
            self.ctx, action_name=self.ACTION, subject_type="rt", subject_id="s1", estimated_cost=1.0
        )

    async def set_budget_limit(self) -> None:
        await self.engines.policies.put_document(
            self.ctx,
            "budget_policy",
            {"limits": [{"period": "month", "limit": 1e9}]},
            expected_version=0,
        )

        async def handler(ctx: RequestContext, request: Any) -> dict[str, Any]:
            return {"ok": True}

        self.engines.actions.register(self.ACTION, handler)

    gate_decision_budget = gate_decision

    async def action_execute(self) -> None:
        body = {
            "action_name": self.ACTION,
            "subject_type": "rt",
            "subject_id": "s1",
            "estimated_cost": 1.0,
            "idempotency_key": f"a{self._next()}",
        }
        await self.engines.actions.execute(self.ctx, body)


async def measure_operations(scenario: Scenario, trace: Trace) -> dict[str, RoundTrips]:
    """Every operation of :data:`OPERATIONS` on a thread and a canvas that exist, each run once
    to warm then measured; the budget limit is set after the default-policy decision was
    measured."""
    await scenario.setup()
    out: dict[str, RoundTrips] = {}
    for op in OPERATIONS:
        if op.name == "gate_decision_budget":
            await scenario.set_budget_limit()
            await scenario.action_execute()  # the ledger holds a charge: totals are read for real
        run: Callable[[], Awaitable[None]] = getattr(scenario, op.name)
        await run()
        trace.start()
        try:
            await run()
        finally:
            out[op.name] = trace.stop()
    return out
