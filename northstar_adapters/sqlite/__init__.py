"""SQLite backend (lab only): one file, WAL journal, ``synchronous=FULL`` by default.

Durability: every acknowledged write has been committed with ``synchronous=FULL`` (the WAL is
fsynced on each commit), the same setting the ``eventsourcing`` library's SQLite recorder uses,
so benchmark P2 compares like with like. ``synchronous=NORMAL`` may be chosen per connection
(``synchronous``) and then a power loss — not a process crash — can lose the last
commits.

Layout: one table ``items(ns, pk, sk, value, version, expires_at)`` keyed by
``(ns, pk, sk)`` ``WITHOUT ROWID``. ``ns`` is the route's table name (default the
resource kind), so routes of several kinds can share one file without their
partitions colliding.

Concurrency: all writes of a process to one file go through one dedicated writer thread that
practises *group commit*: write batches queued while a transaction is in flight are applied
together in the next ``BEGIN IMMEDIATE`` transaction, each batch inside its own ``SAVEPOINT``
(its conditions checked in order, inside the transaction, so a failing batch is rolled back
alone), and every caller is acknowledged only after that transaction commits.

Reads never wait on the event loop: point reads and pages of up to ``SHORT_READ_ROWS`` rows run
inline on a read-only connection with a busy timeout of 0 (a WAL reader never waits for the
writer; a hot indexed read costs tens of microseconds, less than a thread hand-off), and any
operational error there (busy, I/O) retries the read on a small pool of reader threads, which
may wait; longer reads always use the pool. ``inline_reads=False`` sends every read to the pool.

Connection params (:class:`northstar_adapters.params.SqliteParams`, operator configuration only):
``path`` (required), ``synchronous`` (``FULL``|``NORMAL``|``EXTRA``, default ``FULL``),
``busy_timeout_ms`` (default 5000), ``inline_reads`` (default true).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from northstar_adapters.common import (
    SharedClients,
    key_range,
    parse_position_token,
    position_token,
    prefix_end,
    scan_limit,
)
from northstar_adapters.params import SqliteParams, parse
from northstar_core.observe import current as observer
from northstar_core.routing import Target
from northstar_core.storage import (
    Absent,
    BackendUnavailable,
    Capabilities,
    Check,
    ConditionFailed,
    Delete,
    InvalidItem,
    Item,
    ItemStore,
    Op,
    Put,
    ScanPage,
    VersionIs,
    validate_key,
    validate_ops,
)

CAPABILITIES: Final = Capabilities(durable=True, shared=True, max_batch_ops=100, atomic_checks=True)
DEFAULT_PATH: Final = Path(".northstar") / "data" / "northstar.db"
SYNCHRONOUS_LEVELS: Final = ("FULL", "NORMAL", "EXTRA")
# Upper bound of batches folded into one transaction; keeps a single commit's latency bounded.
MAX_GROUP: Final = 512
READER_THREADS: Final = 2
# Pages up to this many rows are read inline on the event loop (see _Database.read).
SHORT_READ_ROWS: Final = 256

SCHEMA: Final[tuple[str, ...]] = (
    "CREATE TABLE IF NOT EXISTS items ("
    " ns TEXT NOT NULL, pk TEXT NOT NULL, sk TEXT NOT NULL, value BLOB NOT NULL,"
    " version INTEGER NOT NULL, expires_at REAL,"
    " PRIMARY KEY (ns, pk, sk)) WITHOUT ROWID",
)

_GET = (
    "SELECT sk, value, version, expires_at FROM items WHERE ns = ? AND pk = ? AND sk = ?"
    " AND (expires_at IS NULL OR expires_at > ?)"
)
_INSERT_IF_ABSENT = (
    "INSERT INTO items (ns, pk, sk, value, version, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (ns, pk, sk) DO UPDATE SET value = excluded.value, version = excluded.version,"
    " expires_at = excluded.expires_at WHERE items.expires_at IS NOT NULL AND items.expires_at <= ?"
)
_UPDATE_IF_VERSION = (
    "UPDATE items SET value = ?, version = ?, expires_at = ? WHERE ns = ? AND pk = ? AND sk = ?"
    " AND version = ? AND (expires_at IS NULL OR expires_at > ?)"
)
_UPSERT = "INSERT OR REPLACE INTO items (ns, pk, sk, value, version, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM items WHERE ns = ? AND pk = ? AND sk = ?"
_DELETE_IF_VERSION = (
    "DELETE FROM items WHERE ns = ? AND pk = ? AND sk = ? AND version = ?"
    " AND (expires_at IS NULL OR expires_at > ?)"
)
_LIVE = "SELECT 1 FROM items WHERE ns = ? AND pk = ? AND sk = ? AND (expires_at IS NULL OR expires_at > ?)"
_LIVE_VERSION = (
    "SELECT version FROM items WHERE ns = ? AND pk = ? AND sk = ? AND (expires_at IS NULL OR expires_at > ?)"
)

T = TypeVar("T")


def _unavailable(exc: BaseException) -> BackendUnavailable:
    return BackendUnavailable(f"sqlite: {exc}")


def _batch_failure(exc: Exception) -> BaseException:
    """What the caller of a batch that failed on its own learns (the others still commit)."""
    if isinstance(exc, ConditionFailed):
        return exc
    if isinstance(exc, OverflowError | ValueError | TypeError | sqlite3.InterfaceError):
        # A value SQLite cannot bind (an integer beyond 64 bits…): the batch is at fault, a
        # retry would fail the same way, so it is not reported as an outage.
        return InvalidItem(f"sqlite cannot store this batch: {exc}")
    return _unavailable(exc)  # e.g. a constraint this batch broke


def _discard(conn: sqlite3.Connection | None) -> None:
    """Close ``conn`` (abandoning any open transaction); the writer reconnects on next use."""
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass


class _Request:
    __slots__ = ("fut", "loop", "ns", "ops", "partition")

    def __init__(
        self,
        ns: str,
        partition: str,
        ops: Sequence[Op],
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[None],
    ) -> None:
        self.ns = ns
        self.partition = partition
        self.ops = ops
        self.loop = loop
        self.fut = fut


_STOP: Final = object()


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():  # the caller was cancelled; the outcome is simply not observed
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class _Database:
    """One open database file: a writer thread with group commit and a pool of reader
    connections."""

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int, inline_reads: bool = True) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        # Observability for tests and benchmarks: commits made and write batches they carried.
        self.transactions = 0
        self.batches = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._local = threading.local()
        self._inline_local = threading.local()
        self.inline_reads = inline_reads
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Held only around one synchronous inline read, and by close() before it closes the
        # connections: closing a connection while another thread runs a statement on it crashes
        # the interpreter (seen: a segfault when a store was released during a read).
        self._inline_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=READER_THREADS, thread_name_prefix="northstar-sqlite-read"
        )
        self._writer = threading.Thread(target=self._run_writer, name="northstar-sqlite-write", daemon=True)
        self._writer.start()

    # --- connections -----------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        self._ensure_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, waiting out concurrent openers.

        Changing the journal mode of a fresh file while another connection opens it fails at
        once with "database is locked" — SQLite does not apply the busy timeout to it — so two
        stores (or processes) opening one new file together would fail. Retry within the busy
        timeout instead; a file already in WAL needs no change.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        delay = 0.002
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return
                if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                    return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError("could not switch the database to WAL mode")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            for statement in SCHEMA:  # a read may come before the first write
                conn.execute(statement)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # --- reads -----------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, short: bool = True) -> T:
        """Run ``fn`` on a reader connection.

        ``short`` reads (a point get or a bounded page) run inline on the calling event loop's
        thread, on a connection whose busy timeout is 0: a WAL reader never waits for the
        writer, and a hot indexed read costs tens of microseconds — far less than a hand-off
        to a thread and back, which costs 0.3-0.6 ms on a loaded machine. If SQLite reports
        anything operational (busy, I/O), the read is retried on the reader pool, which
        waits up to the busy timeout; long reads always go to the pool.
        """
        if self._closed:
            raise BackendUnavailable("sqlite: store is closed")
        if short and self.inline_reads:
            conn: sqlite3.Connection | None = getattr(self._inline_local, "conn", None)
            if conn is None:
                conn = await self._pooled(self._open_inline)
                self._inline_local.conn = conn
            # Never wait for the lock on the event loop: if close() holds it, use the pool
            # (which then reports the store closed).
            if self._inline_lock.acquire(blocking=False):
                try:
                    if self._closed:
                        raise BackendUnavailable("sqlite: store is closed")
                    return fn(conn)
                except sqlite3.OperationalError:
                    pass  # retried below, where waiting is allowed
                except sqlite3.Error as exc:
                    raise _unavailable(exc) from exc
                finally:
                    self._inline_lock.release()
        return await self._pooled(lambda: fn(self._reader()))

    async def _pooled(self, fn: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return fn()
            except (sqlite3.Error, OSError) as exc:
                raise _unavailable(exc) from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, run)
        except RuntimeError as exc:  # pool shut down by a concurrent close()
            raise BackendUnavailable(f"sqlite: {exc}") from exc

    def _open_inline(self) -> sqlite3.Connection:
        """A read-only connection for inline reads on the caller's thread (made on a pool
        thread, after the schema exists, so opening the file never blocks the loop)."""
        self._reader()  # ensures the schema
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA query_only = 1")
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    # --- writes ----------------------------------------------------------------------------

    async def write(self, ns: str, partition: str, ops: Sequence[Op]) -> None:
        if self._closed:
            raise BackendUnavailable("sqlite: store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Request(ns, partition, ops, loop, fut))
        await fut

    def queued(self) -> int:
        return self._queue.qsize()

    def _run_writer(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[_Request] = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
            if conn is None:
                try:
                    conn = self.connect()
                    for statement in SCHEMA:
                        conn.execute(statement)
                except (sqlite3.Error, OSError) as exc:
                    conn = None
                    self._answer(group, [_unavailable(exc) for _ in group])
                    if stop:
                        break
                    continue
            try:
                outcomes = self._commit_group(conn, group)
            except BaseException as exc:  # never let the writer die with callers waiting
                outcomes = [_unavailable(exc) for _ in group]
                # Whatever state the failure left the connection in (an open transaction would
                # make every later BEGIN fail), start over: closing abandons the transaction.
                _discard(conn)
                conn = None
            self._answer(group, outcomes)
            if stop:
                break
        if conn is not None:
            conn.close()
        # A write that raced close() (enqueued behind the stop mark) is answered, never lost.
        late: list[_Request] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                late.append(item)
        self._answer(late, [BackendUnavailable("sqlite: store is closed") for _ in late])

    @staticmethod
    def _answer(group: list[_Request], outcomes: Sequence[BaseException | None]) -> None:
        for req, exc in zip(group, outcomes, strict=True):
            try:
                req.loop.call_soon_threadsafe(_settle, req.fut, exc)
            except RuntimeError:  # the caller's loop is gone; nobody is waiting
                pass

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Request]) -> list[BaseException | None]:
        """Apply every batch of ``group`` in one transaction; per-batch outcomes.

        Whatever happens, no transaction is left open on ``conn``: a batch that fails in any
        way is rolled back to its savepoint alone, and a failure of the transaction itself —
        any exception, not only SQLite's — rolls it back entirely before it propagates.
        Otherwise the next ``BEGIN`` would fail ("cannot start a transaction within a
        transaction") and every later write of every tenant on this file with it.
        """
        outcomes: list[BaseException | None] = []
        try:
            if conn.in_transaction:  # never build on a transaction an earlier failure left
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [_unavailable(exc) for _ in group]
        committed = False
        try:
            now = time.time()
            single = len(group) == 1
            for req in group:
                if not single:
                    conn.execute("SAVEPOINT batch")
                try:
                    self._apply(conn, req, now)
                except sqlite3.OperationalError:
                    raise  # busy, I/O, full: the whole transaction is in doubt
                except Exception as exc:  # this batch alone fails: a condition, a bad value
                    if single:
                        conn.execute("ROLLBACK")
                        return [_batch_failure(exc)]
                    conn.execute("ROLLBACK TO batch")
                    conn.execute("RELEASE batch")
                    outcomes.append(_batch_failure(exc))
                    continue
                if not single:
                    conn.execute("RELEASE batch")
                outcomes.append(None)
            conn.execute("COMMIT")
            committed = True
            self.transactions += 1
            self.batches += len(group)
        except sqlite3.Error as exc:
            return [_unavailable(exc) for _ in group]
        finally:
            if not committed and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the caller discards a connection it cannot trust
        try:
            observer().group_commit("sqlite", len(group))
        except Exception:  # a metrics failure must never turn a committed group into an error
            pass
        return outcomes

    @staticmethod
    def _apply(conn: sqlite3.Connection, req: _Request, now: float) -> None:
        ns, pk = req.ns, req.partition
        for index, op in enumerate(req.ops):
            cond = op.condition
            if isinstance(op, Put):
                if cond is None:
                    conn.execute(_UPSERT, (ns, pk, op.key, op.value, op.version, op.expires_at))
                    continue
                if isinstance(cond, Absent):
                    cur = conn.execute(
                        _INSERT_IF_ABSENT, (ns, pk, op.key, op.value, op.version, op.expires_at, now)
                    )
                else:
                    cur = conn.execute(
                        _UPDATE_IF_VERSION,
                        (op.value, op.version, op.expires_at, ns, pk, op.key, cond.version, now),
                    )
                if cur.rowcount != 1:
                    raise ConditionFailed(index)
            elif isinstance(op, Check):
                # Inside the write transaction (BEGIN IMMEDIATE): nobody can change it before commit.
                row = conn.execute(_LIVE_VERSION, (ns, pk, op.key, now)).fetchone()
                if isinstance(cond, VersionIs):
                    holds = row is not None and row[0] == cond.version
                else:
                    holds = row is None
                if not holds:
                    raise ConditionFailed(index)
            elif isinstance(op, Delete):
                if isinstance(cond, VersionIs):
                    cur = conn.execute(_DELETE_IF_VERSION, (ns, pk, op.key, cond.version, now))
                    if cur.rowcount != 1:
                        raise ConditionFailed(index)
                    continue
                if isinstance(cond, Absent):
                    if conn.execute(_LIVE, (ns, pk, op.key, now)).fetchone() is not None:
                        raise ConditionFailed(index)
                conn.execute(_DELETE, (ns, pk, op.key))

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, stop the threads, close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._pool.shutdown(wait=True)
        with self._inline_lock, self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


# Store objects on one file share its _Database (one writer thread, so group commit spans every
# kind routed to the file); keyed by everything that shapes its connections.
_DATABASES: Final[SharedClients[_Database]] = SharedClients(per_loop=False)


def _acquire(
    path: Path, synchronous: str, busy_timeout_ms: int, inline_reads: bool, *, private: bool
) -> tuple[_Database, tuple[str, str, int, bool] | None]:
    """The database for a store, and its key in ``_DATABASES`` (``None``: private to it)."""
    if private:
        return _Database(path, synchronous, busy_timeout_ms, inline_reads), None
    key = (os.path.abspath(path), synchronous, busy_timeout_ms, inline_reads)
    return _DATABASES.acquire(key, lambda: _Database(path, synchronous, busy_timeout_ms, inline_reads)), key


def _release(database: _Database, key: tuple[str, str, int, bool] | None) -> None:
    if key is None or _DATABASES.release(key, database):
        database.close()


class SqliteItemStore(ItemStore):
    """The :class:`ItemStore` port on one SQLite file (see module doc for the guarantees).

    Store objects on the same file in one process share one writer thread (so group commit
    spans every kind routed to the file) unless ``private=True``, which opens independent
    connections as a second process would.
    """

    capabilities = CAPABILITIES

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        namespace: str = "default",
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        inline_reads: bool = True,
        private: bool = False,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_LEVELS}")
        self.path = Path(path)
        self.namespace = namespace
        self.synchronous = synchronous
        self._database: _Database | None
        self._database, self._key = _acquire(
            self.path, synchronous, busy_timeout_ms, inline_reads, private=private
        )

    def _live_database(self) -> _Database:
        if self._database is None:
            raise BackendUnavailable("sqlite: store is closed")
        return self._database

    def commit_stats(self) -> tuple[int, int]:
        """``(transactions committed, write batches they carried)`` by this store's writer."""
        database = self._live_database()
        return database.transactions, database.batches

    def pending_writes(self) -> int:
        """Write batches queued for the writer thread (not yet taken into a transaction)."""
        return self._live_database().queued()

    async def get(self, partition: str, key: str) -> Item | None:
        validate_key(key)
        ns = self.namespace

        def run(conn: sqlite3.Connection) -> Item | None:
            row = conn.execute(_GET, (ns, partition, key, time.time())).fetchone()
            return Item(row[0], row[1], row[2], row[3]) if row else None

        return await self._live_database().read(run)

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
        if limit <= 0:
            return []
        # Exactly one lower and at most one upper bound on sk, so that SQLite seeks straight to
        # the page (with two lower bounds it seeks on one and filters the other: reading page k
        # of a stream would scan k pages).
        bounds = key_range(prefix, after, before)
        lower = bounds.low if bounds.low is not None else ""
        lower_op = ">=" if bounds.low_inclusive else ">"
        upper = bounds.high
        sql = [
            f"SELECT sk, value, version, expires_at FROM items WHERE ns = ? AND pk = ? AND sk {lower_op} ?"
        ]
        args: list[Any] = [self.namespace, partition, lower]
        if upper is not None:
            sql.append("AND sk < ?")
            args.append(upper)
        sql.append("AND (expires_at IS NULL OR expires_at > ?)")
        sql.append("ORDER BY sk DESC LIMIT ?" if descending else "ORDER BY sk ASC LIMIT ?")
        statement = " ".join(sql)

        def run(conn: sqlite3.Connection) -> list[Item]:
            rows = conn.execute(statement, (*args, time.time(), limit)).fetchall()
            return [Item(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._live_database().read(run, short=limit <= SHORT_READ_ROWS)

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        limit = scan_limit(limit)
        position = parse_position_token(token)
        sql = ["SELECT pk, sk, value, version, expires_at FROM items WHERE ns = ? AND pk >= ?"]
        args: list[Any] = [self.namespace, prefix]
        upper = prefix_end(prefix)
        if upper is not None:
            sql.append("AND pk < ?")
            args.append(upper)
        if position is not None:
            sql.append("AND (pk, sk) > (?, ?)")
            args.extend(position)
        sql.append("AND (expires_at IS NULL OR expires_at > ?) ORDER BY pk, sk LIMIT ?")
        statement = " ".join(sql)

        def run(conn: sqlite3.Connection) -> list[tuple[str, Item]]:
            rows = conn.execute(statement, (*args, time.time(), limit)).fetchall()
            return [(r[0], Item(r[1], r[2], r[3], r[4])) for r in rows]

        items = await self._live_database().read(run)
        last = items[-1] if len(items) == limit else None
        return ScanPage(items, None if last is None else position_token(last[0], last[1].key))

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        """Apply ``ops`` atomically; returns only after the transaction carrying them committed.

        A caller cancelled while waiting does not cancel the batch: it may still commit, as a
        request to any remote backend may (every write in the core is conditional or keyed,
        so a retry finds the outcome).
        """
        validate_ops(ops, self.capabilities)
        await self._live_database().write(self.namespace, partition, list(ops))

    async def close(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            await asyncio.to_thread(_release, database, self._key)


def _params(target: Target) -> tuple[Path, str, str, int, bool]:
    params = parse(SqliteParams, target.params)
    return (
        Path(params.path),
        params.synchronous,
        target.table_name,
        params.busy_timeout_ms,
        params.inline_reads,
    )


def open_store(target: Target) -> SqliteItemStore:
    """A store for ``target`` (its table is the namespace); the schema is created on first use."""
    path, synchronous, namespace, busy, inline_reads = _params(target)
    return SqliteItemStore(
        path, namespace=namespace, synchronous=synchronous, busy_timeout_ms=busy, inline_reads=inline_reads
    )


async def provision(target: Target, *, dry_run: bool) -> list[str]:
    """Create the file and schema for ``target`` (idempotent); returns what was (or would be) done."""
    path, synchronous, namespace, _, _ = _params(target)
    plan = [
        f"sqlite: file {path} (journal_mode=WAL, synchronous={synchronous})",
        f"sqlite: table items (namespace '{namespace}' for {target.resource_kind})",
    ]
    if dry_run:
        return [f"would ensure {line}" for line in plan]

    def run() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            for statement in SCHEMA:
                conn.execute(statement)
        finally:
            conn.close()

    try:
        await asyncio.to_thread(run)
    except sqlite3.Error as exc:
        raise _unavailable(exc) from exc
    return [f"ensured {line}" for line in plan]
