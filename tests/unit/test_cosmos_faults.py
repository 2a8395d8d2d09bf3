# ruff: noqa: F811 - pytest fixtures imported from tests.emulators.cosmos are parameters here
"""Cosmos adapter under injected faults: the emulator cannot throttle, time out or drop links.

A fault-injecting wrapper sits between the adapter and the real SDK container (on the patched
emulator) and raises what real Cosmos and the network raise — 429 with ``x-ms-retry-after-ms``,
408, 503, connection failures, and a response lost *after* the write committed — before (or
after) delegating. The adapter must retry transient failures a bounded number of times with
jitter, then raise ``BackendUnavailable`` (503 ``<kind>.backend_unavailable`` with
``Retry-After`` through ``KindStore``), never leave a partial write, and stay exactly-once for
idempotent appends when a retried write had in fact committed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.cosmos import exceptions as cosmos_exc
from azure.cosmos.aio import CosmosClient

from northstar_adapters.common import RetryPolicy
from northstar_adapters.cosmos import CosmosConfig, CosmosItemStore, provision
from northstar_core.errors import NorthstarError
from northstar_core.kernel.streams import SequencedStream
from northstar_core.routing import Connection, KindStore, Route, Target
from northstar_core.storage import Absent, BackendUnavailable, ConditionFailed, InvalidItem, Item, Put
from tests.emulators.cosmos import EMULATOR_KEY, cosmos_endpoint, cosmos_server  # noqa: F401

CHAT_ROUTE = Route(resource_kind="chat_store", connection="c")

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


def http_error(status: int, retry_after_ms: int | None = None) -> cosmos_exc.CosmosHttpResponseError:
    exc = cosmos_exc.CosmosHttpResponseError(status_code=status, message=f"injected {status}")
    if retry_after_ms is not None:
        exc.headers = {"x-ms-retry-after-ms": str(retry_after_ms)}
    return exc


class FaultyContainer:
    """Wraps an SDK ``ContainerProxy``; scripted faults per method, then the real call.

    ``before[name]`` is a list of exceptions raised (one per call) before the call reaches the
    backend; ``after[name]`` likewise, but raised *after* the real call completed (a response
    lost on the way back: the write committed, the client cannot know).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.before: dict[str, list[BaseException]] = {}
        self.after: dict[str, list[BaseException]] = {}
        self.always: dict[str, Callable[[], BaseException]] = {}
        self.calls: dict[str, int] = {}

    def fail(self, name: str, *errors: BaseException) -> None:
        self.before.setdefault(name, []).extend(errors)

    def fail_always(self, name: str, error: Callable[[], BaseException]) -> None:
        self.always[name] = error

    def lose_response(self, name: str, error: BaseException) -> None:
        self.after.setdefault(name, []).append(error)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.always:
                raise self.always[name]()
            pending = self.before.get(name)
            if pending:
                raise pending.pop(0)
            result = target(*args, **kwargs)
            lost = self.after.get(name)
            if lost and hasattr(result, "__await__"):

                async def then_lose() -> Any:
                    await result
                    raise lost.pop(0)

                return then_lose()
            return result

        return call


class Setup:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.route = Target(
            resource_kind="chat_store",
            backend="cosmos",
            params={"url": endpoint, "database": f"f{uuid.uuid4().hex[:12]}"},
        )
        self.stores: list[CosmosItemStore] = []

    def store(self) -> tuple[CosmosItemStore, FaultyContainer, CosmosItemStore]:
        """A store whose container is wrapped, and a clean peer to observe the backend."""
        faulty_store = CosmosItemStore(CosmosConfig.from_target(self.route), retry=FAST)
        faults = FaultyContainer(faulty_store.container)
        faulty_store.container = faults
        observer = CosmosItemStore(CosmosConfig.from_target(self.route), share_client=False)
        self.stores += [faulty_store, observer]
        return faulty_store, faults, observer

    async def close(self) -> None:
        for store in self.stores:
            await store.close()
        async with CosmosClient(self.endpoint, credential=EMULATOR_KEY) as client:
            await client.delete_database(self.route.params["database"])


@pytest.fixture
async def setup(cosmos_endpoint: str) -> AsyncIterator[Setup]:
    s = Setup(cosmos_endpoint)
    await provision(s.route, dry_run=False)
    try:
        yield s
    finally:
        await s.close()


async def test_throttled_read_is_retried_then_succeeds(setup: Setup) -> None:
    store, faults, observer = setup.store()
    await observer.write("p", [Put("k", b"v")])
    faults.fail("read_item", http_error(429, retry_after_ms=5), http_error(429, retry_after_ms=5))
    assert await store.get("p", "k") == Item("k", b"v")
    assert faults.calls["read_item"] == 3


async def test_timeouts_and_unavailability_on_a_batch_are_retried_then_it_applies_once(setup: Setup) -> None:
    store, faults, observer = setup.store()
    faults.fail("execute_item_batch", http_error(408), http_error(503))
    await store.write("p", [Put("a", b"1", condition=Absent()), Put("b", b"2", condition=Absent())])
    assert faults.calls["execute_item_batch"] == 3
    assert [i.key for i in await observer.query("p", "")] == ["a", "b"]


async def test_connection_errors_on_a_query_are_retried_then_it_succeeds(setup: Setup) -> None:
    store, faults, observer = setup.store()
    await observer.write("p", [Put("s#1", b"x"), Put("s#2", b"y")])
    faults.fail("query_items", ServiceRequestError("connection refused"), ConnectionResetError("reset"))
    assert [i.key for i in await store.query("p", "s#")] == ["s#1", "s#2"]


async def test_exhausted_retries_raise_backend_unavailable_with_the_servers_retry_after(setup: Setup) -> None:
    store, faults, observer = setup.store()
    faults.fail_always("create_item", lambda: http_error(429, retry_after_ms=2500))
    with pytest.raises(BackendUnavailable) as info:
        await store.write("p", [Put("k", b"v", condition=Absent())])
    assert info.value.retry_after == 3
    assert faults.calls["create_item"] == FAST.attempts
    assert await observer.get("p", "k") is None


async def test_unreachable_backend_through_kindstore_is_503_with_retry_after_and_no_partial_write(
    setup: Setup,
) -> None:
    store, faults, observer = setup.store()
    faults.fail_always("execute_item_batch", lambda: ServiceRequestError("connection refused"))
    kind_store = KindStore("chat_store", CHAT_ROUTE, Connection(name="c", backend="cosmos"), store)
    with pytest.raises(NorthstarError) as info:
        await kind_store.write("p", [Put("a", b"1", condition=Absent()), Put("b", b"2")])
    error = info.value
    assert (error.code, error.http_status) == ("chat_store.backend_unavailable", 503)
    assert error.headers["Retry-After"] == "1"
    assert faults.calls["execute_item_batch"] == FAST.attempts
    assert await observer.query("p", "") == []


async def test_a_throttled_batch_that_keeps_failing_writes_nothing(setup: Setup) -> None:
    store, faults, observer = setup.store()
    await observer.write("p", [Put("keep", b"original")])
    faults.fail_always("execute_item_batch", lambda: http_error(429, retry_after_ms=10))
    with pytest.raises(BackendUnavailable):
        await store.write("p", [Put("keep", b"changed"), Put("new", b"n", condition=Absent())])
    assert [(i.key, i.value) for i in await observer.query("p", "")] == [("keep", b"original")]


async def test_a_retried_create_that_had_committed_reports_condition_failed(setup: Setup) -> None:
    store, faults, observer = setup.store()
    faults.lose_response("create_item", ServiceResponseError("connection reset after send"))
    with pytest.raises(ConditionFailed):
        await store.write("p", [Put("k", b"v", condition=Absent())])
    # The first attempt committed: the item is there exactly once, with the written value.
    assert await observer.get("p", "k") == Item("k", b"v")


async def test_an_idempotent_append_whose_response_was_lost_is_applied_exactly_once(setup: Setup) -> None:
    store, faults, observer = setup.store()
    faults.lose_response("execute_item_batch", ServiceResponseError("connection reset after send"))
    stream = SequencedStream(store, "p", "chat")
    outcome = await stream.append(
        lambda first: [b"hello"], now=time.time(), idempotency_key="req-1", payload_fingerprint="fp"
    )
    assert (outcome.first_seq, outcome.last_seq) == (1, 1)
    observed = SequencedStream(observer, "p", "chat")
    assert [e.value for e in await observed.read(0, 10)] == [b"hello"]
    assert await observed.head() == 1


async def test_an_authentication_failure_is_backend_unavailable_without_retries(setup: Setup) -> None:
    store, faults, _ = setup.store()
    faults.fail("read_item", ClientAuthenticationError("token expired"))
    with pytest.raises(BackendUnavailable, match="token expired"):
        await store.get("p", "k")
    assert faults.calls["read_item"] == 1


async def test_a_batch_over_the_payload_limit_is_invalid_and_not_retried(setup: Setup) -> None:
    store, faults, observer = setup.store()
    faults.fail("execute_item_batch", http_error(413))
    with pytest.raises(InvalidItem):
        await store.write("p", [Put("a", b"1"), Put("b", b"2")])
    assert faults.calls["execute_item_batch"] == 1
    assert await observer.query("p", "") == []
