"""Policy endpoints: versioned writes, roles, bad input, tenant isolation, licences and locks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]

DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("/kill-switches", {"actions": ["fire"]}),
    ("/firearms/policy", {"bindings": [{"action_name": "fire", "licence_type": "l1"}]}),
    ("/firearms/grants", {"grants": [{"licence_type": "l1", "subject_type": "agent"}]}),
    ("/strategy-lock/policy", {"rules": [{"action_name": "fire"}]}),
    ("/budget/policy", {"limits": [{"period": "day", "limit": 10}]}),
    ("/kpi/corridors", {"corridors": [{"parameter": "ctr", "min": 0, "max": 1}]}),
    ("/temperature/corridors", {"corridors": [{"parameter": "temperature", "max": 1}]}),
]

BAD: dict[str, dict[str, Any]] = {
    "/kill-switches": {"actions": "fire"},
    "/firearms/policy": {"bindings": [{"action_name": "fire"}]},
    "/firearms/grants": {"grants": [{"licence_type": "l1"}]},
    "/strategy-lock/policy": {"rules": [{}]},
    "/budget/policy": {"limits": [{"period": "week", "limit": 1}]},
    "/kpi/corridors": {"corridors": [{"parameter": "ctr", "min": 2, "max": 1}]},
    "/temperature/corridors": {"corridors": [{"parameter": "t"}]},
}


def admin(auth: Auth, tenant: str = "t_alpha", sub: str = "u_admin") -> dict[str, str]:
    return auth(tenant, sub, roles=("admin",))


@pytest.mark.parametrize(("path", "body"), DOCUMENTS)
async def test_policy_documents_are_versioned(
    client: Client, auth: Auth, path: str, body: dict[str, Any]
) -> None:
    r = await client.get(path, headers=auth())
    assert (r.status_code, r.json()["version"]) == (200, 0)
    r = await client.put(path, json={**body, "expected_version": 0}, headers=admin(auth))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.headers["etag"] == '"1"'
    r = await client.put(path, json={**body, "expected_version": 0}, headers=admin(auth))
    assert r.status_code == 409 and r.json()["error"]["details"]["current_version"] == 1
    r = await client.put(path, json=body, headers={**admin(auth), "If-Match": '"1"'})
    assert (r.status_code, r.json()["version"]) == (200, 2)
    r = await client.get(path, headers=auth())
    policy = r.json()["policy"]
    assert r.json()["version"] == 2
    for key, value in body.items():  # stored with defaults filled in
        if isinstance(value, list) and value and isinstance(value[0], dict):
            assert [{k: item[k] for k in value[0]} for item in policy[key]] == value
        else:
            assert policy[key] == value


@pytest.mark.parametrize(("path", "body"), DOCUMENTS)
@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_only_admins_and_owners_write_policy(
    client: Client, auth: Auth, path: str, body: dict[str, Any], role: str
) -> None:
    r = await client.put(path, json={**body, "expected_version": 0}, headers=auth(roles=(role,)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "auth.forbidden_role")
    assert (await client.get(path, headers=auth())).json()["version"] == 0
    r = await client.put(path, json={**body, "expected_version": 0}, headers=auth(roles=("owner",)))
    assert r.status_code == 201


@pytest.mark.parametrize("path", list(BAD))
async def test_bad_policy_is_422_and_writes_nothing(client: Client, auth: Auth, path: str) -> None:
    r = await client.put(path, json={**BAD[path], "expected_version": 0}, headers=admin(auth))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"].endswith(".invalid_request")
    r = await client.put(path, json={}, headers=admin(auth))  # no expected_version
    assert r.status_code == 422
    assert (await client.get(path, headers=auth())).json()["version"] == 0


async def test_policies_are_per_tenant(client: Client, auth: Auth) -> None:
    await client.put(
        "/kill-switches", json={"tenant_blocked": True, "expected_version": 0}, headers=admin(auth)
    )
    r = await client.get("/kill-switches", headers=auth("t_beta"))
    assert r.json()["version"] == 0 and r.json()["policy"]["tenant_blocked"] is False


async def test_licence_lifecycle_issue_check_revoke(client: Client, auth: Auth) -> None:
    h = admin(auth)
    await client.put("/firearms/policy", json={**DOCUMENTS[1][1], "expected_version": 0}, headers=h)
    lic = {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"}
    r = await client.post("/firearms/licences", json=lic, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "firearms.grant_required")
    await client.put("/firearms/grants", json={**DOCUMENTS[2][1], "expected_version": 0}, headers=h)
    r = await client.post("/firearms/licences", json=lic, headers=auth())  # member
    assert r.status_code == 403
    r = await client.post("/firearms/licences", json=lic, headers=h)
    assert r.status_code == 201 and r.json()["state"] == "active"
    licence_id = r.json()["licence_id"]
    check = (await client.get("/firearms/licences/check/agent/a1", headers=auth())).json()
    assert check["actions"]["fire"] == {"licence_type": "l1", "allowed": True, "reason": "licensed"}
    r = await client.post(f"/firearms/licences/{licence_id}/revoke", json={"reason": "misuse"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    check = (await client.get("/firearms/licences/check/agent/a1", headers=auth())).json()
    assert check["actions"]["fire"]["reason"] == "licence_revoked"
    listed = (await client.get("/firearms/licences", params={"subject_type": "agent"}, headers=auth())).json()
    assert [x["licence_id"] for x in listed["items"]] == [licence_id]
    assert (await client.get("/firearms/licences", headers=auth("t_beta"))).json()["items"] == []
    r = await client.post(f"/firearms/licences/{licence_id}/revoke", headers=admin(auth, "t_beta"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "firearms.not_found")


async def test_strategy_lock_three_wise_review(client: Client, auth: Auth) -> None:
    r = await client.post("/strategy-locks", json={"action_name": "fire", "ttl_seconds": 600}, headers=auth())
    assert r.status_code == 201 and r.json()["status"] == "pending_review"
    lock_id = r.json()["lock_id"]
    assert r.json()["required_approvals"] == 3
    r = await client.post(f"/strategy-locks/{lock_id}/approve", headers=admin(auth, sub="u_alice"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "strategy_lock.self_review")
    r = await client.post(f"/strategy-locks/{lock_id}/approve", headers=auth(sub="u_bob"))
    assert r.status_code == 403
    for i, reviewer in enumerate(("u_r1", "u_r2", "u_r3")):
        r = await client.post(
            f"/strategy-locks/{lock_id}/approve", json={"note": "ok"}, headers=admin(auth, sub=reviewer)
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == ("approved" if i == 2 else "pending_review")
    r = await client.post(f"/strategy-locks/{lock_id}/approve", headers=admin(auth, sub="u_r4"))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "strategy_lock.not_pending")
    version = r.json()["error"]["details"]["current_version"]
    r = await client.patch(
        f"/strategy-locks/{lock_id}",
        json={"surface_id": "s1", "expected_version": version - 1},
        headers=auth(),
    )
    assert r.status_code == 409
    r = await client.patch(
        f"/strategy-locks/{lock_id}", json={"surface_id": "s1", "expected_version": version}, headers=auth()
    )
    assert r.status_code == 200 and r.json()["status"] == "pending_review" and r.json()["reviews"] == []
    r = await client.post(f"/strategy-locks/{lock_id}/reject", headers=admin(auth, sub="u_r1"))
    assert r.json()["status"] == "rejected"
    listed = (await client.get("/strategy-locks", headers=auth())).json()
    assert [x["lock_id"] for x in listed["items"]] == [lock_id]
    assert (await client.get("/strategy-locks", headers=auth("t_beta"))).json()["items"] == []
    r = await client.post("/strategy-locks", json={"note": "no scope"}, headers=auth())
    assert r.status_code == 422


async def test_budget_usage_ledger_totals_and_idempotency(client: Client, auth: Auth) -> None:
    for amount, surface in ((2.5, "s1"), (1.0, None), (4.0, "s1")):
        body: dict[str, Any] = {"amount": amount}
        if surface:
            body["surface_id"] = surface
        r = await client.post("/budget/usage", json=body, headers=auth())
        assert r.status_code == 201, r.text
    r = await client.post("/budget/usage", json={"amount": 1, "idempotency_key": "k1"}, headers=auth())
    assert r.status_code == 201
    r = await client.post("/budget/usage", json={"amount": 1, "idempotency_key": "k1"}, headers=auth())
    assert r.status_code == 200 and r.json()["replayed"] is True
    r = await client.post("/budget/usage", json={"amount": 2, "idempotency_key": "k1"}, headers=auth())
    assert (r.status_code, r.json()["error"]["code"]) == (422, "budget.idempotency_mismatch")
    for bad in ({"amount": -1}, {"amount": "x"}, {}):
        r = await client.post("/budget/usage", json=bad, headers=auth())
        assert (r.status_code, r.json()["error"]["code"]) == (422, "budget.invalid_request")
    page = (await client.get("/budget/usage", headers=auth())).json()
    assert page["total"] == 8.5 and page["by_surface"] == {"s1": 6.5}
    # entries of different shards in one millisecond are ordered by shard, so the order
    # asserted is the documented (at, shard, seq) one, not the order of the posts
    items = page["items"]
    order = [(e["at"], e["shard"], e["seq"]) for e in items]
    assert order == sorted(order)
    assert sorted(e["amount"] for e in items) == [1.0, 1.0, 2.5, 4.0]
    assert (await client.get("/budget/usage", headers=auth("t_beta"))).json()["items"] == []
    r = await client.get("/budget/usage", params={"period": "2026"}, headers=auth())
    assert r.status_code == 422
    r = await client.post("/budget/usage", json={"amount": 1}, headers=auth(roles=("viewer",)))
    assert r.status_code == 403
