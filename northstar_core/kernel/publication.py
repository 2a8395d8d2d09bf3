"""Ordered exactly-once publication of a numbered series on a sequenced stream.

A *series* (a canvas's ``op_committed`` for revisions 1, 2, …; its ``system.limits``
announcements) mirrors records that are already durable elsewhere onto a stream. Each position
must appear on the stream exactly once and in order, whoever publishes it: the writer that
committed the record, or any later reader catching up after that writer crashed.

Layout, in the stream's own partition (beside the stream's ``s#``/``i#`` items):

* ``m#<series>``            — the series marker; its version is the last published position;
* ``i#<series>.<position>`` — the idempotency record of that position (its result names the
  stream sequence the position was published at).

Publishing position ``p`` is ONE atomic batch: the entry at the stream's head + 1, the record
``i#<series>.<p>`` (``Absent``) and the marker moved to version ``p`` (conditioned on ``p - 1``,
``Absent`` for ``p = 1``). The publisher passes the entry in hand, so at steady state — the
stream head known to this process (:class:`~northstar_core.kernel.streams.HeadHints`), the
previous position published — the publication costs one write and no read (on a backend
without atomic checks, one write after a head read: a hint never serves there, a head the
caller read earlier in the operation does; see :mod:`~northstar_core.kernel.streams`). When that batch
fails, the marker, the record and the head are read to decide: the position was published
concurrently (its record answers), the head moved (the batch is retried at the new head), or
the series is behind (:class:`SeriesBehind`: the caller publishes the missing positions
first). The conditions, not the reads, carry the guarantee: of any number of concurrent
publishers of one position exactly one batch commits, and never before the previous position.

A position may be *preceded* by entries that must reach the stream atomically with it and
never without it (a canvas command's allow decision before its ``op_committed``): each is a
:class:`KeyedEntry` written just before the position's entry, in the same batch, with its own
idempotency record ``i#<key>`` (``Absent``; its result names the entry's sequence, as a keyed
append's does). Every publisher of the position passes the same preceding entries, so whoever
publishes it publishes them too, once. One already on the stream (published alone earlier) is
dropped from the retried batch instead of failing it forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import msgspec

from northstar_core.errors import NorthstarError
from northstar_core.kernel.idempotency import IdempotencyRecord, idem_key, lookup, record_op
from northstar_core.kernel.streams import Appended, HeadMoved, SequencedStream
from northstar_core.storage import MAX_VALUE_BYTES, Absent, Op, Put, VersionIs

MARK_PREFIX: Final = "m#"
# A series mirrors records the server already accepted: only the storage limit applies to an
# entry, so a position can never get stuck behind a smaller event limit.
MAX_PUBLISHED_BYTES: Final = MAX_VALUE_BYTES
_ATTEMPTS: Final = 64


class SeriesBehind(ValueError):
    """The position is not the next one: the series has only reached ``published``."""

    def __init__(self, series: str, position: int, published: int) -> None:
        super().__init__(f"{series} position {position} is not the next to publish ({published})")
        self.series = series
        self.position = position
        self.published = published


class _Result(msgspec.Struct, frozen=True):
    first_seq: int
    last_seq: int


class KeyedEntry(msgspec.Struct, frozen=True):
    """An entry published just before a position, in its batch, under idempotency ``key``
    (``fp`` the fingerprint of what it holds)."""

    entry: bytes
    key: str
    fp: str


class OrderedSeries:
    """The numbered ``series`` published on ``stream`` (see module doc)."""

    def __init__(self, stream: SequencedStream, series: str) -> None:
        self.stream = stream
        self.series = series
        self.marker = MARK_PREFIX + series

    def key(self, position: int) -> str:
        """The idempotency key of ``position`` (``<series>.<position>``)."""
        return f"{self.series}.{position}"

    async def published(self) -> int:
        """The last position published (0 if none)."""
        item = await self.stream.store.get(self.stream.partition, self.marker)
        return item.version if item is not None else 0

    async def seq_of(self, position: int) -> int | None:
        """The stream sequence ``position`` was published at, ``None`` if it was not."""
        item = await self.stream.store.get(self.stream.partition, idem_key(self.key(position)))
        if item is None:
            return None
        record = msgspec.json.decode(item.value, type=IdempotencyRecord)
        return msgspec.json.decode(record.result, type=_Result).first_seq

    async def _recorded(self, position: int, fp: str) -> Appended | None:
        result = await lookup(
            self.stream.store, self.stream.partition, self.key(position), fp, self.stream.domain
        )
        if result is None:
            return None
        seqs = msgspec.json.decode(result, type=_Result)
        return Appended(first_seq=seqs.first_seq, last_seq=seqs.last_seq, result=result, replayed=True)

    async def _decide(self, position: int, fp: str) -> tuple[int, Appended | None]:
        """After a failed batch (or with no head known): the marker and the position's record,
        read together. Returns the marker and the prior publication if there is one; raises
        :class:`SeriesBehind` when the previous position is not published yet."""
        published, prior = await asyncio.gather(self.published(), self._recorded(position, fp))
        if prior is None and published < position - 1:
            raise SeriesBehind(self.series, position, published)
        return published, prior

    async def _unpublished(self, preceding: Sequence[KeyedEntry]) -> list[KeyedEntry]:
        """The preceding entries not on the stream yet (their records read together)."""
        store, partition, domain = self.stream.store, self.stream.partition, self.stream.domain
        found = await asyncio.gather(*(lookup(store, partition, e.key, e.fp, domain) for e in preceding))
        return [e for e, result in zip(preceding, found, strict=True) if result is None]

    async def _after_failure(
        self, position: int, fp: str, preceding: list[KeyedEntry]
    ) -> tuple[Appended | None, list[KeyedEntry]]:
        """After a failed batch: the prior publication of ``position`` if there is one (else
        :class:`SeriesBehind` when the previous position is not published), and the preceding
        entries still to publish — all read together."""
        if not preceding:
            _, prior = await self._decide(position, fp)
            return prior, preceding
        decided, unpublished = await asyncio.gather(
            self._decide(position, fp), self._unpublished(preceding), return_exceptions=True
        )
        if isinstance(decided, BaseException):
            raise decided
        if isinstance(unpublished, BaseException):
            raise unpublished
        return decided[1], unpublished

    async def publish(
        self,
        position: int,
        entry: bytes,
        fp: str,
        *,
        now: float,
        preceded_by: Sequence[KeyedEntry] = (),
    ) -> Appended:
        """Publish ``entry`` as ``position`` (1-based), exactly once, right after ``position - 1``.

        ``fp`` is the fingerprint of what the position holds: a repeat with the same one
        returns the first publication marked ``replayed``; another one is 422
        ``<domain>.idempotency_mismatch``. :class:`SeriesBehind` if ``position - 1`` is not
        published yet. ``preceded_by`` go on the stream just before the entry, in the same
        batch (see module doc). The :class:`Appended` returned names the position's entry.
        """
        if position < 1:
            raise ValueError(f"{self.series} positions start at 1, not {position}")
        stream = self.stream
        key = self.key(position)
        condition = Absent() if position == 1 else VersionIs(position - 1)
        mark = Put(self.marker, b"{}", version=position, condition=condition)
        preceding = list(preceded_by)

        def build(_first: int) -> list[bytes]:
            return [*(e.entry for e in preceding), entry]

        def extra(first: int, last: int) -> list[Op]:
            # The records are built here rather than by ``append(idempotency_key=…)``: a failed
            # batch then costs one head read inside the append, and the marker and the record
            # are read together below instead of one after the other.
            ops: list[Op] = [
                record_op(e.key, e.fp, msgspec.json.encode(_Result(seq, seq)), now)
                for seq, e in enumerate(preceding, start=first)
            ]
            ops += [record_op(key, fp, msgspec.json.encode(_Result(last, last)), now), mark]
            return ops

        def named(done: Appended) -> Appended:
            return Appended(
                first_seq=done.last_seq, last_seq=done.last_seq, result=done.result, replayed=False
            )

        # The head to publish at: one read from the store earlier in this operation (a caller
        # that read it beside its other reads), else the hint — on a backend without atomic
        # checks the append then reads the head itself before its batch.
        known = stream.take_head_read()
        head = known if known is not None else stream.hints.get(stream.partition)
        if head is None:
            # Nothing known about this stream in this process: read its head, and at the same
            # time whether the position can be published at all.
            head, (_, prior) = await asyncio.gather(stream.head(), self._decide(position, fp))
            if prior is not None:
                return prior
            known = head
        for _ in range(_ATTEMPTS):
            try:
                return named(
                    await stream.append(
                        build, now=now, expected_head=head, known_head=known, extra_ops=extra
                    )
                )
            except HeadMoved as moved:
                # read from the store by the append just now: the retry starts from it
                head = known = moved.head
            prior, preceding = await self._after_failure(position, fp, preceding)
            if prior is not None:
                return prior
        raise NorthstarError(
            f"{stream.domain}.contention",
            "the stream is under too much write contention; retry",
            503,
            headers={"Retry-After": "1"},
        )


__all__ = ["MARK_PREFIX", "MAX_PUBLISHED_BYTES", "KeyedEntry", "OrderedSeries", "SeriesBehind"]
