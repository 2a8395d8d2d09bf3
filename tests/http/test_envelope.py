"""Every error is the SPEC §4 envelope — framework errors included — and bad input writes nothing."""

from __future__ import annotations

from typing import Any

import pytest


def assert_envelope(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code and err["http_status"] == status
    assert err["request_id"] == r.headers["x-request-id"]
    assert set(err) == {"code", "message", "http_status", "gate", "request_id", "details"}
    assert "Traceback" not in r.text
    return err


async def messages(client, auth) -> list[Any]:
    r = await client.get("/chat/threads/th_1/messages", headers=auth())
    return r.json()["items"]


async def test_unknown_path_is_404_envelope(client) -> None:
    assert_envelope(await client.get("/no/such/path"), 404, "request.not_found")


async def test_wrong_method_is_405_envelope(client, auth) -> None:
    r = await client.delete("/chat/threads/th_1/messages", headers=auth())
    assert_envelope(r, 405, "request.method_not_allowed")


async def test_request_id_is_echoed_on_errors(client) -> None:
    r = await client.get("/no/such/path", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" and r.json()["error"]["request_id"] == "abc-123"


async def test_malformed_json_is_400_and_writes_nothing(client, auth) -> None:
    r = await client.post(
        "/chat/threads/th_1/messages",
        content=b'{"role": "user", "content": ',
        headers=auth(headers={"Content-Type": "application/json"}),
    )
    assert_envelope(r, 400, "request.malformed_json")
    assert await messages(client, auth) == []


@pytest.mark.parametrize(
    "body",
    [
        {"role": 5, "content": "x"},
        {"role": "boss", "content": "x"},
        {"content": "x"},
        {"role": "user", "content": "x", "idempotency_key": 7},
        [1, 2, 3],
        "just a string",
    ],
)
async def test_wrong_types_are_422_and_write_nothing(client, auth, body: Any) -> None:
    r = await client.post("/chat/threads/th_1/messages", json=body, headers=auth())
    err = assert_envelope(r, 422, "request.validation_failed")
    assert err["details"]["errors"]
    assert await messages(client, auth) == []


async def test_oversized_body_is_413_and_writes_nothing(client, auth, settings) -> None:
    big = "x" * (settings.http.body_limit + 10)
    body = {"role": "user", "content": big}
    r = await client.post("/chat/threads/th_1/messages", json=body, headers=auth())
    assert_envelope(r, 413, "request.body_too_large")
    assert await messages(client, auth) == []


async def test_bad_query_parameter_is_422(client, auth) -> None:
    r = await client.get("/chat/threads/th_1/messages", params={"limit": "lots"}, headers=auth())
    assert_envelope(r, 422, "request.validation_failed")
    r = await client.get("/chat/threads/th_1/messages", params={"limit": "0"}, headers=auth())
    assert_envelope(r, 422, "request.validation_failed")


async def test_invalid_thread_id_is_422(client, auth) -> None:
    body = {"role": "user", "content": "x"}
    r = await client.post("/chat/threads/bad%20id/messages", json=body, headers=auth())
    assert_envelope(r, 422, "chat.invalid_id")


async def test_unexpected_exception_is_500_envelope_without_trace(
    client, auth, engines, monkeypatch
) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engines.chat, "list_messages", boom)
    r = await client.get("/chat/threads/th_1/messages", headers=auth())
    assert_envelope(r, 500, "internal.error")
    assert "secret internal detail" not in r.text


async def test_missing_token_is_401_envelope(client) -> None:
    r = await client.get("/chat/threads/th_1/messages")
    assert_envelope(r, 401, "auth.missing_token")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_absurdly_nested_json_is_422_not_500(client, auth) -> None:
    body = b'{"role": "user", "content": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    r = await client.post(
        "/chat/threads/th_1/messages",
        content=body,
        headers=auth(headers={"Content-Type": "application/json"}),
    )
    assert_envelope(r, 422, "request.validation_failed")
    assert await messages(client, auth) == []


async def test_non_json_content_type_body_is_an_envelope(client, auth) -> None:
    r = await client.post(
        "/chat/threads/th_1/messages",
        content=b"role=user",
        headers=auth(headers={"Content-Type": "text/plain"}),
    )
    assert 400 <= r.status_code < 500 and r.json()["error"]["http_status"] == r.status_code
