"""The contract suite on DynamoDB, against a serialised moto server started by the test run.

Each test gets a fresh table (a new table prefix, created by the adapter's own ``provision``)
and drops it afterwards, so tests never see each other's data and moto's table-copying
transactions stay fast.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from contracts.harness import BackendHarness
from contracts.suite import ALL_CONTRACTS
from northstar_adapters.dynamodb import DynamoConfig, DynamoItemStore, drop, open_store, provision
from northstar_core.routing import Route
from northstar_core.storage import ItemStore
from tests.emulators.moto import dynamodb_endpoint, moto_server  # noqa: F401 - session fixtures


class DynamoHarness(BackendHarness):
    """Stores on one fresh table of the moto server; peers get their own client."""

    name = "dynamodb"

    def __init__(self, endpoint: str) -> None:
        self.route = Route(
            resource_kind="chat_store",
            backend="dynamodb",
            params={"endpoint_url": endpoint, "table_prefix": f"t{uuid.uuid4().hex[:12]}_"},
        )
        self._stores: list[ItemStore] = []

    async def setup(self) -> None:
        await provision(self.route, dry_run=False)

    async def open(self) -> ItemStore:
        store = open_store(self.route)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        store = DynamoItemStore(DynamoConfig.from_route(self.route), share_client=False)
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
