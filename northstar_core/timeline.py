"""Replayable event streams (resource kind ``event_stream``): the timeline behind every SSE feed.

One :class:`~northstar_core.kernel.streams.SequencedStream` per stream id, in the partition
``<tenant>|<mode>|stream|<stream_id>``, so a stream is tenant- and mode-scoped by construction.
An event's ``event_id`` *is* its cursor (signed, bound to tenant, mode and stream), so an SSE
``id:`` line, ``Last-Event-ID`` and ``?cursor=`` are interchangeable.

Guarantees:

* events of one stream are totally ordered and gap-free (``seq`` 1, 2, …);
* a publish with an ``idempotency_key`` happens at most once (a retry returns the first
  cursor and writes nothing);
* :meth:`EventStreamService.publish_ordered` publishes a numbered series (a canvas's
  ``op_committed`` for rev 1, 2, …) strictly in order, each position exactly once, so a
  publisher that crashed between its own commit and its publish can be caught up later
  without ever creating a gap or a duplicate;
* reading a page costs ``limit`` items, whatever the length of the stream.

Stream ids of the form ``<subject_type>:<subject_id>`` (``canvas:c1``, ``run:r9``) are the
subject streams the server itself writes (op commits, safety decisions); :func:`subject_stream`
names them, and :func:`is_subject_stream` lets the HTTP shell keep clients from forging them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any, Final

import msgspec

from northstar_core.clock import Clock, iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, cursor_invalid
from northstar_core.identity import RequestContext
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page
from northstar_core.kernel.streams import SequencedStream, seq_key
from northstar_core.kernel.tail import TailHub
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, partition
from northstar_core.storage import MAX_VALUE_BYTES, Absent, Item, Op, Put, VersionIs

KIND: Final = "event_stream"
DOMAIN: Final = "event_stream"
EVENT_TYPE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
DEFAULT_MAX_EVENT_BYTES: Final = 64_000
MAX_PAGE: Final = 500
_MARK_PREFIX: Final = "m#"


def subject_stream(subject_type: str, subject_id: str) -> str:
    """The stream id of a subject's server-written stream, e.g. ``canvas:c1``.

    The gate chain publishes ``safety_decision`` events for subject ``(type, id)`` here, and
    the canvas publishes ``op_committed``/``gesture`` on ``subject_stream("canvas", id)``.
    """
    return f"{subject_type}:{subject_id}"


def is_subject_stream(stream_id: str) -> bool:
    """Whether ``stream_id`` is reserved for server-written events (contains ``:``)."""
    return ":" in stream_id


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


class EventStreamService:
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
        stored = msgspec.json.decode(item.value, type=_Stored)
        seq = int(item.key[2:])
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
    ) -> str:
        """Append one event; returns its cursor (the first one again for a repeated key).

        The same key with other ``type``/``data`` is 422 ``event_stream.idempotency_mismatch``.
        """
        seq, _ = await self._publish(ctx, stream_id, event_type, data, idempotency_key)
        return self.cursor(ctx, stream_id, seq)

    async def _publish(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        idempotency_key: str | None,
    ) -> tuple[int, bool]:
        if idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", idempotency_key)
        stream = await self.stream(ctx, stream_id)
        raw = self._encode(ctx, event_type, data)
        done = await stream.append(
            lambda _first: [raw],
            now=self.clock.now(),
            idempotency_key=idempotency_key,
            payload_fingerprint=fingerprint({"type": event_type, "data": data}),
        )
        if not done.replayed:
            self.tails.notify(stream, done.last_seq)
        return done.first_seq, done.replayed

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
        seq, replayed = await self._publish(ctx, stream_id, event_type, data, idempotency_key)
        event = await self.get_event(ctx, stream_id, seq)
        assert event is not None  # just written (or replayed) on this stream
        return event, replayed

    async def publish_ordered(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        series: str,
        position: int,
    ) -> str:
        """Publish item ``position`` (1-based) of a numbered ``series`` exactly once, in order.

        A marker ``m#<series>`` whose version is the last published position commits in the
        same atomic batch as the event, conditioned on the previous position; so positions
        appear on the stream in order and never twice, whoever publishes them. Raises
        :class:`ValueError` if ``position`` is not the next one (see :meth:`published`).
        """
        stream = await self.stream(ctx, stream_id)
        key = f"{series}.{position}"
        check_id(DOMAIN, "series", key)
        fp = fingerprint({"type": event_type, "data": data})
        prior = await stream.idempotent_result(key, fp)
        if prior is not None:
            return self.cursor(ctx, stream_id, prior.first_seq)
        last = await self.published(ctx, stream_id, series)
        if last >= position:
            # A concurrent publisher got there between our two reads: its record is durable.
            prior = await stream.idempotent_result(key, fp)
            if prior is not None:
                return self.cursor(ctx, stream_id, prior.first_seq)
        if last != position - 1:
            raise ValueError(f"{series} position {position} is not the next to publish ({last})")
        # A series mirrors records the server already accepted (a canvas command may be larger
        # than a client event): only the storage limit applies, so a position never gets stuck.
        raw = self._encode(ctx, event_type, data, limit=MAX_VALUE_BYTES)
        marker = _MARK_PREFIX + series

        def mark(_first: int, _last: int) -> list[Op]:
            condition = Absent() if position == 1 else VersionIs(position - 1)
            return [Put(marker, b"{}", version=position, condition=condition)]

        done = await stream.append(
            lambda _first: [raw],
            now=self.clock.now(),
            idempotency_key=key,
            payload_fingerprint=fp,
            extra_ops=mark,
        )
        if not done.replayed:
            self.tails.notify(stream, done.last_seq)
        return self.cursor(ctx, stream_id, done.first_seq)

    async def published(self, ctx: RequestContext, stream_id: str, series: str) -> int:
        """The last position of ``series`` published on the stream (0 if none)."""
        stream = await self.stream(ctx, stream_id)
        item = await stream.store.get(stream.partition, _MARK_PREFIX + series)
        return item.version if item is not None else 0

    async def ordered_cursor(
        self, ctx: RequestContext, stream_id: str, series: str, position: int
    ) -> str | None:
        """The cursor of item ``position`` of ``series`` if it was published (position 0 is
        the start of the stream)."""
        if position == 0:
            return self.cursor(ctx, stream_id, 0)
        stream = await self.stream(ctx, stream_id)
        item = await stream.store.get(stream.partition, f"i#{series}.{position}")
        if item is None:
            return None
        seq = int(msgspec.json.decode(item.value, type=dict[str, Any])["result"]["first_seq"])
        return self.cursor(ctx, stream_id, seq)

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
        items = await stream.read(after, limit + 1)
        has_more = len(items) > limit
        items = items[:limit]
        events = [self._event(ctx, stream_id, item) for item in items]
        last_seq = events[-1].seq if events else after
        if types is not None:
            events = [e for e in events if e.type in types]
        return Page(
            items=events, next_cursor=self.cursor(ctx, stream_id, last_seq), has_more=has_more
        )

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
        stream = await self.stream(ctx, stream_id)
        item = await stream.store.get(stream.partition, seq_key(seq))
        return self._event(ctx, stream_id, item) if item is not None else None
