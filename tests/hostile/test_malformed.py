"""Malformed requests are the client's error, never a 500.

* Invalid UTF-8 inside a JSON string: msgspec raises ``UnicodeDecodeError`` (not a JSON decode
  error), which used to surface as 500 ``internal.error`` with a traceback; it is 400
  ``request.malformed_json`` and nothing is written.
* A client that disconnects before its body arrived is not a server failure: one info log line,
  no error, no traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

Auth = Callable[..., dict[str, str]]

# (path, a body whose string value is replaced by raw bytes, a read that must stay empty)
TARGETS = [
    ("POST", "/chat/threads/x/messages", {"role": "user", "content": "@"}, "/chat/threads/x/messages"),
    ("POST", "/analytics/events", {"kind": "custom", "name": "n", "page": "@"}, "/analytics/events"),
    ("PUT", "/blackboard/r/entries/k", {"value": "@"}, None),
    ("POST", "/events/append", {"event_type": "x", "source": "ui", "run_id": "r", "step_id": "@"}, None),
    ("POST", "/memory", {"session_id": "s1", "key": "k", "value": "@"}, None),
]


def _with_raw(body: dict[str, Any], raw: bytes) -> bytes:
    """``body`` as JSON with the ``"@"`` string replaced by ``raw`` (not valid UTF-8)."""
    return json.dumps(body).encode().replace(b'"@"', b'"' + raw + b'"')


INVALID_UTF8 = st.sampled_from(
    [b"\xff\xfe", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"ok\x80ok", b"\xc0\xaf"]
) | st.binary(min_size=1, max_size=12).filter(lambda b: _not_utf8(b) and b'"' not in b and b"\\" not in b)


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@pytest.mark.parametrize("method, path, body, listing", TARGETS, ids=[t[1] for t in TARGETS])
def test_invalid_utf8_inside_a_json_string_is_400_malformed_json(
    app: Litestar,
    auth: Auth,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: dict[str, Any],
    listing: str | None,
) -> None:
    caplog.set_level(logging.INFO, logger="northstar")
    with TestClient(app=app) as client:
        headers = {**auth(), "Content-Type": "application/json"}

        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(raw=INVALID_UTF8)
        def attempt(raw: bytes) -> None:
            resp = client.request(method, path, content=_with_raw(body, raw), headers=headers)
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert (error["code"], error["http_status"]) == ("request.malformed_json", 400)

        attempt()
        if listing is not None:
            assert client.get(listing, headers=auth()).json()["items"] == []
        # the same request with valid text is accepted
        ok = client.request(method, path, content=_with_raw(body, b"fine"), headers=headers)
        assert ok.status_code < 300, ok.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_server_side_decoding_bug_is_still_a_500(
    app: Litestar, client: AsyncTestClient[Litestar], auth: Auth
) -> None:
    """Only the request body's decoding is the client's fault: the same exception raised by
    the server's own code stays an internal error."""
    from northstar_http.errors import translate

    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as exc:
        err = translate(exc)
    assert (err.code, err.http_status) == ("internal.error", 500)


async def test_a_client_disconnecting_mid_body_is_an_info_line_not_a_500(
    app: Litestar, client: AsyncTestClient[Litestar], auth: Auth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body_part = b'{"role": "user", "content": "never fin'
    headers = [
        (b"host", b"testserver.local"),
        (b"content-type", b"application/json"),
        (b"content-length", b"100"),
        *((k.lower().encode(), v.encode()) for k, v in auth().items()),
    ]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/chat/threads/x/messages",
        "raw_path": b"/chat/threads/x/messages",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80),
        "state": {},
    }
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": body_part, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]

    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] < 500
    mine = [r for r in caplog.records if r.name.startswith("northstar")]
    assert not [r for r in mine if r.levelno >= logging.WARNING and "LAB MODE" not in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert any(r.levelno == logging.INFO and "disconnected" in r.getMessage() for r in mine)
    # nothing was written
    listed = await client.get("/chat/threads/x/messages", headers=auth())
    assert listed.json()["items"] == []
