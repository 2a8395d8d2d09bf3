"""DynamoDB adapter under injected faults (moto cannot throttle, time out or drop connections).

A :class:`FaultyClient` wraps the real aioboto3 client talking to the serialised moto server and
injects failures into named operations; the emulator's state is then read through a clean
store to prove what was (not) written.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from northstar_adapters.dynamodb import DynamoConfig, DynamoItemStore, drop, open_store, provision
from northstar_core.errors import NorthstarError
from northstar_core.kernel.streams import SequencedStream
from northstar_core.routing import Connection, KindStore, Route, Target
from northstar_core.storage import (
    Absent,
    BackendUnavailable,
    ConditionFailed,
    Delete,
    Item,
    Put,
    VersionIs,
)
from tests.emulators.moto import dynamodb_endpoint, moto_server  # noqa: F401 - session fixtures

CHAT_ROUTE = Route(resource_kind="chat_store", connection="c")

P = "t_faults|lab|p"
MAX_ATTEMPTS = 4
BASE_DELAY = 0.001
MAX_DELAY = 0.004

# --- faults ----------------------------------------------------------------------------------

Call = Callable[..., Awaitable[Any]]


def throttled(operation: str) -> Exception:
    return ClientError(
        {
            "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


def transaction_conflict(operation: str) -> Exception:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


def server_error(operation: str) -> Exception:
    return ClientError(
        {
            "Error": {"Code": "InternalServerError", "Message": "oops"},
            "ResponseMetadata": {"HTTPStatusCode": 500},
        },
        operation,
    )


def connection_refused(operation: str) -> Exception:
    return EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def read_timeout(operation: str) -> Exception:
    return ReadTimeoutError(endpoint_url="http://127.0.0.1:9")


class Fault:
    """Fail the first ``times`` calls (``None``: every call) with ``error(operation)``.

    With ``after_applying`` the call reaches the backend first and only its response is lost:
    the ambiguous case where a write applied but the client saw a timeout.
    """

    def __init__(
        self, error: Callable[[str], Exception], times: int | None = None, *, after_applying: bool = False
    ) -> None:
        self.error = error
        self.times = times
        self.after_applying = after_applying
        self.injected = 0

    async def __call__(self, operation: str, call: Call, kwargs: dict[str, Any]) -> Any:
        if self.times is not None and self.injected >= self.times:
            return await call(**kwargs)
        self.injected += 1
        if self.after_applying:
            await call(**kwargs)
        raise self.error(operation)


class FaultyClient:
    """Wraps an aioboto3 DynamoDB client; operations named in ``faults`` go through a Fault."""

    def __init__(self, inner: Any, faults: dict[str, Fault]) -> None:
        self._inner = inner
        self._faults = faults
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        fault = self._faults.get(name)
        if fault is None:
            return attr

        async def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            return await fault(name, attr, kwargs)

        return call


# --- fixtures --------------------------------------------------------------------------------


class Setup:
    def __init__(self, endpoint: str) -> None:
        self.route = Target(
            resource_kind="chat_store",
            backend="dynamodb",
            params={
                "endpoint_url": endpoint,
                "table_prefix": f"f{uuid.uuid4().hex[:12]}_",
                "max_attempts": MAX_ATTEMPTS,
                "base_delay": BASE_DELAY,
                "max_delay": MAX_DELAY,
            },
        )
        self.stores: list[DynamoItemStore] = []
        self.clients: list[FaultyClient] = []
        self.delays: list[float] = []

    def faulty(self, config: dict[str, Any] | None = None, **faults: Fault) -> DynamoItemStore:
        """A store whose client injects ``faults`` (keyed by client method name); ``config``
        overrides settings of the route's :class:`DynamoConfig`."""

        def wrap(inner: Any) -> FaultyClient:
            client = FaultyClient(inner, faults)
            self.clients.append(client)
            return client

        async def sleep(delay: float) -> None:
            self.delays.append(delay)

        settings = msgspec.structs.replace(DynamoConfig.from_target(self.route), **(config or {}))
        store = DynamoItemStore(settings, share_client=False, client_wrapper=wrap, sleep=sleep)
        self.stores.append(store)
        return store

    def clean(self) -> DynamoItemStore:
        """A store without faults, to read what the emulator really holds."""
        store = open_store(self.route)
        self.stores.append(store)
        return store

    @property
    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for client in self.clients:
            total.update(client.calls)
        return total


@pytest.fixture
async def setup(dynamodb_endpoint: str) -> AsyncIterator[Setup]:  # noqa: F811
    s = Setup(dynamodb_endpoint)
    await provision(s.route, dry_run=False)
    try:
        yield s
    finally:
        for store in s.stores:
            await store.close()
        await drop(s.route)


def assert_backoff(delays: list[float]) -> None:
    """Full-jitter exponential backoff: the n-th delay lies in [0, min(max, base * 2^n)]."""
    for n, delay in enumerate(delays):
        assert 0 <= delay <= min(MAX_DELAY, BASE_DELAY * 2**n)


# --- retries then success --------------------------------------------------------------------


async def test_throttled_put_is_retried_with_backoff_then_succeeds(setup: Setup) -> None:
    store = setup.faulty(put_item=Fault(throttled, times=3))
    await store.write(P, [Put("k", b"v", condition=Absent())])
    assert setup.calls["put_item"] == 4
    assert len(setup.delays) == 3
    assert_backoff(setup.delays)
    assert await setup.clean().get(P, "k") == Item("k", b"v")


async def test_throttled_transaction_is_retried_then_applies_once(setup: Setup) -> None:
    store = setup.faulty(transact_write_items=Fault(throttled, times=2))
    await store.write(P, [Put("a", b"1", condition=Absent()), Put("b", b"2", condition=Absent())])
    assert setup.calls["transact_write_items"] == 3
    clean = setup.clean()
    assert [i.key for i in await clean.query(P, "")] == ["a", "b"]


async def test_transaction_conflict_cancellation_is_retried(setup: Setup) -> None:
    store = setup.faulty(transact_write_items=Fault(transaction_conflict, times=1))
    await store.write(P, [Put("a", b"1", condition=Absent()), Put("b", b"2")])
    assert setup.calls["transact_write_items"] == 2
    assert await setup.clean().get(P, "b") == Item("b", b"2")


async def test_reads_are_retried_through_connection_errors_timeouts_and_5xx(setup: Setup) -> None:
    await setup.clean().write(P, [Put("k", b"v")])
    store = setup.faulty(
        get_item=Fault(connection_refused, times=1),
        query=Fault(read_timeout, times=1),
    )
    assert await store.get(P, "k") == Item("k", b"v")
    assert [i.key for i in await store.query(P, "")] == ["k"]
    flaky = setup.faulty(get_item=Fault(server_error, times=2))
    assert await flaky.get(P, "k") == Item("k", b"v")
    assert setup.calls["get_item"] == 2 + 3


# --- exhaustion ------------------------------------------------------------------------------


async def test_always_throttled_write_raises_backend_unavailable_after_bounded_attempts(setup: Setup) -> None:
    store = setup.faulty(put_item=Fault(throttled))
    with pytest.raises(BackendUnavailable) as info:
        await store.write(P, [Put("k", b"v")])
    assert setup.calls["put_item"] == MAX_ATTEMPTS
    assert "ProvisionedThroughputExceededException" in info.value.reason
    assert info.value.retry_after >= 1
    assert_backoff(setup.delays)
    assert await setup.clean().get(P, "k") is None


async def test_always_throttled_transaction_writes_nothing(setup: Setup) -> None:
    clean = setup.clean()
    await clean.write(P, [Put("keep", b"old", version=1)])
    store = setup.faulty(transact_write_items=Fault(throttled))
    with pytest.raises(BackendUnavailable):
        await store.write(
            P,
            [
                Put("new", b"n", condition=Absent()),
                Put("keep", b"changed", version=2, condition=VersionIs(1)),
                Delete("other"),
            ],
        )
    assert setup.calls["transact_write_items"] == MAX_ATTEMPTS
    assert await clean.query(P, "") == [Item("keep", b"old", 1)]


async def test_no_retry_starts_after_the_retry_budget_is_spent(setup: Setup) -> None:
    store = setup.faulty(config={"retry_budget": 0.0}, query=Fault(throttled), put_item=Fault(read_timeout))
    with pytest.raises(BackendUnavailable):
        await store.query(P, "")
    with pytest.raises(BackendUnavailable):
        await store.write(P, [Put("k", b"v")])
    assert setup.calls == Counter(query=1, put_item=1)


async def test_unreachable_backend_exhaustion_is_backend_unavailable(setup: Setup) -> None:
    store = setup.faulty(get_item=Fault(connection_refused), query=Fault(connection_refused))
    with pytest.raises(BackendUnavailable):
        await store.get(P, "k")
    with pytest.raises(BackendUnavailable):
        await store.query(P, "")
    assert setup.calls == Counter(get_item=MAX_ATTEMPTS, query=MAX_ATTEMPTS)


async def test_kind_store_maps_exhaustion_to_503_backend_unavailable_with_retry_after(setup: Setup) -> None:
    store = setup.faulty(transact_write_items=Fault(throttled), get_item=Fault(read_timeout))
    kind_store = KindStore("chat_store", CHAT_ROUTE, Connection(name="c", backend="dynamodb"), store)
    with pytest.raises(NorthstarError) as info:
        await kind_store.write(P, [Put("a", b"1"), Put("b", b"2")])
    assert (info.value.code, info.value.http_status) == ("chat_store.backend_unavailable", 503)
    assert int(info.value.headers["Retry-After"]) >= 1
    with pytest.raises(NorthstarError) as read_info:
        await kind_store.get(P, "a")
    assert read_info.value.code == "chat_store.backend_unavailable"
    assert await setup.clean().query(P, "") == []


async def test_a_really_unreachable_endpoint_is_backend_unavailable() -> None:
    route = Target(
        resource_kind="chat_store",
        backend="dynamodb",
        # Port 9 (discard) is closed on loopback: connections are refused at once.
        params={"endpoint_url": "http://127.0.0.1:9", "max_attempts": 2, "base_delay": 0.001},
    )
    store = open_store(route)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await store.write(P, [Put("k", b"v", condition=Absent())])
        assert "after 2 attempts" in info.value.reason
    finally:
        await store.close()


async def test_a_missing_table_fails_at_once_and_says_to_provision(dynamodb_endpoint: str) -> None:  # noqa: F811
    route = Target(
        resource_kind="chat_store", backend="dynamodb",
        params={"endpoint_url": dynamodb_endpoint, "table_prefix": ""},
        table=f"missing_{uuid.uuid4().hex[:8]}",
    )
    store = open_store(route)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await store.get(P, "k")
        assert "ResourceNotFoundException" in info.value.reason
        assert "northstar provision" in info.value.reason
    finally:
        await store.close()


# --- ambiguous failures: never applied twice --------------------------------------------------


async def test_conditional_put_whose_response_was_lost_succeeds_once(setup: Setup) -> None:
    store = setup.faulty(put_item=Fault(read_timeout, times=1, after_applying=True))
    # The retry meets its own earlier write (condition fails) and recognises its write token.
    await store.write(P, [Put("k", b"v", condition=Absent())])
    assert setup.calls["put_item"] == 2
    assert await setup.clean().get(P, "k") == Item("k", b"v")


async def test_transaction_whose_response_was_lost_succeeds_once(setup: Setup) -> None:
    store = setup.faulty(transact_write_items=Fault(server_error, times=1, after_applying=True))
    await store.write(P, [Put("a", b"1", condition=Absent()), Put("b", b"2", condition=Absent())])
    assert [i.key for i in await setup.clean().query(P, "")] == ["a", "b"]


async def test_stream_append_whose_response_was_lost_is_not_duplicated(setup: Setup) -> None:
    store = setup.faulty(put_item=Fault(read_timeout, times=1, after_applying=True))
    stream = SequencedStream(store, P, "chat")
    done = await stream.append(lambda first: [b"only once"], now=time.time())
    assert (done.first_seq, done.last_seq) == (1, 1)
    entries = await SequencedStream(setup.clean(), P, "chat").read(0, 10)
    assert [e.value for e in entries] == [b"only once"]


async def test_lost_response_then_a_real_conflict_still_reports_condition_failed(setup: Setup) -> None:
    clean = setup.clean()

    class LoseThenCompete(Fault):
        async def __call__(self, operation: str, call: Call, kwargs: dict[str, Any]) -> Any:
            if self.injected == 0:
                self.injected += 1
                # Our request never lands; a competitor creates the key meanwhile.
                await clean.write(P, [Put("k", b"theirs", condition=Absent())])
                raise read_timeout(operation)
            return await call(**kwargs)

    store = setup.faulty(put_item=LoseThenCompete(read_timeout))
    with pytest.raises(ConditionFailed):
        await store.write(P, [Put("k", b"mine", condition=Absent())])
    assert await clean.get(P, "k") == Item("k", b"theirs")


async def test_exhausted_ambiguous_write_says_it_may_have_applied(setup: Setup) -> None:
    store = setup.faulty(put_item=Fault(read_timeout))
    with pytest.raises(BackendUnavailable) as info:
        await store.write(P, [Put("k", b"v")])
    assert "may have applied" in info.value.reason
