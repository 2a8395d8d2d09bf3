"""Ports between domains, so one domain can be wired to another without importing it.

* :class:`AuditSink` — where the auth layer and the stores record audit events; the event
  spine implements it.
* :class:`ActionGate` — the gate chain in front of every tool action (``canvas_command``,
  ``canvas_gesture``, ``/actions/execute``…); the gate-chain use-case implements it.
* :class:`StreamPublisher` — publishes an event on a replayable stream (``event_stream``
  kind) such as a canvas's SSE stream; the timeline use-case implements it.
"""

from __future__ import annotations

from typing import Any, Protocol

from northstar_core.identity import RequestContext


class AuditSink(Protocol):
    async def audit(self, ctx: RequestContext, action: str, payload: dict[str, Any]) -> None:
        """Durably record an audit event (raises if it cannot be recorded)."""
        ...


class ActionGate(Protocol):
    async def check(
        self,
        ctx: RequestContext,
        *,
        action_name: str,
        subject_type: str,
        subject_id: str,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
    ) -> dict[str, Any]:
        """Run the gate chain; return the allow decision or raise the 403 gate envelope.

        The decision (allow or deny) is recorded on the spine before this returns/raises.
        """
        ...


class StreamPublisher(Protocol):
    async def publish(
        self,
        ctx: RequestContext,
        stream_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Append an event to ``stream_id`` (tenant-scoped); returns the event's cursor."""
        ...
