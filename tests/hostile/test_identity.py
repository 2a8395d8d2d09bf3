"""Identity values that try to pass for another: trailing newlines, colliding partition
segments, and identity headers repeated with different values.

* Every id/tenant grammar is matched against the whole value: ``$`` alone lets "a\\n" through.
* A token subject becomes a partition segment through one injective encoding, so no subject
  can choose a name that lands in another subject's chat index, memory or notes.
* An identity header sent twice with different values is a 403 mismatch, audited like any
  other contradiction.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar_core.errors import NorthstarError
from northstar_core.identity import HEADER_FIELDS, Claims, RequestContext, resolve_context
from northstar_core.scope import check_id, subject_segment

ROOT = Path(__file__).resolve().parents[2]
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
ALPHA = RequestContext(tenant_id="t_alpha", mode="lab", user_id="u_alice", roles=("member",))
MESSAGE = {"role": "user", "content": "hello", "idempotency_key": "k1"}


def envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert (err["code"], err["http_status"]) == (code, status), err
    details: dict[str, Any] = err["details"]
    return details


# --- full-match grammars ---------------------------------------------------------------------


near_ids = st.builds(
    lambda body, tail: body + tail,
    st.text(alphabet=ID_CHARS, min_size=0, max_size=201),
    st.sampled_from(["", "\n", "\r\n", " ", "|", "\x00"]),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=210), near_ids))
def test_check_id_accepts_exactly_the_id_grammar(value: str) -> None:
    expected = 1 <= len(value) <= 200 and all(c in ID_CHARS for c in value)
    try:
        assert check_id("chat", "thread_id", value) == value
    except NorthstarError as err:
        assert not expected, value
        assert (err.code, err.http_status) == ("chat.invalid_id", 422)
    else:
        assert expected, value


@given(st.text(alphabet=ID_CHARS, min_size=1, max_size=199), st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_a_valid_id_with_a_trailing_newline_is_refused(value: str, tail: str) -> None:
    with pytest.raises(NorthstarError):
        check_id("chat", "thread_id", value + tail)


@pytest.mark.parametrize("tenant", ["t_a\n", "t_alpha\n", "t_a\r\n"])
def test_a_tenant_with_a_trailing_newline_is_refused_by_the_precedence_rule(tenant: str) -> None:
    with pytest.raises(NorthstarError) as info:
        resolve_context(Claims(sub="u", tenant_id=tenant, mode="lab"), {})
    assert (info.value.code, info.value.details["field"]) == ("auth.invalid_identity", "tenant_id")


@pytest.mark.parametrize("field", ["project_id", "surface_id", "app_id", "run_id", "step_id", "trace_id"])
def test_an_optional_id_with_a_trailing_newline_is_refused(field: str) -> None:
    with pytest.raises(NorthstarError) as info:
        resolve_context(Claims(sub="u", tenant_id="t_a", mode="lab"), {field: "x1\n"})
    assert info.value.details["field"] == field


async def test_a_thread_id_with_a_trailing_newline_is_422_and_creates_nothing(client, auth) -> None:
    resp = await client.post("/chat/threads/a%0A/messages", json=MESSAGE, headers=auth())
    assert envelope(resp, 422, "chat.invalid_id")["field"] == "thread_id"
    assert (await client.get("/chat/threads", headers=auth())).json()["items"] == []


async def test_a_token_tenant_with_a_trailing_newline_is_not_a_tenant(client, auth) -> None:
    resp = await client.get("/chat/threads", headers=auth(tenant_id="t_alpha\n"))
    details = envelope(resp, 401, "auth.invalid_token")
    assert details == {"reason": "invalid_claim", "claim": "tenant_id"}


NL = "\n"
# (method, url, body): "{nl}" is "" for the control request and a newline for the attack
SURFACES: dict[str, tuple[str, str, Any]] = {
    "memory-session": ("GET", "/memory?session_id=s1{nl}", None),
    "memory-key": ("POST", "/memory", {"session_id": "s1", "key": "k{nl}", "value": 1}),
    "note-tag": ("POST", "/notes", {"title": "t", "surface_id": "chat", "tags": ["home{nl}"]}),
    "note-surface": ("POST", "/notes", {"title": "t", "surface_id": "chat{nl}"}),
    "event-type": ("GET", "/events/list?event_type=x.y{nl}", None),
    "timeline-stream": ("POST", "/realtime/timeline/s1{nl}/append", {"type": "x"}),
    "timeline-type": ("POST", "/realtime/timeline/s1/append", {"type": "x{nl}"}),
    "analytics-name": ("POST", "/analytics/events", {"kind": "custom", "name": "x.y{nl}"}),
    "budget-period": ("GET", "/budget/usage?period=2024-01{nl}", None),
}


def _fill(template: Any, nl: str) -> Any:
    if isinstance(template, str):
        return template.replace("{nl}", nl)
    if isinstance(template, dict):
        return {k: _fill(v, nl) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, nl) for v in template]
    return template


@pytest.mark.parametrize("surface", list(SURFACES))
async def test_trailing_newlines_are_refused_on_every_surface(client, auth, surface: str) -> None:
    method, url, body = SURFACES[surface]
    headers = auth(roles=("owner", "admin"))
    control = await client.request(method, _fill(url, ""), json=_fill(body, ""), headers=headers)
    assert control.status_code in (200, 201), control.text  # the same request without the newline
    resp = await client.request(method, _fill(url, "%0A"), json=_fill(body, NL), headers=headers)
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["error"]["http_status"] == resp.status_code


async def test_a_budget_period_in_other_scripts_digits_is_refused(client, auth) -> None:
    headers = auth(roles=("owner", "admin"))
    assert (await client.get("/budget/usage?period=2024-01", headers=headers)).status_code == 200
    arabic_indic = "\u0662\u0660\u0662\u0664-\u0660\u0661"  # "2024-01" in Arabic-Indic digits
    resp = await client.get("/budget/usage?period=" + quote(arabic_indic), headers=headers)
    assert resp.status_code == 422, resp.text


def test_no_validation_pattern_stops_at_a_trailing_newline() -> None:
    """Every compiled grammar is applied with fullmatch; every msgspec ``pattern`` (searched by
    msgspec, so ``$`` alone accepts "x\\n") refuses the newline explicitly."""
    offenders: list[str] = []
    for package in ("northstar_core", "northstar_http", "northstar_adapters"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\b_?[A-Z][A-Z_]*\.match\(", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
                for pattern in re.findall(r"pattern=r?\"([^\"]*)\"", line):
                    if pattern.endswith("$") or "$|" in pattern:
                        offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


# --- one injective subject encoding ------------------------------------------------------------

subjects = st.one_of(
    st.text(alphabet=ID_CHARS, min_size=1, max_size=200),
    st.text(min_size=1, max_size=60),
    st.builds(lambda s: "h_" + hashlib.sha256(s.encode()).hexdigest()[:40], st.text(max_size=20)),
    st.builds(lambda s: "~" + hashlib.sha256(s.encode()).hexdigest(), st.text(max_size=20)),
    st.builds(lambda s: "~" + hashlib.sha256(s.encode()).hexdigest()[:32], st.text(max_size=20)),
)


@settings(max_examples=500)
@given(subjects)
def test_a_segment_is_the_plain_id_or_a_hash_no_plain_id_can_be(subject: str) -> None:
    segment = subject_segment(subject)
    if 1 <= len(subject) <= 200 and all(c in ID_CHARS for c in subject):
        assert segment == subject  # existing partitions of plain-id users are unchanged
    else:
        assert segment == "~" + hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    assert "|" not in segment and "/" not in segment  # partition and stream separators


@settings(max_examples=500)
@given(subjects, subjects)
def test_distinct_subjects_never_share_a_segment(a: str, b: str) -> None:
    assert (subject_segment(a) == subject_segment(b)) == (a == b)


@given(st.text(min_size=1, max_size=60))
def test_a_subject_named_after_anothers_segment_gets_its_own(subject: str) -> None:
    squatter = subject_segment(subject)
    assert subject_segment(squatter) != squatter or squatter == subject


VICTIM = "auth0|victim"
SQUATTERS = {
    "old-chat-form": "h_" + hashlib.sha256(VICTIM.encode()).hexdigest()[:40],
    "old-memory-form": "~" + hashlib.sha256(VICTIM.encode()).hexdigest()[:32],
    "current-form": subject_segment(VICTIM),
}


@pytest.mark.parametrize("squatter", list(SQUATTERS.values()), ids=list(SQUATTERS))
async def test_a_subject_cannot_squat_on_anothers_chat_index(client, auth, squatter: str) -> None:
    resp = await client.post("/chat/threads/secret/messages", json=MESSAGE, headers=auth(sub=VICTIM))
    assert resp.status_code == 201, resp.text
    mine = await client.get("/chat/threads", headers=auth(sub=VICTIM))
    assert [t["thread_id"] for t in mine.json()["items"]] == ["secret"]
    theirs = await client.get("/chat/threads", headers=auth(sub=squatter))
    assert theirs.status_code == 200 and theirs.json()["items"] == []


@pytest.mark.parametrize("squatter", list(SQUATTERS.values()), ids=list(SQUATTERS))
async def test_a_subject_cannot_squat_on_anothers_memory_and_notes(client, auth, squatter: str) -> None:
    body = {"session_id": "s1", "key": "k", "value": "secret"}
    assert (await client.post("/memory", json=body, headers=auth(sub=VICTIM))).status_code == 200
    note_body = {"title": "secret", "surface_id": "chat"}
    note = await client.post("/notes", json=note_body, headers=auth(sub=VICTIM))
    assert note.status_code == 201, note.text
    mine = await client.get("/memory?session_id=s1", headers=auth(sub=VICTIM))
    assert [i["value"] for i in mine.json()["items"]] == ["secret"]
    theirs = await client.get("/memory?session_id=s1", headers=auth(sub=squatter))
    assert theirs.status_code == 200 and theirs.json()["items"] == []
    assert (await client.get("/notes", headers=auth(sub=squatter))).json()["items"] == []
    resp = await client.get(f"/notes/{note.json()['note_id']}", headers=auth(sub=squatter))
    assert resp.status_code == 404


# --- repeated identity headers -----------------------------------------------------------------
#
# Litestar's test client (through httpx) folds repeated headers into one comma-separated line
# before the app sees them, so the repeated-line cases go through a live server and a raw socket.

# header -> (the value the token implies or a valid one, a different valid value)
VALUES = {
    "x-tenant-id": ("t_alpha", "t_beta"),
    "x-mode": ("lab", "saas"),
    "x-user-id": ("u_alice", "u_bob"),
    "x-project-id": ("p1", "p2"),
    "x-surface-id": ("s1", "s2"),
    "x-app-id": ("a1", "a2"),
    "x-run-id": ("r1", "r2"),
    "x-step-id": ("st1", "st2"),
    "x-trace-id": ("tr1", "tr2"),
}
assert set(VALUES) == set(HEADER_FIELDS)


async def _raw_get(url: str, header_lines: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """A GET written byte for byte on a socket: every header line reaches the server as sent."""
    import asyncio
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in header_lines]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" not in head.lower()
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _lines(auth: Any, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*auth(project_id="p1").items(), *pairs]


async def _audits(live_server: Any) -> list[dict[str, Any]]:
    page = await live_server.app.state.engines.spine.list(ALPHA, event_type="audit")
    return [e.payload for e in page.items if e.payload.get("action") == "identity_mismatch"]


@pytest.mark.parametrize("header", sorted(VALUES))
async def test_an_identity_header_repeated_with_different_values_is_403_and_audited(
    live_server, auth, header: str
) -> None:
    first, second = VALUES[header]
    url = live_server.url + "/chat/threads"
    status, body = await _raw_get(url, _lines(auth, [(header, first), (header, second)]))
    assert status == 403 and body["error"]["code"] == "auth.identity_mismatch", body
    details = body["error"]["details"]
    assert details["field"] == HEADER_FIELDS[header]
    assert details["reason"] == "conflicting_values" and details["presented"] == [first, second]
    assert details["audited"] is True
    audits = await _audits(live_server)
    assert [(a["field"], a["reason"]) for a in audits] == [(HEADER_FIELDS[header], "conflicting_values")]


@pytest.mark.parametrize(
    "pairs",
    [
        [("X-Tenant-Id", "t_beta"), ("X-Tenant-Id", "t_alpha")],
        [("X-Tenant-Id", "t_alpha"), ("x-tenant-id", "t_beta")],  # names differ only in case
        [("X-Tenant-Id", "t_alpha"), ("X-Tenant-Id", "")],  # an empty copy is still a different one
        [("X-Surface-Id", "s1"), ("X-Surface-Id", "s1"), ("X-Surface-Id", "s2")],
        [("X-Surface-Id", "s1"), ("X-Surface-Id", "s1, s2")],
    ],
    ids=["first-differs", "case", "empty-second", "third-differs", "folded-second"],
)
async def test_any_differing_copy_is_refused(live_server, auth, pairs: list[tuple[str, str]]) -> None:
    status, body = await _raw_get(live_server.url + "/chat/threads", _lines(auth, pairs))
    assert status == 403 and body["error"]["code"] == "auth.identity_mismatch", body
    assert body["error"]["details"]["reason"] == "conflicting_values"


@pytest.mark.parametrize("header", sorted(VALUES))
async def test_identical_copies_of_an_identity_header_are_accepted(live_server, auth, header: str) -> None:
    value = VALUES[header][0]
    url = live_server.url + "/chat/threads"
    status, body = await _raw_get(url, _lines(auth, [(header, value), (header, value)]))
    assert status == 200, body
    assert await _audits(live_server) == []


@pytest.mark.parametrize(
    ("value", "status"),
    [("t_alpha, t_alpha", 200), ("t_alpha,t_alpha", 200), ("t_alpha, t_beta", 403), ("t_beta, t_alpha", 403)],
)
async def test_a_folded_header_line_counts_as_its_copies(client, auth, value: str, status: int) -> None:
    resp = await client.get("/chat/threads", headers=auth(headers={"X-Tenant-Id": value}))
    assert resp.status_code == status, resp.text
    if status == 403:
        assert resp.json()["error"]["details"]["reason"] == "conflicting_values"


async def test_a_conflicting_tenant_header_is_audited_in_the_tokens_tenant(live_server, auth) -> None:
    pairs = [("X-Tenant-Id", "t_alpha"), ("X-Tenant-Id", "t_beta")]
    status, _ = await _raw_get(live_server.url + "/chat/threads", _lines(auth, pairs))
    assert status == 403
    engines = live_server.app.state.engines
    beta = RequestContext(tenant_id="t_beta", mode="lab", user_id="u_bob", roles=("member",))
    assert (await engines.spine.list(beta, event_type="audit")).items == []
    assert [a["presented"] for a in await _audits(live_server)] == [str(["t_alpha", "t_beta"])]
