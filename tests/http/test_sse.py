"""SSE on a real socket (uvicorn on loopback): resume, exactly-once, headers, 410 before streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
import pytest

from northstar_core.errors import NorthstarError
from northstar_http.client import NorthstarClient

T = TypeVar("T")


async def next_event(stream: AsyncIterator[T]) -> T:
    return await asyncio.wait_for(stream.__anext__(), 10)


@pytest.fixture
async def ns(live_server, token) -> AsyncIterator[NorthstarClient]:
    client = NorthstarClient(live_server.url, token())
    yield client
    await client.aclose()


async def wait_subscribed(engines, n: int = 1) -> None:
    for _ in range(500):
        if engines.tails.active_streams >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the SSE subscriber never attached")


async def test_reconnect_with_last_event_id_gets_exactly_the_rest_once_in_order(ns, app) -> None:
    engines = app.state.engines
    first = ns.chat.follow("th_1")
    pending = asyncio.ensure_future(next_event(first))
    await wait_subscribed(engines)
    await ns.chat.post("th_1", role="user", content="m1", idempotency_key="k1")
    m1 = await pending
    assert m1.content == "m1"
    await first.aclose()  # disconnect after message 1

    for i in (2, 3):
        await ns.chat.post("th_1", role="user", content=f"m{i}", idempotency_key=f"k{i}")
    resumed = ns.chat.follow("th_1", m1.cursor)
    got = [await next_event(resumed), await next_event(resumed)]
    await ns.chat.post("th_1", role="user", content="m4", idempotency_key="k4")
    # a retried post is not a new event
    await ns.chat.post("th_1", role="user", content="m4", idempotency_key="k4")
    got.append(await next_event(resumed))
    await ns.chat.post("th_1", role="user", content="m5", idempotency_key="k5")
    got.append(await next_event(resumed))
    await resumed.aclose()
    assert [e.content for e in got] == ["m2", "m3", "m4", "m5"]
    assert [e.seq for e in got] == [2, 3, 4, 5]


async def test_last_event_id_wins_over_cursor_query_and_ids_are_cursors(ns) -> None:
    a = await ns.chat.post("th_1", role="user", content="a")
    await ns.chat.post("th_1", role="user", content="b")
    stream = ns.sse("/sse/chat/th_1", params={"cursor": "garbage-cursor"}, last_event_id=a.cursor)
    message = await next_event(stream)
    assert message.event == "message" and message.json()["content"] == "b"
    assert message.id == message.json()["cursor"]
    await stream.aclose()


async def test_cursor_query_resumes_like_last_event_id(ns) -> None:
    a = await ns.chat.post("th_1", role="user", content="a")
    await ns.chat.post("th_1", role="user", content="b")
    stream = ns.sse("/sse/chat/th_1", params={"cursor": a.cursor})
    assert (await next_event(stream)).json()["content"] == "b"
    await stream.aclose()


@pytest.mark.parametrize("via", ["header", "query"])
async def test_invalid_cursor_is_410_envelope_before_any_stream(live_server, auth, via: str) -> None:
    bad = "1.MQ.AAAAAAAAAAAAAAAAAAAAAAAA"
    headers = auth(headers={"Last-Event-ID": bad}) if via == "header" else auth()
    params = {"cursor": bad} if via == "query" else {}
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        r = await http.get("/sse/chat/th_1", headers=headers, params=params)
    assert r.status_code == 410
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "chat.cursor_invalid" and err["details"]["cursor"] == bad


async def test_stream_sends_retry_hint_heartbeats_and_no_store_headers(live_server, auth) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with http.stream("GET", "/sse/chat/th_1", headers=auth()) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["x-accel-buffering"] == "no"
            assert r.headers["x-request-id"]
            assert r.headers["x-northstar-backend"] == "memory (lab)"
            lines: list[str] = []
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith(": heartbeat"):
                    break
    assert any(line.startswith("retry:") for line in lines)
    assert not any(line.startswith("data:") for line in lines)  # comments carry no empty event


async def test_client_raises_envelope_error_with_upstream(ns) -> None:
    with pytest.raises(NorthstarError) as err:
        await ns.chat.snapshot("missing")
    assert err.value.code == "chat.not_found" and err.value.http_status == 404
    upstream: dict[str, Any] = err.value.upstream or {}
    assert upstream["status"] == 404 and upstream["request_id"]
    with pytest.raises(NorthstarError) as err:
        async for _ in ns.chat.follow("th_1", "bad"):
            pass
    assert err.value.code == "chat.cursor_invalid"


async def test_disconnect_unsubscribes(ns, app) -> None:
    engines = app.state.engines
    stream = ns.chat.follow("th_x")
    pending = asyncio.ensure_future(next_event(stream))
    await wait_subscribed(engines)
    await ns.chat.post("th_x", role="user", content="hello")
    await pending
    await stream.aclose()
    for _ in range(500):
        if engines.tails.active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert engines.tails.active_streams == 0


async def test_backend_failure_mid_stream_ends_it_with_an_error_event_without_id(ns, app) -> None:
    from northstar_core.errors import backend_unavailable

    engines = app.state.engines
    stream = ns.sse("/sse/chat/th_f")
    pending = asyncio.ensure_future(next_event(stream))
    await wait_subscribed(engines)
    await ns.chat.post("th_f", role="user", content="ok")
    delivered = await pending
    channel = next(iter(engines.tails._channels.values()))

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise backend_unavailable("chat_store", "connection refused", 3)

    channel.stream.read = fail  # the subscriber's next store read fails
    engines.tails.notify(channel.stream, 99)
    error = await next_event(stream)
    assert error.event == "error" and error.id == delivered.id  # Last-Event-ID unchanged
    assert error.json()["error"]["code"] == "chat_store.backend_unavailable"
    with pytest.raises(StopAsyncIteration):
        await next_event(stream)  # the stream ended; the client reconnects with its Last-Event-ID
