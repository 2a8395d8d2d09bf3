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
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from bench.common import PROVISIONED, Append, bench_connection, interleave, main, ratio, row, run_per_backend
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
    with bench_connection(backend, "p6") as connection:
        return asyncio.run(measure(connection, raw_write_of(connection), commands, backend in PROVISIONED))


def raw_write_of(connection: Connection) -> RawWrite | None:
    """P4's one raw-SDK atomic write on the emulator behind ``connection`` (none on memory and
    SQLite)."""
    params = connection.params
    if connection.backend == "dynamodb":
        from bench import p4_dynamodb

        return lambda: p4_dynamodb.raw_batch_variant(params["endpoint_url"])
    if connection.backend == "firestore":
        from bench import p4_firestore

        return p4_firestore.raw_batch_variant
    if connection.backend == "cosmos":
        from bench import p4_cosmos

        # the engines' containers and the raw write's live in one database, dropped with the server
        return lambda: p4_cosmos.raw_batch_variant(params["url"], params["database"])
    return None


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
    return run_per_backend(
        "P6", backends, lambda b: run_backend(b, commands), rows_for, "p6_round_trips.json"
    )


if __name__ == "__main__":
    main(run, BACKENDS, "p6_round_trips.json")
