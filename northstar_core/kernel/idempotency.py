"""The one idempotency rule: a retried request is answered from a record, never applied twice.

A record ``i#<key>`` lives in the same partition as whatever the request writes and commits in
the same atomic batch (its ``Put`` carries an ``Absent`` condition), so of two attempts with one
key exactly one writes; the other finds the record. The record holds the request's payload
fingerprint and the original result: a repeat with the same payload gets that result back, a
repeat with a different payload is refused (422 ``<domain>.idempotency_mismatch``).

Callers look a key up at most once per request (:func:`lookup`) and hand the outcome to the
writer, which then skips its own read; a conflict on the record's ``Absent`` condition is the
only case that reads it again (a concurrent attempt with the same key won).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from northstar_core.errors import idempotency_mismatch
from northstar_core.storage import Absent, ItemStore, Put

IDEM_PREFIX: Final = "i#"


def fingerprint(payload: Any) -> str:
    """A stable digest of a request payload (canonical JSON, sorted keys)."""
    canonical = msgspec.json.encode(payload, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


class IdempotencyRecord(msgspec.Struct, frozen=True):
    fingerprint: str
    result: msgspec.Raw
    created_at: float


def idem_key(key: str) -> str:
    return IDEM_PREFIX + key


def record_op(key: str, fp: str, result: bytes, now: float, *, expires_at: float | None = None) -> Put:
    """The batch operation that stores ``result`` for ``key`` (created once, never replaced).

    ``expires_at``: the record goes when what it guards goes. A result may hold a copy of the
    data written (a chat message's content), which must not outlive the data's retention; a
    retry after that is a new request."""
    record = IdempotencyRecord(fp, msgspec.Raw(result), now)
    return Put(idem_key(key), msgspec.json.encode(record), condition=Absent(), expires_at=expires_at)


async def lookup(store: ItemStore, partition: str, key: str, fp: str, domain: str) -> bytes | None:
    """The stored result for ``key`` in ``partition``, or ``None`` when the key is unused.

    422 ``<domain>.idempotency_mismatch`` when the key was used with another payload.
    """
    item = await store.get(partition, idem_key(key))
    if item is None:
        return None
    record = msgspec.json.decode(item.value, type=IdempotencyRecord)
    if record.fingerprint != fp:
        raise idempotency_mismatch(domain, key)
    return bytes(record.result)


__all__ = ["IDEM_PREFIX", "IdempotencyRecord", "fingerprint", "idem_key", "lookup", "record_op"]
