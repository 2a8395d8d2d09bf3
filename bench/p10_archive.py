"""P10 tenant archives: items/s of an export and of an import on each backend, next to the
backend's own raw reads and writes of the same items measured in the same run.

Per backend, one tenant's ``N`` items (values of ~200 bytes in partitions of 50, every kind
routed to one table) are written with raw batched ``write`` calls of 25 Puts (the baseline for
the import), read back with raw ``query`` pages partition by partition (the baseline for the
export), exported (``Archives.export``: the scan, the JSON lines, the digests and cursors) and
imported into a second, empty table on the same backend (``Archives.import_``: the checks, the
digest verification, ``Absent`` batches). The import must report every item written and the
copy must hold exactly the source's items (a row with ``met=False`` otherwise).

Figures: export items/s over raw query items/s, import items/s over raw write items/s. The
scan's cost on a cloud backend (a table scan / cross-partition query billed by the table, not
by the tenant) is not what an emulator shows; these ratios are the archive's own overhead.

Writes ``bench/results/p10_archive.json``; ``python -m bench.run --only P10`` puts the rows in
the table.

    .venv/bin/python -m bench.p10_archive [sqlite dynamodb firestore cosmos] [--quick]
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench.common import PROVISIONED, bench_connection, main, ratio, row, run_per_backend
from northstar_adapters import AdapterFactory
from northstar_core.clock import SystemClock
from northstar_core.cursors import CursorCodec
from northstar_core.identity import RequestContext
from northstar_core.kernel.archive import Archives
from northstar_core.routing import RESOURCE_KINDS, Connection, Route, RoutingRegistry
from northstar_core.storage import Put

BACKENDS = ("sqlite", "dynamodb", "firestore", "cosmos")
REGISTRY_KIND = "routing_registry"
PER_PARTITION = 50
BATCH = 25
OPERATOR = RequestContext(tenant_id="t_ops", mode="lab", user_id="op", roles=("owner",), is_system=True)


async def _registry(connection: Connection, table: str, provision: bool) -> RoutingRegistry:
    factory = AdapterFactory()
    if provision:
        for kind, name in ((REGISTRY_KIND, f"{table}_registry"), ("chat_store", table)):
            await factory.provision(connection.target(kind, name), dry_run=False)
    registry = RoutingRegistry(
        factory.open(connection.target(REGISTRY_KIND, f"{table}_registry")),
        factory,
        connections={connection.name: connection},
        deployment_mode="lab",
    )
    await registry.load()
    for kind in RESOURCE_KINDS:
        await registry.set_route(
            Route(resource_kind=kind, connection=connection.name, table=table), probe=False
        )
    return registry


async def _lines(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        for line in chunk.splitlines(keepends=True):
            yield line


async def measure(connection: Connection, items: int, provision: bool) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    tenant = f"t_p10{tag}"
    source = await _registry(connection, f"p10src{tag}", provision)
    target = await _registry(connection, f"p10dst{tag}", provision)
    try:
        store = await source.store_for("chat_store", tenant)
        partitions = [
            f"{tenant}|lab|p10|{p:04d}" for p in range((items + PER_PARTITION - 1) // PER_PARTITION)
        ]
        value = b"v" * 200
        began = time.perf_counter()
        for p, partition in enumerate(partitions):
            keys = [f"k#{i:05d}" for i in range(p * PER_PARTITION, min(items, (p + 1) * PER_PARTITION))]
            for i in range(0, len(keys), BATCH):
                await store.write(partition, [Put(k, value) for k in keys[i : i + BATCH]])
        raw_write = time.perf_counter() - began
        began = time.perf_counter()
        read = 0
        for partition in partitions:
            after = None
            while True:
                page = await store.query(partition, "", after=after, limit=100)
                read += len(page)
                if len(page) < 100:
                    break
                after = page[-1].key
        raw_read = time.perf_counter() - began
        archives = Archives(source, CursorCodec(secrets.token_bytes(32)), SystemClock())
        began = time.perf_counter()
        chunks = [chunk async for chunk in await archives.export(OPERATOR, tenant)]
        exported = time.perf_counter() - began
        copies = Archives(target, archives.cursors, SystemClock())
        began = time.perf_counter()
        report = await copies.import_(OPERATOR, tenant, _lines(chunks))
        imported = time.perf_counter() - began
        copy = await target.store_for("chat_store", tenant)
        held = 0
        for partition in partitions:
            after = None
            while True:
                page = await copy.query(partition, "", after=after, limit=100)
                held += sum(1 for item in page if item.value == value)
                if len(page) < 100:
                    break
                after = page[-1].key
    finally:
        await source.close()
        await target.close()
    return {
        "items": items,
        "raw_write_items_per_s": round(items / raw_write, 1),
        "raw_read_items_per_s": round(read / raw_read, 1),
        "export_items_per_s": round(items / exported, 1),
        "import_items_per_s": round(items / imported, 1),
        "archive_bytes": sum(len(c) for c in chunks),
        "exact": read == report.items == report.written == held == items,
    }


def run_backend(backend: str, items: int) -> dict[str, Any]:
    with bench_connection(backend, "p10") as connection:
        return asyncio.run(measure(connection, items, backend in PROVISIONED))


def rows_for(backend: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    exact = res["exact"]
    return [
        row(
            f"P10 {backend}",
            f"archive export, items/s ({res['items']} items) / raw query reads of them",
            res["export_items_per_s"],
            res["raw_read_items_per_s"],
            ratio(res["export_items_per_s"], res["raw_read_items_per_s"]),
            "(reported)",
            None if exact else False,
            f"{res['archive_bytes']} archive bytes" + ("" if exact else "; the copy differs"),
        ),
        row(
            f"P10 {backend}",
            f"archive import into an empty table, items/s / raw batched writes of them ({BATCH} per batch)",
            res["import_items_per_s"],
            res["raw_write_items_per_s"],
            ratio(res["import_items_per_s"], res["raw_write_items_per_s"]),
            "(reported)",
            None if exact else False,
            "every item written once, the copy exact" if exact else "the copy differs",
        ),
    ]


def run(quick: bool = False, backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    items = 400 if quick else 2000
    return run_per_backend(
        "P10", backends, lambda backend: run_backend(backend, items), rows_for, "p10_archive.json"
    )


if __name__ == "__main__":
    main(run, BACKENDS, "p10_archive.json")
