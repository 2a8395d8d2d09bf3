"""The gate chain in front of every tool action (SPEC §6 "Gate chain and /actions/execute").

Order, stopping at the first block: ``kill_switch → firearms → strategy_lock → budget → kpi →
temperature``. Every rule comes from the policy stores (:mod:`northstar_core.policies`,
:mod:`northstar_core.budget`), read fresh on every call — there is no cache, so a revocation,
an expiry, a flipped kill switch or a lowered limit written by any process applies to the very
next check anywhere.

Every decision, allow or deny, is first written to the event spine as a ``safety`` event (the
gate, the reason and the version of every policy document read) and then published as
``safety_decision`` on the subject's stream (``<subject_type>:<subject_id>``). If the decision
cannot be recorded the action does not run: 503 ``gate.decision_unrecorded``. A deny raises a
403 envelope with ``gate`` set and a stable code ``gate.<gate>.<reason>``.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from northstar_core.bounds import MAX_AMOUNT
from northstar_core.budget import TOTAL, BudgetLedger
from northstar_core.clock import Clock
from northstar_core.errors import GATES, Gate, NorthstarError, gate_blocked
from northstar_core.identity import ID_PATTERN, RequestContext
from northstar_core.observe import current as observer
from northstar_core.policies import (
    BudgetPolicy,
    Corridors,
    FirearmsPolicy,
    KillSwitches,
    PolicyStores,
    StrategyLockPolicy,
    firearms_reason,
)
from northstar_core.ports import StreamPublisher
from northstar_core.spine import EventSpine

DOMAIN: Final = "gate"

# the human text of each block reason (codes are gate.<gate>.<reason>)
MESSAGES: Final[dict[tuple[str, str], str]] = {
    ("kill_switch", "tenant_blocked"): "a kill switch blocks every action of this tenant",
    ("kill_switch", "provider_blocked"): "a kill switch blocks this provider",
    ("kill_switch", "action_blocked"): "a kill switch blocks this action",
    ("firearms", "licence_required"): "this action is dangerous and the subject holds no licence for it",
    ("firearms", "licence_revoked"): "the subject's licence for this action was revoked",
    ("firearms", "licence_expired"): "the subject's licence for this action has expired",
    ("strategy_lock", "lock_required"): "this action needs an approved strategy lock",
    ("strategy_lock", "pending_review"): "the strategy lock for this action awaits three-wise review",
    ("strategy_lock", "lock_expired"): "the strategy lock for this action has expired",
    ("strategy_lock", "lock_rejected"): "the strategy lock for this action was rejected",
    ("budget", "limit_exceeded"): "the estimated cost would exceed the budget for the period",
    ("kpi", "out_of_corridor"): "a KPI parameter lies outside its configured corridor",
    ("temperature", "out_of_corridor"): "a temperature parameter lies outside its configured corridor",
}


class Block(msgspec.Struct, kw_only=True, frozen=True):
    gate: Gate
    reason: str
    details: dict[str, Any]


def subject_stream_id(subject_type: str, subject_id: str) -> str:
    return f"{subject_type}:{subject_id}"


def _invalid(message: str, **details: Any) -> NorthstarError:
    return NorthstarError(f"{DOMAIN}.invalid_request", message, 422, details=details)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class GateChain:
    """Implements :class:`northstar_core.ports.ActionGate` (see module doc)."""

    def __init__(
        self,
        policies: PolicyStores,
        budget: BudgetLedger,
        spine: EventSpine,
        clock: Clock,
        streams: StreamPublisher | None = None,
    ) -> None:
        self.policies = policies
        self.budget = budget
        self.spine = spine
        self.clock = clock
        self.streams = streams

    async def check(
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
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Run the chain; return the recorded allow decision or raise the 403 gate envelope.

        ``dry_run`` (``POST /actions/check``): the decision is recorded on the spine marked
        ``dry_run`` and returned, deny included; it is not published on the subject's stream,
        whose readers act on decisions (a UI blocks on a ``safety_decision``).
        """
        for field, value in (
            ("action_name", action_name),
            ("subject_type", subject_type),
            ("subject_id", subject_id),
        ):
            if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
                raise _invalid(f"'{field}' must match {ID_PATTERN.pattern}", field=field)
        for field, opt in (("surface_id", surface_id), ("app_id", app_id)):
            if opt is not None and not ID_PATTERN.fullmatch(opt):
                raise _invalid(f"'{field}' must match {ID_PATTERN.pattern}", field=field)
        if ":" in subject_type:
            # The subject stream is "<type>:<id>": a colon in the type would let ("a:b", "c")
            # and ("a", "b:c") share one stream.
            raise _invalid("'subject_type' must not contain ':'", field="subject_type")
        stream_id = subject_stream_id(subject_type, subject_id)
        if len(stream_id) > 200:
            raise _invalid("subject_type and subject_id together are too long", field="subject_id")
        cost = _number(estimated_cost)
        if cost is None or not 0 <= cost <= MAX_AMOUNT:
            raise _invalid(
                f"'estimated_cost' must be a finite number from 0 to {MAX_AMOUNT:g}", field="estimated_cost"
            )
        params = params or {}
        surface = surface_id or ctx.surface_id
        app = app_id or ctx.app_id
        versions: dict[str, int] = {}
        block: Block | None = None
        for gate in GATES:
            block = await self._run_gate(
                gate, ctx, action_name, subject_type, subject_id, surface, params, cost, versions
            )
            if block is not None:
                break
        decision: dict[str, Any] = {
            "decision": "deny" if block else "allow",
            "gate": block.gate if block else None,
            "code": f"gate.{block.gate}.{block.reason}" if block else None,
            "reason": block.reason if block else "all_gates_passed",
            "action_name": action_name,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "surface_id": surface,
            "app_id": app,
            "estimated_cost": cost,
            "policy_versions": versions,
            "details": block.details if block else {},
            "dry_run": dry_run,
        }
        gate_label = block.gate if block else "none"
        try:
            event = await self.spine.record(ctx, "safety", decision, source="system")
        except NorthstarError as exc:
            observer().gate_decision(gate_label, "unrecorded")
            raise NorthstarError(
                f"{DOMAIN}.decision_unrecorded",
                "the gate decision could not be recorded on the event spine; the action did not run",
                503,
                details={"cause": exc.code},
                headers={"Retry-After": "1", **exc.headers},
            ) from exc
        decision["event_id"] = event.event_id
        if dry_run:
            return decision
        if self.streams is not None:
            try:
                decision["stream_cursor"] = await self.streams.publish(
                    ctx, stream_id, "safety_decision", decision, idempotency_key=f"safety-{event.event_id}"
                )
            except NorthstarError as exc:
                if block is None:
                    observer().gate_decision(gate_label, "unrecorded")
                    raise NorthstarError(
                        f"{DOMAIN}.decision_unrecorded",
                        "the gate decision could not be published on the subject's stream; "
                        "the action did not run",
                        503,
                        details={"cause": exc.code, "event_id": event.event_id},
                        headers={"Retry-After": "1", **exc.headers},
                    ) from exc
                # a deny stays a deny (and is on the spine) even if the stream is down
        observer().gate_decision(gate_label, "deny" if block is not None else "allow")
        if block is not None:
            raise gate_blocked(
                block.gate,
                block.reason,
                MESSAGES.get((block.gate, block.reason), "blocked by policy"),
                **block.details,
                action_name=action_name,
                subject_type=subject_type,
                subject_id=subject_id,
                event_id=event.event_id,
                policy_versions=versions,
            )
        return decision

    async def _run_gate(
        self,
        gate: Gate,
        ctx: RequestContext,
        action: str,
        subject_type: str,
        subject_id: str,
        surface: str | None,
        params: dict[str, Any],
        cost: float,
        versions: dict[str, int],
    ) -> Block | None:
        if gate == "kill_switch":
            return await self._kill_switch(ctx, action, params, versions)
        if gate == "firearms":
            return await self._firearms(ctx, action, subject_type, subject_id, versions)
        if gate == "strategy_lock":
            return await self._strategy_lock(ctx, action, surface, versions)
        if gate == "budget":
            return await self._budget(ctx, surface, cost, versions)
        return await self._corridors(gate, ctx, action, surface, params, versions)

    async def _kill_switch(
        self, ctx: RequestContext, action: str, params: dict[str, Any], versions: dict[str, int]
    ) -> Block | None:
        doc, versions["kill_switches"] = await self.policies.read(ctx, "kill_switches", KillSwitches)
        extra = {"kill_switch_reason": doc.reason} if doc.reason else {}
        if doc.tenant_blocked:
            return Block(
                gate="kill_switch", reason="tenant_blocked", details={"tenant_id": ctx.tenant_id, **extra}
            )
        provider = params.get("provider")
        if isinstance(provider, str) and provider in doc.providers:
            return Block(
                gate="kill_switch", reason="provider_blocked", details={"provider": provider, **extra}
            )
        if action in doc.actions:
            return Block(gate="kill_switch", reason="action_blocked", details=extra)
        return None

    async def _firearms(
        self, ctx: RequestContext, action: str, subject_type: str, subject_id: str, versions: dict[str, int]
    ) -> Block | None:
        doc, versions["firearms_policy"] = await self.policies.read(ctx, "firearms_policy", FirearmsPolicy)
        binding = next((b for b in doc.bindings if b.action_name == action), None)
        if binding is None:
            return None
        licences = await self.policies.subject_licences(ctx, subject_type, subject_id)
        reason = firearms_reason(self.policies, licences, binding.licence_type)
        if reason is None:
            return None
        return Block(gate="firearms", reason=reason, details={"licence_type": binding.licence_type})

    async def _strategy_lock(
        self, ctx: RequestContext, action: str, surface: str | None, versions: dict[str, int]
    ) -> Block | None:
        doc, versions["strategy_lock_policy"] = await self.policies.read(
            ctx, "strategy_lock_policy", StrategyLockPolicy
        )
        rules = [
            r
            for r in doc.rules
            if r.action_name in (None, action) and (r.surface_id is None or r.surface_id == surface)
        ]
        if not rules:
            return None
        locks = [
            lock
            for lock in await self.policies.locks_matching(ctx, surface, action)
            if lock.action_name in (None, action) and (lock.surface_id is None or lock.surface_id == surface)
        ]
        states = {self.policies.lock_state(lock): lock for lock in locks}
        details: dict[str, Any] = {"surface_id": surface}
        if "approved" in states:
            return None
        for state, reason in (
            ("pending_review", "pending_review"),
            ("expired", "lock_expired"),
            ("rejected", "lock_rejected"),
        ):
            if state in states:
                return Block(
                    gate="strategy_lock", reason=reason, details={**details, "lock_id": states[state].lock_id}
                )
        return Block(gate="strategy_lock", reason="lock_required", details=details)

    async def _budget(
        self, ctx: RequestContext, surface: str | None, cost: float, versions: dict[str, int]
    ) -> Block | None:
        doc, versions["budget_policy"] = await self.policies.read(ctx, "budget_policy", BudgetPolicy)
        limits = [lim for lim in doc.limits if lim.surface_id is None or lim.surface_id == surface]
        if not limits:
            return None
        month, day = await self.budget.totals(ctx)
        for lim in limits:
            totals = month if lim.period == "month" else day
            spent = totals.get(lim.surface_id or TOTAL, 0.0)
            if spent + cost > lim.limit:
                return Block(
                    gate="budget",
                    reason="limit_exceeded",
                    details={
                        "period": lim.period,
                        "surface_id": lim.surface_id,
                        "limit": lim.limit,
                        "spent": spent,
                        "estimated_cost": cost,
                    },
                )
        return None

    async def _corridors(
        self,
        gate: Gate,
        ctx: RequestContext,
        action: str,
        surface: str | None,
        params: dict[str, Any],
        versions: dict[str, int],
    ) -> Block | None:
        name = f"{gate}_corridors"
        doc, versions[name] = await self.policies.read(ctx, name, Corridors)
        for c in doc.corridors:
            if c.action_name not in (None, action) or (c.surface_id is not None and c.surface_id != surface):
                continue
            if c.parameter not in params:
                continue
            raw = params[c.parameter]
            value = _number(raw)
            if (
                value is None
                or (c.min is not None and value < c.min)
                or (c.max is not None and value > c.max)
            ):
                return Block(
                    gate=gate,
                    reason="out_of_corridor",
                    details={
                        "parameter": c.parameter,
                        "value": raw if value is not None else str(raw)[:100],
                        "min": c.min,
                        "max": c.max,
                    },
                )
        return None
