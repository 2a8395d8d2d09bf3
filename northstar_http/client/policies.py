"""Safety policies and the budget ledger over HTTP: ``engines.policies`` and
``engines.budget`` with the same methods, arguments and result types.

The one difference from the library: there is no ``ctx`` argument; the caller's identity is
the client's token (and its identity headers).
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import msgspec

from northstar_core.kernel.paging import Page
from northstar_core.safety.budget import UsageEntry, UsagePage
from northstar_core.safety.documents import PolicyDoc, PolicyDocument
from northstar_core.safety.licences import Licence, LicenceView
from northstar_core.safety.locks import LockView, StrategyLock
from northstar_http.client.base import BaseClient

D = TypeVar("D", bound=PolicyDoc)

# policy document name -> path
DOCUMENT_PATHS: Final[dict[str, str]] = {
    "kill_switches": "/kill-switches",
    "firearms_policy": "/firearms/policy",
    "firearms_grants": "/firearms/grants",
    "strategy_lock_policy": "/strategy-lock/policy",
    "budget_policy": "/budget/policy",
    "kpi_corridors": "/kpi/corridors",
    "temperature_corridors": "/temperature/corridors",
}


def _seg(value: str) -> str:
    return quote(value, safe="")


def _builtins(body: Any) -> Any:
    return msgspec.to_builtins(body) if isinstance(body, msgspec.Struct) else body


class PoliciesClient:
    """``engines.policies``: versioned policy documents, firearms licences, strategy locks."""

    def __init__(self, base: BaseClient) -> None:
        self._base = base

    # --- versioned documents ----------------------------------------------------------------

    async def get_document(self, name: str) -> PolicyDocument:
        """The document (version 0 and the empty default when never written)."""
        return await self._base.call(PolicyDocument, "GET", DOCUMENT_PATHS[name])

    async def read(self, name: str, type_: type[D]) -> tuple[D, int]:
        """The typed document and its version (0 and the empty default when never written)."""
        doc = await self.get_document(name)
        return msgspec.convert(doc.policy, type=type_), doc.version

    async def put_document(self, name: str, body: Any, *, expected_version: int | None) -> PolicyDocument:
        """Replace document ``name`` at ``expected_version`` (0 to create); 409 when stale."""
        sent = dict(_builtins(body))
        if expected_version is not None:
            sent["expected_version"] = expected_version
        return await self._base.call(PolicyDocument, "PUT", DOCUMENT_PATHS[name], json=sent)

    # --- firearms licences ------------------------------------------------------------------

    async def issue_licence(self, body: Any) -> Licence:
        """Issue a licence (``licence_type``, ``subject_type``, ``subject_id``, optional
        ``expires_at`` / ``ttl_seconds``); admin/owner; the grants document must allow it."""
        return await self._base.call(Licence, "POST", "/firearms/licences", json=_builtins(body))

    async def revoke_licence(
        self, licence_id: str, *, reason: str | None = None, expected_version: int | None = None
    ) -> Licence:
        body: dict[str, Any] = {"reason": reason}
        if expected_version is not None:
            body["expected_version"] = expected_version
        path = f"/firearms/licences/{_seg(licence_id)}/revoke"
        return await self._base.call(Licence, "POST", path, json=body)

    async def list_licences(
        self,
        *,
        subject_type: str | None = None,
        subject_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[LicenceView]:
        """Licences (optionally of one subject type / subject) with their state, paged."""
        params = {"subject_type": subject_type, "subject_id": subject_id, "cursor": cursor, "limit": limit}
        return await self._base.call(Page[LicenceView], "GET", "/firearms/licences", params=params)

    async def check_subject(
        self, subject_type: str, subject_id: str, *, action_name: str | None = None
    ) -> dict[str, Any]:
        """For each dangerous action (or ``action_name``), whether the subject holds a licence."""
        path = f"/firearms/licences/check/{_seg(subject_type)}/{_seg(subject_id)}"
        result: dict[str, Any] = await self._base.request("GET", path, params={"action_name": action_name})
        return result

    # --- strategy locks ---------------------------------------------------------------------

    async def create_lock(self, body: Any) -> StrategyLock:
        """Request a lock (member or above); it starts ``pending_review``."""
        return await self._base.call(StrategyLock, "POST", "/strategy-locks", json=_builtins(body))

    async def get_lock(self, lock_id: str) -> StrategyLock:
        return await self._base.call(StrategyLock, "GET", f"/strategy-locks/{_seg(lock_id)}")

    async def patch_lock(self, lock_id: str, body: Any) -> StrategyLock:
        """Change a lock's scope, expiry or note (restarts its review)."""
        path = f"/strategy-locks/{_seg(lock_id)}"
        return await self._base.call(StrategyLock, "PATCH", path, json=_builtins(body))

    async def review_lock(
        self,
        lock_id: str,
        verdict: Literal["approve", "reject"],
        *,
        note: str | None = None,
        expected_version: int | None = None,
    ) -> StrategyLock:
        """Record this reviewer's verdict (admin/owner, not the requester)."""
        body: dict[str, Any] = {"note": note}
        if expected_version is not None:
            body["expected_version"] = expected_version
        path = f"/strategy-locks/{_seg(lock_id)}/{verdict}"
        return await self._base.call(StrategyLock, "POST", path, json=body)

    async def list_locks(self, *, cursor: str | None = None, limit: int = 100) -> Page[LockView]:
        """Strategy locks with their state, paged."""
        params = {"cursor": cursor, "limit": limit}
        return await self._base.call(Page[LockView], "GET", "/strategy-locks", params=params)


class BudgetClient:
    """``engines.budget``: the append-only usage ledger."""

    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def record(self, body: Any) -> tuple[UsageEntry, bool]:
        """Append one usage entry (a ``UsageIn`` or its JSON form); returns it and whether it
        was an idempotent replay."""
        return await self._base.call_replayable(UsageEntry, "POST", "/budget/usage", json=_builtins(body))

    async def usage(
        self, period: str | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> UsagePage:
        """Entries of a month (``YYYY-MM``) or day (``YYYY-MM-DD``), oldest first, paged, with
        the period's totals."""
        params = {"period": period, "cursor": cursor, "limit": limit}
        return await self._base.call(UsagePage, "GET", "/budget/usage", params=params)
