"""Ports between domains, so one domain can be wired to another without importing it.

* :class:`AuditSink` — where the auth layer and the stores record audit events; the event
  spine implements it.
* :class:`ActionGate` — the gate chain in front of every tool action (``canvas_command``,
  ``canvas_gesture``, ``/actions/execute``…); the gate-chain use-case implements it.
* :class:`StreamPublisher` — publishes an event on a replayable stream (``event_stream``
  kind) such as a canvas's SSE stream; the timeline use-case implements it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from northstar_core.identity import RequestContext

if TYPE_CHECKING:
    from northstar_core.timeline import PendingEvent


class AuditSink(Protocol):
    async def audit(self, ctx: RequestContext, action: str, payload: dict[str, Any]) -> None:
        """Durably record an audit event (raises if it cannot be recorded)."""
        ...


class ActionGate(Protocol):
    """The gate chain, in two phases so a caller can overlap its reads with the gate's:
    ``prepare`` validates and reads every policy input (writing nothing) and returns an opaque
    value of the gate's own, which ``decide`` evaluates and records; ``check`` does both."""

    async def prepare(
        self,
        ctx: RequestContext,
        *,
        action_name: str,
        subject_type: str,
        subject_id: str,
        params: dict[str, Any] | None = None,
        estimated_cost: float = 0.0,
        surface_id: str | None = None,
        app_id: str | None = None,
    ) -> Any:
        """Validate the request (422) and read the policy inputs of a decision."""
        ...

    async def decide(self, prepared: Any, *, dry_run: bool = False) -> dict[str, Any]:
        """Evaluate the chain on ``prepare``'s value; return the allow decision or raise the
        403 gate envelope. The decision (allow or deny) is recorded on the spine and published
        on the subject's stream before this returns/raises (503 if it could not be)."""
        ...

    async def decide_unpublished(self, prepared: Any) -> tuple[dict[str, Any], PendingEvent | None]:
        """:meth:`decide` for an action whose own event goes on the subject's stream: an allow
        is recorded on the spine only and returned with its ``safety_decision`` event, which
        the caller publishes in one atomic batch with that event (``None``: nothing to
        publish); a deny is recorded, published and raised as by :meth:`decide`."""
        ...

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
        key_checked: bool = False,
    ) -> str:
        """Append an event to ``stream_id`` (tenant-scoped); returns the event's cursor.

        ``key_checked``: the caller knows ``idempotency_key`` is new (e.g. derived from an id
        it just made), so the publish skips looking it up first."""
        ...
