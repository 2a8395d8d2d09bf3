"""Helpers for tests that steer the SQLite writer: block its file lock, wait for a queue."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from northstar_adapters.sqlite import SqliteItemStore


@contextlib.contextmanager
def writer_blocked(path: Path) -> Iterator[None]:
    """Hold the file's write lock from a foreign connection, as another process would, so the
    writer waits and the batches queued meanwhile commit as one group."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def until_queued(store: SqliteItemStore, n: int) -> None:
    """Wait until exactly ``n`` batches wait in the queue (the writer holds the rest)."""
    for _ in range(400):
        await asyncio.sleep(0.005)
        if store.pending_writes() == n:
            return
    raise AssertionError(f"{store.pending_writes()} writes queued, expected {n}")
