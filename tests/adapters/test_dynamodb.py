"""The contract suite on DynamoDB, against a serialised moto server started by the test run.

Each test gets a fresh table (a new table prefix, created by the adapter's own ``provision``)
and drops it afterwards, so tests never see each other's data and moto's table-copying
transactions stay fast. The same contracts run on real DynamoDB in ``tests/cloud_smoke``
(opt-in: ``NORTHSTAR_SMOKE_DYNAMODB_REGION`` plus AWS credentials).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from contracts.harness import BackendHarness
from contracts.suite import ALL_CONTRACTS
from northstar_adapters import AdapterFactory
from northstar_adapters.dynamodb import DynamoConfig, DynamoItemStore, drop, open_store, provision
from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from northstar_core.routing import Connection, RoutingRegistry, Target
from northstar_core.storage import BackendUnavailable, ItemStore, Put
from tests.emulators.moto import dynamodb_endpoint, moto_server  # noqa: F401 - session fixtures


class DynamoHarness(BackendHarness):
    """Stores on one fresh table of the moto server; peers get their own client."""

    name = "dynamodb"

    def __init__(self, endpoint: str) -> None:
        self.route = Target(
            resource_kind="chat_store",
            backend="dynamodb",
            params={"endpoint_url": endpoint, "table_prefix": f"t{uuid.uuid4().hex[:12]}_"},
        )
        self._stores: list[ItemStore] = []

    @property
    def table(self) -> str:
        return DynamoConfig.from_target(self.route).table

    async def setup(self) -> None:
        await provision(self.route, dry_run=False)

    async def open(self) -> ItemStore:
        store = open_store(self.route)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        store = DynamoItemStore(DynamoConfig.from_target(self.route), share_client=False)
        self._stores.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        self._stores.clear()
        await drop(self.route)


class TestDynamoDB(*ALL_CONTRACTS):  # type: ignore[misc]
    # moto answers in milliseconds, but the state machine sends hundreds of requests.
    model_max_examples: ClassVar[int] = 15
    model_step_count: ClassVar[int] = 15

    @pytest.fixture
    async def harness(self, dynamodb_endpoint: str) -> AsyncIterator[DynamoHarness]:  # noqa: F811
        h = DynamoHarness(dynamodb_endpoint)
        await h.setup()
        try:
            yield h
        finally:
            await h.cleanup()



# --- DynamoDB-specific guarantees -----------------------------------------------------------


@pytest.fixture
async def dynamo(dynamodb_endpoint: str) -> AsyncIterator[DynamoHarness]:  # noqa: F811
    h = DynamoHarness(dynamodb_endpoint)
    await h.setup()
    try:
        yield h
    finally:
        await h.cleanup()


async def _raw_item(h: DynamoHarness, partition: str, key: str) -> dict[str, Any]:
    store = await h.open()
    assert isinstance(store, DynamoItemStore)
    client = await store._get_client()
    response = await client.get_item(
        TableName=store.table, Key={"pk": {"S": partition}, "sk": {"S": key}}, ConsistentRead=True
    )
    item: dict[str, Any] = response["Item"]
    return item


def test_connection_params_and_the_route_table_name_the_table() -> None:
    def target(table: str | None = None, **params: Any) -> Target:
        return Target(resource_kind="chat_store", backend="dynamodb", params=params, table=table)

    assert DynamoConfig.from_target(target()).table == "northstar_chat_store"
    assert DynamoConfig.from_target(target(table_prefix="prod_")).table == "prod_chat_store"
    assert DynamoConfig.from_target(target("explicit", region="eu-west-1")).table == "northstar_explicit"
    # Only declared settings: credentials, unknown or ill-typed params are refused by name.
    with pytest.raises(ValueError, match="aws_secret_access_key"):
        DynamoConfig.from_target(target(aws_secret_access_key="never-in-routes"))
    with pytest.raises(ValueError, match="canvas_limits"):
        DynamoConfig.from_target(target(canvas_limits={"checkpoint_every": 5}))
    with pytest.raises(ValueError, match="max_attempts"):
        DynamoConfig.from_target(target(max_attempts="many"))
    with pytest.raises(ValueError, match="region"):
        DynamoConfig.from_target(target(region="eu-west-1\nx"))


async def test_a_connection_the_adapter_refuses_is_503_route_misconfigured_not_500() -> None:
    table = MemoryItemStore()
    # a route stored before the operator broke the connection's params
    await table.write(
        "routing_registry", [Put("route#chat_store#*", b'{"resource_kind":"chat_store","connection":"d"}')]
    )
    registry = RoutingRegistry(
        table,
        AdapterFactory(),
        connections={"d": Connection(name="d", backend="dynamodb", params={"max_attempts": "many"})},
        deployment_mode="saas",
    )
    with pytest.raises(NorthstarError) as info:
        await registry.store_for("chat_store", "t_a")
    assert (info.value.code, info.value.http_status) == ("chat_store.route_misconfigured", 503)
    assert "max_attempts" in info.value.message


async def test_dry_run_provision_returns_the_plan_and_creates_nothing(dynamodb_endpoint: str) -> None:  # noqa: F811
    h = DynamoHarness(dynamodb_endpoint)
    lines = await provision(h.route, dry_run=True)
    assert any("PAY_PER_REQUEST" in line for line in lines)
    assert any("TTL" in line and "'ttl'" in line for line in lines)
    store = await h.open()
    try:
        with pytest.raises(BackendUnavailable, match="northstar provision"):
            await store.get("p", "k")
    finally:
        await h.cleanup()


async def test_provision_is_idempotent_and_enables_native_ttl(dynamo: DynamoHarness) -> None:
    again = await provision(dynamo.route, dry_run=False)
    assert again == [
        f"dynamodb: table {dynamo.table} exists",
        f"dynamodb: TTL on 'ttl' of {dynamo.table} already enabled",
    ]
    store = await dynamo.open()
    assert isinstance(store, DynamoItemStore)
    client = await store._get_client()
    ttl = (await client.describe_time_to_live(TableName=dynamo.table))["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")


async def test_expiry_sets_the_native_ttl_attribute_and_keeps_full_precision(dynamo: DynamoHarness) -> None:
    store = await dynamo.open()
    expires = time.time() + 100.123456789
    await store.write("p", [Put("k", b"v", expires_at=expires), Put("forever", b"v")])
    raw = await _raw_item(dynamo, "p", "k")
    assert int(raw["ttl"]["N"]) == math.ceil(expires)  # whole seconds, never early
    item = await store.get("p", "k")
    assert item is not None and item.expires_at == expires
    assert "ttl" not in await _raw_item(dynamo, "p", "forever")


async def test_paging_continues_when_a_page_fills_exactly_with_expired_items(dynamo: DynamoHarness) -> None:
    # moto omits LastEvaluatedKey when a page fills exactly; expired items make the adapter
    # ask for more pages, which must continue after the last key read.
    store = await dynamo.open()
    past = time.time() - 60
    await store.write("p", [Put(f"k{i:02d}", b"x", expires_at=past if i < 6 else None) for i in range(10)])
    assert [i.key for i in await store.query("p", "k", limit=3)] == ["k06", "k07", "k08"]
    assert [i.key for i in await store.query("p", "k", limit=3, descending=True)] == ["k09", "k08", "k07"]
    assert [i.key for i in await store.query("p", "", after="k00", before="k09", limit=10)] == [
        "k06", "k07", "k08",
    ]


async def test_query_bounds_are_exact_for_extreme_characters(dynamo: DynamoHarness) -> None:
    store = await dynamo.open()
    top = "\U0010ffff"
    keys = ["a", "a\x00", "a\x01", f"a{top}", f"a{top}{top}z", "b"]
    await store.write("p", [Put(k, b"x") for k in keys])
    assert [i.key for i in await store.query("p", "a", after="a")] == keys[1:5]
    assert [i.key for i in await store.query("p", f"a{top}")] == keys[3:5]
    assert [i.key for i in await store.query("p", "", before="a\x01", descending=True)] == ["a\x00", "a"]


async def test_stores_sharing_a_client_can_be_first_used_concurrently(dynamo: DynamoHarness) -> None:
    # Regression: the second store used to get the shared client before it finished opening.
    stores = [await dynamo.open() for _ in range(4)]
    await asyncio.gather(*(s.write("p", [Put(f"k{i}", b"v")]) for i, s in enumerate(stores)))
    assert [i.key for i in await stores[0].query("p", "k")] == ["k0", "k1", "k2", "k3"]
