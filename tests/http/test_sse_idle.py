"""What an idle SSE subscriber costs the server: the shared waiting of the live tail (one
future per subscriber, one heartbeat timer per channel and interval) and the connection's own
state (benchmark P5). Behaviour must not change: heartbeats after the same idle time, every
wake-up delivered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from northstar_adapters.memory import MemoryItemStore
from northstar_core.kernel.streams import SequencedStream, seq_of
from northstar_core.kernel.tail import TailHub
from northstar_http import server as ns_server


def _stream() -> SequencedStream:
    return SequencedStream(MemoryItemStore(), "t|lab|chat|x", "chat")


async def _append(hub: TailHub, stream: SequencedStream, value: bytes) -> int:
    done = await stream.append(lambda first: [value], now="2026-01-01T00:00:00Z")
    hub.notify(stream, done.last_seq)
    return done.last_seq


async def test_each_idle_subscriber_gets_its_heartbeat_after_its_own_idle_time() -> None:
    hub = TailHub(poll_interval=30)
    stream = _stream()
    fast = hub.follow(stream, 0, heartbeat=0.05)
    slow = hub.follow(stream, 0, heartbeat=0.4)
    began = time.monotonic()
    assert await asyncio.wait_for(anext(fast), 2) is None
    assert await asyncio.wait_for(anext(fast), 2) is None
    assert time.monotonic() - began < 0.35  # two fast beats before the slow one's first
    slow_next = asyncio.ensure_future(anext(slow))
    await asyncio.sleep(0.1)
    assert not slow_next.done()
    assert await asyncio.wait_for(slow_next, 2) is None
    assert time.monotonic() - began >= 0.39
    await fast.aclose()
    await slow.aclose()
    assert hub.active_streams == 0


async def test_many_idle_subscribers_all_wake_on_an_append_then_beat_again() -> None:
    hub = TailHub(poll_interval=30)
    stream = _stream()
    subscribers = [hub.follow(stream, 0, heartbeat=0.2) for _ in range(50)]
    pending = [asyncio.ensure_future(anext(s)) for s in subscribers]
    await asyncio.sleep(0.05)
    seq = await _append(hub, stream, b"one")
    items = await asyncio.wait_for(asyncio.gather(*pending), 2)
    assert [seq_of(i.key) for i in items] == [seq] * 50
    began = time.monotonic()
    beats = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in subscribers)), 2)
    assert beats == [None] * 50
    assert time.monotonic() - began >= 0.19  # the heartbeat restarts after each wait
    for s in subscribers:
        await s.aclose()
    assert hub.subscribers(stream) == 0


async def test_an_append_while_the_consumer_is_busy_is_not_lost() -> None:
    hub = TailHub(poll_interval=30)
    stream = _stream()
    sub = hub.follow(stream, 0, heartbeat=5)
    first = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.01)
    await _append(hub, stream, b"a")
    assert (await asyncio.wait_for(first, 2)).value == b"a"
    # the consumer has not asked for the next entry yet: the wake-up happens meanwhile
    await _append(hub, stream, b"b")
    item = await asyncio.wait_for(anext(sub), 1)  # not after the 5 s heartbeat
    assert item.value == b"b"
    await sub.aclose()


async def test_a_subscriber_that_leaves_while_waiting_unsubscribes() -> None:
    hub = TailHub(poll_interval=30)
    stream = _stream()
    sub = hub.follow(stream, 0, heartbeat=0.05)
    task = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sub.aclose()
    assert hub.active_streams == 0
    other = hub.follow(stream, 0, heartbeat=0.05)
    assert await asyncio.wait_for(anext(other), 2) is None
    await other.aclose()


async def test_slim_event_behaves_as_asyncio_event() -> None:
    event = ns_server._SlimEvent()
    assert not event.is_set()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await event.wait() is True  # set: returns at once
    event.clear()
    left = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    left.cancel()
    with pytest.raises(asyncio.CancelledError):
        await left
    assert not event._waiters  # a waiter that left is forgotten
    assert ns_server._SlimEvent(True).is_set()


def _protocols() -> list[Any]:
    classes: list[Any] = [ns_server.H11HeadTimeoutProtocol]
    if ns_server.HttpToolsHeadTimeoutProtocol is not None:
        classes.append(ns_server.HttpToolsHeadTimeoutProtocol)
    return classes


class _Transport:
    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1234) if name in ("peername", "sockname") else None

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("cls", _protocols(), ids=lambda c: c.__name__)
async def test_connection_state_lives_in_slots_not_a_dict_per_connection(cls: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    config = ns_server.ServerConfig(app, http=cls)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    try:
        assert isinstance(protocol.flow._is_writable_event, ns_server._SlimEvent)
        assert protocol.flow._is_writable_event.is_set()
        assert vars(protocol) == {}
    finally:
        protocol._disarm_head_deadline()
    assert isinstance(config, uvicorn.Config)
