"""One page shape and one page-after-cursor rule for every list the engines answer.

Every paged read returns a :class:`Page` (``items``, ``next_cursor``, ``has_more``), and its
wire form is exactly ``msgspec.to_builtins(page)``, so the HTTP client decodes the same type
the library returns.

The rule (:func:`page_of`): a read asks the store for ``limit + 1`` items after the cursor's
position; the extra item only says whether there is more (``has_more``) and is never returned.
``next_cursor`` continues after the last returned item. Two kinds of list differ only at the end:

* a *stream* (chat messages, timeline events, usage entries) is resumable: at its end
  ``next_cursor`` is still the position after the last item — or, on an empty page, the
  position the read started from — so a client polls it for what comes next;
* a *listing* (records, notes) ends: ``next_cursor`` is ``None`` once ``has_more`` is false.

The time-bucketed logs (the spine, the analytics view) page by the same rule as streams, with
one addition for reads that scan: :func:`~northstar_core.kernel.buckets.page_of_scan` — a page
may be short while ``has_more`` is true, its cursor where the scan stopped.

For items that are themselves resume positions (chat messages, canvas and timeline events),
the item carries its own cursor as ``.cursor`` (a field of the item, or the item's id when
that id *is* the cursor). Items are never paired with their cursor in tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")
S = TypeVar("S")


class Page(msgspec.Struct, Generic[T]):
    """One page of a list: ``next_cursor`` continues after the last item (exclusive)."""

    items: list[T]
    next_cursor: str | None
    has_more: bool


def page_of(
    fetched: Sequence[S],
    limit: int,
    cursor_of: Callable[[S], str],
    convert: Callable[[S], T],
    *,
    resume_from: str | None = None,
    stream: bool = False,
) -> Page[T]:
    """The page for ``fetched`` (up to ``limit + 1`` items read after the cursor's position).

    ``stream`` makes the list resumable (see module doc): its ``next_cursor`` never ends, and
    an empty page answers ``resume_from``, the position the read started after.
    """
    has_more = len(fetched) > limit
    kept = fetched[:limit]
    if kept and (has_more or stream):
        next_cursor: str | None = cursor_of(kept[-1])
    elif stream:
        next_cursor = resume_from
    else:
        next_cursor = None
    return Page([convert(item) for item in kept], next_cursor, has_more)


__all__ = ["Page", "page_of"]
