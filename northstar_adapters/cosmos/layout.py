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

# The value blob is never filtered on: keep it out of the index (cheaper writes on real Cosmos).
INDEXING_POLICY: Final[dict[str, Any]] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    "excludedPaths": [{"path": "/v/?"}, {"path": '/"_etag"/?'}],
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
