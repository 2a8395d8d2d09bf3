"""One page shape for every list the engines answer.

Every paged read returns a :class:`Page` (``items``, ``next_cursor``, ``has_more``), and its
wire form is exactly ``msgspec.to_builtins(page)``, so the HTTP client decodes the same type
the library returns.

The rule for items: in a stream where every item is itself a resume position (chat messages,
canvas and timeline events), the item carries its own cursor as ``.cursor`` — a field of the
item struct (``ChatEntry.cursor``), or the item's id when that id *is* the cursor
(``StreamEvent.cursor`` is its ``event_id``). Items are never paired with their cursor in
tuples. Lists whose items are not positions (records, notes, spine events filtered by a query)
only have the page's ``next_cursor``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T]):
    """One page of a list: ``next_cursor`` continues after the last item (exclusive)."""

    items: list[T]
    next_cursor: str | None
    has_more: bool


__all__ = ["Page"]
