"""``/blackboard`` through HTTP with lab tokens: create, read (ETag), CAS update (body or
If-Match), stale write, delete, paging, foreign tenant, size limit, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_http.bootstrap import create_app
from tests.conftest import make_settings

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Litestar]
URL = "/blackboard/run1/entries"


@pytest.fixture
def app(tmp_path: Any) -> Litestar:
    route = {"resource_kind": "blackboard_store", "connection": "mem", "options": {"max_value_bytes": 256}}
    return create_app(make_settings(tmp_path, routes=[route]))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as c:
        yield c


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    assert error["request_id"] == resp.headers["x-request-id"]
    details: dict[str, Any] = error["details"]
    return details


async def test_create_returns_201_with_etag_and_lab_label(client: Client, auth: Auth) -> None:
    resp = await client.put(f"{URL}/plan", json={"value": {"steps": [1, 2]}}, headers=auth())
    assert resp.status_code == 201, resp.text
    assert resp.headers["etag"] == '"1"'
    assert resp.headers["x-northstar-backend"] == "memory (lab)"
    body = resp.json()
    assert (body["key"], body["run_id"], body["version"], body["value"]) == (
        "plan",
        "run1",
        1,
        {"steps": [1, 2]},
    )
    assert body["updated_by"] == "u_alice"


async def test_read_returns_the_entry_and_its_etag(client: Client, auth: Auth) -> None:
    await client.put(f"{URL}/k", json={"value": "v"}, headers=auth())
    resp = await client.get(f"{URL}/k", headers=auth())
    assert resp.status_code == 200
    assert resp.headers["etag"] == '"1"'
    assert resp.json()["value"] == "v"


async def test_update_with_if_match_or_body_version(client: Client, auth: Auth) -> None:
    await client.put(f"{URL}/k", json={"value": 1}, headers=auth())
    resp = await client.put(f"{URL}/k", json={"value": 2}, headers=auth(headers={"If-Match": '"1"'}))
    assert (resp.status_code, resp.headers["etag"]) == (200, '"2"')
    resp = await client.put(f"{URL}/k", json={"value": 3, "expected_version": 2}, headers=auth())
    assert (resp.status_code, resp.json()["version"], resp.json()["value"]) == (200, 3, 3)


async def test_create_only_on_an_existing_key_is_409(client: Client, auth: Auth) -> None:
    await client.put(f"{URL}/k", json={"value": 1}, headers=auth())
    resp = await client.put(f"{URL}/k", json={"value": 2}, headers=auth())
    details = assert_envelope(resp, 409, "blackboard.version_conflict")
    assert details["current_version"] == 1
    assert (await client.get(f"{URL}/k", headers=auth())).json()["value"] == 1


async def test_stale_write_is_409_with_the_current_version(client: Client, auth: Auth) -> None:
    await client.put(f"{URL}/k", json={"value": 1}, headers=auth())
    await client.put(f"{URL}/k", json={"value": 2, "expected_version": 1}, headers=auth())
    resp = await client.put(f"{URL}/k", json={"value": 9}, headers=auth(headers={"If-Match": '"1"'}))
    details = assert_envelope(resp, 409, "blackboard.version_conflict")
    assert details["current_version"] == 2
    assert (await client.get(f"{URL}/k", headers=auth())).json()["value"] == 2


async def test_delete_removes_the_entry_and_a_stale_delete_is_409(client: Client, auth: Auth) -> None:
    await client.put(f"{URL}/k", json={"value": 1}, headers=auth())
    await client.put(f"{URL}/k", json={"value": 2, "expected_version": 1}, headers=auth())
    stale = await client.delete(f"{URL}/k", headers=auth(headers={"If-Match": '"1"'}))
    assert_envelope(stale, 409, "blackboard.version_conflict")
    resp = await client.delete(f"{URL}/k?expected_version=2", headers=auth())
    assert resp.status_code == 204
    assert_envelope(await client.get(f"{URL}/k", headers=auth()), 404, "blackboard.not_found")


async def test_list_pages_with_cursors(client: Client, auth: Auth) -> None:
    for i in range(5):
        await client.put(f"{URL}/k{i}", json={"value": i}, headers=auth())
    keys: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        page = (await client.get(URL, params=params, headers=auth())).json()
        keys += [e["key"] for e in page["items"]]
        pages += 1
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]
    assert keys == [f"k{i}" for i in range(5)]
    assert pages == 3


async def test_a_foreign_tenant_never_sees_entries_or_uses_cursors(client: Client, auth: Auth) -> None:
    await client.put(f"{URL}/k", json={"value": "secret"}, headers=auth())
    await client.put(f"{URL}/k2", json={"value": "secret"}, headers=auth())
    page = (await client.get(URL, params={"limit": 1}, headers=auth())).json()
    other = auth(tenant_id="t_beta")
    assert_envelope(await client.get(f"{URL}/k", headers=other), 404, "blackboard.not_found")
    assert (await client.get(URL, headers=other)).json()["items"] == []
    resp = await client.get(URL, params={"cursor": page["next_cursor"]}, headers=other)
    assert_envelope(resp, 410, "blackboard.cursor_invalid")
    # and writing the same key in the other tenant is a create, not a conflict
    assert (await client.put(f"{URL}/k", json={"value": "theirs"}, headers=other)).status_code == 201
    assert (await client.get(f"{URL}/k", headers=auth())).json()["value"] == "secret"


async def test_a_value_over_the_route_limit_is_413_and_nothing_is_written(client: Client, auth: Auth) -> None:
    resp = await client.put(f"{URL}/big", json={"value": "x" * 300}, headers=auth())
    details = assert_envelope(resp, 413, "blackboard.value_too_large")
    assert details["limit"] == 256
    assert (await client.get(URL, headers=auth())).json()["items"] == []


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        (f"{URL}/k", {"nope": 1}, {}, 422, "request.validation_failed"),
        (f"{URL}/k", {"value": 1, "extra": 2}, {}, 422, "request.validation_failed"),
        (f"{URL}/k", {"value": 1}, {"If-Match": "garbage"}, 422, "blackboard.invalid_request"),
        (
            f"{URL}/k",
            {"value": 1, "expected_version": 2},
            {"If-Match": '"3"'},
            422,
            "blackboard.invalid_request",
        ),
        (f"{URL}/k", {"value": 1, "expected_version": 0}, {}, 422, "blackboard.invalid_request"),
        (f"{URL}/bad%20key", {"value": 1}, {}, 422, "blackboard.invalid_id"),
        ("/blackboard/bad%20run/entries/k", {"value": 1}, {}, 422, "blackboard.invalid_id"),
    ],
)
async def test_bad_input_is_an_envelope_and_writes_nothing(
    client: Client, auth: Auth, path: str, body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    resp = await client.put(path, json=body, headers=auth(headers=headers))
    assert_envelope(resp, status, code)
    assert (await client.get(URL, headers=auth())).json()["items"] == []


async def test_malformed_json_is_an_envelope(client: Client, auth: Auth) -> None:
    resp = await client.put(
        f"{URL}/k", content=b"{not json", headers=auth(headers={"Content-Type": "application/json"})
    )
    assert resp.status_code in (400, 422)
    assert resp.json()["error"]["http_status"] == resp.status_code


async def test_a_viewer_may_read_but_not_write(client: Client, auth: Auth) -> None:
    resp = await client.put(f"{URL}/k", json={"value": 1}, headers=auth(roles=("viewer",)))
    assert_envelope(resp, 403, "auth.forbidden_role")
    assert (await client.get(URL, headers=auth(roles=("viewer",)))).status_code == 200


async def test_without_a_token_it_is_401(client: Client) -> None:
    assert_envelope(await client.get(URL), 401, "auth.missing_token")
