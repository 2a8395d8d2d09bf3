"""Chat use-cases on the memory backend: posting, idempotency, cursors, snapshot, thread list,
live tail (local and cross-process delivery, shared poller)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from northstar_adapters import AdapterFactory
from northstar_adapters.memory import MemoryItemStore
from northstar_core.chat import ChatService
from northstar_core.clock import ManualClock
from northstar_core.cursors import CursorCodec
from northstar_core.engines import Engines, EngineSettings
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.routing import Connection, Route, RoutingRegistry

SECRET = b"unit-test-cursor-secret-0123456789"


async def make_engines(name: str | None = None, poll: float = 0.02) -> Engines:
    """Engines whose chat_store is the memory store ``name`` (shared by name, like one backend
    shared by two processes)."""
    name = name or f"chat-{uuid.uuid4().hex}"
    connections = {"mem": Connection(name="mem", backend="memory", params={"name": name})}
    registry = RoutingRegistry(
        MemoryItemStore(), AdapterFactory(), connections=connections, deployment_mode="lab"
    )
    await registry.set_route(Route(resource_kind="chat_store", connection="mem"))
    return Engines(registry, CursorCodec(SECRET), ManualClock(), EngineSettings(tail_poll_interval=poll))


def ctx(
    tenant: str = "t_a", user: str = "u_1", roles: tuple[str, ...] = ("member",), **kw: Any
) -> RequestContext:
    return RequestContext(tenant_id=tenant, mode="lab", user_id=user, roles=roles, request_id="r", **kw)


@pytest.fixture
async def chat() -> ChatService:
    return (await make_engines()).chat


async def test_three_messages_read_back_in_order_with_exclusive_cursors(chat: ChatService) -> None:
    c = ctx()
    posted = [await chat.post(c, "th", role="user", content=f"m{i}") for i in range(1, 4)]
    assert [p.message.seq for p in posted] == [1, 2, 3]
    page = await chat.list_messages(c, "th")
    assert [m.content for m in page.items] == ["m1", "m2", "m3"]
    assert not page.has_more
    after_first = await chat.list_messages(c, "th", cursor=posted[0].cursor)
    assert [m.content for m in after_first.items] == ["m2", "m3"]
    after_last = await chat.list_messages(c, "th", cursor=page.next_cursor)
    assert after_last.items == [] and after_last.next_cursor == page.next_cursor


async def test_message_carries_identity_scope_and_actor_from_context(chat: ChatService) -> None:
    c = ctx(project_id="p_1", surface_id="s_1", run_id="run_1")
    m = (await chat.post(c, "th", role="agent", content={"k": [1, 2]})).message
    assert (m.tenant_id, m.mode, m.user_id, m.actor_id) == ("t_a", "lab", "u_1", "u_1")
    assert (m.project_id, m.surface_id, m.run_id, m.thread_id) == ("p_1", "s_1", "run_1", "th")
    assert m.content == {"k": [1, 2]}
    agent = (await chat.post(ctx(agent_id="ag_7"), "th", role="agent", content="x")).message
    assert agent.actor_id == "ag_7" and agent.agent_id == "ag_7"


async def test_repost_with_same_key_returns_first_result_and_writes_nothing(chat: ChatService) -> None:
    c = ctx()
    first = await chat.post(c, "th", role="user", content="hello", idempotency_key="k1")
    again = await chat.post(c, "th", role="user", content="hello", idempotency_key="k1")
    assert not first.replayed and again.replayed
    assert again.message == first.message and again.cursor == first.cursor
    assert len((await chat.list_messages(c, "th")).items) == 1


async def test_same_key_with_different_payload_is_idempotency_mismatch(chat: ChatService) -> None:
    c = ctx()
    await chat.post(c, "th", role="user", content="hello", idempotency_key="k1")
    with pytest.raises(NorthstarError) as err:
        await chat.post(c, "th", role="user", content="changed", idempotency_key="k1")
    assert (err.value.code, err.value.http_status) == ("chat.idempotency_mismatch", 422)
    assert len((await chat.list_messages(c, "th")).items) == 1


async def test_tampered_cursor_is_cursor_invalid_echoing_it(chat: ChatService) -> None:
    c = ctx()
    cursor = (await chat.post(c, "th", role="user", content="a")).cursor
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    with pytest.raises(NorthstarError) as err:
        await chat.list_messages(c, "th", cursor=tampered)
    assert (err.value.code, err.value.http_status) == ("chat.cursor_invalid", 410)
    assert err.value.details["cursor"] == tampered


@pytest.mark.parametrize(
    "reader_tenant, reader_thread", [("t_b", "th"), ("t_a", "other")], ids=["other-tenant", "other-thread"]
)
async def test_cursor_from_another_stream_is_refused(
    chat: ChatService, reader_tenant: str, reader_thread: str
) -> None:
    cursor = (await chat.post(ctx(), "th", role="user", content="a")).cursor
    await chat.post(ctx(tenant=reader_tenant), reader_thread, role="user", content="b")
    with pytest.raises(NorthstarError) as err:
        await chat.list_messages(ctx(tenant=reader_tenant), reader_thread, cursor=cursor)
    assert err.value.code == "chat.cursor_invalid"


async def test_cursor_ahead_of_head_is_refused(chat: ChatService) -> None:
    c = ctx()
    await chat.post(c, "th", role="user", content="a")
    ahead = chat.cursor(c, "th", 5)
    with pytest.raises(NorthstarError) as err:
        await chat.list_messages(c, "th", cursor=ahead)
    assert err.value.code == "chat.cursor_invalid" and err.value.details["cursor"] == ahead
    with pytest.raises(NorthstarError):
        await chat.open_tail(c, "th", ahead)


async def test_pages_report_has_more_and_chain_by_next_cursor(chat: ChatService) -> None:
    c = ctx()
    for i in range(5):
        await chat.post(c, "th", role="user", content=str(i))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await chat.list_messages(c, "th", cursor=cursor, limit=2)
        seen += [m.content for m in page.items]
        cursor = page.next_cursor
        if not page.has_more:
            break
    assert seen == ["0", "1", "2", "3", "4"]


async def test_snapshot_has_meta_last_messages_and_head_cursor(chat: ChatService) -> None:
    c = ctx()
    for i in range(4):
        await chat.post(c, "th", role="user", content=str(i))
    snap = await chat.snapshot(c, "th", last=2)
    assert snap.thread.thread_id == "th" and snap.thread.created_by == "u_1"
    assert [m.content for m in snap.messages] == ["2", "3"]
    assert snap.head_seq == 4
    assert (await chat.list_messages(c, "th", cursor=snap.head_cursor)).items == []


async def test_snapshot_of_unknown_thread_is_not_found(chat: ChatService) -> None:
    with pytest.raises(NorthstarError) as err:
        await chat.snapshot(ctx(), "nope")
    assert (err.value.code, err.value.http_status) == ("chat.not_found", 404)


async def test_thread_list_shows_only_the_callers_threads_in_the_callers_tenant(chat: ChatService) -> None:
    await chat.post(ctx(user="u_1"), "th_a", role="user", content="x")
    await chat.post(ctx(user="u_1"), "th_b", role="user", content="x")
    await chat.post(ctx(user="u_1"), "th_a", role="user", content="y")
    await chat.post(ctx(user="u_2"), "th_c", role="user", content="x")
    await chat.post(ctx(tenant="t_b", user="u_1"), "th_z", role="user", content="x")
    mine = await chat.list_threads(ctx(user="u_1"))
    assert [t.thread_id for t in mine.items] == ["th_a", "th_b"]
    first = await chat.list_threads(ctx(user="u_1"), limit=1)
    assert first.has_more
    rest = await chat.list_threads(ctx(user="u_1"), cursor=first.next_cursor)
    assert [t.thread_id for t in rest.items] == ["th_b"]


async def test_viewer_cannot_post(chat: ChatService) -> None:
    with pytest.raises(NorthstarError) as err:
        await chat.post(ctx(roles=("viewer",)), "th", role="user", content="x")
    assert err.value.code == "auth.forbidden_role"


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"role": "boss", "content": "x"}, "chat.invalid_request"),
        ({"role": "user", "content": ""}, "chat.invalid_request"),
        ({"role": "user", "content": "x" * 70_000}, "chat.message_too_large"),
        ({"role": "user", "content": "x", "idempotency_key": "bad key!"}, "chat.invalid_id"),
    ],
)
async def test_invalid_posts_are_refused_and_write_nothing(
    chat: ChatService, kwargs: dict[str, Any], code: str
) -> None:
    with pytest.raises(NorthstarError) as err:
        await chat.post(ctx(), "th", **kwargs)
    assert err.value.code == code
    assert (await chat.list_messages(ctx(), "th")).items == []


async def test_invalid_thread_id_is_refused(chat: ChatService) -> None:
    with pytest.raises(NorthstarError) as err:
        await chat.post(ctx(), "a|b", role="user", content="x")
    assert err.value.code == "chat.invalid_id"


async def _take(it: Any, n: int) -> list[Any]:
    out = []
    while len(out) < n:
        item = await asyncio.wait_for(it.__anext__(), 5)
        if item is not None:
            out.append(item)
    return out


async def test_tail_replays_after_cursor_then_delivers_live_once_in_order(chat: ChatService) -> None:
    c = ctx()
    first = await chat.post(c, "th", role="user", content="1")
    await chat.post(c, "th", role="user", content="2")
    tail = await chat.open_tail(c, "th", first.cursor)
    events = tail.events()
    got = await _take(events, 1)
    for i in (3, 4):
        await chat.post(c, "th", role="user", content=str(i))
    got += await _take(events, 2)
    await events.aclose()
    assert [m.content for m in got] == ["2", "3", "4"]
    assert [m.cursor for m in got] == [chat.cursor(c, "th", s) for s in (2, 3, 4)]


async def test_tail_without_cursor_starts_at_head(chat: ChatService) -> None:
    c = ctx()
    await chat.post(c, "th", role="user", content="old")
    events = (await chat.open_tail(c, "th")).events()
    await chat.post(c, "th", role="user", content="new")
    got = await _take(events, 1)
    await events.aclose()
    assert [m.content for m in got] == ["new"]


async def test_tail_delivers_appends_made_by_another_process_sharing_the_backend() -> None:
    name = f"shared-{uuid.uuid4().hex}"
    reader, writer = await make_engines(name), await make_engines(name)
    c = ctx()
    events = (await reader.chat.open_tail(c, "th")).events()
    pending = asyncio.ensure_future(_take(events, 3))
    for i in range(3):
        await writer.chat.post(c, "th", role="user", content=str(i))
    got = await asyncio.wait_for(pending, 10)
    await events.aclose()
    assert [m.content for m in got] == ["0", "1", "2"]


async def test_tail_yields_heartbeats_when_idle(chat: ChatService) -> None:
    events = (await chat.open_tail(ctx(), "th")).events(heartbeat=0.01)
    assert await asyncio.wait_for(events.__anext__(), 5) is None
    await events.aclose()


async def test_many_idle_subscribers_share_one_channel_and_all_receive(chat: ChatService) -> None:
    c = ctx()
    engines_tails = chat.tails
    iters = [(await chat.open_tail(c, "th")).events() for _ in range(200)]
    tasks = [asyncio.ensure_future(_take(it, 1)) for it in iters]
    await asyncio.sleep(0.05)
    assert engines_tails.active_streams == 1
    await chat.post(c, "th", role="user", content="hi")
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(r[0].content == "hi" for r in results)
    for it in iters:
        await it.aclose()
    assert engines_tails.active_streams == 0


posts = st.lists(
    st.tuples(st.sampled_from(["k1", "k2", "k3", None]), st.sampled_from(["a", "b"])), min_size=1, max_size=12
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(posts)
async def test_idempotency_matches_reference_model(sequence: list[tuple[str | None, str]]) -> None:
    chat = (await make_engines()).chat
    c = ctx()
    model: list[str] = []
    keys: dict[str, str] = {}
    for key, content in sequence:
        if key is not None and key in keys:
            if keys[key] != content:
                with pytest.raises(NorthstarError):
                    await chat.post(c, "th", role="user", content=content, idempotency_key=key)
            else:
                assert (await chat.post(c, "th", role="user", content=content, idempotency_key=key)).replayed
            continue
        posted = await chat.post(c, "th", role="user", content=content, idempotency_key=key)
        assert not posted.replayed
        model.append(content)
        if key is not None:
            keys[key] = content
    page = await chat.list_messages(c, "th", limit=200)
    assert [m.content for m in page.items] == model
    assert [m.seq for m in page.items] == list(range(1, len(model) + 1))
