"""Azure Cosmos DB backend: the core's :class:`ItemStore` on ``azure.cosmos.aio``.

Layout (see :mod:`.layout`): one container per resource kind, partition key ``/pk`` = the core
partition, ``id`` = the encoded key, ``sk`` = the raw key for ordering. Guarantees:

* **Atomic conditional writes.** One operation uses the point API with the backend's own
  conditions: ``create_item`` (``Absent``; 409 → :class:`ConditionFailed`), ``replace_item`` /
  ``delete_item`` with the item's etag and ``IfNotModified`` (``VersionIs``; 412 →
  :class:`ConditionFailed`), ``upsert_item`` (no condition). Several operations go in one
  transactional batch in the partition (all apply or none); a failing operation is reported as
  ``ConditionFailed(index)``. ``VersionIs`` reads the item for its etag, checks version and
  liveness, and the write is then conditional on that etag, so a concurrent change in between
  fails the write rather than being overwritten.
* **Expiry.** Items carry Cosmos' native ``ttl`` (the container has ``default_ttl=-1``) and
  ``expires_at``; reads and queries hide expired items because Cosmos deletes late. An expired
  item that still exists counts as absent: ``Absent`` then replaces it under its etag.
* **Errors.** Throttling (429, honouring ``x-ms-retry-after-ms``), timeouts (408), 449/5xx
  service errors and connection failures are retried a bounded number of times with jittered
  backoff, then raised as :class:`BackendUnavailable`. Retrying a write whose outcome was
  ambiguous (the connection dropped after sending) is safe because every write is conditional
  or idempotent in effect: a retried ``create`` that had in fact committed reports 409, i.e.
  :class:`ConditionFailed`, and the core resolves that through its idempotency records
  (``SequencedStream`` returns the stored result when the record is its own); a retried
  etag-conditional replace reports 412 likewise; upserts and deletes re-apply the same state.
  Nothing is ever half-written: a batch is atomic server-side.
* **Scan** (administration only: export, erasure, moving a kind). One cross-partition query,
  ``STARTSWITH(c.pk, @prefix)`` in (``pk``, ``sk``) order with ``TOP @limit``; a page's token is
  the (partition, key) of the last item it read and the next page resumes strictly after it, so
  an item live for the whole scan comes exactly once. The token is the adapter's own, not the
  SDK's continuation token (whose format is SDK-internal and whose pages need not stop at
  ``limit``). A two-field ``ORDER BY`` needs the composite index (``/pk`` ASC, ``/sk`` ASC):
  :func:`provision` creates containers with it and adds it to an existing container's policy.
* **Scan cost.** A scan is a cross-partition query: each page asks every physical partition of
  the container (a minimum charge per partition even when it holds nothing under the prefix)
  and costs RUs in proportion to the items it reads, so a whole scan costs in proportion to the
  data under the prefix. It is for administration only, never on a request's path; on a large
  container run it off-peak, as throttling (429) is retried like any other call and then
  surfaces as :class:`BackendUnavailable`.
* **Limits.** Cosmos caps a transactional batch at 100 operations (``max_batch_ops``) and 2 MB of
  request payload; a batch over the payload limit is rejected whole (413 → :class:`InvalidItem`).
  The core's batches (an entry or a few plus an idempotency record) are far below it.

Connection params (:class:`northstar_adapters.params.CosmosParams`, operator configuration only):
``url`` (account endpoint, required), ``database`` (default ``northstar``),
``container_prefix`` (default ``northstar_``; a route's table ``T`` is container ``<prefix>T``),
``key_env`` (name of the environment variable
holding the account key, default ``COSMOS_KEY``). Without that variable the SDK's standard
Entra ID chain is used (``azure.identity.aio.DefaultAzureCredential``, if installed). Keys are
never read from routes or code. One ``CosmosClient`` is shared per (event loop, url,
credential) by every store opened through :func:`open_store`, and closed with the last of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos import PartitionKey
from azure.cosmos import exceptions as cosmos_exc
from azure.cosmos.aio import CosmosClient

from northstar_adapters.common import (
    RetryPolicy,
    SharedClients,
    parse_position_token,
    position_token,
    retrying,
    scan_limit,
)
from northstar_adapters.cosmos.layout import (
    INDEXING_POLICY,
    PARTITION_KEY_PATH,
    encode_id,
    from_document,
    has_scan_index,
    is_doc_live,
    range_query,
    scan_query,
    to_document,
    with_scan_index,
)
from northstar_adapters.params import CosmosParams, parse
from northstar_core.routing import Target
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
    validate_key,
    validate_ops,
)

__all__ = ["CAPABILITIES", "CosmosConfig", "CosmosItemStore", "open_store", "provision"]

# The real backend's capabilities: Cosmos is durable and shared, and a transactional batch
# holds at most 100 operations.
# No atomic Check: a batch precondition exists only on a document the batch writes.
CAPABILITIES: Final = Capabilities(durable=True, shared=True, max_batch_ops=100, atomic_checks=False)

DEFAULT_DATABASE: Final = "northstar"
DEFAULT_PREFIX: Final = "northstar_"
DEFAULT_KEY_ENV: Final = "COSMOS_KEY"
MAX_PAGE: Final = 1000
# Rounds of "plan the batch, run it, re-read on a lost race" before giving up.
MAX_WRITE_ROUNDS: Final = 8

TRANSIENT_STATUS: Final = frozenset({408, 429, 449, 500, 502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True)
class CosmosConfig:
    url: str
    database: str
    container: str
    key_env: str = DEFAULT_KEY_ENV

    @classmethod
    def from_target(cls, target: Target) -> CosmosConfig:
        """The connection's params (:class:`CosmosParams`, strict: a key can never be a param)
        on container ``<container_prefix><table>``; ``ValueError`` naming the field."""
        params = parse(CosmosParams, target.params)
        return cls(
            url=params.url,
            database=params.database,
            container=f"{params.container_prefix}{target.table_name}",
            key_env=params.key_env,
        )


# --- clients ------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return int(code) if isinstance(code, int) else None


def _retry_after_ms(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        value = headers.get("x-ms-retry-after-ms")
    except AttributeError:
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, cosmos_exc.CosmosBatchOperationError):
        return False  # handled per operation by the caller
    if isinstance(exc, cosmos_exc.CosmosHttpResponseError):
        return _status(exc) in TRANSIENT_STATUS
    return isinstance(
        exc,
        ServiceRequestError
        | ServiceResponseError
        | cosmos_exc.CosmosClientTimeoutError
        | TimeoutError
        | ConnectionError
        | OSError,
    )


def _credential(config: CosmosConfig) -> tuple[Any, str]:
    """The SDK credential (a key from the environment, else the Entra ID chain) and its kind."""
    key = os.environ.get(config.key_env)
    if key:
        return key, "key"
    try:
        from azure.identity.aio import DefaultAzureCredential  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise BackendUnavailable(
            f"no Cosmos credentials: set ${config.key_env} or install azure-identity"
        ) from None
    return DefaultAzureCredential(), "aad"


def _new_client(config: CosmosConfig) -> tuple[CosmosClient, Any]:
    if not config.url:
        raise BackendUnavailable("cosmos route has no 'url' param")
    credential, _ = _credential(config)
    # The SDK's own throttling retries are kept short: the adapter's bounded retries decide.
    client = CosmosClient(
        config.url,
        credential=credential,
        retry_total=2,
        retry_backoff_max=2,
        connection_timeout=10,
    )
    return client, credential


class _Lease:
    """An SDK client and the credential it was opened with (closed together)."""

    def __init__(self, client: CosmosClient, credential: Any) -> None:
        self.client = client
        self.credential = credential

    async def close(self) -> None:
        await self.client.close()
        if not isinstance(self.credential, str) and hasattr(self.credential, "close"):
            await self.credential.close()


# Shared clients, per event loop (an aio client is bound to the loop that opened it) and per
# (url, credential).
_LEASES: Final[SharedClients[_Lease]] = SharedClients()


def _lease_key(config: CosmosConfig) -> tuple[str, str]:
    key_env_value = os.environ.get(config.key_env)
    identity = "key:" + hashlib.sha256(key_env_value.encode()).hexdigest()[:16] if key_env_value else "aad"
    return (config.url, identity)


# --- the store ----------------------------------------------------------------------------


class CosmosItemStore(ItemStore):
    """An :class:`ItemStore` on one Cosmos container (see module doc for guarantees)."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        config: CosmosConfig,
        *,
        share_client: bool = True,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self._share = share_client
        self._clock = clock
        self._retry = retry or RetryPolicy()
        # The lease, its key in _LEASES (None: this store's own) and the loop it was taken on.
        self._lease: tuple[_Lease, tuple[str, str] | None, asyncio.AbstractEventLoop | None] | None = None
        self._container_proxy: Any = None
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def container(self) -> Any:
        """The SDK ``ContainerProxy`` (opened on first use). Tests may wrap it to inject faults."""
        if self._container_proxy is None:
            if self._closed:
                raise BackendUnavailable("store is closed")
            if self._share:
                key: tuple[str, str] | None = _lease_key(self.config)
                lease = _LEASES.acquire(key, lambda: _Lease(*_new_client(self.config)))
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            else:
                key, lease, loop = None, _Lease(*_new_client(self.config)), None
            self._lease = (lease, key, loop)
            self._container_proxy = lease.client.get_database_client(
                self.config.database
            ).get_container_client(self.config.container)
        return self._container_proxy

    @container.setter
    def container(self, proxy: Any) -> None:
        self._container_proxy = proxy

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` with bounded jittered retries of transient failures."""

        def judge(exc: BaseException, attempts: int) -> float:
            if not _is_transient(exc):
                if isinstance(exc, cosmos_exc.CosmosHttpResponseError | cosmos_exc.CosmosBatchOperationError):
                    raise exc  # a definite answer: the caller maps its status
                # e.g. ClientAuthenticationError from the Entra ID chain, DecodeError
                raise BackendUnavailable(f"cosmos {what} failed: {_describe(exc)}") from exc
            return (_retry_after_ms(exc) or 0.0) / 1000.0

        def exhausted(exc: BaseException, attempts: int) -> BackendUnavailable:
            return BackendUnavailable(
                f"cosmos {what} failed after {attempts} attempts: {_describe(exc)}",
                retry_after=max(1, math.ceil((_retry_after_ms(exc) or 1000.0) / 1000.0)),
            )

        return await retrying(
            fn, self._retry, errors=(AzureError, OSError, TimeoutError), judge=judge, exhausted=exhausted
        )

    def _unexpected(self, what: str, exc: BaseException) -> Exception:
        status = _status(exc)
        if status in (400, 413):
            return InvalidItem(f"cosmos rejected the {what}: {_describe(exc)}")
        if status == 404:
            return BackendUnavailable(
                f"cosmos container {self.config.database}/{self.config.container} not found "
                "(run `northstar provision`)"
            )
        return BackendUnavailable(f"cosmos {what} failed: {_describe(exc)}")

    async def _read_doc(self, partition: str, key: str) -> dict[str, Any] | None:
        container = self.container
        doc_id = encode_id(key)

        async def read() -> dict[str, Any] | None:
            try:
                doc: dict[str, Any] = await container.read_item(doc_id, partition_key=partition)
            except cosmos_exc.CosmosResourceNotFoundError:
                return None
            return doc

        try:
            return await self._call("read", read)
        except cosmos_exc.CosmosHttpResponseError as exc:
            raise self._unexpected("read", exc) from exc

    # -- the port ---------------------------------------------------------------------------

    async def get(self, partition: str, key: str) -> Item | None:
        validate_key(key)
        doc = await self._read_doc(partition, key)
        if doc is None or not is_doc_live(doc, self._clock()):
            return None
        return from_document(doc)

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
        now = self._clock()
        sql, params = range_query(
            partition, prefix, after=after, before=before, descending=descending, now=now
        )
        container = self.container
        page_size = min(limit, MAX_PAGE)

        async def run() -> list[Item]:
            out: list[Item] = []
            pages = container.query_items(
                query=sql, parameters=params, partition_key=partition, max_item_count=page_size
            ).by_page()
            async for page in pages:
                async for doc in page:
                    if is_doc_live(doc, now):
                        out.append(from_document(doc))
                        if len(out) >= limit:
                            return out
            return out

        try:
            return await self._call("query", run)
        except cosmos_exc.CosmosHttpResponseError as exc:
            if _status(exc) == 404:
                return []  # container not provisioned yet holds nothing
            raise self._unexpected("query", exc) from exc

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        """Live items of the partitions named ``prefix...`` (see the module doc: Scan)."""
        limit = scan_limit(limit)
        after = parse_position_token(token)
        now = self._clock()
        sql, params = scan_query(prefix, after=after, limit=limit, now=now)
        container = self.container

        async def run() -> tuple[list[tuple[str, Item]], tuple[str, str] | None]:
            out: list[tuple[str, Item]] = []
            read = 0
            last: tuple[str, str] | None = None
            # No partition_key: the SDK runs it as a cross-partition query and merges the
            # physical partitions' results in ORDER BY order.
            async for doc in container.query_items(query=sql, parameters=params, max_item_count=limit):
                read += 1
                last = (str(doc["pk"]), str(doc["sk"]))
                if is_doc_live(doc, now):
                    out.append((last[0], from_document(doc)))
                if read >= limit:
                    return out, last
            # Fewer than ``limit`` documents matched: nothing is left after them.
            return out, None

        try:
            items, last = await self._call("scan", run)
        except cosmos_exc.CosmosHttpResponseError as exc:
            if _status(exc) == 404:
                return ScanPage([], None)  # container not provisioned yet holds nothing
            raise self._unexpected("scan", exc) from exc
        return ScanPage(items, None if last is None else position_token(*last))

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        validate_ops(ops, self.capabilities)
        try:
            if len(ops) == 1:
                await self._write_one(partition, ops[0])
            else:
                await self._write_batch(partition, ops)
        except cosmos_exc.CosmosHttpResponseError as exc:
            raise self._unexpected("write", exc) from exc

    async def ping(self) -> None:
        container = self.container
        try:
            await self._call("ping", container.read)
        except cosmos_exc.CosmosHttpResponseError as exc:
            raise self._unexpected("ping", exc) from exc

    async def close(self) -> None:
        self._closed = True
        held, self._lease = self._lease, None
        self._container_proxy = None
        if held is not None:
            lease, key, loop = held
            if key is None or _LEASES.release(key, lease, loop=loop):
                await lease.close()

    # -- single operations: the point API with etag conditions ------------------------------

    async def _write_one(self, partition: str, op: Op) -> None:
        container = self.container
        doc_id = encode_id(op.key)
        for _ in range(MAX_WRITE_ROUNDS):
            now = self._clock()
            if isinstance(op, Put) and op.condition is None:
                body = to_document(partition, op, now)
                await self._call("upsert", partial(container.upsert_item, body))
                return
            if isinstance(op, Put) and isinstance(op.condition, Absent):
                body = to_document(partition, op, now)
                try:
                    await self._call("create", partial(container.create_item, body))
                    return
                except cosmos_exc.CosmosResourceExistsError:
                    pass
                # It exists: only an expired item may be replaced (under its etag).
                current = await self._read_doc(partition, op.key)
                if current is None:
                    continue  # deleted meanwhile: create again
                if is_doc_live(current, self._clock()):
                    raise ConditionFailed(0)
                try:
                    await self._call(
                        "replace",
                        partial(
                            container.replace_item,
                            doc_id,
                            body,
                            etag=current["_etag"],
                            match_condition=MatchConditions.IfNotModified,
                        ),
                    )
                except cosmos_exc.CosmosResourceNotFoundError:
                    continue  # the expired item was deleted meanwhile: create again
                except cosmos_exc.CosmosAccessConditionFailedError:
                    raise ConditionFailed(0) from None  # another writer replaced it first
                return
            current = await self._read_doc(partition, op.key)
            live = current is not None and is_doc_live(current, self._clock())
            if isinstance(op.condition, VersionIs):
                if current is None or not live or int(current["ver"]) != op.condition.version:
                    raise ConditionFailed(0)
            elif isinstance(op.condition, Absent) and live:
                raise ConditionFailed(0)
            if isinstance(op, Put):  # VersionIs
                assert current is not None
                body = to_document(partition, op, self._clock())
                await self._conditional(
                    "replace",
                    partial(
                        container.replace_item,
                        doc_id,
                        body,
                        etag=current["_etag"],
                        match_condition=MatchConditions.IfNotModified,
                    ),
                )
                return
            # Delete
            if current is None:
                return
            if op.condition is None:
                try:
                    await self._call(
                        "delete", partial(container.delete_item, doc_id, partition_key=partition)
                    )
                except cosmos_exc.CosmosResourceNotFoundError:
                    pass
                return
            await self._conditional(
                "delete",
                partial(
                    container.delete_item,
                    doc_id,
                    partition_key=partition,
                    etag=current["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                ),
            )
            return
        raise BackendUnavailable("cosmos write kept racing concurrent writers; retry")

    async def _conditional(self, what: str, fn: Callable[[], Awaitable[Any]]) -> None:
        """An etag-conditional point write: a changed or vanished item is a failed condition."""
        try:
            await self._call(what, fn)
        except (cosmos_exc.CosmosAccessConditionFailedError, cosmos_exc.CosmosResourceNotFoundError):
            raise ConditionFailed(0) from None

    # -- several operations: one transactional batch in the partition -----------------------

    async def _write_batch(self, partition: str, ops: Sequence[Op]) -> None:
        container = self.container
        # Ops whose current item must be read to plan them: VersionIs needs the etag, deletes
        # must know whether the item exists (a batch delete of a missing item fails), and an
        # Absent put joins them once its create met an existing (possibly expired) item.
        must_read = {
            i for i, op in enumerate(ops) if isinstance(op, Delete) or isinstance(op.condition, VersionIs)
        }
        for _ in range(MAX_WRITE_ROUNDS):
            now = self._clock()
            read_indexes = sorted(must_read)
            docs = dict(
                zip(
                    read_indexes,
                    await asyncio.gather(*(self._read_doc(partition, ops[i].key) for i in read_indexes)),
                    strict=True,
                )
            )
            batch: list[tuple[Any, ...]] = []
            index_of: list[int] = []  # batch position -> op index
            for i, op in enumerate(ops):
                entry = self._plan(partition, i, op, docs, now)
                if entry is not None:
                    batch.append(entry)
                    index_of.append(i)
            if not batch:
                return
            try:
                await self._call(
                    "batch",
                    partial(container.execute_item_batch, batch, partition_key=partition),
                )
                return
            except cosmos_exc.CosmosBatchOperationError as exc:
                failed = index_of[exc.error_index] if exc.error_index is not None else None
                status = _batch_status(exc)
                if failed is None:
                    raise BackendUnavailable(f"cosmos batch failed: {_describe(exc)}") from exc
                if status == 409:  # create met an existing item: maybe expired, re-plan with a read
                    if failed in must_read:
                        raise ConditionFailed(failed) from None
                    must_read.add(failed)
                    continue
                if status == 412:
                    raise ConditionFailed(failed) from None
                if status == 404:  # an item read while planning vanished: re-plan
                    must_read.add(failed)
                    continue
                if status in TRANSIENT_STATUS:
                    raise BackendUnavailable(
                        f"cosmos batch failed: {_describe(exc)}",
                        retry_after=max(1, math.ceil((_retry_after_ms(exc) or 1000.0) / 1000.0)),
                    ) from exc
                if status in (400, 413):
                    raise InvalidItem(f"cosmos rejected operation {failed}: {_describe(exc)}") from exc
                raise BackendUnavailable(f"cosmos batch failed: {_describe(exc)}") from exc
        raise BackendUnavailable("cosmos write kept racing concurrent writers; retry")

    def _plan(
        self, partition: str, index: int, op: Op, docs: dict[int, dict[str, Any] | None], now: float
    ) -> tuple[Any, ...] | None:
        """The batch operation for ``op`` given what was read, or ``None`` if nothing to do."""
        doc_id = encode_id(op.key)
        current = docs.get(index)
        known = index in docs
        live = current is not None and is_doc_live(current, now)
        if isinstance(op.condition, VersionIs) and (
            current is None or not live or int(current["ver"]) != op.condition.version
        ):
            raise ConditionFailed(index)
        if isinstance(op.condition, Absent) and live:
            raise ConditionFailed(index)
        if isinstance(op, Put):
            body = to_document(partition, op, now)
            if op.condition is None:
                return ("upsert", (body,))
            if current is None:
                # Absent and nothing there (or not read yet): the create itself is the check.
                return ("create", (body,))
            # VersionIs, or Absent over an expired item: replace exactly what was read.
            return ("replace", (doc_id, body), {"if_match_etag": current["_etag"]})
        if not known or current is None:
            return None  # deleting a missing item changes nothing
        if op.condition is None:
            return ("delete", (doc_id,))
        return ("delete", (doc_id,), {"if_match_etag": current["_etag"]})


def _batch_status(exc: cosmos_exc.CosmosBatchOperationError) -> int | None:
    responses = exc.operation_responses or []
    index = exc.error_index
    if index is not None and 0 <= index < len(responses):
        try:
            return int(responses[index]["statusCode"])
        except (KeyError, TypeError, ValueError):
            pass
    return _status(exc)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    status = _status(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}({status}): {text}" if status else f"{type(exc).__name__}: {text}"


# --- factory and provisioning ---------------------------------------------------------------


async def _ensure_scan_index(database: Any, container: Any) -> None:
    """Add the scan's composite index to a container created before scans existed.

    Replacing a container resets every property the request leaves out, so each one the
    container has is passed back unchanged; only the indexing policy gains the index.
    """
    props: dict[str, Any] = await container.read()
    policy = props.get("indexingPolicy")
    if has_scan_index(policy):
        return
    await database.replace_container(
        container,
        partition_key=props.get("partitionKey") or PartitionKey(path=PARTITION_KEY_PATH),
        indexing_policy=with_scan_index(policy),
        default_ttl=props.get("defaultTtl"),
        conflict_resolution_policy=props.get("conflictResolutionPolicy"),
        analytical_storage_ttl=props.get("analyticalStorageTtl"),
        computed_properties=props.get("computedProperties"),
        full_text_policy=props.get("fullTextPolicy"),
        vector_embedding_policy=props.get("vectorEmbeddingPolicy"),
    )


def open_store(target: Target) -> CosmosItemStore:
    """A store for ``target``; its client is opened on first use and shared (see module doc)."""
    return CosmosItemStore(CosmosConfig.from_target(target))


async def provision(target: Target, *, dry_run: bool) -> list[str]:
    """Ensure the database and the target's container exist (idempotent); returns the plan.

    The container is partitioned on ``/pk`` with ``default_ttl = -1`` (TTL on, items expire only
    when they carry ``ttl``) and an indexing policy that leaves the value blob unindexed and has
    the composite (``pk``, ``sk``) index a scan orders by. An existing container that lacks that
    index gets it added to its policy, every other setting kept (Cosmos then builds the index
    online, in the background).
    """
    config = CosmosConfig.from_target(target)
    plan = [
        f"cosmos: database '{config.database}' at {config.url or '<no url>'}",
        f"cosmos: container '{config.container}' in '{config.database}' for {target.resource_kind} "
        f"(partition key {PARTITION_KEY_PATH}, default_ttl=-1, composite index (pk, sk))",
    ]
    if dry_run:
        return [f"would ensure {line}" for line in plan]
    client, credential = _new_client(config)
    lease = _Lease(client, credential)
    try:
        # create_*_if_not_exists reads then creates: a concurrent provisioner can create in
        # between, so its 409 means "exists" and the step is retried as a read.
        for attempt in range(3):
            try:
                database = await client.create_database_if_not_exists(id=config.database)
                container = await database.create_container_if_not_exists(
                    id=config.container,
                    partition_key=PartitionKey(path=PARTITION_KEY_PATH),
                    default_ttl=-1,
                    indexing_policy=INDEXING_POLICY,
                )
                await _ensure_scan_index(database, container)
                break
            except cosmos_exc.CosmosResourceExistsError:
                if attempt == 2:
                    raise
    except (AzureError, OSError) as exc:
        raise BackendUnavailable(f"cosmos provisioning failed: {_describe(exc)}") from exc
    finally:
        await lease.close()
    return [f"ensured {line}" for line in plan]
