"""The :class:`ItemStore` port on google-cloud-firestore's async client.

Atomicity comes from Firestore itself, never from a read-then-check in Python alone: every
``write()`` is ONE atomic batch (``WriteBatch.commit``) whose per-document preconditions carry
the conditions —

* ``Absent`` on a put  → ``create()`` (the server refuses an existing document). A document
  that exists but has expired counts as absent: it is read, and replaced under an
  ``update_time`` precondition so that a concurrent writer still wins or loses cleanly;
* ``VersionIs(v)``     → the document is read (it must exist, be live and carry ``ver == v``),
  then updated/deleted under ``last_update_time == <the update_time just read>``;
* ``Absent`` on a delete → ``exists=False`` precondition (or the ``update_time`` of an expired
  leftover);
* unconditional        → ``set()`` / ``delete()``.

If any precondition fails the server applies nothing and answers ``AlreadyExists`` /
``FailedPrecondition`` / ``NotFound``; the adapter raises :class:`ConditionFailed` (index
``None`` when Firestore does not say which write failed; the core re-reads). Transactions are
not used: the emulator's (and a hot document's) transaction lock contention is pathological,
while batch preconditions are checked without locks.

Retries: ``ServiceUnavailable``, ``DeadlineExceeded``, ``ResourceExhausted``, ``Aborted``,
``InternalServerError``, ``Unknown``, transport/connection errors are retried with full-jitter
exponential backoff (:func:`northstar_adapters.common.retrying`), at most ``max_attempts``
times, then :class:`BackendUnavailable` (503 ``<kind>.backend_unavailable`` with
``Retry-After`` through ``KindStore``). Reads are always safe to retry. A retried *write* may
follow a first attempt that committed although its answer was lost (timeout, dropped
connection). That is safe here because:

* unconditional ``set``/``delete`` are idempotent (the same document state again);
* conditional writes cannot apply twice: the first commit changed ``update_time`` / created the
  document, so the retry's preconditions fail;
* a retry that then fails its conditions checks whether the batch it is retrying *did* land:
  every put document carries ``w`` = a random id of this ``write()`` call, and a batch is
  atomic, so if every put document still carries this call's id the first attempt committed and
  ``write()`` returns success. Otherwise (someone else won, or overwrote our documents since)
  it raises ``ConditionFailed`` and the core re-reads — for an append, it finds its own
  idempotency record (same key, same fingerprint) and answers with the original result, so the
  client sees one write. Delete-only batches carry no id; a conditional delete-only batch whose
  retry fails its conditions reports ``ConditionFailed``.

Scan (administration only) walks partitions in document-id order, which differs from raw name
order because of the id escaping, and the items of each in key order. Parent documents are never
written, so partitions are found through their items: a collection-group query on ``items``
ordered by ``__name__`` alone, bounded to this collection and started at the escaped prefix
(the ids under a prefix are contiguous, so the first id past them ends the scan). Firestore's
built-in document-name index serves it; no index needs declaring, in any scope. A partition the
read passes entirely is returned from that read, sorted by key; the last one it reaches is read
on with the ordinary ``sk``-ordered query. So a page costs at most ``_Scan.REQUESTS`` (8)
requests and reads about ``limit`` documents per request, expired leftovers included (skipped
client-side, like ``query``), plus those of a partition cut by a read's limit, which are read
again in key order. The token is the last examined (partition, key); a page may be short, or
empty, when expired leftovers or the request budget end it early.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import grpc
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from northstar_adapters.common import (
    RetryPolicy,
    SharedClients,
    key_range,
    parse_position_token,
    position_token,
    retrying,
    scan_limit,
)
from northstar_adapters.firestore.layout import (
    AFTER,
    DOC_ID_MAX_BYTES,
    F_EXPIRES,
    F_KEY,
    F_TTL,
    F_VALUE,
    F_VERSION,
    F_WRITE,
    ITEMS,
    MIN_DOC_ID,
    doc_id,
    doc_id_prefix,
    raw_id,
)
from northstar_adapters.params import FirestoreParams, parse
from northstar_core.storage import (
    Absent,
    BackendUnavailable,
    Capabilities,
    ConditionFailed,
    Delete,
    InvalidItem,
    Item,
    ItemStore,
    Op,
    Put,
    ScanPage,
    VersionIs,
    is_live,
    validate_key,
    validate_ops,
)

# No atomic Check: a batch precondition exists only on a document the batch writes.
CAPABILITIES: Final = Capabilities(durable=True, shared=True, max_batch_ops=100, atomic_checks=False)
EMULATOR_ENV: Final = "FIRESTORE_EMULATOR_HOST"

T = TypeVar("T")

# Errors after which the same request may succeed (and where a write's outcome is unknown).
_RETRYABLE: Final = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.RetryError,
    auth_exc.TransportError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# Everything the SDK or the transport can raise for an unreachable/misconfigured backend.
_BACKEND_ERRORS: Final = (gexc.GoogleAPIError, grpc.RpcError, auth_exc.GoogleAuthError, OSError, TimeoutError)


# One AsyncClient (one gRPC channel) per configuration and event loop, shared by the stores of
# every resource kind routed to it; the last store to close closes the channel.
_CLIENTS: Final[SharedClients[firestore.AsyncClient]] = SharedClients()


async def _close_client(client: Any) -> None:
    api = getattr(client, "_firestore_api_internal", None)
    if api is not None:
        try:
            await api.transport.close()
        except Exception:  # closing a dead channel must not fail shutdown
            pass


def _api_error(exc: BaseException) -> BaseException:
    """A raw gRPC error as the google.api_core exception it stands for."""
    if isinstance(exc, grpc.RpcError) and not isinstance(exc, gexc.GoogleAPIError):
        converted: BaseException = gexc.from_grpc_error(exc)
        return converted
    return exc


def _to_timestamp(expires_at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)


class FirestoreItemStore(ItemStore):
    """Items of one resource kind in collection ``<collection_prefix><kind>`` (see layout)."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        collection: str,
        project: str | None = None,
        database: str = "(default)",
        emulator_host: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client_factory: Callable[[], firestore.AsyncClient] | None = None,
        share_client: bool = True,
    ) -> None:
        self.collection = collection
        self.project = project
        self.database = database
        self.emulator_host = emulator_host
        self.timeout = timeout
        self.retry = RetryPolicy(attempts=max(1, max_attempts), base_delay=base_delay, max_delay=max_delay)
        self._clock = clock
        self._sleep = sleep
        self._client_factory = client_factory
        # Stores on one configuration share a client unless told otherwise (a peer standing in
        # for a second process) or given their own client factory.
        self._shared = share_client and client_factory is None
        self._client_obj: firestore.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._key: tuple[Any, ...] = ()

    # --- client ----------------------------------------------------------------------------

    def _make_client(self) -> firestore.AsyncClient:
        if self._client_factory is not None:
            return self._client_factory()
        if self.emulator_host:
            client = firestore.AsyncClient(
                project=self.project or "northstar-emulator",
                database=self.database,
                credentials=AnonymousCredentials(),
            )
            # The SDK reads the emulator host only from the process environment; setting it
            # on this one client keeps other clients (and real projects) unaffected.
            client._emulator_host = self.emulator_host
            return client
        # Credentials: the SDK's default chain only (ADC, metadata server, or the emulator
        # env var, with which the SDK uses anonymous credentials by itself).
        return firestore.AsyncClient(project=self.project, database=self.database)

    def _share_key(self) -> tuple[Any, ...]:
        return (self.project, self.database, self.emulator_host, os.environ.get(EMULATOR_ENV))

    def _client(self) -> firestore.AsyncClient:
        # A gRPC aio channel belongs to the event loop it was created on.
        loop = asyncio.get_running_loop()
        if self._client_obj is None or self._loop is not loop:
            if self._shared:
                if self._client_obj is not None and self._loop is not None:
                    # That loop is gone or elsewhere: its channel cannot be closed from here.
                    _CLIENTS.release(self._key, self._client_obj, loop=self._loop)
                self._key = self._share_key()
                self._client_obj = _CLIENTS.acquire(self._key, self._make_client)
            else:
                self._client_obj = self._make_client()
            self._loop = loop
        return self._client_obj

    def _items(self, partition: str) -> Any:
        parent = doc_id(partition)
        if len(parent.encode()) > DOC_ID_MAX_BYTES:
            raise InvalidItem("partition is too long for a Firestore document id")
        return self._client().collection(self.collection).document(parent).collection(ITEMS)

    async def close(self) -> None:
        client, self._client_obj = self._client_obj, None
        if client is None:
            return
        if not self._shared or _CLIENTS.release(self._key, client, loop=self._loop):
            await _close_client(client)

    # --- retries ---------------------------------------------------------------------------

    async def _retrying(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()``, retried while Firestore's failures may pass (see module doc)."""

        def judge(exc: BaseException, attempts: int) -> float:
            exc = _api_error(exc)
            if isinstance(exc, gexc.InvalidArgument):
                raise InvalidItem(f"firestore rejected the {what}: {exc.message}") from exc
            if not isinstance(exc, _RETRYABLE):
                raise BackendUnavailable(f"firestore {what}: {type(exc).__name__}: {exc}") from exc
            return 0.0

        def exhausted(exc: BaseException, attempts: int) -> BackendUnavailable:
            exc = _api_error(exc)
            return BackendUnavailable(
                f"firestore {what} failed {attempts} times, last with {type(exc).__name__}: {exc}"
            )

        return await retrying(
            fn, self.retry, errors=_BACKEND_ERRORS, judge=judge, exhausted=exhausted, sleep=self._sleep
        )

    # --- reads -----------------------------------------------------------------------------

    def _live(self, data: dict[str, Any]) -> bool:
        return is_live(data.get(F_EXPIRES), self._clock())

    @staticmethod
    def _item(data: dict[str, Any]) -> Item:
        return Item(
            key=data[F_KEY],
            value=bytes(data[F_VALUE]),
            version=int(data[F_VERSION]),
            expires_at=data.get(F_EXPIRES),
        )

    async def get(self, partition: str, key: str) -> Item | None:
        validate_key(key)

        async def once() -> Any:
            return await self._items(partition).document(doc_id(key)).get(
                retry=None, timeout=self.timeout
            )

        snap = await self._retrying("get", once)
        if not snap.exists:
            return None
        data = snap.to_dict()
        return self._item(data) if self._live(data) else None

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
        bounds = key_range(prefix, after, before)
        if bounds.empty:
            return []
        low, low_inclusive, high = bounds
        out: list[Item] = []
        skipped = 0
        while len(out) < limit:
            want = limit - len(out)
            # Expired leftovers are skipped client-side; read a little ahead once some appear.
            page = want if not skipped else min(500, max(want, 2 * skipped))
            query = self.build_query(partition, low, low_inclusive, high, descending, page)

            async def once(query: Any = query) -> list[Any]:
                return [snap async for snap in query.stream(retry=None, timeout=self.timeout)]

            snaps = await self._retrying("query", once)
            for snap in snaps:
                data = snap.to_dict()
                if not self._live(data):
                    skipped += 1
                elif len(out) < limit:
                    out.append(self._item(data))
            if len(snaps) < page:
                break
            last = snaps[-1].to_dict()[F_KEY]
            if descending:
                high = last
            else:
                low, low_inclusive = last, False
        return out

    def build_query(
        self,
        partition: str,
        low: str | None,
        low_inclusive: bool,
        high: str | None,
        descending: bool,
        limit: int,
    ) -> Any:
        """The only query shape the adapter issues (the index file must cover it):
        collection ``items``, range filters on ``sk`` only, ``order_by(sk)``, ``limit``."""
        query: Any = self._items(partition)
        if low is not None:
            query = query.where(filter=firestore.FieldFilter(F_KEY, ">=" if low_inclusive else ">", low))
        if high is not None:
            query = query.where(filter=firestore.FieldFilter(F_KEY, "<", high))
        direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING
        return query.order_by(F_KEY, direction=direction).limit(limit)

    # --- scan ------------------------------------------------------------------------------

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        """Partitions in document-id order, the items of each in key order (see module doc).

        The token is the last *examined* position (partition, key): everything of the
        partitions before it in document-id order, and of its partition up to that key, is done.
        """
        limit = scan_limit(limit)
        position = parse_position_token(token)
        if position is not None and not position[0].startswith(prefix):
            raise InvalidItem("the scan token belongs to another prefix")
        id_prefix = doc_id_prefix(prefix)
        if len(id_prefix.encode()) > DOC_ID_MAX_BYTES:
            return ScanPage([], None)  # no partition can have such a name
        scan = _Scan(self, prefix, limit)
        start: str | None
        if position is not None:
            partition, after = position
            if not await scan.partition(partition, after):
                return scan.page()
            start = doc_id(partition) + AFTER
        else:
            start = id_prefix or MIN_DOC_ID
        while start is not None:
            if scan.budget < 2:  # a discovery may need one follow-up read
                return scan.page()
            start = await scan.discover(start, id_prefix)
            if scan.stopped:
                return scan.page()
        return ScanPage(scan.items, None)

    def build_scan_query(self, start: str, limit: int) -> Any:
        """The scan's discovery query: collection group ``items`` ordered by document name
        (``__name__`` only, so Firestore's built-in name index serves it; no field index),
        from document id ``start`` of this collection to the collection's end."""
        client = self._client()
        name = FieldPath.document_id()
        return (
            client.collection_group(ITEMS)
            .order_by(name)
            .start_at({name: client.collection(self.collection).document(start)})
            .end_before({name: client.collection(self.collection + AFTER).document(MIN_DOC_ID)})
            .limit(limit)
        )

    async def _read_docs(self, items: Any, keys: set[str]) -> dict[str, dict[str, Any] | None]:
        """Current documents (data + update_time) for ``keys``; ``None`` where absent."""
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)
        refs = [items.document(doc_id(key)) for key in keys]
        async for snap in self._client().get_all(refs, retry=None, timeout=self.timeout):
            if snap.exists:
                found[raw_id(snap.id)] = {"data": snap.to_dict(), "update_time": snap.update_time}
        return found

    # --- writes ----------------------------------------------------------------------------

    def _fields(self, op: Put, token: str, *, for_update: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {F_KEY: op.key, F_VALUE: op.value, F_VERSION: op.version, F_WRITE: token}
        if op.expires_at is not None:
            fields[F_EXPIRES] = op.expires_at
            fields[F_TTL] = _to_timestamp(op.expires_at)
        elif for_update:  # update() merges: drop a previous expiry explicitly
            fields[F_EXPIRES] = firestore.DELETE_FIELD
            fields[F_TTL] = firestore.DELETE_FIELD
        return fields

    def _stage(
        self,
        batch: Any,
        ref: Any,
        index: int,
        op: Op,
        docs: dict[str, dict[str, Any] | None],
        token: str,
    ) -> None:
        """Add ``op`` to ``batch`` with the precondition that enforces its condition."""
        client = self._client()
        cond = op.condition
        option: Any = None
        if isinstance(cond, VersionIs):
            doc = docs[op.key]
            if doc is None or not self._live(doc["data"]) or doc["data"].get(F_VERSION) != cond.version:
                raise ConditionFailed(index)
            option = client.write_option(last_update_time=doc["update_time"])
        elif isinstance(cond, Absent):
            doc = docs.get(op.key)
            if doc is not None:
                if self._live(doc["data"]):
                    raise ConditionFailed(index)
                # An expired leftover counts as absent; replace it only if nobody touched it.
                option = client.write_option(last_update_time=doc["update_time"])
            elif isinstance(op, Put):
                batch.create(ref, self._fields(op, token, for_update=False))
                return
            else:
                option = client.write_option(exists=False)
        if isinstance(op, Put):
            if option is None:
                batch.set(ref, self._fields(op, token, for_update=False))
            else:
                batch.update(ref, self._fields(op, token, for_update=True), option=option)
        else:
            batch.delete(ref, option=option)

    async def _write_once(self, partition: str, ops: Sequence[Op], token: str) -> None:
        items = self._items(partition)
        # Documents whose current state decides the precondition; Absent puts go straight to
        # create() and are read only if the server reports that one already exists.
        to_read = {
            op.key
            for op in ops
            if isinstance(op.condition, VersionIs) or (isinstance(op, Delete) and op.condition is not None)
        }
        absent_puts = {op.key for op in ops if isinstance(op, Put) and isinstance(op.condition, Absent)}
        for _ in range(3):
            docs = await self._read_docs(items, to_read) if to_read else {}
            batch = self._client().batch()
            for index, op in enumerate(ops):
                self._stage(batch, items.document(doc_id(op.key)), index, op, docs, token)
            try:
                await batch.commit(retry=None, timeout=self.timeout)
                return
            except gexc.AlreadyExists:
                # Some create() met an existing document: live → the condition fails; expired
                # → it counts as absent, so read those documents and replace them instead.
                unread = absent_puts - to_read
                if not unread:
                    raise ConditionFailed(None) from None
                to_read |= unread
            except (gexc.FailedPrecondition, gexc.NotFound):
                raise ConditionFailed(None) from None
        raise ConditionFailed(None)

    async def _landed(self, partition: str, ops: Sequence[Op], token: str) -> bool:
        """Did an earlier, unacknowledged attempt of this ``write()`` call commit?"""
        puts = {op.key for op in ops if isinstance(op, Put)}
        if not puts:
            return False

        async def once() -> dict[str, dict[str, Any] | None]:
            return await self._read_docs(self._items(partition), puts)

        docs = await self._retrying("write (outcome check)", once)
        return all(doc is not None and doc["data"].get(F_WRITE) == token for doc in docs.values())

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        validate_ops(ops, self.capabilities)
        token = uuid.uuid4().hex
        attempts = 0

        async def once() -> None:
            nonlocal attempts
            attempts += 1
            try:
                await self._write_once(partition, ops, token)
            except ConditionFailed:
                # A retry that meets its own earlier, unacknowledged commit fails its conditions.
                if attempts > 1 and await self._landed(partition, ops, token):
                    return
                raise

        await self._retrying("write", once)


class _Scan:
    """One page of :meth:`FirestoreItemStore.scan` being filled, within a request budget."""

    REQUESTS: Final = 8

    def __init__(self, store: FirestoreItemStore, prefix: str, limit: int) -> None:
        self.store = store
        self.prefix = prefix
        self.limit = limit
        self.budget = self.REQUESTS
        self.items: list[tuple[str, Item]] = []
        self.last: tuple[str, str] | None = None  # the last examined (partition, key)
        self.stopped = False

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def page(self) -> ScanPage:
        # Work left: the next page resumes after the last examined position. Every page that
        # does not end the scan examines a document or reaches a partition beyond its token's
        # (a discovery that finds nothing ends the scan), so a scan always ends.
        assert self.last is not None
        return ScanPage(self.items, position_token(*self.last))

    def examine(self, partition: str, data: dict[str, Any]) -> None:
        self.last = (partition, data[F_KEY])
        if self.store._live(data):
            self.items.append((partition, self.store._item(data)))

    async def _run(self, query: Any) -> list[Any]:
        self.budget -= 1

        async def once() -> list[Any]:
            return [snap async for snap in query.stream(retry=None, timeout=self.store.timeout)]

        return await self.store._retrying("scan", once)

    async def partition(self, partition: str, after: str | None) -> bool:
        """Read ``partition`` in key order after ``after``; ``True`` once it is exhausted,
        ``False`` when the page is full or the budget spent first."""
        while True:
            want = self.limit - len(self.items)
            query = self.store.build_query(partition, after, False, None, False, want)
            snaps = await self._run(query)
            for snap in snaps:
                data = snap.to_dict()
                self.examine(partition, data)
                after = data[F_KEY]
            if len(snaps) < want:
                return True
            if self.full or self.budget < 1:
                return False

    async def discover(self, start: str, id_prefix: str) -> str | None:
        """Read the items from partition doc id ``start`` on in document-name order.

        A partition whose items the read passed entirely is complete in it: its items are
        examined in key order straight from the read. The last partition it reached may go on
        beyond it and is read on in key order instead. Returns the doc id to go on from, or
        ``None`` once past the last partition under the prefix; sets ``stopped`` when the page
        is full or the budget spent first.
        """
        want = self.limit - len(self.items)
        snaps = await self._run(self.store.build_scan_query(start, want))
        groups: dict[str, list[dict[str, Any]]] = {}
        ended = len(snaps) < want
        for snap in snaps:
            parent = snap.reference.parent.parent
            if parent is None or parent.parent.id != self.store.collection:
                ended = True  # outside this collection: cannot happen within the query bounds
                break
            # The doc ids under the prefix are contiguous: the first one outside is past them
            # all. The raw check is the definition; the id check alone is equivalent (see
            # layout.doc_id_prefix).
            if not parent.id.startswith(id_prefix) or not raw_id(parent.id).startswith(self.prefix):
                ended = True
                break
            groups.setdefault(parent.id, []).append(snap.to_dict())
        for n, (parent_id, docs) in enumerate(groups.items()):
            partition = raw_id(parent_id)
            # Reached: every partition before it is done (keys are never empty, so "" is
            # before all of this one's).
            self.last = (partition, "")
            if n == len(groups) - 1 and not ended:
                # This partition may go on past the read: its key order needs its own query.
                if not await self.partition(partition, None):
                    self.stopped = True
                    return None
            else:
                for data in sorted(docs, key=lambda d: d[F_KEY]):
                    self.examine(partition, data)
                    if self.full:
                        self.stopped = True
                        return None
            start = parent_id + AFTER
        return None if ended else start


def store_from_params(
    table: str, params: Mapping[str, Any], *, share_client: bool = True
) -> FirestoreItemStore:
    """A store on collection ``<collection_prefix><table>`` from a connection's params
    (:class:`FirestoreParams`, strict; ``ValueError`` naming the field)."""
    p = parse(FirestoreParams, params)
    return FirestoreItemStore(
        collection=f"{p.collection_prefix}{table}",
        project=p.project,  # None: the SDK infers it (env, ADC)
        database=p.database,
        emulator_host=p.emulator_host,
        timeout=p.timeout_seconds,
        max_attempts=p.max_attempts,
        share_client=share_client,
    )
