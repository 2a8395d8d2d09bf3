"""P3 scale: backend requests and time per chat page read, canvas snapshot and idempotent
replay at a short history vs a long one, per backend.

Every store the registry opens is wrapped in the instrumented ``ItemStore`` of
``contracts/round_trips.py`` (counting ``get``/``query``/``write`` calls), so the counts are
what really went to the backend. Two threads (chat) and two canvases are built per backend — ``small`` (100)
and ``large`` (100,000 on SQLite; smaller on emulators, stated in the output) — and the three
operations are measured on both, interleaved rep by rep; the reported time is the median.

* **page read** — ``ChatService.list_messages`` of 50 messages after a cursor in the middle
  of the thread;
* **canvas snapshot** — ``CanvasService.snapshot`` with the in-process state cache cleared
  before each read (a cold read: latest checkpoint + the commands after it + the catch-up
  check of the canvas stream);
* **idempotent replay** — ``ChatService.post`` repeating the idempotency key of a posted
  message (returns the stored result, writes nothing).

Histories are built efficiently, not through HTTP: the first and last entries go through the
real services; the bulk in between is written directly in the services' own layout with the
core's encoders (chat: ``SequencedStream.append`` of 99 ``ChatMessage`` entries per batch;
canvas: 32 ``CommandRecord`` entries + their idempotency records per batch, a checkpoint every
``checkpoint_every`` revisions, and the matching ``op_committed`` events with their ordered
publication records on the canvas stream), so the stored shape is what the services produce.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import msgspec

from bench.common import PROVISIONED, bench_connection, ratio, row
from contracts.round_trips import InstrumentedFactory, Trace
from northstar_adapters import AdapterFactory
from northstar_core.canvas import CommandIn, CommandRecord, UpdateOp
from northstar_core.chat import ChatMessage
from northstar_core.clock import SystemClock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.kernel.idempotency import IdempotencyRecord, fingerprint
from northstar_core.routing import Connection, Route, RoutingRegistry, Target
from northstar_core.storage import Absent, Op, Put, VersionIs

T = TypeVar("T")

# Every store call counted, without the delay P6 adds to measure sequential depth.
TRACE = Trace(delay=0)


async def counted(operation: Awaitable[T]) -> tuple[T, dict[str, int], float]:
    """``operation``'s result, its store calls by method and its duration in seconds."""
    TRACE.start()
    t = time.perf_counter()
    try:
        result = await operation
    finally:
        elapsed = time.perf_counter() - t
        calls = TRACE.stop()
    return result, calls.by_method(), elapsed


async def open_engines(routes: list[Target], registry_route: Target) -> Engines:
    factory = InstrumentedFactory(AdapterFactory(), TRACE)
    # The registry's own store is not counted: its periodic route refresh (every few seconds)
    # would land on whichever operation happens to run then.
    connection = Connection(name="bench", backend=registry_route.backend, params=dict(registry_route.params))
    registry = RoutingRegistry(
        factory.inner.open(registry_route), factory, connections={"bench": connection}, deployment_mode="lab"
    )
    await registry.load()
    for target in routes:
        await registry.set_route(Route(resource_kind=target.resource_kind, connection="bench"), probe=False)
    return Engines(registry, CursorCodec(secrets.token_bytes(32)), SystemClock())


CTX = RequestContext(tenant_id="t_bench", mode="lab", user_id="u_bench", roles=("member", "admin"))


async def build_chat(engines: Engines, thread: str, n: int, batch: int = 99) -> None:
    """A thread of ``n`` messages: first and last through the service, the rest in bulk."""
    chat = engines.chat
    await chat.post(CTX, thread, role="user", content="first", idempotency_key="first")
    stream = await chat._stream(CTX, thread)
    now = time.time()
    remaining = n - 2
    while remaining > 0:
        size = min(batch, remaining)

        def build(first: int, size: int = size) -> list[bytes]:
            return [
                msgspec.json.encode(
                    ChatMessage(
                        message_id=f"m_bulk{first + i}",
                        thread_id=thread,
                        seq=first + i,
                        role="user",
                        content=f"message {first + i}",
                        actor_id=CTX.user_id,
                        idempotency_key=None,
                        created_at=iso(now),
                        agent_id=None,
                        **CTX.scope(),
                    )
                )
                for i in range(size)
            ]

        await stream.append(build, now=now)
        remaining -= size
    await chat.post(CTX, thread, role="user", content="last", idempotency_key="replay-me")


async def build_canvas(engines: Engines, canvas_id: str, n: int, batch: int = 32) -> None:
    """A canvas of ``n`` revisions: rev 1 through the service, then bulk in the same layout."""
    canvas, events = engines.canvas, engines.timeline
    first = await canvas.commit(
        CTX,
        canvas_id,
        CommandIn(
            base_rev=0,
            ops=[{"op": "create", "atom_id": "a1", "kind": "box", "props": {"n": 0}}],
            idempotency_key="c1",
        ),
    )
    assert first.head_rev == 1
    log_ = await canvas._log(CTX, canvas_id)
    state = (await canvas._state(log_)).copy()
    sid = canvas.stream_id(canvas_id)
    ev_stream = await events.stream(CTX, sid)
    every = canvas.limits.checkpoint_every
    now = time.time()
    rev = 1
    while rev < n:
        upto = min(n, (rev // batch + 1) * batch)  # batches end on checkpoint boundaries
        records = []
        for r in range(rev + 1, upto + 1):
            op = UpdateOp(atom_id="a1", patch={"n": r})
            state.apply([op], canvas.limits)
            state.rev = r
            records.append(
                CommandRecord(
                    rev=r, ops=[op], actor_id=CTX.user_id, committed_at=now, idempotency_key=f"c{r}"
                )
            )
        checkpoint = canvas._checkpoint_ops(state) if upto % every == 0 else []

        def idem(r: int) -> Put:
            result = msgspec.json.encode({"rev": r, "applied_ops": 1, "first_seq": r, "last_seq": r})
            rec = IdempotencyRecord("bulk", msgspec.Raw(result), now)
            return Put(f"i#c{r}", msgspec.json.encode(rec), condition=Absent())

        raws = [msgspec.json.encode(rec) for rec in records]
        start = rev
        await log_.append(
            lambda _f, raws=raws: raws,
            now=now,
            expected_head=start,
            extra_ops=lambda _f, _l, records=records, checkpoint=checkpoint: [
                *(idem(rec.rev) for rec in records),
                *checkpoint,
            ],
        )
        # the op_committed events and their ordered-publication records on the canvas stream
        ev_head = await ev_stream.head()
        ev_raws = [events._encode(CTX, "op_committed", rec.summary()) for rec in records]

        def publication(
            first_seq: int, _last: int, records: list[CommandRecord] = records, start: int = start
        ) -> list[Op]:
            ops: list[Op] = []
            for i, rec in enumerate(records):
                seq = first_seq + i
                fp = fingerprint({"type": "op_committed", "data": rec.summary()})
                res = msgspec.json.encode({"first_seq": seq, "last_seq": seq})
                body = msgspec.json.encode(IdempotencyRecord(fp, msgspec.Raw(res), now))
                ops.append(Put(f"i#op_committed.{rec.rev}", body, condition=Absent()))
            ops.append(Put("m#op_committed", b"{}", version=records[-1].rev, condition=VersionIs(start)))
            return ops

        await ev_stream.append(
            lambda _f, ev_raws=ev_raws: ev_raws, now=now, expected_head=ev_head, extra_ops=publication
        )
        rev = upto
    canvas._cache.clear()


async def measure(engines: Engines, thread: str, canvas_id: str, head: int) -> dict[str, Any]:
    chat, canvas = engines.chat, engines.canvas
    out: dict[str, Any] = {}
    cursor = chat.cursor(CTX, thread, head // 2)
    page, out["page_ops"], out["page_s"] = await counted(
        chat.list_messages(CTX, thread, cursor=cursor, limit=50)
    )
    assert len(page.items) == 50
    canvas._cache.clear()
    snap, out["snapshot_ops"], out["snapshot_s"] = await counted(canvas.snapshot(CTX, canvas_id))
    assert snap.atoms["a1"].props["n"] in (0, snap.head_rev), snap.atoms["a1"]
    posted, out["replay_ops"], out["replay_s"] = await counted(
        chat.post(CTX, thread, role="user", content="last", idempotency_key="replay-me")
    )
    assert posted.replayed
    return out


def routes_on(connection: Connection) -> tuple[list[Target], Target]:
    """Every resource kind, and the routing registry, on ``connection``."""
    from northstar_core.routing import RESOURCE_KINDS

    backend, params = connection.backend, connection.params
    routes = [Target(resource_kind=k, backend=backend, params=dict(params)) for k in RESOURCE_KINDS]
    return routes, Target(resource_kind="routing_registry", backend=backend, params=dict(params))


def history(backend: str, quick: bool) -> int:
    """The long history's length on ``backend``."""
    if backend == "sqlite":
        return 10_000 if quick else 100_000
    if backend == "dynamodb":
        return 600  # moto copies the table on every transaction (building 600 takes minutes)
    if backend == "firestore":
        return 2_000 if quick else 10_000
    if backend == "cosmos":
        return 1_000 if quick else 2_000  # the emulator re-scans a container on every query
    raise ValueError(f"P3 has no setup for backend {backend}")


async def run_backend(
    routes: list[Target],
    registry_route: Target,
    small: int,
    large: int,
    reps: int,
    provision: bool = False,
    batches: tuple[int, int] = (99, 32),
) -> dict[str, Any]:
    if provision:
        seen: set[bytes] = set()
        for route in [registry_route, *routes]:
            key = msgspec.json.encode(route)
            if key in seen:
                continue
            seen.add(key)
            await AdapterFactory().provision(route, dry_run=False)
    engines = await open_engines(routes, registry_route)
    try:
        built: dict[str, float] = {}
        for name, n in (("small", small), ("large", large)):
            t = time.perf_counter()
            await build_chat(engines, f"th-{name}", n, batches[0])
            await build_canvas(engines, f"cv-{name}", n, batches[1])
            built[name] = round(time.perf_counter() - t, 1)
        samples: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
        for name, n in (("small", small), ("large", large)):  # warm-up (first-use paths)
            await measure(engines, f"th-{name}", f"cv-{name}", n)
        for i in range(reps):
            order = [("small", small), ("large", large)]
            if i % 2:
                order.reverse()
            for name, n in order:
                samples[name].append(await measure(engines, f"th-{name}", f"cv-{name}", n))
    finally:
        await engines.close()
    result: dict[str, Any] = {
        "history": {"small": small, "large": large},
        "build_s": built,
        "bulk_batches": {"chat": batches[0], "canvas": batches[1]},
    }
    for name, runs in samples.items():
        result[name] = {
            f"{op}_ms": round(statistics.median(r[f"{op}_s"] for r in runs) * 1000, 3)
            for op in ("page", "snapshot", "replay")
        } | {f"{op}_ops": runs[-1][f"{op}_ops"] for op in ("page", "snapshot", "replay")}
        # counts must not vary between reps either: every distinct count seen is kept
        for op in ("page", "snapshot", "replay"):
            seen: list[dict[str, int]] = []
            for r in runs:
                if r[f"{op}_ops"] not in seen:
                    seen.append(r[f"{op}_ops"])
            result[name][f"{op}_ops_seen"] = seen
        result[name]["ops_stable"] = all(
            len(result[name][f"{op}_ops_seen"]) == 1 for op in ("page", "snapshot", "replay")
        )
    return result


def rows_for(backend: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    s, l_ = res["small"], res["large"]
    hist = f"{res['history']['small']} vs {res['history']['large']}"
    out = []
    targets = {
        "page": 1.2 if backend == "sqlite" else None,
        "snapshot": 2.0 if backend == "sqlite" else None,
        "replay": None,
    }
    for op, label in (
        ("page", "chat page read"),
        ("snapshot", "canvas snapshot (cold)"),
        ("replay", "chat idempotent replay"),
    ):
        same = s[f"{op}_ops_seen"] == l_[f"{op}_ops_seen"] and len(s[f"{op}_ops_seen"]) == 1
        ops = ",".join(f"{k[0]}{v}" for k, v in l_[f"{op}_ops"].items() if v)
        varied = [
            f"{name} varied between reps: "
            + " / ".join(
                ",".join(f"{k[0]}{v}" for k, v in c.items() if v) for c in res[name][f"{op}_ops_seen"]
            )
            for name in ("small", "large")
            if len(res[name][f"{op}_ops_seen"]) > 1
        ]
        out.append(
            row(
                f"P3 {backend}",
                f"{label}: backend requests, history {hist}",
                ops,
                ",".join(f"{k[0]}{v}" for k, v in s[f"{op}_ops"].items() if v),
                1.0 if same else 0.0,
                "counts equal",
                same,
                "; ".join(["g=get q=query w=write", *varied]),
            )
        )
        value = ratio(l_[f"{op}_ms"], s[f"{op}_ms"])
        limit = targets[op]
        out.append(
            row(
                f"P3 {backend}",
                f"{label}: time large/small (ms)",
                l_[f"{op}_ms"],
                s[f"{op}_ms"],
                value,
                f"<= {limit}" if limit else "(reported)",
                value <= limit if limit else None,
                "",
            )
        )
    return out


def run(
    quick: bool = False, backends: Sequence[str] = ("sqlite",), large: int | None = None
) -> dict[str, Any]:
    reps = 5 if quick else 15
    detail: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for backend in backends:
        n = large or history(backend, quick)
        with bench_connection(backend, "p3") as connection:
            routes, reg = routes_on(connection)
            batches = (20, 16) if backend == "dynamodb" else (99, 32)
            res = asyncio.run(
                run_backend(routes, reg, 100, n, reps, provision=backend in PROVISIONED, batches=batches)
            )
        detail[backend] = res
        rows += rows_for(backend, res)
    return {"name": "P3", "detail": detail, "rows": rows}


if __name__ == "__main__":
    import sys

    out = run(
        quick="--quick" in sys.argv,
        backends=[a for a in sys.argv[1:] if not a.startswith("--")] or ["sqlite"],
    )
    print(json.dumps(out, indent=2))
