"""Retention by type: how long an item of a given type is kept, from the operator's rules.

A rule maps a type to a number of days. Its key is an exact type (``analytics``), a type family
``<prefix>.*`` (every type that starts with ``<prefix>.``, at any depth, not ``<prefix>`` itself)
or ``*`` (every other type). A type takes the first rule that applies in this order: its exact
name, then the longest family that contains it, then ``*``; no rule means the item is kept
forever.

A rule is applied when an item is written: its ``expires_at`` is set then, and backends delete it
with their native TTL. Changing the rules later does not touch items already written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from northstar_core.storage import MAX_EXPIRES_AT

EVERY_TYPE: Final = "*"
FAMILY_SUFFIX: Final = ".*"
MIN_DAYS: Final = 1
# A century: longer is "forever", which is said by leaving the type without a rule.
MAX_DAYS: Final = 36_500
DAY_SECONDS: Final = 86_400


class Retention:
    """The rules of one log (see module doc); an empty set of rules keeps everything forever."""

    def __init__(self, days: Mapping[str, int] | None = None, *, type_pattern: re.Pattern[str]) -> None:
        """``days`` by key; ``type_pattern`` is what a type of this log looks like (an exact key
        must match it, a family's prefix must have sub-types that match it). ``ValueError``
        naming the offending key otherwise."""
        exact: dict[str, float] = {}
        families: list[tuple[str, float]] = []
        every: float | None = None
        for key, value in (days or {}).items():
            if isinstance(value, bool) or not isinstance(value, int) or not MIN_DAYS <= value <= MAX_DAYS:
                raise ValueError(f"{key!r}: days must be an integer from {MIN_DAYS} to {MAX_DAYS}")
            seconds = float(value * DAY_SECONDS)
            if key == EVERY_TYPE:
                every = seconds
            elif key.endswith(FAMILY_SUFFIX):
                prefix = key[: -len(FAMILY_SUFFIX)] + "."
                # a family must be able to hold a type: "<prefix>.x" has to be a valid type
                if not prefix[:-1] or not type_pattern.fullmatch(prefix + "x"):
                    raise ValueError(f"{key!r} is not a type family ('<type>.*' with a valid type)")
                families.append((prefix, seconds))
            elif type_pattern.fullmatch(key):
                exact[key] = seconds
            else:
                raise ValueError(
                    f"{key!r} is neither a type ({type_pattern.pattern}), a family '<type>.*' nor '*'"
                )
        self._exact = exact
        # longest prefix first, so the first family that contains a type is the most specific
        self._families = sorted(families, key=lambda family: len(family[0]), reverse=True)
        self._every = every

    @property
    def keeps_everything(self) -> bool:
        """Whether no rule was given (every item kept forever)."""
        return not self._exact and not self._families and self._every is None

    def seconds(self, item_type: str) -> float | None:
        """How long an item of ``item_type`` is kept, ``None`` for forever."""
        found = self._exact.get(item_type)
        if found is not None:
            return found
        for prefix, seconds in self._families:
            if item_type.startswith(prefix):
                return seconds
        return self._every

    def expires_at(self, item_type: str, at: float) -> float | None:
        """When an item of ``item_type`` made at ``at`` (epoch seconds) expires, ``None`` for
        never; no later than the last instant every backend can store."""
        seconds = self.seconds(item_type)
        return None if seconds is None else min(at + seconds, MAX_EXPIRES_AT)


__all__ = ["EVERY_TYPE", "MAX_DAYS", "MIN_DAYS", "Retention"]
