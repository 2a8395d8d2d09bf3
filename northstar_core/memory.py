"""Session memory: per-session key/value state with an optional TTL (resource kind ``memory_store``).

Scope: tenant / mode / project / user / session — all of it is in the partition name, so a
read in one scope cannot address another's keys. Values are durable unless a TTL is given,
either per write or as the route's default (``route.options.default_ttl_seconds``); this is
the one kind where a TTL may be configured (SPEC §2.1).

Guarantee: a value past its expiry is never returned, whatever the backend's deletion lag —
the backend hides items by its own clock and this service hides them again by the core
:class:`~northstar_core.clock.Clock`, so expiry is exactly as controllable as that clock.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_TTL_SECONDS, check_float, json_bytes, out_of_range
from northstar_core.clock import Clock, iso
from northstar_core.errors import not_found, route_option_invalid, value_too_large, version_conflict
from northstar_core.identity import RequestContext
from northstar_core.kernel.records import MAX_RECORD_BYTES, Item, VersionedRecords, record_key
from northstar_core.routing import KindStore, RoutingRegistry
from northstar_core.scope import check_id, partition, project_segment, subject_segment

KIND: Final = "memory_store"
DOMAIN: Final = "memory"
MAX_KEYS_PER_SESSION: Final = 1000
_VALUE_LIMIT: Final = MAX_RECORD_BYTES - 4096  # room for the envelope fields around the value


class MemoryValue(msgspec.Struct, kw_only=True):
    """One session-memory value as stored and as returned."""

    session_id: str
    key: str
    value: Any
    version: int = 1
    ttl_seconds: float | None = None
    expires_at: str | None = None
    updated_at: str
    tenant_id: str
    mode: str
    project_id: str | None = None
    user_id: str


class SessionMemory:
    """get / set / delete of session values; see the module doc for the guarantees."""

    def __init__(self, registry: RoutingRegistry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock

    async def _records(self, ctx: RequestContext, session_id: str) -> tuple[KindStore, VersionedRecords]:
        check_id(DOMAIN, "session_id", session_id)
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        user = subject_segment(ctx.user_id)
        part = partition(ctx, "memory", project_segment(ctx), user, session_id)
        return store, VersionedRecords(store, part, DOMAIN)

    def _live(self, item: Item | None) -> Item | None:
        if item is None or (item.expires_at is not None and item.expires_at <= self.clock.now()):
            return None
        return item

    @staticmethod
    def _decode(item: Item) -> MemoryValue:
        out = msgspec.json.decode(item.value, type=MemoryValue)
        out.version = item.version
        return out

    async def set(
        self,
        ctx: RequestContext,
        session_id: str,
        key: str,
        value: Any,
        *,
        ttl_seconds: float | None = None,
    ) -> MemoryValue:
        """Store ``value`` under ``key`` (last writer wins, versions never lost).

        ``ttl_seconds`` overrides the route's default TTL; without either the value is durable.
        """
        ctx.require_role("member")
        check_id(DOMAIN, "key", key)
        store, records = await self._records(ctx, session_id)
        if ttl_seconds is None:
            default = store.route.options.default_ttl_seconds
            if default is not None:
                if (
                    isinstance(default, bool)
                    or not isinstance(default, int | float)
                    or not 0 < default <= MAX_TTL_SECONDS
                ):
                    raise route_option_invalid(DOMAIN, KIND, "default_ttl_seconds", default)
                ttl_seconds = float(default)
        if ttl_seconds is not None:
            ttl_seconds = check_float(DOMAIN, "ttl_seconds", ttl_seconds, lo=0.0, hi=MAX_TTL_SECONDS)
            if ttl_seconds <= 0:  # an expiry now or in the past would hide the value at once
                raise out_of_range(DOMAIN, "ttl_seconds", ttl_seconds, 0.0, MAX_TTL_SECONDS)
        encoded_value = json_bytes(DOMAIN, value)
        if len(encoded_value) > _VALUE_LIMIT:
            raise value_too_large(
                DOMAIN,
                f"the value is {len(encoded_value)} bytes; the limit is {_VALUE_LIMIT}",
                size=len(encoded_value),
                limit=_VALUE_LIMIT,
            )
        now = self.clock.now()
        expires_at = now + ttl_seconds if ttl_seconds is not None else None
        record = MemoryValue(
            session_id=session_id,
            key=key,
            value=msgspec.Raw(encoded_value),
            ttl_seconds=ttl_seconds,
            expires_at=iso(expires_at) if expires_at is not None else None,
            updated_at=iso(now),
            tenant_id=ctx.tenant_id,
            mode=ctx.mode,
            project_id=ctx.project_id,
            user_id=ctx.user_id,
        )
        record.version = await records.set(key, msgspec.json.encode(record), expires_at=expires_at)
        record.value = value
        return record

    async def get(self, ctx: RequestContext, session_id: str, key: str) -> MemoryValue:
        """The live value of ``key``, or 404 ``memory.not_found`` (also when expired)."""
        check_id(DOMAIN, "key", key)
        _, records = await self._records(ctx, session_id)
        item = self._live(await records.get(key))
        if item is None:
            raise not_found(DOMAIN, f"memory key '{key}'", session_id=session_id, key=key)
        return self._decode(item)

    async def get_all(self, ctx: RequestContext, session_id: str) -> list[MemoryValue]:
        """Every live value of the session, ordered by key (at most ``MAX_KEYS_PER_SESSION``)."""
        _, records = await self._records(ctx, session_id)
        out: list[MemoryValue] = []
        after: str | None = None
        while len(out) < MAX_KEYS_PER_SESSION:
            page = await records.list(after_key=after, limit=200)
            out.extend(self._decode(item) for item in page if self._live(item) is not None)
            if len(page) < 200:
                break
            after = record_key(page[-1])
        return out[:MAX_KEYS_PER_SESSION]

    async def delete(self, ctx: RequestContext, session_id: str, key: str | None = None) -> int:
        """Delete one key, or every key of the session when ``key`` is None.

        Returns how many live values were deleted; deleting a key that is absent or expired
        is 404 ``memory.not_found``.
        """
        ctx.require_role("member")
        if key is not None:
            check_id(DOMAIN, "key", key)
        _, records = await self._records(ctx, session_id)
        if key is not None:
            item = self._live(await records.get(key))
            if item is None:
                raise not_found(DOMAIN, f"memory key '{key}'", session_id=session_id, key=key)
            # Conditional on the version read: a concurrent set wins over a delete that did not see it.
            if not await records.discard(key, item.version):
                raise version_conflict(DOMAIN, (await records.get(key) or item).version, item.version)
            return 1
        deleted = 0
        while True:
            page = await records.list(limit=100)
            if not page:
                return deleted
            for item in page:
                if await records.discard(record_key(item), item.version) and self._live(item) is not None:
                    deleted += 1
