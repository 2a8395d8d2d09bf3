"""The contract suite on Firestore, against the official emulator started by the test run.

Each test gets a fresh project id (the emulator isolates projects; cheaper than wiping) and
wipes it afterwards. ``open_peer`` opens a second store with its own ``AsyncClient`` (its own
gRPC channel), as a second server process would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from contracts.harness import BackendHarness
from contracts.suite import ALL_CONTRACTS
from northstar_adapters.firestore import FirestoreItemStore, open_store
from northstar_core.routing import Route
from northstar_core.storage import ItemStore
from tests.emulators.firestore import firestore_emulator, wipe  # noqa: F401 - session fixture


class FirestoreHarness(BackendHarness):
    """Stores on one fresh emulator project; every store (peer or not) has its own client."""

    name = "firestore"

    def __init__(self, host: str) -> None:
        self.host = host
        self.project = f"contract-{uuid.uuid4().hex[:12]}"
        self.route = Route(resource_kind="chat_store", backend="firestore", params={"project": self.project})
        self._stores: list[FirestoreItemStore] = []

    async def open(self) -> ItemStore:
        store = open_store(self.route)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        return await self.open()  # a new store object = a new AsyncClient and channel

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        self._stores.clear()
        await asyncio.to_thread(wipe, self.host, self.project)


class TestFirestore(*ALL_CONTRACTS):  # type: ignore[misc]
    # Every emulator round trip costs milliseconds; the state machine sends hundreds.
    model_max_examples: ClassVar[int] = 15
    model_step_count: ClassVar[int] = 15

    @pytest.fixture
    async def harness(self, firestore_emulator: str) -> AsyncIterator[FirestoreHarness]:  # noqa: F811
        h = FirestoreHarness(firestore_emulator)
        try:
            yield h
        finally:
            await h.cleanup()
