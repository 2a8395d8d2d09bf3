"""The contract suite on the SQLite backend, plus SQLite-specific guarantees."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.suite import ALL_CONTRACTS
from tests.adapters.harnesses import SqliteHarness


class TestSqlite(*ALL_CONTRACTS):  # type: ignore[misc]
    @pytest.fixture
    async def harness(self, tmp_path: Path) -> AsyncIterator[SqliteHarness]:
        h = SqliteHarness(tmp_path)
        yield h
        await h.cleanup()
