"""Opt-in smoke run of the whole contract suite against real AWS, GCP and Azure accounts.

What the emulators cannot show (real condition semantics under load, real continuation tokens,
TTL settings, throttling, IAM) is exercised here when — and only when — credentials are present
in the environment. Each backend runs when its variables are set and is skipped otherwise, with
a reason that names the missing variables:

* DynamoDB: ``NORTHSTAR_SMOKE_DYNAMODB_REGION`` plus credentials from the AWS SDK's standard
  chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role…);
* Firestore: ``NORTHSTAR_SMOKE_FIRESTORE_PROJECT`` plus ``GOOGLE_APPLICATION_CREDENTIALS`` (a
  service-account key file; workload identity also works if that variable points nowhere —
  set it anyway to opt in);
* Cosmos DB: ``NORTHSTAR_SMOKE_COSMOS_URL`` (account endpoint) plus ``COSMOS_KEY``.

Run: ``.venv/bin/python -m pytest tests/cloud_smoke -m cloud_smoke``. Each run provisions its
own uniquely named namespace with the adapter's ``provision`` (DynamoDB table
``nsmoke<run>_chat_store``, Firestore collection ``nsmoke<run>_chat_store``, Cosmos database
``nsmoke<run>``) and deletes it at the end, even on failure. Within the run every test gets a
fresh partition namespace (:class:`Namespaced`), so tests never see each other's data without
paying for one table per test.

The environment is read when this module is imported — before the emulator fixtures of the same
pytest session set their fake credentials (``AWS_ACCESS_KEY_ID=testing``, the Cosmos emulator
key, ``FIRESTORE_EMULATOR_HOST``) — and restored around every smoke test, so a smoke run never
talks to an emulator and an emulator run never talks to a cloud.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from contracts.harness import BackendHarness
from contracts.suite import ALL_CONTRACTS
from northstar_core.routing import Target
from northstar_core.storage import Item, ItemStore, Op

pytestmark = pytest.mark.cloud_smoke

RUN = uuid.uuid4().hex[:8]
KIND = "chat_store"  # the harness's route kind (the contract registry routes every kind to it)

REQUIRED: dict[str, tuple[str, ...]] = {
    "dynamodb": ("NORTHSTAR_SMOKE_DYNAMODB_REGION",),
    "firestore": ("NORTHSTAR_SMOKE_FIRESTORE_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"),
    "cosmos": ("NORTHSTAR_SMOKE_COSMOS_URL", "COSMOS_KEY"),
}
# Everything the SDKs read that the emulator fixtures may override during the same session.
_SDK_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "FIRESTORE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "COSMOS_KEY",
)
ENV_AT_IMPORT: dict[str, str | None] = {name: os.environ.get(name) for name in _SDK_ENV}
for _names in REQUIRED.values():
    ENV_AT_IMPORT.update({name: os.environ.get(name) for name in _names})


def missing(backend: str) -> list[str]:
    return [name for name in REQUIRED[backend] if not ENV_AT_IMPORT.get(name)]


@pytest.fixture
def real_cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK environment as it was before any emulator fixture touched it (no emulator)."""
    for name, value in ENV_AT_IMPORT.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)


# --- per-test namespaces inside one provisioned table/collection/container ----------------------


class Namespaced(ItemStore):
    """The real store with every partition prefixed by a per-test namespace (nothing else)."""

    def __init__(self, inner: ItemStore, namespace: str) -> None:
        self.inner = inner
        self.namespace = namespace
        self.capabilities = inner.capabilities

    def _p(self, partition: str) -> str:
        return f"{self.namespace}|{partition}"

    async def get(self, partition: str, key: str) -> Item | None:
        return await self.inner.get(self._p(partition), key)

    async def query(
        self,
        partition: str,
        prefix: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> list[Item]:
        return await self.inner.query(
            self._p(partition), prefix, after=after, before=before, limit=limit, descending=descending
        )

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        await self.inner.write(self._p(partition), ops)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


class CloudHarness(BackendHarness):
    """Stores on the run's namespace; ``open_peer`` builds a store with its own client."""

    def __init__(self, name: str, route: Target) -> None:
        self.name = name
        self.route = route
        self.namespace = f"smoke-{uuid.uuid4().hex[:12]}"
        self._stores: list[ItemStore] = []

    def _inner(self, *, peer: bool) -> ItemStore:
        if self.name == "dynamodb":
            from northstar_adapters.dynamodb import DynamoConfig, DynamoItemStore, open_store

            if peer:
                return DynamoItemStore(DynamoConfig.from_target(self.route), share_client=False)
            return open_store(self.route)
        if self.name == "cosmos":
            from northstar_adapters.cosmos import CosmosConfig, CosmosItemStore, open_store

            if peer:
                return CosmosItemStore(CosmosConfig.from_target(self.route), share_client=False)
            return open_store(self.route)
        from northstar_adapters.firestore import open_store

        return open_store(self.route)  # every Firestore store has its own client

    async def open(self) -> ItemStore:
        store = Namespaced(self._inner(peer=False), self.namespace)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        store = Namespaced(self._inner(peer=True), self.namespace)
        self._stores.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        self._stores.clear()


def route_for(backend: str) -> Target:
    env = ENV_AT_IMPORT
    if backend == "dynamodb":
        params: dict[str, Any] = {
            "region": env["NORTHSTAR_SMOKE_DYNAMODB_REGION"],
            "table_prefix": f"nsmoke{RUN}_",
        }
    elif backend == "firestore":
        params = {
            "project": env["NORTHSTAR_SMOKE_FIRESTORE_PROJECT"],
            "collection_prefix": f"nsmoke{RUN}_",
            "index_file": os.path.join(os.environ.get("TMPDIR", "/tmp"), f"nsmoke{RUN}.indexes.json"),
        }
    else:
        params = {"url": env["NORTHSTAR_SMOKE_COSMOS_URL"], "database": f"nsmoke{RUN}"}
    return Target(resource_kind=KIND, backend=backend, params=params)


async def _provision(route: Target) -> None:
    from northstar_adapters import AdapterFactory

    for line in await AdapterFactory().provision(route, dry_run=False) or []:
        print(f"cloud smoke provision: {line}")


async def _teardown(route: Target) -> None:
    if route.backend == "dynamodb":
        from northstar_adapters.dynamodb import drop

        await drop(route)
    elif route.backend == "firestore":
        from google.cloud import firestore

        client = firestore.AsyncClient(project=route.params["project"])
        try:
            await client.recursive_delete(client.collection(f"{route.params['collection_prefix']}{KIND}"))
        finally:
            api = getattr(client, "_firestore_api_internal", None)
            if api is not None:
                await api.transport.close()
    else:
        from azure.cosmos import exceptions as cosmos_exc
        from azure.cosmos.aio import CosmosClient

        async with CosmosClient(route.params["url"], credential=os.environ["COSMOS_KEY"]) as client:
            try:
                await client.delete_database(route.params["database"])
            except cosmos_exc.CosmosResourceNotFoundError:
                pass


def _run(coro: Any) -> None:
    """Run ``coro`` on its own loop in a helper thread (the session fixtures are first requested
    from inside a test's running loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def _namespace(backend: str) -> Iterator[Target]:
    """Provision the run's namespace on ``backend`` once; delete it at the end of the session."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV_AT_IMPORT.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        mp.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
        route = route_for(backend)
        _run(_provision(route))
        try:
            yield route
        finally:
            _run(_teardown(route))


@pytest.fixture(scope="session")
def dynamodb_smoke_route() -> Iterator[Target]:
    yield from _namespace("dynamodb")


@pytest.fixture(scope="session")
def firestore_smoke_route() -> Iterator[Target]:
    yield from _namespace("firestore")


@pytest.fixture(scope="session")
def cosmos_smoke_route() -> Iterator[Target]:
    yield from _namespace("cosmos")


class _Smoke:
    # Real round trips cost tens of milliseconds: keep the state machines small.
    model_max_examples: ClassVar[int] = 8
    model_step_count: ClassVar[int] = 10
    backend: ClassVar[str]

    @pytest.fixture
    async def harness(
        self, request: pytest.FixtureRequest, real_cloud_env: None
    ) -> AsyncIterator[CloudHarness]:
        route: Target = request.getfixturevalue(f"{self.backend}_smoke_route")
        h = CloudHarness(self.backend, route)
        try:
            yield h
        finally:
            await h.cleanup()


def _not_configured(backend: str) -> Any:
    def test_not_configured() -> None:
        pytest.skip(f"cloud smoke {backend}: not configured (set {', '.join(missing(backend))})")

    test_not_configured.__name__ = f"test_{backend}_smoke_not_configured"
    return test_not_configured


# One contract class per configured backend; one skipped test (whose reason names the missing
# variables) per backend that is not — rather than hundreds of skipped contract tests.
for _backend, _name in (
    ("dynamodb", "TestRealDynamoDB"),
    ("firestore", "TestRealFirestore"),
    ("cosmos", "TestRealCosmos"),
):
    if missing(_backend):
        globals()[f"test_{_backend}_smoke_not_configured"] = _not_configured(_backend)
    else:
        globals()[_name] = type(_name, (_Smoke, *ALL_CONTRACTS), {"backend": _backend})
