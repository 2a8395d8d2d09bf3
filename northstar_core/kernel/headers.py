"""A stream's header: one value stored beside a sequenced stream, committed with its first entry.

A chat thread's metadata is its header: it exists exactly when the thread has messages, because
it is written (once, under an ``Absent`` condition) in the atomic batch that appends entry 1.

Layout, in the stream's own partition: ``meta`` — the header.
"""

from __future__ import annotations

from typing import Final

from northstar_core.kernel.streams import SequencedStream
from northstar_core.storage import Absent, Op, Put

HEADER_KEY: Final = "meta"


def header_ops(first_seq: int, value: bytes) -> list[Op]:
    """The operations an append starting at ``first_seq`` commits to store the header ``value``:
    the header with entry 1, nothing with any later entry."""
    return [Put(HEADER_KEY, value, condition=Absent())] if first_seq == 1 else []


async def read_header(stream: SequencedStream) -> bytes | None:
    """The stream's header, ``None`` while the stream has no entry."""
    item = await stream.store.get(stream.partition, HEADER_KEY)
    return item.value if item is not None else None


__all__ = ["HEADER_KEY", "header_ops", "read_header"]
