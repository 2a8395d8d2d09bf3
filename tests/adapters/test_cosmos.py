# ruff: noqa: F811 - pytest fixtures imported from tests.emulators.cosmos are parameters here
"""The contract suite on Cosmos DB, against the patched ``@vercel/cosmosdb-server`` launcher.

Each test gets a fresh database (created by the adapter's own ``provision``) and deletes it
afterwards. The emulator is memory-only but keeps data while it runs, so the suite checks the
real backend's declared capabilities (durable, shared) honestly: a store closed and reopened —
or a peer with its own client — sees the data through the same server.

Also here: the launcher's two fixes (missing document → 404; atomic transactional batches with
the SDK's header partition key) proven with the raw SDK, and adapter-specific layout checks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos import exceptions as cosmos_exc
from azure.cosmos.aio import CosmosClient
from hypothesis import given
from hypothesis import strategies as st

import northstar_adapters.cosmos as cosmos_adapter
from contracts.harness import BackendHarness
from contracts.suite import ALL_CONTRACTS
from northstar_adapters.cosmos import CosmosConfig, CosmosItemStore, open_store, provision
from northstar_adapters.cosmos.layout import decode_id, encode_id
from northstar_core.routing import Target
from northstar_core.storage import KEY_MAX_BYTES, BackendUnavailable, Item, ItemStore, Put
from tests.emulators.cosmos import EMULATOR_KEY, cosmos_endpoint, cosmos_server  # noqa: F401


class CosmosHarness(BackendHarness):
    """Stores on one fresh database of the emulator; peers get their own client."""

    name = "cosmos"

    def __init__(self, endpoint: str, kind: str = "chat_store") -> None:
        self.endpoint = endpoint
        self.route = Target(
            resource_kind=kind,
            backend="cosmos",
            params={"url": endpoint, "database": f"t{uuid.uuid4().hex[:12]}"},
        )
        self._stores: list[ItemStore] = []

    async def setup(self) -> None:
        await provision(self.route, dry_run=False)

    async def open(self) -> ItemStore:
        store = open_store(self.route)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        store = CosmosItemStore(CosmosConfig.from_target(self.route), share_client=False)
        self._stores.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        self._stores.clear()
        async with CosmosClient(self.endpoint, credential=EMULATOR_KEY) as client:
            try:
                await client.delete_database(self.route.params["database"])
            except cosmos_exc.CosmosResourceNotFoundError:
                pass


@pytest.fixture
async def cosmos_harness(cosmos_endpoint: str) -> AsyncIterator[CosmosHarness]:
    h = CosmosHarness(cosmos_endpoint)
    await h.setup()
    try:
        yield h
    finally:
        await h.cleanup()


class TestCosmos(*ALL_CONTRACTS):  # type: ignore[misc]
    # The emulator re-scans the container for every query page: keep the state machine modest.
    model_max_examples: ClassVar[int] = 15
    model_step_count: ClassVar[int] = 15

    @pytest.fixture
    async def harness(self, cosmos_harness: CosmosHarness) -> CosmosHarness:
        return cosmos_harness


# --- the launcher's fixes, with the raw SDK -------------------------------------------------


@pytest.fixture
async def raw_container(cosmos_endpoint: str) -> AsyncIterator[Any]:
    async with CosmosClient(cosmos_endpoint, credential=EMULATOR_KEY) as client:
        name = f"raw{uuid.uuid4().hex[:10]}"
        database = await client.create_database_if_not_exists(name)
        container = await database.create_container_if_not_exists(
            id="items", partition_key=PartitionKey(path="/pk")
        )
        try:
            yield container
        finally:
            await client.delete_database(name)


async def _ids(container: Any, pk: str) -> list[str]:
    query = "SELECT c.id FROM c WHERE c.pk = @pk ORDER BY c.id"
    params: list[dict[str, Any]] = [{"name": "@pk", "value": pk}]
    return [d["id"] async for d in container.query_items(query, parameters=params, partition_key=pk)]


class TestLauncherFixes:
    async def test_reading_a_missing_document_is_404(self, raw_container: Any) -> None:
        with pytest.raises(cosmos_exc.CosmosResourceNotFoundError):
            await raw_container.read_item("missing", partition_key="p")

    async def test_reading_with_the_wrong_partition_key_is_404(self, raw_container: Any) -> None:
        await raw_container.create_item({"id": "a", "pk": "p"})
        with pytest.raises(cosmos_exc.CosmosResourceNotFoundError):
            await raw_container.read_item("a", partition_key="other")

    async def test_batch_with_header_partition_key_upserts_replaces_patches_and_deletes(
        self, raw_container: Any
    ) -> None:
        first = await raw_container.create_item({"id": "a", "pk": "p", "n": 1})
        await raw_container.create_item({"id": "gone", "pk": "p"})
        results = await raw_container.execute_item_batch(
            [
                ("upsert", ({"id": "b", "pk": "p", "n": 2},)),
                ("replace", ("a", {"id": "a", "pk": "p", "n": 3}), {"if_match_etag": first["_etag"]}),
                ("patch", ("b", [{"op": "set", "path": "/n", "value": 9}])),
                ("read", ("a",)),
                ("delete", ("gone",)),
            ],
            partition_key="p",
        )
        assert [r["statusCode"] for r in results] == [201, 200, 200, 200, 204]
        assert (await raw_container.read_item("a", partition_key="p"))["n"] == 3
        assert (await raw_container.read_item("b", partition_key="p"))["n"] == 9
        assert await _ids(raw_container, "p") == ["a", "b"]

    async def test_a_batch_with_a_failing_operation_leaves_nothing(self, raw_container: Any) -> None:
        original = await raw_container.create_item({"id": "a", "pk": "p", "n": 1})
        await raw_container.create_item({"id": "d", "pk": "p"})
        with pytest.raises(cosmos_exc.CosmosBatchOperationError) as info:
            await raw_container.execute_item_batch(
                [
                    ("create", ({"id": "new", "pk": "p"},)),
                    ("upsert", ({"id": "a", "pk": "p", "n": 2},)),
                    ("delete", ("d",)),
                    ("replace", ("a", {"id": "a", "pk": "p", "n": 3}), {"if_match_etag": original["_etag"]}),
                ],
                partition_key="p",
            )
        assert info.value.error_index == 3
        assert [r["statusCode"] for r in info.value.operation_responses] == [424, 424, 424, 412]
        assert await _ids(raw_container, "p") == ["a", "d"]
        after = await raw_container.read_item("a", partition_key="p")
        assert (after["n"], after["_etag"]) == (1, original["_etag"])

    async def test_a_failing_create_in_a_batch_reports_409_and_rolls_back(self, raw_container: Any) -> None:
        await raw_container.create_item({"id": "taken", "pk": "p"})
        with pytest.raises(cosmos_exc.CosmosBatchOperationError) as info:
            await raw_container.execute_item_batch(
                [("create", ({"id": "x", "pk": "p"},)), ("create", ({"id": "taken", "pk": "p"},))],
                partition_key="p",
            )
        assert (info.value.error_index, info.value.status_code) == (1, 409)
        assert await _ids(raw_container, "p") == ["taken"]

    async def test_concurrent_overlapping_batches_are_all_or_nothing(
        self,
        raw_container: Any,
        cosmos_endpoint: str,
    ) -> None:
        async def attempt(i: int) -> bool:
            try:
                await raw_container.execute_item_batch(
                    [
                        ("create", ({"id": f"mine-{i}", "pk": "p"},)),
                        ("create", ({"id": "contested", "pk": "p"},)),
                    ],
                    partition_key="p",
                )
            except cosmos_exc.CosmosBatchOperationError:
                return False
            return True

        won = await asyncio.gather(*(attempt(i) for i in range(12)))
        assert sum(won) == 1
        assert await _ids(raw_container, "p") == sorted(["contested", f"mine-{won.index(True)}"])


# --- adapter specifics ----------------------------------------------------------------------


@given(st.text(min_size=1).filter(lambda k: len(k.encode()) <= KEY_MAX_BYTES))
def test_document_ids_round_trip_and_avoid_forbidden_characters(key: str) -> None:
    doc_id = encode_id(key)
    assert decode_id(doc_id) == key
    assert not set(doc_id) & set("/\\?#") and len(doc_id.encode()) <= 1023


async def test_keys_with_forbidden_id_characters_work(cosmos_harness: CosmosHarness) -> None:
    store = await cosmos_harness.open()
    keys = ["a/b", "c\\d", "e?f", "g#h", "%2F", " spaced "]
    await store.write("p", [Put(k, k.encode()) for k in keys])
    assert [i.key for i in await store.query("p", "")] == sorted(keys)
    for k in keys:
        assert await store.get("p", k) == Item(k, k.encode())


async def test_queries_follow_continuation_across_pages(
    cosmos_harness: CosmosHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await cosmos_harness.open()
    keys = [f"s#{n:03d}" for n in range(9)]
    await store.write("p", [Put(k, b"x") for k in keys])
    monkeypatch.setattr(cosmos_adapter, "MAX_PAGE", 2)
    assert [i.key for i in await store.query("p", "s#", limit=7)] == keys[:7]
    assert [i.key for i in await store.query("p", "s#", limit=7, descending=True)] == keys[::-1][:7]


async def test_expiring_items_carry_native_ttl(cosmos_harness: CosmosHarness) -> None:
    store = await cosmos_harness.open()
    assert isinstance(store, CosmosItemStore)
    await store.write("p", [Put("t", b"x", expires_at=time.time() + 120), Put("forever", b"y")])
    timed = await store.container.read_item(encode_id("t"), partition_key="p")
    forever = await store.container.read_item(encode_id("forever"), partition_key="p")
    assert 110 <= timed["ttl"] <= 121
    assert "ttl" not in forever


async def test_provision_is_idempotent_and_dry_run_changes_nothing(cosmos_endpoint: str) -> None:
    route = Target(
        resource_kind="event_spine",
        backend="cosmos",
        params={"url": cosmos_endpoint, "database": f"prov{uuid.uuid4().hex[:8]}", "container_prefix": "x_"},
    )
    plan = await provision(route, dry_run=True)
    assert all(line.startswith("would ensure") for line in plan) and "x_event_spine" in plan[1]
    async with CosmosClient(cosmos_endpoint, credential=EMULATOR_KEY) as client:
        names = [d["id"] async for d in client.list_databases()]
        assert route.params["database"] not in names
        try:
            assert await provision(route, dry_run=False) == [
                p.replace("would ensure", "ensured") for p in plan
            ]
            await provision(route, dry_run=False)
            props = (
                await client.get_database_client(route.params["database"])
                .get_container_client("x_event_spine")
                .read()
            )
            assert props["partitionKey"]["paths"] == ["/pk"]
            assert props["defaultTtl"] == -1
        finally:
            await client.delete_database(route.params["database"])


async def test_a_key_in_connection_params_is_refused(cosmos_endpoint: str) -> None:
    target = Target(resource_kind="chat_store", backend="cosmos", params={"url": cosmos_endpoint, "key": "x"})
    with pytest.raises(ValueError, match="unknown field `key`"):
        open_store(target)


async def test_missing_credentials_are_backend_unavailable(
    cosmos_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route = Target(
        resource_kind="chat_store",
        backend="cosmos",
        params={"url": cosmos_endpoint, "key_env": "NO_SUCH_KEY"},
    )
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    store = open_store(route)
    try:
        import azure.identity.aio  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="NO_SUCH_KEY"):
            await store.get("p", "k")
    else:
        pytest.skip("azure-identity is installed: the Entra ID chain is used instead")
    finally:
        await store.close()


async def test_concurrent_provisioners_of_one_database_all_succeed(cosmos_endpoint: str) -> None:
    database = f"prov{uuid.uuid4().hex[:8]}"
    routes = [
        Target(resource_kind=kind, backend="cosmos", params={"url": cosmos_endpoint, "database": database})
        for kind in ("chat_store", "notes_store", "event_spine", "memory_store")
    ]
    try:
        plans = await asyncio.gather(*(provision(r, dry_run=False) for r in routes))
        assert all(plan[0].startswith("ensured") for plan in plans)
        async with CosmosClient(cosmos_endpoint, credential=EMULATOR_KEY) as client:
            names = {c["id"] async for c in client.get_database_client(database).list_containers()}
        assert names == {f"northstar_{r.resource_kind}" for r in routes}
    finally:
        async with CosmosClient(cosmos_endpoint, credential=EMULATOR_KEY) as client:
            await client.delete_database(database)
