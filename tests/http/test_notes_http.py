"""``/notes`` through HTTP with lab tokens: create, read, versioned update (If-Match or body),
stale write, delete, filtered paging with cursors, foreign user and tenant (never data), agent
provenance, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Litestar]


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    details: dict[str, Any] = error["details"]
    return details


async def _create(client: Client, auth: Auth, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "a note")
    body.setdefault("surface_id", "chat")
    resp = await client.post("/notes", json=body, headers=auth())
    assert resp.status_code == 201, resp.text
    note: dict[str, Any] = resp.json()
    return note


async def test_create_and_read_a_note(client: Client, auth: Auth) -> None:
    note = await _create(client, auth, title="Groceries", content="- milk", tags=["home"])
    assert (note["user_id"], note["tenant_id"], note["mode"], note["version"]) == (
        "u_alice",
        "t_alpha",
        "lab",
        1,
    )
    assert note["source"] == {"created_by": "user", "agent_id": None, "run_id": None}
    resp = await client.get(f"/notes/{note['note_id']}", headers=auth())
    assert (resp.status_code, resp.headers["etag"]) == (200, '"1"')
    assert resp.json() == note


async def test_an_agent_token_creates_an_agent_note(client: Client, auth: Auth) -> None:
    resp = await client.post(
        "/notes",
        json={"title": "summary", "surface_id": "canvas"},
        headers=auth(agent_id="agent_1", headers={"X-Run-Id": "run_42"}),
    )
    assert resp.json()["source"] == {"created_by": "agent", "agent_id": "agent_1", "run_id": "run_42"}


async def test_versioned_update_and_stale_write(client: Client, auth: Auth) -> None:
    note = await _create(client, auth)
    url = f"/notes/{note['note_id']}"
    resp = await client.put(
        url, json={"title": "v2", "tags": ["a"]}, headers=auth(headers={"If-Match": '"1"'})
    )
    assert (resp.status_code, resp.json()["version"], resp.json()["title"]) == (200, 2, "v2")
    resp = await client.put(url, json={"title": "v3", "expected_version": 2}, headers=auth())
    assert resp.json()["version"] == 3
    stale = await client.put(url, json={"title": "lost", "expected_version": 2}, headers=auth())
    assert assert_envelope(stale, 409, "notes.version_conflict")["current_version"] == 3
    missing = await client.put(url, json={"title": "no version"}, headers=auth())
    assert_envelope(missing, 422, "notes.invalid_request")
    assert (await client.get(url, headers=auth())).json()["title"] == "v3"


async def test_delete(client: Client, auth: Auth) -> None:
    note = await _create(client, auth)
    url = f"/notes/{note['note_id']}"
    assert_envelope(
        await client.delete(url, headers=auth(headers={"If-Match": '"7"'})), 409, "notes.version_conflict"
    )
    assert (await client.delete(url, headers=auth())).status_code == 204
    assert_envelope(await client.get(url, headers=auth()), 404, "notes.not_found")
    assert_envelope(await client.delete(url, headers=auth()), 404, "notes.not_found")


@pytest.mark.parametrize(
    "other", [{"sub": "u_bob"}, {"tenant_id": "t_beta"}, {"sub": "u_bob", "roles": ("owner",)}]
)
async def test_a_foreign_user_or_tenant_never_gets_the_note(
    client: Client, auth: Auth, other: dict[str, Any]
) -> None:
    note = await _create(client, auth, title="private", content="secret")
    url = f"/notes/{note['note_id']}"
    headers = auth(**other)
    for resp in (
        await client.get(url, headers=headers),
        await client.put(url, json={"title": "hijack", "expected_version": 1}, headers=headers),
        await client.delete(url, headers=headers),
    ):
        assert_envelope(resp, 404, "notes.not_found")
        assert "secret" not in resp.text and "private" not in resp.text
    assert (await client.get("/notes", headers=headers)).json()["items"] == []
    still = (await client.get(url, headers=auth())).json()
    assert (still["title"], still["version"]) == ("private", 1)


async def test_list_filters_and_pages_with_cursors(client: Client, auth: Auth) -> None:
    for i in range(5):
        await _create(
            client, auth, title=f"n{i}", surface_id="canvas" if i % 2 else "chat", tags=[f"t{i % 2}"]
        )
    await _create(client, auth, title="p", project_id="proj1")
    titles: list[str] = []
    params: dict[str, Any] = {"surface_id": "chat", "limit": 2}
    while True:
        page = (await client.get("/notes", params=params, headers=auth())).json()
        titles += [n["title"] for n in page["items"]]
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]
    assert titles == ["n0", "n2", "n4", "p"]
    tagged = (await client.get("/notes", params={"tag": "t1"}, headers=auth())).json()
    assert [n["title"] for n in tagged["items"]] == ["n1", "n3"]
    by_project = (await client.get("/notes", params={"project_id": "proj1"}, headers=auth())).json()
    assert [n["title"] for n in by_project["items"]] == ["p"]
    resp = await client.get(
        "/notes", params={"cursor": page["next_cursor"] or "x"}, headers=auth(sub="u_bob")
    )
    assert_envelope(resp, 410, "notes.cursor_invalid")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"title": "no surface"}, "notes.invalid_request"),
        ({"surface_id": "chat"}, "request.validation_failed"),
        ({"title": "t", "surface_id": "chat", "tags": "notalist"}, "request.validation_failed"),
        ({"title": "t", "surface_id": "chat", "tags": ["two words"]}, "request.validation_failed"),
        ({"title": "t", "surface_id": "chat", "user_id": "u_bob"}, "request.validation_failed"),
        ({"title": "t", "surface_id": "bad surface"}, "request.validation_failed"),
        ({"title": "x" * 501, "surface_id": "chat"}, "request.validation_failed"),
    ],
)
async def test_bad_input_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, body: dict[str, Any], code: str
) -> None:
    assert_envelope(await client.post("/notes", json=body, headers=auth()), 422, code)
    assert (await client.get("/notes", headers=auth())).json()["items"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 500}, {"surface_id": "bad surface"}])
async def test_bad_list_parameters_are_422(client: Client, auth: Auth, params: dict[str, Any]) -> None:
    resp = await client.get("/notes", params=params, headers=auth())
    assert resp.status_code == 422 and resp.json()["error"]["http_status"] == 422
