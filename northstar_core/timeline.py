"""Replayable event streams (resource kind ``event_stream``): the timeline behind every SSE feed.

One :class:`~northstar_core.kernel.streams.SequencedStream` per stream id, in the partition
``<tenant>|<mode>|stream|<stream_id>``, so a stream is tenant- and mode-scoped by construction.
An event's ``event_id`` *is* its cursor (signed, bound to tenant, mode and stream), so an SSE
``id:`` line, ``Last-Event-ID`` and ``?cursor=`` are interchangeable.

Guarantees:

* events of one stream are totally ordered and gap-free (``seq`` 1, 2, …);
* a publish with an ``idempotency_key`` happens at most once (a retry returns the first
  cursor and writes nothing);
* :meth:`Timeline.publish_ordered` publishes a numbered series (a canvas's
  ``op_committed`` for rev 1, 2, …) strictly in order, each position exactly once, so a
  publisher that crashed between its own commit and its publish can be caught up later
  without ever creating a gap or a duplicate; a position can carry events that go on the
  stream just before it, in the same atomic batch (a canvas command's allow decision before
  its ``op_committed``), so no reader sees one without the other;
* reading a page costs ``limit`` items, whatever the length of the stream.

Stream ids of the form ``<subject_type>:<subject_id>`` (``canvas:c1``, ``run:r9``) are the
subject streams the server itself writes (op commits, safety decisions);
:func:`~northstar_core.scope.subject_stream` names them, and
:func:`~northstar_core.scope.is_subject_stream` lets the HTTP shell keep clients from forging
them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Final

import msgspec

from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, cursor_invalid
from northstar_core.identity import RequestContext
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page, page_of
from northstar_core.kernel.publication import MAX_PUBLISHED_BYTES, KeyedEntry, OrderedSeries
from northstar_core.kernel.records import Item
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.kernel.tail import TailHub
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, is_subject_stream, partition

KIND: Final = "event_stream"
DOMAIN: Final = "event_stream"
EVENT_TYPE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
DEFAULT_MAX_EVENT_BYTES: Final = 64_000
MAX_PAGE: Final = 500


class StreamEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event as readers see it; ``event_id`` is the cursor of this event."""

    event_id: str
    seq: int
    stream_id: str
    type: str
    data: dict[str, Any]
    ts: str
    actor_id: str | None = None
    request_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None

    @property
    def cursor(self) -> str:
        """This event's resume position (its ``event_id``; the page rule of
        :mod:`northstar_core.kernel.paging`)."""
        return self.event_id


class PendingEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event its producer leaves for another to publish, with what it must accompany (a
    gate's allow decision, published by the canvas with the commit it allowed)."""

    stream_id: str
    type: str
    data: dict[str, Any]
    idempotency_key: str


class _Stored(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The durable form (the cursor is derived, never stored: it depends on the codec)."""

    type: str
    data: dict[str, Any]
    ts: float
    actor_id: str | None = None
    request_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None


class Timeline:
    """Publish to and read from tenant-scoped replayable streams (see module doc).

    Live following goes through the process's :class:`~northstar_core.kernel.tail.TailHub` (the
    store is the bus); every successful publish notifies it so local subscribers wake at once.
    """

    def __init__(
        self,
        registry: RoutingRegistry,
        codec: CursorCodec,
        clock: Clock,
        *,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        tails: TailHub,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.clock = clock
        self.max_event_bytes = max_event_bytes
        self.tails = tails

    # --- plumbing --------------------------------------------------------------------------

    async def stream(self, ctx: RequestContext, stream_id: str) -> SequencedStream:
        check_id(DOMAIN, "stream_id", stream_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        return SequencedStream(store, partition(ctx, "stream", stream_id), DOMAIN)

    def cursor(self, ctx: RequestContext, stream_id: str, seq: int) -> str:
        """The cursor of position ``seq`` (0 = before the first event)."""
        return self.codec.encode(DOMAIN, ctx.tenant_id, ctx.mode, stream_id, str(seq))

    def decode(
        self, ctx: RequestContext, stream_id: str, cursor: str, *, error_domain: str = DOMAIN
    ) -> int:
        """The position inside ``cursor`` or 410 ``<error_domain>.cursor_invalid``.

        Cursors are always signed under the ``event_stream`` binding; ``error_domain`` only
        names the code, so a canvas endpoint answers ``canvas.cursor_invalid``.
        """
        try:
            position = self.codec.decode(DOMAIN, ctx.tenant_id, ctx.mode, stream_id, cursor)
        except NorthstarError as exc:
            raise cursor_invalid(error_domain, cursor[:1024], str(exc.details.get("reason"))) from None
        if not position.isdigit():
            raise cursor_invalid(error_domain, cursor, "malformed position")
        return int(position)

    async def check_cursor(
        self, ctx: RequestContext, stream_id: str, cursor: str, *, error_domain: str = DOMAIN
    ) -> int:
        """Decode ``cursor`` and refuse a position ahead of the head (410)."""
        seq = self.decode(ctx, stream_id, cursor, error_domain=error_domain)
        if seq > 0 and seq > await (await self.stream(ctx, stream_id)).head():
            raise cursor_invalid(error_domain, cursor, "cursor is ahead of the stream head")
        return seq

    def _event(self, ctx: RequestContext, stream_id: str, item: Item) -> StreamEvent:
        return self._as_event(ctx, stream_id, seq_of(item.key), item.value)

    def _as_event(self, ctx: RequestContext, stream_id: str, seq: int, raw: bytes) -> StreamEvent:
        stored = msgspec.json.decode(raw, type=_Stored)
        return StreamEvent(
            event_id=self.cursor(ctx, stream_id, seq),
            seq=seq,
            stream_id=stream_id,
            type=stored.type,
            data=stored.data,
            ts=iso(stored.ts),
            actor_id=stored.actor_id,
            request_id=stored.request_id,
            run_id=stored.run_id,
            step_id=stored.step_id,
            trace_id=stored.trace_id,
        )

    def _encode(
        self, ctx: RequestContext, event_type: str, data: dict[str, Any], *, limit: int | None = None
    ) -> bytes:
        if not EVENT_TYPE_PATTERN.fullmatch(event_type):
            raise NorthstarError(
                f"{DOMAIN}.invalid_event_type",
                f"event type must match {EVENT_TYPE_PATTERN.pattern}",
                422,
                details={"type": event_type[:100]},
            )
        stored = _Stored(
            type=event_type,
            data=data,
            ts=self.clock.now(),
            actor_id=ctx.user_id or None,
            request_id=ctx.request_id or None,
            run_id=ctx.run_id,
            step_id=ctx.step_id,
            trace_id=ctx.trace_id,
        )
        try:
            raw = msgspec.json.encode(stored)
        except (TypeError, ValueError) as exc:
            raise NorthstarError(
                f"{DOMAIN}.invalid_event", f"event data is not JSON: {exc}", 422
            ) from None
        limit = limit or self.max_event_bytes
        if len(raw) > limit:
            raise NorthstarError(
                f"{DOMAIN}.event_too_large",
                f"an event may hold at most {limit} bytes",
                413,
                details={"limit": limit, "size": len(raw)},
            )
        return raw

    # --- writing ---------------------------------------------------------------------------

    async def publish(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        key_checked: bool = False,
    ) -> str:
        """Append one event; returns its cursor (the first one again for a repeated key).

        The same key with other ``type``/``data`` is 422 ``event_stream.idempotency_mismatch``.
        ``key_checked`` says the key is known to be unused (just minted, e.g. from a fresh
        event id): the publish is then one write, with no look-up of the key first (a used
        key is still caught by the write's condition and answered as a replay).
        """
        seq, _, _ = await self._publish(ctx, stream_id, event_type, data, idempotency_key, key_checked)
        return self.cursor(ctx, stream_id, seq)

    async def _publish(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        idempotency_key: str | None,
        key_checked: bool = False,
    ) -> tuple[int, bool, bytes]:
        if idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", idempotency_key)
        stream = await self.stream(ctx, stream_id)
        raw = self._encode(ctx, event_type, data)
        done = await stream.append(
            lambda _first: [raw],
            now=self.clock.now(),
            idempotency_key=idempotency_key,
            payload_fingerprint=fingerprint({"type": event_type, "data": data}),
            key_checked=key_checked,
        )
        # a replay too: its first attempt may not have lived to give notice
        self.tails.notify(stream, done.last_seq)
        return done.first_seq, done.replayed, raw

    async def append(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> tuple[StreamEvent, bool]:
        """A caller's append (``POST /realtime/timeline/{stream_id}/append``).

        Needs the member role; subject streams (``<type>:<id>``) are written by the server
        only (403 ``event_stream.reserved_stream`` unless the caller has the system flag), so
        a client cannot forge an ``op_committed`` or a ``safety_decision``. Returns the event
        and whether it is a replay of an earlier append with the same key.
        """
        ctx.require_role("member")
        check_id(DOMAIN, "stream_id", stream_id)
        if is_subject_stream(stream_id) and not ctx.is_system:
            raise NorthstarError(
                f"{DOMAIN}.reserved_stream",
                "streams named '<subject_type>:<subject_id>' are written by the server only",
                403,
                details={"stream_id": stream_id},
            )
        return await self.publish_event(ctx, stream_id, event_type, data, idempotency_key=idempotency_key)

    async def publish_event(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> tuple[StreamEvent, bool]:
        """:meth:`publish`, answering the event as readers see it and whether it is a replay
        (the event in hand when it is new; the stored one, read back, when it is a replay)."""
        seq, replayed, raw = await self._publish(ctx, stream_id, event_type, data, idempotency_key)
        if not replayed:
            return self._as_event(ctx, stream_id, seq, raw), False
        event = await self.get_event(ctx, stream_id, seq)
        assert event is not None  # replayed: stored on this stream earlier
        return event, True

    async def _series(self, ctx: RequestContext, stream_id: str, series: str) -> OrderedSeries:
        stream = await self.stream(ctx, stream_id)
        check_id(DOMAIN, "series", series)
        return OrderedSeries(stream, series)

    async def publish_ordered(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        series: str,
        position: int,
        preceded_by: Sequence[PendingEvent] = (),
    ) -> str:
        """Publish item ``position`` (1-based) of a numbered ``series`` exactly once, in order;
        returns the event's cursor (the first publication's for a repeat).

        The event is the one in hand: at steady state this is one store write (see
        :mod:`~northstar_core.kernel.publication`), whoever else publishes the series. Raises
        :class:`~northstar_core.kernel.publication.SeriesBehind` (a :class:`ValueError`
        carrying the last published position) if ``position`` is not the next one.

        ``preceded_by`` (events of this stream, each under its own idempotency key) go on the
        stream just before the item, in the same batch: with it or not at all, each once.
        Every publisher of the position must pass the same ones.
        """
        ordered = await self._series(ctx, stream_id, series)
        check_id(DOMAIN, "series", ordered.key(position))
        raw = self._encode(ctx, event_type, data, limit=MAX_PUBLISHED_BYTES)
        fp = fingerprint({"type": event_type, "data": data})
        preceding = []
        for event in preceded_by:
            if event.stream_id != stream_id:
                raise ValueError(f"an event of {event.stream_id!r} cannot precede one of {stream_id!r}")
            check_id(DOMAIN, "idempotency_key", event.idempotency_key)
            preceding.append(
                KeyedEntry(
                    # the storage limit only, like the item: a position never sticks behind it
                    self._encode(ctx, event.type, event.data, limit=MAX_PUBLISHED_BYTES),
                    event.idempotency_key,
                    fingerprint({"type": event.type, "data": event.data}),
                )
            )
        done = await ordered.publish(position, raw, fp, now=self.clock.now(), preceded_by=preceding)
        # a replay too: its first attempt may not have lived to give notice
        self.tails.notify(ordered.stream, done.last_seq)
        return self.cursor(ctx, stream_id, done.first_seq)

    async def published(self, ctx: RequestContext, stream_id: str, series: str) -> int:
        """The last position of ``series`` published on the stream (0 if none)."""
        return await (await self._series(ctx, stream_id, series)).published()

    async def ordered_cursor(
        self, ctx: RequestContext, stream_id: str, series: str, position: int
    ) -> str | None:
        """The cursor of item ``position`` of ``series`` if it was published (position 0 is
        the start of the stream)."""
        if position == 0:
            return self.cursor(ctx, stream_id, 0)
        seq = await (await self._series(ctx, stream_id, series)).seq_of(position)
        return None if seq is None else self.cursor(ctx, stream_id, seq)

    # --- reading ---------------------------------------------------------------------------

    async def head_cursor(self, ctx: RequestContext, stream_id: str) -> str:
        """The cursor of the last event (readers starting here see only new events)."""
        return self.cursor(ctx, stream_id, await (await self.stream(ctx, stream_id)).head())

    async def list(
        self,
        ctx: RequestContext,
        stream_id: str,
        cursor: str | None = None,
        limit: int = 100,
        *,
        error_domain: str = DOMAIN,
        types: frozenset[str] | None = None,
    ) -> Page[StreamEvent]:
        """Events after ``cursor`` (exclusive; from the start without one), in order, paged.

        With ``types`` only those event types are returned; ``next_cursor`` still advances
        past every event read, so paging never rereads or skips.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise NorthstarError(
                f"{error_domain}.invalid_request",
                f"limit must be between 1 and {MAX_PAGE}",
                422,
                details={"field": "limit", "limit": limit},
            )
        after = 0
        if cursor is not None:
            after = await self.check_cursor(ctx, stream_id, cursor, error_domain=error_domain)
        stream = await self.stream(ctx, stream_id)
        page = page_of(
            [self._event(ctx, stream_id, item) for item in await stream.read(after, limit + 1)],
            limit,
            lambda event: event.event_id,
            lambda event: event,
            resume_from=self.cursor(ctx, stream_id, after),
            stream=True,
        )
        if types is not None:
            page.items = [e for e in page.items if e.type in types]
        return page

    async def follow(
        self,
        ctx: RequestContext,
        stream_id: str,
        after_seq: int,
        *,
        heartbeat: float | None = None,
    ) -> AsyncGenerator[StreamEvent | None, None]:
        """Every event after ``after_seq``: the stored ones, then new ones as they land.

        Works across processes sharing one backend (it tails the store); each event is yielded
        once, in order; ``None`` after ``heartbeat`` idle seconds. Ends only when the consumer
        stops iterating.
        """
        stream = await self.stream(ctx, stream_id)
        async for item in self.tails.follow(stream, after_seq, heartbeat=heartbeat):
            yield None if item is None else self._event(ctx, stream_id, item)

    async def get_event(self, ctx: RequestContext, stream_id: str, seq: int) -> StreamEvent | None:
        if seq < 1:
            return None
        stream = await self.stream(ctx, stream_id)
        items = await stream.read(seq - 1, 1)  # entries are gap-free: the next one is ``seq``
        if not items or seq_of(items[0].key) != seq:
            return None
        return self._event(ctx, stream_id, items[0])
