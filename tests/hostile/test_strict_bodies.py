"""JSON bodies are typed strictly: a string where the document says boolean or integer is the
client's mistake (422 ``request.validation_failed`` naming the field) and changes nothing; a
number with no fractional part is an integer, as JSON Schema has it."""

from __future__ import annotations

from typing import Any

import pytest

SYSTEM = {"system": True, "roles": ["owner"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resource_kind": "chat_store", "connection": "mem", "force": "true"}, "force"),
        ({"resource_kind": "chat_store", "connection": "mem", "force": 1}, "force"),
        ({"resource_kind": "chat_store", "connection": "mem", "expected_version": "1"}, "expected_version"),
        ({"resource_kind": "chat_store", "connection": "mem", "expected_version": 1.5}, "expected_version"),
        ({"resource_kind": "chat_store", "connection": "mem", "options": {"max_value_bytes": "9"}},
         "options.max_value_bytes"),
    ],
)
async def test_a_route_body_with_a_value_of_the_wrong_json_type_changes_nothing(
    client: Any, auth: Any, body: dict[str, Any], field: str
) -> None:
    headers = auth("t_alpha", **SYSTEM)
    before = (await client.get("/routing/routes", headers=headers)).json()
    r = await client.post("/routing/routes", json=body, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "request.validation_failed"
    assert [e["field"] for e in error["details"]["errors"]] == [field]
    assert (await client.get("/routing/routes", headers=headers)).json() == before


async def test_strings_are_not_numbers_in_any_body(client: Any, auth: Any) -> None:
    headers = auth("t_alpha")
    body = {"session_id": "s1", "key": "k", "value": 1, "ttl_seconds": "60"}
    r = await client.post("/memory", json=body, headers=headers)
    assert (r.status_code, r.json()["error"]["details"]["errors"][0]["field"]) == (422, "ttl_seconds")
    r = await client.get("/memory", params={"session_id": "s1"}, headers=headers)
    assert (r.status_code, r.json()["items"]) == (200, [])
    # typed as documented, the same body is taken
    r = await client.post("/memory", json={**body, "ttl_seconds": 60}, headers=headers)
    assert r.status_code == 200, r.text


async def test_an_integral_number_is_an_integer(client: Any, auth: Any) -> None:
    headers = auth("t_alpha", **SYSTEM)
    first = {"resource_kind": "chat_store", "connection": "mem"}
    r = await client.post("/routing/routes", json=first, headers=headers)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    again = {"resource_kind": "chat_store", "connection": "mem", "expected_version": float(version)}
    r = await client.post("/routing/routes", json=again, headers=headers)
    assert (r.status_code, r.json()["version"]) == (200, version + 1)
