"""Chunked checkpoints of a state derived from a sequenced stream.

A reader that rebuilds a state from a stream (a canvas from its command log) starts from the
latest checkpoint and applies only the entries after it, so the cost of a rebuild is bounded
whatever the length of the history.

Layout, in the stream's own partition: ``c#<seq:016>#<chunk:04>`` — the state after entry
``seq``, split into chunks of at most :data:`CHUNK_BYTES` (an item holds at most
``MAX_VALUE_BYTES``). A checkpoint is written in the same atomic batch as the entry it follows
(:func:`checkpoint_ops`), so it exists exactly when that entry
does, and every chunk is written once under an ``Absent`` condition.
"""

from __future__ import annotations

from typing import Final

import msgspec

from northstar_core.kernel.streams import SequencedStream
from northstar_core.storage import Absent, Op, Put

CHECKPOINT_PREFIX: Final = "c#"
CHUNK_BYTES: Final = 250_000


class Checkpoint(msgspec.Struct, frozen=True):
    """A state as checkpointed: after entry ``seq``, encoded as ``data``."""

    seq: int
    data: bytes


def _key(seq: int, chunk: int) -> str:
    return f"{CHECKPOINT_PREFIX}{seq:016d}#{chunk:04d}"


def checkpoint_ops(seq: int, data: bytes) -> list[Op]:
    """The operations that store ``data`` as the checkpoint after entry ``seq``: commit them
    in the batch that appends entry ``seq`` (the append's ``extra_ops``)."""
    pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    return [Put(_key(seq, i), piece, condition=Absent()) for i, piece in enumerate(pieces)]


class Checkpoints:
    """The checkpoints stored beside ``stream`` (see module doc)."""

    def __init__(self, stream: SequencedStream) -> None:
        self.stream = stream

    async def latest(self) -> Checkpoint | None:
        """The latest checkpoint (one query, two when it has several chunks), ``None`` if none."""
        store, partition = self.stream.store, self.stream.partition
        last = await store.query(partition, CHECKPOINT_PREFIX, descending=True, limit=1)
        if not last:
            return None
        _, seq_text, chunk_text = last[0].key.split("#")
        chunks = last
        if int(chunk_text) > 0:
            prefix = f"{CHECKPOINT_PREFIX}{seq_text}#"
            chunks = await store.query(partition, prefix, limit=int(chunk_text) + 1)
        return Checkpoint(int(seq_text), b"".join(chunk.value for chunk in chunks))


__all__ = ["CHECKPOINT_PREFIX", "CHUNK_BYTES", "Checkpoint", "Checkpoints", "checkpoint_ops"]
