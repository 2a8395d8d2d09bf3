"""What an adapter supplies to run the contract suite.

A test module for a backend defines a ``harness`` fixture returning a :class:`BackendHarness`
and subclasses the contract classes, e.g.::

    from contracts.suite import ALL_CONTRACTS

    class TestSqlite(*ALL_CONTRACTS):
        @pytest.fixture
        async def harness(self, tmp_path):
            h = SqliteHarness(tmp_path)
            yield h
            await h.cleanup()
"""

from __future__ import annotations

import abc

from northstar_core.storage import ItemStore


class BackendHarness(abc.ABC):
    """Opens stores of one backend for the contract suite.

    Every store a harness opens for one test uses the same namespace (table, collection,
    container…), fresh for that test, so tests never see each other's data.
    """

    name: str

    @abc.abstractmethod
    async def open(self) -> ItemStore:
        """A store on this test's namespace."""

    @abc.abstractmethod
    async def open_peer(self) -> ItemStore:
        """A second, independent store object on the same configuration, as a second server
        process would open it (new client, new connection). Backends that are not ``shared``
        return a store that sees nothing of the first."""

    async def cleanup(self) -> None:  # noqa: B027 - a harness with nothing to wipe keeps this
        """Close what was opened and wipe the namespace."""
