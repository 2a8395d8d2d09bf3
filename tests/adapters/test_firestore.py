"""The contract suite on Firestore, against the official emulator started by the test run.

Each test gets a fresh project id (the emulator isolates projects; cheaper than wiping) and
wipes it afterwards. ``open_peer`` opens a second store with its own ``AsyncClient`` (its own
gRPC channel), as a second server process would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.types import StructuredQuery
from hypothesis import given
from hypothesis import strategies as st

from contracts.harness import BackendHarness
from contracts.suite import ALL_CONTRACTS
from northstar_adapters.firestore import FirestoreItemStore, index_document, open_store, provision
from northstar_adapters.firestore.layout import doc_id, raw_id
from northstar_adapters.firestore.provision import DEFAULT_INDEX_FILE, query_is_covered, render_index_file
from northstar_adapters.firestore.store import store_from_params
from northstar_core.routing import Target
from northstar_core.storage import ItemStore, Put
from tests.emulators.firestore import firestore_emulator, wipe  # noqa: F401 - session fixture


class FirestoreHarness(BackendHarness):
    """Stores on one fresh emulator project; every store (peer or not) has its own client."""

    name = "firestore"

    def __init__(self, host: str) -> None:
        self.host = host
        self.project = f"contract-{uuid.uuid4().hex[:12]}"
        self.route = Target(resource_kind="chat_store", backend="firestore", params={"project": self.project})
        self._stores: list[FirestoreItemStore] = []

    async def open(self) -> ItemStore:
        store = open_store(self.route)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        # Its own AsyncClient and gRPC channel, as a second server process would have.
        store = store_from_params(self.route.resource_kind, dict(self.route.params), share_client=False)
        self._stores.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        self._stores.clear()
        await asyncio.to_thread(wipe, self.host, self.project)


class TestFirestore(*ALL_CONTRACTS):  # type: ignore[misc]
    # Every emulator round trip costs milliseconds; the state machine sends hundreds.
    model_max_examples: ClassVar[int] = 15
    model_step_count: ClassVar[int] = 15

    @pytest.fixture
    async def harness(self, firestore_emulator: str) -> AsyncIterator[FirestoreHarness]:  # noqa: F811
        h = FirestoreHarness(firestore_emulator)
        try:
            yield h
        finally:
            await h.cleanup()


# --- opt-in smoke run against a real Firestore database -----------------------------------

SMOKE_ENV = "NORTHSTAR_SMOKE_FIRESTORE_PROJECT"


class CloudFirestoreHarness(BackendHarness):
    """Stores on a real project (credentials from the SDK's default chain), one fresh
    collection prefix per test, deleted afterwards."""

    name = "firestore"

    def __init__(self, project: str) -> None:
        self.project = project
        self.prefix = f"northstar_smoke_{uuid.uuid4().hex[:10]}_"
        self.route = Target(
            resource_kind="chat_store",
            backend="firestore",
            params={
                "project": project,
                "database": os.environ.get("NORTHSTAR_SMOKE_FIRESTORE_DATABASE", "(default)"),
                "collection_prefix": self.prefix,
            },
        )
        self._stores: list[FirestoreItemStore] = []

    async def open(self) -> ItemStore:
        store = open_store(self.route)
        self._stores.append(store)
        return store

    async def open_peer(self) -> ItemStore:
        store = store_from_params(self.route.resource_kind, dict(self.route.params), share_client=False)
        self._stores.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        self._stores.clear()
        client = firestore.AsyncClient(project=self.project, database=self.route.params["database"])
        await client.recursive_delete(client.collection(f"{self.prefix}chat_store"))


class _CloudSmoke:
    """The same contracts on real Firestore (collected only when ``$NORTHSTAR_SMOKE_FIRESTORE_PROJECT``
    names a project the default credentials can write to)."""

    model_max_examples: ClassVar[int] = 5
    model_step_count: ClassVar[int] = 10

    @pytest.fixture
    async def harness(self, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CloudFirestoreHarness]:
        monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)  # never the emulator here
        h = CloudFirestoreHarness(os.environ[SMOKE_ENV])
        try:
            yield h
        finally:
            await h.cleanup()


if os.environ.get(SMOKE_ENV):

    @pytest.mark.cloud_smoke
    class TestFirestoreCloudSmoke(_CloudSmoke, *ALL_CONTRACTS):  # type: ignore[misc]
        pass

else:

    @pytest.mark.cloud_smoke
    def test_firestore_cloud_smoke() -> None:
        pytest.skip(f"cloud smoke (real Firestore): set {SMOKE_ENV} and GCP credentials to run the contracts")


# --- indexes: the emulator never asks for them, so check them here ------------------------

ROOT = Path(__file__).resolve().parents[2]


class _QuerySpy(FirestoreItemStore):
    """The real store, recording every query it sends (as a ``StructuredQuery`` dict)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[dict[str, Any]] = []

    def build_query(self, *args: Any, **kwargs: Any) -> Any:
        query = super().build_query(*args, **kwargs)
        self.sent.append(StructuredQuery.to_dict(query._to_protobuf(), use_integers_for_enums=False))
        return query

    def build_scan_query(self, *args: Any, **kwargs: Any) -> Any:
        query = super().build_scan_query(*args, **kwargs)
        self.sent.append(StructuredQuery.to_dict(query._to_protobuf(), use_integers_for_enums=False))
        return query


def _as_dict(query: Any) -> dict[str, Any]:
    return StructuredQuery.to_dict(query._to_protobuf(), use_integers_for_enums=False)


def test_committed_index_file_is_what_provision_writes() -> None:
    assert (ROOT / DEFAULT_INDEX_FILE).read_text() == render_index_file()


async def test_every_query_the_adapter_issues_is_covered_by_the_index_file(firestore_emulator: str) -> None:  # noqa: F811
    store = _QuerySpy(collection="northstar_chat_store", project=f"idx-{uuid.uuid4().hex[:12]}")
    try:
        p = "t_idx|lab|p"
        await store.write(p, [Put(f"s#{i:03d}", b"x") for i in range(12)])
        await store.write(p, [Put(f"s#{i:03d}x", b"gone", expires_at=time.time() - 5) for i in range(6)])
        shapes = [
            {},
            {"descending": True},
            {"after": "s#003"},
            {"before": "s#009"},
            {"after": "s#002", "before": "s#010", "descending": True},
            {"after": "a"},  # an after below the prefix
            {"before": "zzz"},  # a before above the prefix end
            {"limit": 3},  # expired leftovers force a second page
        ]
        for kwargs in shapes:
            for prefix in ("", "s#"):
                await store.query(p, prefix, **kwargs)
        assert len(store.sent) > len(shapes) * 2  # some queries paged past expired items
        sent = len(store.sent)
        for prefix, limit in (("t_idx|", 5), ("t_idx|", 1000), ("", 3)):
            token = None
            while True:
                page = await store.scan(prefix, token=token, limit=limit)
                if page.token is None:
                    break
                token = page.token
        assert len(store.sent) > sent  # the scans' queries are checked too
    finally:
        await store.close()
    document = json.loads((ROOT / DEFAULT_INDEX_FILE).read_text())
    uncovered = [q for q in store.sent if not query_is_covered(q, document)]
    assert uncovered == []


def test_index_check_rejects_queries_the_index_file_does_not_serve() -> None:
    # The checker must be able to fail: exempted fields and multi-field queries are uncovered.
    from google.auth.credentials import AnonymousCredentials

    client = firestore.AsyncClient(project="x", credentials=AnonymousCredentials())
    items = client.collection("northstar_k").document("p").collection("items")
    document = index_document()
    assert not query_is_covered(_as_dict(items.order_by("ver")), document)
    assert not query_is_covered(
        _as_dict(items.where(filter=firestore.FieldFilter("ver", "==", 1)).order_by("sk")), document
    )
    assert not query_is_covered(_as_dict(client.collection_group("items").order_by("sk")), document)
    assert query_is_covered(_as_dict(items.order_by("sk", direction="DESCENDING")), document)


async def test_provision_dry_run_returns_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "firestore.indexes.json"
    route = Target(
        resource_kind="chat_store",
        backend="firestore",
        params={"project": "p", "emulator_host": "127.0.0.1:1", "index_file": str(target)},
    )
    plan = await provision(route, dry_run=True)
    assert any("create" in line for line in plan)
    assert all(line.startswith("[dry-run] ") for line in plan)
    assert not target.exists()


async def test_provision_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "firestore.indexes.json"
    route = Target(
        resource_kind="chat_store",
        backend="firestore",
        params={"project": "p", "emulator_host": "127.0.0.1:1", "index_file": str(target)},
    )
    first = await provision(route, dry_run=False)
    assert any(f"index file {target}: create" == line for line in first)
    assert json.loads(target.read_text()) == index_document()
    second = await provision(route, dry_run=False)
    assert f"index file {target}: up to date" in second


# --- configuration ---------------------------------------------------------------------------


async def test_emulator_host_param_selects_the_emulator_without_the_env_var(
    firestore_emulator: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST")
    project = f"param-{uuid.uuid4().hex[:12]}"
    route = Target(
        resource_kind="chat_store",
        backend="firestore",
        params={"project": project, "emulator_host": firestore_emulator, "collection_prefix": "x_"},
    )
    store = open_store(route)
    try:
        await store.write("t_a|lab|p", [Put("k", b"v")])
        item = await store.get("t_a|lab|p", "k")
        assert item is not None and item.value == b"v"
        assert store.collection == "x_chat_store"
    finally:
        await store.close()
        await asyncio.to_thread(wipe, firestore_emulator, project)


async def test_kinds_on_one_configuration_share_one_client_until_the_last_closes(
    firestore_emulator: str,  # noqa: F811
) -> None:
    project = f"share-{uuid.uuid4().hex[:12]}"
    chat = open_store(Target(resource_kind="chat_store", backend="firestore", params={"project": project}))
    notes = open_store(Target(resource_kind="notes_store", backend="firestore", params={"project": project}))
    try:
        await chat.write("t_a|lab|p", [Put("k", b"chat")])
        await notes.write("t_a|lab|p", [Put("k", b"notes")])
        assert chat._client() is notes._client()
        await chat.close()
        item = await notes.get("t_a|lab|p", "k")  # still open: the channel outlives the first close
        assert item is not None and item.value == b"notes"  # kinds live in separate collections
    finally:
        await chat.close()
        await notes.close()
        await asyncio.to_thread(wipe, firestore_emulator, project)


def test_a_missing_emulator_jar_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.emulators.firestore import launcher

    module = launcher()
    monkeypatch.setenv(module.JAR_ENV, str(tmp_path / "missing.jar"))
    with pytest.raises(module.EmulatorMissing, match="emulator jar not found"):
        module.start()


# --- layout ----------------------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["", ".", "..", "__x__", "__", "~", "~s", "/", "a/b", "_a", ".a", "~e"]
)


@given(_TEXT)
def test_doc_ids_are_valid_and_reversible(raw: str) -> None:
    encoded = doc_id(raw)
    assert raw_id(encoded) == raw
    assert encoded and "/" not in encoded and encoded not in (".", "..")
    assert not (encoded.startswith("__") and encoded.endswith("__"))


@given(_TEXT, _TEXT)
def test_distinct_raw_ids_never_share_a_doc_id(a: str, b: str) -> None:
    assert (doc_id(a) == doc_id(b)) == (a == b)


def test_a_maximal_key_of_slashes_fits_the_doc_id_limit() -> None:
    assert len(doc_id("/" * 512).encode()) <= 1500

