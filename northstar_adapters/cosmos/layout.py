"""How core items map onto Cosmos DB documents and queries (pure functions, no SDK).

One container per resource kind, partition key path ``/pk``. A document is::

    {"id": <encoded key>, "pk": <partition>, "sk": <raw key>, "v": <base64 value>,
     "ver": <version>, "expires_at": <epoch seconds | null>, "ttl": <seconds, only if expiring>}

* ``id`` must be unique per logical partition and may not contain ``/ \\ ? #``; keys may contain
  anything, so the id is the key's UTF-8 bytes in unpadded URL-safe base64 (alphabet
  ``A-Z a-z 0-9 - _``: safe in URLs and every Cosmos id rule, reversible, and at most 683
  characters for a 512-byte key, below Cosmos' 1,023-byte id limit).
* ``sk`` keeps the raw key so that ``ORDER BY c.sk`` and ``STARTSWITH``/range filters give the
  core's ordering; ``pk`` is the core partition, so one stream's entries and its idempotency
  records share a logical partition and commit in one transactional batch.
* ``pk`` and ``sk`` together order a scan across partitions (``ORDER BY c.pk, c.sk``, served by
  the composite index :data:`SCAN_INDEX`); its resume position is the last (``pk``, ``sk``) read.
* ``ttl`` is Cosmos' native per-item TTL (the container has ``default_ttl = -1``: items never
  expire unless they say so). Cosmos deletes late (the emulator never), so ``expires_at`` is
  also filtered on every read.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Final

from northstar_core.storage import Item, Put

PARTITION_KEY_PATH: Final = "/pk"
PARTITION_FIELD: Final = "pk"

# A cross-partition scan orders by (partition, key): Cosmos serves an ORDER BY on two fields
# only from a composite index over exactly those fields in that order (the emulator enforces
# it too).
SCAN_INDEX: Final[tuple[tuple[str, str], ...]] = (("/pk", "ascending"), ("/sk", "ascending"))

# The value blob is never filtered on: keep it out of the index (cheaper writes on real Cosmos).
INDEXING_POLICY: Final[dict[str, Any]] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": "/v/?"}, {"path": '/"_etag"/?'}],
    "compositeIndexes": [[{"path": path, "order": order} for path, order in SCAN_INDEX]],
}


def encode_id(key: str) -> str:
    """The Cosmos ``id`` for a core key (reversible, see module doc)."""
    return base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode("ascii")


def decode_id(doc_id: str) -> str:
    """The core key of a Cosmos ``id`` made by :func:`encode_id`."""
    try:
        padded = doc_id + "=" * (-len(doc_id) % 4)
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise ValueError(f"not a Northstar document id: {doc_id!r}") from exc


def ttl_seconds(expires_at: float, now: float) -> int:
    """Cosmos' per-item ``ttl`` (a positive whole number of seconds) for an expiry time."""
    return max(1, math.ceil(expires_at - now))


def to_document(partition: str, op: Put, now: float) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": encode_id(op.key),
        PARTITION_FIELD: partition,
        "sk": op.key,
        "v": base64.b64encode(op.value).decode("ascii"),
        "ver": op.version,
        "expires_at": op.expires_at,
    }
    if op.expires_at is not None:
        doc["ttl"] = ttl_seconds(op.expires_at, now)
    return doc


def from_document(doc: dict[str, Any]) -> Item:
    expires_at = doc.get("expires_at")
    return Item(
        key=str(doc["sk"]),
        value=base64.b64decode(doc["v"]),
        version=int(doc["ver"]),
        expires_at=float(expires_at) if expires_at is not None else None,
    )


def is_doc_live(doc: dict[str, Any], now: float) -> bool:
    expires_at = doc.get("expires_at")
    return expires_at is None or float(expires_at) > now


def range_query(
    partition: str,
    prefix: str,
    *,
    after: str | None,
    before: str | None,
    descending: bool,
    now: float,
) -> tuple[str, list[dict[str, Any]]]:
    """A parameterised, partition-scoped range query ordered by key.

    ``c.pk = @pk`` stays in the SQL even though the SDK also scopes the query to the partition:
    the emulator ignores the SDK's partition key, and on real Cosmos the clause is free.
    Expired items are filtered by the server too, so a page of ``limit`` is ``limit`` live items.
    """
    clauses = ["c.pk = @pk"]
    params: list[dict[str, Any]] = [{"name": "@pk", "value": partition}]
    if prefix:
        clauses.append("STARTSWITH(c.sk, @prefix)")
        params.append({"name": "@prefix", "value": prefix})
    if after is not None:
        clauses.append("c.sk > @after")
        params.append({"name": "@after", "value": after})
    if before is not None:
        clauses.append("c.sk < @before")
        params.append({"name": "@before", "value": before})
    clauses.append("(IS_NULL(c.expires_at) OR c.expires_at > @now)")
    params.append({"name": "@now", "value": now})
    order = "DESC" if descending else "ASC"
    sql = (
        "SELECT c.sk, c.v, c.ver, c.expires_at FROM c WHERE "
        + " AND ".join(clauses)
        + f" ORDER BY c.sk {order}"
    )
    return sql, params


def has_scan_index(policy: dict[str, Any] | None) -> bool:
    """Whether an indexing policy (as Cosmos returns it) holds the composite :data:`SCAN_INDEX`."""
    for composite in (policy or {}).get("compositeIndexes") or []:
        paths = tuple((str(p.get("path", "")), str(p.get("order") or "ascending").lower()) for p in composite)
        if paths == SCAN_INDEX:
            return True
    return False


def with_scan_index(policy: dict[str, Any] | None) -> dict[str, Any]:
    """``policy`` (an existing container's) with :data:`SCAN_INDEX` added, all else kept."""
    updated = dict(policy or INDEXING_POLICY)
    if not has_scan_index(updated):
        composites = [list(c) for c in updated.get("compositeIndexes") or []]
        composites.append([{"path": path, "order": order} for path, order in SCAN_INDEX])
        updated["compositeIndexes"] = composites
    return updated


def scan_query(
    prefix: str, *, after: tuple[str, str] | None, limit: int, now: float
) -> tuple[str, list[dict[str, Any]]]:
    """A parameterised cross-partition query: the first ``limit`` live items of the partitions
    named ``prefix...`` that come after the position ``after`` (partition, key), in
    (partition, key) order.

    The resume condition is on the raw ``pk``/``sk`` fields the order is on, so each page starts
    exactly after the last item the previous one read. Expired items are filtered by the server,
    as in :func:`range_query`.
    """
    clauses: list[str] = []
    params: list[dict[str, Any]] = [{"name": "@limit", "value": limit}]
    if prefix:
        clauses.append("STARTSWITH(c.pk, @prefix)")
        params.append({"name": "@prefix", "value": prefix})
    if after is not None:
        clauses.append("(c.pk > @after_pk OR (c.pk = @after_pk AND c.sk > @after_sk))")
        params.append({"name": "@after_pk", "value": after[0]})
        params.append({"name": "@after_sk", "value": after[1]})
    clauses.append("(IS_NULL(c.expires_at) OR c.expires_at > @now)")
    params.append({"name": "@now", "value": now})
    sql = (
        "SELECT TOP @limit c.pk, c.sk, c.v, c.ver, c.expires_at FROM c WHERE "
        + " AND ".join(clauses)
        + " ORDER BY c.pk ASC, c.sk ASC"
    )
    return sql, params
