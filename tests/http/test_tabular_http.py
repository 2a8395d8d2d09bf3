"""``/tabular/{table}`` through HTTP with lab tokens: create, read (latest and ?version=),
versioned update, stale write, delete, versions and list paging with cursors, foreign tenant,
per-table routing, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_core.tabular import TABLES
from northstar_http.bootstrap import create_app
from tests.conftest import make_settings

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Litestar]


def assert_envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["http_status"]) == (code, status)
    details: dict[str, Any] = error["details"]
    return details


async def _pages(client: Client, url: str, headers: dict[str, str], limit: int = 2) -> list[Any]:
    items: list[Any] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = (await client.get(url, params=params, headers=headers)).json()
        items += page["items"]
        if not page["has_more"]:
            return items
        params["cursor"] = page["next_cursor"]


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_create_update_and_read_history_in_every_table(client: Client, auth: Auth, table: str) -> None:
    url = f"/tabular/{table}/rec1"
    headers = auth(headers={"X-Project-Id": "proj", "X-Surface-Id": "builder"})
    created = await client.put(url, json={"json_blob": {"v": 1}}, headers=headers)
    assert (created.status_code, created.headers["etag"]) == (201, '"1"')
    record = created.json()
    assert (record["id"], record["version"], record["json_blob"]) == ("rec1", 1, {"v": 1})
    assert record["scope"] == {
        "tenant_id": "t_alpha",
        "mode": "lab",
        "project_id": "proj",
        "surface_id": "builder",
        "app_id": None,
        "user_id": "u_alice",
    }
    assert {"created_at", "updated_at"} <= record.keys()
    updated = await client.put(url, json={"json_blob": {"v": 2}}, headers={**headers, "If-Match": '"1"'})
    assert (updated.status_code, updated.json()["version"]) == (200, 2)
    assert (await client.get(url, headers=headers)).json()["json_blob"] == {"v": 2}
    assert (await client.get(url, params={"version": 1}, headers=headers)).json()["json_blob"] == {"v": 1}
    versions = (await client.get(f"{url}/versions", headers=headers)).json()
    assert [v["version"] for v in versions["items"]] == [1, 2]


async def test_a_stale_write_is_409_with_the_current_version(client: Client, auth: Auth) -> None:
    url = "/tabular/flows/f1"
    await client.put(url, json={"json_blob": 1}, headers=auth())
    await client.put(url, json={"json_blob": 2, "expected_version": 1}, headers=auth())
    resp = await client.put(url, json={"json_blob": 3, "expected_version": 1}, headers=auth())
    assert assert_envelope(resp, 409, "tabular.version_conflict")["current_version"] == 2
    resp = await client.put(url, json={"json_blob": 3}, headers=auth())
    assert assert_envelope(resp, 409, "tabular.version_conflict")["current_version"] == 2
    assert (await client.get(url, headers=auth())).json()["json_blob"] == 2


async def test_delete_keeps_history_and_recreate_continues_versions(client: Client, auth: Auth) -> None:
    url = "/tabular/graphs/g1"
    await client.put(url, json={"json_blob": "a"}, headers=auth())
    assert_envelope(
        await client.delete(url, headers=auth(headers={"If-Match": '"9"'})), 409, "tabular.version_conflict"
    )
    assert (await client.delete(url, headers=auth(headers={"If-Match": '"1"'}))).status_code == 204
    assert_envelope(await client.get(url, headers=auth()), 404, "tabular.not_found")
    assert (await client.get(url, params={"version": 1}, headers=auth())).json()["json_blob"] == "a"
    again = await client.put(url, json={"json_blob": "b"}, headers=auth())
    assert (again.status_code, again.json()["version"]) == (201, 2)


async def test_list_and_versions_page_with_cursors(client: Client, auth: Auth) -> None:
    for i in range(5):
        await client.put(f"/tabular/overlays/o{i}", json={"json_blob": i}, headers=auth())
    for v in range(1, 5):
        await client.put("/tabular/overlays/o0", json={"json_blob": v, "expected_version": v}, headers=auth())
    records = await _pages(client, "/tabular/overlays", auth())
    assert [r["id"] for r in records] == [f"o{i}" for i in range(5)]
    versions = await _pages(client, "/tabular/overlays/o0/versions", auth())
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5]


async def test_a_foreign_tenant_never_sees_records_or_history(client: Client, auth: Auth) -> None:
    await client.put("/tabular/seo_config/home", json={"json_blob": {"title": "secret"}}, headers=auth())
    page = (await client.get("/tabular/seo_config", params={"limit": 1}, headers=auth())).json()
    other = auth(tenant_id="t_beta")
    assert_envelope(await client.get("/tabular/seo_config/home", headers=other), 404, "tabular.not_found")
    resp = await client.get("/tabular/seo_config/home", params={"version": 1}, headers=other)
    assert_envelope(resp, 404, "tabular.not_found")
    assert_envelope(
        await client.get("/tabular/seo_config/home/versions", headers=other), 404, "tabular.not_found"
    )
    assert (await client.get("/tabular/seo_config", headers=other)).json()["items"] == []
    resp = await client.get("/tabular/seo_config", params={"cursor": page["next_cursor"]}, headers=other)
    assert_envelope(resp, 410, "tabular.cursor_invalid")


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("PUT", "/tabular/nope/x", {"json_blob": 1}, {}, 404, "tabular.unknown_table"),
        ("GET", "/tabular/nope", None, {}, 404, "tabular.unknown_table"),
        ("PUT", "/tabular/flows/bad%20id", {"json_blob": 1}, {}, 422, "tabular.invalid_id"),
        ("PUT", "/tabular/flows/x", {"blob": 1}, {}, 422, "request.validation_failed"),
        (
            "PUT",
            "/tabular/flows/x",
            {"json_blob": 1, "expected_version": 0},
            {},
            422,
            "tabular.invalid_request",
        ),
        ("PUT", "/tabular/flows/x", {"json_blob": 1}, {"If-Match": "W/nope"}, 422, "tabular.invalid_request"),
        ("GET", "/tabular/flows/x?version=0", None, {}, 422, "tabular.invalid_request"),
        ("GET", "/tabular/flows/x?version=abc", None, {}, 422, "request.validation_failed"),
        ("GET", "/tabular/flows?limit=0", None, {}, 422, "tabular.invalid_request"),
    ],
)
async def test_bad_input_is_an_envelope_and_writes_nothing(
    client: Client,
    auth: Auth,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    resp = await client.request(method, path, json=body, headers=auth(headers=headers))
    assert_envelope(resp, status, code)
    assert (await client.get("/tabular/flows", headers=auth())).json()["items"] == []


# --- each table is its own resource kind ------------------------------------------------------


@pytest.fixture
async def split_client(tmp_path: Any) -> AsyncIterator[Client]:
    # flows on sqlite, everything else on memory: the two tables must not share storage
    connections = {
        **make_settings(tmp_path).connections,
        "sq": {"backend": "sqlite", "path": str(tmp_path / "flows.db")},
    }
    routes = [{"resource_kind": "flow_store", "connection": "sq"}]
    settings = make_settings(tmp_path, connections=connections, routes=routes)
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def test_each_table_follows_its_own_route(split_client: Client, auth: Auth) -> None:
    flow = await split_client.put("/tabular/flows/x", json={"json_blob": 1}, headers=auth())
    graph = await split_client.put("/tabular/graphs/x", json={"json_blob": 1}, headers=auth())
    assert flow.headers["x-northstar-backend"] == "sqlite (lab)"
    assert graph.headers["x-northstar-backend"] == "memory (lab)"
