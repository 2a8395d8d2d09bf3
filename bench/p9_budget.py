"""P9 budget ledger: usage entries/s one tenant sustains under concurrent recorders, today's
one-stream layout (a ledger built with ``shards=1``) against the sharded one (``SHARDS``).

Per backend, ``C`` concurrent writers (64; 16 quick) each record ``N`` usage entries (unkeyed
and keyed alternately, amounts multiples of 0.25 so the sum is exact) for one tenant through
:class:`~northstar_core.safety.budget.BudgetLedger` — the real ``record``: its head read, its
conditional append and the ``budget`` event on the spine. The layouts run interleaved, round by
round (the order alternating), each round on a fresh tenant, so machine noise hits both alike.
After every run the month's total must equal the sum recorded and a full listing must hold
every entry exactly once (a row with ``met=False`` otherwise). A writer answered 503
``budget.contention`` (the ledger's own 64 attempts lost) records that amount again, as the
action service does; such answers are counted in the detail.

The figure: entries/s of the sharded layout over the one-stream layout (target >= 10x).

Writes ``bench/results/p9_budget.json``; ``python -m bench.run --only P9`` puts the rows in the
table.

    .venv/bin/python -m bench.p9_budget [sqlite dynamodb firestore cosmos] [--quick]
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from bench.common import PROVISIONED, bench_connection, main, ratio, row, run_per_backend
from northstar_adapters import AdapterFactory
from northstar_core.clock import SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.routing import Connection, Route, RoutingRegistry
from northstar_core.safety.budget import KIND, SHARDS, BudgetLedger, month_of
from northstar_core.spine import EventSpine
from northstar_core.storage import Item, ItemStore, Op

BACKENDS = ("sqlite", "dynamodb", "firestore", "cosmos")
REGISTRY_KIND = "routing_registry"
KINDS = (REGISTRY_KIND, KIND, "event_spine")
TARGET = 10.0
# The latency model: the memory backend with this delay before every store call, as a cloud
# store's round trip from a server in its region (emulators here answer in well under 1 ms and
# serialise every request, so their figure is CPU, not the partition head).
LATENCY_MS = 4.0
AMOUNT_QUARTERS = 7  # entry i of a writer records (i % 7 + 1) / 4


def _ctx(tenant: str) -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u_p9", roles=("member",))


class _Delayed(ItemStore):
    """``inner`` with ``delay`` seconds (on average) before every call (the latency model)."""

    def __init__(self, inner: ItemStore, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.capabilities = inner.capabilities

    @property
    def backing(self) -> ItemStore:
        return self.inner.backing

    async def _wait(self) -> None:
        # a round trip varies (a fixed one would march concurrent writers in lockstep)
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.5))

    async def get(self, partition: str, key: str) -> Item | None:
        await self._wait()
        return await self.inner.get(partition, key)

    async def query(self, partition: str, prefix: str, **kw: Any) -> list[Item]:
        await self._wait()
        return await self.inner.query(partition, prefix, **kw)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await self._wait()
        await self.inner.write(partition, ops)

    async def close(self) -> None:
        await self.inner.close()


class _DelayedFactory:
    def __init__(self, delay: float) -> None:
        self.inner = AdapterFactory()
        self.delay = delay

    def open(self, target: Any) -> ItemStore:
        return _Delayed(self.inner.open(target), self.delay)


@asynccontextmanager
async def _ledgers(
    connection: Connection, provision: bool, delay: float = 0.0
) -> AsyncIterator[dict[int, BudgetLedger]]:
    """The two layouts on ``connection``: ledgers built with 1 and with ``SHARDS`` shards."""
    factory: Any = _DelayedFactory(delay) if delay else AdapterFactory()
    if provision:
        for kind in KINDS:
            await factory.provision(connection.target(kind, kind), dry_run=False)
    registry_store = factory.open(connection.target(REGISTRY_KIND, REGISTRY_KIND))
    registry = RoutingRegistry(
        registry_store, factory, connections={connection.name: connection}, deployment_mode="lab"
    )
    try:
        await registry.load()
        for kind in KINDS[1:]:
            await registry.set_route(Route(resource_kind=kind, connection=connection.name), probe=False)
        codec = CursorCodec(secrets.token_bytes(32))
        clock = SystemClock()
        spine = EventSpine(registry, codec, clock=clock)
        yield {n: BudgetLedger(registry, codec, clock, spine, shards=n) for n in (1, SHARDS)}
    finally:
        await registry.close()
        await registry_store.close()


async def _one_run(ledger: BudgetLedger, tenant: str, writers: int, per_writer: int) -> dict[str, Any]:
    ctx = _ctx(tenant)
    contention = 0

    async def writer(w: int) -> None:
        nonlocal contention
        for i in range(per_writer):
            body: dict[str, Any] = {"amount": (i % AMOUNT_QUARTERS + 1) / 4, "surface_id": f"s{w % 4}"}
            if i % 2:
                body["idempotency_key"] = f"w{w}-{i}"
            while True:
                try:
                    await ledger.record(ctx, body)
                    break
                except NorthstarError as exc:
                    if exc.code != "budget.contention":
                        raise
                    contention += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    seconds = time.perf_counter() - start
    entries = writers * per_writer
    expected = writers * sum((i % AMOUNT_QUARTERS + 1) / 4 for i in range(per_writer))
    month, _ = await ledger.totals(ctx)
    listed: list[tuple[int, int]] = []
    cursor = None
    while True:
        page = await ledger.usage(ctx, month_of(time.time()), cursor=cursor, limit=500)
        listed += [(e.shard, e.seq) for e in page.items]
        cursor = page.next_cursor
        if not page.has_more:
            break
    exact = month.get("*") == expected and len(listed) == len(set(listed)) == entries
    return {
        "entries": entries,
        "seconds": round(seconds, 4),
        "entries_per_s": round(entries / seconds, 2),
        "total": month.get("*"),
        "expected_total": expected,
        "listed": len(listed),
        "exact": exact,
        "contention_503": contention,
    }


async def measure(
    connection: Connection, writers: int, per_writer: int, rounds: int, provision: bool, delay: float = 0.0
) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    runs: dict[int, list[dict[str, Any]]] = {1: [], SHARDS: []}
    async with _ledgers(connection, provision, delay) as ledgers:
        # warm: routes resolved, clients and connections open
        await ledgers[SHARDS].record(_ctx(f"t_p9w{tag}"), {"amount": 0})
        for r in range(rounds):
            order = [1, SHARDS] if r % 2 == 0 else [SHARDS, 1]
            for shards in order:
                tenant = f"t_p9{tag}_{shards}_{r}"
                runs[shards].append(await _one_run(ledgers[shards], tenant, writers, per_writer))
    out: dict[str, Any] = {"writers": writers, "per_writer": per_writer, "rounds": rounds, "runs": runs}
    for shards, done in runs.items():
        entries = sum(x["entries"] for x in done)
        seconds = sum(x["seconds"] for x in done)
        out[f"shards_{shards}"] = {
            "entries_per_s": round(entries / seconds, 2),
            "exact": all(x["exact"] for x in done),
            "contention_503": sum(x["contention_503"] for x in done),
        }
    return out


def run_backend(backend: str, writers: int, per_writer: int, rounds: int) -> dict[str, Any]:
    delay = LATENCY_MS / 1000 if backend == "latency" else 0.0
    # moto serialises every request and copies the table in each transaction: a request may
    # wait behind the whole one-stream herd, longer than the default timeout
    params = {"read_timeout": 120.0} if backend == "dynamodb" else {}
    with bench_connection("memory" if backend == "latency" else backend, "p9", **params) as connection:
        return asyncio.run(measure(connection, writers, per_writer, rounds, backend in PROVISIONED, delay))


def _label(backend: str) -> str:
    return f"P9 memory + {LATENCY_MS:g} ms/call" if backend == "latency" else f"P9 {backend}"


def rows_for(backend: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    one, many = res["shards_1"], res[f"shards_{SHARDS}"]
    value = ratio(many["entries_per_s"], one["entries_per_s"])
    load = f"{res['writers']} writers x {res['per_writer']} entries, {res['rounds']} round(s) interleaved"
    return [
        row(
            _label(backend),
            f"usage entries/s, {SHARDS} shards / 1 stream (one tenant)",
            many["entries_per_s"],
            one["entries_per_s"],
            value,
            f">= {TARGET:g}",
            value >= TARGET,
            f"{load}; 503 contention answers retried: {one['contention_503']} vs {many['contention_503']}",
        ),
        row(
            _label(backend),
            "month total exact and every entry listed once after each run",
            "exact" if many["exact"] and one["exact"] else "NOT exact",
            None,
            float(many["exact"] and one["exact"]),
            "exact",
            many["exact"] and one["exact"],
            "sum of the shards' last entries == sum recorded; full listing: no entry lost or doubled",
        ),
    ]


def load_of(backend: str, quick: bool) -> tuple[int, int, int]:
    """(writers, entries per writer, rounds). The emulators serialise every request, so the
    one-stream layout's herd of retries brings them down to a few entries/s: one entry per
    writer there keeps P9 within minutes."""
    writers = 16 if quick else 64
    if backend in ("latency", "memory", "sqlite"):
        return writers, 8, 1 if quick else 2
    return writers, 1, 1 if quick else 2


def run(quick: bool = False, backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    return run_per_backend(
        "P9",
        ("latency", *backends),
        lambda b: run_backend(b, *load_of(b, quick)),
        rows_for,
        "p9_budget.json",
        label=_label,
    )


if __name__ == "__main__":
    main(run, BACKENDS, "p9_budget.json")
