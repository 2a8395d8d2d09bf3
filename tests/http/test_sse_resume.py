"""Every SSE stream opens with an id-only frame carrying the position it starts from, so a client
that disconnects before its first event resumes there (Last-Event-ID) and misses nothing.

The frames are read the way a browser's ``EventSource`` reads them (the WHATWG processing
model): an ``id:`` field sets the last event id when the frame ends, even when the frame has no
``data:`` and so dispatches no message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from tests.conftest import LiveServer

Auth = Callable[..., dict[str, str]]


@dataclass
class Message:
    event: str
    data: str
    last_event_id: str


@dataclass
class EventSourceReader:
    """A browser ``EventSource``'s parser: fields, comments, dispatch and the last event id."""

    last_event_id: str = ""
    frames: int = 0
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None

    def feed(self, line: str) -> Message | None:
        if line == "":
            self.frames += 1
            if self._id is not None:
                self.last_event_id = self._id  # set before the empty-data check (spec)
            self._id = None
            data, event = self._data, self._event
            self._data, self._event = [], ""
            if not data:
                return None
            return Message(event or "message", "\n".join(data), self.last_event_id)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class Stream:
    """One SSE connection read line by line."""

    def __init__(self, http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        self.http, self.path, self.headers = http, path, headers
        self.reader = EventSourceReader()
        self._response: httpx.Response | None = None
        self._context: Any = None
        self._lines: AsyncIterator[str] | None = None

    async def __aenter__(self) -> Stream:
        self._context = self.http.stream("GET", self.path, headers=self.headers)
        self._response = await self._context.__aenter__()
        assert self._response.status_code == 200, (await self._response.aread())[:300]
        self._lines = self._response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._context.__aexit__(*exc)

    async def opening(self) -> list[str]:
        """The lines of the first frame; it must not dispatch a message."""
        assert self._lines is not None
        lines = []
        while True:
            line = await asyncio.wait_for(anext(self._lines), 10)
            lines.append(line)
            assert self.reader.feed(line) is None, f"the opening frame dispatched a message: {lines}"
            if line == "":
                return lines

    async def next_message(self, event: str | None = None) -> Message:
        assert self._lines is not None

        async def read() -> Message:
            assert self._lines is not None
            while True:
                message = self.reader.feed(await anext(self._lines))
                if message is not None and (event is None or message.event == event):
                    return message

        return await asyncio.wait_for(read(), 10)


def opening_id(lines: list[str]) -> str:
    ids = [line.removeprefix("id:").removeprefix(" ") for line in lines if line.startswith("id:")]
    assert len(ids) == 1 and ids[0], f"the opening frame carries no id: {lines}"
    assert not any(line.startswith("data:") for line in lines), lines
    assert any(line.startswith("retry:") for line in lines), lines
    return ids[0]


async def post(http: httpx.AsyncClient, auth: Auth, thread: str, content: str) -> dict[str, Any]:
    r = await http.post(
        f"/chat/threads/{thread}/messages",
        json={"role": "user", "content": content, "idempotency_key": content},
        headers=auth(),
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def commit(http: httpx.AsyncClient, auth: Auth, canvas: str, base_rev: int) -> dict[str, Any]:
    r = await http.post(
        f"/canvas/{canvas}/commands",
        json={
            "base_rev": base_rev,
            "ops": [{"op": "create", "atom_id": f"a{base_rev}", "kind": "box", "props": {}}],
            "idempotency_key": f"k{base_rev}",
        },
        headers=auth(),
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_chat_reconnect_before_the_first_event_misses_nothing(
    live_server: LiveServer, auth: Auth
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with Stream(http, "/sse/chat/th_empty", auth()) as first:
            start = opening_id(await first.opening())
            assert first.reader.last_event_id == start
        # the client is gone before any message; two are posted while it is away
        await post(http, auth, "th_empty", "m1")
        await post(http, auth, "th_empty", "m2")
        async with Stream(http, "/sse/chat/th_empty", auth(headers={"Last-Event-ID": start})) as again:
            assert opening_id(await again.opening()) == start
            got = [await again.next_message("message") for _ in range(2)]
            await post(http, auth, "th_empty", "m3")
            got.append(await again.next_message("message"))
    contents = [msgspec.json.decode(m.data)["content"] for m in got]
    assert contents == ["m1", "m2", "m3"]
    ids = [m.last_event_id for m in got]
    assert len(set(ids)) == 3 and start not in ids


async def test_chat_opening_id_is_the_head_or_the_resume_cursor(
    live_server: LiveServer, auth: Auth
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        first = await post(http, auth, "th_h", "a")
        await post(http, auth, "th_h", "b")
        head = (await http.get("/chat/threads/th_h/snapshot", headers=auth())).json()["head_cursor"]
        async with Stream(http, "/sse/chat/th_h", auth()) as at_head:
            assert opening_id(await at_head.opening()) == head
        async with Stream(http, f"/sse/chat/th_h?cursor={first['cursor']}", auth()) as resumed:
            assert opening_id(await resumed.opening()) == first["cursor"]
            # the stream continues right after that position: "b" comes first
            message = await resumed.next_message("message")
            assert msgspec.json.decode(message.data)["content"] == "b"


async def test_canvas_reconnect_before_the_first_event_misses_nothing(
    live_server: LiveServer, auth: Auth
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with Stream(http, "/sse/canvas/cv_empty", auth()) as first:
            start = opening_id(await first.opening())
        await commit(http, auth, "cv_empty", 0)
        await commit(http, auth, "cv_empty", 1)
        async with Stream(http, "/sse/canvas/cv_empty", auth(headers={"Last-Event-ID": start})) as again:
            assert opening_id(await again.opening()) == start
            got = [await again.next_message("op_committed") for _ in range(2)]
            await commit(http, auth, "cv_empty", 2)
            got.append(await again.next_message("op_committed"))
    revs = [msgspec.json.decode(m.data)["data"]["rev"] for m in got]
    assert revs == [1, 2, 3]
    ids = [m.last_event_id for m in got]
    assert len(set(ids)) == 3 and start not in ids


async def test_canvas_opening_id_is_the_stream_head_or_the_resume_cursor(
    live_server: LiveServer, auth: Auth
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        done = await commit(http, auth, "cv_h", 0)
        await commit(http, auth, "cv_h", 1)
        page = (await http.get("/canvas/cv_h/replay", params={"limit": 500}, headers=auth())).json()
        assert page["has_more"] is False
        async with Stream(http, "/sse/canvas/cv_h", auth()) as at_head:
            assert opening_id(await at_head.opening()) == page["next_cursor"]
        resume = auth(headers={"Last-Event-ID": done["cursor"]})
        async with Stream(http, "/sse/canvas/cv_h", resume) as resumed:
            assert opening_id(await resumed.opening()) == done["cursor"]
            message = await resumed.next_message("op_committed")
            assert msgspec.json.decode(message.data)["data"]["rev"] == 2
