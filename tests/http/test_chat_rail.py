"""The chat rail over HTTP: post, list with cursors, idempotency, snapshot, thread list."""

from __future__ import annotations

from typing import Any


def msg(content: Any, key: str | None = None, role: str = "user") -> dict[str, Any]:
    body: dict[str, Any] = {"role": role, "content": content}
    if key is not None:
        body["idempotency_key"] = key
    return body


async def test_three_messages_read_back_with_cursors(client, auth) -> None:
    cursors = []
    for i in range(1, 4):
        r = await client.post("/chat/threads/th_1/messages", json=msg(f"m{i}", f"k{i}"), headers=auth())
        assert r.status_code == 201, r.text
        assert r.json()["seq"] == i and r.json()["replayed"] is False
        cursors.append(r.json()["cursor"])
    r = await client.get("/chat/threads/th_1/messages", headers=auth())
    body = r.json()
    assert [m["content"] for m in body["items"]] == ["m1", "m2", "m3"]
    assert body["has_more"] is False and body["next_cursor"] == cursors[2]
    r = await client.get("/chat/threads/th_1/messages", params={"cursor": cursors[0]}, headers=auth())
    assert [m["content"] for m in r.json()["items"]] == ["m2", "m3"]


async def test_identical_repost_returns_first_result_and_writes_nothing(client, auth) -> None:
    first = await client.post("/chat/threads/th_1/messages", json=msg("hi", "k1"), headers=auth())
    again = await client.post("/chat/threads/th_1/messages", json=msg("hi", "k1"), headers=auth())
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["replayed"] is True
    assert {k: v for k, v in again.json().items() if k != "replayed"} == {
        k: v for k, v in first.json().items() if k != "replayed"
    }
    listed = (await client.get("/chat/threads/th_1/messages", headers=auth())).json()["items"]
    assert len(listed) == 1


async def test_same_key_different_payload_is_422_mismatch(client, auth) -> None:
    await client.post("/chat/threads/th_1/messages", json=msg("hi", "k1"), headers=auth())
    r = await client.post("/chat/threads/th_1/messages", json=msg("bye", "k1"), headers=auth())
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "chat.idempotency_mismatch"


async def test_tampered_cursor_is_410_with_details_cursor(client, auth) -> None:
    r = await client.post("/chat/threads/th_1/messages", json=msg("hi"), headers=auth())
    cursor = r.json()["cursor"]
    tampered = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
    r = await client.get("/chat/threads/th_1/messages", params={"cursor": tampered}, headers=auth())
    assert r.status_code == 410
    err = r.json()["error"]
    assert err["code"] == "chat.cursor_invalid" and err["details"]["cursor"] == tampered
    assert err["http_status"] == 410


async def test_actor_comes_from_the_token_and_body_identity_is_refused(client, auth) -> None:
    r = await client.post(
        "/chat/threads/th_1/messages", json={**msg("hi"), "actor_id": "u_mallory"}, headers=auth()
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "request.validation_failed"
    r = await client.post("/chat/threads/th_1/messages", json=msg("hi"), headers=auth(sub="u_bob"))
    assert r.json()["actor_id"] == "u_bob" and r.json()["user_id"] == "u_bob"


async def test_snapshot_and_thread_list(client, auth) -> None:
    for i in range(3):
        await client.post("/chat/threads/th_s/messages", json=msg(str(i)), headers=auth())
    await client.post("/chat/threads/th_t/messages", json=msg("x"), headers=auth())
    snap = (await client.get("/chat/threads/th_s/snapshot", params={"last": 2}, headers=auth())).json()
    assert snap["thread"]["thread_id"] == "th_s" and snap["head_seq"] == 3
    assert [m["content"] for m in snap["messages"]] == ["1", "2"]
    after_head = await client.get(
        "/chat/threads/th_s/messages", params={"cursor": snap["head_cursor"]}, headers=auth()
    )
    assert after_head.json()["items"] == []
    threads = (await client.get("/chat/threads", headers=auth())).json()
    assert [t["thread_id"] for t in threads["items"]] == ["th_s", "th_t"]
    others = (await client.get("/chat/threads", headers=auth(sub="u_other"))).json()
    assert others["items"] == []


async def test_snapshot_of_missing_thread_is_404_envelope(client, auth) -> None:
    r = await client.get("/chat/threads/nope/snapshot", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["code"] == "chat.not_found"


async def test_viewer_cannot_post(client, auth) -> None:
    r = await client.post("/chat/threads/th_1/messages", json=msg("x"), headers=auth(roles=("viewer",)))
    assert r.status_code == 403 and r.json()["error"]["code"] == "auth.forbidden_role"


async def test_responses_carry_lab_label_and_request_id(client, auth) -> None:
    r = await client.post(
        "/chat/threads/th_1/messages", json=msg("x"), headers=auth(headers={"X-Request-Id": "req-123"})
    )
    assert r.headers["x-request-id"] == "req-123"
    assert r.headers["x-northstar-backend"] == "memory (lab)"
    r = await client.get("/chat/threads/th_1/messages", headers=auth())
    assert len(r.headers["x-request-id"]) >= 16
