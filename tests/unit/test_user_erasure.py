"""Sealed content and user erasure: with data keys, what a user writes to the spine and the
analytics view is stored sealed under their key; erasing the user shreds it and deletes or
clears the rest of their data, so the raw items hold no plaintext of them — and nothing of
anyone else changes."""

from __future__ import annotations

import os
from typing import Any

import pytest

from contracts.suite import make_registry
from contracts.suite.scan import scan_all
from northstar_adapters.memory import MemoryItemStore
from northstar_adapters.sealing import AesGcmCipher
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.notes import NoteIn

TENANT = "t_er"
SYSTEM = RequestContext(tenant_id="t_ops", mode="lab", user_id="op", roles=("owner",), is_system=True)


def ctx(user: str) -> RequestContext:
    return RequestContext(
        tenant_id=TENANT,
        mode="lab",
        user_id=user,
        roles=("member",),
        run_id="run1",
        step_id="s1",
        surface_id="chat",
    )


async def _engines(store: MemoryItemStore, kek: bytes | None) -> Engines:
    cipher = AesGcmCipher(kek) if kek is not None else None
    return Engines(await make_registry(store), CursorCodec(b"e" * 32), ManualClock(), cipher=cipher)


async def _write(engines: Engines, user: str) -> None:
    """Everything of ``user`` carries the marker ``secret-<user>``."""
    marker = f"secret-{user}"
    c = ctx(user)
    await engines.chat.post(
        c, "shared", role="user", content=f"{marker} in a shared thread", idempotency_key=f"{user}1"
    )
    await engines.chat.post(c, f"own-{user}", role="user", content=f"{marker} alone")
    await engines.spine.append(
        c, {"event_type": "note.added", "source": "ui", "payload": {"text": marker}}, client=True
    )
    await engines.analytics.record(
        c, {"kind": "page_view", "page": f"/{marker}", "properties": {"m": marker}}
    )
    await engines.notes.create(c, NoteIn(title=marker, tags=["x"]))
    await engines.memory.set(c, "s1", "k", {"m": marker})


async def _raw(store: MemoryItemStore) -> list[bytes]:
    return [item.value for _, item in await scan_all(store, TENANT + "|", 1000)]


async def test_spine_and_analytics_content_is_stored_sealed_and_read_back_open() -> None:
    store = MemoryItemStore()
    engines = await _engines(store, os.urandom(32))
    await _write(engines, "u1")
    raw = await _raw(store)
    sealed_kinds = [v for v in raw if b'"sealed"' in v]
    assert sealed_kinds and all(b"secret-u1" not in v for v in sealed_kinds)
    events = (await engines.spine.list(ctx("u1"), event_type="note.added")).items
    assert [e.payload for e in events] == [{"text": "secret-u1"}]
    [seen] = (await engines.analytics.list(ctx("u1"))).items
    assert (seen.page, seen.properties) == ("/secret-u1", {"m": "secret-u1"})
    # another key-encryption key cannot open the data keys: refused, never shown as empty
    other = await _engines(store, os.urandom(32))
    with pytest.raises(NorthstarError) as info:
        await other.spine.list(ctx("u1"), event_type="note.added")
    assert (info.value.http_status, info.value.code) == (503, "data_keys.unreadable")


async def test_erasing_a_user_leaves_no_plaintext_of_them_and_changes_nobody_else() -> None:
    store = MemoryItemStore()
    engines = await _engines(store, os.urandom(32))
    for user in ("u1", "u2"):
        await _write(engines, user)
    before_u2 = [v for v in await _raw(store) if b"secret-u2" in v]
    report = await engines.user_data.erase(SYSTEM, TENANT, "u1", confirm="u1")
    assert report.data_key_shredded and report.notes == 1 and report.memory_values == 1
    assert report.chat_messages_cleared == 2 and report.chat_records_deleted >= 1
    raw = await _raw(store)
    assert not [v for v in raw if b"secret-u1" in v]
    assert [v for v in raw if b"secret-u2" in v] == before_u2
    # the events stay, unreadable; u2's still open
    by_user: dict[str, list[Any]] = {}
    for event in (await engines.spine.list(ctx("u2"), event_type="note.added")).items:
        by_user.setdefault(event.user_id or "", []).append(event.payload)
    assert by_user == {"u1": [{}], "u2": [{"text": "secret-u2"}]}
    analytics = {e.user_id: (e.page, e.properties) for e in (await engines.analytics.list(ctx("u2"))).items}
    assert analytics == {"u1": (None, {}), "u2": ("/secret-u2", {"m": "secret-u2"})}
    # the shared thread keeps its numbering: u1's message is there without content
    shared = (await engines.chat.list_messages(ctx("u2"), "shared", cursor=None)).items
    assert [(m.seq, m.user_id, m.content) for m in shared] == [
        (1, "u1", None),
        (2, "u2", "secret-u2 in a shared thread"),
    ]
    posted = await engines.chat.post(ctx("u2"), "shared", role="user", content="after")
    assert posted.message.seq == 3
    # u1's own things are gone
    assert (await engines.notes.list(ctx("u1"), surface_id="chat")).items == []
    with pytest.raises(NorthstarError):
        await engines.memory.get(ctx("u1"), "s1", "k")
    # again: nothing left to do
    again = await engines.user_data.erase(SYSTEM, TENANT, "u1", confirm="u1")
    assert (again.data_key_shredded, again.notes, again.chat_messages_cleared) == (False, 0, 0)


async def test_a_user_cannot_be_erased_without_data_keys_or_by_anyone_but_the_operator() -> None:
    store = MemoryItemStore()
    plain = await _engines(store, None)
    await _write(plain, "u1")
    before = await _raw(store)
    for engines, caller, confirm, code in (
        (plain, SYSTEM, "u1", "user_data.keys_not_configured"),
        (await _engines(store, os.urandom(32)), ctx("u1"), "u1", "auth.system_required"),
        (await _engines(store, os.urandom(32)), SYSTEM, "u2", "user_data.invalid_request"),
    ):
        with pytest.raises(NorthstarError) as info:
            await engines.user_data.erase(caller, TENANT, "u1", confirm=confirm)
        assert info.value.code == code
    assert await _raw(store) == before


async def _export(engines: Engines, user: str) -> list[dict[str, Any]]:
    import msgspec

    lines = [line async for line in await engines.user_data.export(SYSTEM, TENANT, user)]
    return [msgspec.json.decode(line) for line in lines]


async def test_a_users_export_holds_all_of_theirs_opened_and_nothing_of_anyone_else() -> None:
    store = MemoryItemStore()
    engines = await _engines(store, os.urandom(32))
    for user in ("u1", "u2"):
        await _write(engines, user)
    lines = await _export(engines, "u1")
    assert lines[0]["t"] == "header" and lines[0]["user_id"] == "u1"
    assert lines[-1] == {"t": "end", "items": len(lines) - 2}
    text = repr(lines)
    assert "secret-u2" not in text
    kinds = sorted(line["t"] for line in lines[1:-1])
    assert kinds == ["analytics", "chat_message", "chat_message", "event", "event", "memory", "note"]
    [event] = [x["event"] for x in lines if x["t"] == "event" and x["event"]["event_type"] == "note.added"]
    assert event["payload"] == {"text": "secret-u1"}  # sealed in the store, opened here
    [seen] = [x["event"] for x in lines if x["t"] == "analytics"]
    assert seen["properties"] == {"m": "secret-u1"}
    # after the erasure the export shows what is left: events without content
    await engines.user_data.erase(SYSTEM, TENANT, "u1", confirm="u1")
    after = await _export(engines, "u1")
    assert "secret-u1" not in repr(after)
    # (their cleared messages stay in the threads, but their list of threads is gone)
    assert sorted(x["t"] for x in after[1:-1]) == ["analytics", "event", "event"]
    assert all(x["event"].get("payload", {}) == {} for x in after if x["t"] == "event")
    with pytest.raises(NorthstarError) as info:
        await engines.user_data.export(ctx("u1"), TENANT, "u1")
    assert info.value.code == "auth.system_required"


async def test_events_written_before_sealing_was_configured_are_reported_as_left_readable() -> None:
    store = MemoryItemStore()
    await _write(await _engines(store, None), "u1")  # before [data_keys]
    sealed = await _engines(store, os.urandom(32))
    report = await sealed.user_data.erase(SYSTEM, TENANT, "u1", confirm="u1")
    # the note.added event and the analytics event's spine event
    assert report.spine_events_unsealed == 2
    assert report.notes == 1 and report.memory_values == 1
