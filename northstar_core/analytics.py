"""UX telemetry: page views, clicks and custom events (resource kind ``analytics_store``).

Every accepted event is appended to the event spine first (``event_type=analytics``, the one
source of truth, SPEC §2.7) and then stored in the analytics store under the spine's event id,
so the analytics view never holds an event the spine lacks: it expires with its spine event
(the ``analytics`` type's retention, :meth:`EventSpine.expires_at`). The shape is validated before
anything is written (422 ``analytics.invalid_event``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from northstar_core.bounds import check_limit
from northstar_core.clock import Clock, iso, parse_iso
from northstar_core.cursors import CursorCodec
from northstar_core.errors import invalid_event
from northstar_core.identity import RequestContext
from northstar_core.kernel.buckets import DEFAULT_SHARDS, BucketedLog, check_position, page_of_scan
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.paging import Page
from northstar_core.kernel.sealing import Sealed, key_name
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import partition
from northstar_core.spine import EventSpine

KIND: Final = "analytics_store"
ENTRY_PREFIX: Final = "e#"
DOMAIN: Final = "analytics"
MAX_PROPERTIES_BYTES: Final = 16 * 1024

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$(?!\n)")]
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,200}$(?!\n)")]


class AnalyticsEventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A UX event: ``page_view`` needs ``page``, ``click`` needs ``target``, ``custom`` a ``name``."""

    kind: Literal["page_view", "click", "custom"]
    name: Name | None = None
    page: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None
    target: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None
    session_id: Id | None = None
    occurred_at: str | None = None
    properties: dict[str, Any] = {}
    # a retry with the same key returns the first event and writes nothing
    idempotency_key: Id | None = None


class AnalyticsEvent(msgspec.Struct, kw_only=True):
    """An accepted event as stored; ``event_id`` is its spine event's id."""

    event_id: str
    kind: str
    name: str
    page: str | None = None
    target: str | None = None
    session_id: str | None = None
    occurred_at: str
    received_at: str
    properties: dict[str, Any]
    tenant_id: str
    mode: str
    user_id: str
    surface_id: str | None = None
    project_id: str | None = None
    app_id: str | None = None
    source: str


class _StoredAnalytics(AnalyticsEvent, kw_only=True, omit_defaults=True):
    """An event as stored: with data keys, its personal fields sealed (then emptied)."""

    sealed: Sealed | None = None


# What a user's analytics event says about them: sealed under their data key.
_PERSONAL: Final = ("page", "target", "session_id", "properties")
_EMPTY: Final[dict[str, Any]] = {"page": None, "target": None, "session_id": None, "properties": {}}


def _seal_context(event: AnalyticsEvent) -> str:
    return f"analytics|{event.tenant_id}|{event.event_id}"


def decode_event(raw: bytes | Mapping[str, Any] | AnalyticsEventIn) -> AnalyticsEventIn:
    """Validate an event's shape (bytes, mapping or struct); 422 ``analytics.invalid_event``."""
    try:
        if isinstance(raw, AnalyticsEventIn):
            raw = msgspec.json.encode(raw)  # constructors skip constraints; re-check as the wire
        if isinstance(raw, bytes | bytearray | memoryview):
            body = msgspec.json.decode(bytes(raw), type=AnalyticsEventIn)
        else:
            body = msgspec.convert(dict(raw), type=AnalyticsEventIn)
    except msgspec.ValidationError as exc:
        raise invalid_event(DOMAIN, f"invalid analytics event: {exc}", reason=str(exc)) from None
    except msgspec.DecodeError as exc:
        raise invalid_event(DOMAIN, "the body is not valid JSON", reason=str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise invalid_event(DOMAIN, "the body must be a JSON object", reason=str(exc)) from None
    if body.kind == "page_view" and body.page is None:
        raise invalid_event(DOMAIN, "a page_view needs 'page'", field="page")
    if body.kind == "click" and body.target is None:
        raise invalid_event(DOMAIN, "a click needs 'target'", field="target")
    if body.kind == "custom" and body.name is None:
        raise invalid_event(DOMAIN, "a custom event needs 'name'", field="name")
    if body.occurred_at is not None:
        try:
            parse_iso(body.occurred_at)
        except (ValueError, TypeError):
            raise invalid_event(
                DOMAIN, "'occurred_at' must be an RFC 3339 timestamp", field="occurred_at"
            ) from None
    size = len(msgspec.json.encode(body.properties))
    if size > MAX_PROPERTIES_BYTES:
        raise invalid_event(
            DOMAIN,
            f"'properties' is {size} bytes; the limit is {MAX_PROPERTIES_BYTES}",
            field="properties",
            size=size,
            limit=MAX_PROPERTIES_BYTES,
        )
    return body


class AnalyticsService:
    """Ingest (spine first, then the analytics view) and read back UX events."""

    def __init__(
        self, registry: RoutingRegistry, cursors: CursorCodec, clock: Clock, spine: EventSpine
    ) -> None:
        self.registry = registry
        self.cursors = cursors
        self.clock = clock
        self.spine = spine

    async def _entries(self, ctx: RequestContext) -> BucketedLog:
        """The tenant's events: one item ``e#<event id>`` each, in the hour of the id and a
        shard of it (:mod:`~northstar_core.kernel.buckets`), so a tenant's analytics spread
        over partitions that each hold one hour of one shard."""
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        shards = store.route.options.shards or DEFAULT_SHARDS
        return BucketedLog(store, partition(ctx, "analytics"), domain=DOMAIN, shards=shards)

    async def record(
        self, ctx: RequestContext, event: bytes | Mapping[str, Any] | AnalyticsEventIn
    ) -> AnalyticsEvent:
        """Validate, append to the spine, then store; returns the stored event (member or above)."""
        ctx.require_role("member")
        body = decode_event(event)
        entries = await self._entries(ctx)  # an unroutable store is 503 before the spine write
        now = iso(self.clock.now())
        source = "agent" if ctx.is_agent else "ui"
        fields: dict[str, Any] = {
            "kind": body.kind,
            "name": body.name or body.kind,
            "page": body.page,
            "target": body.target,
            "session_id": body.session_id,
            "occurred_at": body.occurred_at or now,
            "properties": body.properties,
        }
        spine_event = await self.spine.record(
            ctx,
            "analytics",
            fields,
            source=source,
            idempotency_key=body.idempotency_key,
            # the client's event, not ``fields``: occurred_at defaults to the time of receipt
            request_fingerprint=fingerprint(msgspec.to_builtins(body)),
        )
        stored = AnalyticsEvent(
            event_id=spine_event.event_id,
            received_at=spine_event.timestamp,
            tenant_id=ctx.tenant_id,
            mode=ctx.mode,
            user_id=ctx.user_id,
            surface_id=ctx.surface_id,
            project_id=ctx.project_id,
            app_id=ctx.app_id,
            source=source,
            **fields,
        )
        existing = await entries.create(
            ENTRY_PREFIX,
            stored.event_id,
            stored.event_id,
            await self._stored_form(ctx, stored),
            expires_at=self.spine.expires_at(spine_event),
        )
        if existing is not None:
            # A retry (same idempotency key) got the first spine event back, and that event was
            # already stored: answer with what is stored rather than writing it again.
            return await self._opened(msgspec.json.decode(existing, type=_StoredAnalytics))
        return stored

    async def _stored_form(self, ctx: RequestContext, event: AnalyticsEvent) -> bytes:
        keys = self.spine.keys
        if keys is None:
            return msgspec.json.encode(event)
        name = key_name(ctx.user_id or None)
        key = await keys.key(ctx.tenant_id, name, create=True)
        if key is None:  # never: a key is made when missing
            return msgspec.json.encode(event)
        personal = {field: getattr(event, field) for field in _PERSONAL}
        fields = {f: getattr(event, f) for f in AnalyticsEvent.__struct_fields__}
        sealed = keys.seal(key, name, personal, _seal_context(event))
        return msgspec.json.encode(_StoredAnalytics(**{**fields, **_EMPTY}, sealed=sealed))

    async def event_of(self, data: bytes) -> AnalyticsEvent:
        """The event a stored analytics item holds, as readers get it."""
        return await self._opened(msgspec.json.decode(data, type=_StoredAnalytics))

    async def _opened(self, stored: _StoredAnalytics) -> AnalyticsEvent:
        fields = {f: getattr(stored, f) for f in AnalyticsEvent.__struct_fields__}
        if stored.sealed is not None:
            keys = self.spine.keys
            personal = None
            if keys is not None:
                personal = await keys.open(stored.tenant_id, stored.sealed, _seal_context(stored))
            if isinstance(personal, dict):
                fields.update({k: personal.get(k) for k in _PERSONAL})
                if not isinstance(fields["properties"], dict):
                    fields["properties"] = {}
        return AnalyticsEvent(**fields)

    async def list(
        self, ctx: RequestContext, *, cursor: str | None = None, limit: int = 100
    ) -> Page[AnalyticsEvent]:
        """The tenant's stored events in arrival order, a page at a time."""
        check_limit(DOMAIN, limit)
        after = (
            self.cursors.decode(DOMAIN, ctx.tenant_id, ctx.mode, "events", cursor) if cursor else None
        )
        if after is not None:
            check_position(DOMAIN, after, cursor or "")
        entries = await self._entries(ctx)
        scanned = await entries.scan(
            ENTRY_PREFIX, after=after, before=None, limit=limit + 1, now=self.clock.now()
        )
        # a poller resumes after the last event it saw, also at the end
        page = page_of_scan(
            scanned,
            limit,
            lambda position: self.cursors.encode(DOMAIN, ctx.tenant_id, ctx.mode, "events", position),
            lambda item: msgspec.json.decode(item.value, type=_StoredAnalytics),
            resume_from=after,
        )
        items = [await self._opened(stored) for stored in page.items]
        return Page(items=items, next_cursor=page.next_cursor, has_more=page.has_more)

