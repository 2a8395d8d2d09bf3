"""Faults the Firestore emulator cannot produce, injected around the real client.

``FaultyApi`` wraps the SDK's GAPIC client of a real ``AsyncClient`` talking to the emulator
and raises scripted errors *before* a call (the request never reached the server) or *after*
a commit (the batch committed, the answer was lost). Everything else is the real adapter on the
real emulator.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from northstar_adapters.firestore import FirestoreItemStore
from northstar_adapters.firestore.store import CAPABILITIES
from northstar_core.errors import NorthstarError
from northstar_core.kernel.idempotency import fingerprint
from northstar_core.kernel.streams import SequencedStream
from northstar_core.routing import Connection, KindStore, Route
from northstar_core.storage import Absent, BackendUnavailable, ConditionFailed, Item, Put, VersionIs
from tests.emulators.firestore import firestore_emulator, free_port  # noqa: F401 - session fixture

CHAT_ROUTE = Route(resource_kind="chat_store", connection="c")


@dataclass
class Fault:
    exc: Exception
    after: bool = False  # commit only: the batch commits, then the answer is lost


@dataclass
class FaultPlan:
    """Scripted faults per GAPIC method, consumed in order; calls are counted."""

    script: dict[str, list[Fault]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def next(self, method: str) -> Fault | None:
        self.calls[method] = self.calls.get(method, 0) + 1
        queue = self.script.get(method)
        return queue.pop(0) if queue else None


class FaultyApi:
    """Proxy of the SDK's ``FirestoreAsyncClient`` that injects the plan's faults."""

    def __init__(self, real: Any, plan: FaultPlan) -> None:
        self._real = real
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        fault = self._plan.next("commit")
        if fault is not None and not fault.after:
            raise fault.exc
        response = await self._real.commit(*args, **kwargs)
        if fault is not None:
            raise fault.exc
        return response

    async def batch_get_documents(self, *args: Any, **kwargs: Any) -> Any:
        fault = self._plan.next("batch_get_documents")
        if fault is not None:
            raise fault.exc
        return await self._real.batch_get_documents(*args, **kwargs)

    async def run_query(self, *args: Any, **kwargs: Any) -> Any:
        fault = self._plan.next("run_query")
        if fault is not None:
            raise fault.exc
        return await self._real.run_query(*args, **kwargs)


def faulty_store(project: str, plan: FaultPlan, **kwargs: Any) -> FirestoreItemStore:
    def make_client() -> firestore.AsyncClient:
        client = firestore.AsyncClient(project=project)
        client._firestore_api_internal = FaultyApi(client._firestore_api, plan)
        return client

    kwargs.setdefault("sleep", _no_sleep)
    return FirestoreItemStore(
        collection="northstar_chat_store", project=project, client_factory=make_client, **kwargs
    )


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def project(firestore_emulator: str) -> AsyncIterator[str]:  # noqa: F811
    yield f"faults-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def clean(project: str) -> AsyncIterator[FirestoreItemStore]:
    """A fault-free store on the same project, to look at what really got written."""
    store = FirestoreItemStore(collection="northstar_chat_store", project=project)
    yield store
    await store.close()


def unavailable() -> Exception:
    return gexc.ServiceUnavailable("injected: backend unavailable")


def deadline() -> Exception:
    return gexc.DeadlineExceeded("injected: deadline exceeded")


P = "t_faults|lab|p"


async def test_get_retries_transient_errors_then_succeeds(project: str, clean: FirestoreItemStore) -> None:
    await clean.write(P, [Put("k", b"v")])
    plan = FaultPlan({"batch_get_documents": [Fault(unavailable()), Fault(deadline())]})
    store = faulty_store(project, plan)
    assert await store.get(P, "k") == Item("k", b"v")
    assert plan.calls["batch_get_documents"] == 3


async def test_query_retries_throttling_then_succeeds(project: str, clean: FirestoreItemStore) -> None:
    await clean.write(P, [Put("a", b"1"), Put("b", b"2")])
    faults = [Fault(gexc.ResourceExhausted("injected: quota")), Fault(gexc.Aborted("injected"))]
    plan = FaultPlan({"run_query": faults})
    store = faulty_store(project, plan)
    assert [i.key for i in await store.query(P, "")] == ["a", "b"]
    assert plan.calls["run_query"] == 3


async def test_write_retries_a_commit_that_never_arrived(project: str, clean: FirestoreItemStore) -> None:
    plan = FaultPlan({"commit": [Fault(unavailable())]})
    store = faulty_store(project, plan)
    await store.write(P, [Put("k", b"v", condition=Absent())])
    assert await clean.get(P, "k") == Item("k", b"v")
    assert plan.calls["commit"] == 2


async def test_retried_create_whose_first_commit_landed_reports_success(
    project: str, clean: FirestoreItemStore
) -> None:
    # The first commit applies but its answer is lost; the retry's create() then fails with
    # AlreadyExists, and the adapter recognises its own write id on the documents.
    plan = FaultPlan({"commit": [Fault(deadline(), after=True)]})
    store = faulty_store(project, plan)
    await store.write(P, [Put("a", b"1", condition=Absent()), Put("b", b"2", condition=Absent())])
    assert await clean.get(P, "a") == Item("a", b"1")
    assert await clean.get(P, "b") == Item("b", b"2")
    assert plan.calls["commit"] == 2


async def test_retried_version_update_whose_first_commit_landed_reports_success(
    project: str, clean: FirestoreItemStore
) -> None:
    await clean.write(P, [Put("k", b"old", version=1)])
    plan = FaultPlan({"commit": [Fault(unavailable(), after=True)]})
    store = faulty_store(project, plan)
    await store.write(P, [Put("k", b"new", version=2, condition=VersionIs(1))])
    assert await clean.get(P, "k") == Item("k", b"new", 2)


async def test_retry_after_a_landed_commit_still_fails_if_another_writer_won(
    project: str, clean: FirestoreItemStore
) -> None:
    # A genuine conflict is not mistaken for our own landed write.
    await clean.write(P, [Put("k", b"theirs", condition=Absent())])
    plan = FaultPlan({"commit": [Fault(unavailable())]})
    store = faulty_store(project, plan)
    with pytest.raises(ConditionFailed):
        await store.write(P, [Put("k", b"mine", condition=Absent())])
    assert await clean.get(P, "k") == Item("k", b"theirs")


async def test_append_whose_answer_was_lost_is_committed_exactly_once(
    project: str, clean: FirestoreItemStore
) -> None:
    plan = FaultPlan({"commit": [Fault(deadline(), after=True)]})
    stream = SequencedStream(faulty_store(project, plan), P, "chat")
    fp = fingerprint({"text": "hi"})

    async def post() -> Any:
        return await stream.append(
            lambda seq: [b"hi"], now=time.time(), idempotency_key="k1", payload_fingerprint=fp
        )

    first = await post()
    assert (first.first_seq, first.last_seq) == (1, 1) and not first.replayed
    again = await post()
    assert again.replayed and again.first_seq == 1
    assert [i.value for i in await SequencedStream(clean, P, "chat").read(0, 10)] == [b"hi"]


async def test_exhausted_retries_raise_backend_unavailable_and_write_nothing(
    project: str, clean: FirestoreItemStore
) -> None:
    plan = FaultPlan({"commit": [Fault(unavailable()) for _ in range(10)]})
    store = faulty_store(project, plan, max_attempts=4)
    with pytest.raises(BackendUnavailable) as raised:
        await store.write(P, [Put(f"k{i}", b"v", condition=Absent()) for i in range(3)])
    assert "ServiceUnavailable" in raised.value.reason
    assert plan.calls["commit"] == 4
    assert await clean.query(P, "") == []


async def test_exhaustion_through_kind_store_is_a_503_with_retry_after(
    project: str, clean: FirestoreItemStore
) -> None:
    plan = FaultPlan({"commit": [Fault(gexc.ResourceExhausted("injected: quota")) for _ in range(10)]})
    inner = faulty_store(project, plan, max_attempts=3)
    kind = KindStore("chat_store", CHAT_ROUTE, Connection(name="c", backend="firestore"), inner)
    with pytest.raises(NorthstarError) as raised:
        await kind.write(P, [Put("k", b"v", condition=Absent())])
    err = raised.value
    assert (err.code, err.http_status) == ("chat_store.backend_unavailable", 503)
    assert int(err.headers["Retry-After"]) >= 1
    assert await clean.get(P, "k") is None


async def test_permanent_errors_are_not_retried(project: str) -> None:
    plan = FaultPlan({"batch_get_documents": [Fault(gexc.PermissionDenied("injected: denied"))]})
    store = faulty_store(project, plan)
    with pytest.raises(BackendUnavailable):
        await store.get(P, "k")
    assert plan.calls["batch_get_documents"] == 1


async def test_backoff_is_jittered_and_bounded(project: str) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    plan = FaultPlan({"run_query": [Fault(unavailable()) for _ in range(10)]})
    store = faulty_store(project, plan, max_attempts=6, base_delay=0.05, max_delay=0.3, sleep=record)
    with pytest.raises(BackendUnavailable):
        await store.query(P, "")
    assert len(delays) == 5  # one pause between consecutive attempts, none after the last
    assert all(0 <= d <= min(0.3, 0.05 * 2**i) for i, d in enumerate(delays))


async def test_unreachable_backend_is_backend_unavailable(firestore_emulator: str) -> None:  # noqa: F811
    store = FirestoreItemStore(
        collection="northstar_chat_store",
        project="nowhere",
        emulator_host=f"127.0.0.1:{free_port()}",
        timeout=2.0,
        max_attempts=2,
        sleep=_no_sleep,
    )
    try:
        with pytest.raises(BackendUnavailable):
            await store.write(P, [Put("k", b"v")])
        with pytest.raises(BackendUnavailable):
            await store.ping()
    finally:
        await store.close()


_FAULT_KINDS: dict[str, Callable[[], Exception]] = {
    "unavailable": unavailable,
    "deadline": deadline,
    "throttled": lambda: gexc.ResourceExhausted("injected"),
    "aborted": lambda: gexc.Aborted("injected"),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    script=st.lists(st.tuples(st.sampled_from(sorted(_FAULT_KINDS)), st.booleans()), max_size=5),
)
def test_a_batch_is_never_partially_written_whatever_the_faults(
    firestore_emulator: str,  # noqa: F811
    script: list[tuple[str, bool]],
) -> None:
    async def scenario() -> None:
        project = f"faults-{uuid.uuid4().hex[:12]}"
        plan = FaultPlan({"commit": [Fault(_FAULT_KINDS[kind](), after=after) for kind, after in script]})
        store = faulty_store(project, plan, max_attempts=3)
        clean = FirestoreItemStore(collection="northstar_chat_store", project=project)
        keys = ["e#1", "e#2", "i#idem"]
        try:
            try:
                await store.write(P, [Put(k, k.encode(), condition=Absent()) for k in keys])
                succeeded = True
            except BackendUnavailable:
                succeeded = False
            found = [i.key for i in await clean.query(P, "")]
            assert found in (keys, []), f"partial write: {found}"
            if succeeded:
                assert found == keys
            # A failure is only reported when no attempt is known to have applied.
            if not succeeded and found:
                assert any(after for _, after in script[:3])
        finally:
            await store.close()
            await clean.close()

    asyncio.run(scenario())


def test_declared_capabilities() -> None:
    assert CAPABILITIES.durable and CAPABILITIES.shared and not CAPABILITIES.atomic_checks
    assert CAPABILITIES.max_batch_ops == 100
