"""The contract suite on the memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts.suite import ALL_CONTRACTS
from tests.adapters.harnesses import MemoryHarness


class TestMemory(*ALL_CONTRACTS):  # type: ignore[misc]
    @pytest.fixture
    async def harness(self) -> AsyncIterator[MemoryHarness]:
        h = MemoryHarness()
        yield h
        await h.cleanup()
