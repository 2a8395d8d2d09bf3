"""Every number a client sends is range-checked before anything reaches a store.

JSON carries integers of any size and floats up to 1.8e308; no backend stores all of them. A
number out of range is the caller's mistake: a 422 envelope naming the field (never a 503 that
clients retry, never a 500), nothing written, and — on the shared SQLite writer — no other
tenant affected. Each case runs on the default memory app and on an app whose every kind is
routed to one real SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from northstar_core.bounds import MAX_VERSION
from northstar_http.bootstrap import create_app
from northstar_http.tokens import mint_token
from tests.conftest import JWT_SECRET, make_settings

HYPOTHESIS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# Versions no record can be at (so no write can name them): beyond 2**53 - 2, or negative.
BAD_VERSIONS = st.one_of(
    st.sampled_from([2**63 - 1, 2**63, 2**64, 2**64 + 1, MAX_VERSION, -(2**63), -1]),
    st.integers(min_value=MAX_VERSION, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-1),
)
# Finite floats JSON carries that no bounded field accepts.
HUGE_FLOATS = st.one_of(
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 1e16, -1e16]),
    st.floats(min_value=1e16, max_value=1e308),
    st.floats(min_value=-1e308, max_value=-1e16),
)


def sqlite_app(tmp_path: Path) -> Any:
    """Every kind and the registry on one SQLite file (lab mode routes all kinds there)."""
    db = str(tmp_path / "northstar.db")
    return create_app(
        make_settings(
            tmp_path,
            connections={"lite": {"backend": "sqlite", "path": db}},
            registry={"connection": "lite", "refresh_seconds": 0.0},
        )
    )


@pytest.fixture(params=["memory", "sqlite"])
def http(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient[Any]]:
    app = create_app(make_settings(tmp_path)) if request.param == "memory" else sqlite_app(tmp_path)
    with TestClient(app=app) as client:
        yield client


def headers(tenant: str = "t_alpha", sub: str = "u_alice", *roles: str, **extra: str) -> dict[str, str]:
    token = mint_token(JWT_SECRET, tenant_id=tenant, sub=sub, roles=roles or ("member",), mode="lab")
    return {"Authorization": f"Bearer {token}", **extra}


MEMBER = headers()
ADMIN = headers("t_alpha", "u_admin", "admin")


def assert_out_of_range(resp: Any, code: str, field: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, 422), error
    assert error["details"]["field"] == field, error
    details: dict[str, Any] = error["details"]
    return details


def assert_other_tenant_still_writes(client: TestClient[Any]) -> None:
    """The write path every tenant shares is intact (on SQLite: no transaction left open)."""
    other = headers("t_other", "u_bob")
    resp = client.post(
        "/chat/threads/x/messages", json={"role": "user", "content": "still here"}, headers=other
    )
    assert resp.status_code in (200, 201), resp.text
    listed = client.get("/chat/threads/x/messages", headers=other).json()["items"]
    assert listed[-1]["content"] == "still here"


# --- versions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Versioned:
    """A versioned resource: created once, then written at an impossible expected version."""

    name: str
    code: str
    auth: dict[str, str]
    create: Callable[[TestClient[Any]], str]  # returns the resource's path
    body: Callable[[int], dict[str, Any]]
    read: Callable[[TestClient[Any], str], Any]


def _blackboard(c: TestClient[Any]) -> str:
    assert c.put("/blackboard/r/entries/k", json={"value": "orig"}, headers=MEMBER).status_code == 201
    return "/blackboard/r/entries/k"


def _note(c: TestClient[Any]) -> str:
    resp = c.post("/notes", json={"title": "orig", "surface_id": "s1"}, headers=MEMBER)
    assert resp.status_code == 201, resp.text
    return f"/notes/{resp.json()['note_id']}"


def _flow(c: TestClient[Any]) -> str:
    assert c.put("/tabular/flows/f1", json={"json_blob": "orig"}, headers=MEMBER).status_code == 201
    return "/tabular/flows/f1"


def _corridors(c: TestClient[Any]) -> str:
    resp = c.put("/kpi/corridors", json={"corridors": [], "expected_version": 0}, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return "/kpi/corridors"


def _config(c: TestClient[Any]) -> str:
    resp = c.put("/config/tenant", json={"values": {"a": 1}}, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return "/config/tenant"


def _state(auth: dict[str, str], *fields: str) -> Callable[[TestClient[Any], str], Any]:
    def read(c: TestClient[Any], path: str) -> Any:
        body = c.get(path, headers=auth).json()
        return tuple(body[f] for f in fields)

    return read


VERSIONED = [
    Versioned(
        "blackboard",
        "blackboard.invalid_request",
        MEMBER,
        _blackboard,
        lambda v: {"value": "new", "expected_version": v},
        _state(MEMBER, "version", "value"),
    ),
    Versioned(
        "notes",
        "notes.invalid_request",
        MEMBER,
        _note,
        lambda v: {"title": "new", "expected_version": v},
        _state(MEMBER, "version", "title"),
    ),
    Versioned(
        "tabular",
        "tabular.invalid_request",
        MEMBER,
        _flow,
        lambda v: {"json_blob": "new", "expected_version": v},
        _state(MEMBER, "version", "json_blob"),
    ),
    Versioned(
        "kpi",
        "kpi.invalid_request",
        ADMIN,
        _corridors,
        lambda v: {"corridors": [{"parameter": "p", "min": 1}], "expected_version": v},
        _state(ADMIN, "version", "policy"),
    ),
    Versioned(
        "config",
        "config.invalid_request",
        ADMIN,
        _config,
        lambda v: {"values": {"a": 2}, "expected_version": v},
        _state(ADMIN, "version", "values"),
    ),
]


@pytest.mark.parametrize("target", VERSIONED, ids=[t.name for t in VERSIONED])
def test_an_impossible_expected_version_is_422_and_writes_nothing(
    http: TestClient[Any], target: Versioned
) -> None:
    path = target.create(http)
    before = target.read(http, path)

    @HYPOTHESIS
    @given(version=BAD_VERSIONS)
    def attempt(version: int) -> None:
        if version == 0 and target.name in ("kpi", "config"):
            return  # 0 means "create" there: a valid request (409 — the document exists)
        resp = http.put(path, json=target.body(version), headers=target.auth)
        details = assert_out_of_range(resp, target.code, "expected_version")
        assert details["max"] == MAX_VERSION - 1
        assert target.read(http, path) == before

    attempt()
    assert_other_tenant_still_writes(http)
    # and the resource itself still takes a correct write
    good = http.put(path, json=target.body(before[0]), headers=target.auth)
    assert good.status_code == 200, good.text


@pytest.mark.parametrize("version", [2**63 - 1, 2**64])
def test_the_issue_reproduction_on_every_backend(http: TestClient[Any], version: int) -> None:
    """Create a blackboard key, write it at 2**63 - 1 (or 2**64): 422, then other tenants write."""
    _blackboard(http)
    resp = http.put("/blackboard/r/entries/k", json={"value": 1, "expected_version": version}, headers=MEMBER)
    assert_out_of_range(resp, "blackboard.invalid_request", "expected_version")
    assert_other_tenant_still_writes(http)
    assert http.get("/blackboard/r/entries/k", headers=MEMBER).json()["value"] == "orig"


def test_an_if_match_beyond_the_version_range_is_422(http: TestClient[Any]) -> None:
    _blackboard(http)
    resp = http.put(
        "/blackboard/r/entries/k",
        json={"value": "new"},
        headers={**MEMBER, "If-Match": '"999999999999999999"'},
    )
    assert_out_of_range(resp, "blackboard.invalid_request", "expected_version")
    assert http.get("/blackboard/r/entries/k", headers=MEMBER).json()["value"] == "orig"


@pytest.mark.parametrize(
    "path, code",
    [
        ("/blackboard/r/entries/k", "blackboard.invalid_request"),
        ("/tabular/flows/f1", "tabular.invalid_request"),
    ],
)
def test_a_delete_at_an_impossible_version_is_422_and_deletes_nothing(
    http: TestClient[Any], path: str, code: str
) -> None:
    _blackboard(http) if path.startswith("/blackboard") else _flow(http)
    resp = http.delete(path, params={"expected_version": str(2**64)}, headers=MEMBER)
    assert_out_of_range(resp, code, "expected_version")
    assert http.get(path, headers=MEMBER).status_code == 200


def test_reading_an_impossible_past_version_is_422(http: TestClient[Any]) -> None:
    _flow(http)
    resp = http.get("/tabular/flows/f1", params={"version": str(2**64)}, headers=MEMBER)
    assert_out_of_range(resp, "tabular.invalid_request", "version")


def test_a_canvas_base_rev_beyond_any_revision_is_422(http: TestClient[Any]) -> None:
    @HYPOTHESIS
    @given(
        rev=st.one_of(st.integers(min_value=MAX_VERSION, max_value=2**80), st.sampled_from([2**63, 2**64]))
    )
    def attempt(rev: int) -> None:
        body = {
            "base_rev": rev,
            "ops": [{"op": "create", "atom_id": "a", "kind": "box"}],
            "idempotency_key": "k",
        }
        resp = http.post("/canvas/c1/commands", json=body, headers=MEMBER)
        assert_out_of_range(resp, "canvas.rev_invalid", "base_rev")

    attempt()
    assert http.get("/canvas/c1/snapshot", headers=MEMBER).json()["head_rev"] == 0
    assert_other_tenant_still_writes(http)


# --- floats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Floaty:
    """A write carrying one float that must be finite and bounded."""

    name: str
    method: str
    path: str
    auth: dict[str, str]
    body: Callable[[float], dict[str, Any]]
    code: str
    field: str
    unwritten: Callable[[TestClient[Any]], bool]


def _policy_version(path: str) -> Callable[[TestClient[Any]], bool]:
    return lambda c: c.get(path, headers=ADMIN).json()["version"] == 0


FLOATY = [
    Floaty(
        "kpi-min",
        "PUT",
        "/kpi/corridors",
        ADMIN,
        lambda f: {"corridors": [{"parameter": "p", "min": f}], "expected_version": 0},
        "kpi.invalid_request",
        "corridors[0].min",
        _policy_version("/kpi/corridors"),
    ),
    Floaty(
        "temperature-max",
        "PUT",
        "/temperature/corridors",
        ADMIN,
        lambda f: {"corridors": [{"parameter": "t", "min": 0, "max": f}], "expected_version": 0},
        "temperature.invalid_request",
        "corridors[0].max",
        _policy_version("/temperature/corridors"),
    ),
    Floaty(
        "budget-limit",
        "PUT",
        "/budget/policy",
        ADMIN,
        lambda f: {"limits": [{"period": "month", "limit": abs(f)}], "expected_version": 0},
        "budget.invalid_request",
        "limits[0].limit",
        _policy_version("/budget/policy"),
    ),
    Floaty(
        "licence-ttl",
        "POST",
        "/firearms/licences",
        ADMIN,
        lambda f: {"licence_type": "lt", "subject_type": "agent", "subject_id": "a1", "ttl_seconds": f},
        "firearms.invalid_request",
        "ttl_seconds",
        lambda c: c.get("/firearms/licences", headers=ADMIN).json()["items"] == [],
    ),
    Floaty(
        "licence-expiry",
        "POST",
        "/firearms/licences",
        ADMIN,
        lambda f: {"licence_type": "lt", "subject_type": "agent", "subject_id": "a1", "expires_at": f},
        "firearms.invalid_request",
        "expires_at",
        lambda c: c.get("/firearms/licences", headers=ADMIN).json()["items"] == [],
    ),
    Floaty(
        "lock-ttl",
        "POST",
        "/strategy-locks",
        MEMBER,
        lambda f: {"action_name": "deploy", "ttl_seconds": f},
        "strategy_lock.invalid_request",
        "ttl_seconds",
        lambda c: c.get("/strategy-locks", headers=MEMBER).json()["items"] == [],
    ),
    Floaty(
        "memory-ttl",
        "POST",
        "/memory",
        MEMBER,
        lambda f: {"session_id": "s1", "key": "k", "value": 1, "ttl_seconds": f},
        "memory.invalid_request",
        "ttl_seconds",
        lambda c: (
            c.get("/memory", params={"session_id": "s1", "key": "k"}, headers=MEMBER).status_code == 404
        ),
    ),
    Floaty(
        "action-cost",
        "POST",
        "/actions/execute",
        MEMBER,
        lambda f: {"action_name": "noop", "subject_type": "agent", "subject_id": "a1", "estimated_cost": f},
        "actions.invalid_request",
        "estimated_cost",
        lambda c: c.get("/budget/usage", headers=MEMBER).json()["items"] == [],
    ),
]


@pytest.mark.parametrize("target", FLOATY, ids=[t.name for t in FLOATY])
def test_a_huge_float_is_422_naming_the_field_and_writes_nothing(
    http: TestClient[Any], target: Floaty
) -> None:
    @HYPOTHESIS
    @given(number=HUGE_FLOATS)
    def attempt(number: float) -> None:
        resp = http.request(target.method, target.path, json=target.body(number), headers=target.auth)
        assert_out_of_range(resp, target.code, target.field)
        assert target.unwritten(http)

    attempt()
    assert_other_tenant_still_writes(http)


def test_a_number_beyond_what_json_floats_hold_is_a_4xx_never_a_5xx(http: TestClient[Any]) -> None:
    for raw in (
        b'{"value": 1, "expected_version": 1e400}',
        b'{"value": 1e400}',
        b'{"value": 1, "expected_version": 123456789012345678901234567890123456789012345678901234567890}',
    ):
        resp = http.put(
            "/blackboard/r/entries/k2", content=raw, headers={**MEMBER, "Content-Type": "application/json"}
        )
        assert 400 <= resp.status_code < 500, (raw, resp.status_code, resp.text)
        assert resp.json()["error"]["http_status"] == resp.status_code
    assert http.get("/blackboard/r/entries/k2", headers=MEMBER).status_code == 404
    assert_other_tenant_still_writes(http)
