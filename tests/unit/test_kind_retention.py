"""Retention by kind for record kinds: with the route option ``default_ttl_seconds``, every
note, blackboard entry and tabular record (and each of its past versions) expires that long
after it was written; a later write keeps it for as long again; without the option nothing
expires."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.suite import make_registry
from northstar_adapters.memory import MemoryItemStore
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.notes import NoteIn, NoteUpdate
from northstar_core.routing import Route, RouteOptions

TTL = 3600
CTX = RequestContext(
    tenant_id="t_ret", mode="lab", user_id="u1", roles=("member",), surface_id="chat", project_id="p1"
)


async def _engines(kinds_with_ttl: tuple[str, ...]) -> tuple[Engines, MemoryItemStore, ManualClock]:
    clock = ManualClock()
    store = MemoryItemStore(clock=clock.now)  # the store's liveness on the same clock
    registry = await make_registry(store)
    for kind in kinds_with_ttl:
        options = RouteOptions(default_ttl_seconds=TTL)
        await registry.set_route(Route(resource_kind=kind, connection="under_test", options=options))
    return Engines(registry, CursorCodec(b"r" * 32), clock), store, clock


async def _expiries(store: MemoryItemStore, prefix: str) -> set[float | None]:
    out: set[float | None] = set()
    token = None
    while True:
        page = await store.scan(prefix, token=token, limit=1000)
        out |= {item.expires_at for _, item in page.items}
        if page.token is None:
            return out
        token = page.token


async def test_notes_expire_a_ttl_after_their_last_write() -> None:
    engines, store, clock = await _engines(("notes_store",))
    note = await engines.notes.create(CTX, NoteIn(title="a", tags=["x"]))
    assert await _expiries(store, "t_ret|lab|notes|") == {clock.now() + TTL}
    clock.advance(TTL - 10)
    updated = await engines.notes.update(
        CTX, note.note_id, NoteUpdate(title="b", tags=["x"], expected_version=1)
    )
    clock.advance(20)  # past the first write's expiry, within the update's
    assert (await engines.notes.get(CTX, note.note_id)).title == "b" == updated.title
    clock.advance(TTL)
    with pytest.raises(NorthstarError) as info:
        await engines.notes.get(CTX, note.note_id)
    assert info.value.http_status == 404
    assert (await engines.notes.list(CTX, surface_id="chat")).items == []


async def test_blackboard_entries_and_their_versions_expire_together() -> None:
    engines, store, clock = await _engines(("blackboard_store",))
    await engines.blackboard.put(CTX, "run1", "plan", {"v": 1}, expected_version=None)
    await engines.blackboard.put(CTX, "run1", "plan", {"v": 2}, expected_version=1)
    written = clock.now()
    assert await _expiries(store, "t_ret|lab|blackboard|") == {written + TTL}
    clock.advance(TTL + 1)
    with pytest.raises(NorthstarError) as info:
        await engines.blackboard.get(CTX, "run1", "plan")
    assert info.value.http_status == 404
    assert (await engines.blackboard.list(CTX, "run1")).items == []


async def test_tabular_records_and_their_history_expire() -> None:
    engines, store, clock = await _engines(("flow_store",))
    await engines.tabular.put(CTX, "flows", "f1", {"v": 1}, expected_version=None)
    clock.advance(60)
    await engines.tabular.put(CTX, "flows", "f1", {"v": 2}, expected_version=1)
    first, second = clock.now() - 60 + TTL, clock.now() + TTL
    assert await _expiries(store, "t_ret|lab|tabular|") >= {first, second}
    clock.advance(TTL - 30)  # the first version is gone, the record and its second version live
    versions: Any = await engines.tabular.versions(CTX, "flows", "f1")
    assert [v.version for v in versions.items] == [2]
    clock.advance(60)
    assert (await engines.tabular.list(CTX, "flows")).items == []


async def test_without_the_option_nothing_expires() -> None:
    engines, store, _ = await _engines(())
    await engines.notes.create(CTX, NoteIn(title="a", tags=["x"]))
    await engines.blackboard.put(CTX, "run1", "plan", {"v": 1}, expected_version=None)
    await engines.tabular.put(CTX, "flows", "f1", {"v": 1}, expected_version=None)
    assert await _expiries(store, "t_ret|") == {None}


async def test_chat_messages_expire_and_the_thread_keeps_its_numbering_and_cursors() -> None:
    engines, store, clock = await _engines(("chat_store",))
    for i in range(3):
        await engines.chat.post(CTX, "th", role="user", content=f"m{i}")
    page = await engines.chat.list_messages(CTX, "th", limit=2)
    cursor = page.next_cursor
    assert cursor is not None and [m.seq for m in page.items] == [1, 2]
    assert await _expiries(store, "t_ret|lab|thread|") >= {clock.now() + TTL}
    clock.advance(TTL + 1)
    # gone for every reader
    assert (await engines.chat.list_messages(CTX, "th")).items == []
    # the next message is number 4, not 1: the cursor a client holds is still valid, and
    # reading after it gives exactly the new message
    posted = await engines.chat.post(CTX, "th", role="user", content="m3")
    assert posted.message.seq == 4
    after = await engines.chat.list_messages(CTX, "th", cursor=cursor)
    assert [(m.seq, m.content) for m in after.items] == [(4, "m3")]
    # a key replayed after its message expired is not a new message either
    again = await engines.chat.post(CTX, "th", role="user", content="m4", idempotency_key="k1")
    assert (await engines.chat.post(CTX, "th", role="user", content="m4", idempotency_key="k1")).replayed
    assert again.message.seq == 5


async def test_chat_without_retention_keeps_messages_forever() -> None:
    engines, store, clock = await _engines(())
    await engines.chat.post(CTX, "th", role="user", content="kept")
    assert await _expiries(store, "t_ret|lab|thread|") == {None}
    clock.advance(100 * 365 * 86_400)
    assert [m.content for m in (await engines.chat.list_messages(CTX, "th")).items] == ["kept"]


async def test_a_keyed_chat_post_leaves_nothing_of_its_content_once_it_expires() -> None:
    engines, store, clock = await _engines(("chat_store",))
    first = await engines.chat.post(CTX, "th", role="user", content="secret-k", idempotency_key="k1")
    replay = await engines.chat.post(CTX, "th", role="user", content="secret-k", idempotency_key="k1")
    assert replay.replayed
    # the idempotency record holds a copy of the message: it expires with the message
    assert await _expiries(store, "t_ret|lab|thread|") == {clock.now() + TTL, None}  # None: the floor
    clock.advance(TTL + 1)
    held = []
    token = None
    while True:
        page = await store.scan("t_ret|lab|thread|", token=token, limit=1000)
        held += [item.value for _, item in page.items]
        if page.token is None:
            break
        token = page.token
    assert held and not any(b"secret-k" in value for value in held)
    # past the retention window the key is free again: a retry is a new message, numbered on
    again = await engines.chat.post(CTX, "th", role="user", content="secret-k", idempotency_key="k1")
    assert not again.replayed and again.message.seq == first.message.seq + 1
