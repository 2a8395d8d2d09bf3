"""The :class:`ItemStore` port on DynamoDB (aioboto3, low-level client).

Layout: one table per route table name (``<table_prefix><table>``, the table defaulting to
the resource kind), partition key ``pk`` (S) = the core's partition, sort key ``sk`` (S) = the item key.
A stream's entries and its idempotency records therefore share one partition key and commit in
one ``TransactWriteItems``; pages are ``Query`` range reads on ``sk``; tenants are spread over
partition keys (the core prefixes every partition with the tenant), so no single item
serialises them.

Attributes: ``v`` (B) value, ``ver`` (N) version, ``wt`` (S) the token of the ``write`` call that
put the item (see *Retries*), and — only when ``expires_at`` is set — ``ttl`` (N, whole epoch
seconds rounded up: the table's native TTL attribute, so DynamoDB never deletes an item
early) and ``exp`` (N, ``expires_at`` exactly). Expiry is decided on ``exp``: reads hide expired
items and conditions treat them as absent, because native TTL deletes late (moto: never).

Scans (``scan``, for administration only: export, erasure, moving a kind) are DynamoDB
``Scan`` requests: each reads the whole table in storage order and filters partitions by name
afterwards, so its cost (read capacity, time) is proportional to the table, not to what it
returns, and no request path uses it. A scan reads items of one partition key together, in
sort-key order; its token is the table key (``pk``, ``sk``) to resume after, as JSON.

Retries: botocore's own retries are off; this module retries with full-jitter exponential
backoff (:func:`northstar_adapters.common.retrying`), bounded by ``max_attempts`` and
``retry_budget``, then raises :class:`BackendUnavailable`.

* Reads are always retried (throttling, timeouts, connection errors, 5xx).
* Throttling and transaction conflicts mean "not applied", so any write is retried.
* After an *ambiguous* failure (timeout, dropped connection, 5xx) a write may have applied.
  It is retried with the same ``ClientRequestToken`` (``TransactWriteItems`` is idempotent
  for ten minutes on AWS: a retry of an applied transaction succeeds without re-applying) and
  the same condition timestamp. A single conditional ``PutItem``/``DeleteItem`` has no such
  token: a retried ``Absent`` put that meets its own earlier write fails its condition. So
  when a retry after an ambiguous failure reports a failed condition, the store reads back one
  of the batch's puts: if it carries this call's write token, the earlier attempt applied
  (batches are atomic) and ``write`` returns normally — the batch is never applied twice and
  never reported lost when it landed. A batch of deletes only cannot be told apart from a
  concurrent delete, so it then reports :class:`ConditionFailed` (conservative: nothing is
  applied twice; the core's idempotency records make the retry of the request safe).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import aioboto3
import msgspec
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from northstar_adapters.common import RetryPolicy, SharedClients, key_range, retrying, scan_limit
from northstar_adapters.dynamodb.errors import (
    TRANSPORT_ERRORS,
    Outcome,
    classify,
    condition_failure_index,
    describe,
)
from northstar_adapters.params import DynamoParams, parse
from northstar_core.routing import Target
from northstar_core.storage import (
    Absent,
    BackendUnavailable,
    Capabilities,
    Condition,
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

CAPABILITIES: Final = Capabilities(durable=True, shared=True, max_batch_ops=100, atomic_checks=True)
DEFAULT_TABLE_PREFIX: Final = "northstar_"
TTL_ATTRIBUTE: Final = "ttl"
PARTITION_MAX_BYTES: Final = 2048  # DynamoDB's partition key limit
_QUERY_PAGE_MAX: Final = 1000
# Scan requests one scan page may send while they find nothing under the prefix: a sparse prefix
# then yields empty pages (allowed) instead of one call reading an unbounded part of the table.
_SCAN_REQUESTS_PER_PAGE: Final = 4
_SCAN_EVALUATE_MAX: Final = 1000


class DynamoConfig(DynamoParams, frozen=True, kw_only=True):
    """A connection's settings (:class:`DynamoParams`) bound to the route's physical table."""

    table: str

    @classmethod
    def from_target(cls, target: Target) -> DynamoConfig:
        """The settings of ``target``'s connection params (:class:`DynamoParams`, strict) on
        table ``<table_prefix><table>``. ``ValueError`` naming the field for anything else —
        credentials included: they come only from the SDK's standard chain."""
        params = parse(DynamoParams, target.params)
        return cls(**msgspec.structs.asdict(params), table=params.table_prefix + target.table_name)

    @property
    def client_key(self) -> tuple[Any, ...]:
        return (self.endpoint_url, self.region, self.connect_timeout, self.read_timeout)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.max_attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            budget=self.retry_budget,
        )


# --- clients ------------------------------------------------------------------------------------


_SESSIONS: dict[str | None, aioboto3.Session] = {}


def resolve_region(region: str | None) -> str | None:
    """The connection's region, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``; ``None`` leaves
    it to the SDK (the profile's region). botocore itself reads only ``AWS_DEFAULT_REGION``, while
    the AWS CLI v2, the other SDKs and AWS runtimes (Lambda, ECS) set ``AWS_REGION``: without
    this a deployment configured the usual way fails with ``NoRegionError``."""
    return region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _session(region: str | None) -> aioboto3.Session:
    """One SDK session per region: it resolves credentials through the standard chain and
    caches the parsed service model, which is costly to load for every client."""
    session = _SESSIONS.get(region)
    if session is None:
        session = _SESSIONS[region] = aioboto3.Session(region_name=region)
    return session


class _Client:
    """An aioboto3 DynamoDB client, opened once (concurrent callers wait for the one opening)."""

    def __init__(self, config: DynamoConfig) -> None:
        region = resolve_region(config.region)
        self._ctx = _session(region).client(
            "dynamodb",
            endpoint_url=config.endpoint_url,
            region_name=region,
            config=AioConfig(
                # Our own loop retries (see module doc); botocore's would hide ambiguity.
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                max_pool_connections=50,
            ),
        )
        self.client: Any = None
        self._ready: asyncio.Future[Any] | None = None

    async def open(self) -> Any:
        """The open client. A failure to open is final for this object (its SDK context cannot
        be entered twice): drop it and make a new one."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                self.client = await self._ctx.__aenter__()
            except BaseException as exc:
                self._ready.set_exception(exc)
                self._ready.exception()  # retrieved: concurrent openers re-raise it themselves
                raise
            self._ready.set_result(self.client)
        return await asyncio.shield(self._ready)

    async def close(self) -> None:
        if self.client is not None:
            self.client = None
            await self._ctx.__aexit__(None, None, None)


# One client per (endpoint, region, timeouts) and event loop (aiohttp sessions belong to the
# loop that opened them), shared by the stores using it.
_CLIENTS: Final[SharedClients[_Client]] = SharedClients()


# --- items --------------------------------------------------------------------------------------


def _num(value: float | int) -> dict[str, str]:
    # repr() of a float is its shortest exact round-trip form, so expires_at keeps its precision.
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _key(partition: str, key: str) -> dict[str, Any]:
    return {"pk": {"S": partition}, "sk": {"S": key}}


def _item_to_dynamo(partition: str, op: Put, token: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_key(partition, op.key),
        "v": {"B": bytes(op.value)},
        "ver": _num(int(op.version)),
        "wt": {"S": token},
    }
    if op.expires_at is not None:
        expires_at = float(op.expires_at)
        if not math.isfinite(expires_at):
            raise InvalidItem("expires_at must be a finite number")
        item[TTL_ATTRIBUTE] = _num(math.ceil(expires_at))
        item["exp"] = _num(expires_at)
    return item


def _item_from_dynamo(raw: dict[str, Any]) -> Item:
    exp = raw.get("exp")
    return Item(
        key=raw["sk"]["S"],
        value=bytes(raw["v"]["B"]),
        version=int(raw["ver"]["N"]),
        expires_at=float(exp["N"]) if exp is not None else None,
    )


def _condition(condition: Condition, now: float) -> dict[str, Any]:
    if isinstance(condition, Absent):
        # An expired item that TTL has not deleted yet counts as absent.
        return {
            "ConditionExpression": "attribute_not_exists(#pk) OR #exp <= :now",
            "ExpressionAttributeNames": {"#pk": "pk", "#exp": "exp"},
            "ExpressionAttributeValues": {":now": _num(now)},
        }
    if isinstance(condition, VersionIs):
        return {
            "ConditionExpression": "#ver = :ver AND (attribute_not_exists(#exp) OR #exp > :now)",
            "ExpressionAttributeNames": {"#ver": "ver", "#exp": "exp"},
            "ExpressionAttributeValues": {":ver": _num(int(condition.version)), ":now": _num(now)},
        }
    raise InvalidItem(f"unknown condition {condition!r}")


async def _query(client: Any, *, params: dict[str, Any]) -> Any:
    return await client.query(**params)


async def _scan(client: Any, *, params: dict[str, Any]) -> Any:
    return await client.scan(**params)


class _ScanPosition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A scan token: the table key of the last item a page evaluated (the next page's
    ``ExclusiveStartKey``)."""

    pk: str
    sk: str


_SCAN_POSITION = msgspec.json.Decoder(_ScanPosition)


def _scan_token(key: dict[str, Any]) -> str:
    return msgspec.json.encode(_ScanPosition(pk=key["pk"]["S"], sk=key["sk"]["S"])).decode()


def _scan_start(token: str | None) -> dict[str, Any] | None:
    """The ``ExclusiveStartKey`` a :func:`_scan_token` names; InvalidItem if it is not one."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise InvalidItem("malformed scan token")
    try:
        position = _SCAN_POSITION.decode(token)
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:
        raise InvalidItem("malformed scan token") from exc
    # DynamoDB keys are never empty strings (it would reject them as a validation error).
    if not position.pk or not position.sk:
        raise InvalidItem("malformed scan token")
    return _key(position.pk, position.sk)


def _validate_partition(partition: str) -> None:
    if not partition or len(partition.encode()) > PARTITION_MAX_BYTES:
        raise InvalidItem("partition is empty or too long")


def _sort_key_bounds(prefix: str, after: str | None, before: str | None) -> tuple[str | None, str | None]:
    """Inclusive ``(lo, hi)`` sort-key bounds (``BETWEEN`` is inclusive) covering the query's
    :func:`~northstar_adapters.common.key_range`.

    An exclusive lower bound is made inclusive exactly: the smallest string greater than ``k``
    is ``k + "\\x00"``. The exclusive upper bound stays as it is (a string has no greatest
    predecessor): the one item equal to it is dropped by the caller.
    """
    bounds = key_range(prefix, after, before)
    lo = bounds.low
    if lo is not None and not bounds.low_inclusive:
        lo += "\x00"
    return lo, bounds.high


# --- the store ----------------------------------------------------------------------------------


class DynamoItemStore(ItemStore):
    """An :class:`ItemStore` on one DynamoDB table (see module doc for layout and retries)."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        config: DynamoConfig,
        *,
        share_client: bool = True,
        clock: Callable[[], float] = time.time,
        client_wrapper: Callable[[Any], Any] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        """``client_wrapper`` wraps the aioboto3 client (fault injection in tests); ``sleep``
        waits between retries (tests record the backoff delays)."""
        self.config = config
        self.table = config.table
        self._share = share_client
        self._clock = clock
        self._wrap = client_wrapper
        self._sleep = sleep
        self._client: Any = None
        self._holder: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # --- connection ---------------------------------------------------------------------------

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        if self._closed:
            raise BackendUnavailable("store is closed")
        async with self._lock:
            if self._client is None:
                key = self.config.client_key
                if self._share:
                    holder = _CLIENTS.acquire(key, lambda: _Client(self.config))
                else:
                    holder = _Client(self.config)
                try:
                    client = await holder.open()
                except BaseException as exc:
                    if self._share:  # the next store to ask opens a new client
                        _CLIENTS.discard(key, holder)
                    if isinstance(exc, TRANSPORT_ERRORS):
                        raise BackendUnavailable(f"dynamodb client: {describe(exc)}") from exc
                    raise
                self._holder, self._loop = holder, asyncio.get_running_loop()
                self._client = self._wrap(client) if self._wrap else client
        return self._client

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            if self._client is None:
                return
            self._client = None
            holder, self._holder = self._holder, None
            if holder is None:
                return
            if not self._share or _CLIENTS.release(self.config.client_key, holder, loop=self._loop):
                await holder.close()

    # --- retries ------------------------------------------------------------------------------

    def _unavailable(
        self, what: str, exc: BaseException, attempts: int, note: str = ""
    ) -> BackendUnavailable:
        cause = describe(exc)
        reason = f"dynamodb {what} on {self.table}: {cause}"
        if attempts > 1:
            reason += f" (after {attempts} attempts)"
        if cause.startswith("ResourceNotFoundException"):
            reason += "; run `northstar provision`"
        return BackendUnavailable(reason + note, retry_after=max(1, math.ceil(self.config.max_delay)))

    async def _read(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run a read, retrying every transient failure."""

        async def once() -> Any:
            return await call(await self._get_client())

        def judge(exc: BaseException, attempts: int) -> float:
            outcome = classify(exc)
            if outcome is Outcome.INVALID:
                raise InvalidItem(describe(exc)) from exc
            if outcome is Outcome.FATAL:
                raise self._unavailable(what, exc, attempts) from exc
            return 0.0

        return await retrying(
            once,
            self.config.retry,
            errors=TRANSPORT_ERRORS,
            judge=judge,
            exhausted=lambda exc, attempts: self._unavailable(what, exc, attempts),
            sleep=self._sleep,
        )

    # --- the port -----------------------------------------------------------------------------

    async def get(self, partition: str, key: str) -> Item | None:
        _validate_partition(partition)
        validate_key(key)
        response = await self._read(
            "GetItem",
            lambda client: client.get_item(
                TableName=self.table, Key=_key(partition, key), ConsistentRead=True
            ),
        )
        raw = response.get("Item")
        if raw is None:
            return None
        item = _item_from_dynamo(raw)
        return item if is_live(item.expires_at, self._clock()) else None

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
        _validate_partition(partition)
        if limit <= 0:
            return []
        lo, hi = _sort_key_bounds(prefix, after, before)
        if lo is not None and hi is not None and lo >= hi:
            return []
        names = {"#pk": "pk"}
        values: dict[str, Any] = {":pk": {"S": partition}}
        expression = "#pk = :pk"
        if lo is not None or hi is not None:
            names["#sk"] = "sk"
        if lo is not None and hi is not None:
            expression += " AND #sk BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = {"S": lo}, {"S": hi}
        elif lo is not None:
            expression += " AND #sk >= :lo"
            values[":lo"] = {"S": lo}
        elif hi is not None:
            expression += " AND #sk <= :hi"
            values[":hi"] = {"S": hi}

        out: list[Item] = []
        start_key: dict[str, Any] | None = None
        now = self._clock()
        while len(out) < limit:
            # The item equal to ``hi`` (exclusive, but BETWEEN includes it) may take a slot: likely
            # when ``hi`` is ``before`` (a cursor's key), so one more is read then; expired items
            # are dropped below and the loop pages on, so the cost stays proportional to ``limit``
            # live items.
            page_limit = min(limit - len(out) + (1 if before is not None else 0), _QUERY_PAGE_MAX)
            params: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ConsistentRead": True,
                "ScanIndexForward": not descending,
                "Limit": page_limit,
            }
            if start_key is not None:
                params["ExclusiveStartKey"] = start_key
            response = await self._read("Query", functools.partial(_query, params=params))
            raw_items = response.get("Items", [])
            for raw in raw_items:
                item = _item_from_dynamo(raw)
                if (
                    (hi is not None and item.key >= hi)
                    or (after is not None and item.key <= after)
                    or not item.key.startswith(prefix)
                    or not is_live(item.expires_at, now)
                ):
                    continue
                out.append(item)
                if len(out) >= limit:
                    break
            start_key = response.get("LastEvaluatedKey")
            if start_key is None:
                # moto omits LastEvaluatedKey when a page fills exactly: continue after the last
                # item read. A short page is the end.
                if len(raw_items) < page_limit:
                    break
                start_key = {"pk": {"S": partition}, "sk": raw_items[-1]["sk"]}
        return out

    async def scan(self, prefix: str, *, token: str | None = None, limit: int = 100) -> ScanPage:
        """See :meth:`ItemStore.scan` and the module doc (a full table ``Scan``, administration only)."""
        limit = scan_limit(limit)
        start = _scan_start(token)
        now = self._clock()
        # Expiry is filtered with the core's clock, as ``get`` and ``query`` do: TTL deletes late.
        expression = "(attribute_not_exists(#exp) OR #exp > :now)"
        names = {"#exp": "exp"}
        values: dict[str, Any] = {":now": _num(now)}
        if prefix:  # an empty prefix names every partition (and is no valid attribute value)
            expression = "begins_with(#pk, :prefix) AND " + expression
            names["#pk"] = "pk"
            values[":prefix"] = {"S": prefix}
        out: list[tuple[str, Item]] = []
        evaluate = limit
        for _ in range(_SCAN_REQUESTS_PER_PAGE):
            params: dict[str, Any] = {
                "TableName": self.table,
                "FilterExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ConsistentRead": True,
                # Counts the items read before the filter: ``limit`` where the prefix is dense,
                # more after a request that found nothing (a sparse prefix in a shared table).
                "Limit": evaluate,
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            response = await self._read("Scan", functools.partial(_scan, params=params))
            raw_items = response.get("Items", [])
            if len(raw_items) > limit:
                # More matches than the page holds: it ends at its last returned item, so the
                # next page resumes with the first one left out.
                raw_items = raw_items[:limit]
                start = _key(raw_items[-1]["pk"]["S"], raw_items[-1]["sk"]["S"])
            else:
                start = response.get("LastEvaluatedKey")
            out = [(raw["pk"]["S"], _item_from_dynamo(raw)) for raw in raw_items]
            if out or start is None:
                break
            evaluate = min(evaluate * 4, _SCAN_EVALUATE_MAX)
        return ScanPage(out, None if start is None else _scan_token(start))

    async def write(self, partition: str, ops: Sequence[Op]) -> None:
        _validate_partition(partition)
        validate_ops(ops, self.capabilities)
        token = uuid.uuid4().hex
        # One timestamp for every attempt: a retried transaction must repeat its parameters
        # exactly to be recognised by its ClientRequestToken.
        now = self._clock()
        request = self._request(partition, ops, token, now)
        maybe_applied = False

        async def once() -> None:
            client = await self._get_client()
            try:
                await request(client)
            except ClientError as exc:
                index = condition_failure_index(exc)
                if index is None:
                    raise
                if maybe_applied and await self._applied(partition, ops, token):
                    return
                raise ConditionFailed(index) from None

        def judge(exc: BaseException, attempts: int) -> float:
            nonlocal maybe_applied
            outcome = classify(exc)
            if outcome is Outcome.INVALID:
                raise InvalidItem(describe(exc)) from exc
            if outcome is Outcome.AMBIGUOUS:
                maybe_applied = True
            if outcome is Outcome.FATAL:
                raise unavailable(exc, attempts) from exc
            return 0.0

        def unavailable(exc: BaseException, attempts: int) -> BackendUnavailable:
            note = "; the write may have applied" if maybe_applied else ""
            return self._unavailable("write", exc, attempts, note)

        await retrying(
            once,
            self.config.retry,
            errors=TRANSPORT_ERRORS,
            judge=judge,
            exhausted=unavailable,
            sleep=self._sleep,
        )

    def _request(
        self, partition: str, ops: Sequence[Op], token: str, now: float
    ) -> Callable[[Any], Awaitable[Any]]:
        if len(ops) == 1:
            op = ops[0]
            extra = _condition(op.condition, now) if op.condition is not None else {}
            if isinstance(op, Put):
                item = _item_to_dynamo(partition, op, token)
                return lambda client: client.put_item(TableName=self.table, Item=item, **extra)
            key = _key(partition, op.key)
            return lambda client: client.delete_item(TableName=self.table, Key=key, **extra)
        items: list[dict[str, Any]] = []
        for op in ops:
            extra = _condition(op.condition, now) if op.condition is not None else {}
            if isinstance(op, Put):
                items.append(
                    {"Put": {"TableName": self.table, "Item": _item_to_dynamo(partition, op, token), **extra}}
                )
            elif isinstance(op, Delete):
                items.append({"Delete": {"TableName": self.table, "Key": _key(partition, op.key), **extra}})
            else:  # Check: a ConditionCheck in the same transaction
                check = {"TableName": self.table, "Key": _key(partition, op.key), **extra}
                items.append({"ConditionCheck": check})
        return lambda client: client.transact_write_items(TransactItems=items, ClientRequestToken=token)

    async def _applied(self, partition: str, ops: Sequence[Op], token: str) -> bool:
        """Whether an earlier attempt of this write call applied (one of its puts bears ``token``)."""
        put = next((op for op in ops if isinstance(op, Put)), None)
        if put is None:
            return False
        response = await self._read(
            "GetItem",
            lambda client: client.get_item(
                TableName=self.table, Key=_key(partition, put.key), ConsistentRead=True
            ),
        )
        raw = response.get("Item")
        return raw is not None and raw.get("wt", {}).get("S") == token


def open_store(target: Target) -> ItemStore:
    """A store on the target's table; stores with the same endpoint and region share a client.
    ``ValueError`` (naming the field) for params the connection may not have."""
    return DynamoItemStore(DynamoConfig.from_target(target))
