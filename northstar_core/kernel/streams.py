"""Sequenced append-only streams with idempotency, built on the :class:`ItemStore` primitive.

Layout inside one partition (one partition per stream, so a stream's entries and its
idempotency records share a partition and commit in one atomic batch):

* ``s#<seq:016>`` — entry ``seq`` (1-based, gap-free);
* ``i#<key>``     — idempotency record: payload fingerprint + the original result (on a stream
  with retention it expires with the entries it answers for);
* ``s!``          — on a stream with retention only: the *floor*, whose version is the last
  sequence ever committed (it never expires).

Retention (``ttl_seconds``): entries expire that long after they were written (each backend's
native TTL, and every read hides them at once). A stream whose entries have all expired must
not number its next entry 1 again under cursors clients still hold, so every append also moves
the floor, conditioned on the floor being at the head it appends at: the floor is the head
when entries are gone, and that condition is the append's uniqueness and gap check in one (no
``Check`` on an entry that may have expired).

The rules live here, once: an append at ``expected_head`` writes ``s#<expected_head+1…>`` under
``Absent`` conditions, so of N concurrent writers on one head exactly one wins (the store's
own uniqueness check, never a read-then-check); the idempotency record is written in the same
batch, so a retried request either finds it (and gets the first result back, writing nothing)
or is the one that writes it.

Gap-freeness needs ``s#<head>`` to exist when ``s#<head+1>`` is created. On backends with
``atomic_checks`` the batch itself checks it (a :class:`Check` on ``s#<head>``), so an append
costs ONE store round trip: at a caller's ``expected_head`` directly, otherwise at the head this
process last saw for the stream (:class:`HeadHints`). A hint is only a guess — a wrong one fails
the batch's conditions, the head is read, the append retried — so correctness never rests on
it. Backends without atomic checks append only at a head read from the store (entries are
never deleted, so an entry once read exists at commit): never a hint, but a head read moments
before in the same operation serves — one the caller read beside its other reads
(:meth:`SequencedStream.look_up` reads it with the idempotency record, in one round trip,
and the caller passes it on as ``known_head``), or one read within an operation scope
(:func:`operation_heads`) whose next append on that stream takes it. Either is a store read
like the one the append would make itself, only earlier; a concurrent writer still fails the
batch's ``Absent`` condition, and the append re-reads and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_SEQ, check_int
from northstar_core.errors import NorthstarError
from northstar_core.kernel.idempotency import lookup, record_op
from northstar_core.storage import Absent, Check, ConditionFailed, Item, ItemStore, Op, Put, VersionIs

SEQ_PREFIX: Final = "s#"
# Sorts just below every entry key: a descending query of the entries never reaches it.
FLOOR_KEY: Final = "s!"
MAX_APPEND_ATTEMPTS: Final = 64
ENTRY_VERSION: Final = 1  # entries are written once, at this version, and never changed
HINTED_STREAMS: Final = 65_536  # per backing store; least recently appended forgotten first


def seq_key(seq: int) -> str:
    return f"{SEQ_PREFIX}{seq:016d}"


def seq_of(key: str) -> int:
    return int(key[len(SEQ_PREFIX) :])


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


class HeadHints:
    """The highest sequence this process has seen committed, per stream partition (bounded LRU).

    Entries seen in reads and appends only raise a hint; a head read from the store replaces
    it (so a hint beyond the data, e.g. after a restore, is corrected by the first failed
    append). Hints are guesses that spare a head read, never trusted for correctness: an append
    at a hinted head carries a :class:`Check` that ``s#<hint>`` exists and an ``Absent`` on
    ``s#<hint+1>``, so a stale hint (another process appended, or the data is not what this
    process saw) just fails that batch and the head is read.
    """

    def __init__(self, capacity: int = HINTED_STREAMS) -> None:
        self.capacity = capacity
        self._heads: OrderedDict[str, int] = OrderedDict()

    def get(self, partition: str) -> int | None:
        return self._heads.get(partition)

    def saw(self, partition: str, seq: int) -> None:
        """Entry ``seq`` was seen committed: the hint rises to it (never falls)."""
        known = self._heads.get(partition)
        if known is None or seq > known:
            self.replace(partition, seq)

    def replace(self, partition: str, head: int) -> None:
        """``head`` was just read from the store: it replaces the hint, higher or lower."""
        heads = self._heads
        heads[partition] = head
        heads.move_to_end(partition)
        if len(heads) > self.capacity:
            heads.popitem(last=False)


_HINTS: weakref.WeakKeyDictionary[ItemStore, HeadHints] = weakref.WeakKeyDictionary()


def head_hints(store: ItemStore) -> HeadHints:
    """The hints for the data behind ``store`` (shared by every wrapper of one backing store)."""
    backing = store.backing
    hints = _HINTS.get(backing)
    if hints is None:
        hints = _HINTS[backing] = HeadHints()
    return hints


# Heads read from the store during the current operation, by (backing store, partition); each
# is taken by the next append on that stream (see :func:`operation_heads`).
_READ_HEADS: contextvars.ContextVar[dict[tuple[int, str], int] | None] = contextvars.ContextVar(
    "northstar_read_heads", default=None
)


@contextlib.contextmanager
def operation_heads() -> Iterator[None]:
    """A scope for one operation (and the tasks it starts inside it): a stream head read from
    the store here is handed to the next append on that stream, which on a backend without
    atomic checks then goes straight to its batch instead of reading the head again. Each head
    is used once; nothing outlives the scope, so no append ever starts from a remembered head.
    An operation that reads a stream's head early, beside its other reads, saves the round
    trip its append would otherwise spend on it."""
    token = _READ_HEADS.set({})
    try:
        yield
    finally:
        _READ_HEADS.reset(token)


class SequencedStream:
    """One stream in one partition of an item store (see module doc)."""

    def __init__(
        self, store: ItemStore, partition: str, domain: str, *, ttl_seconds: int | None = None
    ) -> None:
        self.store = store
        self.partition = partition
        self.domain = domain
        self.hints = head_hints(store)
        self.ttl_seconds = ttl_seconds
        # the floor's version as last read by head() (retention only; 0: no floor yet)
        self._floor: int | None = None

    async def head(self) -> int:
        """The last committed sequence number, 0 for an empty stream."""
        if self.ttl_seconds is None:
            last = await self.store.query(self.partition, SEQ_PREFIX, descending=True, limit=1)
            head = seq_of(last[0].key) if last else 0
        else:
            last, floor = await asyncio.gather(
                self.store.query(self.partition, SEQ_PREFIX, descending=True, limit=1),
                self.store.get(self.partition, FLOOR_KEY),
            )
            self._floor = floor.version if floor is not None else 0
            head = max(seq_of(last[0].key) if last else 0, self._floor)
        self.hints.replace(self.partition, head)
        read = _READ_HEADS.get()
        if read is not None:
            read[self._scope_key()] = head
        return head

    def _scope_key(self) -> tuple[int, str]:
        return (id(self.store.backing), self.partition)

    @property
    def reads_head_to_append(self) -> bool:
        """Whether an append needs a head read from the store (the backend has no atomic
        checks): a hint never serves, only a head read in the same operation."""
        return not self.store.capabilities.atomic_checks

    def take_head_read(self) -> int | None:
        """The head read from the store earlier in this operation (:func:`operation_heads`),
        if any, taken: it serves one append."""
        read = _READ_HEADS.get()
        return None if read is None else read.pop(self._scope_key(), None)

    async def look_up(self, idempotency_key: str, fp: str) -> tuple[Appended | None, int | None]:
        """The key's stored outcome (:meth:`idempotent_result`) and, on a backend without atomic
        checks, the head read in the same round trip — pass it to :meth:`append` as
        ``known_head`` (with ``key_checked``) and the append is one write. The head is ``None``
        where an append needs no read (the batch checks the head it appends at)."""
        if not self.reads_head_to_append:
            return await self.idempotent_result(idempotency_key, fp), None
        prior, head = await asyncio.gather(
            self.idempotent_result(idempotency_key, fp), self.head(), return_exceptions=True
        )
        if isinstance(prior, BaseException):
            raise prior
        if isinstance(head, BaseException):
            raise head
        return prior, head

    async def idempotent_result(self, key: str, fp: str) -> Appended | None:
        """The stored outcome for ``key``; 422 ``<domain>.idempotency_mismatch`` if ``fp`` differs."""
        result = await lookup(self.store, self.partition, key, fp, self.domain)
        if result is None:
            return None
        meta = msgspec.json.decode(result, type=dict[str, Any])
        return Appended(
            first_seq=int(meta.get("first_seq", 0)),
            last_seq=int(meta.get("last_seq", 0)),
            result=result,
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
        key_checked: bool = False,
        known_head: int | None = None,
        result: Callable[[int, int], dict[str, Any]] | None = None,
        extra_ops: Callable[[int, int], Sequence[Op]] | None = None,
    ) -> Appended:
        """Append the entries ``build(first_seq)`` atomically.

        With ``expected_head`` the append happens only if the head is exactly that
        (:class:`HeadMoved` otherwise); without it the entries go at the current head, retrying
        with jitter when a concurrent writer wins. With ``idempotency_key`` a repeat returns
        the original ``result`` marked ``replayed`` and writes nothing; ``key_checked`` says the
        caller has just looked the key up (:meth:`idempotent_result`) and found it unused, so
        the append goes straight to its batch (whose ``Absent`` condition on the record still
        catches a concurrent attempt with the same key). ``known_head`` is the head the caller
        read from the store moments ago, in this operation (:meth:`look_up`, :meth:`head`),
        never a remembered one: the first attempt goes at it without a read of its own (a head
        read in an :func:`operation_heads` scope serves alike), and when it is not
        ``expected_head`` the append is :class:`HeadMoved` at once. ``result(first, last)``
        is stored (JSON) with the idempotency record; ``extra_ops(first, last)`` are further
        operations committed in the same batch (e.g. checkpoints).
        """
        if expected_head is not None:
            # the entries go at expected_head + 1…: it must leave room for them
            check_int(self.domain, "expected_head", expected_head, lo=0, hi=MAX_SEQ - 1)
        if idempotency_key is not None and not key_checked:
            prior = await self.idempotent_result(idempotency_key, payload_fingerprint)
            if prior is not None:
                return prior
        capabilities = self.store.capabilities
        checks = capabilities.atomic_checks
        taken = self.take_head_read()
        read = known_head if known_head is not None else taken
        if read is not None and expected_head is not None and read != expected_head:
            if known_head is not None:
                raise HeadMoved(known_head)
            read = None  # read earlier in the operation for another purpose: not this head
        # With atomic checks the batch itself verifies the head it appends at, so the first
        # attempt goes straight to the write: at the caller's expected head, else at a head
        # just read, else at the hint. Without them only a head just read serves.
        guess = expected_head if expected_head is not None else read
        if guess is None:
            guess = self.hints.get(self.partition)
        retained = self.ttl_seconds is not None
        expires_at = now + self.ttl_seconds if self.ttl_seconds is not None else None
        for attempt in range(MAX_APPEND_ATTEMPTS):
            guessed = checks and guess is not None
            if guessed:
                assert guess is not None
                head = guess
            elif read is not None:
                head = read
            else:
                head = await self.head()
                if expected_head is not None and head != expected_head:
                    raise HeadMoved(head)
            guess = read = None
            first = head + 1
            entries = list(build(first))
            last = first + len(entries) - 1
            ops: list[Op] = [
                Put(seq_key(first + i), data, version=ENTRY_VERSION, expires_at=expires_at,
                    condition=Absent())
                for i, data in enumerate(entries)
            ]
            # A floor at the head proves the head committed (its entry may have expired); a
            # guessed head is taken to have one, a wrong guess fails and the head is read.
            floored = False
            if retained:
                floor = head if guessed or self._floor is None else self._floor
                floored = floor == head and head > 0
                condition: Absent | VersionIs = VersionIs(floor) if floor > 0 else Absent()
                ops.append(Put(FLOOR_KEY, b"", version=last, condition=condition))
            outcome = dict(result(first, last)) if result else {}
            outcome.setdefault("first_seq", first)
            outcome.setdefault("last_seq", last)
            result_bytes = msgspec.json.encode(outcome)
            if idempotency_key is not None:
                ops.append(
                    record_op(idempotency_key, payload_fingerprint, result_bytes, now, expires_at=expires_at)
                )
            if extra_ops is not None:
                ops.extend(extra_ops(first, last))
            if checks and head > 0 and not floored:
                if len(ops) < capabilities.max_batch_ops:
                    ops.append(Check(seq_key(head), VersionIs(ENTRY_VERSION)))
                elif guessed:  # no room for the check in a full batch: read the head instead
                    checks = False
                    continue
            try:
                await self.store.write(self.partition, ops)
            except ConditionFailed:
                if checks and not self.store.capabilities.atomic_checks:
                    # The stream's store moved (a migration's cutover) to a backend without
                    # atomic checks while this batch was planned: nothing was written; plan
                    # again at a head read from the store.
                    checks = False
                    continue
                if idempotency_key is not None:
                    prior = await self.idempotent_result(idempotency_key, payload_fingerprint)
                    if prior is not None:
                        return prior
                if expected_head is not None:
                    raise HeadMoved(await self.head()) from None
                if not guessed:  # lost to a concurrent writer: back off before re-reading
                    await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))
                continue
            self.hints.saw(self.partition, last)
            if retained:
                self._floor = last
            return Appended(first_seq=first, last_seq=last, result=result_bytes, replayed=False)
        raise NorthstarError(
            f"{self.domain}.contention",
            "the stream is under too much write contention; retry",
            503,
            headers={"Retry-After": "1"},
        )

    async def read(self, after_seq: int, limit: int, *, before_seq: int | None = None) -> list[Item]:
        """Entries with ``after_seq < seq (< before_seq)``, in order, at most ``limit``."""
        check_int(self.domain, "after_seq", after_seq, lo=0, hi=MAX_SEQ)
        if before_seq is not None:
            check_int(self.domain, "before_seq", before_seq, lo=0, hi=MAX_SEQ + 1)
        items = await self.store.query(
            self.partition,
            SEQ_PREFIX,
            after=seq_key(after_seq),
            before=seq_key(before_seq) if before_seq is not None else None,
            limit=limit,
        )
        if items:
            self.hints.saw(self.partition, seq_of(items[-1].key))
        return items

    async def read_last(self, n: int) -> list[Item]:
        """The last ``n`` entries, in ascending order."""
        items = await self.store.query(self.partition, SEQ_PREFIX, descending=True, limit=n)
        if items:
            self.hints.saw(self.partition, seq_of(items[0].key))
        items.reverse()
        return items
