"""One user's data in a tenant: exported for them, or erased.

:meth:`UserData.export` gives, as JSON lines, everything the deployment holds of ``user_id``
of ``tenant_id`` in every mode: their notes, session memory values, ``/actions/execute``
records, the chat messages they wrote, the spine events written in their requests and their
analytics events (sealed content opened). Spine and analytics events are found by scanning the
tenant's logs, so an export reads the tenant's whole history: the operator's command exports any
user, and a user may export their own data (:meth:`UserData.export_own`, ``GET /users/me/data``)
at most once per ``export_interval_seconds``.

:meth:`UserData.erase`, for ``user_id`` of ``tenant_id``, in every mode:

* their data key is shredded (:mod:`northstar_core.kernel.sealing`): the payloads of the spine
  events they wrote and the personal fields of their analytics events become unreadable for
  good, in every copy — the events themselves stay (ids, types, times, runs), as an append-only
  log must;
* their notes, their session memory and their ``/actions/execute`` idempotency records are
  deleted;
* in the chat threads they posted to, the content of each message they wrote is removed (the
  message stays, with its id, number and time, so a thread's numbering and every cursor held on
  it stay valid) and the idempotency records of their posts, which hold copies of the answers,
  are deleted; their list of threads is deleted.

Run again, it finds nothing left to do. The system operator only; content sealing must be
configured (``[data_keys]``), else the spine could not be erased and nothing is done (409
``user_data.keys_not_configured``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import msgspec

from northstar_core.analytics import ENTRY_PREFIX as ANALYTICS_PREFIX
from northstar_core.analytics import AnalyticsService
from northstar_core.clock import Clock, SystemClock
from northstar_core.errors import NorthstarError, invalid
from northstar_core.identity import MODES, TENANT_PATTERN, RequestContext
from northstar_core.kernel.archive import (
    delete_partition,
    items_under,
    partitions_where,
    rewrite_entries,
    values_of,
)
from northstar_core.kernel.eventlog import EVENT_PREFIX
from northstar_core.kernel.idempotency import IDEM_PREFIX
from northstar_core.kernel.sealing import DataKeys, key_name
from northstar_core.kernel.streams import SEQ_PREFIX
from northstar_core.kernel.write_once import WriteOnceEntries
from northstar_core.routing import KindStore, RoutingRegistry
from northstar_core.scope import subject_segment
from northstar_core.spine import EventSpine

DOMAIN: Final = "user_data"
EXPORT_KINDS: Final = (
    "notes_store", "memory_store", "budget_store", "chat_store", "event_spine", "analytics_store"
)
# where the per-user export allowance is kept
LIMIT_KIND: Final = "config_store"
MAX_SUBJECT_CHARS: Final = 1024
EXPORT_FORMAT: Final = "northstar.user_data"
_encoder = msgspec.json.Encoder()


def _line(value: Any) -> bytes:
    return _encoder.encode(value) + b"\n"


class UserErasureReport(msgspec.Struct, kw_only=True):
    tenant_id: str
    user_id: str
    data_key_shredded: bool
    notes: int
    memory_values: int
    action_records: int
    chat_messages_cleared: int
    chat_records_deleted: int
    # spine events of theirs written before content was sealed: their payloads stay readable
    spine_events_unsealed: int = 0


class UserData:
    """See module doc."""

    def __init__(
        self,
        registry: RoutingRegistry,
        keys: DataKeys | None,
        spine: EventSpine,
        analytics: AnalyticsService,
        *,
        clock: Clock | None = None,
        export_interval_seconds: int = 3600,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.spine = spine
        self.analytics = analytics
        self.clock: Clock = clock or SystemClock()
        self.export_interval_seconds = export_interval_seconds

    @staticmethod
    def _check(ctx: RequestContext, tenant_id: str, user_id: str) -> None:
        ctx.require_system()
        if not isinstance(tenant_id, str) or not TENANT_PATTERN.fullmatch(tenant_id):
            raise invalid(DOMAIN, f"'tenant_id' must match {TENANT_PATTERN.pattern}", field="tenant_id")
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_SUBJECT_CHARS:
            raise invalid(DOMAIN, "'user_id' must be a token subject", field="user_id")

    async def export(self, ctx: RequestContext, tenant_id: str, user_id: str) -> AsyncIterator[bytes]:
        """The user's data as JSON lines (see module doc): a ``header``, one line per record
        (``t``: ``note``, ``memory``, ``action_record``, ``chat_message``, ``event``,
        ``analytics``; each with its ``mode``), and an ``end`` with the count. Checks are made
        before the first line."""
        self._check(ctx, tenant_id, user_id)
        stores = {kind: await self.registry.store_for(kind, tenant_id) for kind in EXPORT_KINDS}
        return self._export_lines(tenant_id, user_id, stores)

    async def export_own(self, ctx: RequestContext) -> AsyncIterator[bytes]:
        """The caller's own data (the token's tenant and subject), as :meth:`export` gives it;
        at most once per ``export_interval_seconds`` per user (429
        ``user_data.export_rate_limited``, with the time it is allowed again), because an export
        reads the tenant's whole spine and analytics."""
        ctx.require_role("viewer")
        now = self.clock.now()
        store = await self.registry.store_for(LIMIT_KIND, ctx.tenant_id)
        claims = WriteOnceEntries(store, f"{ctx.tenant_id}|{ctx.mode}|user_exports")
        held = await claims.claim(
            subject_segment(ctx.user_id),
            _encoder.encode({"at": now}),
            expires_at=now + self.export_interval_seconds,
        )
        if held is not None:
            wait = max(1, math.ceil((held.expires_at or now) - now))
            raise NorthstarError(
                f"{DOMAIN}.export_rate_limited",
                f"your data was exported less than {self.export_interval_seconds} s ago; try again "
                f"in {wait} s",
                429,
                details={"retry_after_seconds": wait},
                headers={"Retry-After": str(wait)},
            )
        stores = {kind: await self.registry.store_for(kind, ctx.tenant_id) for kind in EXPORT_KINDS}
        return self._export_lines(ctx.tenant_id, ctx.user_id, stores)

    async def _export_lines(
        self, tenant_id: str, user_id: str, stores: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        segment = subject_segment(user_id)
        count = 0
        yield _line(
            {"t": "header", "format": EXPORT_FORMAT, "version": 1, "tenant_id": tenant_id, "user_id": user_id}
        )
        for mode in MODES:
            base = f"{tenant_id}|{mode}|"
            for t, kind, part in (
                ("note", "notes_store", f"{base}notes|{segment}"),
                ("action_record", "budget_store", f"{base}actions|{segment}"),
            ):
                for value in await values_of(stores[kind], part):
                    count += 1
                    yield _line({"t": t, "mode": mode, "record": msgspec.Raw(value)})
            async for partition, item in items_under(
                stores["memory_store"], f"{base}memory|", "", _memory_of(segment)
            ):
                count += 1
                session = partition.split("|")[5] if len(partition.split("|")) > 5 else None
                yield _line(
                    {"t": "memory", "mode": mode, "session_id": session, "record": msgspec.Raw(item.value)}
                )
            for thread_id in await _threads_of(stores["chat_store"], base, segment):
                for value in await values_of(stores["chat_store"], f"{base}thread|{thread_id}", SEQ_PREFIX):
                    if msgspec.json.decode(value, type=dict[str, Any]).get("user_id") == user_id:
                        count += 1
                        yield _line({"t": "chat_message", "mode": mode, "message": msgspec.Raw(value)})
            async for _, item in items_under(stores["event_spine"], f"{base}spine|", EVENT_PREFIX):
                event = await self.spine.event_of(item.value)
                if event.user_id == user_id:
                    count += 1
                    yield _line({"t": "event", "mode": mode, "event": event})
            async for _, item in items_under(
                stores["analytics_store"], f"{base}analytics|", ANALYTICS_PREFIX
            ):
                seen = await self.analytics.event_of(item.value)
                if seen.user_id == user_id:
                    count += 1
                    yield _line({"t": "analytics", "mode": mode, "event": seen})
        yield _line({"t": "end", "items": count})

    async def erase(
        self, ctx: RequestContext, tenant_id: str, user_id: str, *, confirm: str
    ) -> UserErasureReport:
        self._check(ctx, tenant_id, user_id)
        if confirm != user_id:
            raise invalid(DOMAIN, "'confirm' must repeat the user id", field="confirm")
        if self.keys is None:
            raise NorthstarError(
                f"{DOMAIN}.keys_not_configured",
                "content sealing is not configured ([data_keys]): the user's spine events could "
                "not be made unreadable, so nothing is erased",
                409,
            )
        segment = subject_segment(user_id)
        shredded = await self.keys.shred(tenant_id, key_name(user_id))
        report = UserErasureReport(
            tenant_id=tenant_id,
            user_id=user_id,
            data_key_shredded=shredded,
            notes=0,
            memory_values=0,
            action_records=0,
            chat_messages_cleared=0,
            chat_records_deleted=0,
        )
        notes = await self.registry.store_for("notes_store", tenant_id)
        memory = await self.registry.store_for("memory_store", tenant_id)
        actions = await self.registry.store_for("budget_store", tenant_id)
        chat = await self.registry.store_for("chat_store", tenant_id)
        spine = await self.registry.store_for("event_spine", tenant_id)
        for mode in MODES:
            base = f"{tenant_id}|{mode}|"
            report.notes += await delete_partition(notes, f"{base}notes|{segment}")
            report.action_records += await delete_partition(actions, f"{base}actions|{segment}")
            mine = await partitions_where(memory, f"{base}memory|", _memory_of(segment))
            for part in mine:
                report.memory_values += await delete_partition(memory, part)
            for thread_id in await _threads_of(chat, base, segment):
                part = f"{base}thread|{thread_id}"
                report.chat_messages_cleared += await rewrite_entries(
                    chat, part, SEQ_PREFIX, lambda value: _cleared(value, user_id)
                )
                report.chat_records_deleted += await delete_partition(
                    chat, part, IDEM_PREFIX, lambda value: _answered(value) == user_id
                )
            await delete_partition(chat, f"{base}chat_threads|{segment}")
            async for _, item in items_under(spine, f"{base}spine|", EVENT_PREFIX):
                stored = msgspec.json.decode(item.value, type=dict[str, Any])
                if stored.get("user_id") == user_id and "sealed" not in stored and stored.get("payload"):
                    report.spine_events_unsealed += 1
        return report


def _cleared(value: bytes, user_id: str) -> bytes | None:
    """A chat message of ``user_id`` without its content (``None``: not theirs, or cleared)."""
    message = msgspec.json.decode(value, type=dict[str, Any])
    if message.get("user_id") != user_id or message.get("content") is None:
        return None
    return msgspec.json.encode({**message, "content": None})


def _answered(value: bytes) -> str | None:
    """Whose post an idempotency record answers (the user of the message it holds)."""
    record = msgspec.json.decode(value, type=dict[str, Any])
    result = record.get("result")
    return result.get("user_id") if isinstance(result, dict) else None


def _memory_of(segment: str) -> Callable[[str], bool]:
    """Whether a memory partition (``<tenant>|<mode>|memory|<project>|<user>|<session>``) is
    the user's with this subject segment."""
    return lambda partition: partition.split("|")[4:5] == [segment]


async def _threads_of(chat: KindStore, base: str, segment: str) -> list[str]:
    """The threads the user posted to, from their thread list (``base``: tenant and mode)."""
    out = []
    for entry in await values_of(chat, f"{base}chat_threads|{segment}"):
        thread_id = msgspec.json.decode(entry, type=dict[str, Any]).get("thread_id")
        if isinstance(thread_id, str):
            out.append(thread_id)
    return out
