"""Safety policy endpoints over HTTP: documents, licences, strategy locks, budget ledger."""

from __future__ import annotations

from typing import Any, Final

from northstar_http.client.base import BaseClient

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


class PoliciesClient:
    def __init__(self, base: BaseClient) -> None:
        self._base = base

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._base.request(method, path, **kw)
        return result

    # --- versioned documents ----------------------------------------------------------------

    async def get(self, name: str) -> dict[str, Any]:
        """``{name, version, policy, updated_at, updated_by}`` (version 0 = never written)."""
        return await self._call("GET", DOCUMENT_PATHS[name])

    async def put(self, name: str, policy: dict[str, Any], *, expected_version: int) -> dict[str, Any]:
        """Replace a document at ``expected_version`` (0 to create); 409 when stale."""
        return await self._call(
            "PUT", DOCUMENT_PATHS[name], json={**policy, "expected_version": expected_version}
        )

    # --- firearms licences ------------------------------------------------------------------

    async def issue_licence(
        self,
        licence_type: str,
        subject_type: str,
        subject_id: str,
        *,
        ttl_seconds: float | None = None,
        expires_at: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "licence_type": licence_type,
            "subject_type": subject_type,
            "subject_id": subject_id,
        }
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        if expires_at is not None:
            body["expires_at"] = expires_at
        return await self._call("POST", "/firearms/licences", json=body)

    async def licences(
        self,
        *,
        subject_type: str | None = None,
        subject_id: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        params = {"subject_type": subject_type, "subject_id": subject_id, "cursor": cursor, "limit": limit}
        return await self._call("GET", "/firearms/licences", params=params)

    async def revoke_licence(self, licence_id: str, *, reason: str | None = None) -> dict[str, Any]:
        return await self._call("POST", f"/firearms/licences/{licence_id}/revoke", json={"reason": reason})

    async def check_licence(
        self, subject_type: str, subject_id: str, *, action_name: str | None = None
    ) -> dict[str, Any]:
        return await self._call(
            "GET",
            f"/firearms/licences/check/{subject_type}/{subject_id}",
            params={"action_name": action_name},
        )

    # --- strategy locks ---------------------------------------------------------------------

    async def create_lock(self, **lock: Any) -> dict[str, Any]:
        return await self._call("POST", "/strategy-locks", json=lock)

    async def locks(self, *, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await self._call("GET", "/strategy-locks", params={"cursor": cursor, "limit": limit})

    async def patch_lock(self, lock_id: str, **changes: Any) -> dict[str, Any]:
        return await self._call("PATCH", f"/strategy-locks/{lock_id}", json=changes)

    async def approve_lock(self, lock_id: str, *, note: str | None = None) -> dict[str, Any]:
        return await self._call("POST", f"/strategy-locks/{lock_id}/approve", json={"note": note})

    async def reject_lock(self, lock_id: str, *, note: str | None = None) -> dict[str, Any]:
        return await self._call("POST", f"/strategy-locks/{lock_id}/reject", json={"note": note})

    # --- budget ledger ----------------------------------------------------------------------

    async def record_usage(self, amount: float, **fields: Any) -> dict[str, Any]:
        return await self._call("POST", "/budget/usage", json={"amount": amount, **fields})

    async def usage(
        self, *, period: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        return await self._call(
            "GET", "/budget/usage", params={"period": period, "cursor": cursor, "limit": limit}
        )
