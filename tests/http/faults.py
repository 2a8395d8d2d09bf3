"""Fault injection for HTTP tests: a store wrapper that never reaches its backend, and a way
to put one kind of a running app behind it (fakes only for faults; everything else is real)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from northstar_core.engines import Engines
from northstar_core.routing import KindStore
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op


class Unreachable(ItemStore):
    """Every call fails as an unreachable backend does (``reason``, Retry-After 7)."""

    def __init__(self, inner: ItemStore, reason: str = "connection refused") -> None:
        self.capabilities = inner.capabilities
        self.reason = reason

    def _down(self) -> BackendUnavailable:
        return BackendUnavailable(self.reason, retry_after=7)

    async def get(self, partition: str, key: str) -> Item | None:
        raise self._down()

    async def query(self, partition: str, prefix: str, **kw: object) -> list[Item]:  # type: ignore[override]
        raise self._down()

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        raise self._down()

    async def ping(self) -> None:
        raise self._down()


def take_down(
    engines: Engines, monkeypatch: pytest.MonkeyPatch, kind: str, reason: str = "connection refused"
) -> None:
    """Serve ``kind`` from an :class:`Unreachable` store for the rest of the test."""
    original = engines.registry.store_for

    async def store_for(resource_kind: str, tenant_id: str | None = None) -> KindStore:
        store = await original(resource_kind, tenant_id)
        if resource_kind != kind:
            return store
        connection = engines.registry.connections[store.route.connection]
        return KindStore(resource_kind, store.route, connection, Unreachable(store.inner, reason))

    monkeypatch.setattr(engines.registry, "store_for", store_for)
