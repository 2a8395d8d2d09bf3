"""User-owned notes ("maybes", seed 001 §2C) — resource kind ``notes_store``.

A note belongs to the user in the token: the owner is part of the partition name, so another
user (or tenant) asking for a note id gets 404 ``notes.not_found`` — never the note, never a
hint that it exists. ``source.created_by`` is ``agent`` when an agent's token wrote it (with
the agent id and run id), else ``user``. Updates and deletes are versioned: a stale
``expected_version`` is 409 ``notes.version_conflict`` with the current version.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from northstar_core.bounds import check_expected_version, check_limit
from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, invalid, not_found, value_too_large
from northstar_core.identity import RequestContext
from northstar_core.kernel.ids import UUIDv7Generator
from northstar_core.kernel.paging import Page, page_of
from northstar_core.kernel.records import MAX_RECORD_BYTES, Item, VersionedRecords, record_key
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition, subject_segment

KIND: Final = "notes_store"
DOMAIN: Final = "notes"
_NOTE_LIMIT: Final = MAX_RECORD_BYTES - 8192
_SCAN_BUDGET: Final = 1000  # records examined per filtered list call, whatever the filters

Title = Annotated[str, msgspec.Meta(max_length=500)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^\S+$(?!\n)")]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=50)]
Content = str | dict[str, Any] | list[Any]
OptionalId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,200}$(?!\n)")] | None


class NoteIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new note. ``surface_id``/``project_id`` default to the request's (X-Surface-Id…)."""

    title: Title
    content: Content = ""
    tags: Tags = []
    surface_id: OptionalId = None
    project_id: OptionalId = None


class NoteUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A full replacement of a note's editable fields at ``expected_version``."""

    title: Title
    content: Content = ""
    tags: Tags = []
    surface_id: OptionalId = None
    project_id: OptionalId = None
    expected_version: int | None = None


class NoteSource(msgspec.Struct, kw_only=True):
    created_by: Literal["user", "agent"]
    agent_id: str | None = None
    run_id: str | None = None


class NoteTimestamps(msgspec.Struct, kw_only=True):
    created_at: str
    updated_at: str


class Note(msgspec.Struct, kw_only=True):
    note_id: str
    tenant_id: str
    mode: str
    user_id: str
    surface_id: str
    project_id: str | None = None
    title: str
    content: Content
    tags: list[str]
    source: NoteSource
    timestamps: NoteTimestamps
    version: int = 1


S = TypeVar("S", bound=msgspec.Struct)


def validated(domain: str, obj: S) -> S:
    """Re-check a Struct built in Python (constructors skip constraints) as the wire would."""
    try:
        return msgspec.json.decode(msgspec.json.encode(obj), type=type(obj))
    except msgspec.ValidationError as exc:
        raise invalid(domain, str(exc)) from None


class NotesService:
    """Owner-only CRUD and filtered listing of notes."""

    def __init__(self, registry: RoutingRegistry, cursors: CursorCodec, clock: Clock) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.ids = UUIDv7Generator()  # time-ordered, so a user's notes list in creation order

    async def _records(self, ctx: RequestContext) -> VersionedRecords:
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return VersionedRecords(
            store,
            partition(ctx, "notes", subject_segment(ctx.user_id)),
            DOMAIN,
            ttl_seconds=store.route.options.default_ttl_seconds,
            clock=self.clock.now,
        )

    @staticmethod
    def _decode(item: Item) -> Note:
        note = msgspec.json.decode(item.value, type=Note)
        note.version = item.version
        return note

    @staticmethod
    def _encode(note: Note) -> bytes:
        encoded = msgspec.json.encode(note)
        if len(encoded) > _NOTE_LIMIT:
            raise value_too_large(
                DOMAIN,
                f"the note is {len(encoded)} bytes; the limit is {_NOTE_LIMIT}",
                size=len(encoded),
                limit=_NOTE_LIMIT,
            )
        return encoded

    @staticmethod
    def _scope_ids(
        ctx: RequestContext, surface_id: str | None, project_id: str | None
    ) -> tuple[str, str | None]:
        surface = surface_id or ctx.surface_id
        if not surface:
            raise invalid(DOMAIN, "a note needs a surface_id (body or X-Surface-Id)", field="surface_id")
        if project_id and ctx.project_id and project_id != ctx.project_id:
            raise invalid(
                DOMAIN,
                "project_id differs from the request's project",
                field="project_id",
                request_project_id=ctx.project_id,
            )
        return surface, project_id or ctx.project_id

    async def create(self, ctx: RequestContext, note_in: NoteIn) -> Note:
        ctx.require_role("member")
        note_in = validated(DOMAIN, note_in)
        surface_id, project_id = self._scope_ids(ctx, note_in.surface_id, note_in.project_id)
        now = self.clock.now()
        note = Note(
            note_id=self.ids.next(now),
            tenant_id=ctx.tenant_id,
            mode=ctx.mode,
            user_id=ctx.user_id,
            surface_id=surface_id,
            project_id=project_id,
            title=note_in.title,
            content=note_in.content,
            tags=list(note_in.tags),
            source=NoteSource(
                created_by="agent" if ctx.is_agent else "user",
                agent_id=ctx.agent_id,
                run_id=ctx.run_id if ctx.is_agent else None,
            ),
            timestamps=NoteTimestamps(created_at=iso(now), updated_at=iso(now)),
        )
        records = await self._records(ctx)
        note.version = await records.put(note.note_id, self._encode(note), expected_version=None)
        return note

    async def get(self, ctx: RequestContext, note_id: str) -> Note:
        """The caller's note, or 404 (also for a note that exists but is someone else's)."""
        check_id(DOMAIN, "note_id", note_id)
        item = await (await self._records(ctx)).get(note_id)
        if item is None:
            raise not_found(DOMAIN, f"note '{note_id}'", note_id=note_id)
        return self._decode(item)

    async def update(self, ctx: RequestContext, note_id: str, update: NoteUpdate) -> Note:
        """Replace title/content/tags (and surface/project if given) at ``expected_version``."""
        ctx.require_role("member")
        update = validated(DOMAIN, update)
        if update.expected_version is None:
            raise invalid(
                DOMAIN, "an update needs expected_version (body field or If-Match)", field="expected_version"
            )
        check_expected_version(DOMAIN, update.expected_version)
        current = await self.get(ctx, note_id)
        surface_id, project_id = self._scope_ids(
            ctx, update.surface_id or current.surface_id, update.project_id or current.project_id
        )
        note = Note(
            note_id=note_id,
            tenant_id=current.tenant_id,
            mode=current.mode,
            user_id=current.user_id,
            surface_id=surface_id,
            project_id=project_id,
            title=update.title,
            content=update.content,
            tags=list(update.tags),
            source=current.source,
            timestamps=NoteTimestamps(
                created_at=current.timestamps.created_at, updated_at=iso(self.clock.now())
            ),
        )
        records = await self._records(ctx)
        note.version = await records.put(
            note_id, self._encode(note), expected_version=update.expected_version
        )
        return note

    async def delete(self, ctx: RequestContext, note_id: str, *, expected_version: int | None = None) -> None:
        ctx.require_role("member")
        check_id(DOMAIN, "note_id", note_id)
        check_expected_version(DOMAIN, expected_version, delete=True)
        records = await self._records(ctx)
        try:
            await records.delete(note_id, expected_version=expected_version)
        except NorthstarError as exc:
            if exc.http_status == 404:  # answered as every other read of a missing note
                raise not_found(DOMAIN, f"note '{note_id}'", note_id=note_id) from None
            raise

    async def list(
        self,
        ctx: RequestContext,
        *,
        surface_id: str | None = None,
        project_id: str | None = None,
        tag: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Note]:
        """The caller's notes in creation order, filtered; a page may hold fewer than ``limit``
        items while ``has_more`` is true (the scan per call is bounded)."""
        check_limit(DOMAIN, limit)
        for field, value in (("surface_id", surface_id), ("project_id", project_id)):
            if value is not None:
                check_id(DOMAIN, field, value)
        stream = f"notes/{subject_segment(ctx.user_id)}/{surface_id or ''}/{project_id or ''}/{tag or ''}"
        after = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, stream, cursor) if cursor else None
        records = await self._records(ctx)
        matched: list[Note] = []
        last_key = after
        scanned = 0
        more_in_store = True
        while len(matched) <= limit and scanned < _SCAN_BUDGET and more_in_store:
            page = await records.list(after_key=last_key, limit=100)
            more_in_store = len(page) == 100
            for item in page:
                last_key = record_key(item)
                scanned += 1
                note = self._decode(item)
                if (
                    (surface_id is None or note.surface_id == surface_id)
                    and (project_id is None or note.project_id == project_id)
                    and (tag is None or tag in note.tags)
                ):
                    matched.append(note)
                    if len(matched) > limit:
                        break

        def position(key: str) -> str:
            return self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, stream, key)

        if len(matched) > limit:
            return page_of(matched, limit, lambda note: position(note.note_id), lambda note: note)
        # The scan stopped short of limit + 1 matches, at the end of the notes or at its budget
        # (then there may be more): the next page continues after the last note *scanned*, so no
        # note is examined twice.
        return Page(matched, position(last_key) if last_key else None, more_in_store)
