"""``/notes``: user-owned notes (``notes_store``); only the owner sees or changes a note."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Response, delete, get, post, put
from litestar.params import FromQuery, JSONBody

from northstar_core.bounds import MAX_PAGE
from northstar_core.kernel.paging import Page
from northstar_core.notes import Note, NoteIn, NoteUpdate
from northstar_http.deps import Ctx, Eng
from northstar_http.openapi import IdPath, error_responses, page_limit
from northstar_http.versions import ExpectedVersion, IfMatch, expected_version, with_etag


@post("/notes", tags=["notes"], summary="Create a note owned by the caller")
async def create_note(ctx: Ctx, engines: Eng, data: JSONBody[NoteIn]) -> Response[Note]:
    note = await engines.notes.create(ctx, data)
    return with_etag(note, note.version, 201)


@get(
    "/notes/{note_id:str}",
    tags=["notes"],
    summary="Read one of the caller's notes",
    responses=error_responses(404),
)
async def get_note(ctx: Ctx, engines: Eng, note_id: IdPath) -> Response[Note]:
    note = await engines.notes.get(ctx, note_id)
    return with_etag(note, note.version)


@put(
    "/notes/{note_id:str}",
    tags=["notes"],
    summary="Replace a note at the expected version",
    responses=error_responses(404, 409),
)
async def update_note(
    ctx: Ctx,
    engines: Eng,
    note_id: IdPath,
    data: JSONBody[NoteUpdate],
    if_match: IfMatch = None,
) -> Response[Note]:
    data.expected_version = expected_version("notes", data.expected_version, if_match)
    note = await engines.notes.update(ctx, note_id, data)
    return with_etag(note, note.version)


@delete(
    "/notes/{note_id:str}",
    tags=["notes"],
    summary="Delete one of the caller's notes",
    responses=error_responses(404, 409),
)
async def delete_note(
    ctx: Ctx,
    engines: Eng,
    note_id: IdPath,
    expected_version_param: ExpectedVersion = None,
    if_match: IfMatch = None,
) -> None:
    version = expected_version("notes", expected_version_param, if_match)
    await engines.notes.delete(ctx, note_id, expected_version=version)


@get(
    "/notes",
    tags=["notes"],
    summary="List the caller's notes (filtered, paged)",
    responses=error_responses(410),
)
async def list_notes(
    ctx: Ctx,
    engines: Eng,
    surface_id: FromQuery[str | None] = None,
    project_id: FromQuery[str | None] = None,
    tag: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: Annotated[int, page_limit(MAX_PAGE)] = 50,
) -> Page[Note]:
    return await engines.notes.list(
        ctx, surface_id=surface_id, project_id=project_id, tag=tag, cursor=cursor, limit=limit
    )


ROUTES: Final[list[Any]] = [create_note, get_note, update_note, delete_note, list_notes]
