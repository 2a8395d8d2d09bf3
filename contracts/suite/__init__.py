"""The backend-agnostic contract suite.

``ALL_CONTRACTS`` is the tuple of contract classes every backend runs. A backend's test module
supplies a ``harness`` fixture (a :class:`contracts.harness.BackendHarness`) and writes::

    class TestSqlite(*ALL_CONTRACTS):
        @pytest.fixture
        async def harness(self, tmp_path):
            h = SqliteHarness(tmp_path)
            yield h
            await h.cleanup()

Adding a domain contract: write ``contracts/suite/<domain>.py`` with a class named
``<Domain>Contract`` (not ``Test*``) whose async tests take ``harness`` and build the domain
service on a registry from :func:`make_registry`::

    async def test_something(self, harness):
        registry = await make_registry(harness)
        chat = ChatService(registry, ...)

then append the class to ``ALL_CONTRACTS`` below (one import line + one tuple entry). Contract
tests must import nothing backend-specific and stay reasonably small (cloud emulators are slow:
dozens of operations per test, not thousands).
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts.harness import BackendHarness
from contracts.suite.itemstore import (
    CapabilityContract,
    ConcurrencyContract,
    ItemStoreContract,
    ItemStoreModelContract,
    StreamIdempotencyContract,
)
from northstar_core.routing import BACKENDS, RESOURCE_KINDS, Connection, Route, RoutingRegistry, Target
from northstar_core.storage import (
    Absent,
    Capabilities,
    ConditionFailed,
    Delete,
    Item,
    ItemStore,
    Op,
    Put,
    VersionIs,
    validate_ops,
)

__all__ = ["ALL_CONTRACTS", "make_registry"]


class _RouteTable(ItemStore):
    """A tiny in-process item store holding only the test registry's route table.

    It keeps route bookkeeping off the backend under test (no backend operations are spent on
    routing), and it is not a backend: the routes it holds all point at the harness store.
    """

    capabilities = Capabilities(
        durable=False, shared=False, native_ttl=False, max_batch_ops=100, atomic_checks=False
    )

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Item] = {}

    async def get(self, partition: str, key: str) -> Item | None:
        return self._items.get((partition, key))

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
        keys = sorted(
            k
            for p, k in self._items
            if p == partition
            and k.startswith(prefix)
            and (after is None or k > after)
            and (before is None or k < before)
        )
        if descending:
            keys.reverse()
        return [self._items[(partition, k)] for k in keys[: max(limit, 0)]]

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        validate_ops(ops, self.capabilities)
        for index, op in enumerate(ops):
            current = self._items.get((partition, op.key))
            if isinstance(op.condition, Absent) and current is not None:
                raise ConditionFailed(index)
            if isinstance(op.condition, VersionIs) and (
                current is None or current.version != op.condition.version
            ):
                raise ConditionFailed(index)
        for op in ops:
            if isinstance(op, Put):
                self._items[(partition, op.key)] = Item(op.key, op.value, op.version, op.expires_at)
            elif isinstance(op, Delete):
                self._items.pop((partition, op.key), None)


class _SingleStoreFactory:
    """A BackendFactory that serves every route from one already-open store."""

    def __init__(self, store: ItemStore) -> None:
        self.store = store

    def open(self, target: Target) -> ItemStore:
        return self.store


async def make_registry(
    harness_or_store: BackendHarness | ItemStore,
    *,
    kinds: Sequence[str] = RESOURCE_KINDS,
) -> RoutingRegistry:
    """A ``lab`` :class:`RoutingRegistry` routing every kind in ``kinds`` to the store under test.

    Given a harness, the store is ``await harness.open()`` (so the harness closes it); given a
    store, that store. Routes name the harness's backend (``harness.name``) when it is a known
    backend, else ``memory``; the route table itself lives in process memory. Stable signature:
    domain contracts across the project call ``await make_registry(harness)``.
    """
    if isinstance(harness_or_store, BackendHarness):
        store = await harness_or_store.open()
        name = getattr(harness_or_store, "name", "memory")
    else:
        store = harness_or_store
        name = "memory"
    backend = name if name in BACKENDS else "memory"
    registry = RoutingRegistry(
        _RouteTable(),
        _SingleStoreFactory(store),
        connections={"under_test": Connection(name="under_test", backend=backend)},
        deployment_mode="lab",
        refresh_seconds=3600.0,
    )
    for kind in kinds:
        await registry.set_route(Route(resource_kind=kind, connection="under_test"), probe=False)
    return registry


# Every backend runs every class here. Domain engineers: append your contract class (keep the
# import above the tuple, one line each).
from contracts.suite.canvas import CanvasContract, TimelineContract  # noqa: E402
from contracts.suite.spine import SafetyContract, SpineContract  # noqa: E402
from contracts.suite.stores import StoresContract  # noqa: E402

ALL_CONTRACTS: tuple[type, ...] = (
    ItemStoreContract,
    CapabilityContract,
    ConcurrencyContract,
    StreamIdempotencyContract,
    ItemStoreModelContract,
    CanvasContract,
    TimelineContract,
    StoresContract,
    SpineContract,
    SafetyContract,
)
