"""The observation port: what the core reports about itself, and nothing about how.

The core calls :func:`current` at the few places worth measuring — every call a routed store
makes (:class:`~northstar_core.routing.KindStore`), every gate decision, live-tail pollers
starting and stopping, a lab backend's group commits — and the process's :class:`Observer`
turns that into metrics and spans. The default is :data:`NOOP`, so an embedding agent pays
nothing and the core imports no metrics or tracing library; the HTTP shell installs its own
implementation (``northstar_http.observability``) while it serves.

The observer is process-wide, like the metrics a scraper reads from a process: :func:`install`
swaps it and returns the previous one, to be put back on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractContextManager
from typing import Final, Protocol

from northstar_core.errors import NorthstarError
from northstar_core.storage import ConditionFailed


class Observer(Protocol):
    """Receives the core's measurements. Implementations must be cheap and must not raise."""

    def store_call(self, kind: str, backend: str, op: str) -> AbstractContextManager[object]:
        """Wraps one store operation (``get``, ``query``, ``write``, ``ping``) of ``kind`` on
        ``backend``. The exception leaving the block, if any, is the call's outcome (see
        :func:`error_kind`)."""
        ...

    def gate_decision(self, gate: str, outcome: str) -> None:
        """A gate-chain decision: ``outcome`` is ``allow``, ``deny`` or ``unrecorded``;
        ``gate`` the gate that blocked, ``none`` when every gate passed."""
        ...

    def tail_pollers(self, delta: int) -> None:
        """A live-tail poller started (``+1``) or stopped (``-1``)."""
        ...

    def group_commit(self, backend: str, batches: int) -> None:
        """A backend committed ``batches`` write batches in one transaction. May be called
        from a backend's own writer thread."""
        ...


_NOTHING: Final = contextlib.nullcontext()


class NoopObserver:
    """Observes nothing (the default)."""

    def store_call(self, kind: str, backend: str, op: str) -> AbstractContextManager[object]:
        return _NOTHING

    def gate_decision(self, gate: str, outcome: str) -> None:
        pass

    def tail_pollers(self, delta: int) -> None:
        pass

    def group_commit(self, backend: str, batches: int) -> None:
        pass


NOOP: Final[Observer] = NoopObserver()
_current: Observer = NOOP


def current() -> Observer:
    """The process's observer (:data:`NOOP` unless one is installed)."""
    return _current


def install(observer: Observer | None) -> Observer:
    """Make ``observer`` (``None``: :data:`NOOP`) the process's observer; returns the previous."""
    global _current
    previous, _current = _current, observer or NOOP
    return previous


def error_kind(exc: BaseException | None) -> str | None:
    """A store call's outcome as a small, fixed vocabulary (a metric label): ``None`` for
    success, else ``condition_failed`` (an optimistic write lost its race — expected under
    contention), ``backend_unavailable``, ``invalid_item``, ``cancelled`` or ``error``."""
    if exc is None:
        return None
    if isinstance(exc, ConditionFailed):
        return "condition_failed"
    if isinstance(exc, NorthstarError):
        for suffix in ("backend_unavailable", "invalid_item"):
            if exc.code.endswith("." + suffix):
                return suffix
        return "error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"
