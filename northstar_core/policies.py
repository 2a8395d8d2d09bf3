"""Safety policy stores: every rule the gate chain applies is versioned data kept here.

Nothing outside this module decides what is dangerous, what needs a lock, what a budget is or
where a corridor lies: the gate chain only reads these documents (fresh on every call — no
cache, so a revocation written by one process is seen by the next call of any other).

* Kill switches, KPI corridors, temperature corridors — documents in ``config_store``;
* firearms policy (dangerous action → licence type), grants and licences —
  ``firearms_policy_store``;
* strategy-lock policy (which actions/surfaces need a lock) and locks with three-wise review —
  ``strategy_policy_store``;
* budget limits — ``budget_store`` (the usage ledger lives in :mod:`northstar_core.budget`).

Policy documents are :class:`~northstar_core.kernel.records.VersionedRecords`: every write names the
version it replaces (``expected_version``; 0 = the document does not exist yet) and a stale
write is 409 ``<domain>.version_conflict`` with the current version. Policy writes need the
``admin`` role or above, and each write is recorded on the event spine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, TypeVar

import msgspec

from northstar_core.bounds import (
    MAX_EXPIRES_AT,
    MAX_MAGNITUDE,
    MAX_TOTAL,
    MAX_TTL_SECONDS,
    MAX_VERSION,
    check_float,
    check_int,
)
from northstar_core.clock import Clock, iso
from northstar_core.errors import NorthstarError, not_found, version_conflict
from northstar_core.identity import ID_PATTERN, ROLE_RANK, RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.kernel.records import VersionedRecords
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import partition
from northstar_core.spine import EventSpine, UUIDv7Generator
from northstar_core.storage import Absent, ConditionFailed, Delete, Item, Put, VersionIs

T = TypeVar("T", bound=msgspec.Struct)

# --- document shapes -----------------------------------------------------------------------------


class _Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class KillSwitches(_Doc):
    """Blocks: the whole tenant, named providers (``params.provider``), named actions."""

    tenant_blocked: bool = False
    providers: list[str] = []
    actions: list[str] = []
    reason: str | None = None


class FirearmsBinding(_Doc):
    action_name: str
    licence_type: str


class FirearmsPolicy(_Doc):
    """Which actions are dangerous and which licence type each needs."""

    bindings: list[FirearmsBinding] = []


class FirearmsGrant(_Doc):
    """Who may be issued a licence type (``subject_id`` ``*`` = every subject of the type)."""

    licence_type: str
    subject_type: str
    subject_id: str = "*"


class FirearmsGrants(_Doc):
    grants: list[FirearmsGrant] = []


class LockRule(_Doc):
    """An action and/or a surface that requires an approved strategy lock."""

    action_name: str | None = None
    surface_id: str | None = None


class StrategyLockPolicy(_Doc):
    rules: list[LockRule] = []
    required_approvals: int = 3


class BudgetLimit(_Doc):
    """Spend allowed per period; ``surface_id`` None = the tenant as a whole."""

    period: Literal["day", "month"]
    limit: float
    surface_id: str | None = None


class BudgetPolicy(_Doc):
    limits: list[BudgetLimit] = []


class Corridor(_Doc):
    """``params[parameter]`` must lie in ``[min, max]`` (for the action/surface, if named)."""

    parameter: str
    min: float | None = None
    max: float | None = None
    action_name: str | None = None
    surface_id: str | None = None


class Corridors(_Doc):
    corridors: list[Corridor] = []


DOC_TYPES: Final[dict[str, tuple[str, type[_Doc], str]]] = {
    # name: (resource kind, type, error domain)
    "kill_switches": ("config_store", KillSwitches, "kill_switch"),
    "kpi_corridors": ("config_store", Corridors, "kpi"),
    "temperature_corridors": ("config_store", Corridors, "temperature"),
    "firearms_policy": ("firearms_policy_store", FirearmsPolicy, "firearms"),
    "firearms_grants": ("firearms_policy_store", FirearmsGrants, "firearms"),
    "strategy_lock_policy": ("strategy_policy_store", StrategyLockPolicy, "strategy_lock"),
    "budget_policy": ("budget_store", BudgetPolicy, "budget"),
}


class PolicyDocument(msgspec.Struct, kw_only=True, frozen=True):
    """A policy document as read: its body, version (0 = never written) and provenance."""

    name: str
    version: int
    policy: dict[str, Any]
    updated_at: str | None = None
    updated_by: str | None = None


class _Stored(msgspec.Struct, kw_only=True):
    policy: dict[str, Any]
    updated_at: str
    updated_by: str


class Licence(msgspec.Struct, kw_only=True):
    licence_id: str
    licence_type: str
    subject_type: str
    subject_id: str
    issued_at: str
    issued_by: str
    expires_at: float | None = None
    revoked_at: str | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    version: int = 1


LicenceState = Literal["active", "revoked", "expired"]


class LicenceView(Licence, kw_only=True):
    """A licence as listed and served: the stored licence plus its ``state`` now."""

    state: LicenceState


class LicenceIn(_Doc):
    licence_type: str
    subject_type: str
    subject_id: str
    expires_at: float | None = None
    ttl_seconds: float | None = None


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


class LockIn(_Doc):
    surface_id: str | None = None
    action_name: str | None = None
    expires_at: float | None = None
    ttl_seconds: float | None = None
    note: str | None = None


class LockPatch(_Doc):
    expected_version: int | None = None
    surface_id: str | None = None
    action_name: str | None = None
    expires_at: float | None = None
    ttl_seconds: float | None = None
    note: str | None = None


# --- helpers -------------------------------------------------------------------------------------


def _invalid(domain: str, message: str, **details: Any) -> NorthstarError:
    return NorthstarError(f"{domain}.invalid_request", message, 422, details=details)


def convert(domain: str, data: Any, type_: type[T]) -> T:
    """Validate ``data`` (a mapping or JSON bytes) into ``type_``; 422 ``<domain>.invalid_request``."""
    try:
        if isinstance(data, bytes | bytearray):
            return msgspec.json.decode(bytes(data), type=type_)
        return msgspec.convert(data, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _invalid(domain, f"invalid body: {exc}", reason=str(exc)) from None


def _check_name(domain: str, field: str, value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not ID_PATTERN.fullmatch(value)):
        raise _invalid(
            domain, f"'{field}' must match {ID_PATTERN.pattern}", field=field, value=str(value)[:200]
        )


def _expiry(domain: str, now: float, expires_at: float | None, ttl: float | None) -> float | None:
    if expires_at is not None and ttl is not None:
        raise _invalid(domain, "give 'expires_at' or 'ttl_seconds', not both")
    if ttl is not None:
        ttl = check_float(domain, "ttl_seconds", ttl, lo=0.0, hi=MAX_TTL_SECONDS)
        if ttl <= 0:
            raise _invalid(domain, "'ttl_seconds' must be positive", field="ttl_seconds")
        return now + ttl
    if expires_at is not None:
        return check_float(domain, "expires_at", expires_at, lo=0.0, hi=MAX_EXPIRES_AT)
    return expires_at


def _check_expected_version(domain: str, expected_version: int | None, *, lo: int = 1) -> None:
    if expected_version is not None:
        # The write stores expected_version + 1, which must stay a storable version.
        check_int(domain, "expected_version", expected_version, lo=lo, hi=MAX_VERSION - 1)


def _validate_doc(name: str, doc: _Doc) -> None:
    """Semantic checks beyond the shape (ids well formed, corridors ordered…)."""
    domain = DOC_TYPES[name][2]
    if isinstance(doc, KillSwitches):
        for p in doc.providers:
            _check_name(domain, "providers[]", p)
        for a in doc.actions:
            _check_name(domain, "actions[]", a)
    elif isinstance(doc, FirearmsPolicy):
        seen: set[str] = set()
        for b in doc.bindings:
            _check_name(domain, "action_name", b.action_name)
            _check_name(domain, "licence_type", b.licence_type)
            if b.action_name in seen:
                raise _invalid(domain, f"action '{b.action_name}' is bound twice", action_name=b.action_name)
            seen.add(b.action_name)
    elif isinstance(doc, FirearmsGrants):
        for g in doc.grants:
            _check_name(domain, "licence_type", g.licence_type)
            _check_name(domain, "subject_type", g.subject_type)
            if g.subject_id != "*":
                _check_name(domain, "subject_id", g.subject_id)
    elif isinstance(doc, StrategyLockPolicy):
        if not 1 <= doc.required_approvals <= 10:
            raise _invalid(domain, "'required_approvals' must be between 1 and 10")
        for r in doc.rules:
            if r.action_name is None and r.surface_id is None:
                raise _invalid(domain, "a rule names an action, a surface or both")
            _check_name(domain, "action_name", r.action_name)
            _check_name(domain, "surface_id", r.surface_id)
    elif isinstance(doc, BudgetPolicy):
        for i, lim in enumerate(doc.limits):
            # Spend is compared with the limit: both stay within the ledger's total bound.
            check_float(domain, f"limits[{i}].limit", lim.limit, lo=0.0, hi=MAX_TOTAL)
            _check_name(domain, "surface_id", lim.surface_id)
    elif isinstance(doc, Corridors):
        for i, c in enumerate(doc.corridors):
            _check_name(domain, "parameter", c.parameter)
            _check_name(domain, "action_name", c.action_name)
            _check_name(domain, "surface_id", c.surface_id)
            for bound in ("min", "max"):
                value = getattr(c, bound)
                if value is not None:
                    check_float(
                        domain, f"corridors[{i}].{bound}", value, lo=-MAX_MAGNITUDE, hi=MAX_MAGNITUDE
                    )
            if c.min is None and c.max is None:
                raise _invalid(domain, "a corridor needs 'min', 'max' or both", parameter=c.parameter)
            if c.min is not None and c.max is not None and c.min > c.max:
                raise _invalid(domain, "corridor 'min' exceeds 'max'", parameter=c.parameter)


# --- the service ---------------------------------------------------------------------------------


class PolicyStores:
    """Versioned policy documents, firearms licences and strategy locks (see module doc)."""

    def __init__(self, registry: RoutingRegistry, clock: Clock, spine: EventSpine) -> None:
        self.registry = registry
        self.clock = clock
        self.spine = spine
        self.ids = UUIDv7Generator()

    async def _records(self, ctx: RequestContext, kind: str, domain: str) -> VersionedRecords:
        store = await self.registry.store_for(kind, ctx.tenant_id)
        return VersionedRecords(store, partition(ctx, "safety_policy"), domain, history=True)

    # --- documents -----------------------------------------------------------------------------

    async def get_document(self, ctx: RequestContext, name: str) -> PolicyDocument:
        kind, _, domain = DOC_TYPES[name]
        item = await (await self._records(ctx, kind, domain)).get(name)
        if item is None:
            return PolicyDocument(name=name, version=0, policy=msgspec.to_builtins(DOC_TYPES[name][1]()))
        stored = msgspec.json.decode(item.value, type=_Stored)
        return PolicyDocument(
            name=name,
            version=item.version,
            policy=stored.policy,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
        )

    async def read(self, ctx: RequestContext, name: str, type_: type[T]) -> tuple[T, int]:
        """The typed document and its version (0 and the empty default when never written)."""
        doc = await self.get_document(ctx, name)
        return msgspec.convert(doc.policy, type=type_), doc.version

    async def put_document(
        self, ctx: RequestContext, name: str, body: Any, *, expected_version: int | None
    ) -> PolicyDocument:
        """Replace document ``name``; admin/owner only; ``expected_version`` is required."""
        kind, type_, domain = DOC_TYPES[name]
        ctx.require_role("admin")
        if isinstance(body, dict) and "expected_version" in body:
            body = dict(body)
            expected_version = body.pop("expected_version") if expected_version is None else expected_version
        if (
            expected_version is None
            or isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
        ):
            raise _invalid(
                domain,
                "'expected_version' (an integer, 0 when creating) is required",
                field="expected_version",
            )
        _check_expected_version(domain, expected_version, lo=0)
        doc = convert(domain, body, type_)
        _validate_doc(name, doc)
        stored = _Stored(
            policy=msgspec.to_builtins(doc), updated_at=iso(self.clock.now()), updated_by=ctx.user_id
        )
        records = await self._records(ctx, kind, domain)
        version = await records.put(
            name, msgspec.json.encode(stored), expected_version=expected_version or None
        )
        await self.spine.record(
            ctx, "audit", {"action": "policy.updated", "policy": name, "version": version}
        )
        return PolicyDocument(
            name=name,
            version=version,
            policy=stored.policy,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
        )

    # --- firearms licences ---------------------------------------------------------------------

    async def _licence_records(self, ctx: RequestContext) -> VersionedRecords:
        return await self._records(ctx, "firearms_policy_store", "firearms")

    @staticmethod
    def _licence_key(subject_type: str, subject_id: str, licence_id: str) -> str:
        return f"lic#{subject_type}#{subject_id}#{licence_id}"

    async def issue_licence(self, ctx: RequestContext, body: Any) -> Licence:
        """Issue a licence (admin/owner). The grants document must allow the subject."""
        ctx.require_role("admin")
        data = convert("firearms", body, LicenceIn)
        for field in ("licence_type", "subject_type", "subject_id"):
            _check_name("firearms", field, getattr(data, field))
        now = self.clock.now()
        expires_at = _expiry("firearms", now, data.expires_at, data.ttl_seconds)
        grants, _ = await self.read(ctx, "firearms_grants", FirearmsGrants)
        if not any(
            g.licence_type == data.licence_type
            and g.subject_type == data.subject_type
            and g.subject_id in ("*", data.subject_id)
            for g in grants.grants
        ):
            raise NorthstarError(
                "firearms.grant_required",
                "no grant allows this licence type for this subject",
                403,
                details={
                    "licence_type": data.licence_type,
                    "subject_type": data.subject_type,
                    "subject_id": data.subject_id,
                },
            )
        licence = Licence(
            licence_id=self.ids.next(now),
            licence_type=data.licence_type,
            subject_type=data.subject_type,
            subject_id=data.subject_id,
            issued_at=iso(now),
            issued_by=ctx.user_id,
            expires_at=expires_at,
        )
        key = self._licence_key(data.subject_type, data.subject_id, licence.licence_id)
        records = await self._licence_records(ctx)
        # an immutable pointer from the id to the subject-ordered key, written atomically
        pointer = Put(f"r#lid#{licence.licence_id}", key.encode(), condition=Absent())
        await records.put(key, msgspec.json.encode(licence), expected_version=None, extra_ops=[pointer])
        await self.spine.record(
            ctx, "audit", {"action": "firearms.licence_issued", **msgspec.to_builtins(licence)}
        )
        return licence

    async def _licence_by_id(self, ctx: RequestContext, licence_id: str) -> tuple[str, Licence, int]:
        _check_name("firearms", "licence_id", licence_id)
        records = await self._licence_records(ctx)
        pointer = await records.get(f"lid#{licence_id}")
        if pointer is None:
            raise not_found("firearms", "licence", licence_id=licence_id)
        key = pointer.value.decode()
        item = await records.get(key)
        if item is None:
            raise not_found("firearms", "licence", licence_id=licence_id)
        licence = msgspec.json.decode(item.value, type=Licence)
        licence.version = item.version
        return key, licence, item.version

    async def revoke_licence(
        self,
        ctx: RequestContext,
        licence_id: str,
        *,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> Licence:
        """Revoke (admin/owner); takes effect on the very next gate check anywhere."""
        ctx.require_role("admin")
        _check_expected_version("firearms", expected_version)
        key, licence, version = await self._licence_by_id(ctx, licence_id)
        if expected_version is not None and expected_version != version:
            raise version_conflict("firearms", version, expected_version)
        if licence.revoked_at is not None:
            return licence
        licence.revoked_at = iso(self.clock.now())
        licence.revoked_by = ctx.user_id
        licence.revoke_reason = reason
        licence.version = version + 1
        records = await self._licence_records(ctx)
        await records.put(key, msgspec.json.encode(licence), expected_version=version)
        await self.spine.record(
            ctx, "audit", {"action": "firearms.licence_revoked", "licence_id": licence_id, "reason": reason}
        )
        return licence

    async def list_licences(
        self,
        ctx: RequestContext,
        *,
        subject_type: str | None = None,
        subject_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[LicenceView]:
        """Licences (optionally of one subject type / subject) with their state, paged."""
        return await _licences_page(
            self, ctx, subject_type=subject_type, subject_id=subject_id, cursor=cursor, limit=limit
        )

    async def subject_licences(
        self, ctx: RequestContext, subject_type: str, subject_id: str
    ) -> list[Licence]:
        """Every licence of one subject (bounded: newest 200)."""
        records = await self._licence_records(ctx)
        items = await records.store.query(
            records.partition, f"r#lic#{subject_type}#{subject_id}#", descending=True, limit=200
        )
        return [_licence(item) for item in items]

    def licence_state(self, licence: Licence) -> LicenceState:
        if licence.revoked_at is not None:
            return "revoked"
        if licence.expires_at is not None and licence.expires_at <= self.clock.now():
            return "expired"
        return "active"

    async def check_subject(
        self, ctx: RequestContext, subject_type: str, subject_id: str, *, action_name: str | None = None
    ) -> dict[str, Any]:
        """For each dangerous action (or ``action_name``), whether the subject holds a licence."""
        _check_name("firearms", "subject_type", subject_type)
        _check_name("firearms", "subject_id", subject_id)
        _check_name("firearms", "action_name", action_name)
        policy, version = await self.read(ctx, "firearms_policy", FirearmsPolicy)
        licences = await self.subject_licences(ctx, subject_type, subject_id)
        actions: dict[str, Any] = {}
        for binding in policy.bindings:
            if action_name is not None and binding.action_name != action_name:
                continue
            reason = firearms_reason(self, licences, binding.licence_type)
            actions[binding.action_name] = {
                "licence_type": binding.licence_type,
                "allowed": reason is None,
                "reason": reason or "licensed",
            }
        if action_name is not None and action_name not in actions:
            actions[action_name] = {"licence_type": None, "allowed": True, "reason": "not_dangerous"}
        return {
            "subject_type": subject_type,
            "subject_id": subject_id,
            "policy_version": version,
            "licences": [{**msgspec.to_builtins(lic), "state": self.licence_state(lic)} for lic in licences],
            "actions": actions,
        }

    # --- strategy locks ------------------------------------------------------------------------

    async def _lock_records(self, ctx: RequestContext) -> VersionedRecords:
        return await self._records(ctx, "strategy_policy_store", "strategy_lock")

    @staticmethod
    def _lock_key(surface_id: str | None, action_name: str | None, lock_id: str) -> str:
        return f"lock#{surface_id or '*'}#{action_name or '*'}#{lock_id}"

    async def create_lock(self, ctx: RequestContext, body: Any) -> StrategyLock:
        """Request a lock (member or above); it starts ``pending_review``."""
        ctx.require_role("member")
        data = convert("strategy_lock", body, LockIn)
        if data.surface_id is None and data.action_name is None:
            raise _invalid("strategy_lock", "a lock names a surface, an action or both")
        _check_name("strategy_lock", "surface_id", data.surface_id)
        _check_name("strategy_lock", "action_name", data.action_name)
        now = self.clock.now()
        policy, _ = await self.read(ctx, "strategy_lock_policy", StrategyLockPolicy)
        lock = StrategyLock(
            lock_id=self.ids.next(now),
            surface_id=data.surface_id,
            action_name=data.action_name,
            status="pending_review",
            expires_at=_expiry("strategy_lock", now, data.expires_at, data.ttl_seconds),
            created_by=ctx.user_id,
            created_at=iso(now),
            required_approvals=policy.required_approvals,
            note=data.note,
        )
        key = self._lock_key(lock.surface_id, lock.action_name, lock.lock_id)
        records = await self._lock_records(ctx)
        pointer = Put(f"r#lkid#{lock.lock_id}", key.encode(), condition=Absent())
        await records.put(key, msgspec.json.encode(lock), expected_version=None, extra_ops=[pointer])
        await self.spine.record(ctx, "strategy_lock", {"action": "created", **msgspec.to_builtins(lock)})
        return lock

    async def _lock_by_id(self, ctx: RequestContext, lock_id: str) -> tuple[str, StrategyLock]:
        _check_name("strategy_lock", "lock_id", lock_id)
        records = await self._lock_records(ctx)
        pointer = await records.get(f"lkid#{lock_id}")
        item = await records.get(pointer.value.decode()) if pointer else None
        if pointer is None or item is None:
            raise not_found("strategy_lock", "strategy lock", lock_id=lock_id)
        return pointer.value.decode(), _lock(item)

    async def get_lock(self, ctx: RequestContext, lock_id: str) -> StrategyLock:
        return (await self._lock_by_id(ctx, lock_id))[1]

    async def _save_lock(
        self,
        ctx: RequestContext,
        old_key: str,
        lock: StrategyLock,
        expected_version: int | None,
        what: str,
    ) -> StrategyLock:
        current = lock.version
        if expected_version is not None and expected_version != current:
            raise version_conflict("strategy_lock", current, expected_version)
        new_key = self._lock_key(lock.surface_id, lock.action_name, lock.lock_id)
        records = await self._lock_records(ctx)
        lock.version = current + 1
        if new_key == old_key:
            await records.put(old_key, msgspec.json.encode(lock), expected_version=current)
        else:
            # scope changed: move the record and repoint the id, atomically
            try:
                await records.store.write(
                    records.partition,
                    [
                        Delete(f"r#{old_key}", condition=VersionIs(current)),
                        Put(
                            f"r#{new_key}",
                            msgspec.json.encode(lock),
                            version=lock.version,
                            condition=Absent(),
                        ),
                        Put(f"r#lkid#{lock.lock_id}", new_key.encode(), version=lock.version),
                    ],
                )
            except ConditionFailed:
                raise version_conflict("strategy_lock", None, current) from None
        await self.spine.record(ctx, "strategy_lock", {"action": what, **msgspec.to_builtins(lock)})
        return lock

    async def patch_lock(self, ctx: RequestContext, lock_id: str, body: Any) -> StrategyLock:
        """Change scope/expiry/note (the requester, or an admin/owner). A scope or expiry change
        restarts review."""
        ctx.require_role("member")
        patch = convert("strategy_lock", body, LockPatch)
        _check_expected_version("strategy_lock", patch.expected_version)
        key, lock = await self._lock_by_id(ctx, lock_id)
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
                _check_name("strategy_lock", field, getattr(patch, field))
                setattr(lock, field, getattr(patch, field))
                rescoped = True
        if lock.surface_id is None and lock.action_name is None:
            raise _invalid("strategy_lock", "a lock names a surface, an action or both")
        if "expires_at" in fields or "ttl_seconds" in fields:
            lock.expires_at = _expiry("strategy_lock", now, patch.expires_at, patch.ttl_seconds)
            rescoped = True
        if "note" in fields:
            lock.note = patch.note
        if rescoped:
            lock.status = "pending_review"
            lock.reviews = []
        return await self._save_lock(ctx, key, lock, patch.expected_version, "patched")

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
        _check_expected_version("strategy_lock", expected_version)
        key, lock = await self._lock_by_id(ctx, lock_id)
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
        return await self._save_lock(ctx, key, lock, expected_version, verdict)

    async def list_locks(
        self, ctx: RequestContext, *, cursor: str | None = None, limit: int = 100
    ) -> Page[LockView]:
        """Strategy locks with their state, paged."""
        return await _locks_page(self, ctx, cursor=cursor, limit=limit)

    async def locks_matching(
        self, ctx: RequestContext, surface_id: str | None, action_name: str
    ) -> list[StrategyLock]:
        """Locks whose scope covers (surface, action): bounded reads (newest 50 per scope)."""
        records = await self._lock_records(ctx)
        scopes: list[tuple[str | None, str | None]] = [(None, action_name)]
        if surface_id is not None:
            scopes += [(surface_id, action_name), (surface_id, None)]
        out: list[StrategyLock] = []
        for s, a in scopes:
            prefix = f"r#lock#{s or '*'}#{a or '*'}#"
            items = await records.store.query(records.partition, prefix, descending=True, limit=50)
            out.extend(_lock(i) for i in items)
        return out

    def lock_state(self, lock: StrategyLock) -> str:
        if lock.expires_at is not None and lock.expires_at <= self.clock.now():
            return "expired"
        return lock.status


def firearms_reason(stores: PolicyStores, licences: Sequence[Licence], licence_type: str) -> str | None:
    """``None`` if an active licence of ``licence_type`` is held, else why not."""
    states = [stores.licence_state(lic) for lic in licences if lic.licence_type == licence_type]
    if "active" in states:
        return None
    if "revoked" in states:
        return "licence_revoked"
    if "expired" in states:
        return "licence_expired"
    return "licence_required"


def _licence(item: Item) -> Licence:
    licence = msgspec.json.decode(item.value, type=Licence)
    licence.version = item.version
    return licence


def _lock(item: Item) -> StrategyLock:
    lock = msgspec.json.decode(item.value, type=StrategyLock)
    lock.version = item.version
    return lock


async def _paged(
    stores: PolicyStores,
    ctx: RequestContext,
    domain: str,
    stream: str,
    records: VersionedRecords,
    prefix: str,
    cursor: str | None,
    limit: int,
) -> tuple[list[Item], str | None, bool]:
    """One page of records under ``prefix`` after a signed cursor (bound to tenant and query)."""
    if not 1 <= limit <= 500:
        raise _invalid(domain, "'limit' must be between 1 and 500", field="limit")
    codec = stores.spine.cursors
    after: str | None = None
    if cursor:
        after = codec.decode(domain, ctx.tenant_id, ctx.mode, stream, cursor)
        if not after.startswith(prefix):
            raise NorthstarError(
                f"{domain}.cursor_invalid",
                "cursor is invalid: foreign position",
                410,
                details={"cursor": cursor, "reason": "foreign position"},
            )
    items = await records.list(prefix=prefix, after_key=after, limit=limit + 1)
    has_more = len(items) > limit
    items = items[:limit]
    last = items[-1].key[len("r#") :] if items else after
    next_cursor = codec.encode(domain, ctx.tenant_id, ctx.mode, stream, last) if last else None
    return items, next_cursor, has_more


async def _licences_page(
    stores: PolicyStores,
    ctx: RequestContext,
    *,
    subject_type: str | None = None,
    subject_id: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[LicenceView]:
    """Licences (optionally of one subject type / subject), oldest subject order, paged."""
    _check_name("firearms", "subject_type", subject_type)
    _check_name("firearms", "subject_id", subject_id)
    if subject_id and not subject_type:
        raise _invalid("firearms", "'subject_id' needs 'subject_type'", field="subject_id")
    prefix = "lic#"
    if subject_type:
        prefix += f"{subject_type}#"
        if subject_id:
            prefix += f"{subject_id}#"
    records = await stores._licence_records(ctx)
    items, next_cursor, has_more = await _paged(
        stores, ctx, "firearms", f"licences:{prefix}", records, prefix, cursor, limit
    )
    return Page([licence_view(stores, lic) for lic in map(_licence, items)], next_cursor, has_more)


async def _locks_page(
    stores: PolicyStores, ctx: RequestContext, *, cursor: str | None = None, limit: int = 100
) -> Page[LockView]:
    records = await stores._lock_records(ctx)
    items, next_cursor, has_more = await _paged(
        stores, ctx, "strategy_lock", "locks", records, "lock#", cursor, limit
    )
    return Page([lock_view(stores, _lock(i)) for i in items], next_cursor, has_more)


def licence_view(stores: PolicyStores, licence: Licence) -> LicenceView:
    return LicenceView(**msgspec.structs.asdict(licence), state=stores.licence_state(licence))


def lock_view(stores: PolicyStores, lock: StrategyLock) -> LockView:
    return LockView(**msgspec.structs.asdict(lock), state=stores.lock_state(lock))


def lock_to_dict(stores: PolicyStores, lock: StrategyLock) -> dict[str, Any]:
    return {**msgspec.to_builtins(lock), "state": stores.lock_state(lock)}


def licence_to_dict(stores: PolicyStores, licence: Licence) -> dict[str, Any]:
    return {**msgspec.to_builtins(licence), "state": stores.licence_state(licence)}
