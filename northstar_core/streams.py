"""Sequenced append-only streams with idempotency, built on the :class:`ItemStore` primitive.

Layout inside one partition (one partition per stream, so a stream's entries and its
idempotency records share a partition and commit in one atomic batch):

* ``s#<seq:016>`` — entry ``seq`` (1-based, gap-free);
* ``i#<key>``     — idempotency record: payload fingerprint + the original result.

The rules live here, once: an append at ``expected_head`` writes ``s#<expected_head+1…>`` under
``Absent`` conditions, so of N concurrent writers on one head exactly one wins (the store's
own uniqueness check, never a read-then-check); the idempotency record is written in the same
batch, so a retried request either finds it (and gets the first result back, writing nothing)
or is the one that writes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from northstar_core.errors import NorthstarError, idempotency_mismatch
from northstar_core.storage import Absent, ConditionFailed, Item, ItemStore, Op, Put

SEQ_PREFIX: Final = "s#"
IDEM_PREFIX: Final = "i#"
MAX_APPEND_ATTEMPTS: Final = 64


def seq_key(seq: int) -> str:
    return f"{SEQ_PREFIX}{seq:016d}"


def seq_of(key: str) -> int:
    return int(key[len(SEQ_PREFIX) :])


def fingerprint(payload: Any) -> str:
    """A stable digest of a request payload (canonical JSON, sorted keys)."""
    canonical = msgspec.json.encode(payload, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


class IdempotencyRecord(msgspec.Struct, frozen=True):
    fingerprint: str
    result: msgspec.Raw
    created_at: float


class Appended(msgspec.Struct, frozen=True):
    """The outcome of an append: the first new sequence and the (possibly replayed) result."""

    first_seq: int
    last_seq: int
    result: bytes
    replayed: bool


class HeadMoved(Exception):
    """An append at an expected head lost to a concurrent writer (or the head differed)."""

    def __init__(self, head: int) -> None:
        super().__init__(f"stream head is {head}")
        self.head = head


class SequencedStream:
    """One stream in one partition of an item store (see module doc)."""

    def __init__(self, store: ItemStore, partition: str, domain: str) -> None:
        self.store = store
        self.partition = partition
        self.domain = domain

    async def head(self) -> int:
        """The last committed sequence number, 0 for an empty stream."""
        last = await self.store.query(self.partition, SEQ_PREFIX, descending=True, limit=1)
        return seq_of(last[0].key) if last else 0

    async def idempotent_result(self, key: str, fp: str) -> Appended | None:
        """The stored outcome for ``key``; 422 ``<domain>.idempotency_mismatch`` if ``fp`` differs."""
        item = await self.store.get(self.partition, IDEM_PREFIX + key)
        if item is None:
            return None
        record = msgspec.json.decode(item.value, type=IdempotencyRecord)
        if record.fingerprint != fp:
            raise idempotency_mismatch(self.domain, key)
        meta = msgspec.json.decode(bytes(record.result), type=dict[str, Any])
        return Appended(
            first_seq=int(meta.get("first_seq", 0)),
            last_seq=int(meta.get("last_seq", 0)),
            result=bytes(record.result),
            replayed=True,
        )

    async def append(
        self,
        build: Callable[[int], Sequence[bytes]],
        *,
        now: float,
        expected_head: int | None = None,
        idempotency_key: str | None = None,
        payload_fingerprint: str = "",
        result: Callable[[int, int], dict[str, Any]] | None = None,
        extra_ops: Callable[[int, int], Sequence[Op]] | None = None,
    ) -> Appended:
        """Append the entries ``build(first_seq)`` atomically.

        With ``expected_head`` the append happens only if the head is exactly that
        (:class:`HeadMoved` otherwise); without it the entries go at the current head, retrying
        with jitter when a concurrent writer wins. With ``idempotency_key`` a repeat returns
        the original ``result`` marked ``replayed`` and writes nothing. ``result(first, last)``
        is stored (JSON) with the idempotency record; ``extra_ops(first, last)`` are further
        operations committed in the same batch (e.g. checkpoints).
        """
        if idempotency_key is not None:
            prior = await self.idempotent_result(idempotency_key, payload_fingerprint)
            if prior is not None:
                return prior
        for attempt in range(MAX_APPEND_ATTEMPTS):
            head = await self.head()
            if expected_head is not None and head != expected_head:
                raise HeadMoved(head)
            first = head + 1
            entries = list(build(first))
            last = first + len(entries) - 1
            ops: list[Op] = [
                Put(seq_key(first + i), data, condition=Absent()) for i, data in enumerate(entries)
            ]
            outcome = dict(result(first, last)) if result else {}
            outcome.setdefault("first_seq", first)
            outcome.setdefault("last_seq", last)
            result_bytes = msgspec.json.encode(outcome)
            if idempotency_key is not None:
                record = IdempotencyRecord(payload_fingerprint, msgspec.Raw(result_bytes), now)
                ops.append(
                    Put(IDEM_PREFIX + idempotency_key, msgspec.json.encode(record), condition=Absent())
                )
            if extra_ops is not None:
                ops.extend(extra_ops(first, last))
            try:
                await self.store.write(self.partition, ops)
            except ConditionFailed:
                if idempotency_key is not None:
                    prior = await self.idempotent_result(idempotency_key, payload_fingerprint)
                    if prior is not None:
                        return prior
                if expected_head is not None:
                    raise HeadMoved(await self.head()) from None
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))
                continue
            return Appended(first_seq=first, last_seq=last, result=result_bytes, replayed=False)
        raise NorthstarError(
            f"{self.domain}.contention",
            "the stream is under too much write contention; retry",
            503,
            headers={"Retry-After": "1"},
        )

    async def read(self, after_seq: int, limit: int, *, before_seq: int | None = None) -> list[Item]:
        """Entries with ``after_seq < seq (< before_seq)``, in order, at most ``limit``."""
        return await self.store.query(
            self.partition,
            SEQ_PREFIX,
            after=seq_key(after_seq),
            before=seq_key(before_seq) if before_seq is not None else None,
            limit=limit,
        )

    async def read_last(self, n: int) -> list[Item]:
        """The last ``n`` entries, in ascending order."""
        items = await self.store.query(self.partition, SEQ_PREFIX, descending=True, limit=n)
        items.reverse()
        return items
