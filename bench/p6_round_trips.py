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
command; the p50 ratio is the figure. Beside them, reported only, P4's ``raw_full`` variant: a
keyed append written by hand with the raw SDK (read the idempotency record, read the head,
then that atomic write) — what any write that must read before it writes costs on that
emulator, against the blind write.

Writes ``bench/results/p6_round_trips.json`` (with every operation's walk: depth, method, kind,
partition and keys of each call); ``python -m bench.run --only P6`` puts the rows in the table.

    .venv/bin/python -m bench.p6_round_trips [memory sqlite dynamodb firestore cosmos] [--quick]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple

from bench.common import PROVISIONED, Append, bench_connection, interleave, main, ratio, row, run_per_backend
from contracts.round_trips import (
    BY_NAME,
    OPERATIONS,
    REGISTRY_KIND,
    Operation,
    RoundTrips,
    Scenario,
    Trace,
    instrumented_engines,
    measure_operations,
)
from northstar_adapters import AdapterFactory
from northstar_core.identity import RequestContext
from northstar_core.routing import RESOURCE_KINDS, Connection
from northstar_core.safety.documents import DOC_KINDS

BACKENDS = ("memory", "sqlite", "dynamodb", "firestore", "cosmos")
LATENCY_TARGET = 2.5

RawWrite = Callable[[], AbstractAsyncContextManager[Append]]


class RawWrites(NamedTuple):
    """P4's raw-SDK variants on one emulator: the blind atomic write and a keyed append."""

    atomic_write: RawWrite
    keyed_append: RawWrite


# The second layout measured: the kinds holding the gate's policy documents share one table
# (as a single-table deployment routes them), so one query reads every document.
SAFETY_TABLE = "safety_policies"
SHARED_TABLES = {kind: SAFETY_TABLE for kind in DOC_KINDS}
SHARED_REGISTRY = "routing_registry_shared"


async def _provision(connection: Connection) -> None:
    factory = AdapterFactory()
    for kind in (REGISTRY_KIND, *RESOURCE_KINDS):
        await factory.provision(connection.target(kind, kind), dry_run=False)
    await factory.provision(connection.target(REGISTRY_KIND, SHARED_REGISTRY), dry_run=False)
    await factory.provision(connection.target(DOC_KINDS[0], SAFETY_TABLE), dry_run=False)


def _summary(op: Operation, measured: RoundTrips) -> dict[str, Any]:
    return {
        **measured.summary(),
        "target": op.target.describe(),
        "met": op.target.met(measured) if op.target.bounded else None,
    }


async def measure(
    connection: Connection, raw: RawWrites | None, commands: int, provision: bool = False
) -> dict[str, Any]:
    """Round trips of every operation on ``connection``, and of a canvas command with the policy
    kinds in one table; with ``raw``, also both canvas commands' latency against the raw
    writes."""
    if provision:
        await _provision(connection)
    trace = Trace()
    shared_trace = Trace()
    async with (
        instrumented_engines(AdapterFactory(), connection, trace) as engines,
        instrumented_engines(
            AdapterFactory(), connection, shared_trace, tables=SHARED_TABLES, registry_table=SHARED_REGISTRY
        ) as shared_engines,
    ):
        scenario = Scenario(engines)
        # another tenant: the tables the two layouts share (the canvas log…) hold both
        shared = Scenario(
            shared_engines,
            RequestContext(tenant_id="t_rt_shared", mode="lab", user_id="u_rt", roles=("member", "admin")),
        )
        await scenario.setup()
        await shared.setup()
        out: dict[str, Any] = {}
        if raw is not None:
            # first, while no policy document asks for more than the documents (the round trips
            # below set a budget limit, after which a decision also reads the budget totals)

            async def canvas_command(_i: int) -> None:
                await scenario.canvas_command()

            async def canvas_command_shared(_i: int) -> None:
                await shared.canvas_command()

            async with raw.atomic_write() as atomic_write, raw.keyed_append() as keyed_append:
                out["latency"] = await interleave(
                    {
                        "raw_write": atomic_write,
                        "raw_keyed_append": keyed_append,
                        "canvas_command": canvas_command,
                        "canvas_command_shared": canvas_command_shared,
                    },
                    commands,
                )
        measured = await measure_operations(scenario, trace)
        await shared.canvas_command()
        shared_trace.start()
        try:
            await shared.canvas_command()
        finally:
            shared_measured = shared_trace.stop()
        out["round_trips"] = {op.name: _summary(op, measured[op.name]) for op in OPERATIONS}
        out["shared_policy_table"] = {"canvas_command": _summary(BY_NAME["canvas_command"], shared_measured)}
    return out


def run_backend(backend: str, commands: int) -> dict[str, Any]:
    with bench_connection(backend, "p6") as connection:
        return asyncio.run(measure(connection, raw_writes_of(connection), commands, backend in PROVISIONED))


def raw_writes_of(connection: Connection) -> RawWrites | None:
    """P4's raw-SDK variants on the emulator behind ``connection`` (none on memory and SQLite)."""
    params = connection.params
    if connection.backend == "dynamodb":
        from bench import p4_dynamodb

        endpoint = params["endpoint_url"]
        return RawWrites(
            lambda: p4_dynamodb.raw_batch_variant(endpoint), lambda: p4_dynamodb.raw_full_variant(endpoint)
        )
    if connection.backend == "firestore":
        from bench import p4_firestore

        return RawWrites(p4_firestore.raw_batch_variant, p4_firestore.raw_full_variant)
    if connection.backend == "cosmos":
        from bench import p4_cosmos

        # the engines' containers and the raw writes' live in one database, dropped with the server
        url, database = params["url"], params["database"]
        return RawWrites(
            lambda: p4_cosmos.raw_batch_variant(url, database),
            lambda: p4_cosmos.raw_full_variant(url, database),
        )
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
    shared = res.get("shared_policy_table")
    if shared is not None:
        summary = shared["canvas_command"]
        out.append(
            row(
                f"P6 {backend}",
                f"{BY_NAME['canvas_command'].label}, policy kinds in one table: round trips",
                _rt(summary),
                None,
                summary["depth"],
                summary["target"],
                summary["met"],
                f"ratio = sequential depth; {', '.join(DOC_KINDS)} routed to table {SAFETY_TABLE}",
            )
        )
    latency = res.get("latency")
    if latency is not None:
        raw = latency["raw_write"]["p50_ms"]
        keyed = latency.get("raw_keyed_append")
        if keyed is not None:
            out.append(
                row(
                    f"P6 {backend}",
                    "raw-SDK keyed append (idempotency read, head read, atomic write) p50 / "
                    "one raw-SDK atomic write p50 (ms)",
                    keyed["p50_ms"],
                    raw,
                    ratio(keyed["p50_ms"], raw),
                    "(reported)",
                    None,
                    f"{keyed['n']} of each, interleaved with the canvas commands; what reading "
                    "before writing costs by hand",
                )
            )
        for variant, what in (
            ("canvas_command", "canvas command"),
            ("canvas_command_shared", "canvas command (policy kinds in one table)"),
        ):
            if variant not in latency:
                continue
            canvas = latency[variant]["p50_ms"]
            value = ratio(canvas, raw)
            out.append(
                row(
                    f"P6 {backend}",
                    f"{what} p50 / one raw-SDK atomic write p50 (ms)",
                    canvas,
                    raw,
                    value,
                    f"<= {LATENCY_TARGET}",
                    value <= LATENCY_TARGET,
                    f"{latency[variant]['n']} of each, interleaved; p95 "
                    f"{latency[variant]['p95_ms']} vs {latency['raw_write']['p95_ms']} ms",
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
