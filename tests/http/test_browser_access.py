"""What a browser needs that a server-side client does not: stream tickets for EventSource,
CORS for a UI on another origin, and the operator console's static page.

The real-browser checks (headless Chromium) are in ``tests/browser``; these pin the rules.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from northstar_http.bootstrap import create_app
from northstar_http.tickets import StreamTickets
from tests.conftest import CURSOR_SECRET, LiveServer, make_settings

UI = "http://ui.example.test:8080"


async def mint(client: Any, headers: dict[str, str], kind: str = "chat", id: str = "th_1") -> dict[str, Any]:
    r = await client.post("/sse/tickets", json={"kind": kind, "id": id}, headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def reason(r: httpx.Response) -> str:
    error = r.json()["error"]
    assert error["code"] == "auth.invalid_ticket", error
    assert r.status_code == 401
    return str(error["details"]["reason"])


async def test_a_ticket_names_one_stream_and_lives_seconds(client, auth) -> None:
    before = time.time()
    body = await mint(client, auth(), "canvas", "cv_9")
    assert body["stream"] == "/sse/canvas/cv_9"
    assert body["url"] == f"/sse/canvas/cv_9?ticket={body['ticket']}"
    payload = jwt.decode(body["ticket"], options={"verify_signature": False})
    assert payload["stream"] == "/sse/canvas/cv_9" and payload["tenant_id"] == "t_alpha"
    assert payload["sub"] == "u_alice" and payload["roles"] == ["member"] and payload["mode"] == "lab"
    assert before + 29 <= payload["open_by"] <= time.time() + 30
    assert payload["exp"] <= time.time() + 900 + 1
    # the ticket's key is neither the JWT secret nor the cursor secret
    for secret in ("test-hs256-secret-0123456789abcdef", CURSOR_SECRET):
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(body["ticket"], secret, algorithms=["HS256"])


async def test_a_ticket_never_outlives_the_bearer_token(client, auth) -> None:
    body = await mint(client, auth(ttl_seconds=5))
    payload = jwt.decode(body["ticket"], options={"verify_signature": False})
    assert payload["open_by"] <= time.time() + 5 and payload["exp"] <= time.time() + 5


@pytest.mark.parametrize(
    "body",
    [{"kind": "timeline", "id": "x"}, {"kind": "chat", "id": "a/b"}, {"kind": "chat", "id": ".."},
     {"kind": "chat", "id": "x\n"}, {"kind": "chat"}, {"kind": "chat", "id": "x", "tenant_id": "t_b"}],
)
async def test_minting_refuses_bad_input_with_an_envelope(client, auth, body) -> None:
    r = await client.post("/sse/tickets", json=body, headers=auth())
    assert 400 <= r.status_code < 500 and "error" in r.json(), r.text


async def test_minting_needs_a_bearer_token_not_a_ticket(client, auth) -> None:
    assert (await client.post("/sse/tickets", json={"kind": "chat", "id": "th_1"})).status_code == 401
    ticket = (await mint(client, auth()))["ticket"]
    r = await client.post(f"/sse/tickets?ticket={ticket}", json={"kind": "chat", "id": "th_1"})
    assert reason(r) == "wrong_stream"


async def test_a_ticket_is_refused_everywhere_but_its_stream(client, auth) -> None:
    ticket = (await mint(client, auth(), "chat", "th_1"))["ticket"]
    for path in (
        "/chat/threads/th_1/messages",  # the same thread's messages: not a stream
        "/sse/chat/th_2",  # another thread
        "/sse/canvas/th_1",  # another kind
        "/kill-switches",
    ):
        assert reason(await client.get(f"{path}?ticket={ticket}")) == "wrong_stream", path
    message = {"role": "user", "content": "x"}
    r = await client.post(f"/chat/threads/th_1/messages?ticket={ticket}", json=message)
    assert reason(r) == "wrong_stream"


async def test_malformed_forged_repeated_and_ambiguous_tickets_are_refused(client, auth, token) -> None:
    ticket = (await mint(client, auth()))["ticket"]
    assert reason(await client.get("/sse/chat/th_1?ticket=")) == "malformed"
    assert reason(await client.get("/sse/chat/th_1?ticket=abc")) == "malformed"
    assert reason(await client.get(f"/sse/chat/th_1?ticket={ticket}&ticket={ticket}")) == "repeated"
    assert reason(await client.get(f"/sse/chat/th_1?ticket={ticket}", headers=auth())) == "ambiguous"
    # a bearer token is no ticket, and a ticket minted under another key is forged
    assert reason(await client.get(f"/sse/chat/th_1?ticket={token()}")) == "bad_signature"
    forged = jwt.encode({**jwt.decode(ticket, options={"verify_signature": False}), "tenant_id": "t_beta"},
                        "x" * 32, algorithm="HS256")
    assert reason(await client.get(f"/sse/chat/th_1?ticket={forged}")) == "bad_signature"
    # and a ticket is not a bearer token
    r = await client.get("/chat/threads", headers={"Authorization": f"Bearer {ticket}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.invalid_token"


@pytest.fixture
async def served(tmp_path) -> AsyncIterator[tuple[Litestar, LiveServer]]:
    app = create_app(make_settings(tmp_path, http={
        "sse_heartbeat_seconds": 0.5, "sse_retry_ms": 500,
        "stream_ticket_seconds": 1, "stream_ticket_resume_seconds": 3,
    }))
    server = LiveServer(app)
    await server.start()
    try:
        yield app, server
    finally:
        await server.stop()


async def first_frames(http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> str:
    """The stream's frames up to its first message (bounded wait)."""

    async def read() -> str:
        async with http.stream("GET", url, headers=headers or {}) as r:
            assert r.status_code == 200, (await r.aread()).decode()
            assert r.headers["content-type"].startswith("text/event-stream")
            text = ""
            async for chunk in r.aiter_text():
                text += chunk
                if "event: message" in text:
                    return text
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(read(), 10)


async def post(http: httpx.AsyncClient, headers: dict[str, str], content: str) -> str:
    message = {"role": "user", "content": content}
    r = await http.post("/chat/threads/th_1/messages", json=message, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["cursor"])


async def test_a_ticket_opens_its_stream_then_only_resumes_until_it_expires(served, auth) -> None:
    _, server = served
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        start = await post(http, auth(), "first")
        await post(http, auth(), "hi")
        ticket = (await mint(http, auth()))["ticket"]
        frames = await first_frames(http, f"/sse/chat/th_1?ticket={ticket}&cursor={start}")
        assert '"content":"hi"' in frames and '"content":"first"' not in frames
        await asyncio.sleep(1.3)  # past open_by: a fresh open is refused, a resume is not
        assert reason(await http.get(f"/sse/chat/th_1?ticket={ticket}&cursor={start}")) == "expired"
        frames = await first_frames(http, f"/sse/chat/th_1?ticket={ticket}", {"Last-Event-ID": start})
        assert '"content":"hi"' in frames
        await asyncio.sleep(2)  # past exp: resuming is over too
        r = await http.get(f"/sse/chat/th_1?ticket={ticket}", headers={"Last-Event-ID": start})
        assert reason(r) == "expired"


async def test_ticket_identity_is_checked_like_a_bearer_token(served, auth) -> None:
    _, server = served
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        ticket = (await mint(http, auth(), "chat", "th_1"))["ticket"]
        r = await http.get(f"/sse/chat/th_1?ticket={ticket}", headers={"X-Tenant-Id": "t_beta"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "auth.identity_mismatch"
        # the scope presented when minting is carried, and a different one now is a mismatch
        scoped = (await mint(http, auth(headers={"X-Project-Id": "p_1"}), "chat", "th_1"))["ticket"]
        r = await http.get(f"/sse/chat/th_1?ticket={scoped}", headers={"X-Project-Id": "p_2"})
        assert r.status_code == 403 and r.json()["error"]["details"]["field"] == "project_id"


async def test_the_access_log_never_carries_the_ticket(served, auth, caplog) -> None:
    _, server = served
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        start = await post(http, auth(), "first")
        await post(http, auth(), "second")
        ticket = (await mint(http, auth()))["ticket"]
        await first_frames(http, f"/sse/chat/th_1?ticket={ticket}&cursor={start}")
        await http.get(f"/sse/chat/th_2?ticket={ticket}")  # refused: logged too

    def stream_logged() -> bool:  # a stream's access line is written when it ends
        access = [r for r in caplog.records if r.name == "northstar.access"]
        return any("GET /sse/chat/th_1 200" in r.getMessage() for r in access)

    for _ in range(100):
        if stream_logged():
            break
        await asyncio.sleep(0.05)
    assert stream_logged()
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert ticket not in text and ticket.split(".")[2] not in text


def test_the_ticket_key_is_shared_by_every_process_of_a_deployment(tmp_path) -> None:
    from northstar_adapters.config import finalize

    settings = finalize(make_settings(tmp_path))
    a, b = StreamTickets.for_settings(settings), StreamTickets.for_settings(settings)
    assert a._key == b._key and len(a._key) == 32


# --- CORS ---------------------------------------------------------------------------------------


@pytest.fixture
async def cors_client(tmp_path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(make_settings(tmp_path, http={"cors_allow_origins": [UI]}))
    async with AsyncTestClient(app=app) as c:
        yield c


async def test_no_cors_headers_without_allowed_origins(client, auth) -> None:
    r = await client.get("/chat/threads", headers={**auth(), "Origin": UI})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    r = await client.options(
        "/chat/threads", headers={"Origin": UI, "Access-Control-Request-Method": "GET"}
    )
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_preflight_and_answers_for_an_allowed_origin(cors_client, auth) -> None:
    r = await cors_client.options(
        "/sse/tickets",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, x-tenant-id",
        },
    )
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == UI
    assert "access-control-allow-credentials" not in r.headers
    allowed = r.headers["access-control-allow-headers"].lower()
    needed = ("authorization", "content-type", "idempotency-key", "if-match", "last-event-id", "x-tenant-id")
    for header in needed:
        assert header in allowed
    r = await cors_client.put("/kill-switches", json={"tenant_blocked": False},
                              headers={**auth(roles=("admin",)), "Origin": UI, "If-Match": '"0"'})
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == UI
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "etag" in exposed and "location" in exposed and "retry-after" in exposed
    # errors carry the CORS headers too, or the page could not read them
    r = await cors_client.get("/chat/threads", headers={"Origin": UI})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == UI


async def test_a_refused_preflight_is_an_envelope(cors_client) -> None:
    for headers, refused in (
        ({"Origin": "http://evil.example.test", "Access-Control-Request-Method": "GET"}, ["origin"]),
        ({"Origin": UI, "Access-Control-Request-Method": "TRACE"}, ["method"]),
        ({"Origin": UI, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-evil"},
         ["headers"]),
    ):
        r = await cors_client.options("/chat/threads", headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "request.cors_refused"
        assert r.json()["error"]["details"]["refused"] == refused
        assert "access-control-allow-origin" not in r.headers
    r = await cors_client.get("/healthz", headers={"Origin": "http://evil.example.test"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# --- the console's page -------------------------------------------------------------------------


async def test_the_console_page_is_public_static_and_locked_down(client) -> None:
    r = await client.get("/console")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    page = r.text
    assert "/console/console.js" in page and "http" not in page.replace("http-equiv", "")
    script = await client.get("/console/console.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert not re.search(r"innerHTML\s*=|outerHTML|insertAdjacentHTML|document\.write|eval\(", script.text)
    assert "sessionStorage" in script.text and "localStorage" not in script.text
    assert (await client.get("/console/console.css")).status_code == 200
    assert (await client.get("/console/other.js")).status_code == 404


def test_the_console_ships_as_package_data() -> None:
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]["northstar_http"]
    from northstar_http.routes.console import ASSETS

    for name in ASSETS:
        assert any(Path("console", name).match(pattern) for pattern in shipped), name



def test_browser_settings_are_checked() -> None:
    from northstar_adapters.config import ConfigError, load_settings

    env = {"NORTHSTAR_HTTP_CORS_ALLOW_ORIGINS": "http://127.0.0.1:5173, https://UI.example.com"}
    http = load_settings(environ=env).http
    assert http.cors_allow_origins == ["http://127.0.0.1:5173", "https://ui.example.com"]
    anyone = load_settings(environ={"NORTHSTAR_HTTP_CORS_ALLOW_ORIGINS": '["*"]'}).http
    assert anyone.cors_allow_origins == ["*"]
    assert load_settings(environ={}).http.cors_allow_origins == []
    for bad in ("https://ui.example.com/", "https://*.example.com", "ftp://x", "https://x/app", "*,https://x"):
        with pytest.raises(ConfigError, match="cors_allow_origins"):
            load_settings(environ={"NORTHSTAR_HTTP_CORS_ALLOW_ORIGINS": bad})
    for name, value in (("STREAM_TICKET_SECONDS", "0"), ("STREAM_TICKET_SECONDS", "301"),
                        ("STREAM_TICKET_RESUME_SECONDS", "-1"), ("CORS_MAX_AGE_SECONDS", "86401")):
        with pytest.raises(ConfigError, match=name.lower()):
            load_settings(environ={f"NORTHSTAR_HTTP_{name}": value})
