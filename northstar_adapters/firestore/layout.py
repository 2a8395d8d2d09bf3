"""How items map onto Firestore documents (pure functions, no SDK).

Layout, for resource kind ``K`` and collection prefix ``P`` (default ``northstar_``)::

    P + K / <doc_id(partition)> / items / <doc_id(key)>
        sk          string     the raw item key (the only indexed field: range + order_by)
        v           bytes      the value
        ver         integer    the core's version
        exp         double     Item.expires_at exactly as written (only when set)
        expires_at  timestamp  the same instant; the field the TTL policy watches
        w           string     id of the write() call that last wrote the document

One partition is one parent document, so a stream's entries and its idempotency records live
in one ``items`` subcollection (one atomic batch, one range read per page) and partitions of
different tenants never share a document. The parent document itself is never written.

``exp`` duplicates ``expires_at`` because a Firestore timestamp keeps microseconds only and the
core hands items back exactly as it stored them. ``w`` lets a retried batch recognise that its
first, unacknowledged attempt did commit (see ``store.FirestoreItemStore.write``).
"""

from __future__ import annotations

from typing import Final

ITEMS: Final = "items"
DOC_ID_MAX_BYTES: Final = 1500

# Every field the adapter writes; the index file lists the ones it must (not) index.
F_KEY: Final = "sk"
F_VALUE: Final = "v"
F_VERSION: Final = "ver"
F_EXPIRES: Final = "exp"
F_TTL: Final = "expires_at"
F_WRITE: Final = "w"
ALL_FIELDS: Final = (F_KEY, F_VALUE, F_VERSION, F_EXPIRES, F_TTL, F_WRITE)

_ESC: Final = "~"

# The smallest document id Firestore orders (numeric ids sort before string ids); the SDK's own
# recursive queries bound a collection with it. A reference bound only, never written.
MIN_DOC_ID: Final = "__id-9223372036854775808__"
# Appended to an id (or a collection id), the first id after it and after all its descendants:
# document names order segment by segment, and no string lies between ``s`` and ``s + NUL``.
AFTER: Final = "\0"


def doc_id(raw: str) -> str:
    """A valid Firestore document id for ``raw``, reversibly (see :func:`raw_id`).

    Firestore forbids ``/``, the ids ``.`` and ``..``, ids matching ``__.*__`` and the empty id.
    ``~`` is the escape character: ``~~`` is ``~``, ``~s`` is ``/``; a leading ``.`` or ``_``
    is written ``~.`` / ``~_`` and the empty string ``~e``. Each character grows to at most two
    bytes, so any key the core accepts (≤ 512 bytes) fits in the 1500-byte id limit.
    """
    if raw == "":
        return _ESC + "e"
    out = raw.replace(_ESC, _ESC + _ESC).replace("/", _ESC + "s")
    if out[0] in "._":
        out = _ESC + out
    return out


def doc_id_prefix(prefix: str) -> str:
    """What the doc id of every raw id starting with ``prefix`` starts with, and only theirs.

    Escaping is character by character, except the first character's ``.``/``_`` rule, which
    depends on that character alone, and the empty id (``~e``), which starts only with the empty
    prefix. :func:`doc_id` of a non-empty prefix is therefore a prefix of the doc id of every raw
    id extending it; and since the escape sequences are read left to right without look-ahead,
    a doc id that starts with it decodes to a raw id that starts with ``prefix``.
    """
    return doc_id(prefix) if prefix else ""


def raw_id(encoded: str) -> str:
    """Inverse of :func:`doc_id`."""
    if encoded == _ESC + "e":
        return ""
    out: list[str] = []
    i = 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == _ESC:
            nxt = encoded[i + 1]
            out.append({"~": "~", "s": "/", ".": ".", "_": "_"}[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)

