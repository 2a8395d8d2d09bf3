"""P6 round trips: store calls and sequential depth per operation, on every backend, and what a
canvas command costs on each emulator next to one raw-SDK atomic write.

Counts — every resource kind routed to the backend through :mod:`contracts.round_trips`'s
instrumented store (the routing registry's own store uncounted); each operation of
``contracts.round_trips.OPERATIONS`` (keyed and unkeyed chat post, a canvas command at
``base_rev = head``, the first command on a new canvas, a gate decision with the default
policies and with a budget limit set, a keyed ``POST /actions/execute``) is run once to warm,
then measured: total calls and the sequential depth of its critical path (every call held
``delay`` before reaching the backend so that concurrent calls overlap on every backend; the
figures are structural, the same on every backend unless an adapter differs).

Latency (emulators) — the instrumentation off, a canvas command at the head (the same
operation as above) and ONE raw-SDK atomic write (the P4 ``raw_batch`` variant of that
emulator: one transactional batch of two conditional puts, no read), interleaved command by
command; the p50 ratio is the figure.

Writes ``bench/results/p6_round_trips.json`` (with every operation's walk: depth, method, kind,
partition and keys of each call); ``python -m bench.run --only P6`` puts the rows in the table.

    .venv/bin/python -m bench.p6_round_trips [memory sqlite dynamodb firestore cosmos] [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from bench.common import RESULTS, Append, interleave, ratio, row
from contracts.round_trips import (
    OPERATIONS,
    REGISTRY_KIND,
    Scenario,
    Trace,
    instrumented_engines,
    measure_operations,
)
from northstar_adapters import AdapterFactory
from northstar_core.routing import RESOURCE_KINDS, Connection

BACKENDS = ("memory", "sqlite", "dynamodb", "firestore", "cosmos")
LATENCY_TARGET = 2.5

RawWrite = Callable[[], AbstractAsyncContextManager[Append]]


async def _provision(connection: Connection) -> None:
    factory = AdapterFactory()
    for kind in (REGISTRY_KIND, *RESOURCE_KINDS):
        await factory.provision(connection.target(kind, kind), dry_run=False)


async def measure(
    connection: Connection, raw_write: RawWrite | None, commands: int, provision: bool = False
) -> dict[str, Any]:
    """Round trips of every operation on ``connection``; with ``raw_write``, also the canvas
    command's latency against that raw write."""
    if provision:
        await _provision(connection)
    trace = Trace()
    async with instrumented_engines(AdapterFactory(), connection, trace) as engines:
        scenario = Scenario(engines)
        measured = await measure_operations(scenario, trace)
        out: dict[str, Any] = {
            "round_trips": {
                op.name: {
                    **measured[op.name].summary(),
                    "target": op.target.describe(),
                    "met": op.target.met(measured[op.name]) if op.target.bounded else None,
                }
                for op in OPERATIONS
            }
        }
        if raw_write is not None:

            async def canvas_command(_i: int) -> None:
                await scenario.canvas_command()

            async with raw_write() as raw:
                out["latency"] = await interleave(
                    {"raw_write": raw, "canvas_command": canvas_command}, commands
                )
    return out


def run_backend(backend: str, commands: int) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    if backend == "memory":
        connection = Connection(name="p6", backend="memory", params={"name": f"p6-{tag}"})
        return asyncio.run(measure(connection, None, commands))
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ns-bench-p6-") as tmp:
            connection = Connection(name="p6", backend="sqlite", params={"path": str(Path(tmp) / "p6.db")})
            return asyncio.run(measure(connection, None, commands))
    if backend == "dynamodb":
        from bench import p4_dynamodb
        from tests.emulators.moto import TEST_ENV, MotoServer

        os.environ.update(TEST_ENV)
        server = MotoServer.start()
        try:
            params = {"endpoint_url": server.endpoint, "table_prefix": f"p6{tag}_"}
            connection = Connection(name="p6", backend="dynamodb", params=params)
            return asyncio.run(
                measure(connection, lambda: p4_dynamodb.raw_batch_variant(server.endpoint), commands, True)
            )
        finally:
            server.stop()
    if backend == "firestore":
        from bench import p4_firestore
        from tests.emulators.firestore import launcher

        emulator = launcher().start()
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        try:
            connection = Connection(name="p6", backend="firestore", params={"project": f"p6-{tag}"})
            return asyncio.run(measure(connection, p4_firestore.raw_batch_variant, commands))
        finally:
            emulator.stop()
    if backend == "cosmos":
        from bench import p4_cosmos
        from tests.emulators.cosmos import EMULATOR_KEY, KEY_ENV, CosmosServer

        os.environ.setdefault(KEY_ENV, EMULATOR_KEY)
        server = CosmosServer.start()
        try:
            # the engines' containers and the raw write's live in one database, dropped with the server
            database = f"p6{tag}"
            connection = Connection(
                name="p6", backend="cosmos", params={"url": server.endpoint, "database": database}
            )
            return asyncio.run(
                measure(
                    connection, lambda: p4_cosmos.raw_batch_variant(server.endpoint, database), commands, True
                )
            )
        finally:
            server.stop()
    raise ValueError(f"P6 has no setup for backend {backend}")


def _rt(summary: dict[str, Any]) -> str:
    counts = ",".join(f"{m[0]}{summary[m]}" for m in ("get", "query", "write") if summary[m])
    return f"{summary['depth']} seq / {summary['calls']} calls ({counts})"


def rows_for(backend: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for op in OPERATIONS:
        summary = res["round_trips"][op.name]
        gate = op.target.inputs_depth is not None
        value = summary["inputs_depth"] if gate else summary["depth"]
        ours = _rt(summary)
        if gate:
            ours = f"inputs {summary['inputs_depth']} seq / {summary['inputs_calls']} calls; total {ours}"
        out.append(
            row(
                f"P6 {backend}",
                f"{op.label}: round trips",
                ours,
                None,
                value,
                summary["target"],
                summary["met"],
                "ratio = sequential depth" + (" of the decision's inputs" if gate else ""),
            )
        )
    latency = res.get("latency")
    if latency is not None:
        canvas, raw = latency["canvas_command"]["p50_ms"], latency["raw_write"]["p50_ms"]
        value = ratio(canvas, raw)
        out.append(
            row(
                f"P6 {backend}",
                "canvas command p50 / one raw-SDK atomic write p50 (ms)",
                canvas,
                raw,
                value,
                f"<= {LATENCY_TARGET}",
                value <= LATENCY_TARGET,
                f"{latency['canvas_command']['n']} of each, interleaved; p95 "
                f"{latency['canvas_command']['p95_ms']} vs {latency['raw_write']['p95_ms']} ms",
            )
        )
    return out


def run(quick: bool = False, backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    commands = 40 if quick else 200
    detail: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for backend in backends:
        try:
            res = run_backend(backend, commands)
        except Exception as exc:  # one emulator failing must not hide the others
            detail[backend] = {"error": repr(exc)}
            rows.append(
                row(f"P6 {backend}", "(failed to run)", None, None, float("nan"), "-", False, repr(exc))
            )
            continue
        detail[backend] = res
        rows += rows_for(backend, res)
    out = {"name": "P6", "detail": detail, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "p6_round_trips.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    out = run(
        quick="--quick" in sys.argv,
        backends=[a for a in sys.argv[1:] if not a.startswith("--")] or list(BACKENDS),
    )
    print(json.dumps(out["rows"], indent=2))
    print(f"wrote {RESULTS / 'p6_round_trips.json'}")
    sys.exit(0 if all(r["met"] is not False for r in out["rows"]) else 1)
