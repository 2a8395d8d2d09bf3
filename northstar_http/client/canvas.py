"""The canvas over HTTP, and the collaborative editing loop an agent or UI embeds.

:class:`CanvasClient` mirrors ``engines.canvas`` one call per endpoint. :class:`CanvasSession`
is the client flow of issue 3, independent of the transport (HTTP via :class:`CanvasClient`,
or embedded via :class:`EmbeddedCanvasApi`)::

    session = CanvasSession(ns.canvas, "c1")
    await session.open()                      # snapshot: local state + cursor
    listener = asyncio.create_task(session.listen())   # SSE: op_committed from others
    await session.submit([{"op": "create", "atom_id": "a", "kind": "box", "props": {}}])

``submit`` sends ``{base_rev: local head, ops, idempotency_key}``. On 409 ``rev_conflict`` it
applies ``recovery_ops`` to the local state (or re-reads the snapshot when
``snapshot_required``), rebases the pending ops (:func:`northstar_core.canvas.rebase`) and
retries; when the response is lost (transport error, 503) it retries the *same* key and
payload, so the command is applied at most once. The local state only ever advances by
committed revisions, in order, so every session converges on the server's snapshot.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx
import msgspec

from northstar_core.canvas.model import (
    CanvasLimits,
    CanvasOp,
    CanvasRecord,
    CanvasState,
    CommandIn,
    CommitResult,
    RecordIn,
    RecordType,
    Snapshot,
    rebase,
)
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.timeline import StreamEvent
from northstar_http.client.base import BaseClient, SseMessage

if TYPE_CHECKING:  # only the embedded adapter's annotation: the client needs the model alone
    from northstar_core.canvas.service import CanvasService

_NO_LIMITS = CanvasLimits(
    max_ops_per_command=2**62,
    max_props_bytes=2**62,
    max_command_bytes=2**62,
    max_canvas_bytes=2**62,
    max_atoms=2**62,
)


def _seg(value: str) -> str:
    return quote(value, safe=":")


def _types_param(types: frozenset[str] | None) -> str | None:
    return ",".join(sorted(types)) if types else None


class CanvasClient:
    """``engines.canvas`` over HTTP: the same methods, arguments and result types, without
    the ``ctx`` argument (the identity is the client's token); errors arrive as
    :class:`NorthstarError`."""

    def __init__(self, base: BaseClient) -> None:
        self._base = base

    def _path(self, canvas_id: str, tail: str) -> str:
        return f"/canvas/{_seg(canvas_id)}/{tail}"

    async def commit(self, canvas_id: str, command: CommandIn) -> CommitResult:
        """Commit ``command`` atomically at ``head_rev + 1``."""
        body = msgspec.to_builtins(command)
        return await self._base.call(CommitResult, "POST", self._path(canvas_id, "commands"), json=body)

    async def snapshot(self, canvas_id: str) -> Snapshot:
        """The state at the head; ``cursor`` is the stream position of the head revision."""
        return await self._base.call(Snapshot, "GET", self._path(canvas_id, "snapshot"))

    async def head(self, canvas_id: str) -> int:
        return (await self.snapshot(canvas_id)).head_rev

    async def replay(
        self,
        canvas_id: str,
        cursor: str | None,
        limit: int = 100,
        *,
        types: frozenset[str] | None = None,
    ) -> Page[StreamEvent]:
        """Events of the canvas stream after ``cursor`` (from the start without one), paged."""
        params = {"cursor": cursor, "limit": limit, "types": _types_param(types)}
        return await self._base.call(
            Page[StreamEvent], "GET", self._path(canvas_id, "replay"), params=params
        )

    async def head_cursor(self, canvas_id: str) -> str:
        """The cursor of the last event of the canvas stream (readers starting there see only
        new events)."""
        position = (await self.snapshot(canvas_id)).cursor
        while True:  # from the head revision to the stream's end (gestures, decisions since)
            page = await self.replay(canvas_id, position, 500)
            position = page.next_cursor or position
            if not page.has_more:
                return position

    def follow(self, canvas_id: str, cursor: str | None = None) -> AsyncGenerator[StreamEvent, None]:
        """Events of the canvas stream after ``cursor`` (from the head without one), then live
        ones, each once and in order, until the consumer stops iterating — across dropped
        connections and server restarts (see :meth:`BaseClient.follow`)."""
        return self._base.follow(
            f"/sse/canvas/{_seg(canvas_id)}",
            _decode_event,
            cursor=cursor,
            start=lambda: self.head_cursor(canvas_id),
        )

    async def gesture(
        self,
        canvas_id: str,
        gesture: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> StreamEvent:
        """Publish a gesture on the canvas stream (never the command log)."""
        body: dict[str, Any] = {"gesture": gesture, "data": data}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return await self._base.call(StreamEvent, "POST", self._path(canvas_id, "gestures"), json=body)

    async def add_record(
        self, canvas_id: str, record_type: RecordType, record: RecordIn
    ) -> tuple[CanvasRecord, bool]:
        """Store an artifact or audit record (idempotent by key); the record and whether it
        is a replay."""
        path = self._path(canvas_id, f"{record_type}s")
        return await self._base.call_replayable(CanvasRecord, "POST", path, json=msgspec.to_builtins(record))

    async def list_records(
        self,
        canvas_id: str,
        record_type: RecordType,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[CanvasRecord]:
        """Records in creation order after ``cursor``, paged."""
        params = {"cursor": cursor, "limit": limit}
        path = self._path(canvas_id, f"{record_type}s")
        return await self._base.call(Page[CanvasRecord], "GET", path, params=params)


def _decode_event(message: SseMessage) -> StreamEvent:
    return msgspec.json.decode(message.data, type=StreamEvent)


class TimelineClient:
    """``engines.timeline`` (``/realtime/timeline``) over HTTP: append to and list a
    tenant's event streams, with the library's result types."""

    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def append(
        self,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> tuple[StreamEvent, bool]:
        """A caller's append; the event and whether it replays an earlier one (same key)."""
        body: dict[str, Any] = {"type": event_type, "data": data}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        path = f"/realtime/timeline/{_seg(stream_id)}/append"
        return await self._base.call_replayable(StreamEvent, "POST", path, json=body)

    async def list(self, stream_id: str, cursor: str | None = None, limit: int = 100) -> Page[StreamEvent]:
        """Events after ``cursor`` (exclusive; from the start without one), in order, paged."""
        path = f"/realtime/timeline/{_seg(stream_id)}/list"
        params = {"cursor": cursor, "limit": limit}
        return await self._base.call(Page[StreamEvent], "GET", path, params=params)


class CanvasApi(Protocol):
    """What :class:`CanvasSession` needs from a transport: :class:`CanvasClient` (HTTP) or
    :class:`EmbeddedCanvasApi` (in process)."""

    async def commit(self, canvas_id: str, command: CommandIn) -> CommitResult: ...

    async def snapshot(self, canvas_id: str) -> Snapshot: ...

    async def replay(
        self,
        canvas_id: str,
        cursor: str | None,
        limit: int = 100,
        *,
        types: frozenset[str] | None = None,
    ) -> Page[StreamEvent]: ...


class EmbeddedCanvasApi:
    """:class:`CanvasApi` over an in-process :class:`CanvasService` (an agent embedding the
    library): ``engines.canvas`` with the context bound, as :class:`CanvasClient` is with
    its token."""

    def __init__(self, service: CanvasService, ctx: RequestContext) -> None:
        self.service = service
        self.ctx = ctx

    async def commit(self, canvas_id: str, command: CommandIn) -> CommitResult:
        return await self.service.commit(self.ctx, canvas_id, command)

    async def snapshot(self, canvas_id: str) -> Snapshot:
        return await self.service.snapshot(self.ctx, canvas_id)

    async def replay(
        self,
        canvas_id: str,
        cursor: str | None,
        limit: int = 100,
        *,
        types: frozenset[str] | None = None,
    ) -> Page[StreamEvent]:
        return await self.service.replay(self.ctx, canvas_id, cursor, limit, types=types)

    def follow(self, canvas_id: str, cursor: str | None = None) -> AsyncGenerator[StreamEvent, None]:
        return self.service.follow(self.ctx, canvas_id, cursor)

    async def add_record(
        self, canvas_id: str, record_type: RecordType, record: RecordIn
    ) -> tuple[CanvasRecord, bool]:
        return await self.service.add_record(self.ctx, canvas_id, record_type, record)


_COMMITTED = frozenset({"op_committed"})


def _is_retryable(exc: BaseException) -> bool:
    """A response that may have been lost: the command may or may not have committed."""
    if isinstance(exc, NorthstarError):
        return exc.http_status in (502, 503, 504)
    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


class SubmitOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one :meth:`CanvasSession.submit`."""

    committed_rev: int | None  # None: every op was rebased away (nothing left to send)
    ops: list[dict[str, Any]]  # the ops actually committed (after rebasing)
    idempotency_key: str
    attempts: int
    replayed: bool = False


class CanvasSession:
    """One participant's view of one canvas (see module doc). Not safe to ``submit`` twice
    concurrently from one session; run one session per concurrent editor."""

    def __init__(
        self,
        api: CanvasApi,
        canvas_id: str,
        *,
        max_attempts: int = 50,
        backoff: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.api = api
        self.canvas_id = canvas_id
        self.state = CanvasState(0, {}, [])
        self.cursor: str | None = None  # last canvas-stream position seen (snapshot/SSE/replay)
        self.max_attempts = max_attempts
        self._backoff = backoff
        self.gestures: list[dict[str, Any]] = []
        self.committed_keys: dict[str, int] = {}  # idempotency key -> rev, as seen on the stream

    @property
    def head_rev(self) -> int:
        return self.state.rev

    async def open(self) -> None:
        """Load the snapshot: local state at the head and the stream cursor just after it."""
        snap = await self.api.snapshot(self.canvas_id)
        self.state = CanvasState.from_snapshot(snap)
        self.cursor = snap.cursor

    def apply_committed(self, rev: int, ops: list[Any]) -> bool:
        """Apply committed revision ``rev`` if it is the next one; ``False`` if it is not
        (already applied, or a gap the caller must fill with :meth:`sync`)."""
        if rev != self.state.rev + 1:
            return False
        parsed = [msgspec.convert(op, CanvasOp) for op in ops]
        self.state.apply(parsed, _NO_LIMITS)
        self.state.rev = rev
        return True

    def on_event(self, event: StreamEvent) -> bool:
        """Take one canvas-stream event (SSE or replay). ``False`` if a gap was detected."""
        ok = True
        if event.type == "op_committed":
            rev = int(event.data["rev"])
            self.committed_keys[str(event.data.get("idempotency_key"))] = rev
            if rev > self.state.rev:
                ok = self.apply_committed(rev, event.data["ops"])
        elif event.type == "gesture":
            self.gestures.append(event.data)
        if ok:
            self.cursor = event.cursor
        return ok

    async def sync(self) -> None:
        """Catch up from the durable log after the last cursor (replay), in order."""
        while True:
            page = await self.api.replay(self.canvas_id, self.cursor, types=_COMMITTED)
            for event in page.items:
                if not self.on_event(event):
                    await self.open()  # a hole we cannot fill from here: start over
                    return
            self.cursor = page.next_cursor or self.cursor
            if not page.has_more:
                return

    async def listen(
        self,
        follow: Callable[[str, str | None], AsyncIterator[StreamEvent]] | None = None,
        *,
        reconnect_delay: float = 0.5,
    ) -> None:
        """Apply live events until cancelled (``follow`` defaults to the api's ``follow``:
        :meth:`CanvasClient.follow` or :meth:`EmbeddedCanvasApi.follow`).

        A dropped stream is resumed from the last applied event (``Last-Event-ID``), so no
        event is missed or applied twice; a 410 (cursor no longer valid) reloads the snapshot.
        """
        stream_of = follow or getattr(self.api, "follow")  # noqa: B009 - not part of CanvasApi
        while True:
            try:
                async for event in stream_of(self.canvas_id, self.cursor):
                    if not self.on_event(event):
                        await self.sync()
            except NorthstarError as exc:
                if exc.http_status == 410:
                    await self.open()
                    continue
                if not _is_retryable(exc):
                    raise
            except (httpx.TransportError, ConnectionError, TimeoutError):
                pass
            await asyncio.sleep(reconnect_delay)

    async def _pause(self, attempt: int) -> None:
        if self._backoff is not None:
            await self._backoff(attempt)

    async def submit(self, ops: list[dict[str, Any]], *, idempotency_key: str | None = None) -> SubmitOutcome:
        """Commit ``ops`` (valid on the local state) through conflicts and lost responses."""
        key = idempotency_key or uuid.uuid4().hex
        pending: list[CanvasOp] = [msgspec.convert(op, CanvasOp) for op in ops]
        base_rev = self.state.rev
        for attempt in range(1, self.max_attempts + 1):
            wire = msgspec.to_builtins(pending)
            try:
                command = CommandIn(base_rev=base_rev, ops=wire, idempotency_key=key)
                result = await self.api.commit(self.canvas_id, command)
            except NorthstarError as exc:
                if exc.code == "canvas.rev_conflict":
                    pending = await self._recover(exc.details, pending)
                    if not pending:
                        return SubmitOutcome(
                            committed_rev=None, ops=[], idempotency_key=key, attempts=attempt
                        )
                    # The rebased command keeps the key: if an earlier attempt whose response
                    # was lost is still in flight and commits, this one is refused (422
                    # idempotency_mismatch) instead of applying the intent twice.
                    base_rev = self.state.rev
                    continue
                if exc.code == "canvas.idempotency_mismatch" and attempt > 1:
                    # An earlier attempt under this key did commit after all: adopt it.
                    await self.sync()
                    return SubmitOutcome(
                        committed_rev=self.committed_keys.get(key),
                        ops=[],
                        idempotency_key=key,
                        attempts=attempt,
                        replayed=True,
                    )
                if _is_retryable(exc):
                    await self._pause(attempt)
                    continue
                raise
            except (httpx.TransportError, ConnectionError, TimeoutError):
                await self._pause(attempt)
                continue  # same key, same payload: at most once
            rev = result.head_rev
            if not self.apply_committed(rev, wire):
                await self.sync()  # others committed too, or our replay is older: read the log
            return SubmitOutcome(
                committed_rev=rev,
                ops=wire,
                idempotency_key=key,
                attempts=attempt,
                replayed=result.replayed,
            )
        raise NorthstarError(
            "canvas.client_gave_up",
            f"no commit after {self.max_attempts} attempts",
            503,
            details={"idempotency_key": key},
        )

    async def _recover(self, details: dict[str, Any], pending: list[CanvasOp]) -> list[CanvasOp]:
        if details.get("snapshot_required"):
            await self.open()
        else:
            for record in details.get("recovery_ops", []):
                rev = int(record["rev"])
                if rev > self.state.rev and not self.apply_committed(rev, record["ops"]):
                    await self.sync()
                    break
            if self.state.rev < int(details.get("expected_rev", 0)):
                await self.sync()
        return rebase(self.state, pending)
