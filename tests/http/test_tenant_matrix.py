"""Cross-tenant matrix over every endpoint family (SPEC §2.5): zero leaks.

Tenant A (``t_alpha``) writes something into every family — chat, canvas (commands, gestures,
artifacts, audits), timeline, spine events, memory, blackboard, config, notes, tabular,
analytics, firearms/strategy-lock policies, licences, locks, budget policy and usage — every
value carrying the marker :data:`MARK`, and keeps every id and cursor it was given. Then tenant
B's token reads every read path, with A's ids in the path, A's cursors in the query, and in
several identity variants (plain; the *same user id* as A; owner+admin+system roles; headers
naming A's tenant or user). Every response must be free of A's marker, and be 200 (B's own,
empty view), 403 (identity contradiction), 404 or 410 (A's cursor), always as an envelope when
an error. Mutations of A's records by id from B are refused and leave A's data intact.
Identity contradictions are audited on the spine, in B's authenticated identity.

SSE (chat and canvas) runs on a live server: A's cursor as ``Last-Event-ID`` or ``?cursor=`` is
410 before any stream starts, and a stream B opens on A's ids never carries A's events.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from northstar_core.identity import RequestContext
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings

MARK = "zqxalphasecret"
BUDGET_MARK = "12345.5"  # A's budget limit: a number, so the text marker cannot be in it
A_TENANT, A_USER = "t_alpha", "u_alice"
B_TENANT = "t_beta"

Auth = Callable[..., dict[str, str]]

# B's identity variants: (token kwargs, extra headers, expected to be refused outright)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str], bool]] = {
    "plain": ({"sub": "u_bob"}, {}, False),
    "same-user-id-as-A": ({"sub": A_USER}, {}, False),
    "owner-admin-system": (
        {"sub": "u_bob", "roles": ("owner", "admin", "member"), "system": True},
        {},
        False,
    ),
    "header-tenant-A": ({"sub": "u_bob"}, {"X-Tenant-Id": A_TENANT}, True),
    "header-user-A": ({"sub": "u_bob"}, {"X-User-Id": A_USER}, True),
}


def _admin(auth: Auth, tenant: str = A_TENANT, sub: str = A_USER) -> dict[str, str]:
    return auth(tenant, sub, roles=("owner", "admin", "member"))


async def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    body: dict[str, Any] = r.json()
    return body


async def seed_alpha(http: Any, auth: Auth) -> dict[str, Any]:
    """A's data in every family; returns A's ids and every cursor A was handed."""
    h = _admin(auth)
    w: dict[str, Any] = {"cursors": {}}
    cur = w["cursors"]
    # chat
    for i in range(3):
        m = await _ok(
            await http.post(
                "/chat/threads/th_a/messages",
                json={"role": "user", "content": f"{MARK}-chat-{i}", "idempotency_key": f"ka{i}"},
                headers=h,
            )
        )
    cur["chat"] = m["cursor"]
    await _ok(
        await http.post(f"/chat/threads/th{MARK}/messages", json={"role": "user", "content": MARK}, headers=h)
    )
    threads = await _ok(await http.get("/chat/threads", params={"limit": 1}, headers=h))
    cur["chat_threads"] = threads["next_cursor"]
    # canvas
    for rev in range(2):
        c = await _ok(
            await http.post(
                "/canvas/cv_a/commands",
                json={
                    "base_rev": rev,
                    "idempotency_key": f"cv{rev}",
                    "ops": [{"op": "create", "atom_id": f"at{rev}", "kind": "box", "props": {"text": MARK}}],
                },
                headers=h,
            )
        )
    cur["canvas"] = c["cursor"]
    g = await http.post("/canvas/cv_a/gestures", json={"gesture": "point", "data": {"m": MARK}}, headers=h)
    if g.status_code == 201:
        cur["canvas_gesture"] = g.json()["event_id"]
    for kind in ("artifacts", "audits"):
        for i in range(2):
            rec = await _ok(
                await http.post(
                    f"/canvas/cv_a/{kind}",
                    json={
                        "kind": "doc",
                        "body": f"{MARK}-{kind}-{i}",
                        "metadata": {"m": MARK},
                    },
                    headers=h,
                )
            )
        w[f"{kind}_id"] = rec["record_id"]
        page = await _ok(await http.get(f"/canvas/cv_a/{kind}", params={"limit": 1}, headers=h))
        cur[f"canvas_{kind}"] = page["next_cursor"]
    # timeline
    for i in range(2):
        ev = await _ok(
            await http.post(
                "/realtime/timeline/tl_a/append",
                json={"type": "note", "data": {"m": MARK, "i": i}},
                headers=h,
            )
        )
    cur["timeline"] = ev["event_id"]
    # spine
    for i in range(2):
        await _ok(
            await http.post(
                "/events/append",
                json={
                    "event_type": "rl",
                    "source": "agent",
                    "run_id": "run_a",
                    "step_id": f"s{i}",
                    "payload": {"m": MARK},
                },
                headers=h,
            )
        )
    page = await _ok(await http.get("/events/replay", params={"run_id": "run_a", "limit": 1}, headers=h))
    cur["events_replay"] = page["next_cursor"]
    page = await _ok(await http.get("/events/list", params={"limit": 1}, headers=h))
    cur["events_list"] = page["next_cursor"]
    # memory, blackboard, config
    await _ok(await http.post("/memory", json={"session_id": "ses_a", "key": "k", "value": MARK}, headers=h))
    for key in ("k1", "k2"):
        await _ok(await http.put(f"/blackboard/run_a/entries/{key}", json={"value": MARK}, headers=h))
    page = await _ok(await http.get("/blackboard/run_a/entries", params={"limit": 1}, headers=h))
    cur["blackboard"] = page["next_cursor"]
    await _ok(await http.put("/config/tenant", json={"values": {"m": MARK}}, headers=h))
    await _ok(
        await http.put(
            "/config/surface", params={"surface_id": "sf_a"}, json={"values": {"m": MARK}}, headers=h
        )
    )
    # notes
    for i in range(2):
        note = await _ok(
            await http.post("/notes", json={"title": f"{MARK}-{i}", "surface_id": "sf_a"}, headers=h)
        )
    w["note_id"] = note["note_id"]
    page = await _ok(await http.get("/notes", params={"limit": 1}, headers=h))
    cur["notes"] = page["next_cursor"]
    # tabular
    for rid in ("rec_a", "rec_b"):
        await _ok(await http.put(f"/tabular/flows/{rid}", json={"json_blob": {"m": MARK}}, headers=h))
    await _ok(
        await http.put(
            "/tabular/flows/rec_a", json={"json_blob": {"m": MARK, "v": 2}}, headers={**h, "If-Match": '"1"'}
        )
    )
    page = await _ok(await http.get("/tabular/flows", params={"limit": 1}, headers=h))
    cur["tabular"] = page["next_cursor"]
    page = await _ok(await http.get("/tabular/flows/rec_a/versions", params={"limit": 1}, headers=h))
    cur["tabular_versions"] = page["next_cursor"]
    # analytics
    for i in range(2):
        await _ok(
            await http.post("/analytics/events", json={"kind": "custom", "name": f"{MARK}.{i}"}, headers=h)
        )
    page = await _ok(await http.get("/analytics/events", params={"limit": 1}, headers=h))
    cur["analytics"] = page["next_cursor"]
    # policies, licences, locks, budget
    action, lt = f"{MARK}_fire", f"lt{MARK}"
    for path, body in [
        ("/kill-switches", {"actions": [action]}),
        ("/firearms/policy", {"bindings": [{"action_name": action, "licence_type": lt}]}),
        ("/firearms/grants", {"grants": [{"licence_type": lt, "subject_type": "agent"}]}),
        ("/strategy-lock/policy", {"rules": [{"action_name": action}]}),
        ("/budget/policy", {"limits": [{"period": "day", "limit": float(BUDGET_MARK)}]}),
        ("/kpi/corridors", {"corridors": [{"parameter": f"{MARK}_ctr", "min": 0, "max": 1}]}),
        ("/temperature/corridors", {"corridors": [{"parameter": f"{MARK}_t", "max": 1}]}),
    ]:
        await _ok(await http.put(path, json={**body, "expected_version": 0}, headers=h))
    for sid in ("ag_a1", "ag_a2"):
        lic = await _ok(
            await http.post(
                "/firearms/licences",
                json={
                    "licence_type": lt,
                    "subject_type": "agent",
                    "subject_id": sid,
                },
                headers=h,
            )
        )
    w["licence_id"] = lic["licence_id"]
    page = await _ok(await http.get("/firearms/licences", params={"limit": 1}, headers=h))
    cur["licences"] = page["next_cursor"]
    for _ in range(2):
        lock = await _ok(
            await http.post(
                "/strategy-locks", json={"action_name": action, "ttl_seconds": 600, "note": MARK}, headers=h
            )
        )
    w["lock_id"] = lock["lock_id"]
    page = await _ok(await http.get("/strategy-locks", params={"limit": 1}, headers=h))
    cur["locks"] = page["next_cursor"]
    for i in range(2):
        await _ok(
            await http.post(
                "/budget/usage", json={"amount": 1.5, "note": MARK, "idempotency_key": f"b{i}"}, headers=h
            )
        )
    page = await _ok(await http.get("/budget/usage", params={"limit": 1}, headers=h))
    cur["budget"] = page["next_cursor"]
    assert all(cur.values()), {k: v for k, v in cur.items() if not v}
    return w


def read_paths(w: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every read path of every family, with A's ids, and again with each of A's cursors."""
    c = w["cursors"]
    paths: list[tuple[str, dict[str, Any]]] = [
        ("/chat/threads", {}),
        ("/chat/threads", {"cursor": c["chat_threads"]}),
        ("/chat/threads/th_a/messages", {}),
        ("/chat/threads/th_a/messages", {"cursor": c["chat"]}),
        ("/chat/threads/th_a/snapshot", {}),
        ("/canvas/cv_a/snapshot", {}),
        ("/canvas/cv_a/replay", {}),
        ("/canvas/cv_a/replay", {"cursor": c["canvas"]}),
        ("/canvas/cv_a/replay", {"after_event_id": c["canvas"]}),
        ("/canvas/cv_a/artifacts", {}),
        ("/canvas/cv_a/artifacts", {"cursor": c["canvas_artifacts"]}),
        ("/canvas/cv_a/audits", {}),
        ("/canvas/cv_a/audits", {"cursor": c["canvas_audits"]}),
        ("/realtime/timeline/tl_a/list", {}),
        ("/realtime/timeline/tl_a/list", {"cursor": c["timeline"]}),
        ("/events/replay", {"run_id": "run_a"}),
        ("/events/replay", {"run_id": "run_a", "cursor": c["events_replay"]}),
        ("/events/list", {}),
        ("/events/list", {"event_type": "rl"}),
        ("/events/list", {"event_type": "audit"}),
        ("/events/list", {"event_type": "analytics"}),
        ("/events/list", {"event_type": "budget"}),
        ("/events/list", {"cursor": c["events_list"]}),
        ("/memory", {"session_id": "ses_a", "key": "k"}),
        ("/blackboard/run_a/entries", {}),
        ("/blackboard/run_a/entries", {"cursor": c["blackboard"]}),
        ("/blackboard/run_a/entries/k1", {}),
        ("/config/tenant", {}),
        ("/config/surface", {"surface_id": "sf_a"}),
        ("/config/system", {}),
        ("/notes", {}),
        ("/notes", {"surface_id": "sf_a"}),
        ("/notes", {"cursor": c["notes"]}),
        (f"/notes/{w['note_id']}", {}),
        ("/tabular/flows", {}),
        ("/tabular/flows", {"cursor": c["tabular"]}),
        ("/tabular/flows/rec_a", {}),
        ("/tabular/flows/rec_a", {"version": 1}),
        ("/tabular/flows/rec_a/versions", {}),
        ("/tabular/flows/rec_a/versions", {"cursor": c["tabular_versions"]}),
        ("/analytics/events", {}),
        ("/analytics/events", {"cursor": c["analytics"]}),
        ("/kill-switches", {}),
        ("/firearms/policy", {}),
        ("/firearms/grants", {}),
        ("/firearms/licences", {}),
        ("/firearms/licences", {"subject_type": "agent", "subject_id": "ag_a2"}),
        ("/firearms/licences", {"cursor": c["licences"]}),
        ("/firearms/licences/check/agent/ag_a2", {}),
        ("/strategy-lock/policy", {}),
        ("/strategy-locks", {}),
        ("/strategy-locks", {"cursor": c["locks"]}),
        (f"/strategy-locks/{w['lock_id']}", {}),
        ("/budget/policy", {}),
        ("/budget/usage", {}),
        ("/budget/usage", {"cursor": c["budget"]}),
        ("/kpi/corridors", {}),
        ("/temperature/corridors", {}),
    ]
    return paths


def violations_of(r: httpx.Response, refused: bool) -> list[str]:
    """What is wrong with B's answer (empty when it is a clean, leak-free answer)."""
    where = f"{r.request.method} {r.request.url.path}?{r.request.url.query.decode()} -> {r.status_code}"
    out = []
    if MARK in r.text or BUDGET_MARK in r.text:
        out.append(f"LEAK {where}: {r.text[:200]}")
    allowed = (403,) if refused else (200, 404, 410)
    if r.status_code not in allowed:
        out.append(f"status {where}: {r.text[:200]}")
    if r.status_code >= 400:
        err = r.json().get("error", {})
        if err.get("http_status") != r.status_code or not err.get("code") or not err.get("request_id"):
            out.append(f"no envelope {where}: {r.text[:200]}")
    return out


@pytest.fixture
async def alpha_world(client, auth) -> dict[str, Any]:
    return await seed_alpha(client, auth)


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_tenant_b_reads_nothing_of_tenant_a_on_any_read_path(
    client, auth, alpha_world, variant: str
) -> None:
    token_kw, extra, refused = VARIANTS[variant]
    headers = auth(B_TENANT, headers=extra, **token_kw)
    problems: list[str] = []
    reads = read_paths(alpha_world)
    for path, params in reads:
        r = await client.get(path, params=params, headers=headers)
        problems += violations_of(r, refused)
        if (not refused and "cursor" in params) or "after_event_id" in params:
            # a cursor of A's is never a position in B's data
            if r.status_code != 410 and not refused:
                problems.append(f"A's cursor not refused: {path} {params} -> {r.status_code}")
    assert not problems, "\n".join(problems)
    assert len(reads) >= 55


async def test_a_still_reads_its_own_data_on_every_read_path(client, auth, alpha_world) -> None:
    """The matrix is meaningful: the same paths with A's own token do show A's marker."""
    h = _admin(auth)
    blind = []
    for path, params in read_paths(alpha_world):
        if "cursor" in params or "after_event_id" in params or path == "/config/system":
            continue
        r = await client.get(path, params=params, headers=h)
        assert r.status_code == 200, f"{path} {params}: {r.text}"
        if MARK not in r.text and BUDGET_MARK not in r.text and not path.endswith("/versions"):
            blind.append(f"{path} {params}")
    assert not blind, blind


@pytest.mark.parametrize("variant", ["plain", "owner-admin-system"])
async def test_tenant_b_cannot_change_tenant_a_records_by_id(client, auth, alpha_world, variant: str) -> None:
    token_kw, extra, _ = VARIANTS[variant]
    b = auth(B_TENANT, headers=extra, **token_kw)
    w = alpha_world
    attempts = [
        ("POST", f"/firearms/licences/{w['licence_id']}/revoke", {"reason": "hijack"}),
        ("PATCH", f"/strategy-locks/{w['lock_id']}", {"surface_id": "sf_b", "expected_version": 1}),
        ("POST", f"/strategy-locks/{w['lock_id']}/approve", {"note": "hijack"}),
        ("POST", f"/strategy-locks/{w['lock_id']}/reject", {"note": "hijack"}),
        ("PUT", f"/notes/{w['note_id']}", {"title": "hijack", "expected_version": 1}),
        ("DELETE", f"/notes/{w['note_id']}", None),
        ("PUT", "/tabular/flows/rec_a", {"json_blob": "hijack", "expected_version": 2}),
        ("DELETE", "/tabular/flows/rec_a", None),
        ("PUT", "/blackboard/run_a/entries/k1", {"value": "hijack", "expected_version": 1}),
        ("DELETE", "/blackboard/run_a/entries/k1", None),
        (
            "POST",
            "/canvas/cv_a/commands",
            {"base_rev": 2, "idempotency_key": "bx", "ops": [{"op": "delete", "atom_id": "at0"}]},
        ),
    ]
    problems = []
    for method, path, body in attempts:
        params = {"expected_version": 1} if method == "DELETE" else None
        r = await client.request(method, path, json=body, params=params, headers=b)
        if MARK in r.text:
            problems.append(f"LEAK {method} {path}: {r.text[:200]}")
        if r.status_code < 400:
            problems.append(f"{method} {path} accepted: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)
    # A's records are untouched
    h = _admin(auth)
    assert (await client.get("/firearms/licences/check/agent/ag_a2", headers=h)).json()["licences"]
    lock = (await client.get(f"/strategy-locks/{w['lock_id']}", headers=h)).json()
    assert MARK in str(lock) and "sf_b" not in str(lock)
    assert MARK in (await client.get(f"/notes/{w['note_id']}", headers=h)).text
    assert MARK in (await client.get("/tabular/flows/rec_a", headers=h)).text
    assert MARK in (await client.get("/blackboard/run_a/entries/k1", headers=h)).text
    snap = (await client.get("/canvas/cv_a/snapshot", headers=h)).json()
    assert snap["head_rev"] == 2 and set(snap["atoms"]) == {"at0", "at1"}


@pytest.mark.parametrize("variant", ["header-tenant-A", "header-user-A"])
async def test_identity_contradiction_is_audited_in_the_authenticated_identity(
    client, auth, engines, variant: str
) -> None:
    token_kw, extra, _ = VARIANTS[variant]
    r = await client.get("/chat/threads", headers=auth(B_TENANT, headers=extra, **token_kw))
    assert r.status_code == 403 and r.json()["error"]["code"] == "auth.identity_mismatch"
    assert r.json()["error"]["details"]["audited"] is True
    b = RequestContext(tenant_id=B_TENANT, mode="lab", user_id="u_bob", roles=("member",))
    page = await engines.spine.list(b, event_type="audit")
    audits = [e for e in page.items if e.payload.get("action") == "identity_mismatch"]
    assert len(audits) == 1 and audits[0].tenant_id == B_TENANT
    # ... and never in the tenant the header claimed
    a = RequestContext(tenant_id=A_TENANT, mode="lab", user_id=A_USER, roles=("member",))
    leaked = await engines.spine.list(a, event_type="audit")
    assert not [e for e in leaked.items if e.payload.get("action") == "identity_mismatch"]


# --- SSE ---------------------------------------------------------------------------------------

SSE_STREAMS = {"chat": "/sse/chat/th_a", "canvas": "/sse/canvas/cv_a"}


@pytest.fixture
async def live_world(live_server, auth) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        return await seed_alpha(http, auth)


@pytest.mark.parametrize(
    "stream, how, variant",
    list(itertools.product(SSE_STREAMS, ["last-event-id", "cursor-query"], ["plain", "same-user-id-as-A"])),
)
async def test_sse_resume_from_tenant_a_cursor_is_410_before_any_stream(
    live_server, auth, live_world, stream: str, how: str, variant: str
) -> None:
    token_kw, extra, _ = VARIANTS[variant]
    headers = auth(B_TENANT, headers=extra, **token_kw)
    cursor = live_world["cursors"][stream]
    params = {"cursor": cursor} if how == "cursor-query" else {}
    if how == "last-event-id":
        headers["Last-Event-ID"] = cursor
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with http.stream("GET", SSE_STREAMS[stream], params=params, headers=headers) as r:
            body = (await r.aread()).decode()
    assert r.status_code == 410, body
    assert MARK not in body and r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("stream", list(SSE_STREAMS))
async def test_sse_opened_by_b_on_a_ids_never_carries_a_events(
    live_server, auth, live_world, stream: str
) -> None:
    b = auth(B_TENANT, "u_bob")
    a = _admin(auth)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with http.stream("GET", SSE_STREAMS[stream], headers=b) as r:
            assert r.status_code == 200
            # A writes on the same ids, then B does: the first event B sees must be B's.
            if stream == "chat":
                await _ok(
                    await http.post(
                        "/chat/threads/th_a/messages", json={"role": "user", "content": MARK}, headers=a
                    )
                )
                await _ok(
                    await http.post(
                        "/chat/threads/th_a/messages", json={"role": "user", "content": "beta-own"}, headers=b
                    )
                )
            else:
                await _ok(
                    await http.post(
                        "/canvas/cv_a/commands",
                        json={
                            "base_rev": 2,
                            "idempotency_key": "a9",
                            "ops": [{"op": "create", "atom_id": "at9", "kind": "box", "props": {"t": MARK}}],
                        },
                        headers=a,
                    )
                )
                await _ok(
                    await http.post(
                        "/canvas/cv_a/commands",
                        json={
                            "base_rev": 0,
                            "idempotency_key": "b0",
                            "ops": [{"op": "create", "atom_id": "beta-own", "kind": "box"}],
                        },
                        headers=b,
                    )
                )
            seen: list[str] = []

            async def until_own_event() -> None:
                async for line in r.aiter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        seen.append(line)
                        if "beta-own" in line:
                            return

            await asyncio.wait_for(until_own_event(), 10)
    # everything B saw before its own write's event (e.g. its own safety decision) is B's
    assert not [line for line in seen if MARK in line or '"actor_id":"u_bob"' not in line], seen


# --- forged tokens on every family -------------------------------------------------------------

FAMILY_PROBES: list[tuple[str, str, Any]] = [
    ("GET", "/chat/threads/th_a/messages", None),
    ("POST", "/chat/threads/th_a/messages", {"role": "user", "content": "forged"}),
    ("GET", "/canvas/cv_a/snapshot", None),
    ("POST", "/canvas/cv_a/commands", {"base_rev": 2, "idempotency_key": "f", "ops": []}),
    ("GET", "/canvas/cv_a/artifacts", None),
    ("GET", "/sse/chat/th_a", None),
    ("GET", "/sse/canvas/cv_a", None),
    ("GET", "/realtime/timeline/tl_a/list", None),
    ("GET", "/events/list", None),
    ("GET", "/events/replay?run_id=run_a", None),
    ("GET", "/memory?session_id=ses_a&key=k", None),
    ("GET", "/blackboard/run_a/entries", None),
    ("GET", "/config/tenant", None),
    ("GET", "/notes", None),
    ("GET", "/tabular/flows", None),
    ("GET", "/analytics/events", None),
    ("GET", "/kill-switches", None),
    ("GET", "/firearms/licences", None),
    ("GET", "/strategy-locks", None),
    ("GET", "/budget/usage", None),
    ("POST", "/actions/execute", {"action_name": "x", "subject_type": "agent", "subject_id": "a"}),
]


def _forged_tokens() -> dict[str, str]:
    import base64
    import json
    import time

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.conftest import JWT_SECRET

    now = int(time.time())
    good = {
        "sub": A_USER,
        "tenant_id": A_TENANT,
        "mode": "lab",
        "roles": ["owner", "admin"],
        "exp": now + 600,
    }

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg-none": ".".join(
            (b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()), b64(json.dumps(good).encode()), "")
        ),
        "expired": pyjwt.encode({**good, "exp": now - 60}, JWT_SECRET, algorithm="HS256"),
        "nbf-future": pyjwt.encode({**good, "nbf": now + 600}, JWT_SECRET, algorithm="HS256"),
        "wrong-secret": pyjwt.encode(good, "not-the-secret-but-long-enough-123", algorithm="HS256"),
        "hs512": pyjwt.encode(good, JWT_SECRET, algorithm="HS512"),
        "rs256-unknown-key": pyjwt.encode(good, rsa_key, algorithm="RS256"),
    }


@pytest.mark.parametrize("attack", list(_forged_tokens()))
async def test_forged_tokens_are_refused_on_every_family_and_change_nothing(
    client, auth, alpha_world, attack: str
) -> None:
    token = _forged_tokens()[attack]
    problems = []
    for method, path, body in FAMILY_PROBES:
        r = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        err = (
            r.json().get("error", {})
            if r.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if r.status_code != 401 or err.get("code") != "auth.invalid_token" or err.get("http_status") != 401:
            problems.append(f"{attack} {method} {path} -> {r.status_code} {r.text[:150]}")
    assert not problems, "\n".join(problems)
    snap = (await client.get("/chat/threads/th_a/snapshot", headers=_admin(auth))).json()
    assert snap["head_seq"] == 3


async def test_writes_with_contradicting_tenant_header_are_refused_audited_and_write_nothing(
    client, auth, engines, alpha_world
) -> None:
    b = auth(B_TENANT, "u_bob", headers={"X-Tenant-Id": A_TENANT})
    problems = []
    writes = [(m, p, body) for m, p, body in FAMILY_PROBES if m == "POST"]
    for method, path, body in writes:
        r = await client.request(method, path, json=body, headers=b)
        if r.status_code != 403 or r.json()["error"]["code"] != "auth.identity_mismatch":
            problems.append(f"{method} {path} -> {r.status_code} {r.text[:150]}")
    assert not problems, problems
    a = _admin(auth)
    assert (await client.get("/chat/threads/th_a/snapshot", headers=a)).json()["head_seq"] == 3
    assert (await client.get("/canvas/cv_a/snapshot", headers=a)).json()["head_rev"] == 2
    bctx = RequestContext(tenant_id=B_TENANT, mode="lab", user_id="u_bob", roles=("member",))
    audits = [
        e
        for e in (await engines.spine.list(bctx, event_type="audit")).items
        if e.payload.get("action") == "identity_mismatch"
    ]
    assert len(audits) == len(writes)


async def test_routing_views_never_show_another_tenants_overrides(tmp_path, auth) -> None:
    """A tenant's own route override (its tenant id, its table) is its business; only the
    deployment operator (system flag) sees the whole table."""
    connections = {
        **make_settings(tmp_path).connections,
        "tenant_mem": {"backend": "memory", "name": "matrix", "tenant_overrides": True},
    }
    async with AsyncTestClient(app=create_app(make_settings(tmp_path, connections=connections))) as client:
        await _routing_views(client, auth)


async def _routing_views(client: Any, auth: Any) -> None:
    h = _admin(auth)
    override = {"resource_kind": "notes_store", "connection": "tenant_mem", "tenant_id": A_TENANT}
    r = await client.post("/routing/routes", json={**override, "table": MARK}, headers=h)
    assert r.status_code == 200, r.text
    assert A_TENANT in (await client.get("/routing/diagnostics", headers=h)).text
    b = auth(B_TENANT, "u_bob", roles=("owner", "admin", "member"))
    problems = []
    for path in ("/routing/routes", "/routing/diagnostics"):
        r = await client.get(path, headers=b)
        assert r.status_code == 200, r.text
        if A_TENANT in r.text or MARK in r.text:
            problems.append(f"LEAK {path}: {r.text[:300]}")
    assert not problems, "\n".join(problems)
    operator = auth(B_TENANT, "u_ops", roles=("admin",), system=True)
    assert A_TENANT in (await client.get("/routing/diagnostics", headers=operator)).text
