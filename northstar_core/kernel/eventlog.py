"""The event spine's log: each event stored once per index, in one atomic batch.

Layout inside one partition (one partition per tenant and mode):

* ``ev#<event_id>``                            — the event (list by time = key range);
* ``er#<run_id>#<event_id>``                   — replay by run, in order;
* ``et#<event_type>#<event_id>``               — list by type;
* ``es#<source>#<event_id>``                   — list by source;
* ``ex#<event_type>#<source>#<event_id>``      — list by type and source;
* ``i#<key>``                                  — idempotency record (:mod:`~northstar_core.kernel.
  idempotency`), whose result names the event first appended with the key.

Index items carry the whole event (not a pointer), so a page costs one range query whatever
the length of the history. Event ids are UUIDv7 strings: time-ordered, so key order within an
index is append-time order, and a time range is a key range of ids.

Every item is written under an ``Absent`` condition: nothing is ever overwritten, and an event
is either stored with all its index items (and its idempotency record) or not at all.
"""

from __future__ import annotations

from typing import Final

import msgspec

from northstar_core.errors import NorthstarError
from northstar_core.kernel.idempotency import lookup, record_op
from northstar_core.storage import MAX_VALUE_BYTES, Absent, ConditionFailed, ItemStore, Op, Put

EVENT_PREFIX: Final = "ev#"
RUN_PREFIX: Final = "er#"
TYPE_PREFIX: Final = "et#"
SOURCE_PREFIX: Final = "es#"
TYPE_SOURCE_PREFIX: Final = "ex#"
# The largest encoded event the log stores (one item per index holds all of it).
MAX_EVENT_BYTES: Final = MAX_VALUE_BYTES


class EventIdTaken(Exception):
    """An item of the event's id already exists (another event holds the id); nothing written."""


class _Appended(msgspec.Struct, frozen=True):
    event_id: str


def index_prefix(
    *, run_id: str | None = None, event_type: str | None = None, source: str | None = None
) -> str:
    """The key prefix of the index serving a filter (by run; by type and/or source; else all)."""
    if run_id is not None:
        return f"{RUN_PREFIX}{run_id}#"
    if event_type is not None and source is not None:
        return f"{TYPE_SOURCE_PREFIX}{event_type}#{source}#"
    if event_type is not None:
        return f"{TYPE_PREFIX}{event_type}#"
    if source is not None:
        return f"{SOURCE_PREFIX}{source}#"
    return EVENT_PREFIX


class EventLog:
    """The spine's items in one partition of an item store (see module doc)."""

    def __init__(self, store: ItemStore, partition: str, domain: str) -> None:
        self.store = store
        self.partition = partition
        self.domain = domain

    async def get(self, event_id: str) -> bytes | None:
        item = await self.store.get(self.partition, EVENT_PREFIX + event_id)
        return item.value if item is not None else None

    async def replayed(self, key: str, fp: str) -> bytes | None:
        """The event first appended with idempotency ``key``, or ``None`` when it is unused.

        422 ``<domain>.idempotency_mismatch`` when the key was used for another event.
        """
        result = await lookup(self.store, self.partition, key, fp, self.domain)
        if result is None:
            return None
        event_id = msgspec.json.decode(result, type=_Appended).event_id
        event = await self.get(event_id)
        if event is None:  # written in one batch with the record: cannot be absent
            raise NorthstarError(
                f"{self.domain}.idempotency_record_orphaned",
                "the idempotency record's event is missing; the backend lost data",
                503,
                details={"idempotency_key": key},
            )
        return event

    async def append(
        self,
        event_id: str,
        data: bytes,
        *,
        run_id: str,
        event_type: str,
        source: str,
        now: float,
        idempotency_key: str | None = None,
        payload_fingerprint: str = "",
    ) -> bytes | None:
        """Store the event ``data`` under every index, atomically.

        Returns ``None`` once written. With ``idempotency_key`` its record commits in the same
        batch; if a concurrent attempt with the key won, that attempt's event is returned
        instead (nothing written). :class:`EventIdTaken` when the id is already in use.
        The caller has looked the key up beforehand (:meth:`replayed`).
        """
        keys = (
            EVENT_PREFIX + event_id,
            index_prefix(run_id=run_id) + event_id,
            index_prefix(event_type=event_type) + event_id,
            index_prefix(source=source) + event_id,
            index_prefix(event_type=event_type, source=source) + event_id,
        )
        ops: list[Op] = [Put(key, data, condition=Absent()) for key in keys]
        if idempotency_key is not None:
            result = msgspec.json.encode(_Appended(event_id))
            ops.append(record_op(idempotency_key, payload_fingerprint, result, now))
        try:
            await self.store.write(self.partition, ops)
        except ConditionFailed:
            if idempotency_key is not None:
                prior = await self.replayed(idempotency_key, payload_fingerprint)
                if prior is not None:  # a concurrent attempt with the same key won
                    return prior
            raise EventIdTaken(event_id) from None
        return None

    async def read(
        self,
        prefix: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> list[bytes]:
        """Events of the index ``prefix`` (:func:`index_prefix`) with ``after < event_id <
        before`` (ids or id bounds), in id order, at most ``limit``."""
        items = await self.store.query(
            self.partition,
            prefix,
            after=prefix + after if after is not None else None,
            before=prefix + before if before is not None else None,
            limit=limit,
        )
        return [item.value for item in items]


__all__ = [
    "MAX_EVENT_BYTES",
    "EventIdTaken",
    "EventLog",
    "index_prefix",
]
