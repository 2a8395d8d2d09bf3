"""The Python client for the six stores: same results and the same exceptions as the library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from northstar_core.errors import NorthstarError
from northstar_core.notes import NoteIn, NoteUpdate
from northstar_http.client import NorthstarClient
from tests.conftest import LiveServer


@pytest.fixture
def ns_factory(live_server: LiveServer, token: Callable[..., str]) -> Callable[..., NorthstarClient]:
    def make(**kw: Any) -> NorthstarClient:
        headers = kw.pop("headers", None)
        return NorthstarClient(live_server.url, token(**kw), headers=headers)

    return make


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_memory_through_the_client(ns_factory: Callable[..., NorthstarClient]) -> None:
    async with ns_factory() as ns:
        stored = await ns.memory.set("s1", "k", {"a": 1}, ttl_seconds=60)
        assert (stored.value, stored.ttl_seconds) == ({"a": 1}, 60)
        assert (await ns.memory.get("s1", "k")).value == {"a": 1}
        assert [v.key for v in await ns.memory.get_all("s1")] == ["k"]
        assert await ns.memory.delete("s1", "k") == 1
        err = await _err(ns.memory.get("s1", "k"))
        assert (err.code, err.http_status) == ("memory.not_found", 404)
        assert err.upstream is not None and err.upstream["status"] == 404


async def test_blackboard_through_the_client_raises_the_library_conflict(
    ns_factory: Callable[..., NorthstarClient],
) -> None:
    async with ns_factory() as ns:
        entry = await ns.blackboard.put("run1", "plan", [1], expected_version=None)
        assert entry.version == 1
        assert (await ns.blackboard.put("run1", "plan", [2], expected_version=1)).version == 2
        err = await _err(ns.blackboard.put("run1", "plan", [3], expected_version=1))
        assert (err.code, err.http_status, err.details["current_version"]) == (
            "blackboard.version_conflict",
            409,
            2,
        )
        page = await ns.blackboard.list("run1", limit=1)
        assert [e.key for e in page.items] == ["plan"]
        await ns.blackboard.delete("run1", "plan", expected_version=2)
        assert (await _err(ns.blackboard.get("run1", "plan"))).http_status == 404


async def test_config_through_the_client(ns_factory: Callable[..., NorthstarClient]) -> None:
    async with ns_factory(roles=("admin",)) as ns:
        doc = await ns.config.put("tenant", {"canvas.gestures_enabled": False}, expected_version=None)
        assert doc.version == 1
        assert await ns.config.toggle("canvas.gestures_enabled", True, surface_id="canvas") is False
        err = await _err(ns.config.put("system", {}, expected_version=None))
        assert err.code == "auth.system_required"


async def test_notes_through_the_client_are_owner_only(ns_factory: Callable[..., NorthstarClient]) -> None:
    async with ns_factory() as alice, ns_factory(sub="u_bob") as bob:
        note = await alice.notes.create(NoteIn(title="t", surface_id="chat", tags=["x"]))
        updated = await alice.notes.update(
            note.note_id, NoteUpdate(title="t2", tags=["x"], expected_version=1)
        )
        assert updated.version == 2
        assert (await _err(bob.notes.get(note.note_id))).code == "notes.not_found"
        assert (await alice.notes.list(tag="x")).items[0].title == "t2"
        await alice.notes.delete(note.note_id, expected_version=2)


async def test_tabular_and_analytics_through_the_client(ns_factory: Callable[..., NorthstarClient]) -> None:
    async with ns_factory() as ns:
        await ns.tabular.put("flows", "f1", {"v": 1}, expected_version=None)
        await ns.tabular.put("flows", "f1", {"v": 2}, expected_version=1)
        assert (await ns.tabular.get("flows", "f1", version=1)).json_blob == {"v": 1}
        assert [v.version for v in (await ns.tabular.versions("flows", "f1")).items] == [1, 2]
        assert [r.id for r in (await ns.tabular.list("flows")).items] == ["f1"]
        assert (await _err(ns.tabular.get("nope", "x"))).code == "tabular.unknown_table"
        event = await ns.analytics.record({"kind": "click", "target": "#go"})
        assert [e.event_id for e in (await ns.analytics.list()).items] == [event.event_id]
