"""What every adapter needs and none should write twice: key ranges, retries, shared clients.

* :func:`prefix_end` and :func:`key_range` — the bounds of ``ItemStore.query``'s key range
  (``prefix`` ∩ (``after``, ``before``)) as one lower and at most one exclusive upper bound, in
  code-point order, which is how every backend compares keys (UTF-8 byte order).
* :class:`RetryPolicy` and :func:`retrying` — bounded, full-jitter exponential backoff around
  one backend call. *What* may be retried stays with each backend (its SDK's errors and what
  they mean for a write); the loop, the delays and the budget are these.
* :class:`SharedClients` — one client (connection, channel, writer thread) per configuration,
  and per event loop where the SDK's client belongs to the loop that opened it, shared by the
  stores using it and reference-counted: the last of them to let go closes it.

No SDK is imported here.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from northstar_core.storage import MAX_SCAN_PAGE, InvalidItem

T = TypeVar("T")
C = TypeVar("C")


# --- key ranges ---------------------------------------------------------------------------------


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound).

    Backends order strings by their UTF-8 bytes, which is code-point order, the same order as
    Python's ``str`` comparison.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code > 0x10FFFF:  # nothing follows the last code point at this position
            continue
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored: skip to the next scalar
            code = 0xE000
        return "".join(chars) + chr(code)
    return None


class KeyRange(NamedTuple):
    """The keys of a query: ``low`` (inclusive or not; ``None``: unbounded) up to ``high``
    (always exclusive; ``None``: unbounded)."""

    low: str | None
    low_inclusive: bool
    high: str | None

    @property
    def empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low >= self.high


def key_range(prefix: str, after: str | None = None, before: str | None = None) -> KeyRange:
    """Keys starting with ``prefix``, strictly after ``after`` and strictly before ``before``:
    of the two lower bounds and of the two upper bounds the tighter one, so that a backend seeks
    on one bound each way instead of filtering on a second."""
    low: str | None = prefix or None
    low_inclusive = True
    if after is not None and (low is None or after >= low):
        low, low_inclusive = after, False
    high = prefix_end(prefix)
    if before is not None and (high is None or before <= high):
        high = before
    return KeyRange(low, low_inclusive, high)


# --- scans --------------------------------------------------------------------------------------


def scan_limit(limit: int) -> int:
    """``limit`` of ``ItemStore.scan``, checked (1 to ``MAX_SCAN_PAGE``; otherwise InvalidItem)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN_PAGE:
        raise InvalidItem(f"a scan page holds 1 to {MAX_SCAN_PAGE} items")
    return limit


_POSITION_TOKEN = msgspec.json.Decoder(tuple[str, str])


def position_token(partition: str, key: str) -> str:
    """The scan token of a backend that scans in (partition, key) order: the last position."""
    return msgspec.json.encode((partition, key)).decode()


def parse_position_token(token: str | None) -> tuple[str, str] | None:
    """The (partition, key) a :func:`position_token` names (InvalidItem if it is not one)."""
    if token is None:
        return None
    try:
        return _POSITION_TOKEN.decode(token)
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:
        raise InvalidItem("malformed scan token") from exc


# --- retries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` calls, with full-jitter exponential backoff between them; with a
    ``budget``, no new attempt starts once that many seconds have passed since the first."""

    attempts: int = 4
    base_delay: float = 0.05
    max_delay: float = 2.0
    budget: float | None = None

    def delay(self, attempt: int, at_least: float = 0.0) -> float:
        """The pause after failed attempt number ``attempt`` (0-based): uniform in
        ``[0, min(max_delay, base_delay * 2**attempt))``, but not below ``at_least`` (a
        backend's retry-after hint) capped at ``max_delay``."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        return max(backoff, min(self.max_delay, at_least))


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    errors: tuple[type[BaseException], ...],
    judge: Callable[[BaseException, int], float],
    exhausted: Callable[[BaseException, int], BaseException],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """``await call()``, again after each failure among ``errors`` that the backend says may
    succeed on a new attempt.

    ``judge(exc, attempts_made)`` is the backend's verdict on a failure: it raises the error
    callers should see when a new attempt cannot help, else returns the least delay before the
    next attempt (a retry-after hint, or 0). When attempts or budget run out, the error
    ``exhausted(exc, attempts_made)`` is raised from the last failure. Exceptions outside
    ``errors`` (the backend's answer, a failed condition) propagate at once.
    """
    attempts = max(1, policy.attempts)
    started = time.monotonic()
    for attempt in range(attempts):
        try:
            return await call()
        except errors as exc:
            delay = policy.delay(attempt, judge(exc, attempt + 1))
            out_of_time = policy.budget is not None and time.monotonic() - started + delay > policy.budget
            if attempt + 1 >= attempts or out_of_time:
                raise exhausted(exc, attempt + 1) from exc
        await sleep(delay)
    raise AssertionError("unreachable")


# --- shared clients -----------------------------------------------------------------------------


class _Entry(Generic[C]):
    __slots__ = ("client", "users")

    def __init__(self, client: C) -> None:
        self.client = client
        self.users = 0


class SharedClients(Generic[C]):
    """Clients shared by every store opened on one configuration ``key``, reference-counted.

    ``per_loop``: one client per event loop as well (aio clients — aiohttp sessions, gRPC aio
    channels — belong to the loop that opened them); a loop that goes away takes its clients
    with it. Otherwise one per process. Safe to call from any thread.
    """

    def __init__(self, *, per_loop: bool = True) -> None:
        self._per_loop = per_loop
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Entry[C]]]
        self._by_loop = weakref.WeakKeyDictionary()
        self._process: dict[Hashable, _Entry[C]] = {}

    def _entries(self, loop: asyncio.AbstractEventLoop | None, *, create: bool) -> dict[Hashable, _Entry[C]]:
        if not self._per_loop:
            return self._process
        if loop is None:
            loop = asyncio.get_running_loop()
        if create:
            return self._by_loop.setdefault(loop, {})
        return self._by_loop.get(loop, {})

    def acquire(self, key: Hashable, make: Callable[[], C]) -> C:
        """The client for ``key`` (made by ``make`` if there is none yet), with one more user."""
        with self._lock:
            entries = self._entries(None, create=True)
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = _Entry(make())
            entry.users += 1
            return entry.client

    def release(self, key: Hashable, client: C, *, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """One user fewer (``loop``: the one ``client`` was acquired on, default the running
        one). True when that was the last: the caller closes ``client``."""
        with self._lock:
            entries = self._entries(loop, create=False)
            entry = entries.get(key)
            if entry is None or entry.client is not client:
                return False  # discarded: whoever discarded it owns it
            entry.users -= 1
            if entry.users > 0:
                return False
            del entries[key]
            return True

    def discard(self, key: Hashable, client: C, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Forget ``client`` whatever its users (it failed to open): the next acquirer makes a
        new one, and releasing this one is a no-op."""
        with self._lock:
            entries = self._entries(loop, create=False)
            entry = entries.get(key)
            if entry is not None and entry.client is client:
                del entries[key]

