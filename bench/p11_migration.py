"""P11 online migration: items/s of a migration's copy per backend pair, next to raw batched
writes of the same items into the target measured in the same run, and the latency a client's
write sees while the migration journals it, as a ratio to the same write before it started.

Per pair ``source→target``, one tenant's ``N`` items (values of ~200 bytes in partitions of
50, in ``chat_store``'s table on the source) are migrated with :class:`~northstar_core.kernel.
migration.Migrations` (tenant scope, the registry on the source's connection):

* **normal write**: p50 of ``W`` chat posts through :class:`~northstar_core.engines.Engines`
  before the migration starts;
* **journaled write**: p50 of ``W`` posts in phase ``dual`` (each announces its partition in the
  routing table's journal before it writes: one more sequential round trip, to the registry's
  backend, once per partition and ``settle_seconds``);
* **copy**: items copied per second (the scan of the source and the batched puts into the
  target), from the end of the lease wait to the end of the copy;
* **raw**: the same number of items written with raw batched ``write`` calls of 25 Puts into a
  fresh table of the target, as many partitions at once as the copy writes (the copy's floor);
* **freeze**: how long writes waited at the cutover (fence + settle + the final drain), and
  the migration's whole wall time (it includes the fixed waits).

Every row also checks the result: after the cutover the tenant's items on the target equal the
source's (digests), and every acknowledged post is served once.

Writes ``bench/results/p11_migration.json``; ``python -m bench.run --only P11`` puts the rows in
the table.

    .venv/bin/python -m bench.p11_migration [sqlite:dynamodb ...] [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.common import PROVISIONED, bench_connection, main, ratio, row, run_per_backend
from northstar_adapters import AdapterFactory
from northstar_core.clock import SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.identity import RequestContext
from northstar_core.kernel.migration import (
    CONCURRENCY,
    DEFAULT_FENCE_SECONDS,
    DEFAULT_SETTLE_SECONDS,
    Migrations,
    table_digests,
)
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RoutingRegistry
from northstar_core.storage import Put

PAIRS = ("sqlite:dynamodb", "sqlite:firestore", "sqlite:cosmos", "dynamodb:cosmos")
REGISTRY_KIND = "routing_registry"
PER_PARTITION = 50
BATCH = 25
# the CLI's defaults: what an operator's migration pauses writes for at its cutover
FENCE = DEFAULT_FENCE_SECONDS
SETTLE = DEFAULT_SETTLE_SECONDS


def _ctx(tenant: str) -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id="u_bench", roles=("member",))


async def _posts(engines: Engines, tenant: str, count: int, prefix: str) -> list[float]:
    """Each post opens a thread of its own: a partition not journaled yet, the worst case."""
    took: list[float] = []
    for i in range(count):
        began = time.perf_counter()
        await engines.chat.post(_ctx(tenant), f"{prefix}{i}", role="user", content=f"m{i}")
        took.append(time.perf_counter() - began)
    return took


async def measure(source: Connection, target: Connection, items: int, writes: int) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    tenant = f"t_p11{tag}"
    table, raw_table, registry_table = f"p11src{tag}", f"p11raw{tag}", f"p11reg{tag}"
    factory = AdapterFactory()
    for connection, kind, name in (
        (source, REGISTRY_KIND, registry_table),
        (source, "chat_store", table),
        (target, "chat_store", table),
        (target, "chat_store", raw_table),
    ):
        if connection.backend in PROVISIONED or connection.backend == "firestore":
            await factory.provision(connection.target(kind, name), dry_run=False)
    registry = RoutingRegistry(
        factory.open(source.target(REGISTRY_KIND, registry_table)),
        factory,
        connections={source.name: source, target.name: target},
        deployment_mode="lab",
        refresh_seconds=0.1,
        max_view_seconds=0.5,
    )
    await registry.load()
    for kind in RESOURCE_KINDS:
        # chat alone in the migrated table: a migration moves every kind of its table
        name = table if kind == "chat_store" else f"p11oth{tag}"
        await registry.set_route(Route(resource_kind=kind, connection=source.name, table=name), probe=False)
    engines = Engines(registry, CursorCodec(secrets.token_bytes(32)), SystemClock())
    try:
        store = await registry.store_for("chat_store", tenant)
        value = b"v" * 200
        count = (items + PER_PARTITION - 1) // PER_PARTITION
        partitions = [f"{tenant}|lab|p11|{p:04d}" for p in range(count)]
        for p, partition in enumerate(partitions):
            keys = [f"k#{i:05d}" for i in range(p * PER_PARTITION, min(items, (p + 1) * PER_PARTITION))]
            for i in range(0, len(keys), BATCH):
                await store.write(partition, [Put(k, value) for k in keys[i : i + BATCH]])
        # the floor: the same items written raw into a fresh table of the target
        # (as many partitions at once as the migration copies)
        raw = factory.open(target.target("chat_store", raw_table))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fill(p: int, partition: str) -> None:
            keys = [f"k#{i:05d}" for i in range(p * PER_PARTITION, min(items, (p + 1) * PER_PARTITION))]
            async with gate:
                for i in range(0, len(keys), BATCH):
                    await raw.write(partition, [Put(k, value) for k in keys[i : i + BATCH]])

        await raw.write(f"{tenant}|lab|warm", [Put("k", value)])  # the client's connection, opened
        began = time.perf_counter()
        await asyncio.gather(*(fill(p, partition) for p, partition in enumerate(partitions)))
        raw_seconds = time.perf_counter() - began
        await raw.close()

        await _posts(engines, tenant, 3, "warm")
        normal = await _posts(engines, tenant, writes, "before")
        migrations = Migrations(registry, engines.clock)
        migration = await migrations.start(
            ["chat_store"], target.name, table, tenant, fence_seconds=FENCE, settle_seconds=SETTLE
        )
        journaled = await _posts(engines, tenant, writes, "during")
        began = time.perf_counter()
        await migrations.run(migration.id)
        wall = time.perf_counter() - began
        progress = await migrations.progress(migration.id)
        assert progress is not None
        steps = dict(progress.steps)
        copy_began = migration.phase_at + migration.lease_seconds + migration.settle_seconds
        copy_seconds = steps[f"copied {progress.copied_items} items"] - copy_began
        frozen_at = steps["frozen: writes wait for the cutover"]
        freeze_seconds = progress.updated_at - frozen_at
        # exact: the target holds the source's items, and every post is served once
        switched = await registry.store_for("chat_store", tenant)
        active = registry.migration(migration.id)
        assert active is not None
        sides = [Route(resource_kind="chat_store", connection=c.name, table=table) for c in (source, target)]
        ours, theirs = [await table_digests(registry.opened(side), active[0]) for side in sides]
        posted = 0
        for prefix in ("before", "during"):
            for i in range(writes):
                page = await engines.chat.list_messages(_ctx(tenant), f"{prefix}{i}", limit=10)
                posted += [m.content for m in page.items] == [f"m{i}"]
        exact = ours == theirs and posted == 2 * writes and switched.route.connection == target.name
        copied = progress.copied_items
    finally:
        await engines.close()
    return {
        "items": items,
        "copied_items": copied,
        "copy_items_per_s": round(copied / copy_seconds, 1) if copy_seconds > 0 else None,
        "raw_write_items_per_s": round(items / raw_seconds, 1),
        "normal_write_p50_ms": round(statistics.median(normal) * 1000, 2),
        "journaled_write_p50_ms": round(statistics.median(journaled) * 1000, 2),
        "freeze_s": round(freeze_seconds, 2),
        "migration_wall_s": round(wall, 2),
        "exact": exact,
    }


def run_pair(pair: str, items: int, writes: int) -> dict[str, Any]:
    source_backend, target_backend = pair.split(":")
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(bench_connection(source_backend, "src"))
        target = stack.enter_context(bench_connection(target_backend, "dst"))
        return asyncio.run(measure(source, target, items, writes))


def rows_for(pair: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    exact = res["exact"]
    name = f"P11 {pair.replace(':', '→')}"
    verdict = None if exact else False
    return [
        row(
            name,
            f"migration copy, items/s ({res['copied_items']} items) / raw batched writes into the target "
            f"({CONCURRENCY} partitions at once)",
            res["copy_items_per_s"],
            res["raw_write_items_per_s"],
            ratio(res["copy_items_per_s"] or 0.0, res["raw_write_items_per_s"]),
            "(reported)",
            verdict,
            f"whole migration {res['migration_wall_s']} s (fixed waits included); writes waited "
            f"{res['freeze_s']} s at the cutover" + ("" if exact else "; the copy differs"),
        ),
        row(
            name,
            "client write (chat post) p50 while journaled (phase dual) / before the migration, ms",
            res["journaled_write_p50_ms"],
            res["normal_write_p50_ms"],
            ratio(res["journaled_write_p50_ms"], res["normal_write_p50_ms"]),
            "(reported)",
            verdict,
            "each post to a thread of its own (a partition not journaled yet): one more sequential "
            "write, the journal mark on the registry's backend; later writes to the partition "
            "within settle_seconds skip it",
        ),
    ]


def run(quick: bool = False, backends: Sequence[str] = PAIRS) -> dict[str, Any]:
    items, writes = (400, 20) if quick else (2000, 60)
    return run_per_backend(
        "P11",
        backends,
        lambda pair: run_pair(pair, items, writes),
        rows_for,
        "p11_migration.json",
        label=lambda pair: f"P11 {pair.replace(':', '→')}",
    )


if __name__ == "__main__":
    main(run, PAIRS, "p11_migration.json")
