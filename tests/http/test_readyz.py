"""/readyz: answered from a short-lived cached report (probes must not ping every backend on
every call), the status for anyone, the details (kinds, backends, errors) for system tokens."""

from __future__ import annotations

import asyncio

import pytest
from litestar.testing import AsyncTestClient

from northstar_adapters.memory import MemoryItemStore
from northstar_core.routing import RESOURCE_KINDS
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings


@pytest.fixture
def pings(monkeypatch) -> list[str]:
    """Every backend ping, counted by a wrapper around the memory store's."""
    seen: list[str] = []
    original = MemoryItemStore.ping

    async def counted(self: MemoryItemStore) -> None:
        seen.append("ping")
        await original(self)

    monkeypatch.setattr(MemoryItemStore, "ping", counted)
    return seen


async def test_readiness_is_cached_and_concurrent_probes_share_one_check(tmp_path, pings) -> None:
    settings = make_settings(tmp_path, http={"ready_cache_seconds": 0.5})
    async with AsyncTestClient(app=create_app(settings)) as client:
        for _ in range(5):
            assert (await client.get("/readyz")).status_code == 200
        assert len(pings) == len(RESOURCE_KINDS)  # one check for five probes
        await asyncio.sleep(0.6)
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(10)))
        assert {r.status_code for r in answers} == {200}
        assert len(pings) == 2 * len(RESOURCE_KINDS)  # stale: one more check, shared


async def test_readiness_cache_can_be_turned_off(tmp_path, pings) -> None:
    settings = make_settings(tmp_path, http={"ready_cache_seconds": 0})
    async with AsyncTestClient(app=create_app(settings)) as client:
        for _ in range(3):
            assert (await client.get("/readyz")).status_code == 200
        assert len(pings) == 3 * len(RESOURCE_KINDS)


async def test_readiness_details_need_a_system_token(client, auth) -> None:
    anonymous = await client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
    member = await client.get("/readyz", headers=auth(roles=("admin",)))
    assert member.json() == {"status": "ready"}
    system = (await client.get("/readyz", headers=auth(roles=("admin",), system=True))).json()
    assert system["status"] == "ready" and sorted(system["kinds"]) == sorted(RESOURCE_KINDS)
    assert system["kinds"]["chat_store"]["connection"] == "mem" and "checked_seconds_ago" in system
    bad = await client.get("/readyz", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "auth.invalid_token"


async def test_not_ready_shows_which_kinds_to_system_tokens_only(tmp_path, auth) -> None:
    settings = make_settings(
        tmp_path, lab_route_all=False, routes=[{"resource_kind": "event_spine", "connection": "mem"}]
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        anonymous = await client.get("/readyz")
        assert anonymous.status_code == 503 and anonymous.headers["retry-after"] == "5"
        error = anonymous.json()["error"]
        assert error["code"] == "routing.not_ready" and error["details"] == {}
        assert "chat_store" not in anonymous.text
        system = await client.get("/readyz", headers=auth(system=True))
        details = system.json()["error"]["details"]
        assert system.status_code == 503 and "chat_store" in details["unrouted"]
        assert details["kinds"]["event_spine"]["routed"] is True
