"""A backend that cannot be reached answers 503 ``<kind>.backend_unavailable`` with Retry-After,
readiness reports it, and nothing pretends to have succeeded (fault-injecting store wrapper)."""

from __future__ import annotations

import pytest

from tests.http.faults import take_down


@pytest.fixture
def chat_backend_down(engines, monkeypatch):
    take_down(engines, monkeypatch, "chat_store")


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
