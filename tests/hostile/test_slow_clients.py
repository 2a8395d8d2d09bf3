"""Slow clients cannot hold connections: request heads and bodies have bounded read times.

The real server (``northstar_http.server``, both HTTP/1.1 implementations) runs on a loopback
port with short bounds; raw sockets drip-feed heads and bodies one byte at a time. Every wait
below is bounded in time and every loop in count, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from northstar_adapters.config import HttpSettings
from northstar_http import timeouts
from northstar_http.bootstrap import create_app
from northstar_http.server import HttpToolsHeadTimeoutProtocol, build_server
from tests import conftest as root

HEAD_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
DRIP_INTERVAL = 0.2
# Scheduling slack on a loaded 2-core machine: a bound is met if the close comes this soon after.
SLACK = 1.5
MAX_WAIT = 10.0  # no single wait in this file lasts longer

PROTOCOLS = ["h11", *(["httptools"] if HttpToolsHeadTimeoutProtocol is not None else [])]


@dataclass
class Server:
    host: str
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def auth(self) -> bytes:
        return b"Authorization: Bearer " + self.token.encode() + b"\r\n"


@pytest.fixture(params=PROTOCOLS)
async def server(
    request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, token: Callable[..., str]
) -> AsyncIterator[Server]:
    http: dict[str, Any] = {"sse_heartbeat_seconds": 0.2, "sse_retry_ms": 500}
    # The settings once configuration has them; the module defaults until then.
    if "header_timeout_seconds" in HttpSettings.__struct_fields__:
        http["header_timeout_seconds"] = HEAD_TIMEOUT
    else:
        monkeypatch.setattr(timeouts, "DEFAULT_HEADER_TIMEOUT_SECONDS", HEAD_TIMEOUT)
    if "body_timeout_seconds" in HttpSettings.__struct_fields__:
        http["body_timeout_seconds"] = BODY_TIMEOUT
    else:
        monkeypatch.setattr(timeouts, "DEFAULT_BODY_TIMEOUT_SECONDS", BODY_TIMEOUT)
    settings = root.make_settings(tmp_path, http=http)
    uv = build_server(
        create_app(settings), settings, host="127.0.0.1", port=0, http=request.param, log_level="error"
    )
    assert uv.config.header_timeout_seconds == HEAD_TIMEOUT  # type: ignore[attr-defined]
    task = asyncio.create_task(uv.serve())
    for _ in range(500):
        if uv.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert uv.started
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server("127.0.0.1", port, token("t_slow", roles=("member",)))
    finally:
        uv.should_exit = True
        uv.force_exit = True
        await asyncio.wait_for(task, MAX_WAIT)


# --- raw socket helpers -------------------------------------------------------------------------


@dataclass
class Outcome:
    data: bytes
    closed_after: float | None  # seconds from the start until the server closed; None: still open

    def response(self) -> tuple[int, dict[str, str], bytes]:
        return parse_response(self.data)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def drip(
    server: Server, prefix: bytes, dripped: bytes, *, interval: float = DRIP_INTERVAL, give_up: float = 6.0
) -> Outcome:
    """Send ``prefix`` at once, then ``dripped`` one byte per ``interval``, reading all the while;
    stop when the server closes or after ``give_up`` seconds."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    start = time.monotonic()
    received = bytearray()

    async def read_all() -> float:
        for _ in range(10_000):
            try:
                chunk = await reader.read(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            received.extend(chunk)
        return time.monotonic() - start

    reading = asyncio.create_task(read_all())
    try:
        if prefix:
            writer.write(prefix)
        for i in range(int(give_up / interval) + 1):
            if reading.done():
                break
            if i < len(dripped):
                writer.write(dripped[i : i + 1])
                try:
                    await writer.drain()
                except (ConnectionResetError, BrokenPipeError):
                    pass
            try:
                await asyncio.wait_for(asyncio.shield(reading), interval)
            except TimeoutError:
                pass
        closed_after = reading.result() if reading.done() else None
        return Outcome(bytes(received), closed_after)
    finally:
        reading.cancel()
        writer.close()


def assert_timeout_envelope(outcome: Outcome) -> None:
    status, headers, body = outcome.response()
    assert status == 408, outcome.data[:300]
    assert headers.get("connection") == "close"
    error = json.loads(body[: int(headers["content-length"])])["error"]
    assert (error["code"], error["http_status"]) == ("request.timeout", 408)
    assert error["request_id"]


HEAD = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: " + b"p" * 60 + b"\r\n\r\n"


def post_head(server: Server, length: int, *, authenticated: bool = True) -> bytes:
    return (
        b"POST /chat/threads/slow/messages HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
        + (server.auth() if authenticated else b"")
        + b"Content-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )


BODY = json.dumps({"role": "user", "content": "x" * 900}).encode()


# --- request heads -------------------------------------------------------------------------------


async def test_a_drip_fed_request_head_is_answered_408_and_closed(server: Server) -> None:
    outcome = await drip(server, b"", HEAD)
    assert outcome.closed_after is not None, "the server kept a drip-fed head open"
    assert outcome.closed_after < HEAD_TIMEOUT + SLACK
    assert_timeout_envelope(outcome)


async def test_a_connection_that_sends_nothing_is_closed_silently(server: Server) -> None:
    outcome = await drip(server, b"", b"")
    assert outcome.closed_after is not None and outcome.closed_after < HEAD_TIMEOUT + SLACK
    assert outcome.data == b""


async def test_the_head_deadline_is_total_not_per_byte(server: Server) -> None:
    # Bytes every 0.1 s, well inside any per-read timeout, still may not exceed the bound.
    outcome = await drip(server, b"", HEAD, interval=0.1)
    assert outcome.closed_after is not None and outcome.closed_after < HEAD_TIMEOUT + SLACK
    assert_timeout_envelope(outcome)


# --- request bodies ------------------------------------------------------------------------------


async def test_a_drip_fed_body_is_answered_408_envelope_and_closed(server: Server) -> None:
    outcome = await drip(server, post_head(server, 1000), b" " * 1000)
    assert outcome.closed_after is not None, "the server kept a drip-fed body open"
    assert outcome.closed_after < BODY_TIMEOUT + SLACK
    assert_timeout_envelope(outcome)


async def test_a_body_dripped_after_an_early_answer_cannot_hold_the_connection(server: Server) -> None:
    # Refused before the body is read (no token): the answer comes at once, and draining the
    # rest of the body to keep the connection is bounded like a head.
    outcome = await drip(server, post_head(server, 1000, authenticated=False), b" " * 1000)
    assert outcome.closed_after is not None and outcome.closed_after < HEAD_TIMEOUT + SLACK
    status, _, body = outcome.response()
    assert status == 401 and b"auth.missing_token" in body


async def test_a_body_sent_in_time_is_served(server: Server) -> None:
    outcome = await drip(server, post_head(server, len(BODY)) + BODY, b"", give_up=1.0)
    assert outcome.response()[0] == 201, outcome.data[:300]


# --- many at once --------------------------------------------------------------------------------


async def test_a_hundred_slow_clients_are_all_closed_and_others_are_served(server: Server) -> None:
    attacks = [
        drip(server, b"", HEAD) if i % 2 else drip(server, post_head(server, 1000), b" " * 1000)
        for i in range(100)
    ]
    attack = asyncio.gather(*attacks)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=MAX_WAIT
    ) as client:
        during = []
        for i in range(5):  # while the slow clients hold their connections
            r = await client.post(
                "/chat/threads/normal/messages", json={"role": "user", "content": f"during {i}"}
            )
            during.append(r.status_code)
            await asyncio.sleep(0.05)
        outcomes = await asyncio.wait_for(attack, MAX_WAIT)
        r = await client.post("/chat/threads/normal/messages", json={"role": "user", "content": "after"})
        assert r.status_code == 201
        listed = await client.get("/chat/threads/normal/messages")
    assert during == [201] * 5
    assert [m["content"] for m in listed.json()["items"]] == [*(f"during {i}" for i in range(5)), "after"]
    still_open = [i for i, o in enumerate(outcomes) if o.closed_after is None]
    assert not still_open, f"{len(still_open)} slow connections were not closed"
    bound = max(HEAD_TIMEOUT, BODY_TIMEOUT) + 3 * SLACK  # a hundred connections on one loop
    assert max(o.closed_after or 0.0 for o in outcomes) < bound
    for outcome in outcomes:
        assert_timeout_envelope(outcome)


# --- well-behaved clients ------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MAX_WAIT)
    status, headers, _ = parse_response(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), MAX_WAIT)
    return status, headers, body


async def test_a_keep_alive_client_is_unaffected(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for i in range(6):
            body = json.dumps({"role": "user", "content": f"m{i}"}).encode()
            request = post_head(server, len(body)) + body
            # Each request takes 0.3 s to send (under the bound); together they take far longer,
            # so this also shows the deadline restarts for every request on the connection.
            half = len(request) // 2
            writer.write(request[:half])
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(request[half:])
            status, headers, _ = await read_response(reader)
            assert status == 201, (i, status)
            assert headers.get("connection") != "close"
        writer.write(b"GET /chat/threads/slow/messages HTTP/1.1\r\nHost: slow\r\n" + server.auth() + b"\r\n")
        status, _, body = await read_response(reader)
        assert status == 200
        assert [m["content"] for m in json.loads(body)["items"]] == [f"m{i}" for i in range(6)]
    finally:
        writer.close()


async def test_pipelined_requests_are_all_answered(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
        for _ in range(3):
            status, _, _ = await read_response(reader)
            assert status == 200
    finally:
        writer.close()


async def test_a_live_tail_outlives_both_bounds(server: Server) -> None:
    # Time spent serving a request does not count against the head deadline, and the body
    # deadline ends with the body: an SSE stream stays open well beyond both.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /sse/chat/tail HTTP/1.1\r\nHost: slow\r\n" + server.auth() + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MAX_WAIT)
        assert parse_response(head)[0] == 200
        deadline = time.monotonic() + 3 * max(HEAD_TIMEOUT, BODY_TIMEOUT) + 0.5
        chunks = 0
        for _ in range(1000):
            if time.monotonic() >= deadline:
                break
            chunk = await asyncio.wait_for(reader.read(4096), MAX_WAIT)
            assert chunk, "the server closed a live tail"
            chunks += 1
        assert chunks >= 2  # heartbeats kept flowing
    finally:
        writer.close()


async def test_an_oversized_request_head_is_refused(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: big\r\n")
        for i in range(40):  # 40 * 4 KiB: beyond the 64 KiB head limit
            writer.write(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4096))
            try:
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
        data = b""
        try:
            data = await asyncio.wait_for(reader.read(4096), MAX_WAIT)
        except (ConnectionResetError, BrokenPipeError):
            pass
        assert data == b"" or data.startswith(b"HTTP/1.1 400"), data[:200]
    finally:
        writer.close()
