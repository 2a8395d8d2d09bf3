"""Ids: time-ordered UUIDv7 strings, so that key order is creation order.

Events, notes and policy records are keyed by these ids; a time range is then a key range.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Final


class UUIDv7Generator:
    """Time-ordered UUIDs (RFC 9562 version 7), strictly increasing within this process.

    48 bits of Unix milliseconds, then 74 bits used as a counter that starts at a random value
    each new millisecond and is incremented when the clock has not moved (or moved back), so
    ids issued by one process are strictly increasing even under a frozen test clock.
    """

    _COUNTER_BITS: Final = 74

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def next(self, now_seconds: float) -> str:
        ms = int(now_seconds * 1000)
        with self._lock:
            if ms > self._last_ms:
                self._last_ms = ms
                # start in the lower half so increments rarely overflow into the next ms
                self._counter = int.from_bytes(os.urandom(10), "big") >> (80 - self._COUNTER_BITS + 1)
            else:
                self._counter += 1
                if self._counter >> self._COUNTER_BITS:
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        rand_a = counter >> 62  # 12 bits
        rand_b = counter & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        return str(uuid.UUID(int=value))


def uuid7_floor(ms: int) -> str:
    """The smallest UUID string of millisecond ``ms`` (below every UUIDv7 of that ms)."""
    return str(uuid.UUID(int=(max(ms, 0) & ((1 << 48) - 1)) << 80))


def uuid7_ms(event_id: str) -> int:
    return uuid.UUID(event_id).int >> 80


__all__ = ["UUIDv7Generator", "uuid7_floor", "uuid7_ms"]
