"""A backend that cannot be reached answers 503 ``<kind>.backend_unavailable`` with Retry-After,
readiness reports it, and nothing pretends to have succeeded (fault-injecting store wrapper)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from northstar_core.routing import KindStore
from northstar_core.storage import BackendUnavailable, Item, ItemStore, Op


class Unreachable(ItemStore):
    def __init__(self, inner: ItemStore) -> None:
        self.capabilities = inner.capabilities

    async def get(self, partition: str, key: str) -> Item | None:
        raise BackendUnavailable("connection refused", retry_after=7)

    async def query(self, partition: str, prefix: str, **kw: object) -> list[Item]:  # type: ignore[override]
        raise BackendUnavailable("connection refused", retry_after=7)

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        raise BackendUnavailable("connection refused", retry_after=7)

    async def ping(self) -> None:
        raise BackendUnavailable("connection refused", retry_after=7)


@pytest.fixture
def chat_backend_down(engines, monkeypatch):
    original = engines.registry.store_for

    async def store_for(kind: str, tenant_id: str | None = None) -> KindStore:
        store = await original(kind, tenant_id)
        if kind != "chat_store":
            return store
        connection = engines.registry.connections[store.route.connection]
        return KindStore(kind, store.route, connection, Unreachable(store.inner))

    monkeypatch.setattr(engines.registry, "store_for", store_for)


async def test_unreachable_backend_is_503_with_retry_after(client, auth, chat_backend_down) -> None:
    r = await client.post("/chat/threads/th/messages", json={"role": "user", "content": "x"}, headers=auth())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "chat_store.backend_unavailable"
    assert r.headers["retry-after"] == "7"
    r = await client.get("/chat/threads/th/messages", headers=auth())
    assert r.status_code == 503 and r.headers["retry-after"] == "7"


async def test_readyz_reports_unreachable_kinds(client, auth, chat_backend_down) -> None:
    r = await client.get("/readyz", headers=auth(system=True))  # details: system tokens only
    assert r.status_code == 503
    assert r.json()["error"]["details"]["unreachable"] == ["chat_store"]
