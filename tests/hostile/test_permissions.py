"""Who may write what: analytics needs a member, server-only spine events cannot be forged by a
look-alike type or source, and only a lock's requester (or an admin) may change it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from northstar_core.spine import RESERVED_TYPES
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings
from tests.hostile.test_bounds import headers

MEMBER = headers("t_alpha", "u_alice", "member")
OTHER_MEMBER = headers("t_alpha", "u_bob", "member")
VIEWER = headers("t_alpha", "u_vic", "viewer")


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(make_settings(tmp_path))) as client:
        yield client


def _system() -> dict[str, str]:
    from northstar_http.tokens import mint_token
    from tests.conftest import JWT_SECRET

    token = mint_token(JWT_SECRET, tenant_id="t_alpha", sub="svc", roles=("member",), mode="lab", system=True)
    return {"Authorization": f"Bearer {token}"}


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    details: dict[str, Any] = error["details"]
    return details


# --- analytics ----------------------------------------------------------------------------------


def test_a_viewer_cannot_record_analytics_events(http: TestClient[Any]) -> None:
    event = {"kind": "page_view", "page": "/home"}
    _error(http.post("/analytics/events", json=event, headers=VIEWER), 403, "auth.forbidden_role")
    assert http.get("/analytics/events", headers=MEMBER).json()["items"] == []
    spine = http.get("/events/list", params={"event_type": "analytics"}, headers=MEMBER).json()["items"]
    assert spine == []  # not even the spine event the ingest writes first
    assert http.post("/analytics/events", json=event, headers=MEMBER).status_code == 201
    assert len(http.get("/analytics/events", headers=MEMBER).json()["items"]) == 1


# --- reserved spine types and source -----------------------------------------------------------

SUFFIX = st.from_regex(r"\A[a-z0-9_][a-z0-9_.\-]{0,20}\Z")


def _event(event_type: str, source: str = "ui") -> dict[str, Any]:
    return {"event_type": event_type, "source": source, "run_id": "r1", "step_id": "s1"}


def _listed(http: TestClient[Any], event_type: str) -> list[Any]:
    items: list[Any] = http.get("/events/list", params={"event_type": event_type}, headers=MEMBER).json()[
        "items"
    ]
    return items


def test_the_issue_reproduction_a_forged_audit_sub_type_with_system_source(http: TestClient[Any]) -> None:
    resp = http.post("/events/append", json=_event("audit.identity_mismatch", "system"), headers=MEMBER)
    _error(resp, 403, "event_spine.reserved_event_type")
    assert _listed(http, "audit.identity_mismatch") == []


def test_sub_types_of_every_reserved_type_are_server_only(http: TestClient[Any]) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        name=st.sampled_from(sorted(RESERVED_TYPES)), suffix=SUFFIX, source=st.sampled_from(["ui", "agent"])
    )
    def attempt(name: str, suffix: str, source: str) -> None:
        event_type = f"{name}.{suffix}"[:64]
        details = _error(
            http.post("/events/append", json=_event(event_type, source), headers=MEMBER),
            403,
            "event_spine.reserved_event_type",
        )
        assert details["field"] == "event_type"
        assert _listed(http, event_type) == []

    attempt()
    # the system writes them, and look-alikes that are not sub-types stay open to clients
    assert (
        http.post("/events/append", json=_event("audit.replayed", "system"), headers=_system()).status_code
        == 201
    )
    for free in ("auditing", "budgets", "safety_tips", "strategy_locker"):
        assert http.post("/events/append", json=_event(free), headers=MEMBER).status_code == 201, free


def test_only_the_server_writes_with_the_system_source(http: TestClient[Any]) -> None:
    details = _error(
        http.post("/events/append", json=_event("custom_report", "system"), headers=MEMBER),
        403,
        "event_spine.reserved_event_type",
    )
    assert details["field"] == "source"
    assert _listed(http, "custom_report") == []
    assert (
        http.post("/events/append", json=_event("custom_report", "system"), headers=_system()).status_code
        == 201
    )
    assert (
        http.post("/events/append", json=_event("custom_report", "tool"), headers=MEMBER).status_code == 201
    )
    assert [e["source"] for e in _listed(http, "custom_report")] == ["system", "tool"]


# --- strategy locks -----------------------------------------------------------------------------


def _approved_lock(http: TestClient[Any]) -> dict[str, Any]:
    resp = http.post("/strategy-locks", json={"action_name": "deploy", "surface_id": "s1"}, headers=MEMBER)
    assert resp.status_code == 201, resp.text
    lock_id = resp.json()["lock_id"]
    for reviewer in ("u_r1", "u_r2", "u_r3"):
        resp = http.post(f"/strategy-locks/{lock_id}/approve", headers=headers("t_alpha", reviewer, "admin"))
        assert resp.status_code == 200, resp.text
    lock: dict[str, Any] = http.get(f"/strategy-locks/{lock_id}", headers=MEMBER).json()
    assert lock["status"] == "approved"
    return lock


@pytest.mark.parametrize(
    "patch",
    [{"surface_id": "s2"}, {"action_name": "other"}, {"ttl_seconds": 60}, {"note": "mine now"}],
    ids=["surface", "action", "expiry", "note"],
)
def test_another_member_cannot_change_someone_elses_lock(
    http: TestClient[Any], patch: dict[str, Any]
) -> None:
    lock = _approved_lock(http)
    path = f"/strategy-locks/{lock['lock_id']}"
    details = _error(http.patch(path, json=patch, headers=OTHER_MEMBER), 403, "auth.forbidden")
    assert details["lock_id"] == lock["lock_id"]
    after = http.get(path, headers=MEMBER).json()
    assert (after["status"], after["version"], after["surface_id"], after["note"]) == (
        "approved",
        lock["version"],
        "s1",
        None,
    )


def test_the_requester_or_an_admin_may_rescope_a_lock(http: TestClient[Any]) -> None:
    lock = _approved_lock(http)
    path = f"/strategy-locks/{lock['lock_id']}"
    mine = http.patch(path, json={"surface_id": "s2"}, headers=MEMBER)
    assert mine.status_code == 200, mine.text
    assert (mine.json()["status"], mine.json()["surface_id"]) == ("pending_review", "s2")
    admin = http.patch(path, json={"surface_id": "s3"}, headers=headers("t_alpha", "u_boss", "admin"))
    assert admin.status_code == 200, admin.text
    assert admin.json()["surface_id"] == "s3"
