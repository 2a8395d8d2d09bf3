"""A server shutdown ends every open SSE stream at once with a last comment (no id: the client
resumes exactly after the last event it got), instead of waiting for the streams or cutting
them; other cancellations stay cancellations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from litestar import Litestar

from northstar_http.server import Server, build_config, build_server
from northstar_http.sse import SHUTDOWN_FRAME, close_event_streams, event_streams

LAST = SHUTDOWN_FRAME.decode().strip()


class Served:
    def __init__(self, app: Litestar) -> None:
        self.server = build_server(app, host="127.0.0.1", port=0, log_level="warning", http="h11")
        self.task: asyncio.Task[None] | None = None
        self.url = ""

    async def __aenter__(self) -> Served:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


async def read_all(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], opened: asyncio.Event
) -> list[str]:
    lines = []
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": open":
                opened.set()
    return lines


@pytest.fixture
async def served(app: Litestar) -> AsyncIterator[Served]:
    async with Served(app) as s:
        yield s


@pytest.mark.parametrize(
    ("implementation", "server_class"),
    # uvicorn's own Server with our protocols is what `serve --workers` runs in each worker
    [("h11", Server), ("httptools", Server), ("h11", uvicorn.Server), ("httptools", uvicorn.Server)],
)
async def test_server_shutdown_ends_open_streams_with_a_last_comment(
    app, auth, implementation, server_class
) -> None:
    server = Served(app)
    config = build_config(app, host="127.0.0.1", port=0, log_level="warning", http=implementation)
    server.server = server_class(config)
    async with server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        posted = (await http.post("/chat/threads/th/messages", headers=auth(),
                                  json={"role": "user", "content": "a", "idempotency_key": "a"})).json()
        opened = [asyncio.Event() for _ in range(5)]
        readers = [
            asyncio.create_task(read_all(http, f"/sse/chat/th?cursor={posted['cursor']}", auth(), o))
            for o in opened
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 10)
        assert len(event_streams(app) or ()) == 5
        began = time.monotonic()
        server.server.should_exit = True  # what SIGTERM does
        results = await asyncio.wait_for(asyncio.gather(*readers), 5)
        assert time.monotonic() - began < 1.0
    for lines in results:
        assert [line for line in lines if line][-1] == LAST
        # nothing after the cursor yet: the only id is the opening frame's, the resume cursor
        assert [line for line in lines if line.startswith("id:")] == [f"id: {posted['cursor']}"]
    assert len(event_streams(app) or ()) == 0


async def test_a_stream_opened_after_close_ends_at_once(app, auth, served) -> None:
    close_event_streams(app)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        r = await http.get("/sse/chat/th", headers=auth())
    assert r.status_code == 200 and r.text.strip().endswith(LAST)


async def test_a_client_disconnect_is_not_a_shutdown(app, auth, served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        opened = asyncio.Event()
        reader = asyncio.create_task(read_all(http, "/sse/chat/th", auth(), opened))
        await asyncio.wait_for(opened.wait(), 10)
        reader.cancel()
    streams = event_streams(app)
    assert streams is not None and not streams.closing
    for _ in range(100):  # noticed at the next heartbeat (0.5 s in the test settings)
        if len(streams) == 0:
            break
        await asyncio.sleep(0.05)
    assert len(streams) == 0


async def test_a_request_in_flight_at_shutdown_completes(app, auth, served) -> None:
    body = b'{"role": "user", "content": "in flight", "idempotency_key": "flight"}'
    head = (
        b"POST /chat/threads/th/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: {auth()['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    port = int(served.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[:10])  # the request is being received when the stop is asked for
    await writer.drain()
    await asyncio.sleep(0.2)
    served.server.should_exit = True
    await asyncio.sleep(0.3)
    writer.write(body[10:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after answering
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
