"""Firearms licences: who may run which dangerous action, issued under a grant, revocable.

A licence is a record ``lic#<subject_type>#<subject_id>#<licence_id>`` in the tenant's
``safety_policy`` partition of ``firearms_policy_store`` (so one subject's licences are one key
range), with an immutable pointer ``lid#<licence_id>`` → that key, created in the same atomic
write. Issuing needs a grant (the ``firearms_grants`` document) and the admin role; a
revocation takes effect on the very next gate check anywhere (nothing is cached).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from northstar_core.bounds import check_expected_version
from northstar_core.clock import iso
from northstar_core.errors import NorthstarError, invalid, not_found, version_conflict
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page
from northstar_core.kernel.records import RecordChange, RecordListing, VersionedRecords
from northstar_core.safety.checks import check_name, convert, expiry
from northstar_core.safety.documents import FirearmsGrants, FirearmsPolicy, PolicyDoc, PolicyDocuments

KIND: Final = "firearms_policy_store"
DOMAIN: Final = "firearms"
# The most licences of one subject a gate decision reads (newest first).
SUBJECT_LICENCES: Final = 200


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


class LicenceIn(PolicyDoc):
    licence_type: str
    subject_type: str
    subject_id: str
    expires_at: float | None = None
    ttl_seconds: float | None = None


def _licence_key(subject_type: str, subject_id: str, licence_id: str) -> str:
    return f"lic#{subject_type}#{subject_id}#{licence_id}"


def _pointer_key(licence_id: str) -> str:
    return f"lid#{licence_id}"


def _licence(value: bytes, version: int) -> Licence:
    licence = msgspec.json.decode(value, type=Licence)
    licence.version = version
    return licence


def licence_state(licence: Licence, now: float) -> LicenceState:
    if licence.revoked_at is not None:
        return "revoked"
    if licence.expires_at is not None and licence.expires_at <= now:
        return "expired"
    return "active"


def firearms_reason(licences: Sequence[Licence], licence_type: str, now: float) -> str | None:
    """``None`` if an active licence of ``licence_type`` is held at ``now``, else why not."""
    states = [licence_state(lic, now) for lic in licences if lic.licence_type == licence_type]
    if "active" in states:
        return None
    if "revoked" in states:
        return "licence_revoked"
    if "expired" in states:
        return "licence_expired"
    return "licence_required"


class Licences(PolicyDocuments):
    """Firearms licences (see module doc); the documents they are issued under come with it."""

    async def _licence_records(self, ctx: RequestContext) -> VersionedRecords:
        return await self.records(ctx, KIND, DOMAIN)

    def licence_state(self, licence: Licence) -> LicenceState:
        return licence_state(licence, self.clock.now())

    async def issue_licence(self, ctx: RequestContext, body: Any) -> Licence:
        """Issue a licence (admin/owner). The grants document must allow the subject."""
        ctx.require_role("admin")
        data = convert(DOMAIN, body, LicenceIn)
        for field in ("licence_type", "subject_type", "subject_id"):
            check_name(DOMAIN, field, getattr(data, field))
        now = self.clock.now()
        expires_at = expiry(DOMAIN, now, data.expires_at, data.ttl_seconds)
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
        key = _licence_key(data.subject_type, data.subject_id, licence.licence_id)
        records = await self._licence_records(ctx)
        # the licence and an immutable pointer from its id to the subject-ordered key, atomically
        await records.write_many(
            [
                RecordChange(key=key, value=msgspec.json.encode(licence)),
                RecordChange(key=_pointer_key(licence.licence_id), value=key.encode()),
            ]
        )
        await self.spine.record(
            ctx, "audit", {"action": "firearms.licence_issued", **msgspec.to_builtins(licence)}
        )
        return licence

    async def _licence_by_id(self, ctx: RequestContext, licence_id: str) -> tuple[str, Licence]:
        check_name(DOMAIN, "licence_id", licence_id)
        records = await self._licence_records(ctx)
        pointer = await records.get(_pointer_key(licence_id))
        item = await records.get(pointer.value.decode()) if pointer is not None else None
        if pointer is None or item is None:
            raise not_found(DOMAIN, "licence", licence_id=licence_id)
        return pointer.value.decode(), _licence(item.value, item.version)

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
        check_expected_version(DOMAIN, expected_version)
        key, licence = await self._licence_by_id(ctx, licence_id)
        version = licence.version
        if expected_version is not None and expected_version != version:
            raise version_conflict(DOMAIN, version, expected_version)
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
        """Licences (optionally of one subject type / subject) with their state, in subject
        order, paged after a signed cursor (bound to tenant and filter)."""
        check_name(DOMAIN, "subject_type", subject_type)
        check_name(DOMAIN, "subject_id", subject_id)
        if subject_id and not subject_type:
            raise invalid(DOMAIN, "'subject_id' needs 'subject_type'", field="subject_id")
        if not 1 <= limit <= 500:
            raise invalid(DOMAIN, "'limit' must be between 1 and 500", field="limit")
        prefix = "lic#"
        if subject_type:
            prefix += f"{subject_type}#"
            if subject_id:
                prefix += f"{subject_id}#"
        listing = RecordListing(
            await self._licence_records(ctx), self.spine.cursors, ctx, f"licences:{prefix}", prefix
        )
        return await listing.page(
            cursor, limit, lambda item: licence_view(self, _licence(item.value, item.version))
        )

    async def subject_licences(
        self, ctx: RequestContext, subject_type: str, subject_id: str
    ) -> list[Licence]:
        """Every licence of one subject (bounded: the newest ``SUBJECT_LICENCES``): one query."""
        records = await self._licence_records(ctx)
        items = await records.list(
            prefix=f"lic#{subject_type}#{subject_id}#", descending=True, limit=SUBJECT_LICENCES
        )
        return [_licence(item.value, item.version) for item in items]

    async def check_subject(
        self, ctx: RequestContext, subject_type: str, subject_id: str, *, action_name: str | None = None
    ) -> dict[str, Any]:
        """For each dangerous action (or ``action_name``), whether the subject holds a licence."""
        check_name(DOMAIN, "subject_type", subject_type)
        check_name(DOMAIN, "subject_id", subject_id)
        check_name(DOMAIN, "action_name", action_name)
        policy, version = await self.read(ctx, "firearms_policy", FirearmsPolicy)
        licences = await self.subject_licences(ctx, subject_type, subject_id)
        now = self.clock.now()
        actions: dict[str, Any] = {}
        for binding in policy.bindings:
            if action_name is not None and binding.action_name != action_name:
                continue
            reason = firearms_reason(licences, binding.licence_type, now)
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
            "licences": [licence_to_dict(self, lic) for lic in licences],
            "actions": actions,
        }


def licence_view(stores: Licences, licence: Licence) -> LicenceView:
    """A licence as listed and served, with its ``state`` now."""
    return LicenceView(**msgspec.structs.asdict(licence), state=stores.licence_state(licence))


def licence_to_dict(stores: Licences, licence: Licence) -> dict[str, Any]:
    """A licence as served: its fields and its ``state`` now."""
    return {**msgspec.to_builtins(licence), "state": stores.licence_state(licence)}


__all__ = [
    "Licence",
    "LicenceIn",
    "LicenceState",
    "LicenceView",
    "Licences",
    "firearms_reason",
    "licence_state",
    "licence_to_dict",
    "licence_view",
]
