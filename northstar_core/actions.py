"""``/actions/execute``: the tool choke point — registry of handlers behind the gate chain.

The embedding application registers one async handler per action name through the library API
(``engines.actions.register("send_email", handler)``). :meth:`ActionService.execute`:

1. validates the request (422 ``actions.invalid_request``, nothing written);
2. answers 404 ``actions.unknown_action`` for an action nobody registered;
3. runs the gate chain (every decision recorded on the spine and the subject's stream; a block
   is the gate's 403 envelope and the handler never runs);
4. on allow runs the handler, records the usage on the budget ledger (which also writes a
   ``budget`` spine event) and returns the result.

The registry knows only *names*; what is dangerous is decided by the policy stores alone.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_AMOUNT, check_float
from northstar_core.budget import BudgetLedger, UsageIn
from northstar_core.errors import NorthstarError
from northstar_core.gates import GateChain
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.spine import EventSpine

DOMAIN: Final = "actions"
_USAGE_ATTEMPTS: Final = 4


class ActionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    action_name: str
    subject_type: str
    subject_id: str
    surface_id: str | None = None
    app_id: str | None = None
    params: dict[str, Any] = {}
    estimated_cost: float = 0.0


class ActionOutcome(msgspec.Struct, kw_only=True):
    """What a handler may return to report the actual cost (else the estimate is recorded)."""

    result: Any = None
    cost: float | None = None


Handler = Callable[[RequestContext, ActionRequest], Awaitable[Any]]


class ActionRegistry:
    """Action name → async handler. Registration is the embedding application's job."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if not ID_PATTERN.fullmatch(name):
            raise ValueError(f"action name must match {ID_PATTERN.pattern}")
        self._handlers[name] = handler

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers


def decode_request(body: Any) -> ActionRequest:
    try:
        if isinstance(body, bytes | bytearray):
            request = msgspec.json.decode(bytes(body), type=ActionRequest)
        else:
            request = msgspec.convert(body, type=ActionRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise NorthstarError(
            f"{DOMAIN}.invalid_request", f"invalid action request: {exc}", 422, details={"reason": str(exc)}
        ) from None
    for field in ("action_name", "subject_type", "subject_id", "surface_id", "app_id"):
        value = getattr(request, field)
        if value is not None and not ID_PATTERN.fullmatch(value):
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                f"'{field}' must match {ID_PATTERN.pattern}",
                422,
                details={"field": field, "value": value[:200]},
            )
    # The cost reaches the budget gate and the ledger: bounded like any usage amount.
    cost = check_float(DOMAIN, "estimated_cost", request.estimated_cost, lo=0.0, hi=MAX_AMOUNT)
    return msgspec.structs.replace(request, estimated_cost=cost)


def _reported_cost(cost: Any) -> float | None:
    """A handler's reported cost if it is a finite number, zero or more (else the estimate)."""
    if cost is None or isinstance(cost, bool):
        return None
    try:
        number = float(cost)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class ActionService:
    """Gate, run, account (see module doc). ``engines.actions`` is this object."""

    def __init__(self, gate: GateChain, budget: BudgetLedger, spine: EventSpine) -> None:
        self.gate = gate
        self.budget = budget
        self.spine = spine
        self.handlers = ActionRegistry()

    def register(self, name: str, handler: Handler) -> None:
        """Register the handler that runs ``name`` once the gate chain allows it."""
        self.handlers.register(name, handler)

    async def execute(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        ctx.require_role("member")
        request = decode_request(body)
        if request.surface_id and ctx.surface_id and request.surface_id != ctx.surface_id:
            raise NorthstarError(
                f"{DOMAIN}.invalid_request",
                "'surface_id' contradicts the request's surface (X-Surface-Id)",
                422,
                details={"field": "surface_id"},
            )
        handler = self.handlers.get(request.action_name)
        if handler is None:
            raise NorthstarError(
                f"{DOMAIN}.unknown_action",
                f"no handler is registered for action '{request.action_name}'",
                404,
                details={"action_name": request.action_name},
            )
        decision = await self.gate.check(
            ctx,
            action_name=request.action_name,
            subject_type=request.subject_type,
            subject_id=request.subject_id,
            params=request.params,
            estimated_cost=request.estimated_cost,
            surface_id=request.surface_id,
            app_id=request.app_id,
        )
        try:
            returned = await handler(ctx, request)
        except NorthstarError:
            raise
        except Exception as exc:  # a handler's bug must not become a 500 or vanish
            await self.spine.record(
                ctx,
                "audit",
                {"action": "action_failed", "action_name": request.action_name, "error": repr(exc)[:500]},
                parent_event_id=decision["event_id"],
            )
            raise NorthstarError(
                f"{DOMAIN}.handler_failed",
                f"the handler for '{request.action_name}' failed",
                502,
                details={"action_name": request.action_name, "error": type(exc).__name__},
            ) from exc
        cost = request.estimated_cost
        result = returned
        if isinstance(returned, ActionOutcome):
            result = returned.result
            reported = _reported_cost(returned.cost)
            if reported is not None:
                # The handler already ran: its cost must reach the ledger, at most one amount.
                cost = min(reported, MAX_AMOUNT)
        usage = UsageIn(
            amount=cost,
            surface_id=request.surface_id or ctx.surface_id,
            action_name=request.action_name,
            idempotency_key=f"action-{decision['event_id']}",
        )
        # The handler has run: its cost must reach the ledger. The key is unique to this
        # decision, so retrying after ledger contention can never count the cost twice.
        for attempt in range(_USAGE_ATTEMPTS):
            try:
                entry, _ = await self.budget.record(ctx, usage)
                break
            except NorthstarError as exc:
                if exc.code != "budget.contention" or attempt == _USAGE_ATTEMPTS - 1:
                    raise
        # the handler ran and its cost is on the ledger; only then is the result's shape checked
        try:
            result = msgspec.json.decode(msgspec.json.encode(result))
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            await self.spine.record(
                ctx,
                "audit",
                {"action": "action_failed", "action_name": request.action_name, "error": "non-JSON result"},
                parent_event_id=decision["event_id"],
            )
            raise NorthstarError(
                f"{DOMAIN}.handler_failed",
                f"the handler for '{request.action_name}' returned a result that is not JSON",
                502,
                details={"action_name": request.action_name, "error": type(exc).__name__},
            ) from None
        return {
            "action_name": request.action_name,
            "result": result,
            "decision": decision,
            "usage": {
                "amount": entry.amount,
                "seq": entry.seq,
                "month_total": entry.month_totals.get("*", 0.0),
            },
        }
