"""Opt-in: benchmark P7's per-tenant workload on the real clouds, next to what P7 models.

P7 (``bench/p7_capacity.py``) prices the engines' store calls with each provider's published
cost rules. Here the same workload driver (``p7.drive``) runs through the real adapters on the
smoke run's namespace (see ``test_real_clouds.py``: same variables, same provisioning, every
resource kind routed to the one provisioned table / collection / container under a per-test
partition prefix), and reports per operation:

* DynamoDB: the capacity AWS says it consumed — ``ReturnConsumedCapacity=TOTAL`` is added to
  every request through botocore's event hooks on the adapter's client (the adapter's public
  ``client_wrapper``; the adapter itself is unchanged) — beside the model's WCU/RCU. A spine
  append's measured WCU must equal the model's (two small items in one transaction = 4);
* Firestore and Cosmos DB: the adapters expose no per-request charge without changes to them
  (Cosmos returns ``x-ms-request-charge`` inside the SDK's connection, Firestore bills no
  per-request figure), so the store calls and items are reported, with the model's RU /
  document counts for the same calls.

Run: ``.venv/bin/python -m pytest tests/cloud_smoke/test_capacity_smoke.py -m cloud_smoke -s``.
Skipped, with the missing variables named, where a backend is not configured.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bench import p7_capacity as p7
from contracts.round_trips import Call, Trace, instrumented_engines
from northstar_core.engines import Engines
from northstar_core.routing import Connection, Target
from northstar_core.storage import ItemStore
from tests.cloud_smoke.test_real_clouds import ENV_AT_IMPORT, Namespaced, _namespace, missing

pytestmark = pytest.mark.cloud_smoke

REPS = 3
WRITE_OPERATIONS = frozenset({"PutItem", "DeleteItem", "UpdateItem", "TransactWriteItems", "BatchWriteItem"})
# Every operation once per kind of work; the spine appends of every type are all run.
OPERATIONS = tuple(op.name for op in p7.WORK_OPS)


class ConsumedCapacity:
    """Collects DynamoDB's ``ConsumedCapacity`` per workload operation (botocore event hooks)."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.units: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.missing: dict[str, int] = defaultdict(int)

    def wrap(self, client: Any) -> Any:
        client.meta.events.register("provide-client-params.dynamodb", self._ask)
        client.meta.events.register("after-call.dynamodb", self._record)
        return client

    @staticmethod
    def _ask(params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params["ReturnConsumedCapacity"] = "TOTAL"

    def _record(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if self.current is None:
            return
        consumed = parsed.get("ConsumedCapacity")
        if consumed is None:
            self.missing[self.current] += 1
            return
        # a read's or a write's total, whichever split the response gives
        unit = "WCU" if model.name in WRITE_OPERATIONS else "RCU"
        for entry in consumed if isinstance(consumed, list) else [consumed]:
            split = entry.get("WriteCapacityUnits" if unit == "WCU" else "ReadCapacityUnits")
            self.units[self.current][unit] += float(
                split if split is not None else entry.get("CapacityUnits", 0)
            )


class SmokeFactory:
    """Opens every target on the smoke route's one table, under the test's partition prefix."""

    def __init__(self, route: Target, capacity: ConsumedCapacity) -> None:
        self.route = route
        self.capacity = capacity
        self.namespace = f"cap-{uuid.uuid4().hex[:12]}"
        self.opened: dict[str, ItemStore] = {}

    def open(self, target: Target) -> ItemStore:
        if self.route.backend == "dynamodb":
            from northstar_adapters.dynamodb import DynamoConfig, DynamoItemStore

            inner: ItemStore = DynamoItemStore(
                DynamoConfig.from_target(self.route), share_client=False, client_wrapper=self.capacity.wrap
            )
        else:
            from northstar_adapters import AdapterFactory

            inner = AdapterFactory().open(self.route)
        store = Namespaced(inner, self.namespace)
        self.opened[target.resource_kind] = store
        return store


@asynccontextmanager
async def smoke_engines(
    route: Target, trace: Trace, capacity: ConsumedCapacity
) -> AsyncIterator[tuple[Engines, SmokeFactory]]:
    factory = SmokeFactory(route, capacity)
    connection = Connection(name="smoke", backend=route.backend, params=dict(route.params))
    async with instrumented_engines(factory, connection, trace) as engines:
        yield engines, factory


def _model(samples: list[tuple[Call, ...]], backend: str, placeholders: dict[str, str]) -> dict[str, float]:
    return p7.cost_per_op(p7.loads_of(samples, backend, placeholders), backend)


async def _measure(route: Target) -> dict[str, Any]:
    capacity = ConsumedCapacity()
    trace = Trace(delay=0)
    report: dict[str, Any] = {}
    async with smoke_engines(route, trace, capacity) as (engines, factory):
        workload = p7.Workload(engines)
        await workload.setup()
        placeholders = workload.placeholders()
        for name in OPERATIONS:
            for _ in range(p7.WARMUP.get(name, 2)):
                await workload.run(name)
            samples = []
            capacity.current = name
            try:
                for _ in range(REPS):
                    trace.start()
                    try:
                        await workload.run(name)
                    finally:
                        rt = trace.stop()
                    samples.append(await p7.with_check_sizes(rt, factory.opened))
            finally:
                capacity.current = None
            calls = [c for s in samples for c in s]
            report[name] = {
                "calls_per_op": len(calls) / REPS,
                "writes_per_op": sum(c.method == "write" for c in calls) / REPS,
                "items_written_per_op": sum(
                    m.op in ("put", "delete") for c in calls if c.method == "write" for m in c.moved
                )
                / REPS,
                "model_per_op": _model(samples, route.backend, placeholders),
                "measured_per_op": {k: v / REPS for k, v in capacity.units.get(name, {}).items()},
                "responses_without_consumed_capacity": capacity.missing.get(name, 0),
                "spine_writes": [
                    (p7.shape_of(c.partition, placeholders), len(c.moved))
                    for s in samples
                    for c in s
                    if c.kind == "event_spine" and c.method == "write"
                ],
            }
    return report


def _print(backend: str, report: dict[str, Any]) -> None:
    print(f"\nP7 workload on real {backend} (per operation, {REPS} samples):")
    for name, r in report.items():
        measured = r["measured_per_op"] or "not returned by the backend / adapter"
        print(
            f"  {name:20} calls {r['calls_per_op']:.3g} writes {r['writes_per_op']:.3g} "
            f"items {r['items_written_per_op']:.3g}  model {r['model_per_op']}  measured {measured}"
        )


def _smoke_route(backend: str) -> Iterator[Target]:
    if missing(backend):
        pytest.skip(f"cloud smoke {backend}: not configured (set {', '.join(missing(backend))})")
    yield from _namespace(backend)


@pytest.fixture(scope="module")
def capacity_route(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _smoke_route(request.param)


@pytest.mark.parametrize("capacity_route", ["dynamodb", "firestore", "cosmos"], indirect=True)
async def test_p7_workload_on_the_real_cloud(capacity_route: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV_AT_IMPORT.items():  # the real SDK environment, never an emulator's
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    backend = capacity_route.backend
    report = await _measure(capacity_route)
    _print(backend, report)
    for name in OPERATIONS:
        if p7.WORK_BY_NAME[name].group == "spine_append":
            # the same layout the model prices: the event's two items in one write into its
            # hour's shard; with a key, the claim (one item) in its slot first
            writes = report[name]["spine_writes"]
            assert {n for shape, n in writes if shape.endswith("|<hour>|<shard>")} == {2}, name
            claims = [n for shape, n in writes if shape.endswith("|keys|<slot>")]
            assert claims == ([1] * REPS if name == "spine_keyed" else []), name
    if backend == "dynamodb":
        measured = report["spine_ui"]["measured_per_op"]
        if measured:  # AWS returns it; an emulator may not
            assert measured["WCU"] == report["spine_ui"]["model_per_op"]["WCU"]
