"""P7 capacity: what one tenant can sustain on each cloud backend before its hottest partition
reaches a published limit — modelled from the real engines' store calls, not measured on a cloud.

Trace — a realistic per-tenant workload (:class:`Workload`: keyed chat posts, spine appends of
every type a client may send and of the server's own, analytics events, gated actions with a
cost through ``engines.actions.execute``, canvas commands, session-memory writes) runs through
the real :class:`~northstar_core.engines.Engines` on the memory backend, every resource kind
routed through :mod:`contracts.round_trips`'s instrumented store (the routing registry's own
store is not counted). Each operation is warmed, then run ``reps`` times, each in its own trace:
every ``get``/``query``/``write`` with its resource kind, partition, and the items it sent or got
back (key, value size, op, condition). It runs once per modelled backend with that backend's
declared ``atomic_checks`` (DynamoDB checks the stream head inside the batch; Firestore and
Cosmos read the head first), so the call shapes are the adapters' own.

Model — each call is priced by the backend's published cost rules and each partition's load is
compared with its published limits (the named constants below, each with its source; README
"Capacity model" has the links). A partition is identified by resource kind (each kind is its own
table / container / collection by default) and its *shape* (``<tenant>|<mode>|spine``,
``<tenant>|<mode>|thread|<thread>``…). Shapes holding an entity id (a thread, a canvas, a session,
a user, a subject) spread with the tenant's number of entities; the others are tenant-wide, and
the first of those to reach a limit caps the whole tenant: that is the sustainable rate.

Also measured here: the live tail's idle cost — 100 followed chat streams on a SQLite store
(shared between processes, so the tail hub polls its activity index) for a few seconds,
counting the backend reads per followed stream per second (P8, ``bench/p8_tails.py``, measures
the same on each emulator, and cross-process delivery).

Targets (issue 12, item 2) are rows with target columns; today's layout misses most of them and
the rows say so. Writes ``bench/results/p7_capacity.json``.

    .venv/bin/python -m bench.p7_capacity [--quick]
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import re
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.common import RESULTS, row
from contracts.round_trips import (
    Call,
    Moved,
    RoundTrips,
    Scenario,
    Trace,
    instrumented_engines,
    measure_operations,
)
from northstar_adapters import AdapterFactory
from northstar_core.canvas import CommandIn
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.kernel import eventlog
from northstar_core.kernel.ids import UUIDv7Generator
from northstar_core.routing import Connection, Route, RouteOptions, Target
from northstar_core.safety import budget
from northstar_core.safety.actions import ActionOutcome, ActionRequest
from northstar_core.storage import ItemStore

BACKENDS: Final = ("dynamodb", "cosmos", "firestore")
KB: Final = 1024
DAY: Final = 86_400

# --- DynamoDB: "Read/write capacity mode", "DynamoDB item sizes and formats", "Amazon DynamoDB
# Transactions: How it works" (capacity management), "Service, account, and table quotas" ---
# One WCU writes one item of up to 1 KB per second (standard write): WCU = ceil(item KB).
DDB_WRITE_UNIT_BYTES: Final = 1 * KB
# One RCU is one strongly consistent read of up to 4 KB per second (the adapter reads with
# ConsistentRead=True); a Query sums the sizes of the items it returns, then rounds up to 4 KB;
# a GetItem of a missing item still costs one unit.
DDB_READ_UNIT_BYTES: Final = 4 * KB
# TransactWriteItems performs two underlying writes of every item (prepare + commit): 2 WCU per
# KB per item. A ConditionCheck is priced as a transactional write of the checked item (an
# assumption: AWS bills the check item inside the transaction as a write of its size).
DDB_TRANSACTION_FACTOR: Final = 2
# Throughput per partition key (one physical partition serves a key): 1,000 WCU/s, 3,000 RCU/s.
DDB_PARTITION_WCU_PER_S: Final = 1_000
DDB_PARTITION_RCU_PER_S: Final = 3_000
DDB_MAX_ITEM_BYTES: Final = 400 * KB
# Item size = attribute names + values. The adapter writes pk (the partition), sk (the key),
# v (the value), ver (a small number, ~2 bytes), wt (a 32-character write token): the names
# (2+2+1+3+2) + ver's value (2) + wt's value (32) = 44 bytes beside partition, key and value.
DDB_ITEM_OVERHEAD_BYTES: Final = 44
# With expires_at: ttl (3 + ~6 bytes for a whole epoch number) and exp (3 + ~11 bytes).
DDB_TTL_OVERHEAD_BYTES: Final = 23
# Storage (not throughput) adds 100 bytes of per-item indexing overhead.
DDB_STORAGE_OVERHEAD_BYTES: Final = 100

# --- Cosmos DB: "Azure Cosmos DB service quotas", "Request Units in Azure Cosmos DB",
# "Transactional batch operations" ---
# One logical partition: at most 20 GB of data and 10,000 RU/s (one physical partition's maximum).
COSMOS_PARTITION_RU_PER_S: Final = 10_000
COSMOS_PARTITION_BYTES: Final = 20 * 1024**3
# Published anchor: a point read of a 1 KB item costs 1 RU. Larger items are modelled linearly
# (1 RU per started KB); a miss costs the same 1 RU.
COSMOS_POINT_READ_RU_PER_KB: Final = 1.0
# Writes (create/replace/upsert/delete) are modelled at 5.5 RU per started KB with the default
# "index everything" policy — an approximation in line with the published examples (about 5 RU
# for a 1 KB insert, more as indexed properties grow); our policy excludes the value blob from
# the index, so real charges should be at or below it.
COSMOS_WRITE_RU_PER_KB: Final = 5.5
# A single-partition query: a fixed part (modelled 2.5 RU, the usual floor of a simple indexed
# query) plus 1 RU per started KB returned.
COSMOS_QUERY_BASE_RU: Final = 2.5
COSMOS_QUERY_RU_PER_KB: Final = 1.0
# A transactional batch is charged the sum of its operations' RU (no discount, no surcharge).
# Stored JSON: the adapter's document (id = base64url key, pk, sk, v = base64 value, ver,
# expires_at[, ttl]) plus the system properties Cosmos adds (_rid, _self, _etag, _attachments,
# _ts: about 190 bytes).
COSMOS_SYSTEM_PROPERTIES_BYTES: Final = 190

# --- Firestore: "Best practices" (hotspots, index exemptions, ramping up traffic), "Usage and
# limits", "Storage size calculations" ---
# Writes to one collection whose documents hold sequential (monotonically increasing) values in
# an indexed field — or have monotonically increasing document ids — top out at about 500/s.
# Our layout: partition P of kind K is the collection northstar_K/<P>/items; the document id is
# the item key and `sk` (the key) is indexed asc+desc, so every `s#<seq>`, `ev#<uuidv7>`,
# `er#<run>#<uuidv7>`… key is sequential in its collection.
FS_SEQUENTIAL_WRITES_PER_COLLECTION_PER_S: Final = 500
# One document sustains about 1 write per second.
FS_WRITES_PER_DOCUMENT_PER_S: Final = 1
# "500/50/5": start new traffic to a collection at <= 500 ops/s, grow it by 50% every 5 minutes.
FS_RAMP_START_OPS_PER_S: Final = 500
FS_RAMP_GROWTH: Final = 0.5
FS_RAMP_STEP_MINUTES: Final = 5
# Storage size: a string costs its UTF-8 bytes + 1, bytes their length, an integer / double /
# timestamp 8; a field is its name (a string) + its value; a document is its name (the
# collection and document ids of its path as strings, + 16) + its fields + 32.
FS_DOCUMENT_OVERHEAD_BYTES: Final = 32
FS_NAME_OVERHEAD_BYTES: Final = 16
FS_WRITE_TOKEN_CHARS: Final = 32

# --- every backend: an append to a sequenced stream (chat thread, canvas log, timeline stream,
# budget ledger) is conditional on the head, so appends to one stream go one after the other:
# at most one per write round trip. Modelled round trip of a conditional batch write to a cloud
# in the same region (an assumption, not a published figure): 10 ms → 100 appends/s per stream.
SEQUENCED_APPEND_SECONDS: Final = 0.010

# --- targets (issue 12, item 2) ---
TARGET_EVENTS_PER_S: Final = 10_000
TARGET_HEADROOM: Final = 0.5  # every partition at <= 50% of its limit
TARGET_WCU_PER_SPINE_EVENT: Final = 4
TARGET_ACTIONS_PER_S: Final = 2_000
TARGET_GATE_INPUT_DEPTH: Final = 2
TARGET_TAIL_IDLE_READS_PER_S: Final = 0.05

# Keys whose last component grows with time or sequence: a UUIDv7 (event ids) or a zero-padded
# sequence number (stream entries).
_SEQUENTIAL_KEY: Final = re.compile(
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9]{16})$"
)
_MONTH: Final = re.compile(r"^[0-9]{4}-[0-9]{2}$")
_DAY: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_HOUR: Final = re.compile(r"^[0-9]{10}$")  # a time-bucketed log's bucket (kernel/buckets.py)
_NUMBER: Final = re.compile(r"^[0-9]{2,3}$")
# Placeholders that bound a partition in time (a new partition per period).
TIME_BUCKETS: Final = frozenset({"<month>", "<day>", "<hour>"})
# The shard count the modelled engines' spine and analytics routes are given (RouteOptions
# shards): a list page's fan-out, and how many partitions share one hour of a tenant's log.
MODEL_SHARDS: Final = 128
# Placeholders that spread a tenant's load evenly over a fixed number of partitions: the shards
# of a bucketed log (by run id / event id), the hashed slots of the spine's run registry and
# idempotency claims (by run id / key), and the budget ledger's shards (by key, or at random).
SPREAD: Final[dict[str, int]] = {
    "<shard>": MODEL_SHARDS,
    "<slot>": eventlog.KEY_SLOTS,
    "<ledger>": budget.SHARDS,
}
# Placeholders that do not spread a tenant's load with its entities (one value per tenant, a
# time bucket, or a fixed spread).
TENANT_WIDE: Final = frozenset({"<tenant>", "<mode>", "<project>", *TIME_BUCKETS, *SPREAD})


def is_sequential_key(key: str) -> bool:
    return _SEQUENTIAL_KEY.search(key) is not None


# --- the workload ------------------------------------------------------------------------------

TENANT: Final = "t_cap"
USER: Final = "u_cap"
AGENT: Final = "ag_cap"
THREADS: Final = ("th-a", "th-b", "th-c")
CANVASES: Final = ("cv-a", "cv-b")
SESSION: Final = "sess-a"
MEMORY_KEYS: Final = 8  # a session's writes cycle over this many keys
# Warm-up runs per operation before tracing (default 2: caches, stream head hints): memory
# writes first create every key, so the trace is the steady state (rewrites, no growth).
WARMUP: Final = {"memory_write": MEMORY_KEYS}
ACTION: Final = "cap_action"
ACTION_COST: Final = 1.5
SUBJECT: Final = ("agent", "a1")

# A chat message, a spine payload and analytics properties of a typical size.
CHAT_TEXT: Final = "Summarise the open tickets of last week and draft a reply to each. " * 4
SPINE_PAYLOAD: Final[dict[str, Any]] = {
    "tool": "search",
    "args": {"query": "open tickets", "limit": 20},
    "latency_ms": 412,
    "tokens": {"in": 1532, "out": 287},
    "status": "ok",
}


@dataclass(frozen=True)
class WorkOp:
    name: str
    label: str
    group: str  # what the report aggregates it under


# Spine appends of every type the spine takes from clients (one custom type per client source,
# a keyed one, an agent's own audit) and of the server's own audit; the server's `safety`,
# `budget` and `analytics` events come with the gated action and the analytics event.
WORK_OPS: Final[tuple[WorkOp, ...]] = (
    WorkOp("chat_post", "keyed chat post", "chat_post"),
    WorkOp("spine_ui", "spine append: client, source ui", "spine_append"),
    WorkOp("spine_agent", "spine append: client, source agent", "spine_append"),
    WorkOp("spine_connector", "spine append: client, source connector", "spine_append"),
    WorkOp("spine_tool", "spine append: client, source tool", "spine_append"),
    WorkOp("spine_keyed", "spine append: client, with idempotency key", "spine_append"),
    WorkOp("spine_agent_audit", "spine append: an agent's own audit event", "spine_append"),
    WorkOp("spine_server_audit", "spine append: server audit (engines.audit)", "spine_append"),
    WorkOp("analytics_event", "analytics event (spine + analytics view)", "analytics_event"),
    WorkOp("gated_action", "gated action with cost (POST /actions/execute, keyed)", "gated_action"),
    WorkOp("canvas_command", "canvas command at the head", "canvas_command"),
    WorkOp("memory_write", "session memory write", "memory_write"),
)
WORK_BY_NAME: Final = {op.name: op for op in WORK_OPS}
GROUPS: Final[dict[str, str]] = {
    "chat_post": "keyed chat post",
    "spine_append": "spine append (every client and server type)",
    "analytics_event": "analytics event",
    "gated_action": "gated action with cost",
    "canvas_command": "canvas command",
    "memory_write": "session memory write",
}
# A tenant's operation mix (per 100 operations), for the whole-workload row.
MIX: Final[dict[str, float]] = {
    "spine_append": 40,
    "analytics_event": 25,
    "chat_post": 10,
    "gated_action": 10,
    "canvas_command": 10,
    "memory_write": 5,
}


# An agent run's length in operations: the workload starts a new run after this many. Run ids
# are UUIDv7s, as agents mint them (the spine then needs no run registry entry for them).
RUN_OPS: Final = 20


def _context(run_id: str = "run-cap", **kw: Any) -> RequestContext:
    return RequestContext(
        tenant_id=TENANT,
        mode="lab",
        user_id=USER,
        roles=("member", "admin"),
        run_id=run_id,
        step_id="step-1",
        **kw,
    )


class Workload:
    """One tenant's operations on one Engines; each callable again and again (see module doc)."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self.run_ids = UUIDv7Generator()
        self.ops = 0
        self._new_run()
        self.n = 0
        self.canvas_heads: dict[str, int] = {}

    def _next(self) -> int:
        self.n += 1
        return self.n

    async def setup(self) -> None:
        """A budget limit (so the budget gate reads the ledger), the action's handler, and every
        thread and canvas created: first writes are not the steady state."""
        await self.engines.policies.put_document(
            self.ctx, "budget_policy", {"limits": [{"period": "month", "limit": 1e12}]}, expected_version=0
        )

        async def handler(ctx: RequestContext, request: ActionRequest) -> ActionOutcome:
            return ActionOutcome(result={"ok": True}, cost=ACTION_COST)

        self.engines.actions.register(ACTION, handler)
        for _ in THREADS:
            await self.chat_post()
        for _ in CANVASES:
            await self.canvas_command()

    def _new_run(self) -> None:
        run_id = f"agent-run:{self.run_ids.next(time.time())}"
        self.ctx = _context(run_id)
        self.agent = _context(run_id, agent_id=AGENT)

    async def run(self, name: str) -> None:
        self.ops += 1
        if self.ops % RUN_OPS == 0:
            self._new_run()
        method: Callable[[], Awaitable[None]] = getattr(self, name)
        await method()

    async def chat_post(self) -> None:
        n = self._next()
        await self.engines.chat.post(
            self.ctx,
            THREADS[n % len(THREADS)],
            role="user",
            content=f"{CHAT_TEXT}#{n}",
            idempotency_key=f"k{n}",
        )

    async def _client_event(self, ctx: RequestContext, event_type: str, source: str, **kw: Any) -> None:
        body = {"event_type": event_type, "source": source, "payload": {**SPINE_PAYLOAD, "n": self._next()}}
        await self.engines.spine.append(ctx, {**body, **kw}, client=True)

    async def spine_ui(self) -> None:
        await self._client_event(self.ctx, "ui.submit", "ui")

    async def spine_agent(self) -> None:
        await self._client_event(self.agent, "agent.step", "agent")

    async def spine_connector(self) -> None:
        await self._client_event(self.ctx, "connector.sync", "connector")

    async def spine_tool(self) -> None:
        await self._client_event(self.agent, "tool.call", "tool")

    async def spine_keyed(self) -> None:
        await self._client_event(self.agent, "agent.step", "agent", idempotency_key=f"e{self.n + 1}")

    async def spine_agent_audit(self) -> None:
        await self._client_event(self.agent, "audit", "agent")

    async def spine_server_audit(self) -> None:
        await self.engines.audit.audit(self.ctx, "settings_viewed", {"n": self._next(), "page": "billing"})

    async def analytics_event(self) -> None:
        n = self._next()
        await self.engines.analytics.record(
            self.ctx,
            {
                "kind": "click",
                "target": "button#send",
                "session_id": SESSION,
                "properties": {"n": n, "ab": "b"},
            },
        )

    async def gated_action(self) -> None:
        body = {
            "action_name": ACTION,
            "subject_type": SUBJECT[0],
            "subject_id": SUBJECT[1],
            "estimated_cost": ACTION_COST,
            "params": {"query": "open tickets"},
            "idempotency_key": f"a{self._next()}",
        }
        await self.engines.actions.execute(self.ctx, body)

    async def canvas_command(self) -> None:
        n = self._next()
        canvas_id = CANVASES[n % len(CANVASES)]
        head = self.canvas_heads.get(canvas_id, 0)
        op = (
            {"op": "update", "atom_id": "a1", "patch": {"text": f"note {n}"}}
            if head
            else {"op": "create", "atom_id": "a1", "kind": "note", "props": {"text": f"note {n}"}}
        )
        result = await self.engines.canvas.commit(
            self.ctx, canvas_id, CommandIn(base_rev=head, ops=[op], idempotency_key=f"c{n}")
        )
        self.canvas_heads[canvas_id] = result.head_rev

    async def memory_write(self) -> None:
        n = self._next()
        await self.engines.memory.set(self.ctx, SESSION, f"k{n % MEMORY_KEYS}", {"step": n, "notes": "draft"})

    def placeholders(self) -> dict[str, str]:
        """Id segments of this workload's partitions → their shape's placeholder."""
        out = {TENANT: "<tenant>", "lab": "<mode>", USER: "<user>", SESSION: "<session>", "~": "<project>"}
        out.update({t: "<thread>" for t in THREADS})
        out.update({c: "<canvas>" for c in CANVASES})
        out.update({f"canvas:{c}": "<subject>" for c in CANVASES})
        out[f"{SUBJECT[0]}:{SUBJECT[1]}"] = "<subject>"
        return out


def shape_of(partition: str, placeholders: Mapping[str, str]) -> str:
    """The partition's shape: known id segments, time buckets, shards and slots replaced by
    placeholders."""
    out: list[str] = []
    for segment in partition.split("|"):
        if segment in placeholders:
            out.append(placeholders[segment])
        elif _MONTH.fullmatch(segment):
            out.append("<month>")
        elif _DAY.fullmatch(segment):
            out.append("<day>")
        elif _HOUR.fullmatch(segment):
            out.append("<hour>")
        elif _NUMBER.fullmatch(segment) and out and out[-1] == "<hour>":
            out.append("<shard>")
        elif _NUMBER.fullmatch(segment) and out and out[-1] == "<month>":
            out.append("<ledger>")  # a shard of the budget ledger
        elif _NUMBER.fullmatch(segment) and out and out[-1] in ("runs", "keys"):
            out.append("<slot>")
        else:
            out.append(segment)
    return "|".join(out)


def spread_of(shape: str) -> int:
    """Over how many partitions of this shape a tenant's load spreads evenly (1: one)."""
    n = 1
    for p in re.findall(r"<[a-z]+>", shape):
        n *= SPREAD.get(p, 1)
    return n


def is_per_entity(shape: str) -> bool:
    """Whether the shape holds an entity id, so a tenant's load spreads over many partitions."""
    return any(p not in TENANT_WIDE for p in re.findall(r"<[a-z]+>", shape))


def is_time_bucketed(shape: str) -> bool:
    return any(p in TIME_BUCKETS for p in re.findall(r"<[a-z]+>", shape))


BUCKET_SECONDS: Final[dict[str, float]] = {"<hour>": 3_600, "<day>": DAY, "<month>": 31 * DAY}


def bucket_seconds(shape: str) -> float:
    """How long one partition of this shape receives writes (its time bucket), inf if unbucketed."""
    spans = [BUCKET_SECONDS[p] for p in re.findall(r"<[a-z]+>", shape) if p in BUCKET_SECONDS]
    return min(spans) if spans else math.inf


# --- the trace: instrumented engines on memory, with a backend's call shape --------------------


class ShapedFactory:
    """Opens memory stores that declare ``atomic_checks`` as the modelled backend does, so the
    kernel issues that backend's calls; remembers them so a check's item size can be looked up."""

    def __init__(self, atomic_checks: bool) -> None:
        self.inner = AdapterFactory()
        self.atomic_checks = atomic_checks
        self.opened: dict[str, ItemStore] = {}

    def open(self, target: Target) -> ItemStore:
        store = self.inner.open(target)
        store.capabilities = msgspec.structs.replace(store.capabilities, atomic_checks=self.atomic_checks)
        self.opened[target.resource_kind] = store
        return store


def atomic_checks_of(backend: str) -> bool:
    """What the backend's adapter declares (imported, so a change there shows up here)."""
    module = importlib.import_module(f"northstar_adapters.{backend}")
    return bool(module.CAPABILITIES.atomic_checks)


async def with_check_sizes(rt: RoundTrips, stores: Mapping[str, ItemStore]) -> tuple[Call, ...]:
    """The calls, each check's size filled in from the item it checks (a check sends no value,
    but DynamoDB bills it as a write of that item)."""
    out = []
    for call in rt.calls:
        if any(m.op == "check" for m in call.moved):
            moved = []
            for m in call.moved:
                if m.op == "check":
                    item = await stores[call.kind].get(call.partition, m.key)
                    m = replace(m, value_bytes=len(item.value) if item is not None else 0)
                moved.append(m)
            call = replace(call, moved=tuple(moved))
        out.append(call)
    return tuple(out)


async def drive(
    engines: Engines,
    trace: Trace,
    stores: Mapping[str, ItemStore],
    reps: int,
    names: Iterable[str] | None = None,
) -> dict[str, list[tuple[Call, ...]]]:
    """Every workload operation warmed (:data:`WARMUP`), then traced ``reps`` times, one trace each."""
    workload = Workload(engines)
    await workload.setup()
    out: dict[str, list[tuple[Call, ...]]] = {}
    for name in names or WORK_BY_NAME:
        for _ in range(WARMUP.get(name, 2)):
            await workload.run(name)
        samples = []
        for _ in range(reps):
            trace.start()
            try:
                await workload.run(name)
            finally:
                rt = trace.stop()
            samples.append(await with_check_sizes(rt, stores))
        out[name] = samples
    return out


async def trace_workload(
    atomic_checks: bool, reps: int, names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The workload's traces on a fresh memory backend with the given call shape."""
    factory = ShapedFactory(atomic_checks)
    connection = Connection(name="p7", backend="memory", params={"name": f"p7-{secrets.token_hex(4)}"})
    trace = Trace(delay=0)  # depth is not modelled here; no need to hold calls
    async with instrumented_engines(factory, connection, trace) as engines:
        for kind in ("event_spine", "analytics_store"):
            options = RouteOptions(shards=MODEL_SHARDS)
            route = Route(resource_kind=kind, connection=connection.name, options=options)
            await engines.registry.set_route(route, probe=False)
        samples = await drive(engines, trace, factory.opened, reps, names)
        return {"samples": samples, "placeholders": Workload(engines).placeholders()}


# --- the cost model ----------------------------------------------------------------------------


def ddb_item_bytes(partition: str, m: Moved) -> int:
    """DynamoDB item size (attribute names + values) of the adapter's item for ``m``."""
    size = len(partition.encode()) + len(m.key.encode()) + m.value_bytes + DDB_ITEM_OVERHEAD_BYTES
    return size + (DDB_TTL_OVERHEAD_BYTES if m.expires else 0)


def ddb_wcu(size: int, transactional: bool) -> int:
    """WCU of writing one item of ``size`` bytes: ceil(KB), at least 1, doubled in a transaction."""
    units = max(1, math.ceil(size / DDB_WRITE_UNIT_BYTES))
    return units * (DDB_TRANSACTION_FACTOR if transactional else 1)


def ddb_rcu(total_bytes: int, transactional: bool = False) -> int:
    """RCU of a strongly consistent read returning ``total_bytes``: ceil(/4 KB), at least 1."""
    units = max(1, math.ceil(total_bytes / DDB_READ_UNIT_BYTES))
    return units * (DDB_TRANSACTION_FACTOR if transactional else 1)


def cosmos_doc_bytes(partition: str, m: Moved) -> int:
    """JSON size of the adapter's document for ``m`` plus Cosmos' system properties."""
    key_len = len(m.key.encode())
    doc = {
        "id": "A" * math.ceil(key_len * 4 / 3),  # unpadded base64url of the key
        "pk": partition,
        "sk": m.key,
        "v": "A" * (4 * math.ceil(m.value_bytes / 3)),  # base64 of the value
        "ver": 1,
        "expires_at": 1.0e9 if m.expires else None,
    }
    if m.expires:
        doc["ttl"] = 86_400
    return len(json.dumps(doc, separators=(",", ":"))) + COSMOS_SYSTEM_PROPERTIES_BYTES


def cosmos_point_read_ru(size: int) -> float:
    return COSMOS_POINT_READ_RU_PER_KB * max(1, math.ceil(size / KB))


def cosmos_write_ru(size: int) -> float:
    return COSMOS_WRITE_RU_PER_KB * max(1, math.ceil(size / KB))


def cosmos_query_ru(total_bytes: int) -> float:
    return COSMOS_QUERY_BASE_RU + COSMOS_QUERY_RU_PER_KB * math.ceil(total_bytes / KB)


def _fs_string(s: str) -> int:
    return len(s.encode()) + 1


def firestore_doc_bytes(kind: str, partition: str, m: Moved) -> int:
    """Firestore storage size of the adapter's document for ``m`` ("Storage size calculations")."""
    name = (
        sum(_fs_string(s) for s in (f"northstar_{kind}", partition, "items", m.key)) + FS_NAME_OVERHEAD_BYTES
    )
    fields = (
        _fs_string("sk")
        + _fs_string(m.key)
        + _fs_string("v")
        + m.value_bytes
        + _fs_string("ver")
        + 8
        + _fs_string("w")
        + FS_WRITE_TOKEN_CHARS
        + 1
    )
    if m.expires:
        fields += _fs_string("exp") + 8 + _fs_string("expires_at") + 8
    return name + fields + FS_DOCUMENT_OVERHEAD_BYTES


@dataclass
class Load:
    """What one operation does to one partition (kind + shape), averaged over its samples."""

    kind: str
    shape: str
    writes: float = 0  # write calls
    transactional_writes: float = 0  # write calls of more than one op (a transaction / batch)
    items_written: float = 0  # puts and deletes
    checks: float = 0
    gets: float = 0
    queries: float = 0
    items_read: float = 0  # items returned by gets and queries
    bytes_written: float = 0  # value + key + partition + DynamoDB's per-item overhead
    sequenced_appends: float = 0  # writes that append at a sequenced stream's head
    # per backend
    wcu: float = 0
    rcu: float = 0
    ru: float = 0
    fs_writes: float = 0
    fs_sequential_writes: float = 0
    fs_reads: float = 0
    fs_hot_doc_writes: float = 0  # writes per operation to the most rewritten document
    max_item_bytes: int = 0  # the largest DynamoDB item written (the 400 KB item limit)
    gained: dict[str, float] = field(default_factory=dict)  # backend -> stored bytes gained

    @property
    def per_entity(self) -> bool:
        return is_per_entity(self.shape)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.shape}"


# The per-operation figures of a Load, averaged over samples and summed by merge().
AVERAGED: Final = (
    "writes", "transactional_writes", "items_written", "checks", "gets", "queries", "items_read",
    "bytes_written", "sequenced_appends", "wcu", "rcu", "ru", "fs_writes", "fs_sequential_writes",
    "fs_reads",
)  # fmt: skip


def _price_call(load: Load, call: Call, backend: str) -> None:
    partition = call.partition
    if call.method == "write":
        ops = list(call.moved)
        transactional = len(ops) > 1  # the adapters send one op alone, several as one transaction
        load.writes += 1
        load.transactional_writes += transactional
        writes = [m for m in ops if m.op in ("put", "delete")]
        load.items_written += len(writes)
        load.checks += sum(m.op == "check" for m in ops)
        load.bytes_written += sum(ddb_item_bytes(partition, m) for m in writes)
        load.max_item_bytes = max([load.max_item_bytes, *(ddb_item_bytes(partition, m) for m in writes)])
        if any(m.op == "put" and m.condition == "absent" and m.key.startswith("s#") for m in ops):
            load.sequenced_appends += 1
        if backend == "dynamodb":
            load.wcu += sum(ddb_wcu(ddb_item_bytes(partition, m), transactional) for m in ops)
        elif backend == "cosmos":
            load.ru += sum(cosmos_write_ru(cosmos_doc_bytes(partition, m)) for m in writes)
            # the adapter reads a VersionIs / conditional delete target first, for its etag
            load.ru += sum(
                cosmos_point_read_ru(cosmos_doc_bytes(partition, m))
                for m in writes
                if m.condition == "version" or (m.op == "delete" and m.condition)
            )
        else:
            load.fs_writes += len(writes)
            load.fs_sequential_writes += sum(m.op == "put" and is_sequential_key(m.key) for m in writes)
            # the adapter reads a VersionIs target first, for its update time
            load.fs_reads += sum(m.condition == "version" for m in writes)
        return
    returned = list(call.moved)
    load.items_read += len(returned)
    if call.method == "get":
        load.gets += 1
        item = returned[0] if returned else None
        if backend == "dynamodb":
            load.rcu += ddb_rcu(ddb_item_bytes(partition, item) if item else 0)
        elif backend == "cosmos":
            load.ru += cosmos_point_read_ru(cosmos_doc_bytes(partition, item) if item else 0)
        else:
            load.fs_reads += 1
    else:
        load.queries += 1
        if backend == "dynamodb":
            load.rcu += ddb_rcu(sum(ddb_item_bytes(partition, m) for m in returned))
        elif backend == "cosmos":
            load.ru += cosmos_query_ru(sum(cosmos_doc_bytes(partition, m) for m in returned))
        else:
            load.fs_reads += max(1, len(returned))  # a query returning nothing is billed one read


def _stored_bytes(backend: str, kind: str, partition: str, m: Moved) -> int:
    if backend == "dynamodb":
        return ddb_item_bytes(partition, m) + DDB_STORAGE_OVERHEAD_BYTES
    if backend == "cosmos":
        return cosmos_doc_bytes(partition, m)
    return firestore_doc_bytes(kind, partition, m)


def _gained(backend: str, call: Call) -> int:
    """Stored bytes a write adds: new items (``Absent`` puts). A replaced item (VersionIs or
    unconditional) is modelled as adding nothing; deletes as freeing nothing."""
    return sum(
        _stored_bytes(backend, call.kind, call.partition, m)
        for m in call.moved
        if m.op == "put" and m.condition == "absent"
    )


def loads_of(
    samples: Sequence[tuple[Call, ...]], backend: str, placeholders: Mapping[str, str]
) -> dict[tuple[str, str], Load]:
    """Per partition (kind, shape): the operation's average load on ``backend``."""
    loads: dict[tuple[str, str], Load] = {}
    # Firestore's ~1 write/s per document is a sustained rate: a document is hot when the
    # operation rewrites it again and again — written by more than one sample — and its rate is
    # the share of the samples touching its partition that write it (a document written several
    # times within ONE operation, e.g. an action's claim record, is a burst, not a rate).
    doc_samples: dict[tuple[str, str, str], int] = defaultdict(int)
    partition_samples: dict[tuple[str, str], int] = defaultdict(int)
    for calls in samples:
        docs: set[tuple[str, str, str]] = set()
        for call in calls:
            shape = shape_of(call.partition, placeholders)
            load = loads.setdefault((call.kind, shape), Load(call.kind, shape))
            _price_call(load, call, backend)
            if call.method == "write":
                load.gained[backend] = load.gained.get(backend, 0) + _gained(backend, call)
                written = (m.key for m in call.moved if m.op in ("put", "delete"))
                docs.update((call.kind, call.partition, key) for key in written)
        for doc in docs:
            doc_samples[doc] += 1
        for kind, partition in {(c.kind, c.partition) for c in calls}:
            partition_samples[(kind, partition)] += 1
    n = len(samples)
    for load in loads.values():
        for name in AVERAGED:
            setattr(load, name, getattr(load, name) / n)
        load.gained = {b: v / n for b, v in load.gained.items()}
    for (kind, partition, _key), count in doc_samples.items():
        if count > 1:
            load = loads[(kind, shape_of(partition, placeholders))]
            rate = count / partition_samples[(kind, partition)]
            load.fs_hot_doc_writes = max(load.fs_hot_doc_writes, rate)
    return loads


def limits_of(load: Load, backend: str) -> dict[str, float]:
    """Operations per second this partition sustains, per limit that applies (inf: none)."""
    out: dict[str, float] = {}

    def cap(name: str, limit: float, per_op: float) -> None:
        if per_op > 0:
            out[name] = limit / per_op

    if backend == "dynamodb":
        cap(f"{DDB_PARTITION_WCU_PER_S} WCU/s per partition key", DDB_PARTITION_WCU_PER_S, load.wcu)
        cap(f"{DDB_PARTITION_RCU_PER_S} RCU/s per partition key", DDB_PARTITION_RCU_PER_S, load.rcu)
    elif backend == "cosmos":
        cap(f"{COSMOS_PARTITION_RU_PER_S} RU/s per logical partition", COSMOS_PARTITION_RU_PER_S, load.ru)
    else:
        cap(
            f"~{FS_SEQUENTIAL_WRITES_PER_COLLECTION_PER_S} writes/s per collection with sequential keys",
            FS_SEQUENTIAL_WRITES_PER_COLLECTION_PER_S,
            load.fs_sequential_writes,
        )
        cap(
            f"~{FS_WRITES_PER_DOCUMENT_PER_S} write/s per document",
            FS_WRITES_PER_DOCUMENT_PER_S,
            load.fs_hot_doc_writes,
        )
    cap("one append per round trip at a sequenced head", 1 / SEQUENCED_APPEND_SECONDS, load.sequenced_appends)
    return out


@dataclass(frozen=True)
class Capacity:
    """An operation's ceiling for one tenant on one backend."""

    ops_per_s: float  # inf: no tenant-wide partition limits it
    hottest: Load | None  # the tenant-wide partition that reaches its limit first
    limit: str
    entity_ops_per_s: float  # the ceiling per entity (thread, canvas…) of per-entity partitions
    entity_hottest: Load | None
    entity_limit: str


def capacity(loads: Mapping[tuple[str, str], Load], backend: str) -> Capacity:
    """The sustainable rate: the first tenant-wide partition to reach a limit caps the tenant."""
    best: tuple[float, Load | None, str] = (math.inf, None, "")
    entity: tuple[float, Load | None, str] = (math.inf, None, "")
    for load in loads.values():
        for name, per_partition in limits_of(load, backend).items():
            # an evenly spread load reaches one partition's limit at spread times the rate
            rate = per_partition * spread_of(load.shape)
            if load.per_entity:
                if rate < entity[0]:
                    entity = (rate, load, name)
            elif rate < best[0]:
                best = (rate, load, name)
    return Capacity(best[0], best[1], best[2], entity[0], entity[1], entity[2])


def cost_per_op(loads: Mapping[tuple[str, str], Load], backend: str) -> dict[str, float]:
    total = list(loads.values())
    if backend == "dynamodb":
        return {"WCU": sum(x.wcu for x in total), "RCU": sum(x.rcu for x in total)}
    if backend == "cosmos":
        return {"RU": sum(x.ru for x in total)}
    return {"doc writes": sum(x.fs_writes for x in total), "doc reads": sum(x.fs_reads for x in total)}


def merge(parts: Sequence[tuple[float, Mapping[tuple[str, str], Load]]]) -> dict[tuple[str, str], Load]:
    """The weighted sum of several operations' loads (a group's mean, or a mix)."""
    out: dict[tuple[str, str], Load] = {}
    for weight, loads in parts:
        for key, load in loads.items():
            acc = out.setdefault(key, Load(load.kind, load.shape))
            for name in (*AVERAGED, "fs_hot_doc_writes"):
                setattr(acc, name, getattr(acc, name) + weight * getattr(load, name))
            acc.max_item_bytes = max(acc.max_item_bytes, load.max_item_bytes)
            for b, v in load.gained.items():
                acc.gained[b] = acc.gained.get(b, 0) + weight * v
    return out


def ramp_minutes(ops_per_s: float) -> float:
    """Firestore's 500/50/5 rule: minutes of ramping before new traffic may reach ``ops_per_s``."""
    if ops_per_s <= FS_RAMP_START_OPS_PER_S:
        return 0.0
    steps = math.ceil(math.log(ops_per_s / FS_RAMP_START_OPS_PER_S) / math.log(1 + FS_RAMP_GROWTH))
    return steps * FS_RAMP_STEP_MINUTES


# --- the live tail's idle cost -----------------------------------------------------------------


async def tail_idle_reads(seconds: float, streams: int = 100) -> dict[str, Any]:
    """The live tail's idle cost on a store shared between processes (a SQLite file; memory
    stores, shared with no other process, poll nothing): ``streams`` followed chat streams,
    the backend reads per followed stream per second while nothing is appended — P8's
    measure (``bench/p8_tails.py``, which also runs it on each emulator)."""
    from bench import p8_tails

    trace = Trace(delay=0)
    with tempfile.TemporaryDirectory(prefix="ns-bench-p7-") as tmp:
        connection = Connection(name="p7t", backend="sqlite", params={"path": str(Path(tmp) / "p7t.db")})
        async with instrumented_engines(AdapterFactory(), connection, trace) as engines:
            idle = await p8_tails.idle_cost(engines, trace, streams, seconds)
            return {
                **idle,
                "poll_interval_s": engines.tails.poll_interval,
                "safety_interval_s": engines.tails.safety_interval,
            }


def gate_input_depth() -> dict[str, Any]:
    """P6's gate figure (``contracts.round_trips``, memory backend): the sequential round trips
    of a gate decision's inputs with a budget limit set — referenced here, P6 reports it per
    backend."""

    async def go() -> RoundTrips:
        trace = Trace()
        connection = Connection(name="p7g", backend="memory", params={"name": f"p7g-{secrets.token_hex(4)}"})
        async with instrumented_engines(AdapterFactory(), connection, trace) as engines:
            measured = await measure_operations(Scenario(engines), trace)
            return measured["gate_decision_budget"]

    rt = asyncio.run(go())
    return {"inputs_depth": rt.inputs_depth, "inputs_calls": len(rt.inputs), **rt.by_method()}


# --- the report --------------------------------------------------------------------------------


def _si(x: float) -> str:
    if math.isinf(x):
        return "unbounded"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _bytes(x: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if x >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.0f} B"


def _cost(costs: Mapping[str, float]) -> str:
    return ", ".join(f"{v:.3g} {k}" for k, v in costs.items())


def _load_summary(load: Load, backend: str) -> dict[str, Any]:
    out = {
        "kind": load.kind,
        "shape": load.shape,
        "per_entity": load.per_entity,
        "time_bucketed": is_time_bucketed(load.shape),
        "writes": load.writes,
        "transactional_writes": load.transactional_writes,
        "items_written": load.items_written,
        "checks": load.checks,
        "bytes_written_ddb_item_size": round(load.bytes_written, 1),
        "gets": load.gets,
        "queries": load.queries,
        "items_read": load.items_read,
        "sequenced_appends": load.sequenced_appends,
        "max_item_bytes_ddb": load.max_item_bytes,
        "stored_bytes_gained": round(load.gained.get(backend, 0), 1),
        "limits_ops_per_s": {k: round(v, 1) for k, v in limits_of(load, backend).items()},
    }
    if backend == "dynamodb":
        out.update(wcu=load.wcu, rcu=load.rcu)
    elif backend == "cosmos":
        out.update(ru=round(load.ru, 2))
    else:
        out.update(
            doc_writes=load.fs_writes,
            sequential_doc_writes=load.fs_sequential_writes,
            doc_reads=load.fs_reads,
            hot_document_writes=load.fs_hot_doc_writes,
        )
    return out


def _figures(loads: Mapping[tuple[str, str], Load], backend: str) -> dict[str, Any]:
    cap = capacity(loads, backend)
    costs = cost_per_op(loads, backend)
    tenant_wide = not math.isinf(cap.ops_per_s)
    rate = cap.ops_per_s if tenant_wide else cap.entity_ops_per_s
    hottest = cap.hottest if tenant_wide else cap.entity_hottest
    # bytes one partition of the hottest shape gains: a spread load is shared by its partitions
    gained = hottest.gained.get(backend, 0) / spread_of(hottest.shape) if hottest is not None else 0.0
    per_day = gained * rate * DAY if not math.isinf(rate) else 0.0
    # a time-bucketed partition only receives its bucket's writes, then never grows again
    span = bucket_seconds(hottest.shape) if hottest is not None else math.inf
    per_partition = gained * rate * span if not math.isinf(rate) and not math.isinf(span) else None
    ceilings = sorted(
        (min(limits.values()) * spread_of(x.shape), x.label, min(limits, key=limits.__getitem__))
        for x in loads.values()
        if not x.per_entity and (limits := limits_of(x, backend))
    )
    out: dict[str, Any] = {
        "ops_per_s": rate,
        "tenant_wide": tenant_wide,
        # every tenant-wide partition's own ceiling, lowest first: what caps the tenant next
        "tenant_wide_ceilings": [{"ops_per_s": r, "partition": p, "limit": n} for r, p, n in ceilings],
        "hottest": hottest.label if hottest else None,
        "limit": cap.limit if tenant_wide else cap.entity_limit,
        "entity_ops_per_s": cap.entity_ops_per_s,
        "entity_hottest": cap.entity_hottest.label if cap.entity_hottest else None,
        "entity_limit": cap.entity_limit,
        "cost_per_op": costs,
        "hottest_bytes_per_op": gained,
        "hottest_bytes_per_day": per_day,
        # the most one partition of it ever holds (time-bucketed), None when it never stops growing
        "hottest_partition_bytes_at_most": per_partition,
        "partitions": [_load_summary(x, backend) for x in loads.values()],
    }
    if backend == "cosmos" and per_day > 0 and per_partition is None:
        out["days_to_20GB"] = COSMOS_PARTITION_BYTES / per_day
    if backend == "dynamodb":
        out["hottest_wcu_per_op"] = hottest.wcu if hottest is not None else 0.0
        out["max_item_bytes"] = max((x.max_item_bytes for x in loads.values()), default=0)
        out["max_item_limit_bytes"] = DDB_MAX_ITEM_BYTES
    if backend == "firestore":
        writes = costs["doc writes"]
        out["ramp_minutes_to_target"] = ramp_minutes(writes * TARGET_EVENTS_PER_S)
    return out


def model(traces: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per backend: each operation's and each group's loads and figures, and the mix's."""
    out: dict[str, Any] = {}
    for backend, traced in traces.items():
        samples = traced["samples"]
        placeholders = traced["placeholders"]
        per_op = {name: loads_of(s, backend, placeholders) for name, s in samples.items()}
        groups: dict[str, dict[tuple[str, str], Load]] = {}
        for group in GROUPS:
            members = [n for n in per_op if WORK_BY_NAME[n].group == group]
            if members:
                groups[group] = merge([(1 / len(members), per_op[n]) for n in members])
        total = sum(MIX[g] for g in groups)
        mix = merge([(MIX[g] / total, groups[g]) for g in groups])
        out[backend] = {
            "operations": {n: _figures(x, backend) for n, x in per_op.items()},
            "groups": {g: _figures(x, backend) for g, x in groups.items()},
            "mix": {"weights": {g: MIX[g] for g in groups}, **_figures(mix, backend)},
        }
    return out


def unbounded_partitions(traces: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Tenant-wide partitions that grow with every operation and have no time bucket."""
    found: set[str] = set()
    for traced in traces.values():
        for samples in traced["samples"].values():
            for calls in samples:
                for call in calls:
                    shape = shape_of(call.partition, traced["placeholders"])
                    # a put with an expiry (idempotency claims) is bounded by its lifetime
                    grows = any(
                        m.op == "put" and m.condition == "absent" and not m.expires for m in call.moved
                    )
                    if grows and not is_per_entity(shape) and not is_time_bucketed(shape):
                        found.add(f"{call.kind} {shape}")
    return sorted(found)


def rows_for(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table rows. Partition names are in backticks: ``<tenant>`` would be an HTML tag in the
    README's Markdown table."""
    rows: list[dict[str, Any]] = []
    figures = result["model"]
    for backend in figures:
        unit = {"dynamodb": "WCU", "cosmos": "RU", "firestore": "doc writes"}[backend]
        for group, label in GROUPS.items():
            f = figures[backend]["groups"].get(group)
            if f is None:
                continue
            scope = "tenant" if f["tenant_wide"] else "per entity (no tenant-wide partition)"
            if f["hottest"] is None:
                ours = f"no partition limit reached; {_cost(f['cost_per_op'])}/op"
            else:
                ours = (
                    f"{_si(f['ops_per_s'])}/s {scope}; {_cost(f['cost_per_op'])}/op; "
                    f"hottest `{f['hottest']}` ({f['limit']}); +{_bytes(f['hottest_bytes_per_day'])}/day"
                )
            if "days_to_20GB" in f:
                ours += f"; 20 GB in {f['days_to_20GB']:.3g} days"
            elif (at_most := f.get("hottest_partition_bytes_at_most")) is not None:
                ours += f" (time-bucketed: a partition holds at most {_bytes(at_most)})"
            rows.append(
                row(
                    f"P7 {backend}",
                    f"{label}: sustainable ops/s for one tenant (modelled)",
                    ours,
                    None,
                    None if math.isinf(f["ops_per_s"]) else round(f["ops_per_s"], 1),
                    "(reported)",
                    None,
                    f"{unit} per op and limits from the published model (README: Capacity model); "
                    f"per-entity ceiling {_si(f['entity_ops_per_s'])}/s at `{f['entity_hottest']}`",
                )
            )
        mix = figures[backend]["mix"]
        rows.append(
            row(
                f"P7 {backend}",
                "workload mix (" + ", ".join(f"{g} {w:g}%" for g, w in mix["weights"].items()) + "): ops/s",
                f"{_si(mix['ops_per_s'])}/s; hottest `{mix['hottest']}` ({mix['limit']})",
                None,
                round(mix["ops_per_s"], 1),
                "(reported)",
                None,
            )
        )
    # --- the targets ---
    for backend in figures:
        for group, what in (("spine_append", "spine"), ("analytics_event", "analytics")):
            f = figures[backend]["groups"][group]
            at_half = f["ops_per_s"] * TARGET_HEADROOM
            ramp = f.get("ramp_minutes_to_target")
            rows.append(
                row(
                    f"P7 {backend}",
                    f"target: {what} events/s for one tenant with every partition <= 50% of its limit",
                    f"{_si(at_half)}/s (hottest `{f['hottest']}`: {f['limit']})",
                    None,
                    round(at_half, 1),
                    f">= {TARGET_EVENTS_PER_S}",
                    at_half >= TARGET_EVENTS_PER_S,
                    ""
                    if ramp is None
                    else f"with any layout, Firestore's 500/50/5 ramp takes {ramp:.0f} min to reach "
                    f"{TARGET_EVENTS_PER_S} events/s at {_cost(f['cost_per_op'])} per event",
                )
            )
        f = figures[backend]["groups"]["gated_action"]
        following = "".join(
            f"; then `{c['partition']}`: {_si(c['ops_per_s'])}/s ({c['limit']})"
            for c in f["tenant_wide_ceilings"][1:2]
        )
        rows.append(
            row(
                f"P7 {backend}",
                "target: gated actions/s with cost for one tenant",
                f"{_si(f['ops_per_s'])}/s (hottest `{f['hottest']}`: {f['limit']}){following}",
                None,
                round(f["ops_per_s"], 1),
                f">= {TARGET_ACTIONS_PER_S}",
                f["ops_per_s"] >= TARGET_ACTIONS_PER_S,
            )
        )
    if "dynamodb" in figures:
        spine = figures["dynamodb"]["groups"]["spine_append"]
        wcu = spine["cost_per_op"]["WCU"]
        ops = figures["dynamodb"]["operations"]
        split = ""
        if "spine_ui" in ops and "spine_keyed" in ops:
            split = (
                f"; without a key {ops['spine_ui']['cost_per_op']['WCU']:.3g}, with one "
                f"{ops['spine_keyed']['cost_per_op']['WCU']:.3g} (its claim)"
            )
        rows.append(
            row(
                "P7 dynamodb",
                "target: WCU per spine event",
                f"{wcu:.3g} WCU over the spine appends (items per write: "
                f"{_items_per_write(spine):.3g}{split})",
                None,
                round(wcu, 2),
                f"<= {TARGET_WCU_PER_SPINE_EVENT}",
                wcu <= TARGET_WCU_PER_SPINE_EVENT,
            )
        )
    unbounded = result["unbounded_partitions"]
    cosmos_spine = figures.get("cosmos", {}).get("groups", {}).get("spine_append")
    note = ""
    if cosmos_spine is not None and cosmos_spine["hottest_bytes_per_op"] > 0:
        per_s = cosmos_spine["hottest_bytes_per_op"] * TARGET_EVENTS_PER_S
        hottest = cosmos_spine["hottest"] or ""
        span = bucket_seconds(hottest)
        if math.isinf(span):
            hours = COSMOS_PARTITION_BYTES / per_s / 3600
            note = f"; at {TARGET_EVENTS_PER_S} spine events/s Cosmos' 20 GB wall comes in {hours:.3g} h"
        else:
            note = (
                f"; at {TARGET_EVENTS_PER_S} spine events/s the hottest spine partition holds at most "
                f"{_bytes(per_s * span)} (Cosmos' wall: 20 GB)"
            )
    rows.append(
        row(
            "P7",
            "target: no tenant-wide partition key grows without bound (time-bucketed)",
            (", ".join(f"`{u}`" for u in unbounded) or "none") + note,
            None,
            len(unbounded),
            "= 0",
            not unbounded,
        )
    )
    gate = result["gate"]
    rows.append(
        row(
            "P7",
            "target: gate inputs (policies, licences, locks, budget) in sequential round trips (= P6)",
            f"{gate['inputs_depth']} seq / {gate['inputs_calls']} calls",
            None,
            gate["inputs_depth"],
            f"<= {TARGET_GATE_INPUT_DEPTH}",
            gate["inputs_depth"] <= TARGET_GATE_INPUT_DEPTH,
            "measured by contracts.round_trips on memory; P6 reports it on every backend",
        )
    )
    tail = result["tail"]
    rows.append(
        row(
            "P7",
            "target: live-tail idle backend reads/s per followed stream per process",
            f"{tail['reads_per_s_per_stream']:.3g} reads/s ({tail['streams']} idle streams on SQLite, "
            f"{tail['seconds']} s: {tail['index_queries']} activity-index queries every "
            f"{tail['poll_interval_s']} s, {tail['head_reads']} head reads, one per stream per "
            f"{tail['safety_interval_s']:g} s; P8 per emulator)",
            None,
            tail["reads_per_s_per_stream"],
            f"<= {TARGET_TAIL_IDLE_READS_PER_S}",
            tail["reads_per_s_per_stream"] <= TARGET_TAIL_IDLE_READS_PER_S,
            "one activity-index query per process and interval for all its followed streams, "
            "plus each stream's own head once a minute",
        )
    )
    return rows


def _items_per_write(figures: Mapping[str, Any]) -> float:
    spine = [p for p in figures["partitions"] if p["kind"] == "event_spine"]
    return sum(p["items_written"] for p in spine) / max(1e-9, sum(p["writes"] for p in spine))


def run(quick: bool = False, backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    # more samples than MEMORY_KEYS, so the memory writes' rewrites of a key show up
    reps = 2 * MEMORY_KEYS if quick else 4 * MEMORY_KEYS
    traces: dict[str, dict[str, Any]] = {}
    for backend in backends:
        traces[backend] = asyncio.run(trace_workload(atomic_checks_of(backend), reps))
    result: dict[str, Any] = {
        "reps": reps,
        "model": model(traces),
        "unbounded_partitions": unbounded_partitions(traces),
        "tail": asyncio.run(tail_idle_reads(2.0 if quick else 8.0)),
        "gate": gate_input_depth(),
        "constants": constants(),
        "walks": {
            backend: {
                name: [
                    f"{c.method} {c.kind} {c.partition} "
                    + " ".join(
                        f"{m.op}:{m.key}={m.value_bytes}B{'/' + m.condition if m.condition else ''}"
                        for m in c.moved
                    )
                    for c in samples[0]
                ]
                for name, samples in traced["samples"].items()
            }
            for backend, traced in traces.items()
        },
    }
    rows = rows_for(result)
    # "no limit reached" is infinity in the model and null in the JSON (strict JSON has no inf)
    out: dict[str, Any] = finite({"name": "P7", "detail": result, "rows": rows})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "p7_capacity.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def constants() -> dict[str, float]:
    """Every named constant of the model, as written to the JSON result."""
    names = [n for n in globals() if re.match(r"^(DDB|COSMOS|FS|SEQUENCED|TARGET)_", n)]
    return {n: globals()[n] for n in names}


def finite(value: Any) -> Any:
    """``value`` with every infinite float replaced by ``None`` (recursively)."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv)
    print(json.dumps(out["rows"], indent=2))
    print(f"wrote {RESULTS / 'p7_capacity.json'}")
    sys.exit(0 if all(r["met"] is not False for r in out["rows"]) else 1)
