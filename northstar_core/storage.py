"""The one storage primitive every backend implements.

An :class:`ItemStore` is a table of items addressed by ``(partition, key)``. Within one
partition it offers exactly three things, and every domain store in the core is built on them:

* ``get`` one item;
* ``query`` items whose key starts with a prefix, ordered by key, from an exclusive bound;
* ``write`` a batch of puts/deletes, each with an optional condition, **atomically**: either
  every condition holds and every operation applies, or :class:`ConditionFailed` is raised and
  nothing changes. Backends that declare ``atomic_checks`` also accept :class:`Check`
  operations: a condition on an item the batch does not write (DynamoDB ``ConditionCheck``, a
  read inside the SQLite transaction).

That is the shape of DynamoDB (``TransactWriteItems`` over one partition key), Firestore
(atomic batches with ``create``/update-time preconditions), Cosmos DB (transactional batch in
one logical partition) and SQLite (one transaction). Optimistic concurrency is therefore a
uniqueness condition enforced by the store itself (``Absent`` on the next sequence key), never
a read-then-check in Python.

Expiry: an item may carry ``expires_at`` (epoch seconds). Backends set their native TTL
attribute where they have one, but *every* backend hides expired items from ``get`` and
``query`` and treats an expired item as absent for ``Absent`` conditions, because native TTL
deletes late (or, in the emulators, never).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Final

import msgspec

KEY_MAX_BYTES: Final = 512
MAX_VALUE_BYTES: Final = 350_000  # below DynamoDB's 400 KB item limit, Cosmos' 2 MB
# The largest version every backend stores exactly: SQLite and Firestore integers are signed
# 64-bit, but Cosmos DB keeps JSON numbers as IEEE doubles (exact up to 2**53) and DynamoDB as
# 38-digit decimals. A version beyond it would be refused, rounded or overflow in an adapter.
MAX_VERSION: Final = 2**53 - 1
# The last instant every backend's expiry field holds: 9999-12-31T23:59:59Z (Firestore
# timestamps and Python datetimes end there).
MAX_EXPIRES_AT: Final = 253_402_300_799.0


class Item(msgspec.Struct, frozen=True):
    """One stored item. ``version`` is assigned by the core and stored verbatim."""

    key: str
    value: bytes
    version: int = 1
    expires_at: float | None = None


class Absent(msgspec.Struct, frozen=True, tag=True):
    """Condition: no live (unexpired) item exists at the key."""


class VersionIs(msgspec.Struct, frozen=True, tag=True):
    """Condition: a live item exists at the key with exactly this version."""

    version: int


Condition = Absent | VersionIs


class Put(msgspec.Struct, frozen=True, tag=True):
    key: str
    value: bytes
    version: int = 1
    expires_at: float | None = None
    condition: Condition | None = None


class Delete(msgspec.Struct, frozen=True, tag=True):
    key: str
    condition: Condition | None = None


class Check(msgspec.Struct, frozen=True, tag=True):
    """Writes nothing: the batch applies only if ``condition`` holds at ``key`` at commit.

    Only for backends whose capabilities declare ``atomic_checks``; a batch needs at least one
    :class:`Put` or :class:`Delete` besides its checks.
    """

    key: str
    condition: Condition


Op = Put | Delete | Check


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a backend honestly offers; the contract suite checks each claim both ways.

    * ``durable``: data survives closing and reopening the store (memory: no).
    * ``shared``: two independent store objects opened on the same configuration (as two
      server processes would) see each other's writes (memory: no).
    * ``max_batch_ops``: the most operations one atomic ``write`` accepts.
    * ``atomic_checks``: ``write`` accepts :class:`Check` operations, evaluated atomically with
      the batch (no extra round trip). Backends without it reject them as :class:`InvalidItem`.
    """

    durable: bool
    shared: bool
    max_batch_ops: int
    atomic_checks: bool


class StorageError(Exception):
    """Base of the errors adapters raise; the core maps them to envelopes."""


class ConditionFailed(StorageError):
    """A condition of an atomic write did not hold; nothing was written.

    ``index`` is the failing operation's position when the backend reports it, else ``None``.
    """

    def __init__(self, index: int | None = None, message: str = "condition failed") -> None:
        super().__init__(message)
        self.index = index


class BackendUnavailable(StorageError):
    """The backend could not be reached, timed out or throttled after retries.

    Nothing is known to have been written by the failing call unless the adapter says so;
    writes are therefore only retried by the core where they are idempotent by construction
    (every write in the core is conditional or keyed by an idempotency record).
    """

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class InvalidItem(StorageError):
    """The item violates a backend-independent limit (key or value too large, bad key)."""


class ScanPage(msgspec.Struct, frozen=True):
    """One page of :meth:`ItemStore.scan`: ``(partition, item)`` pairs, and the token of the
    next page (``None``: the scan is complete)."""

    items: list[tuple[str, Item]]
    token: str | None


# The most items one scan page may ask for.
MAX_SCAN_PAGE: Final = 1000


class ItemStore(abc.ABC):
    """A partitioned, ordered item table with atomic conditional batches (see module doc)."""

    capabilities: Capabilities

    @abc.abstractmethod
    async def get(self, partition: str, key: str) -> Item | None:
        """The live item at ``(partition, key)``, or ``None`` if absent or expired."""

    @abc.abstractmethod
    async def query(
        self,
        partition: str,
        prefix: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> list[Item]:
        """Up to ``limit`` live items of ``partition`` whose key starts with ``prefix``.

        Ordered by key (descending if asked), restricted to keys strictly greater than
        ``after`` and strictly less than ``before`` when given. Cost is proportional to
        ``limit``, not to the size of the partition.
        """

    @abc.abstractmethod
    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        """Apply ``ops`` atomically within ``partition``, or raise :class:`ConditionFailed`.

        At most ``capabilities.max_batch_ops`` operations; each key at most once.
        """

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        """Live items of every partition whose name starts with ``prefix``, page by page.

        For administration (export, erasure, moving a kind): its cost is proportional to the
        table (a DynamoDB ``Scan``, a cross-partition query), so nothing on a request's path
        calls it. Pass each page's ``token`` to get the next; a scan is complete when a page's
        ``token`` is ``None``. A page holds at most ``limit`` items (1 to
        :data:`MAX_SCAN_PAGE`) and may hold fewer, even none, without being the last. Every
        item that is live for the whole scan is returned exactly once; an item written or
        deleted meanwhile may or may not be. Items of one partition come in key order. Tokens
        are the adapter's own and opaque; a malformed one is :class:`InvalidItem`.
        """
        raise InvalidItem(f"{type(self).__name__} cannot be scanned")

    @property
    def backing(self) -> ItemStore:
        """The object that holds the items: itself, or for a wrapper the store it wraps.

        Process-local knowledge about stored data (stream head hints) is keyed by it.
        """
        return self

    async def ping(self) -> None:
        """Raise :class:`BackendUnavailable` if the backend cannot be reached."""
        await self.get("__ping__", "__ping__")

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections. The store must not be used afterwards."""


def validate_ops(ops: Sequence[Op], capabilities: Capabilities) -> None:
    """Backend-independent checks every adapter runs before writing."""
    if not ops:
        raise InvalidItem("empty batch")
    max_ops = capabilities.max_batch_ops
    if len(ops) > max_ops:
        raise InvalidItem(f"batch of {len(ops)} operations exceeds {max_ops}")
    seen: set[str] = set()
    writes = 0
    for op in ops:
        validate_key(op.key)
        if op.key in seen:
            raise InvalidItem(f"key {op.key!r} appears twice in one batch")
        seen.add(op.key)
        if isinstance(op, Check):
            if not capabilities.atomic_checks:
                raise InvalidItem("this backend does not evaluate Check operations atomically")
            if op.condition is None:
                raise InvalidItem("a Check needs a condition")
            if isinstance(op.condition, VersionIs):
                _validate_version(op.key, op.condition.version)
            continue
        writes += 1
        if isinstance(op, Put):
            if len(op.value) > MAX_VALUE_BYTES:
                raise InvalidItem(f"value of {len(op.value)} bytes exceeds {MAX_VALUE_BYTES}")
            _validate_version(op.key, op.version)
            _validate_expiry(op.key, op.expires_at)
        if isinstance(op.condition, VersionIs):
            _validate_version(op.key, op.condition.version)
    if not writes:
        raise InvalidItem("a batch needs at least one put or delete")


def _validate_version(key: str, version: object) -> None:
    # Refused here, before any backend sees it: an unrepresentable integer must never reach an
    # adapter, where it would fail mid-transaction (SQLite: OverflowError) or be rounded.
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise InvalidItem(f"version of {key!r} must be an integer in [0, {MAX_VERSION}]")


def _validate_expiry(key: str, expires_at: object) -> None:
    if expires_at is None:
        return
    # NaN fails both comparisons and infinities the upper one: only finite times pass.
    if (
        isinstance(expires_at, bool)
        or not isinstance(expires_at, int | float)
        or not 0 <= expires_at <= MAX_EXPIRES_AT
    ):
        raise InvalidItem(f"expires_at of {key!r} must be a finite time in [0, {MAX_EXPIRES_AT:.0f}]")


def validate_key(key: str) -> None:
    if not key or len(key.encode()) > KEY_MAX_BYTES:
        raise InvalidItem("key is empty or too long")


def is_live(item_expires_at: float | None, now: float) -> bool:
    return item_expires_at is None or item_expires_at > now
