"""Online migration: move a kind's data to another table (on any backend) while it is served.

A migration moves the kinds that share one table (``kinds``), for the whole deployment or for
one tenant, from the table their route names (``source``) to another (``target``). Requests
keep being served throughout; the routing registry holds the :class:`~northstar_core.routing.
Migration` record every process obeys (through :class:`~northstar_core.routing.KindStore`):

1. **dual** — the source serves. Every write is *journaled* before it is made: a mark for its
   partition in the registry's table (:meth:`RoutingRegistry.journal`). The migrator waits
   until every process journals (a process that could not re-read the routes for
   ``lease_seconds`` stops writing), then **copies** every partition in scope (a scan of the
   source, resumable page by page), then **drains** the journal: each marked partition is
   copied again (:func:`sync_partition`: the target made equal to the source), and its mark
   dropped once it is older than two ``settle_seconds`` (the longest a journaled write may
   take), so every write that was announced is in a copy made after it landed. Then it
   **verifies** every partition in scope: item count and digest on both sides; a partition
   that differs is copied again.
2. **frozen** — writes wait (they are not refused) while the migrator lets every process see
   the phase (``fence_seconds``) and the writes in flight land (``settle_seconds``), drains
   the journal completely, verifies what it drained, and then flips the kinds' routes to the
   target and the phase to **switched** in one atomic write of the routing table. The waiting
   writes then go to the target.
3. **switched** — the target serves, and writes are journaled again, now so that a
   **rollback** can bring the source up to date (``frozen_back``: the same drain in the other
   direction, then the routes flipped back). **Release** ends the migration: the record is
   dropped and the source's copy of the data deleted.

Sequence numbers, revisions, idempotency records and cursors' positions are items like any
other: they are copied exactly, so every cursor stays valid across the cutover and a
subscriber's handle simply reads from the target from then on (``KindStore`` follows its
kind's route). The migrator survives ``kill -9`` at any point: its phase is in the routing
table, its copy position in its progress record, and every step can be repeated (a copy or a
drain writes the source's state again; phase changes are conditional writes).

One migrator works on a migration at a time: each command (``start``, ``run``, ``rollback``,
``release``) first takes the migration's *lease* in its progress record (an owner token and an
expiry in wall-clock time, claimed and renewed by conditional writes: every progress save and a
heartbeat renew it) and writes to neither side unless the lease is still valid by its own
monotonic clock, counted from before its last renewal was sent and ending ``settle_seconds``
(the longest a write may take) before the expiry others see. A command finding the lease held
waits for it to expire — a migrator killed leaves it behind for at most two ``settle_seconds``
— and gives up (409 ``migration.conflict``) if its holder keeps renewing it for longer: two
migrators never write at once, so one that read an old phase cannot undo the other's cutover.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Literal, TypeVar

import msgspec

from northstar_core.clock import Clock
from northstar_core.errors import NorthstarError
from northstar_core.identity import TENANT_PATTERN
from northstar_core.kernel.archive import delete_partition, pages_of
from northstar_core.routing import (
    JOURNAL_SHARDS,
    RESOURCE_KINDS,
    TABLE_PATTERN,
    Endpoint,
    JournalMark,
    Migration,
    Route,
    RoutingRegistry,
    journal_partition,
    journal_shard,
    migration_key,
    route_key,
)
from northstar_core.storage import (
    MAX_SCAN_PAGE,
    Absent,
    BackendUnavailable,
    ConditionFailed,
    Delete,
    InvalidItem,
    Item,
    ItemStore,
    Op,
    Put,
    StorageError,
    VersionIs,
)

DEFAULT_FENCE_SECONDS: Final = 1.0
DEFAULT_SETTLE_SECONDS: Final = 3.0
# Items read per query page of one partition, and written per batch (at most; fewer when the
# store takes fewer operations in one write, or when they would carry more than BATCH_BYTES).
PAGE: Final = 500
BATCH: Final = 25
# The most one batch written by the migrator may carry, as estimated by _op_bytes. Capabilities
# declare no byte limit; the smallest among the backends is Cosmos DB's 2 MB per transactional
# batch request (DynamoDB's transactions take 4 MB), where values travel base64-encoded (4/3 of
# their size) inside JSON documents. Half of it leaves room for what the estimate does not know
# of the request's framing. An item alone is always written (MAX_VALUE_BYTES keeps it below).
BATCH_BYTES: Final = 1_000_000
# Per operation, on top of its encoded key, partition and value: attribute names, version,
# expiry, the operation's own framing in the batch request.
OP_OVERHEAD_BYTES: Final = 256
# Partitions copied or compared at once.
CONCURRENCY: Final = 8
# How many partitions that differ are named in the progress record (the count is exact).
MAX_NAMED: Final = 50
# Drain passes over the journal before the freeze (each copies every marked partition again).
DRAIN_PASSES: Final = 2
# Verification rounds during the freeze before the migration gives up and thaws.
FROZEN_VERIFY_ROUNDS: Final = 3
# The partition of the registry's table that holds every migration's progress record.
PROGRESS_PARTITION: Final = "migration|progress"
# A migrator's lease on its migration lasts this many settle_seconds from the (wall-clock)
# moment it was renewed, as other migrators see it; the holder itself stops writing
# LEASE_MARGIN_SETTLES settle_seconds earlier, by its monotonic clock from before the renewal was
# sent: a write it sent in time has that long to land (settle_seconds is the longest a write may
# take), and it also absorbs a skew between the machines' clocks of less than that. Short, so a
# migrator killed holds the migration up for at most two settle_seconds.
LEASE_SETTLES: Final = 2.0
LEASE_MARGIN_SETTLES: Final = 1.0
# How often per validity window (lease minus margin) the heartbeat looks at the lease; it renews
# it once half the window is gone (and a write finding the lease stale renews it first).
LEASE_BEATS: Final = 4

State = Literal["running", "switched", "rolling_back", "rolled_back", "releasing", "released"]


class Progress(msgspec.Struct, kw_only=True):
    """What a migration has done so far (written by the migrator as it goes)."""

    id: str
    # the record as the migration started (its scope, sides and timings outlive the record)
    migration: Migration
    state: State = "running"
    phase: str = "dual"
    copy_token: str | None = None
    copy_done: bool = False
    copied_items: int = 0
    drained_partitions: int = 0
    verified_partitions: int = 0
    verified_items: int = 0
    # partitions found different by a verification (and copied again)
    mismatched: int = 0
    mismatched_named: list[str] = []
    deleted_items: int = 0
    # (what, wall time): the steps taken, in order
    steps: list[tuple[str, float]] = []
    error: str | None = None
    updated_at: float = 0.0
    # the lease: which command holds the migration (None: none) and until when (wall clock)
    owner: str | None = None
    lease_until: float = 0.0


def _lease_seconds(settle_seconds: float) -> float:
    return LEASE_SETTLES * settle_seconds


class _Lease:
    """One command's hold on a migration (see the module's docstring)."""

    def __init__(self, migration_id: str, version: int, progress: Progress | None) -> None:
        self.migration_id = migration_id
        self.token = uuid.uuid4().hex
        # the progress record's version as this command last wrote (or read) it; 0: absent
        self.version = version
        self.progress = progress
        # monotonic time until which this command may write to the sides; -inf: not held
        self.valid_until = -math.inf
        self.lost = False
        # renewals and progress saves one at a time (each is conditional on the last)
        self.lock = asyncio.Lock()

    @property
    def settle_seconds(self) -> float:
        return self.progress.migration.settle_seconds if self.progress is not None else DEFAULT_SETTLE_SECONDS

    @property
    def seconds(self) -> float:
        return _lease_seconds(self.settle_seconds)

    @property
    def margin(self) -> float:
        """How much earlier than others may take it over this command stops writing."""
        return LEASE_MARGIN_SETTLES * self.settle_seconds

    @property
    def window(self) -> float:
        """How long after a renewal is sent this command may write to the sides."""
        return self.seconds - self.margin

    def drop(self) -> None:
        """Held no longer: not one more write to the sides."""
        self.lost = True
        self.valid_until = -math.inf


class MigrationStatus(msgspec.Struct, kw_only=True):
    """A migration as operators see it (``GET /system/migrations``, ``migrate status``)."""

    id: str
    kinds: tuple[str, ...]
    tenant_id: str | None
    source: Endpoint
    target: Endpoint
    # whether the routing table still holds its record (processes obey it)
    active: bool
    phase: str
    state: State
    started_at: float
    updated_at: float
    copied_items: int
    drained_partitions: int
    verified_partitions: int
    verified_items: int
    mismatched: int
    mismatched_named: list[str]
    deleted_items: int
    steps: list[tuple[str, float]]
    error: str | None

    @classmethod
    def of(cls, progress: Progress, active: Migration | None) -> MigrationStatus:
        m = progress.migration
        return cls(
            id=progress.id, kinds=m.kinds, tenant_id=m.tenant_id, source=m.source, target=m.target,
            active=active is not None, phase=active.phase if active is not None else progress.phase,
            state=progress.state, started_at=m.started_at, updated_at=progress.updated_at,
            copied_items=progress.copied_items, drained_partitions=progress.drained_partitions,
            verified_partitions=progress.verified_partitions, verified_items=progress.verified_items,
            mismatched=progress.mismatched, mismatched_named=progress.mismatched_named,
            deleted_items=progress.deleted_items, steps=progress.steps, error=progress.error,
        )


Report = Callable[[Progress], None]
T = TypeVar("T")
ScanPages = AsyncIterator[tuple[list[tuple[str, Item]], str | None]]


def migration_id(kinds: Sequence[str], tenant_id: str | None) -> str:
    return f"{sorted(kinds)[0]}@{tenant_id or '*'}"


def _error(code: str, message: str, status: int, **details: Any) -> NorthstarError:
    return NorthstarError(code, message, status, details=details)


async def _answering(step: Awaitable[T]) -> T:
    """``step``, with a backend that stopped answering or refused a request reported as the
    envelope (the migrator works on raw adapter stores, below the kinds' own error mapping)."""
    try:
        return await step
    except BackendUnavailable as exc:
        raise _unavailable(exc) from exc
    except InvalidItem as exc:
        raise _refused(exc) from exc


def _refused(exc: InvalidItem, partition: str | None = None) -> NorthstarError:
    where = f" (partition {partition})" if partition is not None else ""
    return _error(
        "migration.backend_refused",
        f"a backend of the migration refused a request as invalid{where}: {exc}; running the "
        "migration again fails the same way — roll it back, or move the kinds elsewhere",
        409,
        **({"partition": partition} if partition is not None else {}),
    )


def _conflict(migration_id: str, why: str) -> NorthstarError:
    return _error(
        "migration.conflict", f"{why}; see `northstar migrate status`", 409, migration=migration_id,
    )


def _taken_over(migration_id: str) -> NorthstarError:
    return _conflict(migration_id, f"another command took over {migration_id}")


def _unavailable(exc: BackendUnavailable) -> NorthstarError:
    return NorthstarError(
        "migration.backend_unavailable",
        f"a backend of the migration did not answer ({exc.reason}); run the migration again to "
        "resume it",
        503,
        headers={"Retry-After": str(exc.retry_after)},
    )


# --- partition operations (the migrator's only storage rules) --------------------------------


def _pages(store: ItemStore, partition: str) -> AsyncIterator[list[Item]]:
    return pages_of(store, partition, limit=PAGE)


def _same(a: Item, b: Item) -> bool:
    return a.value == b.value and a.version == b.version and a.expires_at == b.expires_at


def _put(item: Item) -> Put:
    return Put(item.key, item.value, version=item.version, expires_at=item.expires_at)


Guard = Callable[[], Awaitable[None]]


def _op_bytes(partition: str, op: Op) -> int:
    """A generous estimate of what ``op`` adds to a batch request on any backend: key,
    partition and value as if base64-encoded (Cosmos DB's documents), the key a second time."""
    value = len(op.value) if isinstance(op, Put) else 0
    key = len(op.key.encode())
    return (4 * (value + key + len(partition.encode())) + 2) // 3 + key + OP_OVERHEAD_BYTES


def _batches(store: ItemStore, partition: str, ops: Sequence[Op]) -> Iterable[Sequence[Op]]:
    """``ops`` in batches the store takes in one write: at most :data:`BATCH` and its
    ``max_batch_ops`` operations, and :data:`BATCH_BYTES` (an operation alone may exceed it)."""
    most = max(1, min(BATCH, store.capabilities.max_batch_ops))
    start, size = 0, 0
    for i, op in enumerate(ops):
        n = _op_bytes(partition, op)
        if i > start and (i - start >= most or size + n > BATCH_BYTES):
            yield ops[start:i]
            start, size = i, 0
        size += n
    if start < len(ops):
        yield ops[start:]


async def _apply(store: ItemStore, partition: str, ops: Sequence[Op], guard: Guard | None = None) -> None:
    for batch in _batches(store, partition, ops):
        if guard is not None:
            await guard()
        try:
            await store.write(partition, batch)
        except InvalidItem as exc:
            raise _refused(exc, partition) from exc


async def sync_partition(
    source: ItemStore, target: ItemStore, partition: str, guard: Guard | None = None
) -> int:
    """Make ``target``'s partition hold exactly ``source``'s live items (same keys, values,
    versions, expiries); how many items it wrote or deleted. Not atomic: repeated after any
    write it may have raced (that write was journaled). ``guard`` is awaited before each write
    (it raises to stop them)."""
    wanted: dict[str, Item] = {}
    async for items in _pages(source, partition):
        for item in items:
            wanted[item.key] = item
    ops: list[Op] = []
    async for items in _pages(target, partition):
        for item in items:
            want = wanted.pop(item.key, None)
            if want is None:
                ops.append(Delete(item.key))
            elif not _same(want, item):
                ops.append(_put(want))
    ops += [_put(item) for item in wanted.values()]
    await _apply(target, partition, ops, guard)
    return len(ops)


def _item_digest(partition: str, item: Item) -> int:
    line = msgspec.json.encode([partition, item.key, item.value, item.version, item.expires_at])
    return int.from_bytes(hashlib.sha256(line).digest(), "big")


class Digest(msgspec.Struct):
    """Item count and an order-independent digest (sum of the items' SHA-256, mod 2**256) of
    one partition: scans need not return a partition's items together."""

    count: int = 0
    total: int = 0

    def add(self, partition: str, item: Item) -> None:
        self.count += 1
        self.total = (self.total + _item_digest(partition, item)) % (1 << 256)


async def partition_digest(store: ItemStore, partition: str) -> Digest:
    digest = Digest()
    async for items in _pages(store, partition):
        for item in items:
            digest.add(partition, item)
    return digest


async def _scan(store: ItemStore, prefix: str, token: str | None) -> ScanPages:
    """Pages of a scan from ``token``, each with the token that follows it."""
    while True:
        page = await store.scan(prefix, token=token, limit=MAX_SCAN_PAGE)
        token = page.token
        yield page.items, token
        if token is None:
            return


async def table_digests(store: ItemStore, migration: Migration) -> dict[str, Digest]:
    """Count and digest of every partition of ``store`` in the migration's scope (a scan)."""
    out: dict[str, Digest] = {}
    async for items, _ in _scan(store, _prefix(migration), None):
        for partition, item in items:
            if migration.in_scope(partition):
                out.setdefault(partition, Digest()).add(partition, item)
    return out


def _prefix(migration: Migration) -> str:
    return f"{migration.tenant_id}|" if migration.tenant_id is not None else ""


async def _each(call: Callable[..., Awaitable[T]], args: Iterable[tuple[Any, ...]]) -> list[T]:
    """``call(*a)`` for each ``a`` of ``args``, :data:`CONCURRENCY` at a time, in order. If one
    fails, the others are stopped before the error is raised: no write of the migrator goes on
    once it has given up (or given up its lease)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(a: tuple[Any, ...]) -> T:
        async with gate:
            return await call(*a)

    tasks = [asyncio.ensure_future(one(a)) for a in args]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _both(source: ItemStore, target: ItemStore, partition: str) -> bool:
    """Whether both sides hold the same items in ``partition``."""
    a, b = await asyncio.gather(partition_digest(source, partition), partition_digest(target, partition))
    return a == b


# --- the migrator ----------------------------------------------------------------------------


class Migrations:
    """Starts, runs, rolls back and releases migrations (system operators only: the CLI's
    ``northstar migrate`` and the progress endpoint)."""

    def __init__(
        self,
        registry: RoutingRegistry,
        clock: Clock,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        # The lease of each migration a command of this object is working on (one at a time:
        # another command of this object on the same migration waits like any other migrator).
        self._leases: dict[str, _Lease] = {}

    # --- reading ---------------------------------------------------------------------------

    async def progress(self, migration_id: str) -> Progress | None:
        item = await self.registry.store.get(PROGRESS_PARTITION, migration_id)
        return msgspec.json.decode(item.value, type=Progress) if item is not None else None

    async def status(self) -> list[MigrationStatus]:
        """Every migration the registry's table knows of, running or finished, with its
        progress (newest step last)."""
        await self.registry.ensure_fresh(0.0)
        out: list[MigrationStatus] = []
        after: str | None = None
        while True:
            try:
                items = await self.registry.store.query(PROGRESS_PARTITION, "", after=after, limit=200)
            except BackendUnavailable as exc:
                raise _unavailable(exc) from exc
            for item in items:
                progress = msgspec.json.decode(item.value, type=Progress)
                active = self.registry.migration(progress.id)
                out.append(MigrationStatus.of(progress, active[0] if active is not None else None))
            if len(items) < 200:
                return out
            after = items[-1].key

    async def _save(self, progress: Progress, report: Report | None, step: str | None = None) -> None:
        """Write the progress record (renewing the lease): 409 if another command took the
        migration over."""
        lease = self._lease_of(progress.id)
        lease.progress = progress
        if step is not None:
            progress.steps.append((step, self.clock.now()))
        await self._renew(lease)
        if report is not None:
            report(progress)

    # --- the lease ---------------------------------------------------------------------------

    def _lease_of(self, migration_id: str) -> _Lease:
        lease = self._leases.get(migration_id)
        if lease is None or lease.lost:
            raise _taken_over(migration_id)
        return lease

    async def _renew(
        self, lease: _Lease, *, unless_left: float | None = None, until: float | None = None
    ) -> None:
        """Write the progress record with this command's lease, conditional on the version it
        last wrote: valid for the sides until ``settle_seconds`` before others may take it over
        (counted from before the write is sent); ``until`` ends it then instead. Not if it is
        still valid for more than ``unless_left`` seconds (renewed meanwhile)."""
        async with lease.lock:
            if lease.lost:
                raise _taken_over(lease.migration_id)
            if unless_left is not None and lease.valid_until - self._monotonic() > unless_left:
                return
            progress = lease.progress
            if progress is None:  # nothing recorded yet: nothing to hold (the first save creates it)
                raise _conflict(lease.migration_id, f"{lease.migration_id} has no progress record yet")
            sent = self._monotonic()
            now = self.clock.now()
            progress.updated_at = now
            progress.owner = lease.token if until is None or until > now else None
            progress.lease_until = now + lease.seconds if until is None else until
            condition = VersionIs(lease.version) if lease.version else Absent()
            value = msgspec.json.encode(progress)
            put = Put(progress.id, value, version=lease.version + 1, condition=condition)
            try:
                await self.registry.store.write(PROGRESS_PARTITION, [put])
            except ConditionFailed:
                lease.drop()
                raise _conflict(
                    lease.migration_id,
                    f"another command took over {lease.migration_id} (this one could not renew its lease)",
                ) from None
            except BackendUnavailable as exc:
                raise _unavailable(exc) from exc
            lease.version += 1
            if until is None:
                lease.valid_until = sent + lease.window
            else:
                lease.valid_until = -math.inf

    def _guard(self, migration_id: str) -> Guard:
        """What every write to a side (and every change of the migration's record) awaits
        first: the lease still valid by this process's monotonic clock, renewed if it is not
        (a conditional write: it fails if anyone took the migration over meanwhile)."""

        async def guard() -> None:
            lease = self._lease_of(migration_id)
            if self._monotonic() >= lease.valid_until:
                await self._renew(lease, unless_left=0.0)

        return guard

    async def _claim(self, migration_id: str) -> tuple[_Lease, Progress | None]:
        """Take the migration's lease, waiting for the one held by another command to expire
        (that command was killed) — but no longer than one lease period (and the margin for
        clocks): a holder renewing it all along is alive, 409."""
        started = self._monotonic()
        while True:
            item = await self.registry.store.get(PROGRESS_PARTITION, migration_id)
            current = msgspec.json.decode(item.value, type=Progress) if item is not None else None
            now = self.clock.now()
            free = current is None or current.owner is None or current.lease_until <= now
            if migration_id not in self._leases and free:
                lease = _Lease(migration_id, item.version if item is not None else 0, current)
                self._leases[migration_id] = lease
                if current is None:
                    return lease, None  # the first save creates the record, if it is still absent
                try:
                    await self._renew(lease)
                except NorthstarError as exc:
                    del self._leases[migration_id]
                    if exc.code != "migration.conflict":
                        raise
                    continue  # claimed by another at the same moment: see who holds it now
                return lease, current
            settle = current.migration.settle_seconds if current is not None else DEFAULT_SETTLE_SECONDS
            patience = _lease_seconds(settle) + LEASE_MARGIN_SETTLES * settle
            waited = self._monotonic() - started
            if waited >= patience:
                raise _conflict(
                    migration_id,
                    f"another migrator is running {migration_id} (it kept renewing its lease for "
                    f"{waited:.1f} s): stop it, or wait for it to finish",
                )
            expires = current.lease_until - now if current is not None and not free else settle / LEASE_BEATS
            await self._sleep(min(max(expires, 0.0) + 0.01, patience - waited + 0.01))

    async def _heartbeat(self, lease: _Lease) -> None:
        """Renew the lease while the command waits or copies (its saves alone may be rarer):
        whenever less than half of its validity is left (its saves renew it too)."""
        while not lease.lost:
            await asyncio.sleep(lease.window / LEASE_BEATS)
            try:
                await self._renew(lease, unless_left=lease.window / 2)
            except (NorthstarError, StorageError):
                if lease.lost:
                    return
                # the registry did not answer: the lease runs out by itself, and the command's
                # next write tries to renew it (and stops with the envelope if it cannot)

    @contextlib.asynccontextmanager
    async def _leased(self, migration_id: str) -> AsyncIterator[Progress | None]:
        """The migration held by this command throughout (its progress record, if any); let go
        of at the end, so the next command need not wait for it to expire."""
        lease, progress = await self._claim(migration_id)
        beat = asyncio.create_task(self._heartbeat(lease))
        outcome = "cancelled"
        try:
            yield progress
            outcome = "done"
        except asyncio.CancelledError:
            raise
        except BaseException:
            outcome = "failed"
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            try:
                # A command cut short by an error lets the lease run on for the margin (a write
                # it gave up on may still land); one cancelled, like one killed, lets it expire.
                if outcome != "cancelled" and not lease.lost and lease.progress is not None and lease.version:
                    grace = 0.0 if outcome == "done" else lease.margin
                    with contextlib.suppress(NorthstarError):
                        await self._renew(lease, until=self.clock.now() + grace)
            finally:
                lease.drop()
                if self._leases.get(migration_id) is lease:
                    del self._leases[migration_id]

    # --- starting --------------------------------------------------------------------------

    async def start(
        self,
        kinds: Sequence[str],
        connection: str,
        table: str | None = None,
        tenant_id: str | None = None,
        *,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        report: Report | None = None,
    ) -> Migration:
        """Record a new migration (phase ``dual``), or return the one already moving these
        kinds to this target (a run that stopped is resumed by :meth:`run`)."""
        kinds = tuple(sorted(set(kinds)))
        registry = self.registry
        if not kinds or any(kind not in RESOURCE_KINDS for kind in kinds):
            raise _error(
                "migration.invalid_request", "name one or more known resource kinds", 422, kinds=list(kinds),
            )
        if tenant_id is not None and not TENANT_PATTERN.fullmatch(tenant_id):
            raise _error("migration.invalid_request", f"tenant_id must match {TENANT_PATTERN.pattern}", 422)
        table = table or kinds[0]
        if not TABLE_PATTERN.fullmatch(table):
            raise _error("migration.invalid_request", f"table must match {TABLE_PATTERN.pattern}", 422)
        for name, value in (("fence_seconds", fence_seconds), ("settle_seconds", settle_seconds)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.05 <= value <= 300:
                raise _error("migration.invalid_request", f"{name} must be between 0.05 and 300 seconds", 422)
        await registry.ensure_fresh(0.0)
        ident = migration_id(kinds, tenant_id)
        existing = registry.migration(ident)
        target = Endpoint(connection=connection, table=table)
        if existing is not None:
            if existing[0].target != target or existing[0].kinds != kinds:
                raise _error(
                    "migration.in_progress",
                    f"{ident} is already moving to {existing[0].target.connection}/"
                    f"{existing[0].target.table}: roll it back or release it first",
                    409,
                    migration=ident,
                )
            return existing[0]
        for other, _ in registry.migrations():
            shared = sorted(set(other.kinds) & set(kinds))
            if shared:
                raise _error(
                    "migration.in_progress", f"{', '.join(shared)} already being migrated ({other.id})", 409,
                    migration=other.id,
                )
        source, original, excluded = self._sources(kinds, tenant_id)
        if (source.connection, source.table) == (connection, table):
            raise _error("migration.same_table", "the kinds are in that table already", 409)
        self._refuse_shared(kinds, tenant_id, source, target)
        target_route = Route(resource_kind=kinds[0], connection=connection, table=table, tenant_id=tenant_id)
        registry.validate(target_route)
        now = self.clock.now()
        migration = Migration(
            id=ident,
            kinds=kinds,
            tenant_id=tenant_id,
            source=source,
            target=target,
            original=original,
            excluded_tenants=tuple(sorted(excluded)),
            phase="dual",
            phase_at=now,
            started_at=now,
            fence_seconds=float(fence_seconds),
            settle_seconds=float(settle_seconds),
            lease_seconds=registry.max_view_seconds,
        )
        target_store = self._store(migration, migration.target)
        try:
            await asyncio.wait_for(target_store.ping(), timeout=10)
            if await _holds_in_scope(target_store, migration):
                raise _error(
                    "migration.target_not_empty",
                    f"{connection}/{table} already holds data of the migration's scope: a "
                    "migration writes only into a table that holds none",
                    409,
                )
        except (BackendUnavailable, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, BackendUnavailable) else "timed out"
            raise _error(
                "migration.backend_unavailable", f"the target did not answer: {reason}", 503,
            ) from None
        # a finished migration of the same kinds leaves its record (and a command ending it may
        # still hold it)
        async with self._leased(ident):
            try:
                record = Put(migration_key(ident), msgspec.json.encode(migration), condition=Absent())
                await registry.commit([record])
            except ConditionFailed:
                raise _error(
                    "migration.in_progress", f"{ident} was started concurrently", 409, migration=ident,
                ) from None
            progress = Progress(id=ident, migration=migration)
            await self._save(progress, report, "started: writes are journaled")
        return migration

    def _sources(
        self, kinds: Sequence[str], tenant_id: str | None
    ) -> tuple[Endpoint, dict[str, Route | None], set[str]]:
        """The one table the kinds are in now, their routes, and (deployment-wide) the tenants
        whose own overrides keep their data elsewhere."""
        routes = {(r.resource_kind, r.tenant_id): r for r, _ in self.registry.routes()}
        original: dict[str, Route | None] = {}
        endpoints: set[tuple[str, str]] = set()
        excluded: set[str] = set()
        for kind in kinds:
            own = routes.get((kind, tenant_id)) if tenant_id is not None else None
            serving = own or routes.get((kind, None))
            if serving is None:
                raise _error("migration.unrouted", f"'{kind}' has no route to move", 409, resource_kind=kind)
            original[kind] = own if tenant_id is not None else serving
            endpoints.add((serving.connection, serving.table_name))
            if tenant_id is None:
                excluded |= {t for (k, t) in routes if k == kind and t is not None}
        if len(endpoints) != 1:
            raise _error(
                "migration.shared_table",
                "the kinds named are not in one table: migrate each table's kinds together",
                409,
                tables=sorted(f"{c}/{t}" for c, t in endpoints),
            )
        connection, table = endpoints.pop()
        return Endpoint(connection=connection, table=table), original, excluded

    def _refuse_shared(
        self, kinds: Sequence[str], tenant_id: str | None, source: Endpoint, target: Endpoint
    ) -> None:
        """409 if another kind shares the source table (its data would be moved without its
        route) or already lives in the target table (its data would be mixed in)."""
        tables = {(source.connection, source.table): "source", (target.connection, target.table): "target"}
        for route, _ in self.registry.routes():
            if route.resource_kind in kinds:
                continue
            side = tables.get((route.connection, route.table_name))
            if side is None:
                continue
            if tenant_id is not None and route.tenant_id not in (None, tenant_id):
                continue
            others = sorted({r.resource_kind for r, _ in self.registry.routes()
                             if (r.connection, r.table_name) == (route.connection, route.table_name)})
            raise _error(
                "migration.shared_table",
                f"'{route.resource_kind}' is also in the {side} table: migrate the kinds of one "
                f"table together ({', '.join(others)})",
                409,
                kinds=others,
            )

    @staticmethod
    def _route(migration: Migration, endpoint: Endpoint) -> Route:
        return Route(resource_kind=migration.kinds[0], connection=endpoint.connection, table=endpoint.table)

    def _store(self, migration: Migration, endpoint: Endpoint) -> ItemStore:
        return self.registry.opened(self._route(migration, endpoint))

    def _active(self, migration_id: str) -> tuple[Migration, int]:
        found = self.registry.migration(migration_id)
        if found is None:
            raise _error(
                "migration.not_found", f"no migration {migration_id} is under way", 404,
                migration=migration_id,
            )
        return found

    async def _phase(self, migration: Migration, version: int, phase: str) -> tuple[Migration, int]:
        await self._guard(migration.id)()
        moved = msgspec.structs.replace(migration, phase=phase, phase_at=self.clock.now())
        try:
            await self.registry.commit(
                [Put(migration_key(migration.id), msgspec.json.encode(moved), version=version + 1,
                     condition=VersionIs(version))]
            )
        except ConditionFailed:
            raise _error(
                "migration.conflict", f"{migration.id} was changed by another command meanwhile", 409,
                migration=migration.id,
            ) from None
        return self._active(migration.id)

    async def _until(self, at: float) -> None:
        wait = at - self.clock.now()
        if wait > 0:
            await self._sleep(wait)

    # --- running ---------------------------------------------------------------------------

    async def run(self, migration_id: str, report: Report | None = None) -> Migration:
        """Take the migration from wherever it stands to ``switched`` (the target serves)."""
        return await _answering(self._run(migration_id, report))

    async def _run(self, migration_id: str, report: Report | None) -> Migration:
        async with self._leased(migration_id) as found:
            # read once the lease is held: a migrator that ran meanwhile may have moved it on
            await self.registry.ensure_fresh(0.0)
            migration, version = self._active(migration_id)
            progress = found or Progress(id=migration.id, migration=migration)
            if found is None:
                await self._save(progress, None)
            return await self._running(migration, version, progress, report)

    async def _running(
        self, migration: Migration, version: int, progress: Progress, report: Report | None
    ) -> Migration:
        migration_id = migration.id
        if migration.phase == "frozen_back" or progress.state in ("rolling_back", "releasing"):
            raise _error(
                "migration.ending",
                f"{migration_id} is being rolled back or released: run that command again",
                409,
            )
        if migration.phase == "dual":
            source = self._store(migration, migration.source)
            target = self._store(migration, migration.target)
            # every process journals from its next registry read; one that cannot read it for
            # lease_seconds stops writing
            await self._until(migration.phase_at + migration.lease_seconds + migration.settle_seconds)
            if not progress.copy_done:
                await self._copy(migration, source, target, progress, report)
            for _ in range(DRAIN_PASSES):
                await self._drain(migration, source, target, progress, final=False)
            await self._save(progress, report, "drained the journal")
            await self._verify_all(migration, source, target, progress, report)
            await self._drain(migration, source, target, progress, final=False)
            migration, version = await self._phase(migration, version, "frozen")
            progress.phase = "frozen"
            await self._save(progress, report, "frozen: writes wait for the cutover")
        if migration.phase == "frozen":
            migration, version = await self._cutover(migration, version, progress, report)
        progress.phase = "switched"
        progress.state = "switched"
        await self._save(progress, report, None)
        return migration

    async def _copy(
        self,
        migration: Migration,
        source: ItemStore,
        target: ItemStore,
        progress: Progress,
        report: Report | None,
    ) -> None:
        async for items, token in _scan(source, _prefix(migration), progress.copy_token):
            by_partition: dict[str, list[Op]] = {}
            for partition, item in items:
                if migration.in_scope(partition):
                    by_partition.setdefault(partition, []).append(_put(item))
            guard = self._guard(migration.id)
            await _each(_apply, [(target, p, ops, guard) for p, ops in by_partition.items()])
            progress.copied_items += sum(len(ops) for ops in by_partition.values())
            progress.copy_token = token
            progress.copy_done = token is None
            await self._save(progress, report)
        await self._save(progress, report, f"copied {progress.copied_items} items")

    async def _marks(self, migration: Migration) -> list[tuple[str, Item]]:
        """Every journal mark: (partition written, its item)."""
        out: list[tuple[str, Item]] = []
        for shard in range(JOURNAL_SHARDS):
            async for items in _pages(self.registry.store, journal_partition(migration.id, shard)):
                out += [(item.key[2:], item) for item in items]
        return out

    async def _drain(
        self, migration: Migration, source: ItemStore, target: ItemStore, progress: Progress, *, final: bool
    ) -> list[str]:
        """Copy every journaled partition again, and drop the marks that cover no write in
        flight any more (all of them when ``final``: writes are frozen and settled)."""
        marks = await self._marks(migration)
        started = self.clock.now()
        guard = self._guard(migration.id)

        async def one(partition: str, mark: Item) -> None:
            if migration.in_scope(partition):
                await sync_partition(source, target, partition, guard)
            at = msgspec.json.decode(mark.value, type=JournalMark).at
            if final or at < started - 2 * migration.settle_seconds:
                shard = journal_partition(migration.id, journal_shard(partition))
                drop = Delete(mark.key, condition=VersionIs(mark.version))
                await guard()
                try:
                    await self.registry.store.write(shard, [drop])
                except ConditionFailed:
                    pass  # marked again meanwhile: the next drain copies it again

        await _each(one, marks)
        progress.drained_partitions += len(marks)
        return [partition for partition, _ in marks if migration.in_scope(partition)]

    async def _verify_all(
        self,
        migration: Migration,
        source: ItemStore,
        target: ItemStore,
        progress: Progress,
        report: Report | None,
    ) -> None:
        """Compare every partition in scope on both sides; copy again those that differ."""
        ours, theirs = await asyncio.gather(
            table_digests(source, migration), table_digests(target, migration)
        )
        different = sorted(p for p in ours.keys() | theirs.keys() if ours.get(p) != theirs.get(p))
        guard = self._guard(migration.id)
        await _each(sync_partition, [(source, target, p, guard) for p in different])
        progress.verified_partitions = len(ours)
        progress.verified_items = sum(d.count for d in ours.values())
        self._mismatched(progress, different)
        await self._save(
            progress, report,
            f"verified {len(ours)} partitions ({progress.verified_items} items), {len(different)} "
            "copied again",
        )

    @staticmethod
    def _mismatched(progress: Progress, partitions: Sequence[str]) -> None:
        progress.mismatched += len(partitions)
        room = MAX_NAMED - len(progress.mismatched_named)
        if room > 0:
            progress.mismatched_named += list(partitions[:room])

    async def _cutover(
        self,
        migration: Migration,
        version: int,
        progress: Progress,
        report: Report | None,
        *,
        back: bool = False,
    ) -> tuple[Migration, int]:
        """Frozen: let writes settle, drain the journal, verify what it named, flip the routes."""
        source = self._store(migration, migration.target if back else migration.source)
        target = self._store(migration, migration.source if back else migration.target)
        guard = self._guard(migration.id)
        await self._until(migration.phase_at + migration.fence_seconds + migration.settle_seconds)
        drained = await self._drain(migration, source, target, progress, final=True)
        check = sorted(set(drained) | set(progress.mismatched_named))
        for _ in range(FROZEN_VERIFY_ROUNDS):
            same = await _each(_both, [(source, target, p) for p in check])
            different = [p for p, equal in zip(check, same, strict=True) if not equal]
            if not different:
                break
            self._mismatched(progress, different)
            await _each(sync_partition, [(source, target, p, guard) for p in different])
            check = different
        else:
            # Something still writes to the old side: never flip onto data that differs.
            await self._phase(migration, version, "switched" if back else "dual")
            progress.error = f"{len(check)} partitions kept changing while frozen: {check[:5]}"
            await self._save(progress, report, "thawed: verification failed during the freeze")
            raise _error(
                "migration.verify_failed",
                "partitions kept changing on the serving side while writes were frozen; the "
                "migration was thawed (a process not sharing this routing table writes there?)",
                409,
                partitions=check[:MAX_NAMED],
            )
        await self._save(progress, report, f"drained {len(drained)} partitions while frozen, verified")
        return await self._flip(migration, version, back=back)

    async def _flip(self, migration: Migration, version: int, *, back: bool) -> tuple[Migration, int]:
        """The routes and the migration record, changed in one atomic write of the routing table."""
        routes = {(r.resource_kind, r.tenant_id): (r, v) for r, v in self.registry.routes()}
        ops: list[Op] = []
        for kind in migration.kinds:
            current = routes.get((kind, migration.tenant_id))
            condition = VersionIs(current[1]) if current is not None else Absent()
            next_version = current[1] + 1 if current is not None else 1
            key = route_key(kind, migration.tenant_id)
            if back:
                original = migration.original.get(kind)
                if original is None:
                    ops.append(Delete(key, condition=condition))
                else:
                    value = msgspec.json.encode(original)
                    ops.append(Put(key, value, version=next_version, condition=condition))
                continue
            base = migration.original.get(kind) or routes.get((kind, None), (None, 0))[0]
            if base is None:
                raise _error("migration.unrouted", f"'{kind}' lost its route during the migration", 409)
            moved = msgspec.structs.replace(
                base,
                connection=migration.target.connection,
                table=migration.target.table,
                tenant_id=migration.tenant_id,
            )
            ops.append(Put(key, msgspec.json.encode(moved), version=next_version, condition=condition))
        key = migration_key(migration.id)
        if back:
            ops.append(Delete(key, condition=VersionIs(version)))
        else:
            switched = msgspec.structs.replace(migration, phase="switched", phase_at=self.clock.now())
            value = msgspec.json.encode(switched)
            ops.append(Put(key, value, version=version + 1, condition=VersionIs(version)))
        await self._guard(migration.id)()
        try:
            await self.registry.commit(ops)
        except ConditionFailed:
            raise _error(
                "migration.conflict", f"the routes of {migration.id} changed during the cutover", 409,
                migration=migration.id,
            ) from None
        if back:
            return migration, version
        return self._active(migration.id)

    # --- ending ----------------------------------------------------------------------------

    async def rollback(self, migration_id: str, report: Report | None = None) -> Progress:
        """Give the kinds back to the source (from any phase) and delete the target's copy."""
        return await _answering(self._rollback(migration_id, report))

    async def _known(self, migration_id: str) -> tuple[tuple[Migration, int] | None, Progress]:
        """The migration's record (``None`` once it ended) and its progress (404 if unknown),
        read once the lease is held."""
        await self.registry.ensure_fresh(0.0)
        found = self.registry.migration(migration_id)
        progress = self._lease_of(migration_id).progress
        if progress is None:
            raise _error(
                "migration.not_found", f"no migration {migration_id} is known", 404, migration=migration_id,
            )
        return found, progress

    async def _finish(
        self, progress: Progress, endpoint: Endpoint, state: State, step: str, report: Report | None
    ) -> Progress:
        """Delete the side that no longer serves, and the journal: the migration has ended."""
        migration = progress.migration
        # writes journaled by processes that had not seen the end yet are moot: wait them out
        await self._sleep(migration.fence_seconds + migration.settle_seconds)
        progress.deleted_items += await self._delete_scope(migration, endpoint)
        await self._drop_journal(migration)
        progress.state = state
        progress.phase = "ended"
        await self._save(progress, report, step)
        return progress

    async def _rollback(self, migration_id: str, report: Report | None) -> Progress:
        async with self._leased(migration_id):
            return await self._rolling_back(migration_id, report)

    async def _rolling_back(self, migration_id: str, report: Report | None) -> Progress:
        found, progress = await self._known(migration_id)
        if found is not None:
            migration, version = found
            # said before anything changes: a release must never take this migration's record
            # being gone for its own doing (it would delete the side that serves)
            progress.state = "rolling_back"
            await self._save(progress, report, "rolling back")
            if migration.phase == "switched":
                migration, version = await self._phase(migration, version, "frozen_back")
                progress.phase = "frozen_back"
                await self._save(progress, report, "frozen for the rollback")
            if migration.phase == "frozen_back":
                await self._cutover(migration, version, progress, report, back=True)
            else:  # dual or frozen: the source still serves
                await self._drop_record(migration, version)
            await self._save(progress, report, "rolled back: the source serves")
        elif progress.state not in ("rolling_back", "rolled_back"):
            raise _error(
                "migration.finished", f"{migration_id} was {progress.state}: nothing to roll back", 409,
            )
        return await self._finish(
            progress, progress.migration.target, "rolled_back", "deleted the target's copy", report
        )

    async def release(self, migration_id: str, report: Report | None = None) -> Progress:
        """End a switched migration: no rollback any more; the source's copy is deleted."""
        return await _answering(self._release(migration_id, report))

    async def _release(self, migration_id: str, report: Report | None) -> Progress:
        async with self._leased(migration_id):
            return await self._releasing(migration_id, report)

    async def _releasing(self, migration_id: str, report: Report | None) -> Progress:
        found, progress = await self._known(migration_id)
        if found is not None:
            migration, version = found
            if migration.phase != "switched":
                raise _error(
                    "migration.not_switched",
                    f"{migration_id} is in phase {migration.phase}: only a switched migration is released",
                    409,
                )
            progress.state = "releasing"
            await self._save(progress, report, "releasing")
            await self._drop_record(migration, version)
            await self._save(progress, report, "released: no rollback any more")
        elif progress.state not in ("releasing", "released"):
            raise _error(
                "migration.not_switched", f"{migration_id} was {progress.state}: nothing to release", 409,
            )
        return await self._finish(
            progress, progress.migration.source, "released", "deleted the source's copy", report
        )

    async def _drop_record(self, migration: Migration, version: int) -> None:
        await self._guard(migration.id)()
        try:
            await self.registry.commit([Delete(migration_key(migration.id), condition=VersionIs(version))])
        except ConditionFailed:
            raise _error("migration.conflict", f"{migration.id} changed meanwhile", 409) from None

    async def _delete_scope(self, migration: Migration, endpoint: Endpoint) -> int:
        """Delete every item in the migration's scope from one side (pass after pass, until a
        scan finds none: a scan may miss items written while it runs)."""
        with self.registry.holding(self._route(migration, endpoint)) as store:
            return await self._delete_all(migration, store)

    async def _delete_all(self, migration: Migration, store: ItemStore) -> int:
        deleted = 0
        while True:
            found = 0
            async for items, _ in _scan(store, _prefix(migration), None):
                by_partition: dict[str, list[Op]] = {}
                for partition, item in items:
                    if migration.in_scope(partition):
                        by_partition.setdefault(partition, []).append(Delete(item.key))
                guard = self._guard(migration.id)
                await _each(_apply, [(store, p, ops, guard) for p, ops in by_partition.items()])
                found += sum(len(ops) for ops in by_partition.values())
            deleted += found
            if not found:
                return deleted

    async def _drop_journal(self, migration: Migration) -> None:
        guard = self._guard(migration.id)
        for shard in range(JOURNAL_SHARDS):
            await guard()
            await delete_partition(self.registry.store, journal_partition(migration.id, shard))


async def _holds_in_scope(store: ItemStore, migration: Migration) -> bool:
    try:
        async for items, _ in _scan(store, _prefix(migration), None):
            if any(migration.in_scope(partition) for partition, _ in items):
                return True
    except InvalidItem as exc:
        raise _error("migration.invalid_request", f"the target cannot be scanned: {exc}", 422) from None
    return False
