"""Canvas SSE on a real socket: replay then live, Last-Event-ID resume across a server restart,
410 before any stream, headers, and the two-editor client flow converging over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from northstar_core.canvas import CommandIn, CommitResult
from northstar_core.errors import NorthstarError
from northstar_core.timeline import StreamEvent
from northstar_http.bootstrap import create_app
from northstar_http.client import NorthstarClient
from northstar_http.client.canvas import CanvasClient, CanvasSession
from tests.conftest import LiveServer, make_settings

Auth = Callable[..., dict[str, str]]


async def next_event(
    stream: AsyncIterator[StreamEvent], types: tuple[str, ...] = ("op_committed",)
) -> StreamEvent:
    async def wanted() -> StreamEvent:
        while True:
            event = await stream.__anext__()
            if event.type in types:
                return event

    return await asyncio.wait_for(wanted(), 10)


def create(atom_id: str, **props: Any) -> dict[str, Any]:
    return {"op": "create", "atom_id": atom_id, "kind": "box", "props": props}


async def command(
    canvas: CanvasClient, canvas_id: str, base_rev: int, ops: list[dict[str, Any]], key: str
) -> CommitResult:
    return await canvas.commit(canvas_id, CommandIn(base_rev=base_rev, ops=ops, idempotency_key=key))


@pytest.fixture
async def canvas(live_server: LiveServer, token: Callable[..., str]) -> AsyncIterator[CanvasClient]:
    ns = NorthstarClient(live_server.url, token())
    yield ns.canvas
    await ns.aclose()


async def wait_subscribed(app: Any, n: int = 1) -> None:
    for _ in range(500):
        if app.state.engines.tails.active_streams >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the SSE subscriber never attached")


async def test_sse_replays_after_cursor_then_follows_live_every_event_type(
    canvas: CanvasClient, app: Any
) -> None:
    first = await command(canvas, "c1", 0, [create("a")], "k1")
    await command(canvas, "c1", 1, [create("b")], "k2")
    stream = canvas.follow("c1", cursor=first.cursor)
    replayed = await next_event(stream)
    assert (replayed.data["rev"], replayed.cursor) == (2, replayed.event_id)
    await wait_subscribed(app)
    await canvas.gesture("c1", "pointer", {"x": 1})
    gesture = await next_event(stream, ("gesture",))
    assert gesture.data["data"] == {"x": 1}
    await command(canvas, "c1", 2, [create("c")], "k3")
    decision = await next_event(stream, ("safety_decision",))
    assert decision.data["action_name"] == "canvas_command"
    live = await next_event(stream)
    assert live.data["rev"] == 3
    await stream.aclose()


async def test_sse_without_cursor_starts_at_the_head(canvas: CanvasClient, app: Any) -> None:
    await command(canvas, "c1", 0, [create("old")], "k1")
    stream = canvas.follow("c1")
    pending = asyncio.ensure_future(next_event(stream))
    await wait_subscribed(app)
    await command(canvas, "c1", 1, [create("new")], "k2")
    assert (await pending).data["rev"] == 2
    await stream.aclose()


async def test_last_event_id_wins_over_cursor_query(
    live_server: LiveServer, token: Callable[..., str]
) -> None:
    async with NorthstarClient(live_server.url, token()) as ns:
        first = await command(ns.canvas, "c1", 0, [create("a")], "k1")
        await command(ns.canvas, "c1", 1, [create("b")], "k2")
        stream = ns.sse("/sse/canvas/c1", params={"cursor": "garbage"}, last_event_id=first.cursor)
        message = await asyncio.wait_for(stream.__anext__(), 10)
        while message.event != "op_committed":
            message = await asyncio.wait_for(stream.__anext__(), 10)
        assert message.json()["data"]["rev"] == 2
        await stream.aclose()


@pytest.mark.parametrize("via", ["header", "query"])
async def test_invalid_or_foreign_cursor_is_410_envelope_before_any_stream(
    live_server: LiveServer, auth: Auth, via: str
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        done = await http.post(
            "/canvas/c1/commands",
            json={"base_rev": 0, "ops": [create("a")], "idempotency_key": "k"},
            headers=auth("t_alpha"),
        )
        foreign = done.json()["cursor"]
        for bad in ("1.MQ.AAAAAAAAAAAAAAAAAAAAAAAA", foreign):
            headers = auth("t_beta", headers={"Last-Event-ID": bad}) if via == "header" else auth("t_beta")
            params = {"cursor": bad} if via == "query" else {}
            r = await http.get("/sse/canvas/c1", headers=headers, params=params)
            assert r.status_code == 410
            assert r.headers["content-type"].startswith("application/json")
            error = r.json()["error"]
            assert (error["code"], error["details"]["cursor"]) == ("canvas.cursor_invalid", bad)


async def test_stream_sends_retry_hint_heartbeats_and_no_store_headers(
    live_server: LiveServer, auth: Auth
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        async with http.stream("GET", "/sse/canvas/c1", headers=auth()) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert (r.headers["cache-control"], r.headers["x-accel-buffering"]) == ("no-store", "no")
            lines: list[str] = []
            async for line in r.aiter_lines():
                lines.append(line)
                if "heartbeat" in line:
                    break
    assert any(line.startswith("retry:") for line in lines)


async def test_reconnect_with_last_event_id_after_a_server_restart_gets_every_missed_event_once_in_order(
    tmp_path: Path, token: Callable[..., str]
) -> None:
    settings = make_settings(tmp_path, registry=None)  # lab default: one sqlite file in data_dir
    server = LiveServer(create_app(settings))
    await server.start()
    ns = NorthstarClient(server.url, token())
    canvas = CanvasClient(ns)
    try:
        await command(canvas, "c1", 0, [create("a0")], "k0")
        stream = canvas.follow("c1", cursor=None)
        pending = asyncio.ensure_future(next_event(stream))
        await wait_subscribed(server.app)
        await command(canvas, "c1", 1, [create("a1")], "k1")
        seen = await pending
        assert seen.data["rev"] == 2
        await stream.aclose()
        for rev in (2, 3):  # missed while disconnected
            await command(canvas, "c1", rev, [create(f"a{rev}")], f"k{rev}")
    finally:
        await ns.aclose()
        await server.stop()

    # a new process on the same durable store
    server2 = LiveServer(create_app(settings))
    await server2.start()
    ns2 = NorthstarClient(server2.url, token())
    canvas2 = CanvasClient(ns2)
    try:
        resumed = canvas2.follow("c1", seen.cursor)
        got = [await next_event(resumed, ("op_committed", "safety_decision")) for _ in range(4)]
        assert [(m.type, m.data.get("rev")) for m in got] == [
            ("safety_decision", None),
            ("op_committed", 3),
            ("safety_decision", None),
            ("op_committed", 4),
        ]
        seqs = [m.seq for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        await wait_subscribed(server2.app)
        await command(canvas2, "c1", 4, [create("live")], "k-live")
        assert (await next_event(resumed)).data["rev"] == 5  # then live, no duplicate
        await resumed.aclose()
        # a retried command after the restart is the original result, not a new revision
        again = await command(canvas2, "c1", 2, [create("a2")], "k2")
        assert (again.head_rev, again.replayed) == (3, True)
    finally:
        await ns2.aclose()
        await server2.stop()


class LossyTransport(httpx.AsyncBaseTransport):
    """Fault injection: the response of every ``lose_every``-th command POST is dropped after
    the server handled it (the client sees a transport error)."""

    def __init__(self, lose_every: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose_every = lose_every
        self.posts = 0
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/commands"):
            self.posts += 1
            if self.posts % self.lose_every == 0:
                await response.aread()
                await response.aclose()
                self.lost += 1
                raise httpx.ReadError("response lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_two_http_clients_editing_one_canvas_converge(
    live_server: LiveServer, token: Callable[..., str], app: Any
) -> None:
    lossy = LossyTransport(lose_every=3)
    clients = [
        NorthstarClient(live_server.url, token(sub="u_alice"), transport=lossy),
        NorthstarClient(live_server.url, token(sub="u_bob")),
    ]
    sessions = [CanvasSession(CanvasClient(c), "shared") for c in clients]
    listeners: list[asyncio.Task[None]] = []
    try:
        for s in sessions:
            await s.open()
            listeners.append(asyncio.create_task(s.listen()))
        await wait_subscribed(app)

        async def edit(i: int, session: CanvasSession) -> None:
            mine: list[str] = []
            for n in range(8):
                ops: list[dict[str, Any]] = [create(f"e{i}-{n}", n=n)]
                target = session.state.order[0] if session.state.order else None
                if target is not None:
                    ops.append({"op": "update", "atom_id": target, "patch": {f"by{i}": n}})
                    ops.append({"op": "move", "atom_id": target, "index": len(session.state.order) - 1})
                if mine and n % 3 == 2:
                    ops.append({"op": "delete", "atom_id": mine.pop(0)})
                mine.append(f"e{i}-{n}")
                await session.submit(ops)

        await asyncio.gather(*(edit(i, s) for i, s in enumerate(sessions)))
        snap = await CanvasClient(clients[1]).snapshot("shared")
        for _ in range(500):  # the listeners catch up with the head through SSE
            if all(s.head_rev == snap.head_rev for s in sessions):
                break
            await asyncio.sleep(0.01)
        wire = msgspec.to_builtins(snap)
        expected = {k: wire[k] for k in ("head_rev", "atoms", "order")}
        for s in sessions:
            assert s.state.to_wire() == expected
        assert snap.head_rev == 16  # every intent committed exactly once
        assert lossy.lost > 0
        log = (
            await CanvasClient(clients[1]).replay("shared", None, 100, types=frozenset({"op_committed"}))
        ).items
        keys = [e.data["idempotency_key"] for e in log]
        assert len(keys) == len(set(keys)) == 16
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for c in clients:
            await c.aclose()


async def test_client_raises_the_envelope_error_with_upstream(canvas: CanvasClient) -> None:
    with pytest.raises(NorthstarError) as err:
        await command(canvas, "c1", 0, [{"op": "update", "atom_id": "ghost", "patch": {}}], "k")
    assert (err.value.code, err.value.details["op_index"]) == ("canvas.op_invalid", 0)
    assert (err.value.upstream or {})["status"] == 422


async def test_live_sse_of_one_tenant_never_carries_another_tenants_events(
    live_server: LiveServer, token: Callable[..., str], app: Any
) -> None:
    alpha = NorthstarClient(live_server.url, token("t_alpha"))
    beta = NorthstarClient(live_server.url, token("t_beta", sub="u_bob"))
    try:
        stream = CanvasClient(beta).follow("c1")
        pending = asyncio.ensure_future(next_event(stream, ("op_committed", "gesture", "safety_decision")))
        await wait_subscribed(app)
        await command(CanvasClient(alpha), "c1", 0, [create("secret")], "k")
        await CanvasClient(alpha).gesture("c1", "pointer", {"secret": True})
        await command(CanvasClient(beta), "c1", 0, [create("mine")], "k")
        first = await pending
        assert first.type == "safety_decision" and first.actor_id == "u_bob"  # its own
        assert first.stream_id == "canvas:c1"
        following = await next_event(stream)
        assert following.data["ops"][0]["atom_id"] == "mine"
        await stream.aclose()
    finally:
        await alpha.aclose()
        await beta.aclose()


async def test_timeline_client_appends_and_lists(live_server: LiveServer, token: Callable[..., str]) -> None:
    async with NorthstarClient(live_server.url, token()) as ns:
        first = await ns.timeline.append("s1", "note", {"i": 1}, idempotency_key="k")
        again = await ns.timeline.append("s1", "note", {"i": 1}, idempotency_key="k")
        assert again[0].event_id == first[0].event_id and (first[1], again[1]) == (False, True)
        page = await ns.timeline.list("s1")
        assert [e.data for e in page.items] == [{"i": 1}]
        with pytest.raises(NorthstarError) as err:
            await ns.timeline.list("s1", cursor="tampered")
        assert err.value.code == "event_stream.cursor_invalid"


async def test_sse_on_one_server_delivers_commands_committed_through_another_sharing_the_store(
    tmp_path: Path, token: Callable[..., str]
) -> None:
    settings = make_settings(tmp_path, registry=None)  # one sqlite file, two server instances
    servers = [LiveServer(create_app(settings)), LiveServer(create_app(settings))]
    for server in servers:
        await server.start()
    reader, writer = (NorthstarClient(s.url, token()) for s in servers)
    try:
        stream = reader.canvas.follow("c1")
        pending = asyncio.ensure_future(next_event(stream))
        await wait_subscribed(servers[0].app)
        await command(writer.canvas, "c1", 0, [create("a")], "k1")
        assert (await pending).data["rev"] == 1
        await command(writer.canvas, "c1", 1, [create("b")], "k2")
        assert (await next_event(stream)).data["rev"] == 2
        await stream.aclose()
    finally:
        await reader.aclose()
        await writer.aclose()
        for server in servers:
            await server.stop()


async def test_a_listening_session_resumes_after_a_server_restart_and_misses_nothing(
    tmp_path: Path, token: Callable[..., str]
) -> None:
    settings = make_settings(tmp_path, registry=None)
    first = LiveServer(create_app(settings))
    await first.start()
    port = int(first.url.rsplit(":", 1)[1])
    listener_client = NorthstarClient(first.url, token(sub="u_watcher"))
    session = CanvasSession(listener_client.canvas, "c1")
    task: asyncio.Task[None] | None = None
    try:
        async with NorthstarClient(first.url, token()) as ns:
            await command(ns.canvas, "c1", 0, [create("a")], "k1")
            await session.open()
            task = asyncio.create_task(session.listen(reconnect_delay=0.05))
            await wait_subscribed(first.app)
            await command(ns.canvas, "c1", 1, [create("b")], "k2")
            for _ in range(500):
                if session.head_rev == 2:
                    break
                await asyncio.sleep(0.01)
            assert session.head_rev == 2
        await first.stop()  # the stream drops; the session keeps retrying

        second = LiveServer(create_app(settings))
        second.server.config.port = port  # the same address, a new process-like instance
        await second.start()
        try:
            async with NorthstarClient(second.url, token()) as ns:
                await command(ns.canvas, "c1", 2, [create("c")], "k3")
                await command(ns.canvas, "c1", 3, [{"op": "delete", "atom_id": "a"}], "k4")
                snap = msgspec.to_builtins(await ns.canvas.snapshot("c1"))
            for _ in range(1000):
                if session.head_rev == 4:
                    break
                await asyncio.sleep(0.01)
            assert session.state.to_wire() == {k: snap[k] for k in ("head_rev", "atoms", "order")}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await second.stop()
    finally:
        if task is not None and not task.done():
            task.cancel()
        await listener_client.aclose()
