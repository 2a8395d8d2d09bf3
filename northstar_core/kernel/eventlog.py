"""The event spine's log: time-bucketed and sharded, each event written as two items at once.

Layout under ``<base>`` (one per tenant and mode, ``<tenant>|<mode>|spine``), on
:mod:`~northstar_core.kernel.buckets`:

* ``<base>|<bucket>|<shard>`` — the bucket is the UTC hour of the event id, the shard
  ``shard_of(run_id)``. Two items per event, in one atomic batch, both ``Absent``:
  ``ev#<event_id>`` (time order) and ``er#<run_id>#<event_id>`` (the run's order). Every event
  of a run in one hour is in one partition, so a run replays from one partition per bucket.
* ``<base>|buckets`` — the directory of buckets (and their shard counts).
* ``<base>|runs|<slot>`` — ``r#<run_id>``: the first bucket of each run (``slot`` =
  ``shard_of(run_id, RUN_SLOTS)``), written once per run before its first event, lowered if an
  earlier event of the run lands later; replay starts there.
* ``<base>|keys|<slot>`` — ``i#<key>``: the idempotency claim of a keyed append (``slot`` =
  ``shard_of(key, KEY_SLOTS)``): the payload fingerprint and the event's *head* — the event
  without its payload (id, run, time, identity), which the fingerprint vouches for. It is
  written *before* the event (``Absent``): of concurrent attempts with one key exactly one
  claims it, and every attempt — the winner, a loser, a retry after a crash between the two
  writes — then writes the claimed event (head + its own payload) under the claimed id; the
  first of those writes stores it (``Absent``) and the others get the stored event back. A
  claim expires after ``IDEMPOTENCY_SECONDS``; a retry after that is a new event.

Retention: an event may expire (``expires_at``, the same on both its items, fixed when it is
written from what ``append``'s ``expiry`` says of it); the directory entry of its hour then
lives at least as long (see :mod:`~northstar_core.kernel.buckets`). Reads skip expired events
like events that never were: a cursor taken before an expiry resumes after its position, past
whatever expired meanwhile. Run registry entries and idempotency claims keep their own lifetimes.

Events are filtered by type and source while scanning the time order (no index copies), so an
event costs two items, not one per filter; a filtered page scans a bounded number of buckets
and may come back short with a cursor where the scan stopped.

Run ids that name their own start need no registry entry (:func:`named_start`): the server's
``request:<YYYYMMDDHH>:<request id>`` runs and UUIDv7 run ids (an event of such a run before
the named hour is registered as any other). Other run ids cost one registry write per run and
process, and the registry is the one spine partition set that grows with the tenant's history:
by one ~100-byte item per such run, spread over ``RUN_SLOTS`` partitions.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Final

import msgspec

from northstar_core.errors import NorthstarError, idempotency_mismatch
from northstar_core.kernel.buckets import (
    DEFAULT_SHARDS,
    BucketedLog,
    Scanned,
    bucket_of,
    remembered,
    shard_of,
)
from northstar_core.storage import MAX_VALUE_BYTES, Absent, ConditionFailed, ItemStore, Put, VersionIs

EVENT_PREFIX: Final = "ev#"
RUN_PREFIX: Final = "er#"
RUN_ENTRY_PREFIX: Final = "r#"
CLAIM_PREFIX: Final = "i#"
# Slots spread a tenant's run registry and idempotency claims over partitions (one hashed
# slot per run or key), so that neither becomes the tenant's hottest partition.
RUN_SLOTS: Final = 64
KEY_SLOTS: Final = 64
# How long a process trusts a run start it registered or read before checking it again.
RUN_RECHECK_SECONDS: Final = 60.0
# How long an idempotency key is remembered: retries come within minutes; a day bounds the
# claims a partition holds to one day of keyed appends.
IDEMPOTENCY_SECONDS: Final = 86_400.0
# The largest encoded event the log stores (one item holds all of it).
MAX_EVENT_BYTES: Final = MAX_VALUE_BYTES
REQUEST_RUN: Final = re.compile(r"request:([0-9]{10}):.*", re.DOTALL)


def named_start(run_id: str) -> str | None:
    """The first bucket a run id names, if it names one: ``request:<YYYYMMDDHH>:…`` (the
    server's runs outside a run), or a UUIDv7 — alone or as the id's last ``:`` segment — whose
    time is the run's start (what agents that mint their run ids as UUIDv7s get for free)."""
    named = REQUEST_RUN.fullmatch(run_id)
    if named:
        return named.group(1)
    tail = run_id.rsplit(":", 1)[-1]
    if len(tail) != 36:
        return None
    try:
        parsed = uuid.UUID(tail)
    except ValueError:
        return None
    return bucket_of(str(parsed)) if parsed.version == 7 else None


class EventIdTaken(Exception):
    """An item of the event's id already exists (another event holds the id); nothing written."""


class _Claim(msgspec.Struct, frozen=True):
    fingerprint: str
    head: msgspec.Raw  # the event without its payload: id, run, time, identity
    created_at: float


class _RunStart(msgspec.Struct, frozen=True):
    bucket: str


def request_run_id(bucket: str, request_id: str) -> str:
    """The run id of a server event made outside any run: it names its first bucket."""
    return f"request:{bucket}:{request_id}"


class EventLog:
    """The spine's items under ``base`` in an item store (see module doc)."""

    def __init__(self, store: ItemStore, base: str, domain: str, *, shards: int = DEFAULT_SHARDS) -> None:
        self.store = store
        self.base = base
        self.domain = domain
        self.log = BucketedLog(store, base, domain=domain, shards=shards)
        self._runs = remembered(store)

    def _slot(self, kind: str, key: str, slots: int) -> str:
        return f"{self.base}|{kind}|{shard_of(key, slots):02d}"

    # --- writing -------------------------------------------------------------------------

    async def _start_run(self, run_id: str, bucket: str) -> None:
        """Record ``bucket`` as the run's first unless an earlier one is recorded."""
        named = named_start(run_id)
        if named is not None and named <= bucket:
            return  # the run id names a start no later than this event
        known = self._runs.get((self.base, RUN_ENTRY_PREFIX + run_id))
        if known is not None and known <= bucket:
            return
        partition = self._slot("runs", run_id, RUN_SLOTS)
        key = RUN_ENTRY_PREFIX + run_id
        value = msgspec.json.encode(_RunStart(bucket))
        for _ in range(8):
            try:
                await self.store.write(partition, [Put(key, value, condition=Absent())])
                self._runs.put((self.base, key), bucket, RUN_RECHECK_SECONDS)
                return
            except ConditionFailed:
                item = await self.store.get(partition, key)
                if item is None:
                    continue
                stored = msgspec.json.decode(item.value, type=_RunStart).bucket
                if stored <= bucket:
                    self._runs.put((self.base, key), stored, RUN_RECHECK_SECONDS)
                    return
                try:  # an earlier event of the run: the run starts earlier than recorded
                    lowered = Put(key, value, version=item.version + 1, condition=VersionIs(item.version))
                    await self.store.write(partition, [lowered])
                    self._runs.put((self.base, key), bucket, RUN_RECHECK_SECONDS)
                    return
                except ConditionFailed:
                    continue
        raise NorthstarError(
            f"{self.domain}.contention", "could not record the run's start; retry", 503,
            headers={"Retry-After": "1"},
        )

    async def _write(
        self,
        event_id: str,
        data: bytes,
        run_id: str,
        *,
        claimed: bool = False,
        expiry: Callable[[bytes], float | None] | None = None,
    ) -> bytes:
        """Write the event's two items, both expiring when ``expiry(data)`` says (never without
        it); returns the event as stored.

        :class:`EventIdTaken` when the id holds another event — unless the id is ``claimed``
        (an idempotency claim names it): then whatever is stored under it is this key's event,
        written by an earlier or concurrent attempt, and is returned.
        """
        bucket = bucket_of(event_id)
        expires_at = expiry(data) if expiry is not None else None
        try:
            shards, _ = await asyncio.gather(
                self.log.open_bucket(bucket, expires_at), self._start_run(run_id, bucket)
            )
            partition = self.log.partition(bucket, shard_of(run_id, shards))
            ops = [
                Put(EVENT_PREFIX + event_id, data, expires_at=expires_at, condition=Absent()),
                Put(f"{RUN_PREFIX}{run_id}#{event_id}", data, expires_at=expires_at, condition=Absent()),
            ]
            try:
                await self.store.write(partition, ops)
            except ConditionFailed:
                existing = await self.store.get(partition, EVENT_PREFIX + event_id)
                if existing is not None and (claimed or existing.value == data):
                    return existing.value
                raise EventIdTaken(event_id) from None
        except EventIdTaken:
            raise
        except Exception:
            # the backend may have lost what this process remembers (a restart, an erasure)
            self._runs.clear()
            raise
        return data

    async def append(
        self,
        event_id: str,
        data: bytes,
        *,
        run_id: str,
        now: float,
        idempotency_key: str | None = None,
        payload_fingerprint: str = "",
        head: bytes = b"",
        rebuild: Callable[[bytes], bytes] | None = None,
        expiry: Callable[[bytes], float | None] | None = None,
    ) -> bytes:
        """Store the event ``data`` (both items, atomically), at most once per key; returns
        the event as stored.

        ``expiry(event)`` is when a stored event expires (``None``: never; without ``expiry``
        nothing expires), asked of the event actually written — for a completed claim, the
        claimed event with its own time — so every attempt gives an event the same expiry.

        With ``idempotency_key`` the key is claimed first, the claim holding ``head`` (the
        event without its payload; the payload is what the fingerprint vouches for). If an
        earlier attempt claimed the key, its event is returned — completed first
        from ``rebuild(claimed head)`` if that attempt stopped before writing it — or 422
        ``<domain>.idempotency_mismatch`` when the key was used for another request.
        :class:`EventIdTaken` when the id is already in use by another event.
        """
        if idempotency_key is None:
            return await self._write(event_id, data, run_id, expiry=expiry)
        partition = self._slot("keys", idempotency_key, KEY_SLOTS)
        key = CLAIM_PREFIX + idempotency_key
        claim = msgspec.json.encode(_Claim(payload_fingerprint, msgspec.Raw(head), now))
        for _ in range(4):
            try:
                await self.store.write(
                    partition,
                    [Put(key, claim, expires_at=now + IDEMPOTENCY_SECONDS, condition=Absent())],
                )
            except ConditionFailed:
                item = await self.store.get(partition, key)
                if item is None:  # it expired in between: claim it again
                    continue
                prior = msgspec.json.decode(item.value, type=_Claim)
                if prior.fingerprint != payload_fingerprint:
                    raise idempotency_mismatch(self.domain, idempotency_key) from None
                located = msgspec.json.decode(prior.head, type=_Located)
                full = rebuild(bytes(prior.head)) if rebuild is not None else data
                return await self._write(located.event_id, full, located.run_id, claimed=True, expiry=expiry)
            return await self._write(event_id, data, run_id, claimed=True, expiry=expiry)
        raise NorthstarError(
            f"{self.domain}.contention", "could not claim the idempotency key; retry", 503,
            headers={"Retry-After": "1"},
        )

    # --- reading -------------------------------------------------------------------------

    async def get(self, event_id: str) -> bytes | None:
        item = await self.log.find(EVENT_PREFIX, event_id)
        return item.value if item is not None else None

    async def run_start(self, run_id: str) -> str | None:
        """The first bucket of the run, ``None`` for a run with no event."""
        item = await self.store.get(self._slot("runs", run_id, RUN_SLOTS), RUN_ENTRY_PREFIX + run_id)
        registered = msgspec.json.decode(item.value, type=_RunStart).bucket if item is not None else None
        named = named_start(run_id)
        if named is not None:
            # an event before the named hour (a client's clock, a crafted id) was registered
            return min(named, registered) if registered is not None else named
        return registered

    async def read_run(self, run_id: str, *, after: str | None, limit: int, now: float) -> Scanned:
        """The run's events after the id ``after``, in order, at most ``limit``."""
        start = None
        if after is None:
            start = await self.run_start(run_id)
            if start is None:
                return Scanned([], [], None, False)
        return await self.log.scan(
            f"{RUN_PREFIX}{run_id}#",
            after=after,
            before=None,
            limit=limit,
            now=now,
            shards=lambda count: (shard_of(run_id, count),),
            start_bucket=start,
        )

    async def read_time(
        self,
        *,
        after: str | None,
        before: str | None,
        limit: int,
        now: float,
        match: Callable[[bytes], bool] | None = None,
    ) -> Scanned:
        """Events with ``after < id < before`` in id order whose data ``match`` accepts."""
        accepts = (lambda item: match(item.value)) if match is not None else None
        return await self.log.scan(
            EVENT_PREFIX, after=after, before=before, limit=limit, now=now, match=accepts
        )


class _Located(msgspec.Struct):
    event_id: str
    run_id: str


__all__ = [
    "IDEMPOTENCY_SECONDS",
    "MAX_EVENT_BYTES",
    "EventIdTaken",
    "EventLog",
    "named_start",
    "request_run_id",
]
