"""The event spine: the one append-only log of audit, safety, budget, analytics… events.

Guarantees (SPEC §2.7, §6 "Event spine"):

* append-only — nothing here updates or deletes an event, and every write is an ``Absent``
  conditional put, so an event id can never be overwritten;
* the server assigns ``event_id`` (a UUIDv7: time-ordered, monotonic within the process),
  ``timestamp``, ``route`` and the identity scope (from the request context, never the body);
* required fields are validated before anything is written (422 ``event_spine.invalid_event``);
* an event is either fully written with all its index entries or not at all (one atomic batch).

Storage: one partition per tenant+mode (``<tenant>|<mode>|spine``), so no read can cross a
tenant; inside it the event and its index copies (by run, type, source, type+source) are laid
out by :mod:`northstar_core.kernel.eventlog`, so a page costs one range query whatever the
length of the history.

Retention (operator configuration, :func:`spine_retention`): an event of a type with a rule
expires that many days after its ``timestamp`` — on all its items at once, deleted by the
backend's native TTL and hidden from every read from then on. The expiry is fixed when the event
is written: a later change of the rules applies to later events only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import msgspec

from northstar_core.clock import Clock, SystemClock, iso, parse_iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import NorthstarError, invalid_event
from northstar_core.identity import ID_PATTERN, IdentityMismatch, RequestContext
from northstar_core.kernel.buckets import DEFAULT_SHARDS, Scanned, bucket_of_ms, check_position, page_of_scan
from northstar_core.kernel.eventlog import MAX_EVENT_BYTES, EventIdTaken, EventLog, request_run_id
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.ids import UUIDv7Generator, uuid7_floor
from northstar_core.kernel.paging import Page
from northstar_core.kernel.retention import Retention
from northstar_core.kernel.sealing import DataKeys, Sealed, key_name
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import partition

KIND: Final = "event_spine"
DOMAIN: Final = "event_spine"
SOURCES: Final[tuple[str, ...]] = ("ui", "agent", "connector", "tool", "system")
# Event types only the server itself writes (a client may not forge a safety decision). Each
# name also reserves its dotted sub-types (``audit.identity_mismatch``): readers filter and
# trust events by these families, so a look-alike sub-type would be as good as a forgery.
RESERVED_TYPES: Final = frozenset({"audit", "safety", "budget", "strategy_lock"})
# The source only the server itself uses: a client's event never claims to be the system's.
SYSTEM_SOURCE: Final = "system"
# The one reserved type an agent may append itself (SPEC: agents emit audit events with
# source=agent): exactly this type, never a sub-type, only with source ``agent`` and an agent
# token, and stamped with the token's agent id. Server audit events always carry source
# ``system``, which no client can write, so readers tell the two apart by source.
AGENT_AUDIT_TYPE: Final = "audit"
AGENT_SOURCE: Final = "agent"
EVENT_TYPE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 100
_APPEND_ATTEMPTS: Final = 8

Source = Literal["ui", "agent", "connector", "tool", "system"]


# --- shapes ------------------------------------------------------------------------------------


class Causality(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=False):
    trace_id: str | None = None
    span_id: str | None = None


class EventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a caller may send. Identity fields, if sent, must equal the caller's identity."""

    event_type: str
    source: str
    payload: dict[str, Any] = {}
    run_id: str | None = None
    step_id: str | None = None
    parent_event_id: str | None = None
    causality: Causality | None = None
    # a retry with the same key returns the first event and writes nothing (same tenant/mode)
    idempotency_key: str | None = None
    # identity echoes (optional; checked against the context, never trusted)
    tenant_id: str | None = None
    mode: str | None = None
    user_id: str | None = None
    surface_id: str | None = None
    project_id: str | None = None


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """One spine event as stored and returned (SPEC §6)."""

    event_id: str
    tenant_id: str
    mode: str
    user_id: str | None
    surface_id: str | None
    project_id: str | None
    run_id: str
    step_id: str
    parent_event_id: str | None
    timestamp: str
    event_type: str
    source: str
    payload: dict[str, Any]
    route: str
    causality: Causality


def decode_event_in(raw: bytes | Mapping[str, Any] | EventIn) -> EventIn:
    """Validate a caller's event (bytes or mapping); 422 ``event_spine.invalid_event``."""
    if isinstance(raw, EventIn):
        return raw
    try:
        if isinstance(raw, bytes | bytearray | memoryview):
            return msgspec.json.decode(bytes(raw), type=EventIn)
        return msgspec.convert(dict(raw), type=EventIn)
    except msgspec.ValidationError as exc:
        raise invalid_event(DOMAIN, f"invalid event: {exc}", reason=str(exc)) from None
    except msgspec.DecodeError as exc:
        raise invalid_event(DOMAIN, "the body is not valid JSON", reason=str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise invalid_event(DOMAIN, "the body must be a JSON object", reason=str(exc)) from None


def is_reserved_type(event_type: str) -> bool:
    """Whether ``event_type`` is a server-only type: a reserved name or one of its sub-types."""
    return event_type in RESERVED_TYPES or event_type.split(".", 1)[0] in RESERVED_TYPES


def is_agent_audit(ctx: RequestContext, event_type: str, source: str) -> bool:
    """Whether a client's event is an agent's own audit event (see ``AGENT_AUDIT_TYPE``)."""
    return event_type == AGENT_AUDIT_TYPE and source == AGENT_SOURCE and ctx.is_agent


def _check_field_id(field: str, value: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise invalid_event(
            DOMAIN, f"'{field}' must match {ID_PATTERN.pattern}", field=field, value=str(value)[:200]
        )
    return value


def _check_event_id(field: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise invalid_event(
            DOMAIN, f"'{field}' must be an event id (UUID)", field=field, value=str(value)[:200]
        ) from None


# --- the service -------------------------------------------------------------------------------


class EventSpine:
    """The spine use-cases: append (client and internal), audit, replay by run, list.

    Implements :class:`northstar_core.ports.AuditSink`.
    """

    kind: Final = KIND

    def __init__(
        self,
        registry: RoutingRegistry,
        cursors: CursorCodec,
        *,
        clock: Clock | None = None,
        ids: UUIDv7Generator | None = None,
        retention: Retention | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock: Clock = clock or SystemClock()
        self.ids = ids or UUIDv7Generator()
        self.retention = retention or spine_retention({})
        # With data keys, a payload is stored sealed under its writer's key (the tenant's for
        # an event without a user), so erasing that user makes it unreadable everywhere.
        self.keys = keys

    def expires_at(self, event: Event) -> float | None:
        """When ``event`` expires under this spine's retention (``None``: never): its type's
        rule applied to its ``timestamp``. What an event written now gets; events written
        before keep the expiry they were written with."""
        return self.retention.expires_at(event.event_type, parse_iso(event.timestamp))

    def _expiry(self, data: bytes) -> float | None:
        head = _TYPE_TIME_DECODER.decode(data)
        return self.retention.expires_at(head.event_type, parse_iso(head.timestamp))

    async def _log(self, ctx: RequestContext) -> tuple[EventLog, str]:
        """The tenant's log and the backend serving it (an event's ``route``)."""
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        shards = store.route.options.shards or DEFAULT_SHARDS
        return EventLog(store, partition(ctx, "spine"), DOMAIN, shards=shards), store.backend

    def new_event_id(self) -> str:
        """A fresh event id (UUIDv7) for :meth:`record`'s ``event_id``: a caller that must name
        an event before it is written (to publish it elsewhere at the same time) takes it here,
        so the spine's ids stay time-ordered and unique."""
        return self.ids.next(self.clock.now())

    # --- writing -------------------------------------------------------------------------------

    async def append(
        self, ctx: RequestContext, event_in: EventIn | Mapping[str, Any] | bytes, *, client: bool = False
    ) -> Event:
        """Validate and durably append one event; returns it as stored.

        ``client=True`` (the HTTP route) refuses the server-only event types
        (``audit``, ``safety``, ``budget``, ``strategy_lock`` and their ``<type>.…`` sub-types)
        and the ``system`` source unless the caller is system — except that an agent token may
        append plain ``audit`` with source ``agent`` (its ``payload.agent_id`` is set to the
        token's agent id). Identity comes from ``ctx``; identity fields in the body must match
        it (403 + audit).
        """
        if client:
            ctx.require_role("member")
        body = decode_event_in(event_in)
        if not EVENT_TYPE_PATTERN.fullmatch(body.event_type):
            raise invalid_event(
                DOMAIN,
                f"'event_type' must match {EVENT_TYPE_PATTERN.pattern}",
                field="event_type",
                value=body.event_type[:200],
            )
        if body.source not in SOURCES:
            raise invalid_event(
                DOMAIN, f"'source' must be one of {list(SOURCES)}", field="source", value=body.source[:200]
            )
        agent_audit = client and not ctx.is_system and is_agent_audit(ctx, body.event_type, body.source)
        if client and not ctx.is_system:
            if is_reserved_type(body.event_type) and not agent_audit:
                raise NorthstarError(
                    f"{DOMAIN}.reserved_event_type",
                    f"event type '{body.event_type}' is written by the server only",
                    403,
                    details={
                        "field": "event_type",
                        "event_type": body.event_type,
                        "reserved": sorted(RESERVED_TYPES),
                        "reserved_prefixes": sorted(f"{name}." for name in RESERVED_TYPES),
                    },
                )
            if body.source == SYSTEM_SOURCE:
                raise NorthstarError(
                    f"{DOMAIN}.reserved_event_type",
                    f"source '{SYSTEM_SOURCE}' is written by the server only",
                    403,
                    details={"field": "source", "source": body.source},
                )
            if agent_audit:
                presented_agent = body.payload.get("agent_id")
                if presented_agent is not None and presented_agent != ctx.agent_id:
                    where = {"field": "agent_id", "where": "event_spine.append"}
                    await self.audit(ctx, "identity_mismatch", where)
                    raise IdentityMismatch("agent_id", str(ctx.agent_id), str(presented_agent))
                body = msgspec.structs.replace(body, payload={**body.payload, "agent_id": ctx.agent_id})
        for field, authoritative in (
            ("tenant_id", ctx.tenant_id),
            ("mode", ctx.mode),
            ("user_id", ctx.user_id),
            ("surface_id", ctx.surface_id),
            ("project_id", ctx.project_id),
        ):
            presented = getattr(body, field)
            if presented is not None and presented != authoritative:
                mismatch = IdentityMismatch(field, str(authoritative), str(presented))
                await self.audit(ctx, "identity_mismatch", {"field": field, "where": "event_spine.append"})
                raise mismatch
        run_id = body.run_id or ctx.run_id
        step_id = body.step_id or ctx.step_id
        if run_id is None:
            raise invalid_event(DOMAIN, "'run_id' is required (body or X-Run-Id)", field="run_id")
        if step_id is None:
            raise invalid_event(DOMAIN, "'step_id' is required (body or X-Step-Id)", field="step_id")
        _check_field_id("run_id", run_id)
        _check_field_id("step_id", step_id)
        parent = _check_event_id("parent_event_id", body.parent_event_id) if body.parent_event_id else None
        causality = body.causality or Causality(trace_id=ctx.trace_id)
        if causality.trace_id is None and ctx.trace_id is not None:
            # a caller naming only its span still belongs to the request's trace
            causality = Causality(trace_id=ctx.trace_id, span_id=causality.span_id)
        if causality.trace_id is not None:
            _check_field_id("causality.trace_id", causality.trace_id)
        if causality.span_id is not None:
            _check_field_id("causality.span_id", causality.span_id)
        if body.idempotency_key is not None:
            _check_field_id("idempotency_key", body.idempotency_key)
        return await self._write(
            ctx,
            event_type=body.event_type,
            source=body.source,
            payload=body.payload,
            run_id=run_id,
            step_id=step_id,
            parent_event_id=parent,
            causality=causality,
            idempotency_key=body.idempotency_key,
        )

    async def record(
        self,
        ctx: RequestContext,
        event_type: str,
        payload: dict[str, Any],
        *,
        source: str = "system",
        parent_event_id: str | None = None,
        idempotency_key: str | None = None,
        request_fingerprint: str | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Append a server-originated event (safety, budget, audit…); raises if not recorded.

        ``run_id``/``step_id`` come from the context; without a run the request id stands in
        (``request:<hour>:<id>``) so every event still has provenance. With ``idempotency_key`` a
        repeat returns the first event (see :meth:`_write`); ``request_fingerprint`` is then
        what identifies "the same request" when the payload holds server-filled values (times).
        ``event_id`` (from :meth:`new_event_id`) is the id the event gets; 503
        ``event_spine.contention`` if it is taken.
        """
        run_id = ctx.run_id
        if run_id is None:
            # names its first bucket, so the request's events need no run registry entry
            bucket = bucket_of_ms(int(self.clock.now() * 1000))
            run_id = request_run_id(bucket, ctx.request_id or str(uuid.uuid4()))
            if not ID_PATTERN.fullmatch(run_id):
                run_id = request_run_id(bucket, str(uuid.uuid4()))
        step_id = ctx.step_id or event_type
        return await self._write(
            ctx,
            event_type=event_type,
            source=source,
            payload=payload,
            run_id=run_id,
            step_id=step_id,
            parent_event_id=parent_event_id,
            causality=Causality(trace_id=ctx.trace_id),
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            event_id=_check_event_id("event_id", event_id) if event_id is not None else None,
        )

    async def audit(self, ctx: RequestContext, action: str, payload: dict[str, Any]) -> None:
        """:class:`AuditSink`: durably record an ``audit`` event (raises if it cannot)."""
        await self.record(ctx, "audit", {"action": action, **payload})

    async def _write(
        self,
        ctx: RequestContext,
        *,
        event_type: str,
        source: str,
        payload: dict[str, Any],
        run_id: str,
        step_id: str,
        parent_event_id: str | None,
        causality: Causality,
        idempotency_key: str | None = None,
        request_fingerprint: str | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Append atomically: the event, its index items and (with a key) its idempotency record.

        The idempotency record commits in the same batch as the event, so a retry either finds
        it — and gets the first event back, writing nothing — or is the one append that writes
        it; the same key with a different event is 422.
        """
        log, backend = await self._log(ctx)
        route = f"{KIND}:{backend}"
        keys, name = self.keys, key_name(ctx.user_id or None)
        data_key = await keys.key(ctx.tenant_id, name, create=True) if keys is not None else None

        def stored_form(event: Event, payload: dict[str, Any]) -> bytes:
            if keys is None or data_key is None:
                return msgspec.json.encode(msgspec.structs.replace(event, payload=payload))
            sealed = keys.seal(data_key, name, payload, _seal_context(event))
            return msgspec.json.encode(_Stored(**_fields(event), payload={}, sealed=sealed))

        fp = request_fingerprint or fingerprint(
            [event_type, source, payload, run_id, step_id, parent_event_id, msgspec.to_builtins(causality)]
        )
        # A caller-made id is already known elsewhere: it is written once or not at all.
        attempts = 1 if event_id is not None else _APPEND_ATTEMPTS
        for _ in range(attempts):
            now = self.clock.now()
            this_id = event_id or self.ids.next(now)
            event = Event(
                event_id=this_id,
                tenant_id=ctx.tenant_id,
                mode=ctx.mode,
                user_id=ctx.user_id or None,
                surface_id=ctx.surface_id,
                project_id=ctx.project_id,
                run_id=run_id,
                step_id=step_id,
                parent_event_id=parent_event_id,
                timestamp=iso(now),
                event_type=event_type,
                source=source,
                payload=payload,
                route=route,
                causality=causality,
            )
            try:
                data = stored_form(event, payload)
            except (TypeError, msgspec.EncodeError) as exc:
                raise invalid_event(DOMAIN, "the payload is not JSON-serialisable", reason=str(exc)) from None
            if len(data) > MAX_EVENT_BYTES:
                raise NorthstarError(
                    f"{DOMAIN}.event_too_large",
                    f"the event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}",
                    413,
                    details={"bytes": len(data), "limit": MAX_EVENT_BYTES},
                )
            head = msgspec.json.encode(msgspec.structs.replace(event, payload={}))

            def rebuild(claimed: bytes, payload: dict[str, Any] = payload) -> bytes:
                # the claimed event (another attempt's id, run, time and identity) with this
                # attempt's payload, which the fingerprint vouches is the same request's
                return stored_form(_plain(_decode(claimed)), payload)

            try:
                stored = await log.append(
                    this_id,
                    data,
                    run_id=run_id,
                    now=now,
                    idempotency_key=idempotency_key,
                    payload_fingerprint=fp,
                    head=head,
                    rebuild=rebuild,
                    expiry=self._expiry,
                )
            except EventIdTaken:
                # an id collision with another process (vanishingly rare): take a fresh id
                continue
            return event if stored == data else await self._opened(_decode(stored))
        raise NorthstarError(
            f"{DOMAIN}.contention", "could not allocate an event id; retry", 503, headers={"Retry-After": "1"}
        )

    # --- reading -------------------------------------------------------------------------------

    @staticmethod
    def _limit(limit: int | None) -> int:
        if limit is None:
            return DEFAULT_PAGE
        if limit < 1 or limit > MAX_PAGE:
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                f"'limit' must be between 1 and {MAX_PAGE}",
                422,
                details={"field": "limit", "value": limit},
            )
        return limit

    def _cursor_position(self, ctx: RequestContext, stream: str, cursor: str | None) -> str | None:
        if not cursor:
            return None
        position = self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, stream, cursor)
        return check_position(DOMAIN, position, cursor)

    async def event_of(self, data: bytes) -> Event:
        """The event a stored spine item holds, as readers get it (see :meth:`_opened`)."""
        return await self._opened(_decode(data))

    async def _opened(self, stored: _Stored) -> Event:
        """The event as readers get it: its payload opened if it was sealed (``{}`` once its
        data key is shredded, or where no data keys are configured to open it)."""
        if stored.sealed is None:
            return _plain(stored)
        payload = None
        if self.keys is not None:
            payload = await self.keys.open(stored.tenant_id, stored.sealed, _seal_context(stored))
        return _plain(stored, payload if isinstance(payload, dict) else {})

    async def _page(
        self, ctx: RequestContext, stream: str, n: int, scanned: Scanned, resume: str | None
    ) -> Page[Event]:
        page = page_of_scan(
            scanned,
            n,
            lambda position: self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, stream, position),
            lambda item: _decode(item.value),
            resume_from=resume,
        )
        items = [await self._opened(stored) for stored in page.items]
        return Page(items=items, next_cursor=page.next_cursor, has_more=page.has_more)

    async def replay(
        self, ctx: RequestContext, run_id: str | None, *, cursor: str | None = None, limit: int | None = None
    ) -> Page[Event]:
        """The run's events in append order, strictly after ``cursor``."""
        if not run_id:
            raise NorthstarError(
                f"{DOMAIN}.invalid_request", "'run_id' is required", 422, details={"field": "run_id"}
            )
        _check_field_id("run_id", run_id)
        n = self._limit(limit)
        stream = f"run:{run_id}"
        after = self._cursor_position(ctx, stream, cursor)
        log, _ = await self._log(ctx)
        scanned = await log.read_run(run_id, after=after, limit=n + 1, now=self.clock.now())
        return await self._page(ctx, stream, n, scanned, after)

    async def list(
        self,
        ctx: RequestContext,
        *,
        event_type: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[Event]:
        """Events filtered by type/source and time (``since`` inclusive, ``until`` exclusive),
        oldest first. ``since``/``until`` are RFC 3339 timestamps. A filtered page may hold
        fewer events than ``limit`` while ``has_more`` is true: it then continues where the
        scan stopped (a page reads a bounded number of hours of the log). Events past their
        retention are not returned; hours whose events have all expired are not read."""
        if event_type is not None and not EVENT_TYPE_PATTERN.fullmatch(event_type):
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                "invalid 'event_type' filter",
                422,
                details={"field": "event_type", "value": event_type[:200]},
            )
        if source is not None and source not in SOURCES:
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                f"'source' must be one of {list(SOURCES)}",
                422,
                details={"field": "source", "value": source[:200]},
            )
        n = self._limit(limit)
        since_ms = _parse_time("since", since)
        until_ms = _parse_time("until", until)
        # The smallest id of a millisecond is below every event of it: as an exclusive lower
        # bound it includes ``since``'s millisecond, as an upper bound it excludes ``until``'s.
        floor = uuid7_floor(since_ms) if since_ms is not None else None
        ceiling = uuid7_floor(until_ms) if until_ms is not None else None
        stream = f"list:{event_type or ''}:{source or ''}:{since_ms or ''}:{until_ms or ''}"
        position = self._cursor_position(ctx, stream, cursor)
        after = floor if position is None else (position if floor is None else max(floor, position))
        match = _filter(event_type or None, source or None)
        log, _ = await self._log(ctx)
        scanned = await log.read_time(
            after=after, before=ceiling, limit=n + 1, now=self.clock.now(), match=match
        )
        return await self._page(ctx, stream, n, scanned, position)

    async def get(self, ctx: RequestContext, event_id: str) -> Event | None:
        log, _ = await self._log(ctx)
        data = await log.get(_check_event_id("event_id", event_id))
        return await self._opened(_decode(data)) if data is not None else None


def spine_retention(days: Mapping[str, int]) -> Retention:
    """The spine's retention rules from ``days`` by event type (see
    :mod:`~northstar_core.kernel.retention`: an exact type, a ``<type>.*`` family or ``*``,
    each 1 to 36500 days); ``ValueError`` naming the offending key."""
    return Retention(days, type_pattern=EVENT_TYPE_PATTERN)


class _TypeTime(msgspec.Struct):
    event_type: str
    timestamp: str


_TYPE_TIME_DECODER: Final = msgspec.json.Decoder(_TypeTime)


class _Kind(msgspec.Struct):
    event_type: str
    source: str


_KIND_DECODER: Final = msgspec.json.Decoder(_Kind)


def _filter(event_type: str | None, source: str | None) -> Callable[[bytes], bool] | None:
    """Whether a stored event passes the type/source filter (decoding only those fields)."""
    if event_type is None and source is None:
        return None

    def match(data: bytes) -> bool:
        kind = _KIND_DECODER.decode(data)
        return (event_type is None or kind.event_type == event_type) and (
            source is None or kind.source == source
        )

    return match


def _parse_time(field: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(parse_iso(value) * 1000)
    except (ValueError, OverflowError):
        raise NorthstarError(
            f"{DOMAIN}.invalid_request",
            f"'{field}' must be an RFC 3339 timestamp",
            422,
            details={"field": field, "value": value[:200]},
        ) from None


class _Stored(Event, frozen=True, kw_only=True, omit_defaults=True):
    """An event as stored: with data keys, its payload sealed (``payload`` then ``{}``)."""

    sealed: Sealed | None = None


_EVENT_FIELDS: Final = tuple(f for f in Event.__struct_fields__ if f != "payload")


def _fields(event: Event) -> dict[str, Any]:
    return {f: getattr(event, f) for f in _EVENT_FIELDS}


def _plain(stored: Event, payload: dict[str, Any] | None = None) -> Event:
    return Event(**_fields(stored), payload=stored.payload if payload is None else payload)


def _seal_context(event: Event) -> str:
    # a sealed payload opens only as the payload of this event of this tenant
    return f"event_spine|{event.tenant_id}|{event.event_id}"


def _decode(data: bytes) -> _Stored:
    return msgspec.json.decode(data, type=_Stored)


def event_to_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


__all__ = [
    "Causality",
    "Event",
    "EventIn",
    "EventSpine",
    "decode_event_in",
    "event_to_dict",
    "is_reserved_type",
    "spine_retention",
]
