"""Strategy locks: an approved lock is what lets an action named by the strategy-lock policy run.

A lock is a record ``lock#<surface|*>#<action|*>#<lock_id>`` in the tenant's ``safety_policy``
partition of ``strategy_policy_store`` (so the locks of one scope are one key range), with a
pointer ``lkid#<lock_id>`` → that key. A lock starts ``pending_review``; it is approved once
``required_approvals`` distinct admins other than its requester approve, rejected by one
rejection; a change of scope or expiry sends it back to review. Every change is a
``strategy_lock`` event on the spine.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Literal

import msgspec

from northstar_core.bounds import check_expected_version
from northstar_core.clock import iso
from northstar_core.errors import NorthstarError, invalid, not_found, version_conflict
from northstar_core.identity import ROLE_RANK, RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.kernel.records import RecordChange, RecordListing, VersionedRecords
from northstar_core.safety.checks import check_name, convert, expiry
from northstar_core.safety.documents import PolicyDoc, PolicyDocuments, StrategyLockPolicy

KIND: Final = "strategy_policy_store"
DOMAIN: Final = "strategy_lock"
# The most locks of one scope a gate decision reads (newest first).
SCOPE_LOCKS: Final = 50

LockStatus = Literal["pending_review", "approved", "rejected"]


class Review(msgspec.Struct, kw_only=True):
    reviewer: str
    verdict: Literal["approve", "reject"]
    at: str
    note: str | None = None


class StrategyLock(msgspec.Struct, kw_only=True):
    lock_id: str
    surface_id: str | None
    action_name: str | None
    status: LockStatus
    expires_at: float | None
    created_by: str
    created_at: str
    required_approvals: int
    reviews: list[Review] = []
    note: str | None = None
    version: int = 1


class LockView(StrategyLock, kw_only=True):
    """A strategy lock as listed and served: the stored lock plus its ``state`` now
    (its status, or ``expired``)."""

    state: str


class LockIn(PolicyDoc):
    surface_id: str | None = None
    action_name: str | None = None
    expires_at: float | None = None
    ttl_seconds: float | None = None
    note: str | None = None


class LockPatch(PolicyDoc):
    expected_version: int | None = None
    surface_id: str | None = None
    action_name: str | None = None
    expires_at: float | None = None
    ttl_seconds: float | None = None
    note: str | None = None


def _scope_prefix(surface_id: str | None, action_name: str | None) -> str:
    return f"lock#{surface_id or '*'}#{action_name or '*'}#"


def _lock_key(surface_id: str | None, action_name: str | None, lock_id: str) -> str:
    return _scope_prefix(surface_id, action_name) + lock_id


def _pointer_key(lock_id: str) -> str:
    return f"lkid#{lock_id}"


def _lock(value: bytes, version: int) -> StrategyLock:
    lock = msgspec.json.decode(value, type=StrategyLock)
    lock.version = version
    return lock


def lock_state(lock: StrategyLock, now: float) -> str:
    if lock.expires_at is not None and lock.expires_at <= now:
        return "expired"
    return lock.status


class StrategyLocks(PolicyDocuments):
    """Strategy locks (see module doc); the policy documents come with it."""

    async def _lock_records(self, ctx: RequestContext) -> VersionedRecords:
        return await self.records(ctx, KIND, DOMAIN)

    def lock_state(self, lock: StrategyLock) -> str:
        return lock_state(lock, self.clock.now())

    async def create_lock(self, ctx: RequestContext, body: Any) -> StrategyLock:
        """Request a lock (member or above); it starts ``pending_review``."""
        ctx.require_role("member")
        data = convert(DOMAIN, body, LockIn)
        if data.surface_id is None and data.action_name is None:
            raise invalid(DOMAIN, "a lock names a surface, an action or both")
        check_name(DOMAIN, "surface_id", data.surface_id)
        check_name(DOMAIN, "action_name", data.action_name)
        now = self.clock.now()
        policy, _ = await self.read(ctx, "strategy_lock_policy", StrategyLockPolicy)
        lock = StrategyLock(
            lock_id=self.ids.next(now),
            surface_id=data.surface_id,
            action_name=data.action_name,
            status="pending_review",
            expires_at=expiry(DOMAIN, now, data.expires_at, data.ttl_seconds),
            created_by=ctx.user_id,
            created_at=iso(now),
            required_approvals=policy.required_approvals,
            note=data.note,
        )
        key = _lock_key(lock.surface_id, lock.action_name, lock.lock_id)
        records = await self._lock_records(ctx)
        await records.write_many(
            [
                RecordChange(key=key, value=msgspec.json.encode(lock)),
                RecordChange(key=_pointer_key(lock.lock_id), value=key.encode()),
            ]
        )
        await self.spine.record(ctx, "strategy_lock", {"action": "created", **msgspec.to_builtins(lock)})
        return lock

    async def _lock_by_id(self, ctx: RequestContext, lock_id: str) -> tuple[str, int, StrategyLock]:
        """The lock's key, its pointer's version and the lock."""
        check_name(DOMAIN, "lock_id", lock_id)
        records = await self._lock_records(ctx)
        pointer = await records.get(_pointer_key(lock_id))
        item = await records.get(pointer.value.decode()) if pointer is not None else None
        if pointer is None or item is None:
            raise not_found(DOMAIN, "strategy lock", lock_id=lock_id)
        return pointer.value.decode(), pointer.version, _lock(item.value, item.version)

    async def get_lock(self, ctx: RequestContext, lock_id: str) -> StrategyLock:
        return (await self._lock_by_id(ctx, lock_id))[2]

    async def _save_lock(
        self,
        ctx: RequestContext,
        old_key: str,
        pointer_version: int,
        lock: StrategyLock,
        expected_version: int | None,
        what: str,
    ) -> StrategyLock:
        current = lock.version
        if expected_version is not None and expected_version != current:
            raise version_conflict(DOMAIN, current, expected_version)
        new_key = _lock_key(lock.surface_id, lock.action_name, lock.lock_id)
        records = await self._lock_records(ctx)
        lock.version = current + 1
        if new_key == old_key:
            await records.put(old_key, msgspec.json.encode(lock), expected_version=current)
        else:
            # scope changed: move the record and repoint the id, atomically
            await records.write_many(
                [
                    RecordChange(key=old_key, expected_version=current),
                    RecordChange(key=new_key, value=msgspec.json.encode(lock), version=lock.version),
                    RecordChange(
                        key=_pointer_key(lock.lock_id),
                        value=new_key.encode(),
                        expected_version=pointer_version,
                    ),
                ]
            )
        await self.spine.record(ctx, "strategy_lock", {"action": what, **msgspec.to_builtins(lock)})
        return lock

    async def patch_lock(self, ctx: RequestContext, lock_id: str, body: Any) -> StrategyLock:
        """Change scope/expiry/note (the requester, or an admin/owner). A scope or expiry change
        restarts review."""
        ctx.require_role("member")
        patch = convert(DOMAIN, body, LockPatch)
        check_expected_version(DOMAIN, patch.expected_version)
        key, pointer_version, lock = await self._lock_by_id(ctx, lock_id)
        # A change sends an approved lock back to review: another member must not be able to
        # revoke someone else's approval that way.
        if ctx.user_id != lock.created_by and ctx.role_rank < ROLE_RANK["admin"]:
            raise NorthstarError(
                "auth.forbidden",
                "only the requester of a strategy lock or an admin may change it",
                403,
                details={"lock_id": lock_id, "reason": "not_requester"},
            )
        raw = body if isinstance(body, dict) else msgspec.json.decode(body)
        fields = set(raw) - {"expected_version"}
        now = self.clock.now()
        rescoped = False
        for field in ("surface_id", "action_name"):
            if field in fields:
                check_name(DOMAIN, field, getattr(patch, field))
                setattr(lock, field, getattr(patch, field))
                rescoped = True
        if lock.surface_id is None and lock.action_name is None:
            raise invalid(DOMAIN, "a lock names a surface, an action or both")
        if "expires_at" in fields or "ttl_seconds" in fields:
            lock.expires_at = expiry(DOMAIN, now, patch.expires_at, patch.ttl_seconds)
            rescoped = True
        if "note" in fields:
            lock.note = patch.note
        if rescoped:
            lock.status = "pending_review"
            lock.reviews = []
        return await self._save_lock(ctx, key, pointer_version, lock, patch.expected_version, "patched")

    async def review_lock(
        self,
        ctx: RequestContext,
        lock_id: str,
        verdict: Literal["approve", "reject"],
        *,
        note: str | None = None,
        expected_version: int | None = None,
    ) -> StrategyLock:
        """Record one reviewer's verdict (admin/owner, not the requester, once per reviewer).

        A lock is approved once ``required_approvals`` distinct reviewers approved; one
        rejection rejects it.
        """
        ctx.require_role("admin")
        check_expected_version(DOMAIN, expected_version)
        key, pointer_version, lock = await self._lock_by_id(ctx, lock_id)
        if lock.status != "pending_review":
            raise NorthstarError(
                "strategy_lock.not_pending",
                f"the lock is already {lock.status}",
                409,
                details={"status": lock.status, "current_version": lock.version},
            )
        if ctx.user_id == lock.created_by:
            raise NorthstarError(
                "strategy_lock.self_review",
                "the requester of a lock cannot review it",
                403,
                details={"lock_id": lock_id},
            )
        if any(r.reviewer == ctx.user_id for r in lock.reviews):
            raise NorthstarError(
                "strategy_lock.already_reviewed",
                "you have already reviewed this lock",
                409,
                details={"lock_id": lock_id, "current_version": lock.version},
            )
        lock.reviews.append(
            Review(reviewer=ctx.user_id, verdict=verdict, at=iso(self.clock.now()), note=note)
        )
        if verdict == "reject":
            lock.status = "rejected"
        elif sum(1 for r in lock.reviews if r.verdict == "approve") >= lock.required_approvals:
            lock.status = "approved"
        return await self._save_lock(ctx, key, pointer_version, lock, expected_version, verdict)

    async def list_locks(
        self, ctx: RequestContext, *, cursor: str | None = None, limit: int = 100
    ) -> Page[LockView]:
        """Strategy locks with their state, in scope order, paged after a signed cursor."""
        if not 1 <= limit <= 500:
            raise invalid(DOMAIN, "'limit' must be between 1 and 500", field="limit")
        listing = RecordListing(await self._lock_records(ctx), self.spine.cursors, ctx, "locks", "lock#")
        return await listing.page(
            cursor, limit, lambda item: lock_view(self, _lock(item.value, item.version))
        )

    async def locks_matching(
        self, ctx: RequestContext, surface_id: str | None, action_name: str
    ) -> list[StrategyLock]:
        """Locks whose scope covers (surface, action): the newest ``SCOPE_LOCKS`` of each
        covering scope, the scopes read concurrently (one round trip)."""
        records = await self._lock_records(ctx)
        scopes: list[tuple[str | None, str | None]] = [(None, action_name)]
        if surface_id is not None:
            scopes += [(surface_id, action_name), (surface_id, None)]
        pages = await asyncio.gather(
            *(records.list(prefix=_scope_prefix(s, a), descending=True, limit=SCOPE_LOCKS) for s, a in scopes)
        )
        return [_lock(item.value, item.version) for items in pages for item in items]


def lock_view(stores: StrategyLocks, lock: StrategyLock) -> LockView:
    """A strategy lock as listed and served, with its ``state`` now."""
    return LockView(**msgspec.structs.asdict(lock), state=stores.lock_state(lock))


def lock_to_dict(stores: StrategyLocks, lock: StrategyLock) -> dict[str, Any]:
    """A strategy lock as served: its fields and its ``state`` now."""
    return {**msgspec.to_builtins(lock), "state": stores.lock_state(lock)}


__all__ = [
    "LockIn",
    "LockPatch",
    "LockStatus",
    "LockView",
    "Review",
    "StrategyLock",
    "StrategyLocks",
    "lock_state",
    "lock_to_dict",
    "lock_view",
]
