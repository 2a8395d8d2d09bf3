"""Notes in the core: the seed 001 §2C model, owner-only access, agent provenance, versioned
updates, filtered paged listing with a bounded scan."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from contracts.round_trips import InstrumentedStore, Trace
from contracts.suite.stores import StoreServices, build_services, make_ctx
from northstar_adapters.memory import MemoryItemStore
from northstar_core.errors import NorthstarError
from northstar_core.notes import NoteIn, NoteUpdate


@pytest.fixture
async def svc() -> StoreServices:
    return await build_services(MemoryItemStore())


async def _err(awaitable: Any) -> NorthstarError:
    with pytest.raises(NorthstarError) as info:
        await awaitable
    return info.value


async def test_a_note_has_the_seed_model_fields(svc: StoreServices) -> None:
    ctx = make_ctx(project_id="p1", surface_id="canvas")
    note = await svc.notes.create(ctx, NoteIn(title="Idea", content={"md": "# hi"}, tags=["x", "y"]))
    assert uuid.UUID(note.note_id).version == 7
    assert (note.tenant_id, note.mode, note.user_id, note.surface_id, note.project_id) == (
        "t_a",
        "lab",
        "u1",
        "canvas",
        "p1",
    )
    assert (note.title, note.content, note.tags, note.version) == ("Idea", {"md": "# hi"}, ["x", "y"], 1)
    assert (note.source.created_by, note.source.agent_id, note.source.run_id) == ("user", None, None)
    assert note.timestamps.created_at == note.timestamps.updated_at
    assert await svc.notes.get(ctx, note.note_id) == note


async def test_an_agent_token_records_agent_provenance(svc: StoreServices) -> None:
    ctx = make_ctx(agent_id="agent7", run_id="run9")
    note = await svc.notes.create(ctx, NoteIn(title="from agent", surface_id="chat"))
    assert (note.source.created_by, note.source.agent_id, note.source.run_id) == ("agent", "agent7", "run9")
    # the note still belongs to the user the agent acts for
    assert (await svc.notes.get(make_ctx(), note.note_id)).source.created_by == "agent"


async def test_only_the_owner_reads_updates_or_deletes(svc: StoreServices) -> None:
    note = await svc.notes.create(make_ctx(), NoteIn(title="mine", surface_id="chat"))
    for other in (make_ctx(user="u2"), make_ctx(tenant="t_b"), make_ctx(mode="saas")):
        for call in (
            svc.notes.get(other, note.note_id),
            svc.notes.update(other, note.note_id, NoteUpdate(title="x", expected_version=1)),
            svc.notes.delete(other, note.note_id),
        ):
            err = await _err(call)
            assert (err.code, err.http_status) == ("notes.not_found", 404)
            assert "mine" not in str(err.details) and "mine" not in err.message
        assert (await svc.notes.list(other)).items == []
    assert (await svc.notes.get(make_ctx(), note.note_id)).title == "mine"


async def test_updates_are_versioned_and_keep_provenance_and_created_at(svc: StoreServices) -> None:
    ctx = make_ctx(agent_id="a1", run_id="r1")
    note = await svc.notes.create(ctx, NoteIn(title="v1", surface_id="chat"))
    svc.clock.advance(3)  # type: ignore[attr-defined]
    updated = await svc.notes.update(
        make_ctx(), note.note_id, NoteUpdate(title="v2", tags=["t"], expected_version=1)
    )
    assert (updated.version, updated.title, updated.tags) == (2, "v2", ["t"])
    assert updated.source == note.source
    assert updated.timestamps.created_at == note.timestamps.created_at
    assert updated.timestamps.updated_at > note.timestamps.updated_at
    err = await _err(svc.notes.update(make_ctx(), note.note_id, NoteUpdate(title="v3", expected_version=1)))
    assert (err.code, err.details["current_version"]) == ("notes.version_conflict", 2)
    err = await _err(svc.notes.update(make_ctx(), note.note_id, NoteUpdate(title="v3")))
    assert err.code == "notes.invalid_request"
    assert (await svc.notes.get(make_ctx(), note.note_id)).title == "v2"


async def test_delete_is_versioned_when_a_version_is_given(svc: StoreServices) -> None:
    note = await svc.notes.create(make_ctx(), NoteIn(title="x", surface_id="chat"))
    assert (await _err(svc.notes.delete(make_ctx(), note.note_id, expected_version=5))).http_status == 409
    await svc.notes.delete(make_ctx(), note.note_id, expected_version=1)
    assert (await _err(svc.notes.get(make_ctx(), note.note_id))).http_status == 404


@pytest.mark.parametrize(
    ("note_in", "ctx_kw"),
    [
        (NoteIn(title="no surface"), {}),
        (NoteIn(title="x" * 501, surface_id="chat"), {}),
        (NoteIn(title="t", surface_id="chat", tags=["has space"]), {}),
        (NoteIn(title="t", surface_id="chat", tags=[""]), {}),
        (NoteIn(title="t", surface_id="chat", tags=["t"] * 51), {}),
        (NoteIn(title="t", surface_id="bad surface"), {}),
        (NoteIn(title="t", surface_id="chat", project_id="p2"), {"project_id": "p1"}),
    ],
)
async def test_invalid_notes_are_422_and_nothing_is_written(
    svc: StoreServices, note_in: NoteIn, ctx_kw: dict[str, Any]
) -> None:
    err = await _err(svc.notes.create(make_ctx(**ctx_kw), note_in))
    assert (err.code, err.http_status) == ("notes.invalid_request", 422)
    assert (await svc.notes.list(make_ctx(**ctx_kw))).items == []


async def test_list_filters_by_surface_project_and_tag_and_pages(svc: StoreServices) -> None:
    ctx = make_ctx()
    made = []
    for i in range(9):
        made.append(
            await svc.notes.create(
                ctx,
                NoteIn(
                    title=f"n{i}",
                    surface_id="chat" if i % 2 else "canvas",
                    project_id="p1" if i % 3 == 0 else None,
                    tags=["even"] if i % 2 == 0 else ["odd"],
                ),
            )
        )
        svc.clock.advance(0.01)  # type: ignore[attr-defined]

    async def collect(**filters: Any) -> list[str]:
        titles: list[str] = []
        cursor = None
        while True:
            page = await svc.notes.list(ctx, cursor=cursor, limit=2, **filters)
            titles += [n.title for n in page.items]
            cursor = page.next_cursor
            if not page.has_more:
                return titles

    assert await collect() == [f"n{i}" for i in range(9)]
    assert await collect(surface_id="chat") == ["n1", "n3", "n5", "n7"]
    assert await collect(project_id="p1") == ["n0", "n3", "n6"]
    assert await collect(tag="even", surface_id="canvas") == ["n0", "n2", "n4", "n6", "n8"]
    assert await collect(tag="none") == []


async def test_a_cursor_only_continues_the_listing_it_came_from(svc: StoreServices) -> None:
    ctx = make_ctx()
    for i in range(3):
        await svc.notes.create(ctx, NoteIn(title=f"n{i}", surface_id="chat"))
    page = await svc.notes.list(ctx, limit=1)
    for other_ctx, filters in ((ctx, {"tag": "x"}), (make_ctx(user="u2"), {}), (make_ctx(tenant="t_b"), {})):
        err = await _err(svc.notes.list(other_ctx, cursor=page.next_cursor, **filters))
        assert (err.code, err.http_status) == ("notes.cursor_invalid", 410)


async def test_a_sparse_filter_returns_partial_pages_but_never_loses_notes(svc: StoreServices) -> None:
    ctx = make_ctx()
    for i in range(1205):
        await svc.notes.create(
            ctx, NoteIn(title=f"n{i}", surface_id="chat", tags=["hit"] if i in (3, 1204) else [])
        )
    page = await svc.notes.list(ctx, tag="hit", limit=5)
    assert [n.title for n in page.items] == ["n3"] and page.has_more
    page = await svc.notes.list(ctx, tag="hit", limit=5, cursor=page.next_cursor)
    assert [n.title for n in page.items] == ["n1204"]


async def test_the_last_page_continues_after_the_last_note_scanned(svc: StoreServices) -> None:
    ctx = make_ctx()
    assert (await svc.notes.list(ctx, tag="hit")).next_cursor is None  # nothing scanned yet
    await svc.notes.create(ctx, NoteIn(title="a", surface_id="chat", tags=["hit"]))
    for title in ("b", "c"):
        await svc.notes.create(ctx, NoteIn(title=title, surface_id="chat"))
    page = await svc.notes.list(ctx, tag="hit", limit=5)
    assert ([n.title for n in page.items], page.has_more) == (["a"], False)
    assert page.next_cursor is not None
    # Polled at the end: an empty page answers the same position.
    again = await svc.notes.list(ctx, tag="hit", limit=5, cursor=page.next_cursor)
    assert (again.items, again.next_cursor, again.has_more) == ([], page.next_cursor, False)
    await svc.notes.create(ctx, NoteIn(title="d", surface_id="chat", tags=["hit"]))
    later = await svc.notes.list(ctx, tag="hit", limit=5, cursor=page.next_cursor)
    assert [n.title for n in later.items] == ["d"]


async def test_a_delete_is_one_write_at_a_named_version_else_a_read_and_a_write() -> None:
    trace = Trace()
    svc = await build_services(InstrumentedStore(MemoryItemStore(), "notes_store", trace))
    note = await svc.notes.create(make_ctx(), NoteIn(title="x", surface_id="chat"))
    trace.start()
    await svc.notes.delete(make_ctx(), note.note_id, expected_version=1)
    assert [c.method for c in trace.stop().calls] == ["write"]
    note = await svc.notes.create(make_ctx(), NoteIn(title="y", surface_id="chat"))
    trace.start()
    await svc.notes.delete(make_ctx(), note.note_id)
    assert [c.method for c in trace.stop().calls] == ["get", "write"]
    err = await _err(svc.notes.delete(make_ctx(), note.note_id))
    assert (err.code, err.http_status, err.details) == ("notes.not_found", 404, {"note_id": note.note_id})
