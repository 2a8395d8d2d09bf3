"""The HTTP client is the library over HTTP: the same method names and signatures (less the
``RequestContext``: the client's identity is its token), the same result types and values, the
same errors; and its ``follow()`` survives dropped connections and server restarts, delivering
every event once and in order."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from northstar_core import Engines, NorthstarError, Page, RequestContext
from northstar_core.canvas import CommandIn, RecordIn
from northstar_core.chat import ChatEntry
from northstar_core.errors import backend_unavailable
from northstar_core.notes import NoteIn
from northstar_core.timeline import Timeline
from northstar_http.bootstrap import create_app
from northstar_http.client import NorthstarClient
from tests.conftest import LiveServer, make_settings

# (engines attribute, method) whose client parameters differ beyond the context, and why.
DOCUMENTED_DIFFERENCES = {
    # the library reads the surface from ctx.surface_id
    ("config", "toggle"),
    # an HTTP append is always a caller's append (the library's client=True)
    ("spine", "append"),
    # error_domain is the library's internal hook; the HTTP list has no types filter
    ("timeline", "list"),
}


def _library_class(name: str) -> type:
    if name == "timeline":
        return Timeline
    source = inspect.getsource(Engines.__init__)
    for line in source.splitlines():
        line = line.strip()
        if line.startswith(f"self.{name} = ") and "(" in line:
            import northstar_core.engines as module

            cls: type = getattr(module, line.split("=", 1)[1].strip().split("(")[0])
            return cls
    raise AssertionError(f"engines.{name} not found")


DOMAINS = [
    ("chat", "chat"), ("memory", "memory"), ("blackboard", "blackboard"), ("config", "config"),
    ("notes", "notes"), ("tabular", "tabular"), ("analytics", "analytics"),
    ("spine", "spine"), ("policies", "policies"), ("budget", "budget"), ("actions", "actions"),
    ("canvas", "canvas"), ("timeline", "timeline"),
]


@pytest.mark.parametrize(("client_attr", "library_attr"), DOMAINS)
def test_every_client_method_has_the_library_signature_less_the_context(
    client_attr: str, library_attr: str
) -> None:
    client = getattr(NorthstarClient("http://127.0.0.1:9", "t"), client_attr)
    library = _library_class(library_attr)
    methods = [n for n, _ in inspect.getmembers(type(client), inspect.isfunction) if not n.startswith("_")]
    assert methods
    for name in methods:
        assert hasattr(library, name), f"{client_attr}.{name} is not a method of engines.{library_attr}"
        mine = inspect.signature(getattr(type(client), name))
        theirs = inspect.signature(getattr(library, name))
        assert list(theirs.parameters)[1] == "ctx", f"engines.{library_attr}.{name}"
        if (library_attr, name) in DOCUMENTED_DIFFERENCES:
            continue
        ours = [(p.name, p.kind, p.default, p.annotation) for p in list(mine.parameters.values())[1:]]
        lib = [(p.name, p.kind, p.default, p.annotation) for p in list(theirs.parameters.values())[2:]]
        assert ours == lib, f"{client_attr}.{name}: {mine} vs {theirs}"
        assert mine.return_annotation == theirs.return_annotation, f"{client_attr}.{name}"


ROLES = ("member", "admin")


@pytest.fixture
async def pair(
    live_server: LiveServer, token: Callable[..., str], app: Any
) -> AsyncIterator[tuple[NorthstarClient, Engines, RequestContext]]:
    """The client and the library, acting as the same caller on the same data."""
    ns = NorthstarClient(live_server.url, token(roles=ROLES))
    ctx = RequestContext.for_user("t_alpha", "u_alice", mode="lab", roles=ROLES)
    try:
        yield ns, app.state.engines, ctx
    finally:
        await ns.aclose()


def same(remote: Any, local: Any) -> None:
    assert type(remote) is type(local), (type(remote), type(local))
    if isinstance(local, Page):
        assert [type(i) for i in remote.items] == [type(i) for i in local.items]
    assert remote == local


async def test_chat_results_are_the_library_types_and_values(pair: Any) -> None:
    ns, engines, ctx = pair
    posted = await ns.chat.post("th_p", role="user", content="hi", idempotency_key="k1")
    again = await engines.chat.post(ctx, "th_p", role="user", content="hi", idempotency_key="k1")
    assert type(posted) is type(again) and again.replayed and not posted.replayed
    assert (posted.message, posted.cursor) == (again.message, again.cursor)
    await engines.chat.post(ctx, "th_p", role="agent", content={"n": 2})
    page = await ns.chat.list_messages("th_p")
    same(page, await engines.chat.list_messages(ctx, "th_p"))
    assert [type(i) for i in page.items] == [ChatEntry, ChatEntry] and page.items[0].cursor == posted.cursor
    same(await ns.chat.list_messages("th_p", cursor=posted.cursor, limit=1),
         await engines.chat.list_messages(ctx, "th_p", cursor=posted.cursor, limit=1))
    same(await ns.chat.snapshot("th_p", last=1), await engines.chat.snapshot(ctx, "th_p", last=1))
    same(await ns.chat.list_threads(), await engines.chat.list_threads(ctx))
    same(await ns.chat.head_cursor("th_p"), await engines.chat.head_cursor(ctx, "th_p"))
    with pytest.raises(NorthstarError) as remote:
        await ns.chat.snapshot("th_none")
    with pytest.raises(NorthstarError) as local:
        await engines.chat.snapshot(ctx, "th_none")
    assert (remote.value.code, remote.value.http_status) == (local.value.code, local.value.http_status)


async def test_store_results_are_the_library_types_and_values(pair: Any) -> None:
    ns, engines, ctx = pair
    same(await ns.memory.set("s1", "k", {"v": 1}), await engines.memory.get(ctx, "s1", "k"))
    same(await ns.memory.get_all("s1"), await engines.memory.get_all(ctx, "s1"))
    entry = await ns.blackboard.put("r1", "k", [1, 2], expected_version=None)
    same(entry, await engines.blackboard.get(ctx, "r1", "k"))
    same(await ns.blackboard.list("r1"), await engines.blackboard.list(ctx, "r1"))
    note = await ns.notes.create(NoteIn(title="t", content="b", surface_id="sf1"))
    same(note, await engines.notes.get(ctx, note.note_id))
    same(await ns.notes.list(), await engines.notes.list(ctx))
    record = await ns.tabular.put("flows", "f1", {"a": 1}, expected_version=None)
    same(record, await engines.tabular.get(ctx, "flows", "f1"))
    same(await ns.tabular.list("flows"), await engines.tabular.list(ctx, "flows"))
    same(await ns.tabular.versions("flows", "f1"), await engines.tabular.versions(ctx, "flows", "f1"))
    await ns.analytics.record({"kind": "custom", "name": "n1"})
    same(await ns.analytics.list(), await engines.analytics.list(ctx))
    same(await ns.config.get("tenant"), await engines.config.get(ctx, "tenant"))


async def test_spine_and_timeline_results_are_the_library_types_and_values(pair: Any) -> None:
    ns, engines, ctx = pair
    event = await ns.spine.append({"event_type": "note", "source": "agent", "run_id": "r1", "step_id": "s1"})
    (stored,) = (await engines.spine.replay(ctx, "r1")).items
    same(event, stored)
    same(await ns.spine.replay("r1"), await engines.spine.replay(ctx, "r1"))
    same(await ns.spine.list(event_type="note"), await engines.spine.list(ctx, event_type="note"))
    appended = await ns.timeline.append("s1", "note", {"i": 1}, idempotency_key="k")
    again = await engines.timeline.append(ctx, "s1", "note", {"i": 1}, idempotency_key="k")
    same(appended[0], again[0])
    assert (appended[1], again[1]) == (False, True)
    same(await ns.timeline.list("s1"), await engines.timeline.list(ctx, "s1"))
    assert (await ns.timeline.list("s1")).items[0].cursor == appended[0].event_id


async def test_canvas_results_are_the_library_types_and_values(pair: Any) -> None:
    ns, engines, ctx = pair
    create = {"op": "create", "atom_id": "a", "kind": "box", "props": {"x": 1}}
    command = CommandIn(base_rev=0, ops=[create], idempotency_key="k1")
    committed = await ns.canvas.commit("c1", command)
    replayed = await engines.canvas.commit(ctx, "c1", command)
    assert type(committed) is type(replayed) and replayed.replayed
    assert (committed.head_rev, committed.cursor) == (replayed.head_rev, replayed.cursor)
    same(await ns.canvas.snapshot("c1"), await engines.canvas.snapshot(ctx, "c1"))
    same(await ns.canvas.head("c1"), await engines.canvas.head(ctx, "c1"))
    gesture = await ns.canvas.gesture("c1", "pointer", {"x": 1})
    page = await ns.canvas.replay("c1", None)
    same(page, await engines.canvas.replay(ctx, "c1", None))
    assert page.items[-1] == gesture
    types = frozenset({"op_committed"})
    same(
        await ns.canvas.replay("c1", None, 10, types=types),
        await engines.canvas.replay(ctx, "c1", None, 10, types=types),
    )
    same(await ns.canvas.head_cursor("c1"), await engines.canvas.head_cursor(ctx, "c1"))
    record = RecordIn(kind="doc", body="hello", idempotency_key="r1")
    added = await ns.canvas.add_record("c1", "artifact", record)
    same(added[0], (await engines.canvas.add_record(ctx, "c1", "artifact", record))[0])
    assert added[1] is False
    same(
        await ns.canvas.list_records("c1", "artifact"),
        await engines.canvas.list_records(ctx, "c1", "artifact"),
    )


async def test_policy_and_budget_results_are_the_library_types_and_values(pair: Any) -> None:
    ns, engines, ctx = pair
    written = await ns.policies.put_document(
        "firearms_grants", {"grants": [{"licence_type": "l1", "subject_type": "agent"}]}, expected_version=0
    )
    same(written, await engines.policies.get_document(ctx, "firearms_grants"))
    same(
        await ns.policies.get_document("kill_switches"),
        await engines.policies.get_document(ctx, "kill_switches"),
    )
    licence = await ns.policies.issue_licence(
        {"licence_type": "l1", "subject_type": "agent", "subject_id": "a1"}
    )
    same(await ns.policies.list_licences(), await engines.policies.list_licences(ctx))
    same(
        await ns.policies.check_subject("agent", "a1"),
        await engines.policies.check_subject(ctx, "agent", "a1"),
    )
    revoked = await ns.policies.revoke_licence(licence.licence_id, reason="test")
    same(revoked, await engines.policies.revoke_licence(ctx, licence.licence_id))
    lock = await ns.policies.create_lock({"action_name": "fire", "ttl_seconds": 600})
    same(lock, await engines.policies.get_lock(ctx, lock.lock_id))
    same(await ns.policies.get_lock(lock.lock_id), await engines.policies.get_lock(ctx, lock.lock_id))
    same(await ns.policies.list_locks(), await engines.policies.list_locks(ctx))
    entry, replayed = await ns.budget.record({"amount": 2.5, "idempotency_key": "u1"})
    again = await engines.budget.record(ctx, {"amount": 2.5, "idempotency_key": "u1"})
    same(entry, again[0])
    assert (replayed, again[1]) == (False, True)
    same(await ns.budget.usage(), await engines.budget.usage(ctx))


# --- follow() across failures ----------------------------------------------------------------


async def _collect(stream: AsyncIterator[ChatEntry], into: list[ChatEntry]) -> None:
    async for entry in stream:
        into.append(entry)


async def _until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_follow_survives_a_server_restart_and_delivers_every_message_once_in_order(
    tmp_path: Path, token: Callable[..., str]
) -> None:
    settings = make_settings(tmp_path, registry=None)  # lab default: one sqlite file in data_dir
    first = LiveServer(create_app(settings))
    await first.start()
    port = int(first.url.rsplit(":", 1)[1])
    # a long reconnect delay: what is posted right after the restart is missed live and must
    # come from the Last-Event-ID resume
    follower = NorthstarClient(first.url, token(sub="u_follower"), reconnect_delay=0.5)
    got: list[ChatEntry] = []
    task = asyncio.create_task(_collect(follower.chat.follow("th_r"), got))
    second: LiveServer | None = None
    try:
        async with NorthstarClient(first.url, token()) as ns:
            await _until(lambda: first.app.state.engines.tails.active_streams == 1, "the subscription")
            for i in range(3):
                await ns.chat.post("th_r", role="user", content=f"m{i}", idempotency_key=f"k{i}")
            await _until(lambda: len(got) == 3, "three messages")
        await first.stop()  # the stream drops mid-flight

        second = LiveServer(create_app(settings))
        second.server.config.port = port  # the same address, a new process-like instance
        await second.start()
        async with NorthstarClient(second.url, token()) as ns:
            for i in range(3, 6):
                await ns.chat.post("th_r", role="user", content=f"m{i}", idempotency_key=f"k{i}")
            await ns.chat.post("th_r", role="user", content="m3", idempotency_key="k3")  # a replay
            await _until(lambda: len(got) >= 6, "six messages")
            await ns.chat.post("th_r", role="user", content="m6", idempotency_key="k6")
            await _until(lambda: len(got) >= 7, "the live message after the resume")
        await asyncio.sleep(0.3)  # nothing else arrives
        assert [e.content for e in got] == [f"m{i}" for i in range(7)]
        assert [e.seq for e in got] == list(range(1, 8))
        assert all(type(e) is ChatEntry for e in got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await follower.aclose()
        if second is not None:
            await second.stop()


async def test_follow_resumes_after_a_backend_failure_mid_stream(
    live_server: LiveServer, token: Callable[..., str], app: Any
) -> None:
    engines = app.state.engines
    ns = NorthstarClient(live_server.url, token(), reconnect_delay=0.05)
    got: list[ChatEntry] = []
    task = asyncio.create_task(_collect(ns.chat.follow("th_f"), got))
    try:
        await _until(lambda: engines.tails.active_streams == 1, "the subscription")
        await ns.chat.post("th_f", role="user", content="before")
        await _until(lambda: len(got) == 1, "the first message")
        channel = next(iter(engines.tails._channels.values()))
        read = channel.stream.read
        failed: list[bool] = []

        async def fail_once(*args: Any, **kwargs: Any) -> Any:
            if not failed:
                failed.append(True)
                raise backend_unavailable("chat_store", "connection refused", 1)
            return await read(*args, **kwargs)

        channel.stream.read = fail_once  # the next store read ends the stream with an error event
        engines.tails.notify(channel.stream, 99)
        await _until(lambda: bool(failed), "the failure")
        await ns.chat.post("th_f", role="user", content="after")
        await _until(lambda: len(got) == 2, "the message after the failure")
        assert [e.content for e in got] == ["before", "after"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ns.aclose()


async def test_follow_raises_a_refused_cursor_and_an_unreachable_server(
    live_server: LiveServer, token: Callable[..., str]
) -> None:
    async with NorthstarClient(live_server.url, token()) as ns:
        with pytest.raises(NorthstarError) as err:
            await anext(ns.chat.follow("th_1", "not-a-cursor"))
        assert err.value.code == "chat.cursor_invalid" and err.value.http_status == 410
    async with NorthstarClient("http://127.0.0.1:9", token()) as ns:
        with pytest.raises(httpx.ConnectError):  # the first connection is not retried
            await anext(ns.canvas.follow("c1", "x"))
