"""Harnesses for the lab backends, importable by any test (``from tests.adapters.harnesses import …``).

Each harness gives one test a fresh namespace and answers ``open``/``open_peer`` the way the
contract suite's capability checks expect:

* memory: ``open`` returns the test's store until it is closed, then a new, empty one (memory
  is not durable); ``open_peer`` returns an independent store (memory is not shared);
* sqlite: ``open`` opens a store on the test's file (sharing the process's writer thread);
  ``open_peer`` opens one with its own connections and writer thread, as a second process would.
"""

from __future__ import annotations

from pathlib import Path

from contracts.harness import BackendHarness
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sqlite import SqliteItemStore
from northstar_core.storage import ItemStore


class MemoryHarness(BackendHarness):
    name = "memory"

    def __init__(self) -> None:
        self._store: MemoryItemStore | None = None
        self._opened: list[MemoryItemStore] = []

    async def open(self) -> ItemStore:
        if self._store is None or self._store.closed:
            self._store = MemoryItemStore()
            self._opened.append(self._store)
        return self._store

    async def open_peer(self) -> ItemStore:
        peer = MemoryItemStore()
        self._opened.append(peer)
        return peer

    async def cleanup(self) -> None:
        for store in self._opened:
            await store.close()
        self._opened.clear()


class SqliteHarness(BackendHarness):
    name = "sqlite"

    def __init__(self, directory: Path, *, namespace: str = "contract") -> None:
        self.path = directory / "contract.sqlite3"
        self.namespace = namespace
        self._opened: list[SqliteItemStore] = []

    async def open(self) -> ItemStore:
        store = SqliteItemStore(self.path, namespace=self.namespace)
        self._opened.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        store = SqliteItemStore(self.path, namespace=self.namespace, private=True)
        self._opened.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._opened:
            await store.close()
        self._opened.clear()
