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
tests must import nothing backend-specific (the one exception is here: the test registry keeps
its routes in the memory adapter, off the backend under test) and stay reasonably small (cloud
emulators are slow: dozens of operations per test, not thousands).
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
from contracts.suite.scan import ScanContract
from northstar_adapters.memory import MemoryItemStore
from northstar_core.routing import BACKENDS, RESOURCE_KINDS, Connection, Route, RoutingRegistry, Target
from northstar_core.storage import ItemStore

__all__ = ["ALL_CONTRACTS", "make_registry"]


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
    backend, else ``memory``. The route table is a fresh store of the memory adapter, so routing
    spends no operation of the backend under test. Stable signature:
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
        MemoryItemStore(),
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
    ScanContract,
    CanvasContract,
    TimelineContract,
    StoresContract,
    SpineContract,
    SafetyContract,
)
