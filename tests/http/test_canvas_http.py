"""The canvas rail over HTTP: commands, conflicts, snapshot, replay, gestures, records, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
Auth = Callable[..., dict[str, str]]


def create(atom_id: str, **props: Any) -> dict[str, Any]:
    return {"op": "create", "atom_id": atom_id, "kind": "box", "props": props}


def update(atom_id: str, **patch: Any) -> dict[str, Any]:
    return {"op": "update", "atom_id": atom_id, "patch": patch}


async def commit(client: Client, h: dict[str, str], base_rev: int, *ops: Any, key: str, c: str = "c1") -> Any:
    return await client.post(
        f"/canvas/{c}/commands",
        json={"base_rev": base_rev, "ops": list(ops), "idempotency_key": key},
        headers=h,
    )


def err(r: Any) -> tuple[int, str]:
    body = r.json()
    assert body["error"]["http_status"] == r.status_code, body
    return r.status_code, body["error"]["code"]


async def test_command_commits_and_the_same_key_replays_the_original_result(
    client: Client, auth: Auth
) -> None:
    h = auth()
    r = await commit(client, h, 0, create("a", x=1), key="k1")
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["canvas_id"], first["head_rev"], first["applied_ops"], first["replayed"]) == (
        "c1",
        1,
        1,
        False,
    )
    assert (await commit(client, h, 1, create("b"), key="k2")).status_code == 201
    again = await commit(client, h, 0, create("a", x=1), key="k1")
    assert again.status_code == 200
    assert again.json() == {**first, "replayed": True}
    snap = (await client.get("/canvas/c1/snapshot", headers=h)).json()
    assert (snap["head_rev"], snap["order"], snap["atoms"]["a"]) == (
        2,
        ["a", "b"],
        {"kind": "box", "props": {"x": 1}},
    )
    r = await commit(client, h, 0, create("zz"), key="k1")
    assert err(r) == (422, "canvas.idempotency_mismatch")


async def test_two_clients_on_base_rev_5_exactly_one_commits_rev_6(client: Client, auth: Auth) -> None:
    alice, bob = auth(sub="u_alice"), auth(sub="u_bob")
    await commit(client, alice, 0, create("base"), key="init")
    for rev in range(1, 5):
        await commit(client, alice, rev, update("base", n=rev), key=f"init{rev}")
    ra, rb = await asyncio.gather(
        commit(client, alice, 5, create("from_alice"), key="ka"),
        commit(client, bob, 5, create("from_bob"), key="kb"),
    )
    assert sorted([ra.status_code, rb.status_code]) == [201, 409]
    won, lost = (ra, rb) if ra.status_code == 201 else (rb, ra)
    assert won.json()["head_rev"] == 6
    details = lost.json()["error"]["details"]
    assert lost.json()["error"]["code"] == "canvas.rev_conflict"
    assert details["expected_rev"] == 6 and details["snapshot_required"] is False
    winner_atom = "from_alice" if won is ra else "from_bob"
    assert [(r["rev"], r["ops"][0]["atom_id"]) for r in details["recovery_ops"]] == [(6, winner_atom)]
    loser_h, loser_atom, loser_key = (bob, "from_bob", "kb") if won is ra else (alice, "from_alice", "ka")
    retried = await commit(client, loser_h, 6, create(loser_atom), key=loser_key)
    assert retried.status_code == 201 and retried.json()["head_rev"] == 7
    sa = (await client.get("/canvas/c1/snapshot", headers=alice)).json()
    sb = (await client.get("/canvas/c1/snapshot", headers=bob)).json()
    assert sa == sb and sorted(sa["atoms"]) == ["base", "from_alice", "from_bob"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {
                "base_rev": 0,
                "ops": [{"op": "update", "atom_id": "ghost", "patch": {}}],
                "idempotency_key": "k",
            },
            422,
            "canvas.op_invalid",
        ),
        (
            {"base_rev": 0, "ops": [{"op": "create", "atom_id": "a"}], "idempotency_key": "k"},
            422,
            "canvas.op_invalid",
        ),
        ({"base_rev": 3, "ops": [create("a")], "idempotency_key": "k"}, 422, "canvas.rev_invalid"),
        ({"base_rev": 0, "ops": [create("a")]}, 422, "canvas.invalid_request"),
        (
            {"base_rev": 0, "ops": [create("a")], "idempotency_key": "k", "actor_id": "u_mallory"},
            403,
            "canvas.actor_mismatch",
        ),
        (
            {"base_rev": 0, "ops": [create("a", blob="x" * 40_000)], "idempotency_key": "k"},
            413,
            "canvas.props_too_large",
        ),
        (
            {"base_rev": 0, "ops": [create(f"a{i}") for i in range(201)], "idempotency_key": "k"},
            422,
            "canvas.too_many_ops",
        ),
        ({"base_rev": 0, "ops": [create("a")], "idempotency_key": "bad key!"}, 422, "canvas.invalid_id"),
    ],
)
async def test_bad_command_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, body: dict[str, Any], status: int, code: str
) -> None:
    h = auth()
    r = await client.post("/canvas/c1/commands", json=body, headers=h)
    assert err(r) == (status, code)
    snap = (await client.get("/canvas/c1/snapshot", headers=h)).json()
    assert (snap["head_rev"], snap["atoms"]) == (0, {})
    assert (await client.get("/canvas/c1/replay", headers=h)).json()["items"] == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'{"base_rev": "x", "ops": [], "idempotency_key": "k"}',
        b'{"base_rev": 0, "ops": [], "extra": 1}',
    ],
)
async def test_malformed_command_body_is_an_envelope_never_a_500(
    client: Client, auth: Auth, raw: bytes
) -> None:
    h = {**auth(), "Content-Type": "application/json"}
    r = await client.post("/canvas/c1/commands", content=raw, headers=h)
    assert 400 <= r.status_code < 500
    err(r)


async def test_replay_pages_committed_events_and_after_event_id_is_an_alias(
    client: Client, auth: Auth
) -> None:
    h = auth()
    for rev in range(3):
        await commit(client, h, rev, create(f"a{rev}"), key=f"k{rev}")
    everything = (await client.get("/canvas/c1/replay", headers=h)).json()["items"]
    # every command passed the gate first: its safety decision precedes its op_committed
    assert [e["type"] for e in everything] == ["safety_decision", "op_committed"] * 3
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, "types": "op_committed", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/canvas/c1/replay", params=params, headers=h)).json()
        seen += [e["data"]["rev"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [1, 2, 3]
    first_id = next(e["event_id"] for e in everything if e["type"] == "op_committed")
    params = {"after_event_id": first_id, "types": "op_committed"}
    by_id = (await client.get("/canvas/c1/replay", params=params, headers=h)).json()
    assert [e["data"]["rev"] for e in by_id["items"]] == [2, 3]
    r = await client.get("/canvas/c1/replay", params={"cursor": first_id[:-3] + "abc"}, headers=h)
    assert err(r) == (410, "canvas.cursor_invalid")
    assert r.json()["error"]["details"]["cursor"] == first_id[:-3] + "abc"


async def test_gestures_go_to_the_stream_and_obey_the_toggle(client: Client, auth: Auth) -> None:
    h = auth()
    r = await client.post("/canvas/c1/gestures", json={"gesture": "pointer", "data": {"x": 1}}, headers=h)
    assert r.status_code == 201, r.text
    assert (r.json()["type"], r.json()["data"]["data"]) == ("gesture", {"x": 1})
    assert (await client.get("/canvas/c1/snapshot", headers=h)).json()["head_rev"] == 0
    admin = auth(roles=("admin",))
    r = await client.put("/config/tenant", json={"values": {"canvas.gestures_enabled": False}}, headers=admin)
    assert r.status_code in (200, 201), r.text
    r = await client.post("/canvas/c1/gestures", json={"gesture": "pointer"}, headers=h)
    assert err(r) == (403, "canvas.gestures_disabled")
    page = (await client.get("/canvas/c1/replay", params={"types": "gesture"}, headers=h)).json()
    assert len(page["items"]) == 1


async def test_artifacts_and_audits_are_hashed_listed_and_audited(client: Client, auth: Auth) -> None:
    h = auth()
    r = await client.post(
        "/canvas/c1/artifacts", json={"kind": "image", "body": "hello", "idempotency_key": "a1"}, headers=h
    )
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["content_hash"] == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    again = await client.post(
        "/canvas/c1/artifacts", json={"kind": "image", "body": "hello", "idempotency_key": "a1"}, headers=h
    )
    assert again.status_code == 200 and again.json()["record_id"] == art["record_id"]
    r = await client.post(
        "/canvas/c1/audits", json={"kind": "review", "uri": "s3://b/report.json"}, headers=h
    )
    assert r.status_code == 201
    arts = (await client.get("/canvas/c1/artifacts", headers=h)).json()
    auds = (await client.get("/canvas/c1/audits", headers=h)).json()
    assert [a["record_id"] for a in arts["items"]] == ["art_1"]
    assert [a["uri"] for a in auds["items"]] == ["s3://b/report.json"]
    spine = (await client.get("/events/list", params={"event_type": "audit"}, headers=h)).json()
    audited = [(e["payload"]["action"], e["payload"]["replayed"]) for e in spine["items"]]
    assert audited == [
        ("canvas.artifact_recorded", False),
        ("canvas.artifact_recorded", True),
        ("canvas.audit_recorded", False),
    ]
    r = await client.post(
        "/canvas/c1/artifacts", json={"kind": "image", "body": "x", "uri": "s3://y"}, headers=h
    )
    assert err(r) == (422, "canvas.invalid_request")


async def test_no_canvas_endpoint_cursor_or_stream_crosses_tenants(client: Client, auth: Auth) -> None:
    a, b = auth("t_alpha"), auth("t_beta")
    done = (await commit(client, a, 0, create("secret"), key="k")).json()
    await client.post("/canvas/c1/gestures", json={"gesture": "pointer"}, headers=a)
    await client.post("/canvas/c1/artifacts", json={"kind": "x", "body": "secret"}, headers=a)
    await client.post("/canvas/c1/audits", json={"kind": "x", "body": "secret"}, headers=a)
    snap = (await client.get("/canvas/c1/snapshot", headers=b)).json()
    assert (snap["head_rev"], snap["atoms"]) == (0, {})
    assert (await client.get("/canvas/c1/replay", headers=b)).json()["items"] == []
    assert (await client.get("/canvas/c1/artifacts", headers=b)).json()["items"] == []
    assert (await client.get("/canvas/c1/audits", headers=b)).json()["items"] == []
    assert (await client.get("/realtime/timeline/canvas:c1/list", headers=b)).json()["items"] == []
    a_art = (await client.get("/canvas/c1/artifacts", headers=a)).json()["next_cursor"]
    for path, params in [
        ("/canvas/c1/replay", {"cursor": done["cursor"]}),
        ("/canvas/c1/replay", {"after_event_id": done["cursor"]}),
        ("/sse/canvas/c1", {"cursor": done["cursor"]}),
        ("/canvas/c1/artifacts", {"cursor": a_art}),
        ("/realtime/timeline/canvas:c1/list", {"cursor": done["cursor"]}),
    ]:
        r = await client.get(path, params=params, headers=b)
        assert r.status_code == 410, (path, r.text)
    # the tenant header cannot talk a token into another tenant
    r = await client.get("/canvas/c1/snapshot", headers={**b, "X-Tenant-Id": "t_alpha"})
    assert r.status_code in (401, 403)
    # a cursor of one canvas is not a cursor of another canvas of the same tenant
    r = await client.get("/canvas/c2/replay", params={"cursor": done["cursor"]}, headers=a)
    assert err(r) == (410, "canvas.cursor_invalid")


@pytest.mark.parametrize(
    ("action", "path", "body"),
    [
        (
            "canvas_command",
            "/canvas/c1/commands",
            {"base_rev": 0, "ops": [create("a")], "idempotency_key": "k"},
        ),
        ("canvas_gesture", "/canvas/c1/gestures", {"gesture": "pointer"}),
    ],
)
async def test_a_kill_switch_blocks_canvas_actions_through_the_real_gate_chain(
    client: Client, auth: Auth, action: str, path: str, body: dict[str, Any]
) -> None:
    admin = auth(sub="u_admin", roles=("admin",))
    r = await client.put("/kill-switches", json={"actions": [action], "expected_version": 0}, headers=admin)
    assert r.status_code == 201, r.text
    h = auth()
    r = await client.post(path, json=body, headers=h)
    error = r.json()["error"]
    assert (r.status_code, error["gate"], error["code"]) == (
        403,
        "kill_switch",
        "gate.kill_switch.action_blocked",
    )
    assert (await client.get("/canvas/c1/snapshot", headers=h)).json()["head_rev"] == 0
    events = (await client.get("/canvas/c1/replay", headers=h)).json()["items"]
    assert [(e["type"], e["data"]["decision"], e["data"]["action_name"]) for e in events] == [
        ("safety_decision", "deny", action)
    ]
