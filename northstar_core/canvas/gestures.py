"""Gestures: pointer, selection, viewport… events on a canvas's stream, never in its command log.

A gesture is refused with 403 ``canvas.gestures_disabled`` when the ``canvas.gestures_enabled``
toggle is off, passes the gate chain as ``canvas_gesture``, and is published on the canvas's
event stream (``canvas:<id>``) like any server-written event.
"""

from __future__ import annotations

from typing import Any, Protocol

from northstar_core.canvas.model import DOMAIN, KIND, KIND_PATTERN, CanvasLimits, resolve_limits, size_of
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.ports import ActionGate
from northstar_core.routing import RoutingRegistry
from northstar_core.scope import check_id, subject_stream
from northstar_core.timeline import StreamEvent, Timeline


class ToggleSource(Protocol):
    """Where feature toggles are read (``ConfigService`` satisfies it)."""

    async def toggle(self, ctx: RequestContext, key: str, default: Any = None) -> Any: ...


class CanvasGestures:
    """Publishes gestures on canvas streams (see module doc)."""

    def __init__(
        self,
        registry: RoutingRegistry,
        *,
        timeline: Timeline,
        gate: ActionGate,
        toggles: ToggleSource,
        limits: CanvasLimits,
    ) -> None:
        self.registry = registry
        self.timeline = timeline
        self.gate = gate
        self.toggles = toggles
        self.limits = limits

    async def publish(
        self,
        ctx: RequestContext,
        canvas_id: str,
        gesture: str,
        data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> StreamEvent:
        """Publish a gesture on the canvas stream; the event as readers see it (the first one
        again for a repeated ``idempotency_key``)."""
        check_id(DOMAIN, "canvas_id", canvas_id)
        ctx.require_role("member")
        if idempotency_key is not None:
            check_id(DOMAIN, "idempotency_key", idempotency_key)
        if not KIND_PATTERN.fullmatch(gesture):
            raise NorthstarError(
                f"{DOMAIN}.invalid_request", f"gesture must match {KIND_PATTERN.pattern}", 422,
                details={"field": "gesture"},
            )
        store = await self.registry.store_for(KIND, ctx.tenant_id)
        limits = resolve_limits(self.limits, store.options.canvas_limits)
        size = size_of(data)
        if size > limits.max_gesture_bytes:
            raise NorthstarError(
                f"{DOMAIN}.gesture_too_large",
                f"a gesture may hold at most {limits.max_gesture_bytes} bytes",
                413,
                details={"limit": limits.max_gesture_bytes, "size": size},
            )
        if await self.toggles.toggle(ctx, "canvas.gestures_enabled", default=True) is not True:
            raise NorthstarError(
                f"{DOMAIN}.gestures_disabled",
                "gestures are switched off (toggle canvas.gestures_enabled)",
                403,
                details={"toggle": "canvas.gestures_enabled"},
            )
        await self.gate.check(
            ctx,
            action_name="canvas_gesture",
            subject_type="canvas",
            subject_id=canvas_id,
            params={"gesture": gesture},
        )
        event, _ = await self.timeline.publish_event(
            ctx,
            subject_stream("canvas", canvas_id),
            "gesture",
            {"gesture": gesture, "data": data, "actor_id": ctx.user_id},
            idempotency_key=None if idempotency_key is None else f"gesture.{idempotency_key}",
        )
        return event


__all__ = ["CanvasGestures", "ToggleSource"]
